"""The data-dir readers judged by what real etcd 3.5.1 and `etcdutl snapshot restore` write.

The oracle: a live 3-member cluster (its own WAL and snap files, its `member list` ids),
and etcdutl's restores of its snapshot. Every byte flip in what they wrote is detected.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from etcd_backup_agent.datadir import readback
from etcd_backup_agent.datadir.db_read import read_db
from etcd_backup_agent.datadir.readback import ReadbackError, Want, read_back
from etcd_backup_agent.datadir.snap_read import SnapError, read_snap, snap_names
from etcd_backup_agent.datadir.wal_read import (
    CRC,
    ENTRY,
    ENTRY_CONF_CHANGE,
    METADATA,
    SNAPSHOT,
    STATE,
    WalError,
    read_wal,
)
from tests.servers import EtcdServer, etcd_bin, free_port

pytestmark = pytest.mark.integration

TOKEN = "readers-token"
KEYS = [f"/readers/{i:03d}" for i in range(40)]


@dataclass
class Oracle:
    base: Path
    members: list[EtcdServer]
    listed: dict[str, int]  # name -> id, from `etcdctl member list -w json`
    cluster_id: int
    snapshot: Path
    revision: int


def _etcdutl_restore(snapshot: Path, out: Path, name: str, cluster: str, token: str) -> None:
    peer = ",".join(u for n, _, u in (i.partition("=") for i in cluster.split(",")) if n == name)
    subprocess.run(
        [
            etcd_bin("etcdutl"),
            "snapshot",
            "restore",
            str(snapshot),
            "--data-dir",
            str(out),
            "--name",
            name,
            "--initial-cluster",
            cluster,
            "--initial-cluster-token",
            token,
            "--initial-advertise-peer-urls",
            peer,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Oracle:
    base = tmp_path_factory.mktemp("readers")
    members = [
        EtcdServer(base / f"m{i}", name=f"m{i}", initial_cluster_token=TOKEN) for i in range(3)
    ]
    # a low snapshot count makes etcd write .snap files of its own
    for m in members:
        m.extra_args = ["--snapshot-count", "10"]
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    try:
        for m in members:
            m.initial_cluster = initial
            m.start(wait=False)
        for m in members:
            m.wait_ready(timeout=60)
        for i, key in enumerate(KEYS):
            members[i % 3].ctl("put", key, f"value-{i}")
        listing = json.loads(members[0].ctl("member", "list", "-w", "json").stdout)
        listed = {m["name"]: int(m["ID"]) for m in listing["members"]}
        cluster_id = int(listing["header"]["cluster_id"])
        snapshot = base / "snapshot.db"
        members[0].ctl("snapshot", "save", str(snapshot))
        status = json.loads(members[0].ctl("endpoint", "status", "-w", "json").stdout)
        revision = int(status[0]["Status"]["header"]["revision"])
    finally:
        for m in members:
            m.stop()
    return Oracle(base, members, listed, cluster_id, snapshot, revision)


def test_live_wal_metadata_and_entries_are_what_etcd_wrote(oracle: Oracle) -> None:
    for m in oracle.members:
        wal = read_wal(m.data_dir / "member" / "wal")
        assert wal.metadata.node_id == oracle.listed[m.name]
        assert wal.metadata.cluster_id == oracle.cluster_id
        assert wal.records[0].type == CRC
        adds = [e.conf_change for e in wal.entries if e.type == ENTRY_CONF_CHANGE]
        assert adds and all(cc is not None and cc.type_name == "AddNode" for cc in adds)
        contexts = {cc.member().name: cc.node_id for cc in adds if cc is not None}
        assert contexts == oracle.listed
        # every put went through raft: each key is inside some normal entry
        normal = b"".join(e.data for e in wal.entries if e.type == 0)
        assert all(k.encode() in normal for k in KEYS)
        indexes = [e.index for e in wal.entries]
        assert indexes == list(range(1, len(indexes) + 1))
        assert wal.hard_state is not None and 0 < wal.hard_state.commit <= indexes[-1]
        assert wal.count(ENTRY) >= len(wal.entries) and wal.count(STATE) >= 1
        assert wal.count(METADATA) == 1
        # etcd cut a snapshot every 10 entries and recorded each in the WAL
        assert [s.index for s in wal.snapshots if s.index] != []


def test_live_snap_files_hold_the_members(oracle: Oracle) -> None:
    for m in oracle.members:
        snap_dir = m.data_dir / "member" / "snap"
        names = snap_names(snap_dir)
        assert names, "etcd wrote no .snap file"
        snap = read_snap(snap_dir / names[0])
        wal = read_wal(m.data_dir / "member" / "wal")
        assert (snap.index, snap.term) in {(s.index, s.term) for s in wal.snapshots}
        assert sorted(snap.voters) == sorted(oracle.listed.values())
        assert {mem.name: mem.id for mem in snap.members} == oracle.listed
        assert all(mem.peer_urls for mem in snap.members)


def test_ids_are_etcds(oracle: Oracle) -> None:
    for m in oracle.members:
        assert readback.member_id((m.peer_url,), TOKEN) == oracle.listed[m.name]
    assert readback.cluster_id(list(oracle.listed.values())) == oracle.cluster_id


def _three(oracle: Oracle) -> tuple[str, tuple[tuple[str, tuple[str, ...]], ...]]:
    urls = {"a": ("http://10.0.0.1:2380",), "b": ("http://10.0.0.2:2380",),
            "c": ("http://10.0.0.3:2380", "http://10.0.0.3:2381")}  # fmt: skip
    cluster = ",".join(f"{n}={u}" for n, us in urls.items() for u in us)
    return cluster, tuple(urls.items())


@pytest.fixture(scope="module")
def restored(oracle: Oracle) -> dict[str, Path]:
    cluster, _ = _three(oracle)
    out = {}
    for name in ("a", "b", "c"):
        out[name] = oracle.base / f"restored-{name}"
        _etcdutl_restore(oracle.snapshot, out[name], name, cluster, "tok")
    return out


def test_etcdutl_restores_read_back(oracle: Oracle, restored: dict[str, Path]) -> None:
    _, members = _three(oracle)
    source = read_db(oracle.snapshot)
    for name, path in restored.items():
        back = read_back(path, Want(name, members, "tok", oracle.revision), source)
        assert back.consistent_index == 3 and len(back.member_ids) == 3
        assert back.db.status.revision == oracle.revision
    # the wrong member name, token or revision are each found
    with pytest.raises(ReadbackError, match="WAL metadata"):
        read_back(restored["a"], Want("b", members, "tok", oracle.revision), source)
    with pytest.raises(ReadbackError, match="members bucket"):
        read_back(restored["a"], Want("a", members, "other", oracle.revision), source)
    with pytest.raises(ReadbackError, match="revision"):
        read_back(restored["a"], Want("a", members, "tok", oracle.revision + 1), source)


def test_etcd_serves_the_ids_the_reader_decodes(oracle: Oracle, tmp_path: Path) -> None:
    peer = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "single"
    _etcdutl_restore(oracle.snapshot, out, "solo", f"solo={peer}", "solo-token")
    want = Want("solo", (("solo", (peer,)),), "solo-token", oracle.revision)
    back = read_back(out, want, read_db(oracle.snapshot))
    wal = read_wal(out / "member" / "wal")
    server = EtcdServer(
        out,
        name="solo",
        peer_port=int(peer.rsplit(":", 1)[1]),
        initial_cluster=f"solo={peer}",
        initial_cluster_token="solo-token",
    ).start()
    try:
        listing = json.loads(server.ctl("member", "list", "-w", "json").stdout)
    finally:
        server.stop()
    assert [int(m["ID"]) for m in listing["members"]] == list(back.member_ids)
    assert int(listing["header"]["cluster_id"]) == back.cluster_id == wal.metadata.cluster_id


def _records_end(wal_file: Path) -> int:
    wal = read_wal(wal_file.parent)
    last = wal.records[-1]
    data = wal_file.read_bytes()
    length = int.from_bytes(data[last.offset : last.offset + 8], "little")
    pad = (length >> 56) & 7 if length >> 63 else 0
    return last.offset + 8 + (length & ((1 << 56) - 1)) + pad


def test_every_flipped_wal_byte_is_detected(
    oracle: Oracle, restored: dict[str, Path], tmp_path: Path
) -> None:
    _, members = _three(oracle)
    want = Want("b", members, "tok", oracle.revision)
    ids = sorted(want.ids())
    cid = readback.cluster_id(ids)
    (segment,) = (restored["b"] / "member" / "wal").glob("*.wal")
    wal_dir = tmp_path / "wal"
    wal_dir.mkdir()
    copy = wal_dir / segment.name
    # the records and a slice of the preallocated zero tail suffice (etcd's is 64 MB)
    good = segment.read_bytes()[:8192]
    copy.write_bytes(good)
    assert len(read_wal(wal_dir).records) == 8
    readback.check_wal(wal_dir, want, ids, cid)
    end = _records_end(copy)
    missed = []
    for off in range(end + 8):
        data = bytearray(good)
        data[off] ^= 0xFF
        copy.write_bytes(bytes(data))
        try:
            readback.check_wal(wal_dir, want, ids, cid)
        except ReadbackError:
            continue
        missed.append(off)
    assert missed == []


def test_wal_damage_is_named(restored: dict[str, Path], tmp_path: Path) -> None:
    (segment,) = (restored["a"] / "member" / "wal").glob("*.wal")
    good = segment.read_bytes()[:8192]
    wal_dir = tmp_path / "wal"
    wal_dir.mkdir()
    copy = wal_dir / segment.name
    wal = read_wal(segment.parent)
    entry = next(r for r in wal.records if r.type == ENTRY)
    data = bytearray(good)
    data[entry.offset + 8 + 12] ^= 0x01  # inside the entry's data
    copy.write_bytes(bytes(data))
    with pytest.raises(WalError, match=r"record 3 at offset \d+ \(entry\): crc mismatch"):
        read_wal(wal_dir)
    end = _records_end(segment)
    data = bytearray(good)
    data[end + 100] = 7  # garbage after the last record
    copy.write_bytes(bytes(data))
    with pytest.raises(WalError, match=f"non-zero byte at offset {end + 100}"):
        read_wal(wal_dir)
    copy.write_bytes(good[: entry.offset + 20])  # cut inside a record
    with pytest.raises(WalError, match="record 3"):
        read_wal(wal_dir)
    snap_rec = [r for r in wal.records if r.type == SNAPSHOT][-1]
    assert snap_rec.offset < end


def test_every_flipped_snap_byte_is_detected(
    oracle: Oracle, restored: dict[str, Path], tmp_path: Path
) -> None:
    _, members = _three(oracle)
    want = Want("c", members, "tok", oracle.revision)
    ids = sorted(want.ids())
    snap_dir = restored["c"] / "member" / "snap"
    (name,) = snap_names(snap_dir)
    good = (snap_dir / name).read_bytes()
    work = tmp_path / "snap"
    work.mkdir()
    copy = work / name
    copy.write_bytes(good)
    readback.check_snap(work, want, ids)
    missed = []
    for off in range(len(good)):
        data = bytearray(good)
        data[off] ^= 0xFF
        copy.write_bytes(bytes(data))
        try:
            readback.check_snap(work, want, ids)
        except ReadbackError:
            continue
        missed.append(off)
    assert missed == []
    data = bytearray(good)
    data[len(data) // 2] ^= 0x10
    copy.write_bytes(bytes(data))
    with pytest.raises(SnapError, match="crc mismatch: stored 0x"):
        read_snap(copy)


def test_a_changed_key_in_the_restored_db_is_detected(
    oracle: Oracle, restored: dict[str, Path], tmp_path: Path
) -> None:
    _, members = _three(oracle)
    out = tmp_path / "r"
    shutil.copytree(restored["a"], out)
    db = out / "member" / "snap" / "db"
    data = bytearray(db.read_bytes())
    needle = b"value-17"
    at = data.find(needle)
    assert at > 0
    while at > 0:
        data[at + len(needle) - 1] ^= 0x01
        at = data.find(needle, at + 1)
    db.write_bytes(bytes(data))
    with pytest.raises(ReadbackError, match="bucket 'key' differs from the snapshot"):
        read_back(out, Want("a", members, "tok", oracle.revision), read_db(oracle.snapshot))


def test_a_wal_that_etcd_cut_into_two_segments(tmp_path: Path) -> None:
    """More than 64 MB of entries: etcd cuts a second segment that starts with a crc record
    carrying the chain; the reader follows the chain across it."""
    import os

    server = EtcdServer(tmp_path / "etcd-data").start()
    value = os.urandom(1024 * 1024)
    try:
        for i in range(70):
            server.ctl("put", f"/big/{i:03d}", input=value, check=True)  # value from stdin
    finally:
        server.stop()
    wal = read_wal(tmp_path / "etcd-data" / "member" / "wal")
    assert len(wal.segments) >= 2, wal.segments
    second = [r for r in wal.records if r.segment == wal.segments[1]]
    assert second[0].type == CRC and second[0].crc != 0
    normal = [e for e in wal.entries if e.type == 0]
    assert sum(e.data.count(value[:64]) for e in normal) == 70
