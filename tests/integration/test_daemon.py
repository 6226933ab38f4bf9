"""The daemon as a real process against a real etcd: schedule, metrics, signals, spool."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from etcd_backup_agent.manifest import parse_time
from tests.integration.agents import Agent, manifests, new_agent, wait_for
from tests.servers import EtcdServer, put_large, put_many

pytestmark = pytest.mark.integration


def base_config(tmp_path: Path, etcd: EtcdServer, recipient: str) -> dict[str, object]:
    return {
        "endpoints": [etcd.endpoint],
        "recipient": recipient,
        "store": tmp_path / "store",
        "spool": tmp_path / "spool",
    }


def spool_files(spool: Path) -> list[Path]:
    """Files in the spool except its lock file (which stays, by design)."""
    if not spool.exists():
        return []
    return [p for p in spool.rglob("*") if p.is_file() and p.name != ".lock"]


def test_backs_up_on_schedule_serves_metrics_and_reseeds_after_restart(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    agents: list[Agent],
) -> None:
    put_many(etcd, 50)
    cfg = base_config(tmp_path, etcd, age_identity[1])
    agent = new_agent(tmp_path, interval="2s", **cfg)
    agents.append(agent.start())
    wait_for(lambda: len(manifests(tmp_path / "store")) >= 2, 30, "two backups")

    text = agent.scrape_text()
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool missing: install the Debian package prometheus"
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    samples = agent.scrape()
    assert samples[("etcd_backup_runs_total", (("result", "success"),))] >= 2
    assert samples[("etcd_backup_runs_total", (("result", "failure"),))] == 0
    assert samples[("etcd_backup_expected_interval_seconds", ())] == 2
    assert samples[("etcd_backup_etcd_up", ())] == 1
    assert samples[("etcd_backup_store_up", ())] == 1
    assert samples[("etcd_backup_duration_seconds_count", (("stage", "seal"),))] >= 2
    with socket.create_connection(("127.0.0.1", agent.metrics_port), timeout=5):
        pass
    import urllib.request

    with urllib.request.urlopen(agent.url("/healthz"), timeout=5) as resp:
        assert resp.status == 200

    agent.signal(signal.SIGTERM)
    assert agent.wait(30) == 0
    stored = manifests(tmp_path / "store")
    newest = max(parse_time(str(m["created_at"])) for m in stored)

    # restart with a daily interval: the gauge shows the stored backup before any new one
    again = new_agent(tmp_path, name="again", interval="1d", **cfg)
    agents.append(again.start())
    samples = again.scrape()
    assert samples[("etcd_backup_last_success_timestamp_seconds", ())] == newest.timestamp()
    assert samples[("etcd_backup_stored_backups", ())] == len(stored)
    assert samples[("etcd_backup_expected_interval_seconds", ())] == 86400
    time.sleep(2)
    if newest.date() == datetime.now(UTC).date():  # same daily period: nothing is due
        assert len(manifests(tmp_path / "store")) == len(stored)
        assert again.scrape()[("etcd_backup_runs_total", (("result", "success"),))] == 0
    else:  # UTC midnight passed since: the new period is due at once (catch-up)
        wait_for(lambda: len(manifests(tmp_path / "store")) == len(stored) + 1, 30, "catch-up")


def test_sd_notify_ready_status_watchdog_stopping(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    agents: list[Agent],
) -> None:
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(str(sock_path))
        rx.settimeout(20)
        agent = new_agent(tmp_path, interval="1h", **base_config(tmp_path, etcd, age_identity[1]))
        agent.env = {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"}
        agents.append(agent.start())
        seen: list[str] = []

        def read_until(prefix: str) -> str:
            while True:
                msg = rx.recv(4096).decode()
                seen.append(msg)
                for line in msg.splitlines():
                    if line.startswith(prefix):
                        return line

        assert read_until("READY=1") == "READY=1"
        assert read_until("STATUS=").startswith("STATUS=last: ")
        read_until("WATCHDOG=1")
        read_until("WATCHDOG=1")  # repeated at half of WATCHDOG_USEC
        agent.signal(signal.SIGTERM)
        read_until("STOPPING=1")
        assert agent.wait(30) == 0


def test_sighup_keeps_the_old_config_when_broken_and_applies_a_valid_one(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    agents: list[Agent],
) -> None:
    agent = new_agent(tmp_path, interval="1h", **base_config(tmp_path, etcd, age_identity[1]))
    agents.append(agent.start())
    assert agent.scrape()[("etcd_backup_expected_interval_seconds", ())] == 3600
    good = agent.config.read_text()

    agent.config.write_text(good.replace('interval = "1h"', 'interval = "soon"'))
    agent.signal(signal.SIGHUP)
    agent.wait_log("config reload failed; keeping the running config")
    assert agent.alive()
    assert agent.scrape()[("etcd_backup_expected_interval_seconds", ())] == 3600

    agent.config.write_text(good.replace('interval = "1h"', 'interval = "2h"'))
    agent.signal(signal.SIGHUP)
    agent.wait_log("config reloaded")
    assert agent.scrape()[("etcd_backup_expected_interval_seconds", ())] == 7200
    agent.signal(signal.SIGTERM)
    assert agent.wait(30) == 0


def test_sigterm_cancels_a_large_backup_after_the_grace(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    agents: list[Agent],
) -> None:
    put_large(etcd, 64)
    cfg = base_config(tmp_path, etcd, age_identity[1])
    agent = new_agent(tmp_path, interval="1h", level=19, **cfg)
    agents.append(agent.start())
    agent.wait_log("backup started")
    time.sleep(0.5)
    begun = time.monotonic()
    agent.signal(signal.SIGTERM)
    assert agent.wait(60) == 0
    took = time.monotonic() - begun
    events = [e.get("event") for e in agent.events()]
    assert "backup stored" not in events, "the backup finished before SIGTERM: make the DB bigger"
    assert "cancelling the running backup (shutdown grace is over)" in events
    assert "backup cancelled" in events
    assert manifests(tmp_path / "store") == []
    assert spool_files(tmp_path / "spool") == []
    assert took < 30


def test_failed_upload_stays_in_the_spool_and_is_uploaded_when_the_store_returns(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    agents: list[Agent],
) -> None:
    cfg = base_config(tmp_path, etcd, age_identity[1])
    blocker = tmp_path / "store"
    blocker.write_text("not a directory: the store is down")
    agent = new_agent(tmp_path, interval="1h", spool_extra="keep_unuploaded = true", **cfg)
    agents.append(agent.start())
    agent.wait_log("backup failed")
    pending = tmp_path / "spool" / "pending"
    wait_for(lambda: any(pending.glob("*.json")), 10, "a sealed backup kept in the spool")
    assert agent.scrape()[("etcd_backup_pending_uploads", ())] >= 1
    blocker.unlink()
    wait_for(lambda: len(manifests(tmp_path / "store")) >= 1, 30, "the pending upload")
    wait_for(lambda: not any(pending.glob("*.json")), 10, "an empty spool")
    samples = agent.scrape()
    assert samples[("etcd_backup_runs_total", (("result", "failure"),))] >= 1
    assert samples[("etcd_backup_runs_total", (("result", "success"),))] >= 1


def test_a_full_spool_refuses_to_start_a_backup(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    agents: list[Agent],
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "leftover.bin").write_bytes(b"x" * 8192)
    cfg = base_config(tmp_path, etcd, age_identity[1])
    agent = new_agent(tmp_path, interval="1h", spool_extra='max_bytes = "4KiB"', **cfg)
    agents.append(agent.start())
    agent.wait_log("backup skipped")
    assert agent.scrape()[("etcd_backup_skipped_runs_total", (("reason", "spool_full"),))] >= 1
    assert manifests(tmp_path / "store") == []
    with contextlib.suppress(FileNotFoundError):
        (spool / "leftover.bin").unlink()


def test_once_backs_up_when_due_and_exits(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    agents: list[Agent],
) -> None:
    cfg = base_config(tmp_path, etcd, age_identity[1])
    agent = new_agent(tmp_path, interval="1d", **cfg)
    agents.append(agent.start("--once"))
    assert agent.wait(60) == 0, agent.log_text()[-2000:]
    stored = manifests(tmp_path / "store")
    assert len(stored) == 1
    again = new_agent(tmp_path, name="again", interval="1d", **cfg)
    agents.append(again.start("--once"))
    assert again.wait(60) == 0
    if parse_time(str(stored[0]["created_at"])).date() == datetime.now(UTC).date():
        assert len(manifests(tmp_path / "store")) == 1  # the day is covered: nothing due
    else:  # UTC midnight passed between the two runs: a new period, a new backup
        assert len(manifests(tmp_path / "store")) == 2
        assert "no backup due" in [e.get("event") for e in again.events()]
