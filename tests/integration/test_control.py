"""The control socket: restore through etcd-backupctl, peer checks, load and bad input."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from etcd_backup_agent import config as config_mod
from etcd_backup_agent.cli import ctl
from etcd_backup_agent.control import client
from etcd_backup_agent.control.server import ControlServer
from etcd_backup_agent.service import Agent
from tests.integration.restore_fixtures import *  # noqa: F403
from tests.integration.restore_fixtures import Backed, make_config, short_dir
from tests.servers import EtcdServer, free_port, read_all

pytestmark = pytest.mark.integration


@pytest.fixture
def served(backed: Backed, tmp_path: Path) -> Iterator[tuple[ControlServer, Path, Path]]:
    sockdir = short_dir()
    sock = sockdir / "run" / "agent.sock"
    cfg = make_config(tmp_path / "agent", backed.store, backed.recipient, socket=sock)
    settings = config_mod.load(cfg)
    server = ControlServer(settings.control, Agent(settings))
    server.start()
    try:
        yield server, sock, cfg
    finally:
        server.stop()
        shutil.rmtree(sockdir, ignore_errors=True)


def _raw(sock: Path, payload: bytes, timeout: float = 10) -> dict[str, object]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(sock))
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer and close before reading everything
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    lines = [json.loads(x) for x in data.splitlines() if x.strip()]
    return lines[-1]


def test_socket_file_mode_and_stale_replacement(
    served: tuple[ControlServer, Path, Path],
) -> None:
    server, sock, _ = served
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o755
    server.stop()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))  # a socket file nobody listens on
    stale.close()
    server.start()
    assert client.call(sock, "status", {})["ok"] is True


def test_restore_through_socket_with_backupctl(
    served: tuple[ControlServer, Path, Path],
    backed: Backed,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, sock, _ = served
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    new = tmp_path / "restored"
    argv = [
        "restore",
        "latest",
        "--socket",
        str(sock),
        "--identity",
        str(backed.identity),
        "--data-dir",
        str(new),
        "--initial-cluster",
        f"default={url}",
        "--initial-advertise-peer-urls",
        url,
    ]
    assert ctl.main(argv) == 0
    out = capsys.readouterr().out
    assert f"into {new}" in out and "next steps:" in out
    server = EtcdServer(new, peer_port=port).start()
    try:
        assert read_all(server) == backed.written
    finally:
        server.stop()
    assert ctl.main(["list", "--socket", str(sock), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["ok"] and len(listed["result"]["backups"]) == 1


def test_backupctl_and_the_offline_command_print_the_same_restore(
    served: tuple[ControlServer, Path, Path],
    backed: Backed,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One RestoreOptions and one renderer: the same flags give the same report text."""
    import re

    from etcd_backup_agent.cli import main as agent_main

    _, sock, cfg = served
    me, other = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    flags = ["--identity", str(backed.identity), "--name", "m1", "--initial-cluster",
             f"m1={me},m2={other}", "--initial-advertise-peer-urls", me, "--initial-cluster-token",
             "parity", "--bump-revision", "10", "--mark-compacted"]  # fmt: skip
    texts = []
    for how, run in (("socket", ctl.main), ("offline", agent_main)):
        where = ["--socket", str(sock)] if how == "socket" else ["--config", str(cfg)]
        new = tmp_path / how
        argv = [
            "restore",
            "latest",
            *where,
            *flags,
            "--data-dir",
            str(new),
            "--wal-dir",
            f"{new}-wal",
        ]
        assert run(argv) == 0
        out = capsys.readouterr().out.replace(str(new), "NEW")
        texts.append(re.sub(r"\(\d+\.\d h ago\)", "(H ago)", out))
    assert texts[0] == texts[1]
    assert "# member m2 (" in texts[0] and "--initial-cluster-token parity" in texts[0]
    assert "revision bumped by 10 and marked compacted" in texts[0]


def test_identity_from_stdin_and_errors(
    served: tuple[ControlServer, Path, Path],
    backed: Backed,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, sock, _ = served
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(backed.identity.read_text()))
    assert ctl.main(["verify", "latest", "--socket", str(sock), "--identity", "-"]) == 0
    assert f"revision: {backed.revision}" in capsys.readouterr().out
    assert ctl.main(["verify", "nope", "--socket", str(sock), "--identity", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "/nonexistent" in err


def test_daemon_not_running_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sock = tmp_path / "none.sock"
    assert ctl.main(["status", "--socket", str(sock)]) == 1
    err = capsys.readouterr().err
    assert str(sock) in err and "`etcd-backup-agent list" in err
    assert ctl.main(["restore"]) == 2


def test_non_root_peer_refused(served: tuple[ControlServer, Path, Path]) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to switch to another uid")
    _, sock, _ = served
    # layer 1: the 0600 socket keeps nobody out at the filesystem
    first = _as_nobody(sock)
    assert "PermissionError" in str(first.get("child_error")), first
    # layer 2: with the file opened up, SO_PEERCRED still refuses the peer
    os.chmod(sock.parent.parent, 0o755)
    os.chmod(sock, 0o666)
    reply = _as_nobody(sock)
    assert reply.get("ok") is False, reply
    assert reply["error"]["code"] == "permission_denied"  # type: ignore[index]
    assert client.call(sock, "status", {})["ok"] is True


def _as_nobody(sock: Path) -> dict[str, object]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become nobody, ask for status, report the reply
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            reply = _raw(sock, b'{"v":1,"op":"status","args":{}}\n')
            os.write(write, json.dumps(reply).encode())
        except BaseException as exc:
            os.write(write, json.dumps({"child_error": repr(exc)}).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    reply: dict[str, object] = json.loads(data)
    return reply


def test_fifty_concurrent_status_clients(served: tuple[ControlServer, Path, Path]) -> None:
    _, sock, _ = served
    results: list[bool] = []
    lock = threading.Lock()

    def one() -> None:
        reply = client.call(sock, "status", {}, timeout=30)
        with lock:
            results.append(bool(reply.get("ok")))

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [True] * 50


def test_busy_when_over_max_connections(backed: Backed, tmp_path: Path) -> None:
    sockdir = short_dir()
    sock = sockdir / "a.sock"
    cfg = make_config(tmp_path / "agent", backed.store, backed.recipient, socket=sock)
    settings = config_mod.load(cfg)
    from dataclasses import replace

    ctl = replace(settings.control, max_connections=1, idle_timeout=5.0)
    server = ControlServer(ctl, Agent(settings))
    server.start()
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        holder.connect(str(sock))  # occupies the only slot, sends nothing
        import time

        time.sleep(0.3)
        reply = _raw(sock, b'{"v":1,"op":"status"}\n')
        assert reply["error"]["code"] == "busy"  # type: ignore[index]
    finally:
        holder.close()
        server.stop()
        shutil.rmtree(sockdir, ignore_errors=True)


def test_malformed_requests_get_error_replies(served: tuple[ControlServer, Path, Path]) -> None:
    _, sock, _ = served
    rng = random.Random(1234)
    valid = b'{"v":1,"op":"status","args":{}}'
    fixed = [
        b"\n",
        b"not json\n",
        b"[]\n",
        b'"str"\n',
        b"{}\n",
        b'{"v":2,"op":"status"}\n',
        b'{"v":1,"op":"explode"}\n',
        b'{"v":1,"op":"status","args":[]}\n',
        b'{"v":1,"op":"verify","args":{}}\n',
        b'{"v":1,"op":"verify","args":{"backup":1}}\n',
        b'{"v":1,"op":"prune","args":{"dry_run":"yes"}}\n',
        b'{"v":1,"op":"restore","args":{"backup":"x","data_dir":"/x","bump_revision":true}}\n',
        b'{"v":true,"op":"status"}\n',
        b'{"v":1,"op":"status","extra":1}\n',
        b"\xff\xfe\n",
        b"[" * 5000 + b"\n",
        b"x" * 70000 + b"\n",
        b"y" * 200000,
    ]
    for _ in range(60):
        blob = bytearray(valid)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(blob))
            blob[pos] = rng.randrange(256)
        fixed.append(bytes(blob).replace(b"\n", b" ") + b"\n")
    for payload in fixed:
        reply = _raw(sock, payload)
        if reply.get("ok"):  # a mutation may leave a valid status request
            continue
        assert isinstance(reply.get("error"), dict), (payload[:60], reply)
    assert client.call(sock, "status", {})["ok"] is True


def test_endless_line_times_out(backed: Backed, tmp_path: Path) -> None:
    sockdir = short_dir()
    sock = sockdir / "a.sock"
    cfg = make_config(tmp_path / "agent", backed.store, backed.recipient, socket=sock)
    settings = config_mod.load(cfg)
    from dataclasses import replace

    server = ControlServer(replace(settings.control, idle_timeout=1.0), Agent(settings))
    server.start()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(10)
        s.connect(str(sock))
        s.sendall(b'{"v":1,')
        data = s.recv(65536)
        assert json.loads(data)["error"]["code"] == "timeout"
        assert client.call(sock, "status", {})["ok"] is True
    finally:
        s.close()
        server.stop()
        shutil.rmtree(sockdir, ignore_errors=True)


def test_options_before_or_after_the_command(
    served: tuple[ControlServer, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, sock, cfg = served
    assert ctl.main(["--socket", str(sock), "--json", "status"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert ctl.main(["status", "--config", str(cfg)]) == 0
    assert "agent:        test / node1" in capsys.readouterr().out
