"""The control socket contract (issue 12, hole 9) and small holes of hole 10.

The protocol document is the oracle: every code it lists is one the code can produce and
every code the code can produce is listed; a request the server cannot parse gets
``bad_request``; secrets nested in log fields are redacted; the metrics listener binds
an IPv6 ``listen``; etcd-backupctl finds the socket without reading root-only files.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import socket
import urllib.request
from pathlib import Path

import pytest

from etcd_backup_agent import log as logsetup
from etcd_backup_agent import metrics as metrics_mod
from etcd_backup_agent.cli import ctl
from etcd_backup_agent.config import ControlSettings
from etcd_backup_agent.control import client
from etcd_backup_agent.control import protocol as proto
from etcd_backup_agent.coordination import BackupSkipped
from etcd_backup_agent.errors import AgentError

DOC = Path(__file__).resolve().parents[2] / "docs" / "socket-protocol.md"


def _doc_codes(heading: str) -> set[str]:
    text = DOC.read_text()
    section = text.split("## Error codes", 1)[1]
    para = section.split(heading, 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"`([a-z_]+)`", para))


def _all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _all_subclasses(sub)
    return out


def test_the_documented_socket_codes_are_exactly_the_protocol_codes() -> None:
    codes = {v for k, v in vars(proto).items() if k.isupper() and isinstance(v, str)}
    codes.discard("")
    assert _doc_codes("Socket level") == codes - {str(proto.VERSION)}


def test_the_documented_operation_codes_are_exactly_the_error_classes_codes() -> None:
    assert BackupSkipped.code == "skipped"
    codes = {c.code for c in _all_subclasses(AgentError) | {AgentError}}
    assert _doc_codes("Operation level") == codes


@pytest.mark.parametrize(
    "line",
    [
        b'{"v": 1, "op": "status", "args": {"x": ' + b"9" * 5000 + b"}}",
        b'{"v": ' + b"1" * 5000 + b', "op": "status"}',
        b'{"v": 1, "op": "restore", "args": {"bump_revision": ' + b"7" * 4301 + b"}}",
    ],
)
def test_integers_beyond_the_digit_limit_are_a_bad_request(line: bytes) -> None:
    with pytest.raises(proto.ProtocolError) as info:
        proto.parse_request(line)
    assert info.value.code == proto.BAD_REQUEST


def test_redact_covers_nested_values() -> None:
    event = {
        "event": "x",
        "s3": {"secret_access_key": "SEKRIT", "bucket": "b", "deeper": [{"token": "T0K"}]},
        "problems": ["identity AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQ in a list"],
        "args": ({"password": "hunter2"}, "plain"),
        "password_file": "/etc/pw",
    }
    out = logsetup._redact(None, "info", dict(event))
    text = json.dumps(out)
    for secret in ("SEKRIT", "T0K", "AGE-SECRET-KEY-1QQ", "hunter2"):
        assert secret not in text
    assert out["s3"]["bucket"] == "b"
    assert out["args"][1] == "plain"
    assert out["password_file"] == "/etc/pw"


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6(), reason="no IPv6 loopback")
def test_the_metrics_listener_binds_an_ipv6_listen() -> None:
    m = metrics_mod.Metrics("c", "1")
    server = metrics_mod.MetricsServer("::1", 0, m, lambda: metrics_mod.Health(True, "ok"))
    server.start()
    try:
        host, port = server.address
        assert host == "::1"
        with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=5) as resp:
            assert b"etcd_backup_store_up" in resp.read()
    finally:
        server.stop()


def test_backupctl_reads_only_the_control_socket_of_the_config(tmp_path: Path) -> None:
    # a config whose other files this user cannot read (they do not even exist here)
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[cluster]\nname = "c"\n[encryption]\nrecipients_file = "/root/nope/recipients"\n'
        '[store]\ntype = "s3"\n[store.s3]\nbucket = "b"\ncredentials_file = "/root/nope/c"\n'
        f'[control]\nsocket = "{tmp_path / "a.sock"}"\n'
    )
    ns = argparse.Namespace(socket=None, config=str(cfg))
    assert client.find_socket(ns) == tmp_path / "a.sock"
    cfg.write_text('[cluster]\nname = "c"\n')
    assert client.find_socket(ns) == ControlSettings.socket


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to become another uid")
def test_backupctl_as_non_root_with_an_unreadable_config_names_the_way_out(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[control]\nsocket = "{tmp_path / "a.sock"}"\n')
    cfg.chmod(0o600)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become nobody and try
        code = 99
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            err = io.StringIO()
            import sys

            sys.stderr = err
            code = ctl.main(["--config", str(cfg), "status"])
            os.write(write, json.dumps({"code": code, "err": err.getvalue()}).encode())
        except BaseException as exc:
            os.write(write, json.dumps({"code": code, "err": repr(exc)}).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        reply = json.loads(f.read())
    os.waitpid(pid, 0)
    assert reply["code"] == 2, reply
    assert "--socket" in reply["err"], reply
    assert "Traceback" not in reply["err"]
