"""Driving the daemon through faults: agents by pid, waiting on their log, the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.agent_helpers import run_agent
from tests.integration.agents import Agent, new_agent, wait_for
from tests.reliability.checker import Ledger, StoreCheck, StoreView, check_store


def events(agent: Agent, name: str) -> list[dict[str, Any]]:
    return [e for e in agent.events() if e.get("event") == name]


def stored_ids(agent: Agent) -> list[str]:
    return [str(e["id"]) for e in events(agent, "backup stored")]


class AgentPool:
    """Agents of one test; every one is stopped by its pid at the end."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.agents: list[Agent] = []

    def new(self, name: str = "agent", **config: object) -> Agent:
        agent = new_agent(self.base, name=name, **config)
        self.agents.append(agent)
        return agent

    def restart(self, agent: Agent, name: str) -> Agent:
        """A new process on the same config (its own log file)."""
        again = Agent(
            config=agent.config,
            metrics_port=agent.metrics_port,
            log=self.base / f"{name}.log",
            env=agent.env,
        )
        self.agents.append(again)
        return again.start()

    def stop_all(self) -> None:
        for a in self.agents:
            a.stop()


def cli_json(config: Path, *args: str, timeout: float = 120) -> Any:
    r = run_agent(*args, "--config", config, timeout=timeout)
    assert r.returncode == 0, (args, r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    return json.loads(r.stdout)


def assert_orphans_reported(
    config: Path, orphans: list[str], view: StoreView | None = None
) -> None:
    """Every object without a manifest is listed by `list --orphans` (never silent).

    An object whose manifest appeared meanwhile was an upload in flight (object first,
    manifest last), not an orphan; one that is gone from ``view`` meanwhile was removed by
    the agent itself (a publish that failed its check removes its object), not left behind.
    """
    missing = orphans
    for _ in range(15):  # an upload in flight gets its manifest within seconds
        if missing and view is not None:
            present = view.listing()
            missing = [o for o in missing if o in present]
        if not missing:
            return
        listed = cli_json(config, "list", "--orphans", "--json")
        shown = set(listed["orphans"])
        ids = {str(m["id"]) for m in listed["backups"]}
        missing = [
            o
            for o in missing
            if not any(s.endswith(o) for s in shown)
            and o.rsplit("/", 1)[-1].removesuffix(".db.zst.age") not in ids
        ]
        time.sleep(2)
    assert not missing, f"orphans not reported by `list --orphans`: {missing}"


def after_fault(
    agent: Agent,
    view: StoreView,
    identity: Path,
    scratch: Path,
    ledger: Ledger,
    *,
    next_backup_timeout: float = 60.0,
    before: int | None = None,
) -> StoreCheck:
    """The invariants after a fault, then: the next backup succeeds, and they hold again.

    ``before``: the number of stored backups counted before the fault was repaired; a
    daemon retrying quickly may store the next backup before this function runs, so a count
    taken here would wait for one more."""
    first = check_store(view, identity, scratch, ledger=ledger)
    # a temporary file of a backup in flight (the upload streams) is fine; one that stays is not
    wait_for(lambda: not set(first.leftovers) & set(view.listing()), 60, f"{first.leftovers} to go")
    assert_orphans_reported(agent.config, first.orphans, view)
    if before is None:
        before = len(stored_ids(agent))
    wait_for(
        lambda: len(stored_ids(agent)) > before,
        next_backup_timeout,
        f"the next backup after the fault; log:\n{agent.log_text()[-3000:]}",
    )
    newest = stored_ids(agent)[-1]
    second = check_store(view, identity, scratch, ledger=ledger)
    assert newest in second.ids or ledger.newest is not None, (newest, second.ids)
    wait_for(
        lambda: not set(second.leftovers) & set(view.listing()), 60, f"{second.leftovers} to go"
    )
    return second


def assert_no_secrets(agent: Agent, secrets: list[str], *extra: str) -> None:
    """No secret in the agent's log, its metrics, or any other text the test collected."""
    texts = {"log": agent.log_text(), **{f"extra{i}": t for i, t in enumerate(extra)}}
    if agent.alive():
        texts["metrics"] = agent.scrape_text()
    for name, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret appears in the {name}"
