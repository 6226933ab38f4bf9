"""The daemon: wiring, main loop, signals, single-flight backups, spool flush, sd_notify.

The main thread only ticks (about once a second): it reads signal flags, runs the
``schedule`` jobs, pings the watchdog. Backups run on a worker thread (sealing runs in a
child process), probes of etcd on another. Signal handlers only set flags.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import schedule

from . import __version__, scheduling, scratch
from . import log as logsetup
from .catalog import ManifestCache, list_backups
from .config import Settings, load, split_listen
from .control.server import ControlServer
from .coordination import BackupSkipped, Coordinator
from .drill import FAILURE, DrillReport, drill, drill_plaintext
from .errors import (
    AgentError,
    Busy,
    Cancelled,
    ConfigError,
    SourceError,
    StoreError,
    StoreUnavailable,
    VerificationError,
)
from .etcd_source import EtcdSource
from .manifest import Manifest, format_time
from .metrics import Health, Metrics, MetricsServer, health
from .operations import Operations, read_identity
from .pipeline import AfterVerifyHook, Pipeline, SealedBackup, Spool, sweep_stale_uploads
from .restore import work_root
from .retention import prune
from .sdnotify import Notifier
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
TICK = 1.0
PROBE_EVERY = 10
CATALOG_EVERY = 300
# Listings that only inform (the probe, the start, the publish check) give up quickly: the
# daemon must not wait retry_max_time (300 s by default) to learn that the store is down.
LIST_RETRY_MAX = 5.0
# Everything a stop does fits systemd's TimeoutStopSec (90 s in the shipped unit): the
# grace, then the cancellation, then the joins. The rest of the 90 s is margin.
STOP_BUDGET = 80.0
CANCEL_RESERVE = 20.0


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


@dataclass
class _Flags:
    stop: bool = False
    hup: bool = False
    signals: int = 0


@dataclass
class Daemon:
    """The long-running agent (``etcd-backup-agent run``)."""

    settings: Settings
    once: bool = False
    notifier: Notifier = field(default_factory=Notifier)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        self.log = logsetup.get("daemon")
        self.wiring = Wiring.build(self.settings)
        self.metrics = Metrics(
            self.settings.cluster, __version__, keyspace_top=self.settings.inspect.top_resources
        )
        self.state = scheduling.State()
        self.flight = scheduling.SingleFlight()
        self.cancel = threading.Event()
        self.flags = _Flags()
        self.last = LastResult()
        self.exit_code = 0
        self.scheduler = schedule.Scheduler()
        self._state_lock = threading.Lock()
        self._catalog_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._prober: threading.Thread | None = None
        self._retired: list[Wiring] = []
        self._loop_beat: float | None = None
        self._last_cycle_end = time.monotonic()
        self._next_flush = 0.0
        self._once_started = False
        self._http: MetricsServer | None = None
        self._control: ControlServer | None = None
        self._leader: bool | None = None
        self._next_run: datetime | None = None
        self._notified: LastResult | None = None
        self.last_drill = LastDrill()
        self._drill_due_at = 0.0  # time.monotonic(); the first drill is due at start
        self._drilling = False
        self._spool_lock = SpoolLock(self.settings.spool.dir)
        self._listed = threading.Event()  # the first store listing ended (either way)
        self._holder: str | None = None  # the coordination holder, as the last probe saw it
        self._incomplete: tuple[str, ...] = ()
        self._leftover_bytes = 0

    # -- lifecycle ----------------------------------------------------------------------

    def run(self) -> int:
        """Start, loop until a stop signal (or one cycle with ``once``), stop; return exit code."""
        self._start()
        try:
            while not self.flags.stop:
                self._loop_beat = time.monotonic()
                try:
                    if self.flags.hup:
                        self.flags.hup = False
                        self.reload()
                    self.scheduler.run_pending()
                    self._notify_status()
                except Exception as exc:  # nothing may end the loop
                    self.log.error("tick failed", error=str(exc), error_type=type(exc).__name__)
                self.notifier.watchdog()
                idle = self.scheduler.idle_seconds
                time.sleep(min(TICK, max(0.05, idle if idle is not None else TICK)))
        finally:
            self._shutdown()
        # a stop signal is a clean exit; only --once reports the cycle's result
        return self.exit_code if self.once else 0

    def _start(self) -> None:
        s = self.settings
        w = self.wiring
        spool = Spool(s.spool.dir)
        spool.ensure()
        self._spool_lock.acquire("run --once" if self.once else "run")
        removed = spool.clean_partials() + sweep_pending_orphans(s.spool.dir, self.log)
        scratch.sweep(work_root(s))
        self.metrics.set_expected_interval(w.policy.expected_interval)
        # the store is listed on a thread: READY never waits for it, whatever it does
        self._spawn_probe(lambda: self._first_listing(w))
        self._update_spool_metrics()
        if s.metrics.enabled and not self.once:
            host, port = split_listen(s.metrics.listen)
            try:
                self._http = MetricsServer(host, port, self.metrics, self.health)
            except OSError as exc:
                raise AgentError(
                    f"[metrics] listen {s.metrics.listen}: cannot bind: {exc.strerror or exc}"
                ) from None
            self._http.start()
        if not self.once:
            self._start_control()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)
        self.scheduler.every(1).seconds.do(self._guarded(self._tick))
        self.scheduler.every(PROBE_EVERY).seconds.do(self._guarded(self._start_probe))
        self.scheduler.every(CATALOG_EVERY).seconds.do(self._guarded(self._start_catalog_probe))
        decision = self._decide()
        self.log.info(
            "daemon started",
            version=__version__,
            cluster=s.cluster,
            node=s.node,
            store=w.store.describe(),
            coordination=s.coordination.mode,
            interval=w.policy.interval,
            at=list(s.schedule.at),
            next_run=format_time(decision.next_at) if not decision.run else "after listing",
            spool_partials_removed=removed,
            metrics=self._http.address if self._http else None,
            drill=self._drill_mode(s),
            drill_interval=s.drill.interval or None,
        )
        self.notifier.ready(self._status_line())

    def _shutdown(self) -> None:
        self.notifier.stopping()
        begun = time.monotonic()
        grace, cancel_wait = stop_plan(self.settings.daemon.shutdown_grace)
        self.log.info("stopping", grace=grace)
        self._stop_control()
        if self.flight.busy:
            deadline = begun + grace
            self.log.info("waiting for the running backup", grace=grace)
            while self.flight.busy and time.monotonic() < deadline and not self.cancel.is_set():
                self.notifier.watchdog()
                time.sleep(0.1)
            if self.flight.busy:
                self.log.warning("cancelling the running backup (shutdown grace is over)")
                self.cancel.set()
                end = begun + grace + cancel_wait
                while self.flight.busy and time.monotonic() < end:
                    self.notifier.watchdog()
                    time.sleep(0.1)
        if self._worker is not None:
            self._worker.join(timeout=max(0.0, min(5.0, begun + STOP_BUDGET - time.monotonic())))
        if self.flight.busy:
            self.log.warning("the running work did not stop in time; exiting beside it")
        with contextlib.suppress(Exception):
            Spool(self.settings.spool.dir).clean_partials()
        if self._http is not None:
            self._http.stop()
        for w in [self.wiring, *self._retired]:
            w.close()
        self._spool_lock.release()
        self.log.info("stopped", exit_code=self.exit_code)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self.flags.signals += 1
        if self.flags.stop:
            self.cancel.set()  # a second signal: do not wait for the grace period
        self.flags.stop = True

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.flags.hup = True

    def _guarded(self, job: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                job()
            except Exception as exc:
                self.log.error("job failed", job=job.__name__, error=str(exc))

        run.__name__ = job.__name__
        return run

    # -- config reload --------------------------------------------------------------------

    def reload(self) -> bool:
        """Reload the config file; keep the running config when the new one is invalid."""
        path = self.settings.source
        try:
            new = load(path)
        except ConfigError as exc:
            self.log.error(
                "config reload failed; keeping the running config", problems=exc.problems
            )
            return False
        old = self.settings
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
            # applying the rest would leave the daemon running a config no file describes
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
            self.settings = new
            self.state.not_before = None
        self.metrics.set_expected_interval(wiring.policy.expected_interval)
        self._close_retired()
        self._spawn_probe(lambda: self._refresh_catalog(wiring))
        decision = self._decide()
        self.log.info(
            "config reloaded",
            interval=wiring.policy.interval,
            coordination=new.coordination.mode,
            next_run="now" if decision.run else format_time(decision.next_at),
        )
        self.notifier.status(self._status_line())
        return True

    def _close_retired(self) -> None:
        if self.flight.busy:
            return
        while self._retired:
            self._retired.pop().close()

    # -- ticks ----------------------------------------------------------------------------

    def _decide(self) -> scheduling.Decision:
        with self._state_lock:
            d = scheduling.decide(
                self.wiring.policy,
                self.state,
                self.clock(),
                self.settings.node,
                jitter=not self.once,
            )
        self._next_run = d.next_at if not d.run else self.clock()
        return d

    def _tick(self) -> None:
        """Once a second: flush pending uploads, start a due backup."""
        if self.once and (self._once_started or self.flight.busy):
            if self._once_started and not self.flight.busy:
                self.flags.stop = True
            return
        self._close_retired()
        if not self._listed.is_set():
            return  # nothing is decided before the store was listed once (or failed to be)
        if self._maybe_flush():
            return
        decision = self._decide()
        if not decision.run:
            if self.once:
                self.log.info("no backup due", next_run=format_time(decision.next_at))
                self._once_started = True
                return
            self._maybe_start_drill()
            return
        if self._drilling:
            return  # a due backup waits for the running drill (checked again next tick)
        if not self.flight.try_enter():
            self._cycle_end()
            self.metrics.skip("busy")
            with self._state_lock:
                scheduling.record_skip(self.wiring.policy, self.state, self.clock(), "busy")
            self.log.info("backup due but another is running; skipped", reason="busy")
            return
        self._once_started = True
        w = self.wiring
        self._worker = threading.Thread(
            target=self._scheduled_job, args=(w,), name="backup", daemon=True
        )
        self._worker.start()

    def _scheduled_job(self, w: Wiring) -> None:
        try:
            self._attempt(w, recheck=True, emit=None)
        except Exception as exc:  # already counted and logged by _attempt
            self.log.debug("scheduled backup ended without a backup", error=str(exc))
        finally:
            self.flight.leave()

    # -- one backup -----------------------------------------------------------------------

    def _attempt(self, w: Wiring, recheck: bool, emit: Emit | None) -> Manifest:
        """Run one backup with coordination; record the result; re-raise failures."""
        started_at = self.clock()
        try:
            manifest = self._backup(w, recheck, emit)
        except BackupSkipped as skip:
            self.metrics.skip(skip.reason)
            with self._state_lock:
                scheduling.record_skip(w.policy, self.state, self.clock(), skip.reason)
            self._set_last(LastResult("skipped", format_time(started_at), reason=skip.reason))
            self.log.info("backup skipped", reason=skip.reason, detail=str(skip))
            raise
        except Cancelled as exc:
            self._set_last(LastResult("cancelled", format_time(started_at), error=str(exc)))
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
            self._set_last(LastResult("failure", format_time(started_at), error=str(exc)))
            self.exit_code = 1
            self.log.error(
                "backup failed",
                error=str(exc),
                code=code,
                error_type=type(exc).__name__,
                failures_this_period=failures,
                retry_after=format_time(retry_at) if retry_at else None,
                spool_kept=bool(w.settings.spool.keep_unuploaded and self._pending_count()),
            )
            raise
        finally:
            self._update_spool_metrics()
            self._cycle_end()
        with self._state_lock:
            scheduling.record_success(self.state, manifest.created)
        self._set_last(LastResult("success", format_time(started_at), backup_id=manifest.id))
        self.exit_code = 0
        return manifest

    def _backup(self, w: Wiring, recheck: bool, emit: Emit | None) -> Manifest:
        s = w.settings
        spool = Spool(s.spool.dir)
        if s.spool.max_bytes and spool.used_bytes() > s.spool.max_bytes:
            raise BackupSkipped(
                "spool_full", f"spool holds more than [spool] max_bytes = {s.spool.max_bytes}"
            )
        newest_seen: list[datetime | None] = []

        def newest_in_store() -> datetime | None:
            newest = self._refresh_catalog(w)
            newest_seen.append(newest)
            return newest

        def is_covered(newest: datetime | None) -> bool:
            return scheduling.covered(w.policy, newest, self.clock())

        with w.coordinator.claim(
            newest_in_store if recheck else None, is_covered if recheck else None
        ) as claim:
            if claim.skip is not None:
                if newest_seen:
                    with self._state_lock:
                        scheduling.seed_newest(newest_seen[-1], self.state)
                raise BackupSkipped(claim.skip, f"backup skipped: {claim.skip} ({claim.holder})")
            begun = time.monotonic()
            self.metrics.attempt_started()
            self.log.info("backup started", coordination=s.coordination.mode, holder=claim.holder)

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
                cancel=self.cancel,
                on_stage=on_stage,
                progress=progress,
                after_verify=self._plaintext_drill_hook(w),
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
            if claim.lost:
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
            self._run_retention(w)
            self._refresh_catalog(w)
            return manifest

    def backup_now(self, emit: Emit | None = None) -> dict[str, Any]:
        """Take one backup now (the socket's request): single flight, lock, no period check."""
        if self.flags.stop:
            raise Busy("cannot back up now: the agent is shutting down")
        if not self.flight.try_enter():
            self.metrics.skip("busy")
            raise Busy("cannot back up now: another backup is running (see status)")
        try:
            return self._attempt(self.wiring, recheck=False, emit=emit).to_dict()
        finally:
            self.flight.leave()

    @contextlib.contextmanager
    def exclusive(self, what: str) -> Iterator[None]:
        """Run a socket request (verify, prune, restore, drill) on the single flight.

        It never overlaps a backup or a scheduled drill; a busy flight is a Busy reply.
        """
        if self.flags.stop:
            raise Busy(f"cannot {what} now: the agent is shutting down")
        if not self.flight.try_enter():
            raise Busy(f"cannot {what} now: a backup or drill is running (see status)")
        try:
            yield
        finally:
            self.flight.leave()

    # -- restore drills ---------------------------------------------------------------------

    def _drill_mode(self, s: Settings) -> str | None:
        """Where scheduled drills take their snapshot: "store" (an identity is configured:
        fetch and decrypt the newest backup), "spool" (the plaintext snapshot right after a
        backup), or None (drills are off)."""
        if self.once or s.drill.interval <= 0:
            return None
        return "store" if s.drill.identity_file is not None else "spool"

    def _drill_due(self) -> bool:
        return time.monotonic() >= self._drill_due_at

    def _maybe_start_drill(self) -> None:
        """Start a due drill of the newest stored backup on the single-flight worker."""
        w = self.wiring
        if self._drill_mode(w.settings) != "store" or not self._drill_due():
            return
        if self.state.newest is None or self.flags.stop:
            return  # nothing to drill yet
        if not self.flight.try_enter():
            return  # a backup (or flush) is running: the drill waits for the next tick
        self._drilling = True
        self._worker = threading.Thread(
            target=self._drill_job, args=(w,), name="drill", daemon=True
        )
        self._worker.start()

    def _drill_job(self, w: Wiring) -> None:
        try:
            identity_file = w.settings.drill.identity_file
            assert identity_file is not None
            self.log.info("restore drill started", source="store", backup="latest")
            try:
                identity, _ = read_identity({"identity_file": str(identity_file)})
                report = drill(w.settings, w.store, "latest", identity)
            except Exception as exc:  # drill() reports its own failures; this is the rest
                report = DrillReport(
                    backup_id="latest", source="store", error=f"drill failed: {exc}"
                )
            self._record_drill(w, report)
        finally:
            self._drilling = False
            self.flight.leave()

    def _plaintext_drill_hook(self, w: Wiring) -> AfterVerifyHook | None:
        """The pipeline hook that drills the verified raw snapshot when a drill is due."""
        if self._drill_mode(w.settings) != "spool":
            return None

        def hook(raw: Path, manifest: Manifest) -> None:
            if not self._drill_due():
                return
            self.log.info("restore drill started", source="spool", backup=manifest.id)
            # the pipeline verified this very file a moment ago (the manifest's fields come
            # from that check): do not read it again while the etcd lock is held
            report = drill_plaintext(raw, manifest, w.settings, source="spool", verify=False)
            self._record_drill(w, report)

        return hook

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

    def _on_socket_drill(self, result: str, kind: str) -> None:
        """A drill requested through the socket: count it and show it in the status."""
        self.metrics.record_drill(result, kind)
        self.last_drill = LastDrill(
            result=result, kind=kind, source="store", at=format_time(self.clock())
        )

    # -- pending uploads (keep_unuploaded) -------------------------------------------------

    def _pending_count(self) -> int:
        return len(Spool(self.settings.spool.dir).waiting())

    def _maybe_flush(self) -> bool:
        """Upload sealed backups left in the spool, oldest first; True when a flush started."""
        if self.flight.busy or time.monotonic() < self._next_flush:
            return False
        waiting = Spool(self.settings.spool.dir).waiting()
        if not waiting or not self.flight.try_enter():
            return False
        w = self.wiring
        self._worker = threading.Thread(
            target=self._flush_job, args=(w, waiting), name="flush", daemon=True
        )
        self._worker.start()
        return True

    def _flush_job(self, w: Wiring, waiting: list[SealedBackup]) -> None:
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
            self._update_spool_metrics()
            self.flight.leave()

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
            w.settings, w.store, cancel=self.cancel, before_publish=self._publish_check(w)
        )
        spool = Spool(w.settings.spool.dir)
        for start in sorted(by_period):
            group = by_period[start]
            candidate = group[-1] if start not in periods else None
            for sealed in group:
                if sealed is not candidate:
                    spool.discard(sealed)
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
                spool.discard(candidate)
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
        self._refresh_catalog(w)

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

    # -- probes ---------------------------------------------------------------------------

    def _start_probe(self) -> None:
        self._spawn_probe(self._probe_etcd)

    def _start_catalog_probe(self) -> None:
        self._spawn_probe(lambda: self._refresh_catalog(self.wiring))

    def _spawn_probe(self, fn: Callable[[], object]) -> None:
        if self._prober is not None and self._prober.is_alive():
            return
        self._prober = threading.Thread(target=fn, name="probe", daemon=True)
        self._prober.start()

    def _probe_etcd(self) -> None:
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
        self._update_spool_metrics()

    def _first_listing(self, w: Wiring) -> None:
        """At start, on the probe thread: sweep leftovers, learn the newest stored backup."""
        try:
            self._refresh_catalog(w, seed_state=True)
            self._sweep_multipart(w)
            self._leftover_bytes = sweep_leftovers(w.settings, self.log)
        finally:
            self._listed.set()
            self._update_spool_metrics()
        self._probe_etcd()

    def _mine(self, w: Wiring, backups: tuple[Manifest, ...]) -> tuple[Manifest, ...]:
        """The backups that cover this agent's periods, newest first."""
        if w.settings.coordination.mode == "none":
            # every node backs up for itself: only its own backups cover its periods
            return tuple(m for m in backups if m.node == w.settings.node)
        return backups

    def _list_mine(self, w: Wiring) -> tuple[Manifest, ...]:
        """A fresh listing (quick retries) of the complete backups that count for us."""
        with self._catalog_lock:  # the probe thread and the worker share the cache
            catalog = list_backups(w.lister, w.settings.cluster, cache=w.manifests)
        return self._mine(w, catalog.backups)

    def _refresh_catalog(self, w: Wiring, seed_state: bool = False) -> datetime | None:
        """Read the store's manifests: seed metrics; return the newest that counts for us."""
        try:
            with self._catalog_lock:  # the probe thread and the worker share the cache
                catalog = list_backups(w.lister, w.settings.cluster, cache=w.manifests)
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

    def _update_spool_metrics(self) -> None:
        spool = Spool(self.settings.spool.dir)
        with contextlib.suppress(Exception):
            used = spool.used_bytes() + self._leftover_bytes
            self.metrics.set_spool(used, len(spool.waiting()))

    def _sweep_multipart(self, w: Wiring) -> None:
        sweep_stale_uploads(w.store, w.settings, self.log)

    # -- retention and control -------------------------------------------------------------

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

    def _start_control(self) -> None:
        ops = Operations(
            self.settings,
            current=lambda: self.wiring.settings,  # a SIGHUP reload reaches every request
            backup=self.backup_now,
            exclusive=self.exclusive,
            status=self.status_dict,
            on_drill=self._on_socket_drill,
        )
        self._control = ControlServer(self.settings.control, ops)
        self._control.start()

    def _stop_control(self) -> None:
        if self._control is None:
            return
        try:
            self._control.stop()
        except Exception as exc:
            self.log.warning("stopping the control socket failed", error=str(exc))

    # -- status -----------------------------------------------------------------------------

    def _set_last(self, last: LastResult) -> None:
        self.last = last

    def _notify_status(self) -> None:
        """Send STATUS= once per finished cycle, from the main loop (after its decision)."""
        if self.last is not self._notified:
            self._notified = self.last
            self._decide()
            self.notifier.status(self._status_line())

    def _cycle_end(self) -> None:
        self._last_cycle_end = time.monotonic()

    def health(self) -> Health:
        return health(
            time.monotonic(),
            self._loop_beat,
            self._last_cycle_end,
            self.wiring.policy.expected_interval,
        )

    def _status_line(self) -> str:
        return self.status().status_line()

    def _drill_next_due(self, w: Wiring) -> str | None:
        if self._drill_mode(w.settings) is None:
            return None
        wait = max(0.0, self._drill_due_at - time.monotonic())
        return format_time(self.clock() + timedelta(seconds=wait))

    def status(self) -> AgentStatus:
        """What the socket's status request, STATUS= and ``etcd-backupctl status`` report."""
        w = self.wiring
        spool = Spool(w.settings.spool.dir)
        used, pending = 0, 0
        with contextlib.suppress(Exception):
            used, pending = spool.used_bytes(), len(spool.waiting())
        return AgentStatus(
            version=__version__,
            cluster=w.settings.cluster,
            node=w.settings.node,
            time=format_time(datetime.now(UTC)),
            busy=self.flight.busy,
            last=self.last,
            newest_backup=format_time(self.state.newest) if self.state.newest else None,
            next_run=format_time(self._next_run) if self._next_run else None,
            # the holder is cached by the probe thread (every PROBE_EVERY seconds)
            coordination=CoordinationStatus(w.settings.coordination.mode, self._holder),
            leader=self._leader,
            store=StoreStatus(w.store.describe(), bool(self.metrics.value("etcd_backup_store_up"))),
            drill=DrillStatus(
                self.last_drill, self._drill_mode(w.settings), self._drill_next_due(w)
            ),
            spool=SpoolStatus(used, pending, w.settings.spool.max_bytes),
            bundle=BundleStatus.of(self.metrics.last_bundle),
        )

    def status_dict(self) -> dict[str, Any]:
        return self.status().to_wire()


def stop_plan(shutdown_grace: float) -> tuple[float, float]:
    """(grace, cancel wait) in seconds: a stop never outlasts ``STOP_BUDGET``."""
    grace = max(0.0, min(shutdown_grace, STOP_BUDGET - CANCEL_RESERVE))
    return grace, STOP_BUDGET - grace - 5.0  # 5 s: the worker join after the cancel wait
