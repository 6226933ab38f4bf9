"""The backup path of the agent: one backup (coordination, the pipeline, retention), the
pending-upload flush, the publish check, and the store's catalog as this agent counts it.

``BackupPath`` is a part of ``service.Agent`` (its state is the agent's); it is a module of
its own so that each file reads as one job. It runs to about 490 lines because the flush
and the publish check share the backup's listing, state and counting; apart, each would
need the other's internals.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import scheduling
from .catalog import Catalog, list_backups
from .config import Settings
from .coordination import BackupSkipped
from .errors import (
    AgentError,
    Busy,
    Cancelled,
    SourceError,
    StoreError,
    StoreUnavailable,
    VerificationError,
)
from .events import Emit
from .manifest import Manifest, format_time
from .metrics import Metrics
from .pipeline import Pipeline
from .requests import PruneRequest
from .retention import PruneReport, prune
from .spool import SealedBackup, Spool
from .status import LastResult
from .wiring import Wiring

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

# Who asked for a backup. The schedule: coordination with the period re-check, the publish
# check, then retention. A socket request: coordination, retention. The offline command:
# neither (the operator asked on this node; docs/retention.md: it never prunes).
Trigger = Literal["schedule", "request", "command"]
# backups an operator asked for: a flush never supersedes them
ASKED = ("request", "command")


class BackupPath:
    """Agent methods that take, publish and prune backups (state: see ``service.Agent``)."""

    log: Any
    clock: Callable[[], datetime]
    wiring: Wiring
    spool: Spool
    metrics: Metrics
    state: scheduling.State
    flight: scheduling.SingleFlight
    cancel: threading.Event
    stopping: bool
    last: LastResult
    last_cycle_end: float
    _state_lock: threading.Lock
    _catalog_lock: threading.Lock
    _next_flush: float
    _incomplete: tuple[str, ...]
    _leftover_bytes: int

    if TYPE_CHECKING:

        def exclusive(self, what: str) -> AbstractContextManager[None]: ...
        def request(self) -> AbstractContextManager[Wiring]: ...
        def drill_mode(self, s: Settings) -> str | None: ...
        def _drill_spool(self, raw: Path, manifest: Manifest) -> None: ...

    # -- one backup -----------------------------------------------------------------------

    def backup(self, trigger: Trigger = "request", emit: Emit | None = None) -> Manifest:
        """Take one backup now, on the single flight; record, count and log its result."""
        if self.stopping:
            raise Busy("cannot back up now: the agent is shutting down")
        if not self.flight.try_enter():
            if trigger == "schedule":
                self.record_busy_skip()
            else:
                self.metrics.skip("busy")
            raise Busy("cannot back up now: another backup is running (see status)")
        try:
            return self._attempt(self.wiring, trigger, emit)
        finally:
            self.flight.leave()

    def backup_from_data_dir(self, data_dir: Path, force: bool = False) -> Manifest:
        """Back up the db of a stopped etcd (the offline command's ``--from-data-dir``)."""
        with self.exclusive("back up"):
            w = self.wiring
            pipeline = Pipeline(
                w.settings,
                w.store,
                spool=self.spool,
                cancel=self.cancel,
                clock=self.clock,
                trigger="command",
            )
            sealed = pipeline.prepare_from_data_dir(data_dir, force=force)
            try:
                manifest = pipeline.upload(sealed)
            finally:
                self.spool.discard(sealed)
            return manifest

    def _scheduled_backup(self, w: Wiring) -> None:
        try:
            self._attempt(w, "schedule", None)
        except Exception as exc:  # already counted and logged by _attempt
            self.log.debug("scheduled backup ended without a backup", error=str(exc))

    def _attempt(self, w: Wiring, trigger: Trigger, emit: Emit | None) -> Manifest:
        """Run one backup with coordination; record the result; re-raise failures."""
        started_at = self.clock()
        try:
            manifest = self._backup(w, trigger, emit)
        except BackupSkipped as skip:
            self.metrics.skip(skip.reason)
            with self._state_lock:
                scheduling.record_skip(w.policy, self.state, self.clock(), skip.reason)
            self.last = LastResult("skipped", format_time(started_at), reason=skip.reason)
            self.log.info("backup skipped", reason=skip.reason, detail=str(skip))
            raise
        except Cancelled as exc:
            self.last = LastResult("cancelled", format_time(started_at), error=str(exc))
            self.log.warning("backup cancelled", error=str(exc))
            raise
        except Exception as exc:
            self.metrics.failure(verification=isinstance(exc, VerificationError))
            if isinstance(exc, StoreError):
                self.metrics.set_up(store=False)
            if isinstance(exc, SourceError):
                # python-etcd3 refuses a failed endpoint for 300 s ("Trying to use a failed
                # node"), long after the member is back: reconnect on the next attempt
                with contextlib.suppress(Exception):
                    w.source.close()
            with self._state_lock:
                scheduling.record_failure(w.policy, self.state, self.clock())
                failures, retry_at = self.state.failures, self.state.not_before
            code = exc.code if isinstance(exc, AgentError) else "internal"
            self.last = LastResult("failure", format_time(started_at), error=str(exc))
            self.log.error(
                "backup failed",
                error=str(exc),
                code=code,
                error_type=type(exc).__name__,
                failures_this_period=failures,
                retry_after=format_time(retry_at) if retry_at else None,
                spool_kept=bool(w.settings.spool.keep_unuploaded and self.spool.waiting()),
            )
            raise
        finally:
            self.update_spool_metrics()
            self.last_cycle_end = time.monotonic()
        with self._state_lock:
            scheduling.record_success(self.state, manifest.created)
        self.last = LastResult("success", format_time(started_at), backup_id=manifest.id)
        return manifest

    def _backup(self, w: Wiring, trigger: Trigger, emit: Emit | None) -> Manifest:
        s = w.settings
        recheck = trigger == "schedule"
        if s.spool.max_bytes and self.spool.used_bytes() > s.spool.max_bytes:
            raise BackupSkipped(
                "spool_full", f"spool holds more than [spool] max_bytes = {s.spool.max_bytes}"
            )
        newest_seen: list[datetime | None] = []

        def newest_in_store() -> datetime | None:
            newest = self.refresh_catalog(w)
            newest_seen.append(newest)
            return newest

        def is_covered(newest: datetime | None) -> bool:
            return scheduling.covered(w.policy, newest, self.clock())

        claiming = (
            contextlib.nullcontext(None)
            if trigger == "command"
            else w.coordinator.claim(
                newest_in_store if recheck else None, is_covered if recheck else None
            )
        )
        with claiming as claim:
            if claim is not None and claim.skip is not None:
                if newest_seen:
                    with self._state_lock:
                        scheduling.seed_newest(newest_seen[-1], self.state)
                raise BackupSkipped(claim.skip, f"backup skipped: {claim.skip} ({claim.holder})")
            begun = time.monotonic()
            self.metrics.attempt_started()
            self.log.info(
                "backup started",
                coordination=s.coordination.mode if claim is not None else "none",
                holder=claim.holder if claim is not None else None,
                trigger=trigger,
            )

            def on_stage(name: str, seconds: float, info: dict[str, Any]) -> None:
                self.metrics.stage(name, seconds)
                if emit is not None:
                    emit({"event": "stage", "stage": name, "seconds": round(seconds, 3)})

            def progress(stage: str, done: int, total: int) -> None:
                if emit is not None:
                    emit({"event": "progress", "stage": stage, "done": done, "total": total})

            pipeline = Pipeline(
                s,
                w.store,
                spool=self.spool,
                cancel=self.cancel,
                on_stage=on_stage,
                progress=progress,
                after_verify=self._drill_spool if self.drill_mode(s) == "spool" else None,
                before_publish=self._publish_check(w) if recheck else None,
                clock=self.clock,
                trigger=trigger,
            )
            looked = trigger != "command"  # a one-shot command has not looked at the store
            if (
                looked
                and s.spool.keep_unuploaded
                and self.metrics.value("etcd_backup_store_up") == 0
            ):
                # the store was down at the last look: seal into the spool, do not hold the
                # flight for retry_max_time; the flush publishes it once a listing works
                sealed = pipeline.prepare(w.source)
                raise StoreUnavailable(
                    f"{w.store.describe()} was unavailable at the last listing; "
                    f"{sealed.manifest.id} waits in the spool"
                )
            outcome = pipeline.run(w.source)
            total = time.monotonic() - begun
            manifest = outcome.manifest
            self.metrics.success(manifest, total)
            if claim is not None and claim.lost:
                self.log.warning(
                    "the coordination lock lapsed during the backup; "
                    "published after re-checking the store",
                    key=claim.holder,
                )
            self.log.info(
                "backup stored",
                id=manifest.id,
                revision=manifest.revision,
                keys=manifest.total_keys,
                db_bytes=manifest.db_size,
                stored_bytes=manifest.object_size,
                seconds=round(total, 3),
                store=w.store.describe(),
            )
            if trigger != "command":
                self._run_retention(w)
            self.refresh_catalog(w)
            return manifest

    def _run_retention(self, w: Wiring) -> None:
        """Prune after a successful backup, when retention rules are set."""
        if w.settings.retention.empty:
            return
        try:
            report = prune(w.store, w.settings, now=self.clock(), dry_run=False)
        except Exception as exc:
            self.metrics.retention(False)
            self.log.error("retention failed", error=str(exc))
            return
        result = report.result
        self.metrics.retention(not result.failed, len(result.deleted))
        self.log.info(
            "retention finished",
            deleted=len(result.deleted),
            locked=len(result.locked),
            failed=len(result.failed),
        )

    def prune(self, req: PruneRequest) -> PruneReport:
        """Apply (or only plan, ``dry_run``) the retention policy now."""
        with self.request() as w, self.exclusive("prune"):
            return prune(w.store, w.settings, self.clock(), req.dry_run)

    # -- pending uploads (keep_unuploaded) -------------------------------------------------

    def flush(self) -> None:
        """Upload the sealed backups waiting in the spool, on the single flight."""
        with self.exclusive("upload pending backups"):
            self._flush_job(self.wiring)

    def _flush_job(self, w: Wiring) -> None:
        waiting = self.spool.waiting()
        if not waiting:
            return
        try:
            if w.settings.coordination.mode == "etcd-lock":
                # never beside another agent's flush or backup: the lock settles who publishes
                with w.coordinator.claim() as claim:
                    if claim.skip is not None:
                        self._flush_later(w, f"lock held by {claim.holder}")
                        return
                    self._flush(w, waiting)
            else:
                self._flush(w, waiting)
        except Exception as exc:
            self._flush_later(w, str(exc))
        finally:
            self.update_spool_metrics()

    def _flush_later(self, w: Wiring, why: str) -> None:
        retry = max(w.policy.retry_backoff, 1.0)
        self._next_flush = time.monotonic() + retry
        self.log.warning("pending uploads wait in the spool", reason=why, retry_in=retry)

    def _flush(self, w: Wiring, waiting: list[SealedBackup]) -> None:
        """Publish the pending backups, oldest first: every one an operator asked for, and at
        most one scheduled backup per period.

        A quick listing comes first: while the store is down nothing is tried (the flight
        is not held for retry_max_time). A period that already holds a published backup
        (another agent's, or ours) gets none of the pending scheduled ones; of several
        pending in one uncovered period only the newest is published. A backup asked for
        (``etcd-backupctl backup``, ``etcd-backup-agent backup``: the manifest's
        ``trigger``) is never superseded, as it would not have been with the store up.
        """
        try:
            published = self._list_mine(w)
        except Exception as exc:
            self.metrics.set_up(store=False)
            self._flush_later(w, f"store unavailable: {exc}")
            return
        self.metrics.set_up(store=True)
        periods = {scheduling.period_start(w.policy, m.created) for m in published}
        by_period: dict[datetime, list[SealedBackup]] = {}
        asked: list[SealedBackup] = []
        for sealed in waiting:
            if sealed.manifest.trigger in ASKED:
                asked.append(sealed)
                continue
            start = scheduling.period_start(w.policy, sealed.manifest.created)
            by_period.setdefault(start, []).append(sealed)
        publish = list(asked)
        for start in sorted(by_period):
            group = by_period[start]
            candidate = group[-1] if start not in periods else None
            if candidate is not None:
                publish.append(candidate)
            for sealed in group:
                if sealed is not candidate:
                    self.spool.discard(sealed)
                    self.metrics.skip("already_backed_up")
                    self.log.info(
                        "pending backup superseded: its period already has a backup",
                        id=sealed.manifest.id,
                        period=format_time(start),
                    )

        def pipeline(checked: bool) -> Pipeline:
            return Pipeline(
                w.settings,
                w.store,
                spool=self.spool,
                cancel=self.cancel,
                before_publish=self._publish_check(w) if checked else None,
                clock=self.clock,
            )

        scheduled, requested = pipeline(checked=True), pipeline(checked=False)
        for candidate in sorted(publish, key=lambda p: p.manifest.created_at):
            is_asked = candidate.manifest.trigger in ASKED
            try:
                manifest = (requested if is_asked else scheduled).upload(candidate)
            except BackupSkipped as skip:
                self.spool.discard(candidate)
                self.metrics.skip(skip.reason)
                self.log.info(
                    "pending backup superseded", id=candidate.manifest.id, detail=str(skip)
                )
                continue
            except Exception as exc:
                self.metrics.set_up(store=False)
                self._flush_later(w, f"pending upload of {candidate.manifest.id} failed: {exc}")
                return
            self.metrics.success(manifest, None)
            with self._state_lock:
                scheduling.seed_newest(manifest.created, self.state)
            self.log.info(
                "backup stored",
                id=manifest.id,
                revision=manifest.revision,
                stored_bytes=manifest.object_size,
                from_spool=True,
                trigger=manifest.trigger,
                store=w.store.describe(),
            )
        self.refresh_catalog(w)

    def _publish_check(self, w: Wiring) -> Callable[[Manifest], None] | None:
        """The last check before a manifest is written: its period must hold no backup yet.

        It closes the windows the lock leaves open (leader-member has no lock; an etcd
        lock can lapse mid-backup): whoever publishes second sees the first and stands
        down. A listing that fails does not block the publish (the store was just written).
        """
        if w.settings.coordination.mode == "none":
            return None  # one agent per node; the spool lock keeps it one process

        def check(manifest: Manifest) -> None:
            try:
                published = self._list_mine(w)
            except Exception as exc:
                self.log.warning("cannot re-check the store before publishing", error=str(exc))
                return
            start = scheduling.period_start(w.policy, manifest.created)
            for m in published:
                if m.id != manifest.id and scheduling.period_start(w.policy, m.created) == start:
                    raise BackupSkipped(
                        "already_backed_up",
                        f"{m.id} (node {m.node}) was published in this period first",
                    )

        return check

    # -- the store, as seen from here -----------------------------------------------------

    def _mine(self, w: Wiring, backups: tuple[Manifest, ...]) -> tuple[Manifest, ...]:
        """The backups that cover this agent's periods, newest first."""
        if w.settings.coordination.mode == "none":
            # every node backs up for itself: only its own backups cover its periods
            return tuple(m for m in backups if m.node == w.settings.node)
        return backups

    def _catalog(self, w: Wiring) -> Catalog:
        with self._catalog_lock:  # the probe thread and the worker share the cache
            return list_backups(w.lister, w.settings.cluster, cache=w.manifests)

    def _list_mine(self, w: Wiring) -> tuple[Manifest, ...]:
        """A fresh listing (quick retries) of the complete backups that count for us."""
        return self._mine(w, self._catalog(w).backups)

    def refresh_catalog(self, w: Wiring | None = None, seed_state: bool = False) -> datetime | None:
        """Read the store's manifests: seed metrics; return the newest that counts for us."""
        w = w or self.wiring
        try:
            catalog = self._catalog(w)
        except Exception as exc:
            self.metrics.set_up(store=False)
            self.log.warning("cannot list the store", error=str(exc))
            return None
        self.metrics.set_up(store=True)
        self.metrics.seed(catalog.backups)
        self.metrics.set_incomplete(len(catalog.incomplete))
        seen = tuple(i.manifest.id for i in catalog.incomplete)
        if seen != self._incomplete:
            self._incomplete = seen
            for i in catalog.incomplete:
                self.log.warning(
                    "incomplete backup in the store: not counted, restored or pruned",
                    id=i.manifest.id,
                    reason=i.reason,
                )
        mine = self._mine(w, catalog.backups)
        # backups dated after the current period (the clock went back) cover nothing
        horizon = scheduling.next_period_start(w.policy, self.clock())
        newest = next((m.created for m in mine if m.created < horizon), None)
        if seed_state:
            with self._state_lock:
                scheduling.seed_newest(newest, self.state)
        return newest

    def update_spool_metrics(self) -> None:
        with contextlib.suppress(Exception):
            used = self.spool.used_bytes() + self._leftover_bytes
            self.metrics.set_spool(used, len(self.spool.waiting()))

    def record_busy_skip(self) -> None:
        """A scheduled backup fell due while the flight was taken: skip it, retry later."""
        self.last_cycle_end = time.monotonic()
        self.metrics.skip("busy")
        with self._state_lock:
            scheduling.record_skip(self.wiring.policy, self.state, self.clock(), "busy")
        self.log.info("backup due but another is running; skipped", reason="busy")
