"""Three agents on a three-member etcd cluster, sharing one store: one backup per period."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from etcd_backup_agent.manifest import parse_time
from tests.integration.agents import Agent, backups_per_period, manifests, new_agent, wait_for
from tests.servers import EtcdServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INTERVAL = 3  # seconds; periods are [k*3, k*3+3) in Unix time
LOCK_TTL = 3


def test_exactly_one_backup_per_period_across_agents_and_failover(
    tmp_path: Path, cluster: list[EtcdServer], age_identity: tuple[Path, str]
) -> None:
    store = tmp_path / "store"
    agents: list[Agent] = []
    try:
        for i, member in enumerate(cluster):
            agent = new_agent(
                tmp_path,
                name=f"a{i}",
                node=f"a{i}",
                endpoints=[member.endpoint],
                recipient=age_identity[1],
                store=store,
                spool=tmp_path / f"spool-{i}",
                interval=f"{INTERVAL}s",
                mode="etcd-lock",
            )
            agents.append(agent.start())
        wait_for(lambda: manifests(store), 30, "a first backup")
        first = min(backups_per_period(store, INTERVAL))
        time.sleep(5 * INTERVAL + 0.5)
        counts = backups_per_period(store, INTERVAL)
        now_period = math.floor(time.time() / INTERVAL)
        full = range(first, now_period)  # periods that ended while all agents ran
        # safety: the lock plus the store re-check inside it never allows two
        assert max(counts.values()) == 1, counts
        # liveness: a period is only missed when a backup decided at its very end is
        # created in the next one (or the machine stalls longer than a period): allow one
        missing = [k for k in full if counts[k] == 0]
        assert len(missing) <= 1, (missing, counts)
        skipped = 0.0
        for a in agents:
            s = a.scrape()
            skipped += s[("etcd_backup_skipped_runs_total", (("reason", "lock_held"),))]
            skipped += s[("etcd_backup_skipped_runs_total", (("reason", "already_backed_up"),))]
        assert skipped >= 1

        # kill (SIGKILL) the agent that took the last backup: another one carries on
        last = max(manifests(store), key=lambda m: str(m["created_at"]))
        victim = next(a for a in agents if a.config.stem == last["node"])
        victim.kill()
        killed_at = math.floor(time.time())

        def survivor_backed_up() -> bool:
            return any(
                str(m["node"]) != last["node"]
                and parse_time(str(m["created_at"])).timestamp() >= killed_at
                for m in manifests(store)
            )

        # the victim's lease may hold the lock for up to its ttl, then within one period
        wait_for(survivor_backed_up, LOCK_TTL + 2 * INTERVAL + 10, "a survivor's backup")
        counts = backups_per_period(store, INTERVAL)
        assert max(counts.values()) == 1, counts
        assert all(a.alive() for a in agents if a is not victim)
    finally:
        for a in agents:
            a.stop()


def test_leader_member_mode_backs_up_only_next_to_the_leader(
    tmp_path: Path, cluster: list[EtcdServer], age_identity: tuple[Path, str]
) -> None:
    store = tmp_path / "store"
    agents: list[Agent] = []
    try:
        for i, member in enumerate(cluster):
            agent = new_agent(
                tmp_path,
                name=f"a{i}",
                node=f"a{i}",
                endpoints=[member.endpoint],
                recipient=age_identity[1],
                store=store,
                spool=tmp_path / f"spool-{i}",
                interval=f"{INTERVAL}s",
                mode="leader-member",
            )
            agents.append(agent.start())
        wait_for(lambda: len(manifests(store)) >= 2, 30, "two backups")
        nodes = {str(m["node"]) for m in manifests(store)}
        assert len(nodes) == 1, nodes  # no leader change happens in this test
        assert max(backups_per_period(store, INTERVAL).values()) == 1
        for a in agents:
            s = a.scrape()
            is_leader = s[("etcd_backup_is_leader", ())] == 1
            not_leader = s[("etcd_backup_skipped_runs_total", (("reason", "not_leader"),))]
            if a.config.stem in nodes:
                assert not_leader == 0
            else:
                assert not is_leader and not_leader >= 1
    finally:
        for a in agents:
            a.stop()
