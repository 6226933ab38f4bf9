"""The minimal protobuf decoder judged by the protobuf library's own encoder (etcd3's stubs)."""

from __future__ import annotations

import random

import pytest
from etcd3.etcdrpc import kv_pb2, rpc_pb2

from etcd_backup_agent.datadir.pbdecode import Message, PbError, fields, read_varint


@pytest.mark.parametrize("seed", range(20))
def test_uint64_int64_and_bytes_fields_decode_as_protobuf_encodes_them(seed: int) -> None:
    rng = random.Random(seed)
    header = rpc_pb2.ResponseHeader(
        cluster_id=rng.getrandbits(64),
        member_id=rng.getrandbits(rng.choice([1, 7, 32, 64])),
        revision=rng.randrange(-(2**63), 2**63),
        raft_term=rng.getrandbits(20),
    )
    m = Message(header.SerializeToString(), "ResponseHeader")
    assert (m.uint(1), m.uint(2), m.int64(3), m.uint(4)) == (
        header.cluster_id,
        header.member_id,
        header.revision,
        header.raft_term,
    )
    kv = kv_pb2.KeyValue(key=rng.randbytes(rng.randrange(300)), value=rng.randbytes(70000))
    d = Message(kv.SerializeToString(), "KeyValue")
    assert d.bytes_(1) == kv.key and d.bytes_(5) == kv.value  # KeyValue: key 1, value 5
    assert d.bytes_(9) is None and d.uint(3) == 0


def test_packed_repeated_varints() -> None:
    req = rpc_pb2.WatchCreateRequest(filters=[0, 1, 1, 0])  # proto3: packed
    assert Message(req.SerializeToString(), "WatchCreateRequest").repeated_uint(5) == [0, 1, 1, 0]


def test_malformed_input_is_refused_with_the_offset() -> None:
    good = kv_pb2.KeyValue(key=b"k" * 10, create_revision=5).SerializeToString()
    with pytest.raises(PbError, match="past the end"):
        fields(good[:-12])  # cut inside the key
    with pytest.raises(PbError, match="varint truncated at offset"):
        fields(b"\x10\x80")
    with pytest.raises(PbError, match="longer than 10 bytes"):
        read_varint(b"\xff" * 11, 0)
    with pytest.raises(PbError, match="field number 0"):
        fields(b"\x00")
    with pytest.raises(PbError, match="unsupported wire type 3"):
        fields(b"\x0b")
    with pytest.raises(PbError, match="wire type 2, not 0"):
        Message(good, "KeyValue").uint(1)
