"""Soak: hundreds of backup cycles at a 1 s interval; resources flat, nothing unaccounted.

RELIABILITY_SOAK_CYCLES sets the number of cycles (default 300, the issue's floor).
"""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

import pytest

from tests.integration.agents import Agent
from tests.reliability import counters
from tests.reliability.checker import Ledger, LocalView, check_store
from tests.reliability.harness import AgentPool, events, stored_ids, wait_for
from tests.servers import EtcdServer, put_many

pytestmark = [pytest.mark.integration, pytest.mark.soak]

CYCLES = int(os.environ.get("RELIABILITY_SOAK_CYCLES", "300"))
KEEP_LAST = 5


def resources(pid: int) -> tuple[int, int, int]:
    """(open fds, threads, RSS bytes) of a process, from /proc."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    rss = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) * 1024  # type: ignore[union-attr]
    return fds, threads, rss


def cycles(agent: Agent) -> tuple[int, int]:
    return len(stored_ids(agent)), len(events(agent, "backup failed"))


def test_soak_hundreds_of_cycles_at_one_second(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], pool: AgentPool
) -> None:
    put_many(etcd, 50)
    store, spool = tmp_path / "store", tmp_path / "spool"
    sock = tmp_path / "agent.sock"
    agent = pool.new(
        endpoints=[etcd.endpoint],
        recipient=age_identity[1],
        store=store,
        spool=spool,
        interval="1s",
        control_socket=sock,
        extra=f"[retention]\nkeep_last = {KEEP_LAST}\n",
    ).start()
    view, ledger = LocalView(store), Ledger()
    scratch = tmp_path / "scratch"
    wait_for(lambda: sum(cycles(agent)) >= 10, 60, "10 warm-up cycles")
    start = resources(agent.pid)
    sizes: list[int] = []
    deadline = time.monotonic() + CYCLES * 2 + 120
    while sum(cycles(agent)) < CYCLES:
        assert agent.alive(), agent.log_text()[-3000:]
        assert time.monotonic() < deadline, f"only {cycles(agent)} cycles"
        sizes.append(len(list((store / "test").glob("*.json"))))
        time.sleep(2)
        if len(sizes) % 15 == 0:  # every ~30 s: the stock tools judge the store
            check_store(view, age_identity[0], scratch, ledger=ledger)
    end = resources(agent.pid)
    before = cycles(agent)
    samples = agent.scrape()
    metrics = agent.scrape_text()
    sock_mode = stat.S_IMODE(sock.stat().st_mode)
    agent.stop()  # SIGTERM lets the running cycle and its pruning finish: the log is final
    stored, failed = cycles(agent)
    final = check_store(view, age_identity[0], scratch, ledger=ledger)
    counters.add("cycles", stored + failed)
    counters.note(
        f"soak: {stored + failed} cycles ({failed} failed); fds {start[0]}->{end[0]}, "
        f"threads {start[1]}->{end[1]}, RSS {start[2] // 2**20}->{end[2] // 2**20} MiB"
    )

    # every cycle is a stored backup or a counted failure
    ok = samples[("etcd_backup_runs_total", (("result", "success"),))]
    bad = samples[("etcd_backup_runs_total", (("result", "failure"),))]
    assert before[0] <= ok <= stored and before[1] <= bad <= failed, (before, ok, bad)
    # every stored backup is in the store or was deleted by retention, nothing else
    deleted = sum(int(e["deleted"]) for e in events(agent, "retention finished"))
    assert deleted + len(final.backups) == stored, (deleted, len(final.backups), stored)
    assert set(final.ids) <= set(stored_ids(agent))
    # the store stays at the policy's size (one more while a backup is pruned)
    assert len(final.backups) == KEEP_LAST
    assert max(sizes) <= KEEP_LAST + 1, max(sizes)
    assert not final.orphans and not final.leftovers
    # flat: no descriptor, thread or memory growth per cycle
    assert end[0] <= start[0] + 5, (start, end)
    assert end[1] <= start[1] + 3, (start, end)
    assert end[2] <= start[2] + 30 * 2**20, (start, end)

    # modes: spool dirs 0700, files 0600; the socket as configured (no group: 0600)
    for d in (spool, spool / "pending"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    for f in store.rglob("*"):
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert sock_mode == 0o600
    # the age identity never appears in what the agent wrote or served
    secret = age_identity[0].read_text().split("AGE-SECRET-KEY-")[1].split()[0]
    for name, text in (
        ("log", agent.log_text()),
        ("metrics", metrics),
        *((p.name, p.read_text()) for p in (store / "test").glob("*.json")),
    ):
        assert secret not in text, name
