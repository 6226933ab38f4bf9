"""sd_notify datagrams: path and abstract sockets, watchdog pacing, no-op when unset."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from etcd_backup_agent.sdnotify import Notifier


def test_unset_is_a_silent_noop() -> None:
    n = Notifier(env={})
    assert not n.enabled
    n.ready("x")
    n.watchdog()
    n.stopping()


def test_messages_reach_a_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(str(path))
        rx.settimeout(2)
        n = Notifier(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
        n.ready("starting")
        assert rx.recv(4096) == b"READY=1\nSTATUS=starting"
        n.watchdog(now=1000.0)
        assert rx.recv(4096) == b"WATCHDOG=1"
        n.watchdog(now=1000.5)  # less than half of 2 s since the last ping: nothing sent
        n.stopping()
        assert rx.recv(4096) == b"STOPPING=1"


def test_abstract_socket_and_foreign_watchdog_pid() -> None:
    name = f"etcd-backup-agent-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(b"\0" + name.encode())
        rx.settimeout(2)
        env = {"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
        n = Notifier(env=env)
        assert n.watchdog_interval is None
        n.status("ok")
        assert rx.recv(4096) == b"STATUS=ok"


def test_a_missing_socket_never_raises(tmp_path: Path) -> None:
    n = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "absent.sock")})
    assert n.send("READY=1") is False
