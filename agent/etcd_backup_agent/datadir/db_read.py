"""One read-only pass over an etcd bolt db: integrity, status, and what restore rewrites.

The pass runs the native integrity check (``snapshot/check.py``) and etcdutl's status
(``snapshot/status.py``), and beside them records, per top-level bucket, the number of
key/value pairs and a CRC-32C of them in key order, and the contents of the small
buckets a restore rewrites (``meta``, ``members``, ``members_removed``, ``cluster``).
Facts from etcd release-3.5 ``server/mvcc/buckets`` and ``membership/store.go``: the
``meta`` bucket holds ``consistent_index`` and ``term`` as 8-byte big-endian integers;
``members`` maps a member id in hex to ``{"id", "peerURLs", "isLearner"?}`` JSON.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass

import google_crc32c

from ..snapshot.bolt import BUCKET_LEAF_FLAG, BoltError, BoltFile
from ..snapshot.check import Leaf, Scanner
from ..snapshot.status import SnapshotStatus, StatusSink

CAPTURED = (b"meta", b"members", b"members_removed", b"cluster")
MAX_CAPTURED = 100_000  # pairs per captured bucket: far above any real cluster
CONSISTENT_INDEX = b"consistent_index"
TERM = b"term"


class DbReadError(ValueError):
    """The db cannot be read or holds what etcd would not write."""


@dataclass(frozen=True)
class BucketDigest:
    name: bytes
    pairs: int
    crc: int


@dataclass(frozen=True)
class DbMember:
    id: int
    peer_urls: tuple[str, ...]
    is_learner: bool


@dataclass(frozen=True)
class DbContents:
    status: SnapshotStatus
    problems: tuple[str, ...]
    buckets: tuple[BucketDigest, ...]
    consistent_index: int | None
    term: int | None
    members: tuple[DbMember, ...]
    removed: tuple[int, ...]

    def bucket(self, name: bytes) -> BucketDigest | None:
        return next((b for b in self.buckets if b.name == name), None)

    def pairs_outside(self, names: tuple[bytes, ...]) -> int:
        """The k/v pairs of every bucket but ``names`` (whatever the status rules)."""
        return sum(b.pairs for b in self.buckets if b.name not in names)


class _Sink:
    """Feeds the status sink and keeps per-bucket digests and the captured buckets."""

    def __init__(self, rules: str) -> None:
        self.status = StatusSink(rules)
        self.digests: list[BucketDigest] = []
        self.captured: dict[bytes, list[tuple[bytes, bytes]]] = {}
        self._name: bytes | None = None
        self._pairs = 0
        self._crc = 0

    def _close(self) -> None:
        if self._name is not None:
            self.digests.append(BucketDigest(self._name, self._pairs, self._crc))

    def bucket(self, name: bytes) -> None:
        self._close()
        self._name, self._pairs, self._crc = name, 0, 0
        self.status.bucket(name)

    def leaf(self, leaf: Leaf) -> None:
        self.status.leaf(leaf)
        crc = self._crc
        keep = self.captured.setdefault(self._name, []) if self._name in CAPTURED else None
        for i, key in enumerate(leaf.keys):
            crc = google_crc32c.extend(crc, struct.pack(">I", len(key)) + key)
            if not leaf.flags(i) & BUCKET_LEAF_FLAG:
                value = leaf.value(i)
                crc = google_crc32c.extend(crc, struct.pack(">I", len(value)) + value)
                if keep is not None and len(keep) < MAX_CAPTURED:
                    keep.append((key, value))
        self._crc = crc
        self._pairs += len(leaf.keys)

    def finish(self) -> None:
        self._close()
        self._name = None


def read_db(path: str | os.PathLike[str], rules: str = "3.5") -> DbContents:
    """Scan ``path`` once; DbReadError when it is not a readable bolt file or a captured
    bucket holds what etcd does not write. Integrity problems are returned, not raised."""
    sink = _Sink(rules)
    try:
        with BoltFile(path) as db:
            problems = [str(p) for p in Scanner(db, sink).run()]
            problems += [str(p) for p in sink.status.rule_problems()]
            status = sink.status.result(db.data_size)
    except BoltError as exc:
        raise DbReadError(str(exc)) from None
    except (OSError, struct.error, ValueError, OverflowError) as exc:
        raise DbReadError(f"unreadable bolt file {os.fspath(path)}: {exc}") from None
    sink.finish()
    meta = dict(sink.captured.get(b"meta", []))
    members = tuple(_member(k, v) for k, v in sink.captured.get(b"members", []))
    removed = tuple(
        _hex_id(k, "members_removed") for k, _ in sink.captured.get(b"members_removed", [])
    )
    return DbContents(
        status=status,
        problems=tuple(problems),
        buckets=tuple(sink.digests),
        consistent_index=_u64(meta, CONSISTENT_INDEX),
        term=_u64(meta, TERM),
        members=members,
        removed=removed,
    )


def _u64(meta: dict[bytes, bytes], key: bytes) -> int | None:
    raw = meta.get(key)
    if raw is None:
        return None
    if len(raw) != 8:
        raise DbReadError(f"meta bucket: {key.decode()} has {len(raw)} bytes, not 8")
    return int.from_bytes(raw, "big")


def _hex_id(key: bytes, bucket: str) -> int:
    try:
        return int(key.decode("ascii"), 16)
    except ValueError:
        raise DbReadError(f"{bucket} bucket: key {key[:40]!r} is not a hex member id") from None


def _member(key: bytes, value: bytes) -> DbMember:
    mid = _hex_id(key, "members")
    try:
        doc = json.loads(value)
        urls = tuple(str(u) for u in doc.get("peerURLs") or [])
        learner = bool(doc.get("isLearner", False))
        if int(doc.get("id", mid)) != mid:
            raise DbReadError(f"members bucket: {key.decode()} holds member id {doc['id']:x}")
    except (ValueError, TypeError, AttributeError) as exc:
        if isinstance(exc, DbReadError):
            raise
        raise DbReadError(f"members bucket: {key.decode()}: not member JSON: {exc}") from None
    return DbMember(mid, urls, learner)
