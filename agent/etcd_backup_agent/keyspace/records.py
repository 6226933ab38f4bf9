"""The ``key`` bucket as one sortable record per revision, sorted by user key in bounded memory.

etcd's ``key`` bucket is ordered by revision, not by key, so "the latest revision of each
key" needs a sort. Each revision becomes one bytes record::

    escaped user key, 00 01, revision key (main 8 BE, "_", sub 8 BE), flags (1),
    value size (4 BE), marker index (1) [, value hash (8)]

The escaping (00 -> 00 FF, then the 00 01 terminator) keeps byte order, so plain bytes
comparison sorts records by (key, revision): the C sort and ``heapq.merge`` do all the
comparing. Records are collected up to a memory budget, then sorted and spilled to a
private temporary directory; the sorted runs are merged as a stream.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ..snapshot.bolt import PAGE_HEADER_SIZE, BoltFile
from ..snapshot.kv_proto import kv_parts_slow
from .k8s_values import ENC_MAGIC, ENCODINGS, encoding_of, encrypted_marker
from .tree import Bucket, find_bucket, leaf_pages

SEP = b"\x00\x01"
TOMBSTONE = 0x01
TRAILER = 17 + 1 + 4 + 1
HASH_SIZE = 8
RECORD_OVERHEAD = 41
"""Bytes a record costs in memory beyond its length: the bytes object header and list slot."""

MAX_MARKERS = 250
_ENC_INDEX = {name: i for i, name in enumerate(ENCODINGS)}
_VARINT = rb"[\x80-\xff]{0,9}[\x00-\x7f]"
# etcd marshals mvccpb.KeyValue in field order: create_revision=2, mod_revision=3,
# version=4 (varints), value=5; lease=6 may follow the value.
_AFTER_KEY = re.compile(
    rb"(?:\x10" + _VARINT + rb")?(?:\x18" + _VARINT + rb")?(?:\x20" + _VARINT + rb")?"
    rb"(?:\x2a(" + _VARINT + rb"))?",
    re.S,
)
_LEASE = re.compile(rb"\x30" + _VARINT, re.S)


def _varint(b: bytes) -> int:
    n = 0
    for shift, byte in enumerate(b):
        n |= (byte & 0x7F) << (7 * shift)
    return n


# Value sizes below 16 KiB take one or two varint bytes: look them up instead of decoding.
_SMALL_VARINTS = {bytes((n,)): n for n in range(128)} | {
    bytes((lo | 0x80, hi)): lo | hi << 7 for hi in range(1, 128) for lo in range(128)
}
_TAIL = struct.Struct(">BIB")


def kv_parts(v: bytes) -> tuple[bytes, int, int]:
    """(key, value offset, value size) of an mvccpb.KeyValue; ValueError when malformed."""
    if len(v) > 2 and v[0] == 0x0A and v[1] < 0x80:
        start = 2 + v[1]
        m = _AFTER_KEY.match(v, start)
        if m is not None:
            end = m.end()
            lb = m.group(1)
            if lb is None:
                if end == len(v) or _LEASE.fullmatch(v, end):
                    return v[2:start], end, 0
            else:
                size = _SMALL_VARINTS.get(lb)
                if size is None:
                    size = _varint(lb)
                stop = end + size
                if stop == len(v) or (stop < len(v) and _LEASE.fullmatch(v, stop)):
                    return v[2:start], end, size
    return kv_parts_slow(v)


@dataclass(frozen=True, slots=True)
class Rev:
    """One decoded record: a revision of one user key."""

    key: bytes
    main: int
    sub: int
    tombstone: bool
    value_size: int
    encoding: str
    marker: int
    digest: bytes

    @property
    def rev_key(self) -> bytes:
        """The bolt key of this revision in the ``key`` bucket."""
        rk = self.main.to_bytes(8, "big") + b"_" + self.sub.to_bytes(8, "big")
        return rk + b"t" if self.tombstone else rk


def decode_record(rec: bytes, hashed: bool) -> Rev:
    """A record back into its fields."""
    tail = TRAILER + (HASH_SIZE if hashed else 0)
    t = rec[-tail:]
    key = rec[: -tail - 2]
    if b"\x00" in key:
        key = key.replace(b"\x00\xff", b"\x00")
    flags = t[17]
    return Rev(
        key=key,
        main=int.from_bytes(t[0:8], "big"),
        sub=int.from_bytes(t[9:17], "big"),
        tombstone=bool(flags & TOMBSTONE),
        value_size=int.from_bytes(t[18:22], "big"),
        encoding=ENCODINGS[(flags >> 1) & 3],
        marker=t[22],
        digest=t[23:31] if hashed else b"",
    )


def key_part(rec: bytes, hashed: bool) -> bytes:
    """The escaped-key part of a record: equal for every revision of one key."""
    return rec[: -(TRAILER + (HASH_SIZE if hashed else 0))]


class Markers:
    """Encryption markers seen (``provider:version:key name``), numbered from 1, bounded."""

    def __init__(self) -> None:
        self.index: dict[bytes, int] = {}
        self.names: list[str] = [""]

    def of(self, value: bytes, voff: int) -> int:
        marker = encrypted_marker(value[voff : voff + 600])
        if marker is None:
            return 0
        label = f"{marker.provider}:{marker.version}:{marker.key_name}"
        raw = label.encode()
        idx = self.index.get(raw)
        if idx is None:
            if len(self.names) > MAX_MARKERS:
                return 0
            idx = len(self.names)
            self.index[raw] = idx
            self.names.append(label)
        return idx


class Sorter:
    """Collect records; sort them in memory up to ``budget`` bytes, spill sorted runs beyond."""

    def __init__(self, work_dir: Path, budget: int) -> None:
        self.work_dir = work_dir
        self.budget = max(budget, 1 << 20)
        self.buf: list[bytes] = []
        self.used = 0
        self.runs: list[Path] = []
        self.spilled_bytes = 0
        self._tmp: Path | None = None

    def add(self, rec: bytes) -> None:
        self.buf.append(rec)
        self.used += len(rec) + RECORD_OVERHEAD
        if self.used >= self.budget:
            self._spill()

    def extend(self, recs: list[bytes]) -> None:
        self.buf.extend(recs)
        self.used += sum(map(len, recs)) + RECORD_OVERHEAD * len(recs)
        if self.used >= self.budget:
            self._spill()

    def _spill(self) -> None:
        if self._tmp is None:
            self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._tmp = Path(tempfile.mkdtemp(prefix="inspect-", dir=self.work_dir))
        self.buf.sort()
        path = self._tmp / f"run-{len(self.runs):05d}"
        with open(path, "xb", buffering=1 << 20) as f:
            out: list[bytes] = []
            for rec in self.buf:
                out.append(len(rec).to_bytes(4, "big"))
                out.append(rec)
                if len(out) >= 8192:
                    f.write(b"".join(out))
                    out.clear()
            f.write(b"".join(out))
            self.spilled_bytes += f.tell()
        self.runs.append(path)
        self.buf = []
        self.used = 0

    def sorted(self) -> Iterator[bytes]:
        """Every record, in byte order."""
        self.buf.sort()
        if not self.runs:
            return iter(self.buf)
        # the last part stays in memory: it is within the budget and merged as it is
        return heapq.merge(*(_read_run(p) for p in self.runs), iter(self.buf))

    def close(self) -> None:
        self.buf = []
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> Sorter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _read_run(path: Path) -> Iterator[bytes]:
    with open(path, "rb", buffering=1 << 20) as f:
        read = f.read
        while True:
            head = read(4)
            if len(head) < 4:
                return
            yield read(int.from_bytes(head, "big"))


KeyFilter = Callable[[bytes], bool]


@dataclass
class ScanInfo:
    """What the scan learned besides the records."""

    revisions: int = 0
    undecodable: int = 0


def scan_key_bucket(
    db: BoltFile,
    sorter: Sorter,
    markers: Markers,
    *,
    hashed: bool = False,
    want: KeyFilter | None = None,
) -> ScanInfo:
    """Feed one record per revision of the ``key`` bucket (those ``want`` accepts) to ``sorter``."""
    info = ScanInfo()
    bucket = find_bucket(db, b"key")
    if bucket is None:
        return info
    enc_index = _ENC_INDEX
    proto, json_, other = (
        enc_index["protobuf"] << 1,
        enc_index["json"] << 1,
        enc_index["other"] << 1,
    )
    encrypted = enc_index["encrypted"] << 1
    sep = SEP
    pack = _TAIL.pack
    blake = hashlib.blake2b
    after_key = _AFTER_KEY.match
    small = _SMALL_VARINTS.get
    out: list[bytes] = []
    for page in leaf_pages(db, bucket):
        buf = page.buf
        t = db.leaf_elements(page)
        # slicing never reads past the page; a damaged element fails kv_parts (undecodable)
        for j in range(0, 4 * page.count, 4):
            s = PAGE_HEADER_SIZE + 4 * j + t[j + 1]
            m = s + t[j + 2]
            k = buf[s:m]
            v = buf[m : m + t[j + 3]]
            klen = len(k)
            if klen not in {17, 18}:  # not a revision key (verify reports it)
                info.undecodable += 1
                continue
            # kv_parts inlined for the usual layout (one-byte key length, no lease)
            fast = None
            if v[:1] == b"\x0a" and len(v) > 2 and v[1] < 0x80:
                start = 2 + v[1]
                mt = after_key(v, start)
                if mt is not None:
                    lb = mt.group(1)
                    end = mt.end()
                    if lb is not None:
                        size = small(lb)
                        if size is not None and end + size == len(v):
                            fast = (v[2:start], end, size)
                    elif end == len(v):
                        fast = (v[2:start], end, 0)
            if fast is None:
                try:
                    fast = kv_parts(v)
                except ValueError:
                    info.undecodable += 1
                    continue
            ukey, voff, vlen = fast
            if want is not None and not want(ukey):
                continue
            marker = 0
            if klen == 18:
                flags = TOMBSTONE | other
            else:
                head = v[voff : voff + (vlen if vlen < 8 else 8)]
                if head[:4] == b"k8s\x00":
                    flags = proto
                elif head == ENC_MAGIC:
                    flags = encrypted
                    marker = markers.of(v, voff)
                elif head[:1] == b"{":
                    flags = json_
                else:
                    flags = enc_index[encoding_of(v[voff : voff + vlen])] << 1
            rec = ukey.replace(b"\x00", b"\x00\xff") + sep + k[:17] + pack(flags, vlen, marker)
            if hashed:
                rec += blake(v[voff : voff + vlen], digest_size=HASH_SIZE).digest()
            out.append(rec)
        if len(out) >= 4096:  # hand records over in batches: fewer budget checks
            info.revisions += len(out)
            sorter.extend(out)
            out = []
    info.revisions += len(out)
    sorter.extend(out)
    return info


def grouped(records: Iterable[bytes], hashed: bool) -> Iterator[list[bytes]]:
    """Records grouped per user key (every revision of one key, oldest first)."""
    tail = TRAILER + (HASH_SIZE if hashed else 0)
    group: list[bytes] = []
    current = b""
    for rec in records:
        kp = rec[:-tail]
        if kp != current:
            if group:
                yield group
            group = [rec]
            current = kp
        else:
            group.append(rec)
    if group:
        yield group


@contextlib.contextmanager
def sorted_revisions(
    db: BoltFile,
    work_dir: Path,
    budget: int,
    *,
    hashed: bool = False,
    want: KeyFilter | None = None,
) -> Iterator[tuple[Iterator[list[bytes]], ScanInfo, Markers, Sorter]]:
    """Scan, sort, and yield the per-key groups; spill files are removed afterwards."""
    markers = Markers()
    with Sorter(work_dir, budget) as sorter:
        info = scan_key_bucket(db, sorter, markers, hashed=hashed, want=want)
        yield grouped(sorter.sorted(), hashed), info, markers, sorter


def meta_compact_revision(db: BoltFile) -> int:
    """``finishedCompactRev`` of the ``meta`` bucket (0 when never compacted)."""
    from .tree import get

    bucket: Bucket | None = find_bucket(db, b"meta")
    if bucket is None:
        return 0
    raw = get(db, bucket, b"finishedCompactRev")
    if raw is None or len(raw) < 8:
        return 0
    return int.from_bytes(raw[:8], "big")


def default_work_dir() -> Path:
    """A fallback for spill files when no spool is configured."""
    return Path(os.environ.get("TMPDIR", "/var/tmp"))
