"""Scheduling decisions with made-up times: periods, catch-up, jitter, retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from etcd_backup_agent.config import ScheduleSettings
from etcd_backup_agent.scheduling import (
    Policy,
    SingleFlight,
    State,
    decide,
    jitter_offset,
    next_period_start,
    period_start,
    record_failure,
    record_skip,
    record_success,
)

HOURLY = Policy(interval=3600, retry_attempts=2, retry_backoff=60)


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_periods_are_aligned_to_the_epoch() -> None:
    assert period_start(HOURLY, t("2026-01-01 10:59:59")) == t("2026-01-01 10:00:00")
    assert next_period_start(HOURLY, t("2026-01-01 10:00:00")) == t("2026-01-01 11:00:00")


def test_at_times_define_daily_periods() -> None:
    p = Policy.from_settings(ScheduleSettings(interval=3600, at=("18:00", "02:30")))
    assert p.at == (2.5 * 3600, 18 * 3600)
    assert period_start(p, t("2026-01-02 01:00:00")) == t("2026-01-01 18:00:00")
    assert period_start(p, t("2026-01-02 02:30:00")) == t("2026-01-02 02:30:00")
    assert next_period_start(p, t("2026-01-02 03:00:00")) == t("2026-01-02 18:00:00")
    assert next_period_start(p, t("2026-01-02 19:00:00")) == t("2026-01-03 02:30:00")
    assert p.expected_interval == 15.5 * 3600


def test_no_backup_in_store_runs_at_once() -> None:
    d = decide(HOURLY, State(), t("2026-01-01 10:20:00"), "n1")
    assert d.run and d.reason == "due"


def test_overdue_newest_backup_runs_at_once() -> None:
    state = State(newest=t("2026-01-01 07:00:00"))
    assert decide(HOURLY, state, t("2026-01-01 10:20:00"), "n1").run


def test_restart_waits_only_the_remainder() -> None:
    state = State(newest=t("2026-01-01 10:05:00"))
    d = decide(HOURLY, state, t("2026-01-01 10:40:00"), "n1")
    assert not d.run and d.reason == "covered"
    assert d.next_at == t("2026-01-01 11:00:00")
    assert decide(HOURLY, state, t("2026-01-01 11:00:00"), "n1").run


def test_jitter_is_deterministic_per_node_and_within_range() -> None:
    offsets = {n: jitter_offset(n, 600) for n in ("cp-1", "cp-2", "cp-3")}
    assert offsets == {n: jitter_offset(n, 600) for n in offsets}
    assert all(0 <= o < 600 for o in offsets.values())
    assert len(set(offsets.values())) == 3
    assert jitter_offset("cp-1", 0) == 0


def test_jitter_delays_the_start_within_the_period() -> None:
    p = Policy(interval=3600, jitter=600)
    offset = timedelta(seconds=jitter_offset("cp-1", 600))
    state = State(newest=t("2026-01-01 09:10:00"))
    d = decide(p, state, t("2026-01-01 10:00:00"), "cp-1")
    assert not d.run and d.next_at == t("2026-01-01 10:00:00") + offset
    assert decide(p, state, d.next_at, "cp-1").run
    # --once ignores jitter
    assert decide(p, state, t("2026-01-01 10:00:00"), "cp-1", jitter=False).run


def test_failures_retry_with_exponential_backoff_then_wait_next_period() -> None:
    state = State(newest=t("2026-01-01 09:00:00"))
    now = t("2026-01-01 10:00:00")
    record_failure(HOURLY, state, now)
    assert state.not_before == now + timedelta(seconds=60)
    assert not decide(HOURLY, state, now + timedelta(seconds=59), "n").run
    assert decide(HOURLY, state, now + timedelta(seconds=60), "n").run
    record_failure(HOURLY, state, now + timedelta(seconds=60))
    assert state.not_before == now + timedelta(seconds=180)
    record_failure(HOURLY, state, now + timedelta(seconds=180))  # 1 try + 2 retries used
    d = decide(HOURLY, state, now + timedelta(seconds=900), "n")
    assert not d.run and d.reason == "retries_exhausted"
    assert d.next_at == t("2026-01-01 11:00:00")
    assert decide(HOURLY, state, t("2026-01-01 11:00:00"), "n").run


def test_backoff_never_spills_into_the_next_period() -> None:
    p = Policy(interval=600, retry_attempts=5, retry_backoff=400)
    state = State()
    now = t("2026-01-01 10:05:00")
    record_failure(p, state, now)  # retry would be 10:11:40, in the next period
    d = decide(p, state, now + timedelta(seconds=60), "n")
    assert not d.run and d.reason == "next_period"


def test_success_covers_the_period_and_resets_failures() -> None:
    state = State()
    now = t("2026-01-01 10:00:00")
    record_failure(HOURLY, state, now)
    record_success(state, now + timedelta(seconds=61))
    assert state.failures == 0 and state.not_before is None
    assert not decide(HOURLY, state, now + timedelta(seconds=120), "n").run


@pytest.mark.parametrize(("reason", "again"), [("lock_held", 60), ("busy", 60)])
def test_lock_held_is_asked_again_after_the_backoff(reason: str, again: int) -> None:
    state = State()
    now = t("2026-01-01 10:00:00")
    record_skip(HOURLY, state, now, reason)
    assert decide(HOURLY, state, now + timedelta(seconds=again), "n").run
    assert not decide(HOURLY, state, now + timedelta(seconds=again - 1), "n").run


def test_not_leader_waits_for_the_next_period() -> None:
    state = State()
    now = t("2026-01-01 10:00:00")
    record_skip(HOURLY, state, now, "not_leader")
    assert not decide(HOURLY, state, t("2026-01-01 10:59:59"), "n").run
    assert decide(HOURLY, state, t("2026-01-01 11:00:00"), "n").run


def test_single_flight_admits_one() -> None:
    flight = SingleFlight()
    assert flight.try_enter()
    assert flight.busy and not flight.try_enter()
    flight.leave()
    assert flight.try_enter()


def test_jitter_never_pushes_the_start_out_of_a_short_at_period() -> None:
    p = Policy(interval=7200, jitter=7000, at=(0.0, 600.0))  # a 10-minute period
    d = decide(p, State(), t("2026-01-01 00:00:00"), "cp-1")
    assert d.next_at < t("2026-01-01 00:10:00")
