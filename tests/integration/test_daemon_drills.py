"""The daemon as a real process: periodic restore drills and retention, end to end."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from etcd_backup_agent.cli import ctl
from etcd_backup_agent.control import client
from tests.integration.agents import Agent, manifests, new_agent
from tests.servers import EtcdServer, etcd_bin, put_many

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _drill_etcds(parent: int) -> set[int]:
    """Pids of throwaway drill etcds whose parent is ``parent``."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == parent and b"--name\0drill" in cmd:
            out.add(int(entry.name))
    return out


@pytest.fixture
def agents(agents: list[Agent]) -> Iterator[list[Agent]]:
    """The conftest's agents; a drill etcd of an agent stopped mid-drill is killed too."""
    yield agents
    for a in agents:
        leftovers = _drill_etcds(a.pid) if a.alive() else set()
        a.stop()
        for pid in leftovers:  # only when the agent had to be killed mid-drill
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory under the temp dir for unix sockets (108-byte path limit)."""
    d = Path(tempfile.mkdtemp(prefix="eba-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def wait_for(cond: Callable[[], bool], timeout: float, what: str, agent: Agent) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if not agent.alive():
            raise AssertionError(f"agent exited; log:\n{agent.log_text()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; log:\n{agent.log_text()[-3000:]}")


def drills(samples: Samples, result: str, kind: str) -> float:
    return samples.get(("etcd_backup_drills_total", (("kind", kind), ("result", result))), 0.0)


def drill_config(tmp_path: Path, identity: Path | None, interval: str = "2s") -> dict[str, Any]:
    drill: dict[str, Any] = {"interval": interval, "etcd": etcd_bin("etcd"), "sample_keys": 10}
    if identity is not None:
        drill["identity_file"] = identity
    (tmp_path / "work").mkdir(exist_ok=True)
    return {
        "restore": {"etcdutl": etcd_bin("etcdutl"), "work_dir": tmp_path / "work"},
        "drill": drill,
    }


def base(tmp_path: Path, etcd: EtcdServer, recipient: str) -> dict[str, object]:
    return {
        "endpoints": [etcd.endpoint],
        "recipient": recipient,
        "store": tmp_path / "store",
        "spool": tmp_path / "spool",
    }


def test_plaintext_drills_run_after_verify_and_are_counted(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    agents: list[Agent],
    short_dir: Path,
) -> None:
    put_many(etcd, 30)
    sock = short_dir / "a.sock"
    agent = new_agent(
        tmp_path,
        interval="2s",
        control_socket=sock,
        extra=drill_config(tmp_path, identity=None),
        **base(tmp_path, etcd, age_identity[1]),
    )
    agents.append(agent.start())
    wait_for(
        lambda: drills(agent.scrape(), "success", "full") >= 2,
        60,
        "two drills of the spooled snapshot",
        agent,
    )
    samples = agent.scrape()
    assert drills(samples, "failure", "full") == 0
    assert drills(samples, "success", "native") == drills(samples, "failure", "native") == 0
    assert samples[("etcd_backup_drill_last_success_timestamp_seconds", ())] > 0
    done = [e for e in agent.events() if e.get("event") == "restore drill finished"]
    assert done and all(
        e["kind"] == "full" and e["source"] == "spool" and e["result"] == "success" for e in done
    )
    # each drilled a backup that was then stored (the drill runs before sealing, so the
    # newest drilled backup may still be uploading: wait for its manifest)
    drilled = {str(e["backup"]) for e in done}
    wait_for(
        lambda: drilled <= {str(m["id"]) for m in manifests(tmp_path / "store")},
        30,
        "every drilled backup to be stored",
        agent,
    )

    reply = client.call(sock, "status", {})
    assert reply["ok"], reply
    drill = reply["result"]["drill"]
    assert drill["mode"] == "spool"
    assert drill["kind"] == "full" and drill["source"] == "spool"
    assert drill["result"] == "success"
    assert drill["at"] is not None
    wait_for(
        lambda: drill["backup_id"] in {str(m["id"]) for m in manifests(tmp_path / "store")},
        30,
        "the backup of the last drill to be stored",
        agent,
    )
    # the raw snapshots were removed after the drills (only the pending dir may remain)
    assert not list((tmp_path / "spool").glob("snapshot-*"))


def _corrupt(obj: Path) -> None:
    data = bytearray(obj.read_bytes())
    data[-100] ^= 0xFF
    tmp = obj.with_name(obj.name + ".tmp")
    tmp.write_bytes(bytes(data))
    os.replace(tmp, obj)


def test_full_drills_pass_then_fail_on_a_corrupted_object(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    agents: list[Agent],
) -> None:
    put_many(etcd, 30)
    agent = new_agent(
        tmp_path,
        interval="1h",  # one backup at start; the drills then repeat on it
        extra=drill_config(tmp_path, identity=age_identity[0]),
        **base(tmp_path, etcd, age_identity[1]),
    )
    agents.append(agent.start())
    wait_for(lambda: drills(agent.scrape(), "success", "full") >= 2, 60, "two full drills", agent)
    samples = agent.scrape()
    assert drills(samples, "failure", "full") == 0
    assert drills(samples, "success", "native") == 0
    (newest,) = manifests(tmp_path / "store")

    # the drills ran on the backup worker, after the backup, never during it
    names = [e.get("event") for e in agent.events()]
    assert names.index("backup stored") < names.index("restore drill started")

    _corrupt(tmp_path / "store" / str(newest["object"]))
    wait_for(lambda: drills(agent.scrape(), "failure", "full") >= 1, 60, "a failed drill", agent)
    failed = [
        e
        for e in agent.events()
        if e.get("event") == "restore drill finished" and e.get("result") == "failure"
    ]
    assert failed, agent.log_text()[-3000:]
    assert failed[0]["kind"] == "full" and failed[0]["source"] == "store"
    assert failed[0]["step"] == "fetch and decrypt"
    assert failed[0]["backup"] == newest["id"]
    assert "does not match its manifest" in str(failed[0]["error"])
    # the drill left no temporary files and no etcd behind
    assert not any((tmp_path / "work").iterdir())


def test_retention_keeps_the_newest_backups_and_prune_dry_run_through_the_socket(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    agents: list[Agent],
    short_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    put_many(etcd, 20)
    cfg = base(tmp_path, etcd, age_identity[1])
    store = tmp_path / "store"
    agent = new_agent(
        tmp_path,
        interval="1s",
        shutdown_grace="60s",  # a backup running at SIGTERM finishes, retention included
        extra="[retention]\nkeep_last = 2\n",
        **cfg,
    )
    agents.append(agent.start())

    def successes() -> float:
        return agent.scrape().get(("etcd_backup_runs_total", (("result", "success"),)), 0.0)

    wait_for(lambda: successes() >= 4, 60, "four backups", agent)
    samples = agent.scrape()
    assert samples[("etcd_backup_retention_deleted_total", ())] > 0
    assert samples[("etcd_backup_retention_runs_total", (("result", "failure"),))] == 0
    agent.signal(signal.SIGTERM)
    assert agent.wait(90) == 0

    taken = [str(e["id"]) for e in agent.events() if e.get("event") == "backup stored"]
    assert len(taken) >= 4
    kept = manifests(store)
    assert sorted(str(m["id"]) for m in kept) == sorted(taken[-2:])
    assert len(list((store / "test").glob("*.age"))) == 2
    assert {str(m["object"]) for m in kept} == {
        str(p.relative_to(store)) for p in (store / "test").glob("*.age")
    }
    newest_verified = max((m for m in kept if m["verified"]), key=lambda m: str(m["created_at"]))
    assert newest_verified["id"] == taken[-1]

    # prune --dry-run through etcd-backupctl and the daemon's socket: a plan, no deletion
    etcd.stop()  # no further backups can change the store while the plan is checked
    sock = short_dir / "p.sock"
    again = new_agent(
        tmp_path,
        name="again",
        interval="1d",
        control_socket=sock,
        extra="[retention]\nkeep_last = 1\n",
        **cfg,
    )
    agents.append(again.start())
    wait_for(sock.exists, 30, "the control socket", again)
    capsys.readouterr()
    assert ctl.main(["prune", "--dry-run", "--socket", str(sock), "--json"]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["ok"], reply
    result = reply["result"]
    assert result["dry_run"] is True
    assert result["deleted"] == [taken[-2]]
    plan = {d["id"]: d["action"] for d in result["decisions"]}
    assert plan == {taken[-1]: "keep", taken[-2]: "would-delete"}
    assert sorted(str(m["id"]) for m in manifests(store)) == sorted(taken[-2:])
    assert len(list((store / "test").glob("*.age"))) == 2
    samples = again.scrape()
    assert samples[("etcd_backup_retention_deleted_total", ())] == 0
