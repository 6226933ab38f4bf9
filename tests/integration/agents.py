"""The daemon as a real subprocess for integration tests: config, start, signals, scrape."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from etcd_backup_agent.manifest import parse_time
from tests.agent_helpers import merge, write_toml
from tests.servers import LOOPBACK, free_port, stop_process

AGENT_DIR = Path(__file__).resolve().parents[2] / "agent"


def write_config(
    path: Path,
    *,
    endpoints: list[str],
    recipient: str,
    store: Path,
    spool: Path,
    metrics_port: int,
    cluster: str = "test",
    node: str = "n1",
    interval: str = "2s",
    mode: str = "none",
    extra: str | Mapping[str, Any] = "",
    schedule_extra: str = "",
    spool_extra: str = "",
    level: int = 1,
    control_socket: Path | None = None,
    shutdown_grace: str = "1s",
    store_toml: str | Mapping[str, Any] | None = None,
) -> Path:
    """Write a complete agent config (local store unless ``store_toml``; loopback only).

    ``extra`` (tables, or TOML text), ``*_extra`` (TOML text) and ``store_toml`` (the [store]
    table, or TOML text) are merged into the tables.
    """
    sock = control_socket or path.parent / (node + ".sock")
    if isinstance(store_toml, str):
        store_table = tomllib.loads(store_toml)
    else:
        store_table = {"store": store_toml} if store_toml is not None else {}
    data: dict[str, Any] = {
        "cluster": {"name": cluster, "node": node},
        "etcd": {"endpoints": endpoints, "dial_timeout": "3s"},
        "encryption": {"recipients": [recipient]},
        "compression": {"level": level},
        "store": store_table.pop("store", {"type": "local", "path": store}),
        "spool": {"dir": spool, **tomllib.loads(spool_extra)},
        "schedule": {"interval": interval, "retry_backoff": "1s", **tomllib.loads(schedule_extra)},
        "coordination": {"mode": mode, "lock_ttl": "3s"},
        "metrics": {"listen": f"{LOOPBACK}:{metrics_port}"},
        "control": {"socket": sock},
        "daemon": {"shutdown_grace": shutdown_grace},
    }
    tables = tomllib.loads(extra) if isinstance(extra, str) else extra
    return write_toml(path, merge(merge(data, store_table), tables))


@dataclass
class Agent:
    """One ``etcd-backup-agent run`` process, stopped by its pid."""

    config: Path
    metrics_port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> Agent:
        env = {**os.environ, "PYTHONPATH": str(AGENT_DIR), **self.env}
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            if name not in self.env:
                env.pop(name, None)
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "etcd_backup_agent.cli",
                "run",
                "--config",
                str(self.config),
                "--log-format",
                "json",
                *args,
            ],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        out.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=30)

    def kill(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            assert self.proc is not None
            self.proc.wait(timeout=10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def events(self) -> list[dict[str, object]]:
        out = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def wait_log(self, event: str, timeout: float = 30.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(1 for e in self.events() if e.get("event") == event) >= count:
                return
            if not self.alive():
                raise AssertionError(f"agent exited; log:\n{self.log_text()[-3000:]}")
            time.sleep(0.1)
        tail = self.log_text()[-3000:]
        raise AssertionError(f"no {event!r} x{count} in {timeout}s; log:\n{tail}")

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}{path}"

    def scrape_text(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url("/metrics"), timeout=5) as resp:
                    return resp.read().decode()
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or not self.alive():
                    raise
                time.sleep(0.1)

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Samples by (name, sorted labels without cluster)."""
        out = {}
        for fam in text_string_to_metric_families(self.scrape_text()):
            for s in fam.samples:
                labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "cluster"))
                out[(s.name, labels)] = s.value
        return out


def new_agent(tmp_path: Path, name: str = "agent", **config: object) -> Agent:
    port = free_port()
    cfg = tmp_path / f"{name}.toml"
    write_config(cfg, metrics_port=port, **config)  # type: ignore[arg-type]
    return Agent(config=cfg, metrics_port=port, log=tmp_path / f"{name}.log")


def manifests(store: Path, cluster: str = "test") -> list[dict[str, object]]:
    d = store / cluster
    if not d.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]


def wait_for(cond: Callable[[], object], timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def backups_per_period(store: Path, interval: float) -> Counter[int]:
    """Backups per period index, from the manifests' created_at (second precision).

    Period boundaries are whole seconds, so truncating created_at to the second never
    moves a backup into another period.
    """
    return Counter(
        math.floor(parse_time(str(m["created_at"])).timestamp() / interval)
        for m in manifests(store)
    )
