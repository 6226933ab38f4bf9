"""Native drills (no etcd binary anywhere), full drills, auth-enabled etcd, scratch sweeping.

The product under test runs without etcd binaries (tests/no_binaries.py) where the test
says so; real etcd 3.5.1 wrote the backups and, for full drills, serves the restore.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from etcd_backup_agent import config as config_mod
from etcd_backup_agent import drill as drill_mod
from etcd_backup_agent.cli import main as agent_main
from etcd_backup_agent.control import client
from etcd_backup_agent.control.dispatch import dispatch
from etcd_backup_agent.control.server import ControlServer
from etcd_backup_agent.service import Agent
from tests import no_binaries
from tests.integration.restore_fixtures import *  # noqa: F403
from tests.integration.restore_fixtures import Backed, copy_store, short_dir, write_config
from tests.servers import EtcdServer, etcd_bin, put_many

pytestmark = pytest.mark.integration


def _config(
    base: Path,
    store: Path,
    recipient: str,
    *,
    etcd: str = "etcd",
    etcdutl: str = "etcdutl",
    endpoint: str = "http://127.0.0.1:1",
    auth: tuple[str, Path] | None = None,
    socket: Path | None = None,
) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    etcd_table: dict[str, Any] = {"endpoints": [endpoint]}
    if auth is not None:
        etcd_table |= {"username": auth[0], "password_file": str(auth[1])}
    return write_config(
        base / "config.toml",
        cluster={"name": "test", "node": "node1"},
        etcd=etcd_table,
        encryption={"recipients": [recipient]},
        store={"type": "local", "path": str(store)},
        spool={"dir": str(base / "spool")},
        coordination={"mode": "none"},
        metrics={"enabled": False},
        control={"socket": str(socket or base / "agent.sock")},
        restore={"etcdutl": etcdutl, "work_dir": str(base / "work")},
        drill={"etcd": etcd, "sample_keys": 10},
    )


def _json(out: str) -> dict[str, Any]:
    return json.loads(out)  # type: ignore[no-any-return]


# --- native drills, no etcd binary ---------------------------------------------------


def test_native_drill_without_any_etcd_binary(backed: Backed, tmp_path: Path) -> None:
    prefix, env = no_binaries.no_etcd(tmp_path)
    cfg = _config(tmp_path / "agent", backed.store, backed.recipient)
    r = no_binaries.run(prefix, env, "drill", "--config", cfg, "--identity", backed.identity,
                        "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = _json(r.stdout)
    assert report["result"] == "success" and report["kind"] == "native", report
    assert report["source"] == "store" and report["engine"] == "native"
    assert report["revision"] == backed.revision
    text = " ".join(report["checks"])
    assert "WAL:" in text and "CRC chain intact" in text and "snap file: crc ok" in text
    assert "db: integrity sound" in text and "key count" in text
    assert not any((tmp_path / "agent" / "work").iterdir())


def test_native_drill_fails_loudly_on_a_tampered_object(backed: Backed, tmp_path: Path) -> None:
    prefix, env = no_binaries.no_etcd(tmp_path)
    store = copy_store(backed, tmp_path / "store")
    (obj,) = store.glob("test/*.age")
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0x04  # one bit
    obj.write_bytes(bytes(data))
    cfg = _config(tmp_path / "agent", store, backed.recipient)
    r = no_binaries.run(prefix, env, "drill", "--config", cfg, "--identity", backed.identity,
                        "--json")  # fmt: skip
    assert r.returncode == 1
    report = _json(r.stdout)
    assert report["result"] == "failure" and report["kind"] == "native"
    assert report["step"] == "fetch and decrypt"
    assert "does not match its manifest" in report["error"]
    assert "Traceback" not in r.stderr


def _damage(part: str) -> Any:
    """Wrap the drill's restore so that it damages what it wrote, as a broken engine would."""
    original = drill_mod.restore_scratch

    def restore(snapshot: Path, spec: Any, settings: Any, emit: Any) -> str:
        engine = original(snapshot, spec, settings, emit)
        member = spec.data_dir / "member"
        if part == "wal":
            (target,) = (member / "wal").glob("*.wal")
            offset = 100  # inside the first AddNode entry
        elif part == "snap":
            (target,) = (member / "snap").glob("*.snap")
            offset = target.stat().st_size // 2
        else:
            target = member / "snap" / "db"
            data = target.read_bytes()
            offset = data.find(b"/registry/test/0000042") + 30
        with target.open("r+b") as f:
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0x01]))
        return engine

    return restore


@pytest.mark.parametrize(
    ("part", "message"),
    [("wal", "WAL: .*crc mismatch"), ("snap", "snap file: .*crc mismatch"), ("db", "db")],
)
def test_a_damaged_restore_fails_the_drill(
    backed: Backed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, part: str, message: str
) -> None:
    monkeypatch.setattr(drill_mod, "restore_scratch", _damage(part))
    monkeypatch.setattr(drill_mod, "find_drill_etcd", lambda settings: None)  # native
    cfg = _config(tmp_path / "agent", backed.store, backed.recipient, etcdutl=etcd_bin("etcdutl"))
    agent = Agent(config_mod.load(cfg))
    report = dispatch(agent, "drill", {"identity_file": str(backed.identity)}, lambda e: None)
    assert report["result"] == "failure" and report["step"] == "read back", report
    assert report["error"].startswith("the restored data dir is wrong")
    import re

    assert re.search(message, report["error"]), report["error"]


def test_full_drill_reads_back_then_serves(backed: Backed, tmp_path: Path) -> None:
    cfg = _config(
        tmp_path / "agent",
        backed.store,
        backed.recipient,
        etcd=etcd_bin("etcd"),
        etcdutl=etcd_bin("etcdutl"),
    )
    agent = Agent(config_mod.load(cfg))
    report = dispatch(agent, "drill", {"identity_file": str(backed.identity)}, lambda e: None)
    assert report["result"] == "success" and report["kind"] == "full", report
    text = " ".join(report["checks"])
    assert "WAL:" in text and "etcd: revision" in text
    assert report["live_keys"] == len(backed.written) and report["sampled"] == 10
    assert (agent.last_drill.result, agent.last_drill.kind) == ("success", "full")


def test_configured_etcd_path_that_is_missing_is_a_failure(backed: Backed, tmp_path: Path) -> None:
    cfg = _config(tmp_path / "agent", backed.store, backed.recipient, etcd="/nonexistent/etcd")
    report = dispatch(
        Agent(config_mod.load(cfg)),
        "drill",
        {"identity_file": str(backed.identity)},
        lambda e: None,
    )
    assert report["result"] == "failure" and report["step"] == "etcd binary"
    assert "/nonexistent/etcd" in report["error"]


# --- auth-enabled etcd ---------------------------------------------------------------


@dataclass
class AuthBacked:
    store: Path
    identity: Path
    recipient: str
    password_file: Path
    wrong_password_file: Path
    keys: int


@pytest.fixture(scope="module")
def auth_backed(
    tmp_path_factory: pytest.TempPathFactory, age_identity: tuple[Path, str]
) -> AuthBacked:
    base = tmp_path_factory.mktemp("auth")
    key, recipient = age_identity
    password = base / "root.password"
    password.write_text("drill-root-pw\n")
    password.chmod(0o600)
    wrong = base / "wrong.password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    server = EtcdServer(base / "etcd-data").start()
    try:
        written = put_many(server, 30, value_size=20)
        server.ctl("user", "add", "root", "--new-user-password", "drill-root-pw")
        server.ctl("auth", "enable")
        cfg = _config(
            base / "agent",
            base / "store",
            recipient,
            endpoint=server.endpoint,
            auth=("root", password),
        )
        assert agent_main(["backup", "--config", str(cfg)]) == 0
    finally:
        server.stop()
    return AuthBacked(base / "store", key, recipient, password, wrong, len(written))


def _auth_config(ab: AuthBacked, base: Path, password: Path | None, sock: Path | None = None
                 ) -> Path:  # fmt: skip
    return _config(
        base,
        ab.store,
        ab.recipient,
        etcd=etcd_bin("etcd"),
        etcdutl=etcd_bin("etcdutl"),
        auth=("root", password) if password is not None else None,
        socket=sock,
    )


def test_auth_drill_offline(auth_backed: AuthBacked, tmp_path: Path) -> None:
    from tests.agent_helpers import run_agent

    ok = _auth_config(auth_backed, tmp_path / "ok", auth_backed.password_file)
    r = run_agent("drill", "--config", ok, "--identity", auth_backed.identity, "--json")
    assert r.returncode == 0, r.stderr
    report = _json(r.stdout)
    assert report["kind"] == "full" and report["live_keys"] == auth_backed.keys
    for name, password in (("wrong", auth_backed.wrong_password_file), ("none", None)):
        cfg = _auth_config(auth_backed, tmp_path / name, password)
        r = run_agent("drill", "--config", cfg, "--identity", auth_backed.identity, "--json")
        assert r.returncode == 1, (name, r.stdout, r.stderr)
        report = _json(r.stdout)
        assert report["result"] == "failure" and report["step"] == "read etcd", report
        assert "refused the drill's reads" in report["error"]
        assert "[etcd] username and password_file" in report["error"]
        assert "drill-root-pw" not in r.stdout + r.stderr and "Traceback" not in r.stderr


def test_auth_drill_over_the_socket(auth_backed: AuthBacked, tmp_path: Path) -> None:
    for name, password, result in (
        ("ok", auth_backed.password_file, "success"),
        ("wrong", auth_backed.wrong_password_file, "failure"),
        ("none", None, "failure"),
    ):
        sockdir = short_dir()
        sock = sockdir / "agent.sock"
        settings = config_mod.load(_auth_config(auth_backed, tmp_path / name, password, sock))
        server = ControlServer(settings.control, Agent(settings))
        server.start()
        try:
            reply = client.call(
                sock, "drill", {"identity_file": str(auth_backed.identity)}, timeout=300
            )
        finally:
            server.stop()
            import shutil

            shutil.rmtree(sockdir, ignore_errors=True)
        assert reply.get("ok") is True, reply  # a drill report, never an "internal" error
        report = reply["result"]
        assert report["result"] == result, (name, report)
        if result == "failure":
            assert report["step"] == "read etcd" and "refused" in report["error"]


# --- scratch dirs --------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


@pytest.fixture
def killed_drill(backed: Backed, tmp_path: Path) -> Iterator[tuple[Path, Path, list[Path]]]:
    """SIGKILL an offline drill mid-way; yield (cfg, work dir, the scratch dirs it left).

    Its "etcd" is a stand-in that never answers, so the drill is reliably caught with
    the decrypted snapshot and the restored data dir on disk, waiting for etcd.
    """
    import sys

    from tests.agent_helpers import agent_env

    fake = tmp_path / "fake-etcd"
    fake.write_text("#!/bin/sh\nexec sleep 300\n")
    fake.chmod(0o755)
    cfg = _config(
        tmp_path / "agent", backed.store, backed.recipient, etcd=str(fake),
        etcdutl=etcd_bin("etcdutl"),
    )  # fmt: skip
    work = tmp_path / "agent" / "work"
    argv = [sys.executable, "-m", "etcd_backup_agent.cli", "drill", "--config", str(cfg),
            "--identity", str(backed.identity)]  # fmt: skip
    proc = subprocess.Popen(
        argv, env=agent_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    children: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not children:
            children = _children(proc.pid)
            time.sleep(0.05)
        assert proc.poll() is None and children, "the drill never started its etcd"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        left = sorted(p for p in work.iterdir() if p.name.startswith("drill"))
        yield cfg, work, left
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for child in children:  # the stand-in etcd the drill had started
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def test_a_killed_drill_leaves_a_private_dir_that_the_next_command_sweeps(
    killed_drill: tuple[Path, Path, list[Path]], backed: Backed
) -> None:
    cfg, work, left = killed_drill
    assert [p.name.split("-")[0] for p in left] == ["drill", "drillfetch"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in left)
    assert stat.S_IMODE(work.stat().st_mode) == 0o700
    assert any(p.glob("*/snapshot.db") for p in [work])  # a decrypted snapshot, left by SIGKILL
    assert any(p.glob("data/member/snap/db") for p in left)
    from tests.agent_helpers import run_agent

    r = run_agent("verify", "--config", cfg, "--backup", "latest", "--identity", backed.identity)
    assert r.returncode == 0, r.stderr
    assert not any(p.exists() for p in left)
    assert list(work.iterdir()) == []
    assert "removed scratch dirs" in r.stderr


def test_the_daemon_sweeps_at_start(killed_drill: tuple[Path, Path, list[Path]]) -> None:
    cfg, _, left = killed_drill
    assert left
    from tests.agent_helpers import run_agent

    r = run_agent("run", "--once", "--config", cfg, timeout=120)  # etcd unreachable: fails
    assert not any(p.exists() for p in left), r.stderr


def test_a_live_scratch_dir_is_never_swept(tmp_path: Path) -> None:
    import sys

    from etcd_backup_agent import scratch
    from tests.agent_helpers import agent_env

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from etcd_backup_agent import scratch\n"
            "with scratch.scratch_dir(Path(sys.argv[1]), 'drill-') as d:\n"
            "    print(d, flush=True); time.sleep(120)",
            str(tmp_path),
        ],
        env=agent_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        path = Path(holder.stdout.readline().strip())
        assert path.is_dir()
        assert scratch.sweep(tmp_path) == [] and path.is_dir()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        assert path.is_dir()  # SIGKILL skipped its cleanup
        assert scratch.sweep(tmp_path) == [path] and not path.exists()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)


# --- etcd 3.6 snapshots --------------------------------------------------------------


def test_native_drill_of_an_etcd36_snapshot(backed: Backed, tmp_path: Path) -> None:
    """A 3.6-style snapshot (``meta/storageVersion``; no 3.6 binary here) with a manifest
    under 3.6 status rules, where the key count is the live key count."""
    import dataclasses
    import hashlib

    from etcd_backup_agent.datadir.bolt_write import BoltWriter
    from etcd_backup_agent.manifest import Manifest
    from etcd_backup_agent.seal import unseal_stream
    from etcd_backup_agent.snapshot.status import compute_status

    (mpath,) = backed.store.glob("test/*.json")
    manifest = Manifest.from_json(mpath.read_bytes())
    plain = tmp_path / "plain.db"
    with (backed.store / manifest.object).open("rb") as src:
        unseal_stream(src, plain, backed.identity.read_text())
    snap = tmp_path / "etcd36.db"
    snap.write_bytes(plain.read_bytes()[:-32])
    with BoltWriter(snap) as db:
        tx = db.begin()
        meta = tx.bucket(b"meta")
        assert meta is not None
        meta.put(b"storageVersion", b"3.6.0")
        tx.commit()
        db.sync()
    data = snap.read_bytes()
    snap.write_bytes(data + hashlib.sha256(data).digest())
    status = compute_status(snap, "3.6")
    assert status.total_key == len(backed.written)  # 3.6 rules: live keys
    m36 = dataclasses.replace(
        manifest,
        status_rules="3.6",
        total_keys=status.total_key,
        hash=status.hash,
        db_size=len(data),
        snapshot_sha256=hashlib.sha256(data).hexdigest(),
    )
    cfg = _config(tmp_path / "agent", backed.store, backed.recipient, etcd="etcd-not-here")
    report = drill_mod.drill_plaintext(snap, m36, config_mod.load(cfg))
    assert report.result == "success" and report.kind == "native", report
    assert any("(3.6 rules)" in c for c in report.checks)
    # the same snapshot judged by a manifest that counts one key more fails
    bad = dataclasses.replace(m36, total_keys=status.total_key + 1)
    report = drill_mod.drill_plaintext(snap, bad, config_mod.load(cfg), verify=False)
    assert report.result == "failure" and report.step == "read back", report
    assert "manifest says" in str(report.error)
