"""The agent: one object that owns the wiring and runs every operation.

``Agent`` holds the store, the etcd sources, the coordinator, the one ``Spool`` (and its
lock), the manifest cache and the metrics. The daemon (daemon.py: loop, signals, threads),
the socket server (control/server.py) and the offline commands (commands/) all call it, so a
backup, a prune or a drill runs the same way whoever asked.

Single flight lives here: a backup, flush, drill, verify, prune, restore or keyspace read
holds ``flight``; a second one gets ``Busy``. ``status`` and ``list`` never wait for it.

This module is over 400 lines because the backup path (coordination, pipeline, retention,
the pending-upload flush and the publish check) is one piece of state: splitting it would
pass the same half-dozen fields between modules. The socket's request handling lives in
service_ops.py.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from . import __version__, scheduling, scratch
from . import log as logsetup
from .catalog import Catalog, ManifestCache, list_backups
from .config import Settings, load
from .coordination import BackupSkipped, Coordinator
from .drill import FAILURE, DrillReport, drill, drill_plaintext
from .errors import (
    AgentError,
    Busy,
    Cancelled,
    ConfigError,
    RestoreError,
    SourceError,
    StoreError,
    StoreUnavailable,
    UsageError,
    VerificationError,
)
from .etcd_source import EtcdSource
from .identity import read_identity
from .manifest import Manifest, format_time
from .metrics import Metrics
from .pipeline import Pipeline, SealedBackup, Spool, sweep_stale_uploads
from .restore import BackupCheck, check_backup, work_root
from .retention import PruneReport, prune
from .spool_lock import SpoolLock
from .status import (
    AgentStatus,
    BundleStatus,
    CoordinationStatus,
    DrillStatus,
    LastDrill,
    LastResult,
    SpoolStatus,
    StoreStatus,
)
from .store import Store, open_store
from .sweep import sweep_leftovers, sweep_pending_orphans

Emit = Callable[[dict[str, Any]], None]
Args = Mapping[str, Any]  # a request's arguments, as docs/socket-protocol.md names them
# Who asked for a backup. The schedule: coordination with the period re-check, the publish
# check, then retention. A socket request: coordination, retention. The offline command:
# neither (the operator asked on this node; docs/retention.md: it never prunes).
Trigger = Literal["schedule", "request", "command"]
Job = Literal["backup", "flush", "drill"]
# Listings that only inform (the probe, the start, the publish check) give up quickly: the
# agent must not wait retry_max_time (300 s by default) to learn that the store is down.
LIST_RETRY_MAX = 5.0


@dataclass
class Wiring:
    """Everything built from one configuration; replaced as a whole on SIGHUP."""

    settings: Settings
    store: Store
    source: EtcdSource  # used by the backup worker only
    probe: EtcdSource  # used by probes and status requests
    coordinator: Coordinator
    probe_coordinator: Coordinator
    policy: scheduling.Policy
    lister: Store  # the same store with a short retry budget, for listings
    manifests: ManifestCache = field(default_factory=dict)  # parsed manifests of the store

    @classmethod
    def build(cls, settings: Settings) -> Wiring:
        store = open_store(settings)
        s3 = settings.store.s3
        lister = store
        if s3 is not None and s3.retry_max_time > LIST_RETRY_MAX:
            quick = replace(s3, retry_max_time=LIST_RETRY_MAX)
            lister = open_store(replace(settings, store=replace(settings.store, s3=quick)))
        source = EtcdSource(settings.etcd)
        probe = EtcdSource(settings.etcd)
        c = settings.coordination
        return cls(
            settings=settings,
            lister=lister,
            store=store,
            source=source,
            probe=probe,
            coordinator=Coordinator(c, settings.cluster, settings.node, source),
            probe_coordinator=Coordinator(c, settings.cluster, settings.node, probe),
            policy=scheduling.Policy.from_settings(settings.schedule),
        )

    def close(self) -> None:
        for closer in (self.source.close, self.probe.close, self.store.close, self.lister.close):
            with contextlib.suppress(Exception):
                closer()


class Agent:
    """The agent's state and operations for one configuration (replaced on reload)."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] | None = None,
        long_running: bool = False,
    ) -> None:
        self.log = logsetup.get("daemon")
        self.clock = clock or (lambda: datetime.now(UTC))
        self.wiring = Wiring.build(settings)
        self.spool = Spool(settings.spool.dir)  # spool.dir changes only on restart
        self.spool_lock = SpoolLock(settings.spool.dir)
        self.metrics = Metrics(
            settings.cluster, __version__, keyspace_top=settings.inspect.top_resources
        )
        # the daemon (not ``run --once``, not a command): jittered schedule, scheduled drills
        self.long_running = long_running
        self.state = scheduling.State()
        self.flight = scheduling.SingleFlight()
        self.cancel = threading.Event()  # set: the running backup stops (shutdown)
        self.stopping = False  # set: no new work is accepted
        self.last = LastResult()
        self.last_drill = LastDrill()
        self.drilling = False
        self.listed = threading.Event()  # the first store listing ended (either way)
        self.next_run: datetime | None = None
        self.last_cycle_end = time.monotonic()
        self._state_lock = threading.Lock()
        self._catalog_lock = threading.Lock()
        self._retired: list[Wiring] = []
        self._requests = 0  # socket requests using the wiring (a retired one stays open)
        self._next_flush = 0.0
        self._drill_due_at = 0.0  # time.monotonic(); the first drill is due at start
        self._leader: bool | None = None
        self._holder: str | None = None  # the coordination holder, as the last probe saw it
        self._incomplete: tuple[str, ...] = ()
        self._leftover_bytes = 0

    @property
    def settings(self) -> Settings:
        return self.wiring.settings

    @property
    def busy(self) -> bool:
        return self.flight.busy

    # -- lifecycle ----------------------------------------------------------------------

    def open(self, holder: str) -> int:
        """Take the spool for this process; clean what a crash left; return files removed."""
        self.spool.ensure()
        self.spool_lock.acquire(holder)  # never beside a daemon or another backup
        removed = self.spool.clean_partials() + sweep_pending_orphans(self.spool.dir, self.log)
        scratch.sweep(work_root(self.settings))
        self.metrics.set_expected_interval(self.wiring.policy.expected_interval)
        return removed

    def close(self) -> None:
        if self.spool_lock.held:  # partials are ours to remove only while we hold the spool
            with contextlib.suppress(Exception):
                self.spool.clean_partials()
        for w in [self.wiring, *self._retired]:
            w.close()
        self._retired.clear()
        self.spool_lock.release()

    def reload(self) -> bool:
        """Reload the config file; keep the running config when the new one is invalid."""
        old = self.settings
        try:
            new = load(old.source)
        except ConfigError as exc:
            self.log.error(
                "config reload failed; keeping the running config", problems=exc.problems
            )
            return False
        restart_only = [
            what
            for what, before, after in (
                ("cluster.name", old.cluster, new.cluster),
                ("metrics", old.metrics, new.metrics),
                ("control", old.control, new.control),
                ("spool.dir", old.spool.dir, new.spool.dir),
            )
            if before != after
        ]
        if restart_only:
            # applying the rest would leave the agent running a config no file describes
            self.log.error(
                "config reload refused: these keys change only on restart; "
                "keeping the running config",
                keys=restart_only,
            )
            return False
        try:
            wiring = Wiring.build(new)
        except Exception as exc:
            self.log.error("config reload failed; keeping the running config", error=str(exc))
            return False
        with self._state_lock:
            self._retired.append(self.wiring)
            self.wiring = wiring
            self.state.not_before = None
        self.metrics.set_expected_interval(wiring.policy.expected_interval)
        self.close_retired()
        decision = self.decide(jitter=self.long_running)
        self.log.info(
            "config reloaded",
            interval=wiring.policy.interval,
            coordination=new.coordination.mode,
            next_run="now" if decision.run else format_time(decision.next_at),
        )
        return True

    def close_retired(self) -> None:
        """Close the wirings a reload replaced, once no work uses them."""
        if self.flight.busy or self._requests:
            return
        while self._retired:
            self._retired.pop().close()

    @contextlib.contextmanager
    def request(self) -> Iterator[Wiring]:
        """The wiring one request uses from start to end, even when a reload lands."""
        with self._state_lock:
            self._requests += 1
            w = self.wiring
        try:
            yield w
        finally:
            with self._state_lock:
                self._requests -= 1

    @contextlib.contextmanager
    def exclusive(self, what: str) -> Iterator[None]:
        """Hold the single flight: never beside a backup, flush, drill or another request."""
        if self.stopping:
            raise Busy(f"cannot {what} now: the agent is shutting down")
        if not self.flight.try_enter():
            raise Busy(f"cannot {what} now: a backup or drill is running (see status)")
        try:
            yield
        finally:
            self.flight.leave()

    # -- scheduling ---------------------------------------------------------------------

    def decide(self, jitter: bool) -> scheduling.Decision:
        with self._state_lock:
            d = scheduling.decide(
                self.wiring.policy,
                self.state,
                self.clock(),
                self.settings.node,
                jitter=jitter,
            )
        self.next_run = d.next_at if not d.run else self.clock()
        return d

    def start(self, job: Job) -> Callable[[], None] | None:
        """Enter the single flight for a scheduled job; the returned function runs it (on
        the caller's thread of choice) and leaves the flight. None when the flight is taken."""
        if self.stopping or not self.flight.try_enter():
            return None
        w = self.wiring
        if job == "drill":
            self.drilling = True
        body: Callable[[Wiring], None] = {
            "backup": self._scheduled_backup,
            "flush": self._flush_job,
            "drill": self._drill_job,
        }[job]

        def run() -> None:
            try:
                body(w)
            finally:
                self.drilling = False
                self.flight.leave()

        return run

    def record_busy_skip(self) -> None:
        """A scheduled backup fell due while the flight was taken: skip it, retry later."""
        self.last_cycle_end = time.monotonic()
        self.metrics.skip("busy")
        with self._state_lock:
            scheduling.record_skip(self.wiring.policy, self.state, self.clock(), "busy")
        self.log.info("backup due but another is running; skipped", reason="busy")

    def flush_due(self) -> bool:
        """Sealed backups wait in the spool and the flush's retry time has come."""
        return (
            not self.flight.busy
            and time.monotonic() >= self._next_flush
            and bool(self.spool.waiting())
        )

    def drill_mode(self, s: Settings) -> str | None:
        """Where scheduled drills take their snapshot: "store" (an identity is configured:
        fetch and decrypt the newest backup), "spool" (the plaintext snapshot right after a
        backup), or None (drills are off)."""
        if not self.long_running or s.drill.interval <= 0:
            return None
        return "store" if s.drill.identity_file is not None else "spool"

    def drill_due(self) -> bool:
        """A scheduled store drill is due and there is a backup to drill."""
        return (
            self.drill_mode(self.settings) == "store"
            and time.monotonic() >= self._drill_due_at
            and self.state.newest is not None
            and not self.stopping
        )

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
                w.settings, w.store, spool=self.spool, cancel=self.cancel, clock=self.clock
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
            )
            if s.spool.keep_unuploaded and self.metrics.value("etcd_backup_store_up") == 0:
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

    def prune(self, dry_run: bool = False) -> PruneReport:
        """Apply (or only plan) the retention policy now."""
        with self.request() as w, self.exclusive("prune"):
            return prune(w.store, w.settings, self.clock(), dry_run)

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
        """Publish at most one pending backup per period, oldest period first.

        A quick listing comes first: while the store is down nothing is tried (the flight
        is not held for retry_max_time). A period that already holds a published backup
        (another agent's, or ours) gets none of the pending ones; of several pending in
        one uncovered period only the newest is published.
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
        for sealed in waiting:
            start = scheduling.period_start(w.policy, sealed.manifest.created)
            by_period.setdefault(start, []).append(sealed)
        pipeline = Pipeline(
            w.settings,
            w.store,
            spool=self.spool,
            cancel=self.cancel,
            before_publish=self._publish_check(w),
            clock=self.clock,
        )
        for start in sorted(by_period):
            group = by_period[start]
            candidate = group[-1] if start not in periods else None
            for sealed in group:
                if sealed is not candidate:
                    self.spool.discard(sealed)
                    self.metrics.skip("already_backed_up")
                    self.log.info(
                        "pending backup superseded: its period already has a backup",
                        id=sealed.manifest.id,
                        period=format_time(start),
                    )
            if candidate is None:
                continue
            try:
                manifest = pipeline.upload(candidate)
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

    # -- the store and etcd, as seen from here -----------------------------------------------

    def probe_etcd(self) -> None:
        """Ask the local member for its status; cache leadership and the lock holder."""
        w = self.wiring
        try:
            status = w.probe.status()
        except Exception as exc:
            self.metrics.set_up(etcd=False)
            self.metrics.set_leader(False)
            self._leader = None
            self.log.debug("etcd probe failed", error=str(exc))
            w.probe.close()
        else:
            self.metrics.set_up(etcd=True)
            self.metrics.set_leader(status.is_leader)
            self._leader = status.is_leader
            holder: str | None = None
            if w.settings.coordination.mode == "leader-member":
                holder = f"member {status.leader:x}"
            elif w.settings.coordination.mode == "etcd-lock":
                with contextlib.suppress(Exception):
                    holder = w.probe_coordinator.holder()
            self._holder = holder  # status requests read this; they never wait for etcd
        self.update_spool_metrics()

    def first_listing(self) -> None:
        """At start (on a probe thread): sweep leftovers, learn the newest stored backup."""
        w = self.wiring
        try:
            self.refresh_catalog(w, seed_state=True)
            sweep_stale_uploads(w.store, w.settings, self.log)
            self._leftover_bytes = sweep_leftovers(w.settings, self.log)
        finally:
            self.listed.set()
            self.update_spool_metrics()
        self.probe_etcd()

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

    # -- restore drills ---------------------------------------------------------------------

    def _drill_job(self, w: Wiring) -> None:
        identity_file = w.settings.drill.identity_file
        assert identity_file is not None
        self.log.info("restore drill started", source="store", backup="latest")
        try:
            identity, _ = read_identity({"identity_file": str(identity_file)})
            report = drill(w.settings, w.store, "latest", identity)
        except Exception as exc:  # drill() reports its own failures; this is the rest
            report = DrillReport(backup_id="latest", source="store", error=f"drill failed: {exc}")
        self._record_drill(w, report)

    def _drill_spool(self, raw: Path, manifest: Manifest) -> None:
        """Drill the verified raw snapshot in the spool when a drill is due (the pipeline
        calls this after its verification, while the file still exists)."""
        if time.monotonic() < self._drill_due_at:
            return
        w = self.wiring
        self.log.info("restore drill started", source="spool", backup=manifest.id)
        # the pipeline verified this very file a moment ago (the manifest's fields come
        # from that check): do not read it again while the etcd lock is held
        report = drill_plaintext(raw, manifest, w.settings, source="spool", verify=False)
        self._record_drill(w, report)

    def _record_drill(self, w: Wiring, report: DrillReport) -> None:
        self._drill_due_at = time.monotonic() + w.settings.drill.interval
        self.metrics.record_drill(report.result, report.kind)
        self.last_drill = LastDrill(
            result=report.result,
            kind=report.kind,
            source=report.source,
            at=format_time(self.clock()),
            backup_id=report.backup_id,
            error=report.error,
            seconds=report.seconds,
        )
        fields: dict[str, Any] = {
            "result": report.result,
            "kind": report.kind,
            "source": report.source,
            "step": report.step,
            "backup": report.backup_id,
            "seconds": report.seconds,
        }
        if report.result == FAILURE:
            self.log.error("restore drill finished", error=report.error, **fields)
        else:
            self.log.info("restore drill finished", checks=report.checks, **fields)

    def record_requested_drill(self, result: str, kind: str) -> None:
        """A drill a request asked for: count it and show it in the status."""
        self.metrics.record_drill(result, kind)
        self.last_drill = LastDrill(
            result=result, kind=kind, source="store", at=format_time(self.clock())
        )

    # -- status -----------------------------------------------------------------------------

    def _drill_next_due(self, s: Settings) -> str | None:
        if self.drill_mode(s) is None:
            return None
        wait = max(0.0, self._drill_due_at - time.monotonic())
        return format_time(self.clock() + timedelta(seconds=wait))

    def status(self) -> AgentStatus:
        """What the socket's status request, STATUS= and ``etcd-backupctl status`` report;
        built from what is cached here (it never waits for etcd or the store)."""
        w = self.wiring
        used, pending = 0, 0
        with contextlib.suppress(Exception):
            used, pending = self.spool.used_bytes(), len(self.spool.waiting())
        return AgentStatus(
            version=__version__,
            cluster=w.settings.cluster,
            node=w.settings.node,
            time=format_time(datetime.now(UTC)),
            busy=self.flight.busy,
            last=self.last,
            newest_backup=format_time(self.state.newest) if self.state.newest else None,
            next_run=format_time(self.next_run) if self.next_run else None,
            # the holder is cached by the probe thread (every few seconds)
            coordination=CoordinationStatus(w.settings.coordination.mode, self._holder),
            leader=self._leader,
            store=StoreStatus(w.store.describe(), bool(self.metrics.value("etcd_backup_store_up"))),
            drill=DrillStatus(
                self.last_drill, self.drill_mode(w.settings), self._drill_next_due(w.settings)
            ),
            spool=SpoolStatus(used, pending, w.settings.spool.max_bytes),
            bundle=BundleStatus.of(self.metrics.last_bundle),
        )

    # -- requests (the socket's ops; the offline commands call the same) -------------------

    def list(self) -> Catalog:
        with self.request() as w:
            try:
                return list_backups(w.store, w.settings.cluster)
            except ValueError as exc:
                raise RestoreError(f"unreadable manifest in the store: {exc}") from None

    def verify(self, args: Args, emit: Emit) -> BackupCheck:
        identity, _ = read_identity(args)
        with self.request() as w, self.exclusive("verify"):
            return check_backup(w.settings, w.store, args["backup"], identity, emit)

    def inspect(self, args: Args, emit: Emit) -> Any:
        from .keyspace import ops as ks
        from .keyspace.requests import InspectRequest

        req, (identity, _) = InspectRequest.from_args(dict(args)), read_identity(args)
        with self.request() as w, self.exclusive("inspect"):
            return ks.inspect_backup(w.settings, w.store, req, identity, emit)

    def diff(self, args: Args, emit: Emit) -> Any:
        from .keyspace import ops as ks
        from .keyspace.requests import DiffRequest

        req, (identity, _) = DiffRequest.from_args(dict(args)), read_identity(args)
        with self.request() as w, self.exclusive("diff"):
            return ks.diff_backups(w.settings, w.store, req, identity, emit)

    def extract(self, args: Args, emit: Emit) -> Any:
        from .keyspace import ops as ks
        from .keyspace.requests import ExtractRequest

        req, (identity, _) = ExtractRequest.from_args(dict(args)), read_identity(args)
        with self.request() as w, self.exclusive("extract"):
            return ks.extract_backup(w.settings, w.store, req, identity, emit)

    def restore(self, args: Args, emit: Emit) -> dict[str, Any]:
        from .restore_request import RestoreRequest

        with self.request() as w:
            return RestoreRequest(w.settings, w.store, self.exclusive).restore(args, emit)

    def drill(self, args: Args, emit: Emit) -> DrillReport:
        """A drill of a stored backup, asked for now (counted and shown in the status)."""
        with self.request() as w:
            if "identity" in args or "identity_file" in args:
                identity, _ = read_identity(args)
            elif w.settings.drill.identity_file is not None:
                identity, _ = read_identity({"identity_file": str(w.settings.drill.identity_file)})
            else:
                raise UsageError(
                    "a full drill needs an identity: [drill] identity_file or --identity"
                )
            with self.exclusive("drill"):
                return drill(
                    w.settings,
                    w.store,
                    str(args.get("backup", "latest")),
                    identity,
                    emit,
                    on_drill=self.record_requested_drill,
                )

    def bundle_list(self, backup: str) -> dict[str, Any]:
        from .bundle.ops import bundle_list

        with self.request() as w:
            return bundle_list(w.settings, w.store, backup)

    def bundle_extract(self, args: Args, emit: Emit) -> dict[str, Any]:
        # the checked tar, written by the caller (bundle/ops.py: write_fetched), so the
        # daemon never writes where a socket client names
        from .bundle.ops import bundle_fetch

        identity, _ = read_identity(args)
        with self.request() as w, self.exclusive("extract a bundle"):
            return bundle_fetch(w.settings, w.store, str(args["backup"]), identity, emit)
