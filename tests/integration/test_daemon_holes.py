"""Holes of issue 12, each reproduced with the daemon as a real process.

- hole 2: READY=1 within seconds with S3 down at start (default retry settings), backups
  wait in the spool and reach the store, oldest first, once it returns;
- hole 3: two agent processes on one spool: the second is refused, the first unharmed;
- hole 4: a SIGHUP reload reaches the socket's operations;
- hole 6: pending backups of one period publish one backup;
- hole 7: leftovers swept at start;
- hole 9: a socket backup beside a running one answers `busy`, huge integers `bad_request`.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from etcd_backup_agent.control import client
from tests.agent_helpers import run_agent
from tests.integration.agents import Agent, manifests, new_agent, wait_for
from tests.integration.test_control import _raw
from tests.integration.test_daemon_s3 import BUCKET, PREFIX, s3_store
from tests.servers import EtcdServer, WeedServer, free_port, put_large

pytestmark = pytest.mark.integration


def local(tmp_path: Path, etcd: EtcdServer, recipient: str) -> dict[str, Any]:
    return {
        "endpoints": [etcd.endpoint],
        "recipient": recipient,
        "store": tmp_path / "store",
        "spool": tmp_path / "spool",
        "control_socket": Path(f"/tmp/eba-{os.getpid()}-{tmp_path.name[-20:]}.sock"),
    }


# -- hole 2 ----------------------------------------------------------------------------------


def test_ready_within_seconds_with_s3_down_and_spooled_backups_reach_it_oldest_first(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], agents: list[Agent]
) -> None:
    weed = WeedServer(tmp_path / "weed", s3_port=free_port())  # not started: S3 is down
    creds = weed.credentials_file(tmp_path / "credentials", profile="backup")
    store = s3_store(weed, creds)
    del store["s3"]["retry_max_time"]  # the DEFAULT retry budget (300 s)
    agent = new_agent(
        tmp_path,
        endpoints=[etcd.endpoint],
        recipient=age_identity[1],
        store=tmp_path / "unused",
        spool=tmp_path / "spool",
        store_toml=store,
        interval="3s",
        spool_extra="keep_unuploaded = true",
    )
    notify = tmp_path / "n.sock"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
            rx.bind(str(notify))
            rx.settimeout(20)  # READY "within seconds", however long the store retries
            agent.env = {"NOTIFY_SOCKET": str(notify)}
            agents.append(agent.start())
            begun = time.monotonic()
            while True:
                msg = rx.recv(4096).decode()
                if "READY=1" in msg:
                    break
            assert time.monotonic() - begun < 20
        wait_for(lambda: agent.scrape()[("etcd_backup_store_up", ())] == 0, 60, "store_up 0")
        pending = tmp_path / "spool" / "pending"
        wait_for(lambda: len(list(pending.glob("*.json"))) >= 2, 120, "two spooled backups")
        spooled = sorted(p.name[: -len(".json")] for p in pending.glob("*.json"))
        weed.start()
        weed.client().create_bucket(Bucket=BUCKET)

        def stored() -> list[str]:
            page = weed.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/test/")
            return [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".json")]

        wait_for(lambda: len(stored()) >= 1, 180, "the spooled backups in S3")
        wait_for(lambda: not set(spooled) & {p.name[:-5] for p in pending.glob("*.json")}, 120, "")
        uploads = [
            str(e["id"])
            for e in agent.events()
            if e.get("event") == "backup stored" and e.get("from_spool")
        ]
        assert uploads == sorted(uploads), "pending backups reach the store oldest first"
        assert agent.scrape()[("etcd_backup_store_up", ())] == 1
    finally:
        for a in agents:
            a.stop()
        weed.stop()


# -- hole 3 ----------------------------------------------------------------------------------


def test_a_second_process_on_the_spool_is_refused_and_the_first_backup_survives(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], agents: list[Agent]
) -> None:
    put_large(etcd, 24)
    cfg = local(tmp_path, etcd, age_identity[1])
    agent = new_agent(tmp_path, interval="1h", level=19, **cfg)
    agents.append(agent.start())
    agent.wait_log("backup started", timeout=60)
    for args in (["run", "--once"], ["backup"]):
        r = run_agent(*args, "--config", agent.config, timeout=120)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "is in use by another etcd-backup-agent process" in r.stderr
        assert f"pid={agent.pid}" in r.stderr
        assert "etcd-backupctl backup" in r.stderr
    agent.wait_log("backup stored", timeout=180)
    assert "backup failed" not in [e.get("event") for e in agent.events()]
    assert len(manifests(tmp_path / "store")) == 1
    agent.stop()
    # the lock dies with its process: the next one runs
    r = run_agent("backup", "--config", agent.config, timeout=180)
    assert r.returncode == 0, r.stderr


# -- hole 4 ----------------------------------------------------------------------------------


def test_sighup_reload_reaches_the_socket_operations(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], agents: list[Agent]
) -> None:
    cfg = local(tmp_path, etcd, age_identity[1])
    sock = cfg["control_socket"]
    agent = new_agent(tmp_path, interval="1h", **cfg)
    agents.append(agent.start())
    agent.wait_log("backup stored")
    assert len(client.call(sock, "list", {})["result"]["backups"]) == 1
    text = agent.config.read_text()
    new_store = tmp_path / "store2"
    agent.config.write_text(text.replace(f'path = "{tmp_path / "store"}"', f'path = "{new_store}"'))
    agent.signal(signal.SIGHUP)
    agent.wait_log("config reloaded")
    assert client.call(sock, "list", {})["result"]["backups"] == []
    reply = client.call(sock, "backup", {}, timeout=120)
    assert reply["ok"], reply
    assert (new_store / "test" / f"{reply['result']['id']}.json").is_file()
    assert client.call(sock, "status", {})["result"]["store"]["describe"] == f"local:{new_store}"
    # a restart-only key refuses the whole reload: nothing of the new file is applied
    agent.config.write_text(
        text.replace(f'path = "{tmp_path / "store"}"', f'path = "{tmp_path / "store3"}"').replace(
            f'dir = "{tmp_path / "spool"}"', f'dir = "{tmp_path / "spool3"}"'
        )
    )
    agent.signal(signal.SIGHUP)
    agent.wait_log(
        "config reload refused: these keys change only on restart; keeping the running config"
    )
    assert client.call(sock, "status", {})["result"]["store"]["describe"] == f"local:{new_store}"


# -- hole 6 ----------------------------------------------------------------------------------


def test_pending_backups_of_one_period_publish_one_backup(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], agents: list[Agent]
) -> None:
    """Two agents (etcd-lock) both spooled a backup of the same period while the store was
    down; when it returns, exactly one of them is published."""
    blocker = tmp_path / "store"
    blocker.write_text("not a directory: the store is down")
    started = []
    for node in ("n1", "n2"):
        a = new_agent(
            tmp_path,
            name=node,
            node=node,
            mode="etcd-lock",
            interval="1h",
            spool_extra="keep_unuploaded = true",
            endpoints=[etcd.endpoint],
            recipient=age_identity[1],
            store=blocker,
            spool=tmp_path / f"spool-{node}",
        )
        agents.append(a.start())
        started.append(a)
    for node in ("n1", "n2"):
        wait_for(
            lambda n=node: list((tmp_path / f"spool-{n}" / "pending").glob("*.json")),
            90,
            f"a spooled backup on {node}",
        )
    blocker.unlink()
    for node in ("n1", "n2"):
        wait_for(
            lambda n=node: not list((tmp_path / f"spool-{n}" / "pending").glob("*.json")),
            90,
            f"{node}'s spool flushed",
        )
    time.sleep(3)
    assert len(manifests(tmp_path / "store")) == 1
    superseded = sum(
        1
        for a in started
        for e in a.events()
        if str(e.get("event", "")).startswith("pending backup superseded")
    )
    assert superseded >= 1


# -- hole 7 ----------------------------------------------------------------------------------


def test_leftovers_are_swept_at_start_and_fresh_ones_counted(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], agents: list[Agent]
) -> None:
    cfg = local(tmp_path, etcd, age_identity[1])
    pending = tmp_path / "spool" / "pending"
    pending.mkdir(parents=True)
    orphan = pending / "20260101T000000Z-r1-n1.db.zst.age"
    orphan.write_bytes(b"x" * 5000)
    store_dir = tmp_path / "store" / "test"
    store_dir.mkdir(parents=True)
    stale = store_dir / ".tmp-stale"
    stale.write_bytes(b"y" * 3000)
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = store_dir / ".tmp-fresh"
    fresh.write_bytes(b"z" * 7000)
    agent = new_agent(tmp_path, interval="1h", **cfg)
    agents.append(agent.start())
    wait_for(lambda: not stale.exists(), 30, "the stale temp file swept")
    assert not orphan.exists()
    assert fresh.exists()  # maybe another node's write in progress: counted, not removed
    agent.wait_log("backup stored")
    wait_for(
        lambda: agent.scrape()[("etcd_backup_spool_bytes", ())] >= 7000, 30, "fresh tmp counted"
    )


# -- hole 9 ----------------------------------------------------------------------------------


def test_socket_backup_beside_a_running_one_is_busy_and_huge_ints_are_bad_requests(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], agents: list[Agent]
) -> None:
    put_large(etcd, 24)
    cfg = local(tmp_path, etcd, age_identity[1])
    sock = cfg["control_socket"]
    agent = new_agent(tmp_path, interval="1h", level=19, **cfg)
    agents.append(agent.start())
    agent.wait_log("backup started", timeout=60)
    reply = client.call(sock, "backup", {}, timeout=30)
    assert reply["ok"] is False
    assert reply["error"]["code"] == "busy", reply
    huge = b'{"v": 1, "op": "status", "args": {"n": ' + b"9" * 5000 + b"}}\n"
    assert _raw(sock, huge)["error"]["code"] == "bad_request"  # type: ignore[index]
    assert _raw(sock, b'{"v":1,"op":"nope"}\n')["error"]["code"] == "unknown_op"  # type: ignore[index]
    assert client.call(sock, "status", {})["ok"] is True
    agent.wait_log("backup stored", timeout=180)


# -- hole 10 ---------------------------------------------------------------------------------


def test_metrics_listen_on_ipv6_loopback(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], agents: list[Agent]
) -> None:
    cfg = local(tmp_path, etcd, age_identity[1])
    agent = new_agent(tmp_path, interval="1h", **cfg)
    port = free_port()
    agent.config.write_text(
        agent.config.read_text().replace(
            f'listen = "127.0.0.1:{agent.metrics_port}"', f'listen = "[::1]:{port}"'
        )
    )
    agents.append(agent.start())
    import urllib.request

    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=5) as resp:
                assert b"etcd_backup_store_up" in resp.read()
                break
        except OSError:
            if time.monotonic() > deadline or not agent.alive():
                raise AssertionError(agent.log_text()[-2000:]) from None
            time.sleep(0.2)


def test_stop_fits_timeoutstopsec_even_with_a_long_grace(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], agents: list[Agent]
) -> None:
    unit = (
        Path(__file__).resolve().parents[2] / "systemd" / "etcd-backup-agent.service"
    ).read_text()
    timeout_stop = float(unit.split("TimeoutStopSec=", 1)[1].split("s", 1)[0])
    put_large(etcd, 64)
    cfg = local(tmp_path, etcd, age_identity[1])
    agent = new_agent(tmp_path, interval="1h", level=19, shutdown_grace="10m", **cfg)
    agents.append(agent.start())
    agent.wait_log("backup started", timeout=60)
    begun = time.monotonic()
    agent.signal(signal.SIGTERM)
    agent.wait(timeout_stop + 30)
    took = time.monotonic() - begun
    assert took < timeout_stop, f"stop took {took:.0f}s, TimeoutStopSec is {timeout_stop:.0f}s"


def _stored_ids(store: Path) -> list[str]:
    return sorted(str(m["id"]) for m in manifests(store))


def test_leader_member_two_leaders_publish_one_backup(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], agents: list[Agent]
) -> None:
    """Both agents talk to the one member, so both see a leader (as during a leadership
    change). The slow one re-checks the store before publishing and stands down."""
    put_large(etcd, 24)
    common: dict[str, Any] = {
        "endpoints": [etcd.endpoint],
        "recipient": age_identity[1],
        "store": tmp_path / "store",
        "mode": "leader-member",
        "interval": "1h",
    }
    fast = new_agent(tmp_path, name="fast", node="n1", spool=tmp_path / "s1", level=1, **common)
    slow = new_agent(tmp_path, name="slow", node="n2", spool=tmp_path / "s2", level=19, **common)
    agents.extend([slow.start(), fast.start()])
    slow.wait_log("backup started", timeout=60)
    fast.wait_log("backup stored", timeout=120)
    slow.wait_log("backup skipped", timeout=180)
    skipped = [e for e in slow.events() if e.get("event") == "backup skipped"]
    assert skipped[-1]["reason"] == "already_backed_up", skipped
    assert [m["node"] for m in manifests(tmp_path / "store")] == ["n1"]
    assert not list((tmp_path / "store" / "test").glob("*n2.db.zst.age"))  # no orphan left


def test_a_lapsed_etcd_lock_never_publishes_a_second_backup(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], agents: list[Agent]
) -> None:
    """Agent 1 is frozen mid-backup past its lock TTL; agent 2 takes the lock and
    publishes; agent 1, thawed, finds the period covered and publishes nothing."""
    put_large(etcd, 24)
    common: dict[str, Any] = {
        "endpoints": [etcd.endpoint],
        "recipient": age_identity[1],
        "store": tmp_path / "store",
        "mode": "etcd-lock",
        "interval": "1h",
    }
    first = new_agent(tmp_path, name="first", node="n1", spool=tmp_path / "s1", level=19, **common)
    agents.append(first.start())
    first.wait_log("backup started", timeout=60)
    first.signal(signal.SIGSTOP)
    try:
        second = new_agent(
            tmp_path, name="second", node="n2", spool=tmp_path / "s2", level=1, **common
        )
        agents.append(second.start())
        second.wait_log("backup stored", timeout=120)  # the TTL (3 s) lapsed: n2 got the lock
    finally:
        first.signal(signal.SIGCONT)
    first.wait_log("backup skipped", timeout=180)
    skipped = [e for e in first.events() if e.get("event") == "backup skipped"]
    assert skipped[-1]["reason"] == "already_backed_up", skipped
    assert [m["node"] for m in manifests(tmp_path / "store")] == ["n2"]
