"""Member/cluster IDs and the flags etcd refuses; IDs checked against etcdutl 3.5.1's logs."""

from __future__ import annotations

import pytest

from etcd_backup_agent.datadir import gojson, members, raftpb, wal
from etcd_backup_agent.errors import UsageError

# `etcdutl snapshot restore` 3.5.1 logged these ("added member", "cluster-id")
SINGLE = ("m1=http://127.0.0.1:2380", "etcd-cluster", ["b71f75320dc06a6c"], "1c45a069f3a1d796")
TRIPLE = (
    "a=http://127.0.0.1:2380,b=http://127.0.0.2:2380,c=http://127.0.0.3:2380,"
    "c=http://127.0.0.3:2390",
    "tok",
    ["6900051e73e7c254", "71405583d3e2d5ce", "9c6bb86489892ed9"],
    "3d68c9d777e7af0",
)


@pytest.mark.parametrize(("initial", "token", "ids", "cid"), [SINGLE, TRIPLE])
def test_ids_as_etcd_computes_them(initial: str, token: str, ids: list[str], cid: str) -> None:
    cluster = members.cluster_from_initial(initial, token)
    assert [m.id_hex for m in cluster.members] == ids  # ascending, unpadded hex
    assert cluster.id_hex == cid


def test_member_json_and_bucket_records() -> None:
    cluster = members.cluster_from_initial(TRIPLE[0], TRIPLE[1])
    c = cluster.member_named("c")
    assert c.peer_urls == ("http://127.0.0.3:2380", "http://127.0.0.3:2390")
    assert int("9c6bb86489892ed9", 16) == 11271305234368507609  # the logged hex ID
    assert c.json() == (
        b'{"id":11271305234368507609,"peerURLs":["http://127.0.0.3:2380",'
        b'"http://127.0.0.3:2390"],"name":"c"}'
    )
    assert cluster.bucket_members()[0] == (b"6900051e73e7c254", cluster.members[0].json())


@pytest.mark.parametrize(
    ("initial", "fragment"),
    [
        ("a=127.0.0.1:2380", "scheme"),
        ("a=http://127.0.0.1", "host:port"),
        ("a=http://127.0.0.1:2380/path", "no path"),
        ("a=http://127.0.0.1:2380,b=http://127.0.0.1:2380", "duplicate URL"),
        ("a", "NAME=URL"),
    ],
)
def test_flags_etcd_refuses(initial: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        members.cluster_from_initial(initial, "t")


def test_name_must_be_a_member() -> None:
    with pytest.raises(UsageError, match="--name"):
        members.cluster_from_initial(SINGLE[0], "t").member_named("other")


def test_go_json_escaping() -> None:
    assert (
        gojson.string('a<b>&"\\\n\x01\u2028é')
        == '"a\\u003cb\\u003e\\u0026\\"\\\\\\n\\u0001\\u2028é"'
    )


def test_wal_frame_padding_and_crc_chain() -> None:
    assert wal.frame(b"12345") == (5 | (0x80 | 3) << 56).to_bytes(8, "little") + b"12345\0\0\0"
    assert wal.frame(b"12345678")[:8] == (8).to_bytes(8, "little")
    enc = wal.Encoder()
    enc.encode(raftpb.CRC_TYPE, None)
    assert bytes(enc.out) == wal.frame(raftpb.wal_record(raftpb.CRC_TYPE, 0, None))
    enc.encode(raftpb.METADATA_TYPE, b"x")
    import google_crc32c

    assert enc.crc == google_crc32c.value(b"x")
