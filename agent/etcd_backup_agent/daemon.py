"""The daemon: the main loop, signals, threads and sd_notify around one ``Agent``.

The main thread only ticks (about once a second): it reads signal flags, runs the
``schedule`` jobs, pings the watchdog. What a tick decides runs on the agent (service.py):
scheduled backups, flushes and drills on one worker thread (sealing runs in a child
process), probes of etcd and the store on another. Signal handlers only set flags.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import FrameType

import schedule

from . import __version__
from . import log as logsetup
from .config import Settings, split_listen
from .control.server import ControlServer
from .errors import AgentError
from .manifest import format_time
from .metrics import Health, MetricsServer, health
from .sdnotify import Notifier
from .service import Agent, Job
from .status import LastResult

TICK = 1.0
PROBE_EVERY = 10
CATALOG_EVERY = 300
# Everything a stop does fits systemd's TimeoutStopSec (90 s in the shipped unit): the
# grace, then the cancellation, then the joins. The rest of the 90 s is margin.
STOP_BUDGET = 80.0
CANCEL_RESERVE = 20.0


@dataclass
class _Flags:
    stop: bool = False
    hup: bool = False
    signals: int = 0


class Daemon:
    """The long-running agent (``etcd-backup-agent run``), or one cycle with ``once``."""

    def __init__(
        self,
        settings: Settings,
        once: bool = False,
        notifier: Notifier | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.log = logsetup.get("daemon")
        self.once = once
        self.notifier = notifier or Notifier()
        self.agent = Agent(settings, clock=clock, long_running=not once)
        self.flags = _Flags()
        self.scheduler = schedule.Scheduler()
        self._worker: threading.Thread | None = None
        self._prober: threading.Thread | None = None
        self._loop_beat: float | None = None
        self._once_started = False
        self._http: MetricsServer | None = None
        self._control: ControlServer | None = None
        self._notified: LastResult | None = None

    @property
    def settings(self) -> Settings:
        return self.agent.settings

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

    @property
    def exit_code(self) -> int:
        return 1 if self.agent.last.result == "failure" else 0

    def _start(self) -> None:
        s = self.settings
        agent = self.agent
        removed = agent.open("run --once" if self.once else "run")
        # the store is listed on a thread: READY never waits for it, whatever it does
        self._spawn_probe(agent.first_listing)
        agent.update_spool_metrics()
        if s.metrics.enabled and not self.once:
            host, port = split_listen(s.metrics.listen)
            try:
                self._http = MetricsServer(host, port, agent.metrics, self.health)
            except OSError as exc:
                raise AgentError(
                    f"[metrics] listen {s.metrics.listen}: cannot bind: {exc.strerror or exc}"
                ) from None
            self._http.start()
        if not self.once:
            self._control = ControlServer(s.control, agent)
            self._control.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)
        self.scheduler.every(1).seconds.do(self._guarded(self._tick))
        self.scheduler.every(PROBE_EVERY).seconds.do(
            self._guarded(lambda: self._spawn_probe(agent.probe_etcd))
        )
        self.scheduler.every(CATALOG_EVERY).seconds.do(
            self._guarded(lambda: self._spawn_probe(agent.refresh_catalog))
        )
        decision = agent.decide(jitter=not self.once)
        policy = agent.wiring.policy
        self.log.info(
            "daemon started",
            version=__version__,
            cluster=s.cluster,
            node=s.node,
            store=agent.wiring.store.describe(),
            coordination=s.coordination.mode,
            interval=policy.interval,
            at=list(s.schedule.at),
            next_run=format_time(decision.next_at) if not decision.run else "after listing",
            spool_partials_removed=removed,
            metrics=self._http.address if self._http else None,
            drill=agent.drill_mode(s),
            drill_interval=s.drill.interval or None,
        )
        self.notifier.ready(agent.status().status_line())

    def _shutdown(self) -> None:
        self.notifier.stopping()
        agent = self.agent
        agent.stopping = True
        begun = time.monotonic()
        grace, cancel_wait = stop_plan(self.settings.daemon.shutdown_grace)
        self.log.info("stopping", grace=grace)
        self._stop_control()
        if agent.busy:
            deadline = begun + grace
            self.log.info("waiting for the running backup", grace=grace)
            while agent.busy and time.monotonic() < deadline and not agent.cancel.is_set():
                self.notifier.watchdog()
                time.sleep(0.1)
            if agent.busy:
                self.log.warning("cancelling the running backup (shutdown grace is over)")
                agent.cancel.set()
                end = begun + grace + cancel_wait
                while agent.busy and time.monotonic() < end:
                    self.notifier.watchdog()
                    time.sleep(0.1)
        if self._worker is not None:
            self._worker.join(timeout=max(0.0, min(5.0, begun + STOP_BUDGET - time.monotonic())))
        if agent.busy:
            self.log.warning("the running work did not stop in time; exiting beside it")
        if self._http is not None:
            self._http.stop()
        agent.close()
        self.log.info("stopped", exit_code=self.exit_code)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self.flags.signals += 1
        if self.flags.stop:
            self.agent.cancel.set()  # a second signal: do not wait for the grace period
        self.flags.stop = True
        self.agent.stopping = True  # requests arriving now are refused as busy

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.flags.hup = True

    def _guarded(self, job: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                job()
            except Exception as exc:
                self.log.error("job failed", job=getattr(job, "__name__", "?"), error=str(exc))

        run.__name__ = getattr(job, "__name__", "job")
        return run

    def reload(self) -> bool:
        """Reload the config file (SIGHUP); the agent keeps its config when the new one fails."""
        if not self.agent.reload():
            return False
        self._spawn_probe(self.agent.refresh_catalog)
        self.notifier.status(self.agent.status().status_line())
        return True

    # -- ticks ----------------------------------------------------------------------------

    def _tick(self) -> None:
        """Once a second: flush pending uploads, start a due backup or drill."""
        agent = self.agent
        if self.once and (self._once_started or agent.busy):
            if self._once_started and not agent.busy:
                self.flags.stop = True
            return
        agent.close_retired()
        if not agent.listed.is_set():
            return  # nothing is decided before the store was listed once (or failed to be)
        if agent.flush_due() and self._run_job("flush"):
            return
        decision = agent.decide(jitter=not self.once)
        if not decision.run:
            if self.once:
                self.log.info("no backup due", next_run=format_time(decision.next_at))
                self._once_started = True
            elif agent.drill_due():
                self._run_job("drill")  # a backup (or flush) is running: the next tick
            return
        if agent.drilling:
            return  # a due backup waits for the running drill (checked again next tick)
        if not self._run_job("backup"):
            agent.record_busy_skip()
            return
        self._once_started = True

    def _run_job(self, job: Job) -> bool:
        """Start a scheduled job on the worker thread; False when the flight is taken."""
        body = self.agent.start(job)
        if body is None:
            return False
        self._worker = threading.Thread(target=body, name=job, daemon=True)
        self._worker.start()
        return True

    def _spawn_probe(self, fn: Callable[[], object]) -> None:
        if self._prober is not None and self._prober.is_alive():
            return
        self._prober = threading.Thread(target=fn, name="probe", daemon=True)
        self._prober.start()

    def _stop_control(self) -> None:
        if self._control is None:
            return
        try:
            self._control.stop()
        except Exception as exc:
            self.log.warning("stopping the control socket failed", error=str(exc))

    # -- status -----------------------------------------------------------------------------

    def _notify_status(self) -> None:
        """Send STATUS= once per finished cycle, from the main loop (after its decision)."""
        if self.agent.last is not self._notified:
            self._notified = self.agent.last
            self.agent.decide(jitter=not self.once)
            self.notifier.status(self.agent.status().status_line())

    def health(self) -> Health:
        return health(
            time.monotonic(),
            self._loop_beat,
            self.agent.last_cycle_end,
            self.agent.wiring.policy.expected_interval,
        )


def stop_plan(shutdown_grace: float) -> tuple[float, float]:
    """(grace, cancel wait) in seconds: a stop never outlasts ``STOP_BUDGET``."""
    grace = max(0.0, min(shutdown_grace, STOP_BUDGET - CANCEL_RESERVE))
    return grace, STOP_BUDGET - grace - 5.0  # 5 s: the worker join after the cancel wait
