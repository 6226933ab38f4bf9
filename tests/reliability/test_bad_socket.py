"""Hostile control-socket input while backups run: an error reply or a closed connection.

The daemon is a subprocess backing up every 2 s; random bytes, truncated JSON, deep
nesting, 1 MB lines, wrong types, unknown ops and 1,000 abandoned connections must leave it
up, answering, with RSS grown by less than 50 MB, and a backup that ran meanwhile stored.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import time
from pathlib import Path

import pytest

from tests.reliability import counters
from tests.reliability.harness import AgentPool, assert_no_secrets, stored_ids, wait_for
from tests.reliability.test_soak import resources
from tests.servers import EtcdServer, put_many

pytestmark = pytest.mark.integration


def exchange(path: Path, payload: bytes, timeout: float = 10.0) -> dict[str, object] | None:
    """Send one request; the final reply, or None when the daemon closed the connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        for _ in range(100):  # a full listen backlog refuses with EAGAIN: try again
            try:
                s.connect(str(path))
                break
            except BlockingIOError:
                time.sleep(0.1)
        else:
            raise AssertionError("the socket refused connections for 10 s")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(payload)
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                break
            buf += chunk
        lines = [ln for ln in buf.splitlines() if ln.strip()]
        if not lines:
            return None
        final = json.loads(lines[-1])
        assert isinstance(final, dict), final
        return final


def inputs(rng: random.Random) -> list[bytes]:
    good = json.dumps({"v": 1, "op": "status", "args": {}})
    out: list[bytes] = [rng.randbytes(rng.randrange(1, 300)) + b"\n" for _ in range(150)]
    out += [good[: rng.randrange(1, len(good))].encode() + b"\n" for _ in range(40)]
    out += [b"[" * n + b"]" * n + b"\n" for n in (10, 1000, 30000)]
    out += [b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"\n"]
    out += [
        b"x" * (1 << 20) + b"\n",
        b'{"v":1,"op":"status","args":{"p":"' + b"y" * (1 << 20) + b'"}}\n',
    ]
    wrong = [
        {"v": "1", "op": "status"},
        {"v": 1, "op": 5},
        {"v": 1, "op": ["status"]},
        {"v": 1, "op": "status", "args": []},
        {"v": 1, "op": "verify", "args": {"backup": 7}},
        {"v": 1, "op": "restore", "args": {"backup": [], "data_dir": {}}},
        {"v": 1, "op": "prune", "args": {"dry_run": "yes"}},
        {"v": 1, "op": "drill", "args": {"backup": None}},
        {"v": 2, "op": "status"},
        {"v": 1, "op": "rm -rf /"},
        {"v": 1, "op": "__class__"},
        {"v": 1, "op": "status", "args": {"extra": 1}},
        {"v": 1, "op": "status", "args": {"n": 1e309}},
        [],
        "status",
        None,
    ]
    out += [json.dumps(w).encode() + b"\n" for w in wrong]
    out += [b'{"v": 1' + b"1" * 5000 + b', "op": "status"}\n']  # beyond the int digit limit
    out += [b"\xff\xfe\n", b"\n", b"{}\n", b"null\n", b'{"v":1,"op":"status"}\x00\n']
    return out


def test_hostile_socket_input_while_backing_up(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], pool: AgentPool
) -> None:
    put_many(etcd, 300)
    sock = tmp_path / "a.sock"
    agent = pool.new(
        endpoints=[etcd.endpoint],
        recipient=age_identity[1],
        store=tmp_path / "store",
        spool=tmp_path / "spool",
        interval="2s",
        control_socket=sock,
        extra="[retention]\nkeep_last = 3\n",
    ).start()
    wait_for(lambda: stored_ids(agent) and sock.exists(), 60, "a first backup and the socket")
    rss0 = resources(agent.pid)[2]
    before = len(stored_ids(agent))
    replies: dict[str, int] = {}
    texts: list[str] = []
    for payload in inputs(random.Random(12)):
        counters.add("malformed_inputs")
        reply = exchange(sock, payload)
        texts.append(json.dumps(reply))
        if reply is None:
            replies["closed"] = replies.get("closed", 0) + 1
            continue
        assert reply.get("ok") is False or payload.startswith(b'{"v": 1, "op": "status"'), (
            payload[:80],
            reply,
        )
        if reply.get("ok") is False:
            err = reply["error"]
            assert isinstance(err, dict) and err.get("code"), reply
            assert "Traceback" not in str(err.get("message")), reply
            replies[str(err["code"])] = replies.get(str(err["code"]), 0) + 1
        assert agent.alive(), agent.log_text()[-2000:]

    # 1,000 connections opened and abandoned, 100 at a time
    for _ in range(10):
        held = []
        for _ in range(100):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(sock))
            except OSError:
                s.close()
                continue
            held.append(s)
        for s in held:
            s.close()
    counters.add("malformed_inputs", 1000)

    status = None
    deadline = time.monotonic() + 60
    while status is None or status.get("ok") is not True:  # the daemon still answers
        assert time.monotonic() < deadline, status
        status = exchange(sock, json.dumps({"v": 1, "op": "status", "args": {}}).encode() + b"\n")
        time.sleep(0.2)
    wait_for(lambda: len(stored_ids(agent)) > before + 1, 60, "backups beside the hostile input")
    assert agent.alive()
    grown = resources(agent.pid)[2] - rss0
    counters.note(f"socket: replies {replies}; RSS grew {grown // 2**20} MiB")
    assert grown < 50 * 2**20, grown
    assert "bad_request" in replies, replies
    secret = age_identity[0].read_text().split("AGE-SECRET-KEY-")[1].split()[0]
    assert_no_secrets(agent, [secret], *texts, json.dumps(status))
    assert not [e for e in agent.events() if e.get("level") == "error" and "Traceback" in str(e)]
