"""A wall clock that goes back: a backup dated in the future neither covers today's periods
nor fills retention's keep_last (found by tests/reliability/test_faults.py)."""

from __future__ import annotations

from datetime import timedelta

from etcd_backup_agent.config import RetentionSettings
from etcd_backup_agent.retention import CREATED_AFTER_NOW, plan
from etcd_backup_agent.scheduling import Policy, State, decide, record_success
from tests.fake_backups import at, fake_manifest


def test_a_backup_dated_after_the_period_does_not_cover_it() -> None:
    policy = Policy(interval=3600)
    now = at("2026-12-01T10:30:00")
    state = State(newest=now + timedelta(days=365))
    assert decide(policy, state, now, "n1").run
    record_success(state, now)
    assert not decide(policy, state, now + timedelta(minutes=1), "n1").run
    assert decide(policy, state, now + timedelta(hours=1), "n1").run


def test_retention_keeps_future_backups_and_applies_the_rules_to_the_rest() -> None:
    now = at("2026-12-01T10:30:00")
    future = [fake_manifest(f"2027-12-01T10:0{i}:00") for i in range(3)]
    present = [fake_manifest(f"2026-12-01T0{i}:00:00") for i in range(1, 6)]
    decisions = {
        d.backup.id: d for d in plan(future + present, RetentionSettings(keep_last=2), now)
    }
    assert all(decisions[m.id].reasons == (CREATED_AFTER_NOW,) for m in future)
    kept = [m.created_at for m in present if decisions[m.id].keep]
    # the two newest of the present backups; without the rule every new one was deleted
    assert kept == ["2026-12-01T04:00:00Z", "2026-12-01T05:00:00Z"]
