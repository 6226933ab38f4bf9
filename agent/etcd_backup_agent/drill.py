"""Restore drill: prove a backup restores by starting a throwaway etcd from it.

Checks, in order: the snapshot matches its manifest (sha256, native verification:
revision, hash and bbolt key count); etcdutl restores it; a throwaway etcd on free
loopback ports starts from it; its revision (status header) equals the manifest's; its
live key count is plausible (3.6 rules: equal to the manifest's key count; 3.5 rules,
where the manifest counts every bbolt pair of every bucket: between 1 and that count
when the key bucket is not empty); and a sample of keys reads back. The etcd is stopped
by its pid and every file the drill made is removed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import log as logsetup
from .binaries import find_binary
from .bundle.check import verify_bundle
from .config import EtcdSettings, Settings
from .errors import AgentError, RestoreError
from .etcd_source import EtcdSource
from .manifest import Manifest
from .restore import (
    Emit,
    MemberSpec,
    check_plaintext,
    fetch_and_check,
    find_etcdutl,
    no_emit,
    note,
    resolve_backup,
    run_etcdutl,
    scratch_dir,
    verify_against_manifest,
)
from .store.base import Store

SUCCESS = "success"
FAILURE = "failure"
OnDrill = Callable[[str, str], None]
LOOPBACK = "127.0.0.1"


@dataclass
class DrillReport:
    """The outcome of one drill; ``result`` is "success" or "failure"."""

    backup_id: str
    kind: str
    result: str = FAILURE
    revision: int | None = None
    expected_revision: int | None = None
    live_keys: int | None = None
    manifest_keys: int | None = None
    sampled: int = 0
    seconds: float = 0.0
    checks: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def throwaway_etcd(binary: str, data_dir: Path, name: str, peer_url: str) -> Iterator[str]:
    """Run etcd from ``data_dir`` on a free loopback client port; yield its endpoint."""
    client = f"http://{LOOPBACK}:{_free_port()}"
    argv = [
        find_binary(binary) or binary,
        "--name",
        name,
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer_url,
        "--initial-advertise-peer-urls",
        peer_url,
        "--initial-cluster",
        f"{name}={peer_url}",
        "--listen-metrics-urls",
        f"http://{LOOPBACK}:{_free_port()}",
        "--log-level",
        "warn",
    ]
    log_path = data_dir.parent / "etcd.log"
    with log_path.open("ab") as log:
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise RestoreError(f"cannot start drill etcd {binary!r}: {exc}") from None
    try:
        yield client
        if proc.poll() is not None:
            raise RestoreError(f"drill etcd exited early: {_tail(log_path)}")
    finally:
        _stop(proc)


def _tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-3:])
    return ""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def _wait_status(endpoint: str, timeout: float = 60.0) -> EtcdSource:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        source = EtcdSource(EtcdSettings(endpoints=(endpoint,), dial_timeout=3.0))
        try:
            source.status()
            return source
        except Exception as exc:  # grpc errors escape EtcdSource.client() while etcd starts
            last = exc
            source.close()
            time.sleep(0.3)
    raise RestoreError(f"drill etcd at {endpoint} did not answer: {last}")


def check_live(endpoint: str, manifest: Manifest, sample_keys: int, report: DrillReport) -> None:
    """Compare the running throwaway etcd with the manifest."""
    source = _wait_status(endpoint)
    try:
        status = source.status()
        report.revision = status.revision
        report.expected_revision = manifest.revision
        if status.revision != manifest.revision:
            raise RestoreError(
                f"restored etcd is at revision {status.revision}, manifest says {manifest.revision}"
            )
        report.checks.append(f"revision {status.revision} == manifest")
        client: Any = source.client()
        resp = client.get_range_response(b"\0", b"\0", count_only=True)
        live = int(resp.count)
        report.live_keys = live
        report.manifest_keys = manifest.total_keys
        if manifest.total_keys is not None:
            if manifest.status_rules == "3.6":
                ok = live == manifest.total_keys
                what = "equals"
            else:
                ok = live <= manifest.total_keys and (live > 0 or manifest.revision <= 1)
                what = "is within"
            if not ok:
                raise RestoreError(
                    f"restored etcd serves {live} keys; manifest key count "
                    f"{manifest.total_keys} ({manifest.status_rules or '3.5'} rules)"
                )
            report.checks.append(f"live key count {live} {what} manifest {manifest.total_keys}")
        if sample_keys > 0 and live > 0:
            resp = client.get_range_response(b"\0", b"\0", limit=sample_keys)
            for kv in resp.kvs:
                if kv.mod_revision > manifest.revision or kv.create_revision > kv.mod_revision:
                    raise RestoreError(f"key {kv.key[:80]!r} has impossible revisions")
                report.sampled += 1
            if report.sampled == 0:
                raise RestoreError("sampled read returned no keys")
            report.checks.append(f"read {report.sampled} sample keys")
    finally:
        source.close()


def drill_plaintext(
    snapshot_path: Path,
    manifest: Manifest,
    settings: Settings | None = None,
    *,
    emit: Emit = no_emit,
    kind: str = "plaintext",
    verify: bool = True,
) -> DrillReport:
    """Drill a plaintext snapshot (db + trailer) described by ``manifest``; never raises for
    drill failures: the report says "failure" and why."""
    settings = settings or Settings()
    report = DrillReport(backup_id=manifest.id, kind=kind)
    started = time.monotonic()
    log = logsetup.get("drill")
    try:
        if verify:
            check_plaintext(snapshot_path, manifest, emit)
            verify_against_manifest(snapshot_path, manifest)
            report.checks.append("sha256 and native verification match the manifest")
        etcdutl = find_etcdutl(settings.restore.etcdutl)
        with scratch_dir(settings, "drill-") as scratch:
            peer = f"http://{LOOPBACK}:{_free_port()}"
            spec = MemberSpec(
                data_dir=scratch / "data",
                name="drill",
                initial_advertise_peer_urls=peer,
                initial_cluster_token=f"drill-{os.getpid()}",
            )
            run_etcdutl(etcdutl, snapshot_path, spec, emit)
            report.checks.append(f"etcdutl {etcdutl.version_text} restored the snapshot")
            note(emit, "starting a throwaway etcd on loopback")
            with throwaway_etcd(settings.drill.etcd, spec.data_dir, "drill", peer) as endpoint:
                check_live(endpoint, manifest, settings.drill.sample_keys, report)
        report.result = SUCCESS
    except AgentError as exc:
        report.error = str(exc)
    except OSError as exc:
        report.error = f"drill failed: {exc}"
    report.seconds = round(time.monotonic() - started, 2)
    if report.result == SUCCESS:
        log.info("drill passed", backup=manifest.id, kind=kind, seconds=report.seconds)
    else:
        log.error("drill FAILED", backup=manifest.id, kind=kind, error=report.error)
    return report


def drill(
    settings: Settings,
    store: Store,
    backup: str,
    identity_text: str,
    emit: Emit = no_emit,
    on_drill: OnDrill | None = None,
) -> DrillReport:
    """Full drill: fetch, check and decrypt ``backup`` then drill it; call ``on_drill``."""
    try:
        manifest = resolve_backup(settings, store, backup)
    except AgentError as exc:
        report = DrillReport(backup_id=backup, kind="full", error=str(exc))
        if on_drill is not None:
            on_drill(FAILURE, "full")
        return report
    try:
        with scratch_dir(settings, "drillfetch-") as scratch:
            checked = fetch_and_check(store, manifest, identity_text, scratch, emit)
            report = drill_plaintext(
                checked.path, manifest, settings, emit=emit, kind="full", verify=False
            )
            report.checks.insert(0, "object sha256, snapshot sha256 and native verification ok")
            bundle, files = verify_bundle(store, manifest, identity_text, emit)
            if bundle == "ok":
                report.checks.append(f"bundle sha256 and file list ok ({files} entries)")
    except AgentError as exc:
        logsetup.get("drill").error("drill FAILED", backup=manifest.id, kind="full", error=str(exc))
        report = DrillReport(backup_id=manifest.id, kind="full", error=str(exc))
    if on_drill is not None:
        on_drill(report.result, "full")
    return report
