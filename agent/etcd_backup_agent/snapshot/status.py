"""``etcdutl snapshot status`` computed natively: hash, revision, total keys, size, version."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import google_crc32c

from ..errors import VerificationError
from .bolt import BUCKET_LEAF_FLAG, BoltError, BoltFile
from .check import Leaf, Problem, Scanner
from .kv_proto import kv_parts_slow

RULES = ("auto", "3.5", "3.6")
KEY_BUCKET = b"key"
META_BUCKET = b"meta"
STORAGE_VERSION = b"storageVersion"
_IDENT = re.compile(r"^[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*$")


@dataclass(frozen=True)
class SnapshotStatus:
    """What ``etcdutl snapshot status`` reports; ``version`` is set only under 3.6 rules."""

    hash: int
    revision: int
    total_key: int
    total_size: int
    version: str | None
    rules: str

    def to_json_dict(self) -> dict[str, Any]:
        """The ``-w json`` object, with etcdutl's keys and order."""
        out: dict[str, Any] = {
            "hash": self.hash,
            "revision": self.revision,
            "totalKey": self.total_key,
            "totalSize": self.total_size,
        }
        if self.rules == "3.6":
            out["version"] = self.version or ""
        return out


def parse_semver(raw: bytes) -> str:
    """Render a storage version as go-semver's ``String()`` would; "" when it does not parse."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return ""
    text, plus, meta = text.partition("+")
    text, minus, pre = text.partition("-")
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return ""
    for sep, ident in ((plus, meta), (minus, pre)):
        if sep and not _IDENT.match(ident):
            return ""
    out = ".".join(str(int(p)) for p in parts)
    if pre:
        out += f"-{pre}"
    if meta:
        out += f"+{meta}"
    return out


def kv_key(value: bytes) -> bytes:
    """Field 1 (``key``) of an mvccpb.KeyValue message; raise ValueError if malformed."""
    return kv_parts_slow(value)[0]


class StatusSink:
    """Accumulates the status while the scanner walks top-level buckets in key order."""

    def __init__(self, rules: str) -> None:
        self.rules = rules
        self.crc = 0
        self.total_key_35 = 0
        self.revision = 0
        self.live: set[bytes] = set()
        self.storage_version: bytes | None = None
        self.problems: list[Problem] = []
        self.short_keys: list[Problem] = []
        self._bucket = b""
        self._track_live = rules == "3.6"

    def bucket(self, name: bytes) -> None:
        """A top-level bucket starts: its name is hashed."""
        self._bucket = name
        self.crc = google_crc32c.extend(self.crc, name)

    def leaf(self, leaf: Leaf) -> None:
        """Hash one leaf of the current bucket (one range when laid out back to back)."""
        n = len(leaf.keys)
        if not n:
            return
        if leaf.contiguous and not leaf.has_buckets:
            self.crc = google_crc32c.extend(self.crc, leaf.buf[leaf.starts[0] : leaf.ends[-1]])
        else:
            crc = self.crc
            for i, key in enumerate(leaf.keys):
                crc = google_crc32c.extend(crc, key)
                if not leaf.table[4 * i] & BUCKET_LEAF_FLAG:
                    crc = google_crc32c.extend(crc, leaf.value(i))
            self.crc = crc
        self.total_key_35 += n
        if self._bucket == KEY_BUCKET:
            self._key_leaf(leaf)
        elif self._bucket == META_BUCKET and STORAGE_VERSION in leaf.keys:
            self.storage_version = leaf.value(leaf.keys.index(STORAGE_VERSION))

    def _key_leaf(self, leaf: Leaf) -> None:
        last = leaf.keys[-1]
        if min(leaf.table[2::4]) < 17:
            if not self.short_keys:
                short = min(leaf.keys, key=len)
                self.short_keys.append(
                    Problem(
                        leaf.page_id,
                        f"bucket key: revision key {short.hex()} is shorter than 17 bytes",
                    )
                )
        else:
            self.revision = int.from_bytes(last[:8], "big")
        if not self._track_live:
            return
        live = self.live
        for i, key in enumerate(leaf.keys):
            if len(key) not in (17, 18) or key[8] != 0x5F:
                self.problems.append(Problem(leaf.page_id, f"malformed revision key {key.hex()}"))
                self._track_live = False
                return
            try:
                user_key = kv_key(leaf.value(i))
            except ValueError as exc:
                self.problems.append(
                    Problem(leaf.page_id, f"undecodable KeyValue at {key.hex()}: {exc}")
                )
                self._track_live = False
                return
            if len(key) == 18 and key[17] == 0x74:
                live.discard(user_key)
            else:
                live.add(user_key)

    def result(self, total_size: int) -> SnapshotStatus:
        """The status under the chosen rules (``auto``: 3.6 when storageVersion exists)."""
        rules = self.rules
        if rules == "auto":
            rules = "3.6" if self.storage_version is not None else "3.5"
        if rules == "3.6":
            version = parse_semver(self.storage_version or b"")
            total = len(self.live)
        else:
            version = None
            total = self.total_key_35
        return SnapshotStatus(self.crc, self.revision, total, total_size, version, rules)

    def rule_problems(self) -> list[Problem]:
        """Problems that only matter under the effective rules."""
        if self.result(0).rules == "3.6":
            return self.short_keys + self.problems
        return self.short_keys


def scan_status(db: BoltFile, rules: str = "auto") -> tuple[SnapshotStatus, list[Problem]]:
    """One pass: the status and every integrity problem found."""
    if rules not in RULES:
        raise ValueError(f"rules must be one of {', '.join(RULES)}")
    sink = StatusSink(rules)
    problems = Scanner(db, sink).run()
    if rules == "auto" and sink.storage_version is not None and not problems:
        return scan_status(db, "3.6")
    problems += sink.rule_problems()
    return sink.result(db.data_size), problems


def compute_status(path: str | os.PathLike[str], rules: str = "auto") -> SnapshotStatus:
    """etcdutl's status of a snapshot; raise VerificationError when its integrity fails."""
    try:
        with BoltFile(path) as db:
            status, problems = scan_status(db, rules)
    except BoltError as exc:
        raise VerificationError(str(exc), [str(exc)]) from exc
    if problems:
        texts = [str(p) for p in problems]
        raise VerificationError(
            f"snapshot file integrity check failed: {len(texts)} problem(s)", texts
        )
    return status
