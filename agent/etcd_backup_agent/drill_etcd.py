"""The full drill's throwaway etcd: started from the restored dir on free loopback ports,
read with the configured credentials, compared with the manifest, stopped by its pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .binaries import find_binary
from .config import EtcdSettings, Settings
from .errors import AgentError, EtcdAuthError, RestoreError, SourceError
from .etcd_source import EtcdSource, map_grpc_error
from .manifest import Manifest

if TYPE_CHECKING:  # drill.py imports this module; the report is only written to here
    from .drill import DrillReport

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def throwaway_etcd(binary: str, data_dir: Path, name: str, peer_url: str) -> Iterator[str]:
    """Run etcd from ``data_dir`` on a free loopback client port; yield its endpoint."""
    client = f"http://{LOOPBACK}:{free_port()}"
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
        f"http://{LOOPBACK}:{free_port()}",
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


def drill_etcd_settings(settings: Settings, endpoint: str) -> EtcdSettings:
    """How the drill reads its throwaway etcd: loopback, plaintext, with the configured user.

    The snapshot carries the cluster's auth state: when auth is on, the restored etcd
    knows the same users and passwords as the cluster the backup was taken from.
    """
    return EtcdSettings(
        endpoints=(endpoint,),
        username=settings.etcd.username,
        password_file=settings.etcd.password_file,
        dial_timeout=3.0,
    )


def _wait_status(etcd: EtcdSettings, timeout: float = 60.0) -> EtcdSource:
    endpoint = etcd.endpoints[0]
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        source = EtcdSource(etcd)
        try:
            source.status()
            return source
        except EtcdAuthError as exc:
            source.close()
            raise _auth_failure(exc) from None
        except Exception as exc:  # grpc errors escape EtcdSource.client() while etcd starts
            last = exc
            source.close()
            time.sleep(0.3)
    raise RestoreError(f"drill etcd at {endpoint} did not answer: {last}")


def _auth_failure(exc: SourceError) -> RestoreError:
    return RestoreError(
        f"the restored etcd refused the drill's reads: {exc}. The snapshot has auth enabled: "
        "set [etcd] username and password_file to a user of the backed-up cluster that can "
        "read every key (root)"
    )


def check_live(
    etcd: EtcdSettings, manifest: Manifest, sample_keys: int, report: DrillReport
) -> None:
    """Compare the running throwaway etcd with the manifest."""
    source = _wait_status(etcd)
    try:
        try:
            _compare_live(source, manifest, sample_keys, report)
        except AgentError:
            raise
        except Exception as exc:  # grpc/etcd3 errors of the reads themselves
            mapped = map_grpc_error(exc, etcd.endpoints[0], "reading the drill etcd")
            if isinstance(mapped, EtcdAuthError):
                raise _auth_failure(mapped) from None
            raise RestoreError(str(mapped)) from None
    finally:
        source.close()


def _compare_live(
    source: EtcdSource, manifest: Manifest, sample_keys: int, report: DrillReport
) -> None:
    status = source.status()
    report.revision = status.revision
    report.expected_revision = manifest.revision
    if status.revision != manifest.revision:
        raise RestoreError(
            f"restored etcd is at revision {status.revision}, manifest says {manifest.revision}"
        )
    report.checks.append(f"etcd: revision {status.revision} == manifest")
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
        report.checks.append(f"etcd: live key count {live} {what} manifest {manifest.total_keys}")
    if sample_keys > 0 and live > 0:
        resp = client.get_range_response(b"\0", b"\0", limit=sample_keys)
        for kv in resp.kvs:
            if kv.mod_revision > manifest.revision or kv.create_revision > kv.mod_revision:
                raise RestoreError(f"key {kv.key[:80]!r} has impossible revisions")
            report.sampled += 1
        if report.sampled == 0:
            raise RestoreError("sampled read returned no keys")
        report.checks.append(f"etcd: read {report.sampled} sample keys")
