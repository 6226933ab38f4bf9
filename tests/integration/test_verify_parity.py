"""`etcd-backup-agent verify -w json` equals `etcdutl snapshot status -w json` (etcd 3.5.1).

Snapshots come from real etcd servers started here (`etcdctl snapshot save`); one server per
scenario group keeps the suite fast.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from etcd_backup_agent.cli import main
from etcd_backup_agent.snapshot.bolt import BoltFile
from etcd_backup_agent.snapshot.check import decode_leaf
from etcd_backup_agent.snapshot.verify import verify_snapshot
from tests.servers import EtcdServer, _client, etcd_bin, etcd_cluster, etcdutl_status

pytestmark = pytest.mark.integration


def _batch_put(server: EtcdServer, items: list[tuple[bytes, bytes]], lease: object = None) -> None:
    client = _client(server)
    try:
        for i in range(0, len(items), 128):
            ops = [client.transactions.put(k, v, lease=lease) for k, v in items[i : i + 128]]
            client.transaction(compare=[], success=ops, failure=[])
    finally:
        client.close()


def _save(server: EtcdServer, path: Path, user: str | None = None) -> Path:
    server.ctl("snapshot", "save", str(path), user=user)
    return path


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Snapshots of one etcd taken as its history grows."""
    base = tmp_path_factory.mktemp("parity")
    out: dict[str, Path] = {}
    server = EtcdServer(base / "etcd-data").start()
    try:
        out["empty"] = _save(server, base / "empty.db")
        server.ctl("put", "/single", "value")
        out["single"] = _save(server, base / "single.db")
        many = [
            (f"/registry/pods/ns{i % 7}/pod-{i:06d}".encode(), b"x" * (i % 300))
            for i in range(15000)
        ]
        _batch_put(server, many)
        out["many"] = _save(server, base / "many.db")
        big = [
            (f"/big/{n}".encode(), bytes(range(256)) * (n // 256))
            for n in (5000, 40_000, 300_000, 1_000_000)
        ]
        _batch_put(server, big[:3])
        _batch_put(server, big[3:])
        out["overflow"] = _save(server, base / "overflow.db")
        for rnd in range(30):
            _batch_put(server, [(f"/churn/{i}".encode(), f"{rnd}".encode()) for i in range(100)])
        server.ctl("del", "/churn/1", "--prefix")
        server.ctl("del", "/registry/pods/ns3", "--prefix")
        rev = json.loads(server.ctl("get", "/single", "-w", "json").stdout)["header"]["revision"]
        server.ctl("compact", str(int(rev) - 5))
        out["compacted"] = _save(server, base / "compacted.db")
        client = _client(server)
        try:
            lease = client.lease(600)
            _batch_put(server, [(f"/lease/{i}".encode(), b"v") for i in range(50)], lease=lease)
            client.lease(900)
        finally:
            client.close()
        out["leases"] = _save(server, base / "leases.db")
        server.ctl("defrag")
        out["defragmented"] = _save(server, base / "defrag.db")
    finally:
        server.stop()
    yield out


@pytest.fixture(scope="module")
def auth_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("auth")
    server = EtcdServer(base / "etcd-data").start()
    try:
        server.ctl("put", "/app/config", "v1")
        server.ctl("user", "add", "root:rootpw", "--interactive=false")
        server.ctl("role", "add", "root", check=False)
        server.ctl("user", "grant-role", "root", "root")
        server.ctl("role", "add", "reader")
        server.ctl("role", "grant-permission", "reader", "read", "/app/", "--prefix=true")
        server.ctl("user", "add", "alice:alicepw", "--interactive=false")
        server.ctl("user", "grant-role", "alice", "reader")
        server.ctl("auth", "enable")
        server.ctl("put", "/app/after-auth", "v2", user="root:rootpw")
        return _save(server, base / "auth.db", user="root:rootpw")
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("cluster")
    members = etcd_cluster(base, size=3)
    try:
        _batch_put(members[0], [(f"/c/{i}".encode(), b"v" * i) for i in range(500)])
        members[2].ctl("put", "/c/last", "x")
        return _save(members[1], base / "cluster.db")
    finally:
        for m in members:
            m.stop()


def _ours(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, int]:
    assert main(["verify", str(path), "-w", "json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


SCENARIOS = ["empty", "single", "many", "overflow", "compacted", "leases", "defragmented"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_parity(name: str, snapshots: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = snapshots[name]
    assert _ours(path, capsys) == etcdutl_status(path)


def test_parity_auth(auth_snapshot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _ours(auth_snapshot, capsys) == etcdutl_status(auth_snapshot)


def test_parity_cluster(cluster_snapshot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _ours(cluster_snapshot, capsys) == etcdutl_status(cluster_snapshot)


def test_json_is_byte_identical(
    snapshots: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = snapshots["many"]
    assert main(["verify", str(path), "-w", "json"]) == 0
    ours = capsys.readouterr().out.strip()
    theirs = subprocess.run(
        [etcd_bin("etcdutl"), "snapshot", "status", str(path), "-w", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert ours == theirs


def test_scenarios_exercise_what_they_claim(snapshots: dict[str, Path]) -> None:
    assert etcdutl_status(snapshots["many"])["totalKey"] > 15000
    with BoltFile(snapshots["overflow"]) as db:
        spans = []
        for pid in range(2, db.meta.pgid):
            try:
                spans.append(db.read_page(pid).overflow)
            except Exception:  # free and continuation pages have foreign headers
                continue
        assert sum(1 for s in spans if s) >= 1
        assert max(spans) * db.page_size >= 1_000_000


# --- corruption of a real snapshot -------------------------------------------------------


def _key_bucket_pages(path: Path) -> tuple[int, list[int], int]:
    """(page size, key bucket branch page id, its children)."""
    with BoltFile(path) as db:
        root = decode_leaf(db, db.read_page(db.meta.root))
        assert not isinstance(root, Exception)
        value = root.value(root.keys.index(b"key"))
        branch = struct.unpack_from("<Q", value, 0)[0]
        page = db.read_page(branch)
        assert page.flags == 0x01, "key bucket should be a branch page in the 'many' snapshot"
        children = [child for _, child in db.branch_items(page)]
        return db.page_size, [branch, *children], len(children)


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy.db"
    shutil.copyfile(src, dst)
    return dst


def _patch(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def test_real_leaf_value_byte_flip_is_caught_by_trailer(
    snapshots: dict[str, Path], tmp_path: Path
) -> None:
    path = _copy(snapshots["many"], tmp_path)
    ps, pages, _ = _key_bucket_pages(path)
    leaf = pages[1]
    _patch(path, leaf * ps + ps - 1, b"\xaa")  # inside the leaf, not its header
    report = verify_snapshot(path)
    assert not report.sound and report.trailer_ok is False
    assert report.problems[0].startswith("sha256 trailer mismatch")


def test_real_leaf_header_corruption(snapshots: dict[str, Path], tmp_path: Path) -> None:
    path = _copy(snapshots["many"], tmp_path)
    ps, pages, _ = _key_bucket_pages(path)
    leaf = pages[2]
    _patch(path, leaf * ps + 8, struct.pack("<H", 0x08))
    report = verify_snapshot(path)
    assert f"page {leaf}: invalid type: unknown<08>" in report.problems


def test_real_branch_corruption(snapshots: dict[str, Path], tmp_path: Path) -> None:
    path = _copy(snapshots["many"], tmp_path)
    ps, pages, _ = _key_bucket_pages(path)
    branch, first = pages[0], pages[1]
    _patch(path, branch * ps + 16 + 16 + 8, struct.pack("<Q", first))  # child 1 := child 0
    report = verify_snapshot(path)
    assert f"page {first}: multiple references" in report.problems
    assert any("trailer mismatch" in p for p in report.problems)


def test_real_meta_corruption(snapshots: dict[str, Path], tmp_path: Path) -> None:
    path = _copy(snapshots["many"], tmp_path)
    _patch(path, 16 + 24, b"\x07")  # meta 0 root pgid
    report = verify_snapshot(path)
    assert "page 0: meta page invalid: meta checksum mismatch" in report.problems
    assert report.status is not None  # meta 1 still opens the database


def test_real_truncation_and_trailer(snapshots: dict[str, Path], tmp_path: Path) -> None:
    data = snapshots["many"].read_bytes()
    path = tmp_path / "t.db"
    path.write_bytes(data[: len(data) // 2])
    report = verify_snapshot(path)
    assert any(p.startswith("truncated: the database needs") for p in report.problems)
    path.write_bytes(data[:-32])
    report = verify_snapshot(path)
    assert report.problems == ["no sha256 trailer (size is a whole number of pages)"]
    assert verify_snapshot(path, require_trailer=False).sound
    path.write_bytes(data[:-32] + bytes(32))
    assert verify_snapshot(path).trailer_ok is False
