"""The Agent (service.py) against a real LocalStore in a tmp dir; etcd is never reached.

Backups come from a generated etcd data dir (``backup_from_data_dir``) or from the spool's
pending uploads, so the whole pipeline runs (bbolt check, zstd + age in a child process,
the store's checked write, the manifest) without an etcd server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from etcd_backup_agent.config import Settings, from_dict
from etcd_backup_agent.control.dispatch import dispatch
from etcd_backup_agent.errors import Busy, SourceError, UsageError
from etcd_backup_agent.manifest import Manifest
from etcd_backup_agent.pipeline import Pipeline
from etcd_backup_agent.requests import IdentityRef, PruneRequest, VerifyRequest
from etcd_backup_agent.service import Agent
from tests import snapfixtures
from tests.unit.test_pipeline import fake_source, good_db


def settings(tmp_path: Path, recipient: str, **extra: Any) -> Settings:
    data: dict[str, Any] = {
        "cluster": {"name": "c", "node": "n1"},
        "etcd": {"endpoints": ["http://127.0.0.1:1"]},
        "encryption": {"recipients": [recipient]},
        "store": {"type": "local", "path": str(tmp_path / "store")},
        "spool": {"dir": str(tmp_path / "spool")},
        "control": {"socket": str(tmp_path / "agent.sock")},
    }
    data.update(extra)
    return from_dict(data)


class StepClock:
    """An hour later at every reading: each backup gets its own id and period."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(hours=1)
        return self.now


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A stopped etcd's data dir: member/snap/db with 20 keys."""
    db = tmp_path / "etcd" / "member" / "snap" / "db"
    db.parent.mkdir(parents=True)
    history = [("put", f"/registry/k{i}".encode(), b"v" * 100) for i in range(20)]
    snapfixtures.write(db, snapfixtures.etcd_buckets(history), trailer=False)  # a live db
    return tmp_path / "etcd"


@pytest.fixture
def agent_of(tmp_path: Path, age_identity: tuple[Path, str]) -> Iterator[Any]:
    made: list[Agent] = []

    def make(**extra: Any) -> Agent:
        agent = Agent(settings(tmp_path, age_identity[1], **extra), clock=StepClock())
        agent.open("test")
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.close()


def stored(tmp_path: Path) -> list[Manifest]:
    return sorted(
        (Manifest.from_json(p.read_bytes()) for p in (tmp_path / "store" / "c").glob("*.json")),
        key=lambda m: m.created_at,
    )


def test_retention_applies_after_every_requested_backup_not_after_the_command(
    agent_of: Any, tmp_path: Path
) -> None:
    agent = agent_of(retention={"keep_last": 2}, coordination={"mode": "none"})
    agent.wiring.source = fake_source(agent.settings, good_db())  # etcd's stream, faked
    made = [agent.backup("request") for _ in range(3)]
    kept = stored(tmp_path)
    assert [m.id for m in kept] == [m.id for m in made[1:]]
    assert not (tmp_path / "store" / made[0].object).exists()
    assert agent.metrics.value("etcd_backup_retention_deleted_total") == 1
    assert agent.metrics.value("etcd_backup_retention_runs_total", result="success") == 3
    assert agent.last.result == "success" and agent.last.backup_id == made[-1].id
    # etcd-backup-agent backup never prunes (docs/retention.md); the next prune does
    agent.backup("command")
    assert len(stored(tmp_path)) == 3
    assert agent.metrics.value("etcd_backup_retention_runs_total", result="success") == 3


def test_without_rules_nothing_is_pruned(agent_of: Any, tmp_path: Path) -> None:
    agent = agent_of(coordination={"mode": "none"})
    agent.wiring.source = fake_source(agent.settings, good_db())
    for _ in range(3):
        agent.backup("request")
    assert len(stored(tmp_path)) == 3
    assert not agent.metrics.value("etcd_backup_retention_runs_total", result="success")


def test_requests_are_refused_while_the_flight_is_taken(
    agent_of: Any, data_dir: Path, age_identity: tuple[Path, str]
) -> None:
    agent = agent_of()
    made = agent.backup_from_data_dir(data_dir)
    identity = IdentityRef(str(age_identity[0]))
    assert agent.flight.try_enter()  # a scheduled backup is running
    try:
        with pytest.raises(Busy, match="a backup or drill is running"):
            agent.prune(PruneRequest(dry_run=True))
        with pytest.raises(Busy, match="a backup or drill is running"):
            agent.verify(VerifyRequest("latest", identity), lambda e: None)
        with pytest.raises(Busy, match="another backup is running"):
            agent.backup("request")
        assert agent.metrics.value("etcd_backup_skipped_runs_total", reason="busy") == 1
        # status and list never wait for the flight
        assert agent.status().busy is True
        assert len(agent.list().backups) == 1
    finally:
        agent.flight.leave()
    checked = agent.verify(VerifyRequest("latest", identity), lambda e: None)
    assert (checked.backup_id, checked.revision) == (made.id, 21) and checked.native_ok
    agent.stopping = True
    with pytest.raises(Busy, match="shutting down"):
        agent.prune(PruneRequest(dry_run=True))


def test_a_failed_backup_is_recorded_counted_and_in_the_status(agent_of: Any) -> None:
    agent = agent_of()  # etcd at 127.0.0.1:1: nothing listens there
    with pytest.raises(SourceError):
        agent.backup("command")
    st = agent.status()
    assert st.last.result == "failure" and st.last.error
    assert st.status_line() == "last: failure"
    assert agent.metrics.value("etcd_backup_runs_total", result="failure") == 1
    assert not agent.busy
    assert not list(agent.spool.dir.glob("snapshot-*"))  # nothing left in the spool


def test_flush_publishes_what_waits_in_the_spool(
    agent_of: Any, data_dir: Path, tmp_path: Path
) -> None:
    agent = agent_of(coordination={"mode": "none"})  # the etcd lock needs an etcd
    # a backup sealed while the store was down waits in the spool's pending dir
    sealed = Pipeline(agent.settings, agent.wiring.store, spool=agent.spool).prepare_from_data_dir(
        data_dir
    )
    assert agent.spool.waiting() == [sealed] and agent.flush_due()
    job = agent.start("flush")
    assert job is not None and agent.busy
    job()
    assert not agent.busy and agent.spool.waiting() == []
    (published,) = stored(tmp_path)
    assert published.id == sealed.manifest.id
    assert agent.state.newest == published.created  # the schedule counts it


def test_socket_replies_are_the_documented_json(
    agent_of: Any, data_dir: Path, tmp_path: Path
) -> None:
    agent = agent_of(retention={"keep_last": 5})
    made = agent.backup_from_data_dir(data_dir)
    listed = json.loads(json.dumps(dispatch(agent, "list", {}, lambda e: None)))
    assert [b["id"] for b in listed["backups"]] == [made.id] and listed["complete"] is True
    status = dispatch(agent, "status", {}, lambda e: None)
    assert status["cluster"] == "c" and status["spool"]["pending_uploads"] == 0
    assert status["coordination"] == {"mode": "etcd-lock", "holder": None}
    pruned = dispatch(agent, "prune", {"dry_run": True}, lambda e: None)
    assert pruned["dry_run"] is True and [d["action"] for d in pruned["decisions"]] == ["keep"]


def test_a_reload_reaches_the_next_request_and_a_bad_file_keeps_the_old_config(
    tmp_path: Path, age_identity: tuple[Path, str]
) -> None:
    cfg = tmp_path / "agent.toml"

    def write(node: str) -> None:
        cfg.write_text(
            f'[cluster]\nname = "c"\nnode = "{node}"\n'
            '[etcd]\nendpoints = ["http://127.0.0.1:1"]\n'
            f'[encryption]\nrecipients = ["{age_identity[1]}"]\n'
            f'[store]\ntype = "local"\npath = "{tmp_path / "store"}"\n'
            f'[spool]\ndir = "{tmp_path / "spool"}"\n'
            f'[control]\nsocket = "{tmp_path / "agent.sock"}"\n'
        )

    from etcd_backup_agent.config import load

    write("n1")
    agent = Agent(load(cfg))
    try:
        write("n2")
        assert agent.reload() is True
        assert agent.status().node == "n2"
        cfg.write_text("[cluster\n")
        assert agent.reload() is False
        assert agent.status().node == "n2"
    finally:
        agent.close()


def test_requests_decode_at_the_edge_and_never_show_an_identity(agent_of: Any) -> None:
    agent = agent_of()
    with pytest.raises(UsageError, match="an age identity is required"):
        dispatch(agent, "verify", {"backup": "latest"}, lambda e: None)
    with pytest.raises(UsageError, match="unknown operation"):
        dispatch(agent, "format_disk", {}, lambda e: None)
    ref = IdentityRef.from_args({"identity": "AGE-SECRET-KEY-1XYZ"})
    assert ref is not None and "AGE-SECRET" not in repr(ref)
    assert VerifyRequest.from_args({"backup": "b1", "identity_file": "/k"}) == VerifyRequest(
        "b1", IdentityRef("/k")
    )
    assert IdentityRef.from_args({}) is None


def test_the_command_stores_even_with_keep_unuploaded_before_any_listing(
    agent_of: Any, tmp_path: Path
) -> None:
    # a fresh agent has not listed the store (store_up reads 0): only the daemon, which
    # has looked, may take that for "down" and seal into the spool instead
    agent = agent_of(spool={"dir": str(tmp_path / "spool"), "keep_unuploaded": True})
    agent.wiring.source = fake_source(agent.settings, good_db())
    made = agent.backup("command")
    assert [m.id for m in stored(tmp_path)] == [made.id] and agent.spool.waiting() == []


def test_a_flush_never_drops_a_backup_an_operator_asked_for(
    agent_of: Any, data_dir: Path, tmp_path: Path
) -> None:
    """Three backups of one period waited in the spool (the store was down): the newest
    scheduled one and the one asked for are published; only the older scheduled one is
    superseded (it used to drop every one but the newest, the operator's included)."""
    agent = agent_of(coordination={"mode": "none"}, schedule={"interval": "24h"})

    def pending(trigger: str) -> Manifest:
        pipeline = Pipeline(
            agent.settings, agent.wiring.store, spool=agent.spool, clock=agent.clock,
            trigger=trigger,
        )  # fmt: skip
        return pipeline.prepare_from_data_dir(data_dir).manifest

    old, asked, new = pending("schedule"), pending("request"), pending("schedule")
    assert len({old.id, asked.id, new.id}) == 3  # one period (24 h), three hours apart
    job = agent.start("flush")
    assert job is not None
    job()
    assert agent.spool.waiting() == []
    published = {m.id: m.trigger for m in stored(tmp_path)}
    assert published == {asked.id: "request", new.id: "schedule"}


def test_a_pending_backup_whose_bundle_was_deleted_is_still_published(
    agent_of: Any, data_dir: Path, tmp_path: Path
) -> None:
    """The sealed bundle of a backup waiting for the store is deleted behind the agent's
    back: the snapshot is published with its bundle marked failed, and the next pending
    backup goes up too (the lost file used to fail every retry of the whole queue)."""
    from etcd_backup_agent.bundle.attach import pending_path

    root = tmp_path / "node"
    (root / "etc" / "x").mkdir(parents=True)
    (root / "etc" / "x" / "f.conf").write_text("setting = 1\n")
    bundle = {"enabled": True, "layout": "none", "root": str(root), "paths": ["/etc/x"]}
    agent = agent_of(coordination={"mode": "none"}, bundle=bundle)
    pipeline = Pipeline(agent.settings, agent.wiring.store, spool=agent.spool, clock=agent.clock)
    first = pipeline.prepare_from_data_dir(data_dir).manifest
    second = pipeline.prepare_from_data_dir(data_dir).manifest
    assert first.bundle is not None and first.bundle.status == "ok"
    pending_path(agent.spool.pending, first.id).unlink()
    job = agent.start("flush")
    assert job is not None
    job()
    assert agent.spool.waiting() == []
    published = {m.id: m.bundle for m in stored(tmp_path)}
    lost, kept = published[first.id], published[second.id]
    assert lost is not None and lost.status == "failed" and "lost from the spool" in lost.error
    assert kept is not None and kept.status == "ok"
    assert (tmp_path / "store" / kept.object).is_file()
    assert agent.metrics.value("etcd_backup_bundle_failed") == 0  # the newest one is fine
