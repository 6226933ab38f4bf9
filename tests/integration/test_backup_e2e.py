"""The backup pipeline end to end against a real etcd 3.5.1, judged by stock tools."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.agent_helpers import agent_env, run_agent, write_config
from tests.servers import (
    EtcdServer,
    etcdutl_status,
    free_port,
    make_tls,
    put_many,
    stock_restore_and_read,
)

pytestmark = pytest.mark.integration


def _files(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".lock"
    )


def _decrypt(obj: Path, key: Path, out: Path) -> None:
    subprocess.run(f"age -d -i {key} {obj} | zstd -d -q -o {out}", shell=True, check=True)


def test_round_trip_with_stock_tools(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str]
) -> None:
    key, recipient = age_identity
    written = put_many(etcd, 3000, value_size=300)
    etcd.ctl("del", "/registry/test/0000007")  # a tombstone too
    del written[b"/registry/test/0000007"]
    cfg = write_config(
        tmp_path / "c.toml", endpoint=etcd.endpoint, recipient=recipient, root=tmp_path
    )
    r = run_agent("backup", "--config", cfg, "--json")
    assert r.returncode == 0, r.stderr
    manifest = json.loads(r.stdout)
    for field in (
        "format_version",
        "id",
        "object",
        "created_at",
        "cluster",
        "node",
        "etcd_endpoint",
        "etcd_version",
        "revision",
        "db_size",
        "snapshot_sha256",
        "object_size",
        "object_sha256",
        "compression",
        "encryption",
        "agent_version",
        "duration_seconds",
    ):
        assert field in manifest, field
    assert manifest["etcd_version"] == "3.5.1"
    assert manifest["encryption"]["recipients"] == [recipient]

    obj = tmp_path / "store" / manifest["object"]
    assert (tmp_path / "store" / "test" / f"{manifest['id']}.json").is_file()
    assert obj.stat().st_size == manifest["object_size"]
    assert hashlib.sha256(obj.read_bytes()).hexdigest() == manifest["object_sha256"]
    assert _files(tmp_path / "spool") == []

    snap = tmp_path / "snapshot.db"
    _decrypt(obj, key, snap)
    data = snap.read_bytes()
    assert len(data) % 512 == 32 and hashlib.sha256(data[:-32]).digest() == data[-32:]
    assert hashlib.sha256(data[:-32]).hexdigest() == manifest["snapshot_sha256"]
    assert len(data) - 32 == manifest["db_size"]
    status = etcdutl_status(snap)
    assert status["revision"] == manifest["revision"]

    etcd.stop()
    assert stock_restore_and_read(snap, tmp_path) == written

    listing = run_agent("list", "--config", cfg)
    assert listing.returncode == 0 and manifest["id"] in listing.stdout
    as_json = json.loads(run_agent("list", "--config", cfg, "--json").stdout)
    assert [m["id"] for m in as_json] == [manifest["id"]]


def test_mutual_tls(tmp_path: Path, age_identity: tuple[Path, str]) -> None:
    tls = make_tls(tmp_path / "pki")
    server = EtcdServer(tmp_path / "etcd", tls=tls).start()
    try:
        put_many(server, 50)
        base = {"ca_file": tls.ca, "cert_file": tls.client_cert, "key_file": tls.client_key}
        cfg = write_config(
            tmp_path / "ok.toml",
            endpoint=server.endpoint,
            recipient=age_identity[1],
            root=tmp_path,
            extra={"etcd": base},
        )
        r = run_agent("backup", "--config", cfg)
        assert r.returncode == 0, r.stderr

        wrong_ca = write_config(
            tmp_path / "ca.toml",
            endpoint=server.endpoint,
            recipient=age_identity[1],
            root=tmp_path / "w",
            extra={"etcd": base | {"ca_file": tls.other_ca}},
        )
        r = run_agent("backup", "--config", wrong_ca)
        assert r.returncode == 1
        assert "error:" in r.stderr and "TLS" in r.stderr and "Traceback" not in r.stderr

        no_cert = write_config(
            tmp_path / "nocert.toml",
            endpoint=server.endpoint,
            recipient=age_identity[1],
            root=tmp_path / "n",
            extra={"etcd": {"ca_file": tls.ca}},
        )
        r = run_agent("backup", "--config", no_cert)
        assert r.returncode == 1
        assert "error:" in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "w" / "store").exists() and not (tmp_path / "n" / "store").exists()
    finally:
        server.stop()


def test_auth_user_and_password_file(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str]
) -> None:
    secret = "s3cr3t-Pa55-" + os.urandom(4).hex()
    etcd.ctl("user", "add", "root", "--new-user-password", secret)
    etcd.ctl("auth", "enable")
    pw = tmp_path / "pw"
    pw.write_text(secret + "\n")
    pw.chmod(0o600)
    cfg = write_config(
        tmp_path / "c.toml",
        endpoint=etcd.endpoint,
        recipient=age_identity[1],
        root=tmp_path,
        extra={"etcd": {"username": "root", "password_file": pw}, "log": {"level": "debug"}},
    )
    r = run_agent("backup", "--config", cfg, "--json")
    assert r.returncode == 0, r.stderr
    assert secret not in r.stdout + r.stderr

    pw.write_text("wrong-password\n")
    r = run_agent("backup", "--config", cfg)
    assert r.returncode == 1
    assert "authentication failed" in r.stderr and "Traceback" not in r.stderr
    assert secret not in r.stdout + r.stderr and "wrong-password" not in r.stdout + r.stderr


def test_etcd_not_running(tmp_path: Path, age_identity: tuple[Path, str]) -> None:
    cfg = write_config(
        tmp_path / "c.toml",
        endpoint=f"http://127.0.0.1:{free_port()}",
        recipient=age_identity[1],
        root=tmp_path,
        extra={"etcd": {"dial_timeout": "2s"}},
    )
    r = run_agent("backup", "--config", cfg)
    assert r.returncode == 1
    assert "etcd unavailable" in r.stderr or "timed out" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    # nothing stored, nothing left: a missing store dir is as good as an empty one
    assert list(tmp_path.glob("store/**/*.json")) == []
    assert list(tmp_path.glob("store/**/*.age")) == []
    assert _files(tmp_path / "spool") == []  # rglob of a missing dir is empty too


def test_etcd_killed_mid_snapshot(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str]
) -> None:
    import etcd3

    client = etcd3.client(host="127.0.0.1", port=etcd.client_port, timeout=60)
    blob = os.urandom(1024 * 1024)
    for i in range(300):  # ~300 MB: the stream takes a few seconds on loopback
        client.put(f"/big/{i:04d}", blob[i:] + blob[:i])
    client.close()
    cfg = write_config(
        tmp_path / "c.toml", endpoint=etcd.endpoint, recipient=age_identity[1], root=tmp_path
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "etcd_backup_agent.cli", "backup", "--config", str(cfg)],
        env=agent_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        part: list[Path] = []
        while time.monotonic() < deadline and proc.poll() is None:
            part = [p for p in (tmp_path / "spool").glob("*.part") if p.stat().st_size > 1 << 20]
            if part:
                break
            time.sleep(0.005)
        assert part, "the snapshot never started streaming"
        etcd.kill()
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert "error:" in err and "Traceback" not in err
    assert _files(tmp_path / "spool") == []
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*"))


def test_spool_not_writable(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str]
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the spool's parent should be")
    cfg = write_config(
        tmp_path / "c.toml",
        endpoint=etcd.endpoint,
        recipient=age_identity[1],
        root=tmp_path,
        extra={"spool": {"dir": blocker / "spool"}},
    )
    r = run_agent("backup", "--config", cfg)
    assert r.returncode == 1
    assert "spool dir" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sigterm_is_clean_for_one_shot(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], signum: int
) -> None:
    """Interrupting a one-shot backup leaves nothing behind (no manifest, clean spool).

    Both signals cancel the backup and let it unwind (abort the upload, remove the part
    file); neither may leave the process hanging (a KeyboardInterrupt raised inside the
    gRPC stream once did, in CI)."""
    put_many(etcd, 500, value_size=2000)
    cfg = write_config(
        tmp_path / "c.toml",
        endpoint=etcd.endpoint,
        recipient=age_identity[1],
        root=tmp_path,
        extra={"compression": {"level": 19}},
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "etcd_backup_agent.cli", "backup", "--config", str(cfg)],
        env=agent_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        # mid-backup: the snapshot streams into the spool while its sealed copy is written
        # to a temp file in the store (zstd level 19 keeps the sealing child busy)
        if list((tmp_path / "spool").glob("snapshot-*.part")) or list(
            (tmp_path / "store").rglob(".tmp-*")
        ):
            break
        time.sleep(0.005)
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "cancelled" in err or "interrupted" in err, err
    assert list(tmp_path.glob("store/**/*.json")) == []
    leftovers = [f for f in _files(tmp_path / "spool") if not f.startswith("pending/")]
    assert leftovers == []
