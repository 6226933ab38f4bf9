"""retention.plan is pure: made-up timestamps in, keep/delete decisions with reasons out."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etcd_backup_agent.config import RetentionSettings
from etcd_backup_agent.errors import AgentError
from etcd_backup_agent.manifest import Manifest, manifest_key, object_key
from etcd_backup_agent.retention import Decision, apply, plan
from tests.fake_backups import MemoryStore, at, fake_manifest

NOW = at("2030-01-01T00:00:00")
DAY = 86400.0


def run(
    times: list[str], policy: RetentionSettings, now: str | None = None, verified: bool = True
) -> dict[str, tuple[bool, tuple[str, ...]]]:
    """Plan over backups taken at ``times``; map each time to (keep, reasons)."""
    backups = [fake_manifest(t, verified=verified) for t in times]
    decisions = plan(backups, policy, at(now) if now else NOW)
    return {d.backup.created_at.removesuffix("Z"): (d.keep, d.reasons) for d in decisions}


def kept(result: dict[str, tuple[bool, tuple[str, ...]]]) -> set[str]:
    return {t for t, (keep, _) in result.items() if keep}


def rule_reasons(reasons: tuple[str, ...]) -> tuple[str, ...]:
    """Reasons other than the newest-verified safety net."""
    return tuple(r for r in reasons if r != "newest verified backup")


# keep_last -------------------------------------------------------------------------------


def test_keep_last_keeps_the_n_newest_in_order() -> None:
    times = [f"2026-11-{d:02d}T12:00:00" for d in range(1, 8)]
    r = run(times, RetentionSettings(keep_last=3))
    assert kept(r) == {"2026-11-07T12:00:00", "2026-11-06T12:00:00", "2026-11-05T12:00:00"}
    assert r["2026-11-07T12:00:00"][1] == ("last #1", "newest verified backup")
    assert r["2026-11-06T12:00:00"][1] == ("last #2",)
    assert r["2026-11-05T12:00:00"][1] == ("last #3",)
    assert r["2026-11-04T12:00:00"] == (False, ())


def test_keep_last_larger_than_the_number_of_backups_keeps_all() -> None:
    times = ["2026-11-01T00:00:00", "2026-11-02T00:00:00"]
    assert kept(run(times, RetentionSettings(keep_last=10))) == set(times)


def test_decisions_are_newest_first() -> None:
    times = ["2026-11-02T00:00:00", "2026-11-03T00:00:00", "2026-11-01T00:00:00"]
    decisions = plan([fake_manifest(t) for t in times], RetentionSettings(keep_last=1), NOW)
    assert [d.backup.created_at for d in decisions] == [
        "2026-11-03T00:00:00Z",
        "2026-11-02T00:00:00Z",
        "2026-11-01T00:00:00Z",
    ]


# calendar rules: exact UTC bucket edges -------------------------------------------------


def test_hourly_bucket_edge_is_the_full_hour() -> None:
    times = [
        "2026-11-24T07:00:00",
        "2026-11-24T08:00:00",
        "2026-11-24T08:59:59",
        "2026-11-24T09:00:00",
        "2026-11-24T09:30:00",
    ]
    r = run(times, RetentionSettings(keep_hourly=2))
    assert kept(r) == {"2026-11-24T09:30:00", "2026-11-24T08:59:59"}
    assert rule_reasons(r["2026-11-24T09:30:00"][1]) == ("hourly 2026-11-24T09",)
    assert r["2026-11-24T08:59:59"][1] == ("hourly 2026-11-24T08",)


def test_daily_bucket_edge_is_midnight_utc() -> None:
    times = [
        "2026-11-23T00:00:00",
        "2026-11-23T23:59:59",
        "2026-11-24T00:00:00",
        "2026-11-24T12:00:00",
    ]
    r = run(times, RetentionSettings(keep_daily=2))
    assert kept(r) == {"2026-11-24T12:00:00", "2026-11-23T23:59:59"}
    assert r["2026-11-23T23:59:59"][1] == ("daily 2026-11-23",)
    assert rule_reasons(r["2026-11-24T12:00:00"][1]) == ("daily 2026-11-24",)
    assert not r["2026-11-24T00:00:00"][0]


def test_calendar_rules_count_only_buckets_that_hold_backups() -> None:
    times = ["2026-11-01T10:00:00", "2026-11-10T10:00:00", "2026-11-20T10:00:00"]
    r = run(times, RetentionSettings(keep_daily=2))
    assert kept(r) == {"2026-11-20T10:00:00", "2026-11-10T10:00:00"}


def test_daily_around_leap_day() -> None:
    times = [
        "2028-02-28T23:59:59",
        "2028-02-29T00:00:00",
        "2028-02-29T23:59:59",
        "2028-03-01T00:00:00",
    ]
    r = run(times, RetentionSettings(keep_daily=3))
    assert kept(r) == {"2028-03-01T00:00:00", "2028-02-29T23:59:59", "2028-02-28T23:59:59"}
    assert r["2028-02-29T23:59:59"][1] == ("daily 2028-02-29",)


def test_weekly_edge_is_monday_midnight_utc() -> None:
    times = ["2026-11-22T23:59:59", "2026-11-23T00:00:00", "2026-11-24T08:00:00"]
    r = run(times, RetentionSettings(keep_weekly=2))
    assert kept(r) == {"2026-11-24T08:00:00", "2026-11-22T23:59:59"}
    assert rule_reasons(r["2026-11-24T08:00:00"][1]) == ("weekly 2026-W48",)
    assert r["2026-11-22T23:59:59"][1] == ("weekly 2026-W47",)


def test_weekly_uses_iso_weeks_across_new_year_and_week_53() -> None:
    # 2026 has 53 ISO weeks: Mon 2026-12-28 .. Sun 2027-01-03 are all 2026-W53.
    times = [
        "2026-12-27T23:59:59",
        "2026-12-28T00:00:00",
        "2026-12-31T12:00:00",
        "2027-01-01T00:00:00",
        "2027-01-03T23:59:59",
        "2027-01-04T00:00:00",
    ]
    r = run(times, RetentionSettings(keep_weekly=3))
    assert kept(r) == {"2027-01-04T00:00:00", "2027-01-03T23:59:59", "2026-12-27T23:59:59"}
    assert rule_reasons(r["2027-01-04T00:00:00"][1]) == ("weekly 2027-W01",)
    assert r["2027-01-03T23:59:59"][1] == ("weekly 2026-W53",)
    assert r["2026-12-27T23:59:59"][1] == ("weekly 2026-W52",)
    for t in ("2026-12-28T00:00:00", "2026-12-31T12:00:00", "2027-01-01T00:00:00"):
        assert r[t] == (False, ())


def test_weekly_december_days_can_belong_to_next_years_week_1() -> None:
    times = ["2024-12-29T12:00:00", "2024-12-30T12:00:00", "2025-01-01T12:00:00"]
    r = run(times, RetentionSettings(keep_weekly=5))
    assert kept(r) == {"2025-01-01T12:00:00", "2024-12-29T12:00:00"}
    assert rule_reasons(r["2025-01-01T12:00:00"][1]) == ("weekly 2025-W01",)
    assert r["2024-12-29T12:00:00"][1] == ("weekly 2024-W52",)
    assert not r["2024-12-30T12:00:00"][0]


def test_monthly_edges_at_month_ends_and_leap_february() -> None:
    times = [
        "2026-01-31T23:59:59",
        "2026-02-01T00:00:00",
        "2028-02-29T23:59:59",
        "2028-03-01T00:00:00",
        "2028-03-31T23:59:59",
    ]
    r = run(times, RetentionSettings(keep_monthly=4))
    assert kept(r) == {
        "2028-03-31T23:59:59",
        "2028-02-29T23:59:59",
        "2026-02-01T00:00:00",
        "2026-01-31T23:59:59",
    }
    assert r["2028-02-29T23:59:59"][1] == ("monthly 2028-02",)
    assert r["2026-01-31T23:59:59"][1] == ("monthly 2026-01",)
    assert not r["2028-03-01T00:00:00"][0]


def test_yearly_edge_is_new_year_utc() -> None:
    times = [
        "2025-06-01T00:00:00",
        "2026-12-31T23:59:59",
        "2027-01-01T00:00:00",
        "2027-05-01T00:00:00",
    ]
    r = run(times, RetentionSettings(keep_yearly=2))
    assert kept(r) == {"2027-05-01T00:00:00", "2026-12-31T23:59:59"}
    assert r["2026-12-31T23:59:59"][1] == ("yearly 2026",)
    assert not r["2025-06-01T00:00:00"][0]


def test_buckets_use_utc_even_when_now_has_another_zone() -> None:
    from datetime import timedelta, timezone

    backups = [fake_manifest("2026-11-23T23:30:00"), fake_manifest("2026-11-24T00:30:00")]
    now = NOW.astimezone(timezone(timedelta(hours=-5)))
    r = plan(backups, RetentionSettings(keep_daily=2), now)
    assert all(d.keep for d in r)


# keep_within -----------------------------------------------------------------------------


def test_keep_within_is_relative_to_the_newest_backup_not_now() -> None:
    times = [
        "2026-11-20T12:00:00",
        "2026-11-21T11:59:59",
        "2026-11-21T12:00:00",
        "2026-11-23T12:00:00",
        "2026-11-24T12:00:00",
    ]
    # Years after the last backup: a now-relative rule would delete everything.
    r = run(times, RetentionSettings(keep_within=3 * DAY), now="2030-06-01T00:00:00")
    assert kept(r) == {"2026-11-24T12:00:00", "2026-11-23T12:00:00", "2026-11-21T12:00:00"}
    assert r["2026-11-21T12:00:00"][1] == ("within 3d",)
    assert not r["2026-11-21T11:59:59"][0]


# union, empty policy ---------------------------------------------------------------------


def test_a_backup_is_kept_when_any_rule_keeps_it_and_lists_every_rule() -> None:
    times = [
        "2026-09-15T00:00:00",
        "2026-10-31T23:00:00",
        "2026-11-23T06:00:00",
        "2026-11-24T06:00:00",
        "2026-11-24T07:00:00",
    ]
    r = run(times, RetentionSettings(keep_last=1, keep_daily=2, keep_monthly=3))
    assert r["2026-11-24T07:00:00"][1] == (
        "last #1",
        "daily 2026-11-24",
        "monthly 2026-11",
        "newest verified backup",
    )
    assert r["2026-11-24T06:00:00"] == (False, ())
    assert r["2026-11-23T06:00:00"][1] == ("daily 2026-11-23",)
    assert r["2026-10-31T23:00:00"][1] == ("monthly 2026-10",)
    assert r["2026-09-15T00:00:00"][1] == ("monthly 2026-09",)


def test_empty_policy_keeps_everything() -> None:
    times = ["2010-01-01T00:00:00", "2026-11-24T00:00:00", "2026-11-24T01:00:00"]
    r = run(times, RetentionSettings(), verified=False)
    assert r == {t: (True, ("no retention policy",)) for t in times}


def test_no_backups_no_decisions() -> None:
    assert plan([], RetentionSettings(keep_last=1), NOW) == []


# safety ----------------------------------------------------------------------------------


def test_newest_verified_is_kept_even_when_the_policy_would_delete_it() -> None:
    backups = [
        fake_manifest("2026-11-24T12:00:00", verified=False),
        fake_manifest("2026-11-24T11:00:00", verified=False),
        fake_manifest("2026-11-24T10:00:00", verified=True),
        fake_manifest("2026-11-24T09:00:00", verified=True),
    ]
    r = {d.backup.created_at: d for d in plan(backups, RetentionSettings(keep_last=1), NOW)}
    assert r["2026-11-24T12:00:00Z"].reasons == ("last #1",)
    assert r["2026-11-24T10:00:00Z"].keep
    assert r["2026-11-24T10:00:00Z"].reasons == ("newest verified backup",)
    assert not r["2026-11-24T11:00:00Z"].keep
    assert not r["2026-11-24T09:00:00Z"].keep


def test_unverified_backups_follow_the_rules_but_never_count_as_newest_verified() -> None:
    times = ["2026-11-22T00:00:00", "2026-11-23T00:00:00", "2026-11-24T00:00:00"]
    r = run(times, RetentionSettings(keep_last=1), verified=False)
    assert r["2026-11-24T00:00:00"] == (True, ("last #1",))
    assert not r["2026-11-23T00:00:00"][0]
    assert not r["2026-11-22T00:00:00"][0]


def test_unexpired_object_lock_keeps_a_backup_and_says_until_when() -> None:
    backups = [
        fake_manifest("2026-11-24T12:00:00"),
        fake_manifest("2026-11-24T11:00:00", retain_until="2030-01-02T00:00:00Z"),
        fake_manifest("2026-11-24T10:00:00", retain_until="2030-01-01T00:00:00Z"),  # == now
        fake_manifest("2026-11-24T09:00:00", retain_until="2029-12-31T23:59:59Z"),
        fake_manifest("2026-11-24T08:00:00", retain_until="not a date"),
    ]
    r = {d.backup.created_at: d for d in plan(backups, RetentionSettings(keep_last=1), NOW)}
    locked = r["2026-11-24T11:00:00Z"]
    assert locked.keep and locked.reasons == ("object lock until 2030-01-02T00:00:00Z",)
    assert locked.held_by_lock
    assert not r["2026-11-24T10:00:00Z"].keep
    assert not r["2026-11-24T09:00:00Z"].keep
    assert r["2026-11-24T08:00:00Z"].keep and r["2026-11-24T08:00:00Z"].held_by_lock
    assert not r["2026-11-24T12:00:00Z"].held_by_lock


def test_lock_reason_is_added_beside_rule_reasons() -> None:
    m = fake_manifest("2026-11-24T12:00:00", retain_until="2031-01-01T00:00:00Z")
    (d,) = plan([m], RetentionSettings(keep_last=1), NOW)
    assert d.reasons == (
        "last #1",
        "newest verified backup",
        "object lock until 2031-01-01T00:00:00Z",
    )
    assert not d.held_by_lock


def test_apply_never_touches_another_clusters_backup() -> None:
    store = MemoryStore()
    other = fake_manifest("2026-11-24T12:00:00", cluster="c2", verified=False)
    store.add(other)
    result = apply(store, "c1", [Decision(other, False, ())])
    assert result.deleted == []
    assert result.failed and "c2" in result.failed[0][1]
    assert store.calls == []
    assert manifest_key("c2", other.id) in store.data


def test_apply_refuses_a_plan_that_deletes_the_newest_verified_backup() -> None:
    store = MemoryStore()
    newest, older = fake_manifest("2026-11-24T12:00:00"), fake_manifest("2026-11-24T11:00:00")
    store.add(newest)
    store.add(older)
    with pytest.raises(AgentError, match="newest verified"):
        apply(store, "c1", [Decision(newest, False, ()), Decision(older, True, ("x",))])
    assert store.calls == []


def test_apply_deletes_manifest_then_object() -> None:
    store = MemoryStore()
    keep, drop = fake_manifest("2026-11-24T12:00:00"), fake_manifest("2026-11-24T11:00:00")
    store.add(keep)
    store.add(drop)
    result = apply(store, "c1", plan([keep, drop], RetentionSettings(keep_last=1), NOW))
    assert result.deleted == [drop.id]
    assert store.calls == [
        ("delete", manifest_key("c1", drop.id)),
        ("delete", object_key("c1", drop.id)),
    ]


def test_apply_dry_run_deletes_nothing() -> None:
    store = MemoryStore()
    keep, drop = fake_manifest("2026-11-24T12:00:00"), fake_manifest("2026-11-24T11:00:00")
    store.add(keep)
    store.add(drop)
    result = apply(
        store, "c1", plan([keep, drop], RetentionSettings(keep_last=1), NOW), dry_run=True
    )
    assert result.deleted == [drop.id] and result.dry_run
    assert store.calls == []


def test_locked_object_restores_the_manifest_and_counts_as_locked() -> None:
    store = MemoryStore()
    keep, drop = fake_manifest("2026-11-24T12:00:00"), fake_manifest("2026-11-24T11:00:00")
    store.add(keep)
    store.add(drop)
    before = store.data[manifest_key("c1", drop.id)]
    store.locked.add(object_key("c1", drop.id))
    result = apply(store, "c1", plan([keep, drop], RetentionSettings(keep_last=1), NOW))
    assert result.locked == [drop.id] and result.deleted == [] and result.failed == []
    assert Manifest.from_json(store.data[manifest_key("c1", drop.id)]) == drop
    assert Manifest.from_json(before) == drop
    assert store.data[manifest_key("c1", drop.id)] == before


def test_restored_manifest_keeps_fields_this_version_does_not_know() -> None:
    store = MemoryStore()
    keep, drop = fake_manifest("2026-11-24T12:00:00"), fake_manifest("2026-11-24T11:00:00")
    store.add(keep)
    store.add(drop)
    future = drop.to_json().replace('"id":', '"added_by_a_newer_agent": 7,\n  "id":', 1)
    store.data[manifest_key("c1", drop.id)] = future.encode()
    store.locked.add(object_key("c1", drop.id))
    apply(store, "c1", plan([keep, drop], RetentionSettings(keep_last=1), NOW))
    assert store.data[manifest_key("c1", drop.id)] == future.encode()
    assert object_key("c1", drop.id) in store.data


def test_locked_manifest_is_skipped_without_touching_the_object() -> None:
    store = MemoryStore()
    keep, drop = fake_manifest("2026-11-24T12:00:00"), fake_manifest("2026-11-24T11:00:00")
    store.add(keep)
    store.add(drop)
    store.locked.add(manifest_key("c1", drop.id))
    result = apply(store, "c1", plan([keep, drop], RetentionSettings(keep_last=1), NOW))
    assert result.locked == [drop.id]
    assert store.calls == [("delete", manifest_key("c1", drop.id))]


# properties ------------------------------------------------------------------------------

_times = st.datetimes(
    min_value=at("2024-01-01T00:00:00").replace(tzinfo=None),
    max_value=at("2029-12-31T23:59:59").replace(tzinfo=None),
).map(lambda t: t.replace(microsecond=0))

_backups = st.lists(st.tuples(_times, st.booleans(), st.booleans()), max_size=40).map(
    lambda rows: [
        fake_manifest(
            t.isoformat(),
            verified=v,
            node=f"n{i}",
            retain_until="2031-01-01T00:00:00Z" if locked else None,
        )
        for i, (t, v, locked) in enumerate(rows)
    ]
)

_policies = st.builds(
    RetentionSettings,
    keep_last=st.integers(0, 5),
    keep_hourly=st.integers(0, 5),
    keep_daily=st.integers(0, 5),
    keep_weekly=st.integers(0, 5),
    keep_monthly=st.integers(0, 5),
    keep_yearly=st.integers(0, 3),
    keep_within=st.sampled_from([0.0, 3600.0, 7 * DAY, 400 * DAY]),
)


_FORMATS = {
    "keep_hourly": "%Y-%m-%dT%H",
    "keep_daily": "%Y-%m-%d",
    "keep_weekly": "%G-W%V",
    "keep_monthly": "%Y-%m",
    "keep_yearly": "%Y",
}


def _expected_kept(backups: list[Manifest], policy: RetentionSettings) -> set[str]:
    """The restic-forget rules, written out plainly (an oracle apart from retention.py)."""
    ordered = sorted(backups, key=lambda m: (m.created, m.revision, m.id), reverse=True)
    if policy.empty:
        return {m.id for m in ordered}
    kept = {m.id for m in ordered[: policy.keep_last]}
    for rule, fmt in _FORMATS.items():
        buckets: list[str] = []
        for m in ordered:
            key = m.created.strftime(fmt)
            if key not in buckets and len(buckets) < getattr(policy, rule):
                buckets.append(key)
                kept.add(m.id)
    if ordered and policy.keep_within > 0:
        top = ordered[0].created
        kept |= {m.id for m in ordered if (top - m.created).total_seconds() <= policy.keep_within}
    newest_verified = next((m for m in ordered if m.verified), None)
    if newest_verified is not None:
        kept.add(newest_verified.id)
    kept |= {m.id for m in ordered if m.retain_until and at(m.retain_until[:-1]) > NOW}
    return kept


@settings(max_examples=300, deadline=None)
@given(backups=_backups, policy=_policies, seed=st.integers(0, 2**32))
def test_plan_properties(backups: list[Manifest], policy: RetentionSettings, seed: int) -> None:
    decisions = plan(backups, policy, NOW)
    # One decision per backup; kept exactly when the rules, computed apart here, keep it.
    assert sorted(d.backup.id for d in decisions) == sorted(m.id for m in backups)
    assert {d.backup.id for d in decisions if d.keep} == _expected_kept(backups, policy)
    # The newest verified backup is always kept.
    verified = [m for m in backups if m.verified]
    if verified:
        newest = max(verified, key=lambda m: (m.created, m.revision, m.id))
        assert next(d for d in decisions if d.backup.id == newest.id).keep
    # Locked backups are always kept.
    assert all(d.keep for d in decisions if d.backup.retain_until)
    # Deterministic and independent of the input order.
    shuffled = list(backups)
    random.Random(seed).shuffle(shuffled)
    assert plan(shuffled, policy, NOW) == decisions
    # keep_last keeps exactly min(N, len); each calendar rule keeps at most N.
    last = sum(1 for d in decisions for r in d.reasons if r.startswith("last #"))
    assert last == min(policy.keep_last, len(backups))
    for name, n in (
        ("hourly ", policy.keep_hourly),
        ("daily ", policy.keep_daily),
        ("weekly ", policy.keep_weekly),
        ("monthly ", policy.keep_monthly),
        ("yearly ", policy.keep_yearly),
    ):
        assert sum(1 for d in decisions for r in d.reasons if r.startswith(name)) <= n
    if policy.empty:
        assert all(d.reasons == ("no retention policy",) for d in decisions)


def test_ties_on_created_at_are_ordered_by_id() -> None:
    a = fake_manifest("2026-11-24T12:00:00", node="a")
    b = fake_manifest("2026-11-24T12:00:00", node="b")
    assert plan([a, b], RetentionSettings(keep_last=1), NOW) == plan(
        [b, a], RetentionSettings(keep_last=1), NOW
    )
    assert plan([a, b], RetentionSettings(keep_last=1), NOW)[0].backup == b


def test_plan_does_not_mutate_its_input() -> None:
    backups = [fake_manifest("2026-11-24T12:00:00"), fake_manifest("2026-11-23T12:00:00")]
    before = [replace(m) for m in backups]
    plan(backups, RetentionSettings(keep_last=1), NOW)
    assert backups == before


@pytest.mark.parametrize("field", ["keep_last", "keep_daily", "keep_yearly", "keep_within"])
def test_negative_policy_values_are_refused_not_read_as_keep_nothing(field: str) -> None:
    with pytest.raises(ValueError, match=">= 0"):
        plan([fake_manifest("2026-11-24T12:00:00")], RetentionSettings(**{field: -1}), NOW)
