"""The few protobuf messages a restored data dir holds, encoded by hand.

gogoproto marshals fields in field-number order. Fields marked ``(gogoproto.nullable) =
false`` are plain values and are written even when zero; ``optional bytes`` fields are
written whenever the Go slice is non-nil (an empty, non-nil slice still gives a zero-length
field) and skipped when nil, which is what ``None`` means here. Repeated uint64 fields of
these proto2 files are not packed: one tag per element. Field numbers from
``raft/raftpb/raft.proto``, ``server/wal/walpb/record.proto``,
``server/etcdserver/api/snap/snappb/snap.proto`` and ``api/etcdserverpb/etcdserver.proto``.
"""

from __future__ import annotations

from dataclasses import dataclass

ENTRY_NORMAL = 0
ENTRY_CONF_CHANGE = 1
CONF_CHANGE_ADD_NODE = 0

# walpb record types (server/wal/wal.go)
METADATA_TYPE = 1
ENTRY_TYPE = 2
STATE_TYPE = 3
CRC_TYPE = 4
SNAPSHOT_TYPE = 5


def uvarint(n: int) -> bytes:
    if n < 0:
        n &= (1 << 64) - 1  # int64 fields: two's complement, 10 bytes
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def vfield(num: int, value: int) -> bytes:
    return uvarint(num << 3) + uvarint(value)


def bfield(num: int, data: bytes | None) -> bytes:
    if data is None:
        return b""
    return uvarint(num << 3 | 2) + uvarint(len(data)) + data


@dataclass(frozen=True)
class ConfState:
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()
    voters_outgoing: tuple[int, ...] = ()
    learners_next: tuple[int, ...] = ()
    auto_leave: bool = False

    def encode(self) -> bytes:
        out = b"".join(vfield(1, v) for v in self.voters)
        out += b"".join(vfield(2, v) for v in self.learners)
        out += b"".join(vfield(3, v) for v in self.voters_outgoing)
        out += b"".join(vfield(4, v) for v in self.learners_next)
        return out + vfield(5, int(self.auto_leave))


def conf_change(
    node_id: int, context: bytes | None, change_type: int = CONF_CHANGE_ADD_NODE, change_id: int = 0
) -> bytes:
    """raftpb.ConfChange{ID=1, Type=2, NodeID=3, Context=4 (nullable)}."""
    return vfield(1, change_id) + vfield(2, change_type) + vfield(3, node_id) + bfield(4, context)


def entry(term: int, index: int, entry_type: int, data: bytes | None) -> bytes:
    """raftpb.Entry{Type=1, Term=2, Index=3, Data=4 (nullable)}."""
    return vfield(1, entry_type) + vfield(2, term) + vfield(3, index) + bfield(4, data)


def hard_state(term: int, vote: int, commit: int) -> bytes:
    """raftpb.HardState{term=1, vote=2, commit=3}."""
    return vfield(1, term) + vfield(2, vote) + vfield(3, commit)


def snapshot(data: bytes | None, conf_state: ConfState, index: int, term: int) -> bytes:
    """raftpb.Snapshot{data=1 (nullable), metadata=2 {conf_state=1, index=2, term=3}}."""
    metadata = bfield(1, conf_state.encode()) + vfield(2, index) + vfield(3, term)
    return bfield(1, data) + bfield(2, metadata)


def etcd_metadata(node_id: int, cluster_id: int) -> bytes:
    """etcdserverpb.Metadata{NodeID=1, ClusterID=2}: the WAL's metadata record."""
    return vfield(1, node_id) + vfield(2, cluster_id)


def wal_snapshot(index: int, term: int, conf_state: ConfState | None) -> bytes:
    """walpb.Snapshot{index=1, term=2, conf_state=3 (pointer: absent when nil)}."""
    cs = None if conf_state is None else conf_state.encode()
    return vfield(1, index) + vfield(2, term) + bfield(3, cs)


def wal_record(record_type: int, crc: int, data: bytes | None) -> bytes:
    """walpb.Record{type=1, crc=2, data=3 (nullable)}."""
    return vfield(1, record_type) + vfield(2, crc) + bfield(3, data)


def snap_file(crc: int, data: bytes) -> bytes:
    """snappb.Snapshot{crc=1, data=2}: the content of a ``.snap`` file."""
    return vfield(1, crc) + bfield(2, data)


@dataclass(frozen=True)
class Entry:
    term: int
    index: int
    entry_type: int
    data: bytes | None

    def encode(self) -> bytes:
        return entry(self.term, self.index, self.entry_type, self.data)


@dataclass(frozen=True)
class HardState:
    term: int
    vote: int
    commit: int

    def encode(self) -> bytes:
        return hard_state(self.term, self.vote, self.commit)


@dataclass(frozen=True)
class Bootstrap:
    """What a restored member's WAL and snap hold: etcdutl's ``saveWALAndSnap``."""

    metadata: bytes
    entries: tuple[Entry, ...]
    hard_state: HardState
    conf_state: ConfState
    snapshot_index: int
    snapshot_term: int
