"""Read an etcd 3.5 WAL directory (``member/wal``) and check it as etcd's decoder does.

Facts from etcd release-3.5 ``server/wal`` (decoder.go, encoder.go, wal.go):

- A segment is named ``%016x-%016x.wal`` (sequence, first raft index); sequences are
  consecutive. Segments are preallocated (64 MB) and zero-filled: a zero length field
  ends the records of a segment.
- Each record is an 8-byte little-endian length field, then a ``walpb.Record`` and
  padding to 8 bytes. The low 56 bits give the record size; when the top bit is set its
  low 3 bits of the top byte give the padding size.
- ``Record.crc`` is the running CRC-32C (Castagnoli) of every record's ``data`` so far,
  continued across records and segments. A ``crcType`` record is not part of the chain:
  it carries the chain's value at that point (checked unless the chain is still 0) and
  the chain continues from it.
- Record types: 1 metadata (``etcdserverpb.Metadata``), 2 entry (``raftpb.Entry``),
  3 hard state, 4 crc, 5 snapshot (``walpb.Snapshot``).

Every problem raises ``WalError`` naming the segment, the offset and the record number.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import google_crc32c

from .pbdecode import Message, PbError

METADATA = 1
ENTRY = 2
STATE = 3
CRC = 4
SNAPSHOT = 5
RECORD_TYPES = {METADATA: "metadata", ENTRY: "entry", STATE: "hardstate", CRC: "crc",
                SNAPSHOT: "snapshot"}  # fmt: skip

ENTRY_NORMAL = 0
ENTRY_CONF_CHANGE = 1
ENTRY_CONF_CHANGE_V2 = 2
CONF_CHANGE_TYPES = ("AddNode", "RemoveNode", "UpdateNode", "AddLearnerNode")

FRAME = 8
_SEGMENT = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")
_TAIL_CHUNK = 1024 * 1024


class WalError(ValueError):
    """The WAL is damaged or is not what etcd writes; the message says where and how."""


@dataclass(frozen=True)
class Record:
    segment: str
    offset: int
    type: int
    crc: int
    data: bytes

    @property
    def type_name(self) -> str:
        return RECORD_TYPES.get(self.type, f"type {self.type}")


@dataclass(frozen=True)
class Metadata:
    node_id: int
    cluster_id: int


@dataclass(frozen=True)
class ConfChange:
    type: int
    node_id: int
    context: bytes
    id: int = 0

    @property
    def type_name(self) -> str:
        if 0 <= self.type < len(CONF_CHANGE_TYPES):
            return CONF_CHANGE_TYPES[self.type]
        return f"type {self.type}"

    def member(self) -> ContextMember:
        """The member JSON etcd puts in an AddNode's context (id, peerURLs, name)."""
        try:
            doc = json.loads(self.context)
            urls = doc.get("peerURLs") or []
            member = ContextMember(
                id=int(doc["id"]),
                name=str(doc.get("name", "")),
                peer_urls=tuple(str(u) for u in urls),
                is_learner=bool(doc.get("isLearner", False)),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WalError(
                f"conf change for {self.node_id:x}: context is not a member: {exc}"
            ) from None
        return member


@dataclass(frozen=True)
class ContextMember:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    is_learner: bool = False


@dataclass(frozen=True)
class Entry:
    term: int
    index: int
    type: int
    data: bytes
    conf_change: ConfChange | None


@dataclass(frozen=True)
class HardState:
    term: int
    vote: int
    commit: int


@dataclass(frozen=True)
class WalSnapshot:
    index: int
    term: int
    voters: tuple[int, ...] | None  # None: no conf_state (written before etcd 3.5)


@dataclass(frozen=True)
class WalContents:
    segments: tuple[str, ...]
    records: tuple[Record, ...]
    metadata: Metadata
    entries: tuple[Entry, ...]  # as ReadAll returns them: a newer entry replaces older ones
    hard_state: HardState | None
    snapshots: tuple[WalSnapshot, ...]
    crc: int  # the chain's value after the last record

    def count(self, record_type: int) -> int:
        return sum(1 for r in self.records if r.type == record_type)


def decode_frame(length_field: int) -> tuple[int, int]:
    """(record bytes, padding bytes) of a 64-bit length field (unsigned)."""
    record = length_field & ((1 << 56) - 1)
    pad = (length_field >> 56) & 0x7 if length_field >> 63 else 0
    return record, pad


def segments(wal_dir: Path) -> list[Path]:
    """The WAL segments in order; WalError when none or the sequence has a gap."""
    try:
        names = sorted(n for n in os.listdir(wal_dir) if n.endswith(".wal"))
    except OSError as exc:
        raise WalError(f"cannot list {wal_dir}: {exc.strerror or exc}") from None
    if not names:
        raise WalError(f"{wal_dir}: no .wal segment")
    out: list[Path] = []
    prev_seq: int | None = None
    for name in names:
        m = _SEGMENT.match(name)
        if m is None:
            raise WalError(f"{wal_dir}: {name!r} is not named <seq>-<index>.wal")
        seq = int(m.group(1), 16)
        if prev_seq is not None and seq != prev_seq + 1:
            raise WalError(f"{wal_dir}: segment {name} follows sequence {prev_seq:016x}")
        prev_seq = seq
        out.append(wal_dir / name)
    return out


def _records(path: Path, crc: int, first: int) -> tuple[list[Record], int]:
    """Decode one segment's records, checking the chain; return them and the chain."""
    name = path.name
    out: list[Record] = []
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        off = 0
        while True:
            where = f"{name}: record {first + len(out)} at offset {off}"
            head = f.read(FRAME)
            if len(head) < FRAME:
                if head.strip(b"\0"):
                    raise WalError(f"{where}: truncated length field")
                break
            length_field = int.from_bytes(head, "little")
            if length_field == 0:
                _check_tail(f, name, off + FRAME)
                break
            rec_bytes, pad = decode_frame(length_field)
            if rec_bytes > size - off - FRAME - pad or rec_bytes <= 0:
                raise WalError(
                    f"{where}: length field {length_field:#018x} says "
                    f"{rec_bytes} bytes + {pad} padding; {size - off - FRAME} bytes remain"
                )
            if pad != (8 - rec_bytes % 8) % 8:
                # etcd's decoder would still read it; its encoder never writes it
                raise WalError(
                    f"{where}: length field {length_field:#018x} gives {pad} padding bytes "
                    f"for a {rec_bytes}-byte record; etcd pads to 8 bytes"
                )
            body = f.read(rec_bytes + pad)
            if len(body) < rec_bytes + pad:
                raise WalError(f"{where}: record cut short")
            if pad and body[rec_bytes:].strip(b"\0"):
                raise WalError(f"{where}: padding bytes are not zero")
            rec = _decode_record(body[:rec_bytes], name, off, where)
            if rec.type == CRC:
                if crc not in (0, rec.crc):
                    raise WalError(
                        f"{where}: crc record holds {rec.crc:#010x}, the chain is {crc:#010x}"
                    )
                crc = rec.crc
            else:
                crc = google_crc32c.extend(crc, rec.data)
                if rec.crc != crc:
                    raise WalError(
                        f"{where} ({rec.type_name}): crc mismatch: stored {rec.crc:#010x}, "
                        f"computed {crc:#010x}"
                    )
            out.append(rec)
            off += FRAME + rec_bytes + pad
    return out, crc


def _check_tail(f: BinaryIO, name: str, start: int) -> None:
    """The preallocated tail must be zeros: anything else is a record etcd would skip."""
    off = start
    while True:
        chunk = f.read(_TAIL_CHUNK)
        if not chunk:
            return
        if chunk.count(0) != len(chunk):
            pos = off + next(i for i, b in enumerate(chunk) if b)
            raise WalError(
                f"{name}: non-zero byte at offset {pos} after the last record (which ends at "
                f"{start - FRAME}): a damaged length field hides the records after it"
            )
        off += len(chunk)


def _decode_record(buf: bytes, segment: str, offset: int, where: str) -> Record:
    try:
        m = Message(buf, "walpb.Record")
        rtype = m.int64(1)
        crc = m.uint32(2)
        data = m.bytes_(3) or b""
    except PbError as exc:
        raise WalError(f"{where}: {exc}") from None
    if rtype not in RECORD_TYPES:
        raise WalError(f"{where}: unknown record type {rtype}")
    return Record(segment, offset, rtype, crc, data)


def decode_metadata(data: bytes) -> Metadata:
    m = Message(data, "etcdserverpb.Metadata")
    return Metadata(node_id=m.uint(1), cluster_id=m.uint(2))


def decode_conf_change(data: bytes) -> ConfChange:
    m = Message(data, "raftpb.ConfChange")
    return ConfChange(type=m.uint(2), node_id=m.uint(3), context=m.bytes_(4) or b"", id=m.uint(1))


def decode_entry(data: bytes) -> Entry:
    m = Message(data, "raftpb.Entry")
    etype = m.uint(1)
    payload = m.bytes_(4) or b""
    cc = decode_conf_change(payload) if etype == ENTRY_CONF_CHANGE else None
    return Entry(term=m.uint(2), index=m.uint(3), type=etype, data=payload, conf_change=cc)


def decode_hard_state(data: bytes) -> HardState:
    m = Message(data, "raftpb.HardState")
    return HardState(term=m.uint(1), vote=m.uint(2), commit=m.uint(3))


def decode_voters(data: bytes) -> tuple[int, ...]:
    """``raftpb.ConfState.voters``."""
    return tuple(Message(data, "raftpb.ConfState").repeated_uint(1))


def decode_wal_snapshot(data: bytes) -> WalSnapshot:
    m = Message(data, "walpb.Snapshot")
    conf = m.bytes_(3)
    voters = decode_voters(conf) if conf is not None else None
    return WalSnapshot(index=m.uint(1), term=m.uint(2), voters=voters)


def read_wal(wal_dir: str | os.PathLike[str]) -> WalContents:
    """Read every segment of ``wal_dir``; raise WalError on the first problem."""
    paths = segments(Path(wal_dir))
    records: list[Record] = []
    crc = 0
    for path in paths:
        found, crc = _records(path, crc, len(records))
        if not found:
            raise WalError(f"{path.name}: no records")
        if found[0].type != CRC:
            raise WalError(f"{path.name}: starts with a {found[0].type_name} record, not crc")
        records += found
    metadata: bytes | None = None
    entries: list[Entry] = []
    state: HardState | None = None
    snaps: list[WalSnapshot] = []
    start: int | None = None
    for n, rec in enumerate(records):
        where = f"{rec.segment}: record {n} at offset {rec.offset} ({rec.type_name})"
        try:
            if rec.type == METADATA:
                if metadata is not None and metadata != rec.data:
                    raise WalError(f"{where}: metadata differs from the first metadata record")
                metadata = rec.data
            elif rec.type == ENTRY:
                e = decode_entry(rec.data)
                if start is None:
                    start = e.index - 1
                up = e.index - start - 1
                if up < 0:
                    continue  # at or before where reading starts, as ReadAll ignores it
                if up > len(entries):
                    raise WalError(
                        f"{where}: entry index {e.index} leaves a gap after {start + len(entries)}"
                    )
                entries = [*entries[:up], e]
            elif rec.type == STATE:
                state = decode_hard_state(rec.data)
            elif rec.type == SNAPSHOT:
                snaps.append(decode_wal_snapshot(rec.data))
        except PbError as exc:
            raise WalError(f"{where}: {exc}") from None
    if metadata is None:
        raise WalError(f"{wal_dir}: no metadata record")
    try:
        meta = decode_metadata(metadata)
    except PbError as exc:
        raise WalError(f"{wal_dir}: {exc}") from None
    return WalContents(
        segments=tuple(p.name for p in paths),
        records=tuple(records),
        metadata=meta,
        entries=tuple(entries),
        hard_state=state,
        snapshots=tuple(snaps),
        crc=crc,
    )
