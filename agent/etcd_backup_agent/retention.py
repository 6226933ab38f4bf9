"""Retention: ``plan`` decides (pure), ``apply`` deletes, ``prune`` does both for a store.

Policy semantics follow ``restic forget``: ``keep_last`` keeps the N newest backups; each
calendar rule (hourly, daily, weekly, monthly, yearly; UTC, ISO weeks) keeps the newest
backup of each of the N most recent buckets that hold a backup; ``keep_within`` keeps every
backup at most that long older than the newest backup. A backup is kept when any rule keeps
it. An empty policy keeps everything. Two safety rules override the policy: the newest
verified backup is always kept, and so is any backup whose object lock has not expired.
Only complete backups (see ``catalog``) take part: a manifest whose object is missing is
neither counted by a rule nor deleted; the report lists it for the operator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from .catalog import list_backups, sort_key
from .config import RetentionSettings, Settings
from .durations import format_duration
from .errors import AgentError, ObjectLocked, StoreError
from .manifest import Manifest, format_time, manifest_key, object_key, parse_time
from .store.base import Store

NO_POLICY = "no retention policy"
NEWEST_VERIFIED = "newest verified backup"
LOCK_PREFIX = "object lock until "
CREATED_AFTER_NOW = "created after now (clock moved back?)"


@dataclass(frozen=True)
class Decision:
    """What retention does with one backup, and every rule that keeps it."""

    backup: Manifest
    keep: bool
    reasons: tuple[str, ...] = ()

    @property
    def held_by_lock(self) -> bool:
        """True when only an unexpired object lock keeps this backup."""
        return self.keep and all(r.startswith(LOCK_PREFIX) for r in self.reasons)


@dataclass
class ApplyResult:
    """Ids deleted (or, in a dry run, to be deleted), skipped for a lock, or failed."""

    deleted: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    dry_run: bool = False


@dataclass(frozen=True)
class PruneReport:
    """One prune run: the plan, what was done, and the leftovers seen while listing."""

    cluster: str
    store: str
    decisions: tuple[Decision, ...]
    result: ApplyResult
    orphans: tuple[str, ...] = ()
    unreadable: tuple[str, ...] = ()
    incomplete: tuple[tuple[str, str], ...] = ()  # (id, reason): never deleted by retention

    @property
    def kept(self) -> int:
        """Backups kept by a rule or the newest-verified rule (not only by a lock)."""
        return sum(1 for d in self.decisions if d.keep and not d.held_by_lock)

    @property
    def skipped_locked(self) -> int:
        """Backups the policy would delete but an object lock holds (in the plan or the store)."""
        return sum(1 for d in self.decisions if d.held_by_lock) + len(self.result.locked)


_Bucket = Callable[[datetime], str]

_CALENDAR: tuple[tuple[str, _Bucket], ...] = (
    ("hourly", lambda t: f"{t:%Y-%m-%dT%H}"),
    ("daily", lambda t: f"{t:%Y-%m-%d}"),
    ("weekly", lambda t: f"{t.isocalendar().year}-W{t.isocalendar().week:02d}"),
    ("monthly", lambda t: f"{t:%Y-%m}"),
    ("yearly", lambda t: f"{t:%Y}"),
)


def plan(backups: Iterable[Manifest], policy: RetentionSettings, now: datetime) -> list[Decision]:
    """Decide, for each backup, keep or delete and why; newest first. Pure: no I/O."""
    if any(getattr(policy, f.name) < 0 for f in fields(policy)):
        raise ValueError(f"retention counts and keep_within must be >= 0: {policy}")
    ordered = sorted(backups, key=sort_key, reverse=True)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if policy.empty:
        return [Decision(m, True, (NO_POLICY,)) for m in ordered]
    # Backups dated after ``now`` (the clock went back) are kept and left out of the rules:
    # counted, they would fill keep_last and every new backup would be deleted at once.
    future = [m for m in ordered if m.created > now]
    ordered = [m for m in ordered if m.created <= now]
    kept_future = [Decision(m, True, (CREATED_AFTER_NOW,)) for m in future]
    reasons: list[list[str]] = [[] for _ in ordered]
    for i in range(min(policy.keep_last, len(ordered))):
        reasons[i].append(f"last #{i + 1}")
    per_bucket = {
        "hourly": policy.keep_hourly,
        "daily": policy.keep_daily,
        "weekly": policy.keep_weekly,
        "monthly": policy.keep_monthly,
        "yearly": policy.keep_yearly,
    }
    for name, bucket in _CALENDAR:
        _keep_buckets(ordered, reasons, name, bucket, per_bucket[name])
    if policy.keep_within > 0 and ordered:
        newest = ordered[0].created
        label = f"within {format_duration(policy.keep_within)}"
        for i, m in enumerate(ordered):
            if (newest - m.created).total_seconds() <= policy.keep_within:
                reasons[i].append(label)
    newest_verified = next((i for i, m in enumerate(ordered) if m.verified), None)
    if newest_verified is not None:
        reasons[newest_verified].append(NEWEST_VERIFIED)
    for i, m in enumerate(ordered):
        lock = _lock_reason(m, now)
        if lock:
            reasons[i].append(lock)
    return kept_future + [
        Decision(m, bool(r), tuple(r)) for m, r in zip(ordered, reasons, strict=True)
    ]


def _keep_buckets(
    ordered: Sequence[Manifest], reasons: list[list[str]], name: str, bucket: _Bucket, n: int
) -> None:
    """Keep the newest backup of each of the ``n`` most recent buckets holding one."""
    seen: set[str] = set()
    for i, m in enumerate(ordered):
        if len(seen) >= n:
            return
        key = bucket(m.created)
        if key not in seen:
            seen.add(key)
            reasons[i].append(f"{name} {key}")


def _lock_reason(m: Manifest, now: datetime) -> str:
    if not m.retain_until:
        return ""
    try:
        until = parse_time(m.retain_until)
    except (ValueError, TypeError, AttributeError):
        # An unreadable lock date could still be a lock: keep the backup and say so.
        return f"{LOCK_PREFIX}{m.retain_until!r} (unreadable date)"
    return f"{LOCK_PREFIX}{format_time(until)}" if until > now else ""


def apply(
    store: Store, cluster: str, decisions: Sequence[Decision], dry_run: bool = False
) -> ApplyResult:
    """Delete the backups marked for deletion; skip (and count) those under object lock.

    Order per backup: the manifest first, then the object, so a half-deleted backup is
    never listed as restorable (a leftover object is only an orphan). When the object
    then turns out to be locked, the manifest is put back (the bytes read just before the
    delete, else ``manifest.to_json()``), so a locked backup stays listed and restorable;
    when that put fails, or deleting the object fails for another reason, the id is
    reported in ``failed`` and the object remains as an orphan for the next listing.
    """
    _check_newest_verified_kept(decisions)
    result = ApplyResult(dry_run=dry_run)
    for d in decisions:
        if d.keep:
            continue
        m = d.backup
        if m.cluster != cluster:
            result.failed.append((m.id, f"belongs to cluster {m.cluster!r}, not {cluster!r}"))
            continue
        if dry_run:
            result.deleted.append(m.id)
            continue
        _delete_one(store, cluster, m, result)
    return result


def _delete_one(store: Store, cluster: str, m: Manifest, result: ApplyResult) -> None:
    mkey, okey = manifest_key(cluster, m.id), object_key(cluster, m.id)
    try:
        # Keep the stored bytes (fields this version does not know) to put back on a lock.
        original = store.get_bytes(mkey)
    except StoreError:
        original = m.to_json().encode()
    try:
        store.delete(mkey)
    except ObjectLocked:
        result.locked.append(m.id)
        return
    except StoreError as exc:
        result.failed.append((m.id, f"cannot delete manifest: {exc}"))
        return
    try:
        store.delete(okey)
    except ObjectLocked:
        try:
            store.put_bytes(mkey, original)
        except StoreError as exc:
            result.failed.append((m.id, f"object locked; manifest not restored: {exc}"))
            return
        result.locked.append(m.id)
        return
    except StoreError as exc:
        result.failed.append((m.id, f"manifest deleted, object left as orphan: {exc}"))
        return
    if m.bundle is not None and m.bundle.object:
        try:  # the bundle is part of the backup: it goes with the snapshot
            store.delete(m.bundle.object)
        except StoreError as exc:
            result.failed.append((m.id, f"deleted, but its bundle object remains: {exc}"))
            return
    result.deleted.append(m.id)


def _check_newest_verified_kept(decisions: Sequence[Decision]) -> None:
    """Refuse a plan that would delete the newest verified backup, however it was made."""
    verified = [d for d in decisions if d.backup.verified]
    if verified and not max(verified, key=lambda d: sort_key(d.backup)).keep:
        raise AgentError("refusing a retention plan that deletes the newest verified backup")


def prune(store: Store, settings: Settings, now: datetime, dry_run: bool = False) -> PruneReport:
    """List, plan and apply retention for ``settings.cluster``; refuse an incomplete listing."""
    catalog = list_backups(store, settings.cluster)
    if not catalog.complete:
        raise StoreError(f"refusing to prune: listing incomplete ({store.describe()})")
    decisions = plan(catalog.backups, settings.retention, now)
    result = apply(store, settings.cluster, decisions, dry_run=dry_run)
    return PruneReport(
        cluster=settings.cluster,
        store=store.describe(),
        decisions=tuple(decisions),
        result=result,
        orphans=catalog.orphans,
        unreadable=catalog.unreadable,
        incomplete=tuple((i.manifest.id, i.reason) for i in catalog.incomplete),
    )


# -- the report as data (the JSON output and the socket reply; cli/render.py prints it) ---


def _action(report: PruneReport, d: Decision) -> str:
    """One of keep, locked, failed, delete, would-delete; they add up to the summary."""
    result, bid = report.result, d.backup.id
    if d.held_by_lock or bid in result.locked:
        return "locked"
    if d.keep:
        return "keep"
    if any(fid == bid for fid, _ in result.failed):
        return "failed"
    return "would-delete" if result.dry_run else "delete"


def report_dict(report: PruneReport) -> dict[str, Any]:
    """The report as JSON-able data (the `--json` output and the socket reply)."""
    return {
        "cluster": report.cluster,
        "store": report.store,
        "dry_run": report.result.dry_run,
        "decisions": [
            {
                "id": d.backup.id,
                "created_at": d.backup.created_at,
                "verified": d.backup.verified,
                "action": _action(report, d),
                "reasons": list(d.reasons),
            }
            for d in report.decisions
        ],
        "deleted": report.result.deleted,
        "locked": report.result.locked,
        "failed": [{"id": bid, "reason": reason} for bid, reason in report.result.failed],
        "orphans": list(report.orphans),
        "unreadable": list(report.unreadable),
        "incomplete": [{"id": bid, "reason": reason} for bid, reason in report.incomplete],
        "summary": {
            "backups": len(report.decisions),
            "kept": report.kept,
            "deleted": len(report.result.deleted),
            "skipped_locked": report.skipped_locked,
            "failed": len(report.result.failed),
            "orphans": len(report.orphans),
            "unreadable": len(report.unreadable),
            "incomplete": len(report.incomplete),
        },
    }
