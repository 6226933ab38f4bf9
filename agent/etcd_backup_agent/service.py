"""The agent: one object that owns the wiring and runs every operation.

``Agent`` holds the store, the etcd sources, the coordinator, the one ``Spool`` (and its
lock), the manifest cache and the metrics. The daemon (daemon.py: loop, signals, threads),
the socket server (control/server.py) and the offline commands (commands/) all call it, so a
backup, a prune or a drill runs the same way whoever asked.

Single flight lives here: a backup, flush, drill, verify, prune, restore or keyspace read
holds ``flight``; a second one gets ``Busy``. ``status`` and ``list`` never wait for it.

The agent is one object in three files: this one (state, lifecycle, reload, the single
flight, scheduled jobs, drills, status), service_backup.py (one backup, the flush, the
publish check, retention, the catalog) and service_requests.py (list, verify, restore,
drill, the keyspace reads, the bundle). wiring.py builds what a configuration needs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from . import __version__, scheduling, scratch
from . import log as logsetup
from .config import Settings, load
from .drill import FAILURE, DrillReport, drill, drill_plaintext
from .errors import Busy, ConfigError
from .manifest import Manifest, format_time
from .metrics import Metrics
from .pipeline import sweep_stale_uploads
from .requests import IdentityRef
from .restore.fetch import work_root
from .service_backup import BackupPath
from .service_requests import Requests
from .spool import Spool
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
from .sweep import sweep_leftovers, sweep_pending_orphans
from .wiring import Wiring

Job = Literal["backup", "flush", "drill"]


class Agent(BackupPath, Requests):
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
        self.cancel = threading.Event()  # set: the running backup stops (shutdown)
        self.wiring = Wiring.build(settings, self.cancel)
        self.spool = Spool(settings.spool.dir)  # spool.dir changes only on restart
        self.spool_lock = SpoolLock(settings.spool.dir)
        self.metrics = Metrics(
            settings.cluster, __version__, keyspace_top=settings.inspect.top_resources
        )
        # the daemon (not ``run --once``, not a command): jittered schedule, scheduled drills
        self.long_running = long_running
        self.state = scheduling.State()
        self.flight = scheduling.SingleFlight()
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
            wiring = Wiring.build(new, self.cancel)
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

    # -- restore drills ---------------------------------------------------------------------

    def _drill_job(self, w: Wiring) -> None:
        identity_file = w.settings.drill.identity_file
        assert identity_file is not None
        self.log.info("restore drill started", source="store", backup="latest")
        try:
            identity, _ = IdentityRef(str(identity_file)).read()
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
