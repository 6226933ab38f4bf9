"""Benchmark: does the daemon keep serving while it backs up a >= 1 GB database?

Starts `etcd-backup-agent run` on a generated database with an empty store (so it backs up
at once) and, for the whole backup, scrapes /metrics over HTTP and asks `status` on the
control socket in a loop. Prints the latency distribution of both during the backup: the
CPU-heavy stages must not freeze the threads that serve (sealing runs in a child process;
the verifier runs on the worker thread and yields the GIL).

Usage:  PYTHONPATH=agent .venv/bin/python bench/bench_daemon_latency.py [--size-gb 1.1]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import big_etcd, machine
from etcd_backup_agent.control.client import call
from tests.agent_helpers import agent_env, write_config
from tests.servers import free_port, stop_process


def _summary(name: str, samples: list[float]) -> str:
    if not samples:
        return f"| {name} | 0 | - | - | - |"
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"| {name} | {len(ms)} | {statistics.median(ms):.1f} ms | {p99:.1f} ms | {ms[-1]:.1f} ms |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-gb", type=float, default=1.1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        base = Path(tmp)
        print(f"generating ~{args.size_gb} GB of etcd data ...", file=sys.stderr, flush=True)
        server, _keys = big_etcd(base, int(args.size_gb * 1024**3))
        daemon = None
        try:
            key = base / "key.txt"
            subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
            recipient = subprocess.run(
                ["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True
            ).stdout.strip()
            port = free_port()
            sock = Path(tempfile.mkdtemp(prefix="eba-")) / "agent.sock"
            cfg = write_config(
                base / "c.toml",
                endpoint=server.endpoint,
                recipient=recipient,
                root=base,
                extra={
                    "schedule": {"interval": "1h"},
                    "coordination": {"mode": "none"},
                    "metrics": {"listen": f"127.0.0.1:{port}"},
                    "control": {"socket": sock},
                    "log": {"level": "warning"},
                },
            )
            daemon = subprocess.Popen(
                [sys.executable, "-m", "etcd_backup_agent.cli", "run", "--config", str(cfg)],
                env=agent_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            scrapes: list[float] = []
            statuses: list[float] = []
            started = time.monotonic()
            done = False
            while not done and time.monotonic() - started < 600:
                t0 = time.monotonic()
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/metrics", timeout=30
                    ) as resp:
                        body = resp.read().decode()
                    scrapes.append(time.monotonic() - t0)
                    done = 'etcd_backup_runs_total{cluster="test",result="success"} 1.0' in body
                except OSError:
                    time.sleep(0.05)
                    continue
                t0 = time.monotonic()
                try:
                    call(sock, "status", {}, timeout=30)
                    statuses.append(time.monotonic() - t0)
                except Exception:
                    pass
                time.sleep(0.05)
            backup_seconds = time.monotonic() - started
        finally:
            if daemon is not None:
                stop_process(daemon, timeout=60)
            server.stop()
    print(f"machine: {machine()}")
    print(f"backup (daemon start to first success): {backup_seconds:.1f} s\n")
    print("| request during the backup | count | median | p99 | max |")
    print("| --- | --- | --- | --- | --- |")
    print(_summary("GET /metrics", scrapes))
    print(_summary("socket `status`", statuses))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
