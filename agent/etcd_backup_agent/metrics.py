"""Every metric of the agent, on its own registry, and the /metrics + /healthz server."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from .bundle.record import BundleRecord
from .keyspace.metrics import KeyspaceGauges
from .manifest import Manifest

disable_created_metrics()  # type: ignore[no-untyped-call]

RESULTS = ("success", "failure")
STAGES = ("snapshot", "verify", "seal", "upload", "total")
SKIP_REASONS = ("busy", "lock_held", "already_backed_up", "not_leader", "spool_full")
DRILL_KINDS = ("native", "full")  # drill.KINDS: read back natively, or also served by etcd
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


class Metrics:
    """The agent's metrics; every series carries the ``cluster`` label."""

    def __init__(self, cluster: str, version: str, keyspace_top: int = 20) -> None:
        self.cluster = cluster
        self._last_success = 0.0
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        c = ("cluster",)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = c) -> Gauge:
            return Gauge(name, doc, labels, registry=r)

        def counter(name: str, doc: str, labels: tuple[str, ...] = c) -> Counter:
            return Counter(name, doc, labels, registry=r)

        self.last_success = gauge(
            "etcd_backup_last_success_timestamp_seconds",
            "Creation time of the newest backup known to be stored (Unix seconds).",
        )
        self.last_attempt = gauge(
            "etcd_backup_last_attempt_timestamp_seconds",
            "Start time of this agent's last backup attempt (Unix seconds).",
        )
        self.expected_interval = gauge(
            "etcd_backup_expected_interval_seconds",
            "Longest expected time between two backups (schedule interval or widest at-gap).",
        )
        self.runs = counter(
            "etcd_backup_runs", "Backup attempts by this agent, by result.", (*c, "result")
        )
        self.duration = Histogram(
            "etcd_backup_duration_seconds",
            "Duration of backup stages (snapshot, verify, seal, upload) and the total.",
            (*c, "stage"),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.snapshot_size = gauge(
            "etcd_backup_snapshot_size_bytes", "Size of the last snapshot (etcd db bytes)."
        )
        self.stored_size = gauge(
            "etcd_backup_stored_size_bytes", "Size of the last stored object (sealed bytes)."
        )
        self.revision = gauge("etcd_backup_snapshot_revision", "etcd revision of the last backup.")
        self.keys = gauge("etcd_backup_snapshot_keys", "Number of keys in the last backup.")
        self.verification_failures = counter(
            "etcd_backup_verification_failures",
            "Snapshots that failed the trailer check or native verification (never uploaded).",
        )
        self.retention_deleted = counter(
            "etcd_backup_retention_deleted", "Backups deleted by retention."
        )
        self.retention_runs = counter(
            "etcd_backup_retention_runs", "Retention runs, by result.", (*c, "result")
        )
        self.retention_last_success = gauge(
            "etcd_backup_retention_last_success_timestamp_seconds",
            "Time of the last successful retention run (Unix seconds).",
        )
        self.stored_backups = gauge(
            "etcd_backup_stored_backups", "Backups (manifests) of this cluster in the store."
        )
        self.oldest = gauge(
            "etcd_backup_oldest_backup_timestamp_seconds",
            "Creation time of the oldest stored backup (Unix seconds).",
        )
        self.store_up = gauge("etcd_backup_store_up", "1 when the last store operation worked.")
        self.etcd_up = gauge("etcd_backup_etcd_up", "1 when the local etcd answered its status.")
        self.is_leader = gauge(
            "etcd_backup_is_leader", "1 when the local etcd member is the raft leader."
        )
        self.skipped = counter(
            "etcd_backup_skipped_runs",
            "Due backups this agent did not take, by reason.",
            (*c, "reason"),
        )
        self.build_info = gauge(
            "etcd_backup_build_info", "Agent version (always 1).", (*c, "version")
        )
        self.drill_last_success = gauge(
            "etcd_backup_drill_last_success_timestamp_seconds",
            "Time of the last successful restore drill (Unix seconds).",
        )
        self.drills = counter(
            "etcd_backup_drills", "Restore drills, by result and kind.", (*c, "result", "kind")
        )
        self.spool_bytes = gauge("etcd_backup_spool_bytes", "Bytes in the spool directory.")
        self.pending_uploads = gauge(
            "etcd_backup_pending_uploads", "Sealed backups in the spool waiting for the store."
        )
        self.incomplete_backups = gauge(
            "etcd_backup_incomplete_backups",
            "Manifests in the store whose object is missing or has another size (not backups).",
        )

        self.keyspace = KeyspaceGauges(r, cluster, keyspace_top)

        self.build_info.labels(cluster, version).set(1)
        for result in RESULTS:
            self.runs.labels(cluster, result)
            self.retention_runs.labels(cluster, result)
            for kind in DRILL_KINDS:
                self.drills.labels(cluster, result, kind)
        for stage in STAGES:
            self.duration.labels(cluster, stage)
        for reason in SKIP_REASONS:
            self.skipped.labels(cluster, reason)
        for g in (
            self.last_success,
            self.last_attempt,
            self.expected_interval,
            self.snapshot_size,
            self.stored_size,
            self.revision,
            self.keys,
            self.retention_last_success,
            self.stored_backups,
            self.oldest,
            self.store_up,
            self.etcd_up,
            self.is_leader,
            self.drill_last_success,
            self.spool_bytes,
            self.pending_uploads,
            self.incomplete_backups,
        ):
            g.labels(cluster)
        self.verification_failures.labels(cluster)
        self.retention_deleted.labels(cluster)

        # the control-plane bundle of the newest backup this agent stored (bundle/)
        self.last_bundle: BundleRecord | None = None
        self.bundle_failed = gauge(
            "etcd_backup_bundle_failed",
            "1 when the last backup's control-plane bundle failed (snapshot stored without it).",
        )
        self.bundle_encryption_config_missing = gauge(
            "etcd_backup_bundle_encryption_config_missing",
            "1 when kube-apiserver's encryption config is not in the last backup's bundle.",
        )
        self.bundle_warnings = gauge(
            "etcd_backup_bundle_warnings", "Warnings of the last backup's control-plane bundle."
        )
        for g in (self.bundle_failed, self.bundle_encryption_config_missing, self.bundle_warnings):
            g.labels(cluster)

    # -- recording ----------------------------------------------------------------------

    def _g(self, g: Gauge) -> Gauge:
        return g.labels(self.cluster)

    def set_expected_interval(self, seconds: float) -> None:
        self._g(self.expected_interval).set(seconds)

    def attempt_started(self, when: float | None = None) -> None:
        self._g(self.last_attempt).set(time.time() if when is None else when)

    def stage(self, name: str, seconds: float) -> None:
        if name in STAGES:
            self.duration.labels(self.cluster, name).observe(seconds)

    def success(self, manifest: Manifest, total_seconds: float | None) -> None:
        """Record a stored backup (taken now, or uploaded later from the spool)."""
        self.runs.labels(self.cluster, "success").inc()
        if total_seconds is not None:
            self.duration.labels(self.cluster, "total").observe(total_seconds)
        self.stored(manifest)
        self._g(self.snapshot_size).set(manifest.db_size)
        self._g(self.stored_size).set(manifest.object_size)
        self._g(self.revision).set(manifest.revision)
        if manifest.total_keys is not None:
            self._g(self.keys).set(manifest.total_keys)
        self.keyspace.update(manifest.keyspace)
        self._g(self.store_up).set(1)
        if manifest.bundle is not None:
            self._set_bundle(manifest.bundle)

    def _set_bundle(self, rec: BundleRecord) -> None:
        self.last_bundle = rec
        self._g(self.bundle_failed).set(0 if rec.status == "ok" else 1)
        self._g(self.bundle_encryption_config_missing).set(int(rec.encryption_config_lost))
        self._g(self.bundle_warnings).set(len(rec.warnings))

    def stored(self, manifest: Manifest) -> None:
        self._newer_success(manifest.created.timestamp())

    def _newer_success(self, ts: float) -> None:
        if ts > self._last_success:
            self._last_success = ts
            self._g(self.last_success).set(ts)

    def failure(self, verification: bool = False) -> None:
        self.runs.labels(self.cluster, "failure").inc()
        if verification:
            self.verification_failures.labels(self.cluster).inc()

    def skip(self, reason: str) -> None:
        self.skipped.labels(self.cluster, reason).inc()

    def seed(self, backups: Iterable[Manifest]) -> None:
        """Set last success, count and oldest from the store's manifests."""
        backups = list(backups)
        times = [m.created.timestamp() for m in backups]
        if backups:
            newest = max(backups, key=lambda m: m.created_at)
            self.keyspace.update(newest.keyspace)
            if self.last_bundle is None and newest.bundle is not None:
                # after a restart, until this process stores a backup: the bundle gauges
                # (and the alert on a missing encryption config) must not fall back to 0
                self._set_bundle(newest.bundle)
        self._g(self.stored_backups).set(len(times))
        if times:
            self._g(self.oldest).set(min(times))
            self._newer_success(max(times))

    def set_incomplete(self, count: int) -> None:
        self._g(self.incomplete_backups).set(count)

    def set_up(self, store: bool | None = None, etcd: bool | None = None) -> None:
        if store is not None:
            self._g(self.store_up).set(1 if store else 0)
        if etcd is not None:
            self._g(self.etcd_up).set(1 if etcd else 0)

    def set_leader(self, leader: bool) -> None:
        self._g(self.is_leader).set(1 if leader else 0)

    def set_spool(self, used: int, pending: int) -> None:
        self._g(self.spool_bytes).set(used)
        self._g(self.pending_uploads).set(pending)

    def retention(self, ok: bool, deleted: int = 0) -> None:
        self.retention_runs.labels(self.cluster, "success" if ok else "failure").inc()
        if ok:
            self.retention_deleted.labels(self.cluster).inc(deleted)
            self._g(self.retention_last_success).set(time.time())

    def record_drill(self, result: str, kind: str) -> None:
        """Count a restore drill ("success"/"failure", "native"/"full")."""
        result = "success" if result in ("success", "ok", "passed") else "failure"
        self.drills.labels(self.cluster, result, kind).inc()
        if result == "success":
            self._g(self.drill_last_success).set(time.time())

    def value(self, name: str, **labels: str) -> float | None:
        """Read one sample (tests and status)."""
        got = self.registry.get_sample_value(name, {"cluster": self.cluster, **labels})
        return None if got is None else float(got)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# -- /healthz ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    ok: bool
    reason: str


def health(
    now: float,
    loop_beat: float | None,
    last_cycle_end: float,
    expected_interval: float,
    loop_timeout: float = 30.0,
) -> Health:
    """Healthy while the main loop beats and the last cycle ended < 2 intervals ago.

    All times are monotonic seconds; ``last_cycle_end`` is the daemon's start until a
    first cycle (backup attempt or skip) ends.
    """
    if loop_beat is None or now - loop_beat > loop_timeout:
        return Health(False, "main loop is not running")
    age = now - last_cycle_end
    if age >= 2 * expected_interval:
        return Health(False, f"last backup cycle ended {age:.0f}s ago (> 2 intervals)")
    return Health(True, "ok")


class _HTTPServer6(ThreadingHTTPServer):
    """The same server on an IPv6 address (``listen = "[::1]:9471"``)."""

    address_family = socket.AF_INET6


class MetricsServer:
    """A small threaded HTTP server for /metrics and /healthz on one listen address."""

    def __init__(
        self, host: str, port: int, metrics: Metrics, health_check: Callable[[], Health]
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, outer.metrics.exposition(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    h = outer.health_check()
                    body = json.dumps({"ok": h.ok, "reason": h.reason}).encode() + b"\n"
                    self._reply(200 if h.ok else 503, body, "application/json")
                else:
                    self._reply(404, b"not found: try /metrics or /healthz\n", "text/plain")

            def _reply(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.metrics = metrics
        self.health_check = health_check
        server_class = _HTTPServer6 if ":" in host else ThreadingHTTPServer
        self.httpd = server_class((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
