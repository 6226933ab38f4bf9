"""When to back up: periods, catch-up from the store, retries, single flight.

Time is cut into periods. Without ``at`` a period is ``interval`` long and periods are
aligned to the Unix epoch (an hourly schedule's periods start at every full hour UTC);
with ``at`` a period runs from one daily UTC time to the next. A period is covered when
a backup was created inside it. An uncovered period becomes due at its start plus this
node's jitter offset; so a restart never resets the clock, and an agent that finds the
newest stored backup older than the current period runs at once.

Everything here is pure: functions of the settings and of the times given. The daemon
uses the ``schedule`` library only as the source of its ticks.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .config import ScheduleSettings

DAY = 86400.0


@dataclass(frozen=True)
class Policy:
    """The scheduling rules, in seconds."""

    interval: float
    jitter: float = 0.0
    at: tuple[float, ...] = ()  # seconds after midnight UTC, sorted
    retry_attempts: int = 3
    retry_backoff: float = 30.0

    @classmethod
    def from_settings(cls, s: ScheduleSettings) -> Policy:
        slots = sorted({_hhmm(t) for t in s.at})
        return cls(
            interval=s.interval,
            jitter=s.jitter,
            at=tuple(slots),
            retry_attempts=s.retry_attempts,
            retry_backoff=s.retry_backoff,
        )

    @property
    def expected_interval(self) -> float:
        """The longest time between two periods' starts (what alerting should expect)."""
        if not self.at:
            return self.interval
        starts = [*self.at, self.at[0] + DAY]
        return max(b - a for a, b in itertools.pairwise(starts))


def _hhmm(text: str) -> float:
    hours, minutes = text.split(":")
    return int(hours) * 3600.0 + int(minutes) * 60.0


def jitter_offset(node: str, jitter: float) -> float:
    """This node's fixed offset into each period, in [0, jitter): a hash of its name."""
    if jitter <= 0:
        return 0.0
    digest = hashlib.sha256(node.encode()).digest()
    return (int.from_bytes(digest[:8], "big") / 2**64) * jitter


def _ts(t: datetime) -> float:
    return t.astimezone(UTC).timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def period_start(policy: Policy, t: datetime) -> datetime:
    """Start of the period holding ``t``."""
    ts = _ts(t)
    if not policy.at:
        return _dt(math.floor(ts / policy.interval) * policy.interval)
    midnight = math.floor(ts / DAY) * DAY
    into = ts - midnight
    past = [a for a in policy.at if a <= into]
    if past:
        return _dt(midnight + past[-1])
    return _dt(midnight - DAY + policy.at[-1])


def next_period_start(policy: Policy, t: datetime) -> datetime:
    """Start of the period after the one holding ``t``."""
    start = _ts(period_start(policy, t))
    if not policy.at:
        return _dt(start + policy.interval)
    midnight = math.floor(start / DAY) * DAY
    into = start - midnight
    later = [a for a in policy.at if a > into]
    if later:
        return _dt(midnight + later[0])
    return _dt(midnight + DAY + policy.at[0])


def covered(policy: Policy, newest: datetime | None, now: datetime) -> bool:
    """Whether a backup created at ``newest`` covers the period holding ``now``.

    A backup dated after the current period does not: the clock went back (or another
    node's runs ahead), and counting it would take no backup until the clock caught up.
    """
    return newest is not None and period_start(policy, now) <= newest < next_period_start(
        policy, now
    )


@dataclass
class State:
    """What the scheduler remembers between ticks (in memory only)."""

    newest: datetime | None = None  # newest backup known (store at start, then ours)
    failures: int = 0  # failed attempts in the period of ``failed_period``
    failed_period: datetime | None = None
    not_before: datetime | None = None  # retry backoff or re-check time


@dataclass(frozen=True)
class Decision:
    """Run now, or the earliest time worth asking again."""

    run: bool
    next_at: datetime
    reason: str


def decide(policy: Policy, state: State, now: datetime, node: str, jitter: bool = True) -> Decision:
    """Whether a backup should start at ``now``."""
    start = period_start(policy, now)
    nxt = next_period_start(policy, now)
    # never let the offset push the start out of a short period (close ``at`` times)
    length = (nxt - start).total_seconds()
    offset = timedelta(
        seconds=min(jitter_offset(node, policy.jitter), length / 2) if jitter else 0.0
    )
    if covered(policy, state.newest, now):
        return Decision(False, nxt + offset, "covered")
    if state.failed_period == start and state.failures > policy.retry_attempts:
        return Decision(False, nxt + offset, "retries_exhausted")
    due = start + offset
    if state.not_before is not None and state.not_before > due:
        due = state.not_before
    if due >= nxt:
        return Decision(False, nxt + offset, "next_period")
    if now < due:
        return Decision(False, due, "waiting")
    return Decision(True, now, "due")


def record_success(state: State, created: datetime) -> None:
    # our own backup is the newest by the clock now, even if one dated later exists
    state.newest = created
    state.failures = 0
    state.failed_period = None
    state.not_before = None


def record_failure(policy: Policy, state: State, now: datetime) -> None:
    """Count a failed attempt; the next one waits ``retry_backoff * 2**(n-1)``."""
    start = period_start(policy, now)
    if state.failed_period != start:
        state.failed_period, state.failures = start, 0
    state.failures += 1
    backoff = policy.retry_backoff * 2 ** (state.failures - 1)
    state.not_before = now + timedelta(seconds=backoff)


def record_skip(policy: Policy, state: State, now: datetime, reason: str) -> None:
    """After a coordinated skip: look again after the backoff, or next period."""
    if reason in ("lock_held", "busy", "spool_full", "coordination_error"):
        # the holder may still fail; ask again soon (the store re-check settles it)
        state.not_before = now + timedelta(seconds=max(policy.retry_backoff, 1.0))
    else:
        state.not_before = next_period_start(policy, now)


def seed_newest(newest: datetime | None, state: State) -> None:
    if newest is not None and (state.newest is None or newest > state.newest):
        state.newest = newest


@dataclass
class SingleFlight:
    """At most one backup at a time, whoever asks (schedule or socket)."""

    _lock: threading.Lock = field(default_factory=threading.Lock)

    def try_enter(self) -> bool:
        return self._lock.acquire(blocking=False)

    def leave(self) -> None:
        self._lock.release()

    @property
    def busy(self) -> bool:
        return self._lock.locked()
