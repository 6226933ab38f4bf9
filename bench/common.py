"""Shared bench helpers: generate a large etcd database, measure a command's tree RSS."""

from __future__ import annotations

import multiprocessing
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.servers import EtcdServer  # noqa: E402


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{os.cpu_count()} cores, {cpu}, {mem:.0f} GiB RAM, Python {platform.python_version()}"


def fill(
    server: EtcdServer, target_bytes: int, value_size: int = 1300, batch: int = 1000, seed: int = 7
) -> int:
    """Write Kubernetes-like keys (semi-compressible JSON-ish values) until the db is big."""
    import etcd3

    rng = random.Random(seed)
    client = etcd3.client(host="127.0.0.1", port=server.client_port, timeout=120)
    words = [rng.randbytes(6).hex() for _ in range(2000)]
    written = 0
    i = 0
    try:
        while written < target_bytes:
            ops = []
            for _ in range(batch):
                body = " ".join(rng.choice(words) for _ in range(value_size // 13))
                value = ('{"kind":"ConfigMap","data":{"v":"' + body + '"}}').encode()
                key = f"/registry/configmaps/ns{i % 500}/cm-{i:08d}"
                ops.append(client.transactions.put(key, value))
                written += len(value) + len(key)
                i += 1
            client.transaction(compare=[], success=ops, failure=[])
    finally:
        client.close()
    return i


def big_etcd(base: Path, target_bytes: int) -> tuple[EtcdServer, int]:
    server = EtcdServer(
        base / "etcd-data",
        extra_args=["--max-txn-ops", "100000", "--max-request-bytes", str(64 * 1024 * 1024)],
    ).start()
    keys = fill(server, target_bytes)
    return server, keys


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def _tree_rss_kb(root: int) -> int:
    """Sum of VmRSS of ``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            status = (d / "status").read_text()
        except OSError:
            continue
        ppid = 0
        for line in status.splitlines():
            if line.startswith("PPid:"):
                ppid = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss[int(d.name)] = int(line.split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measure(cmd: list[str], env: dict[str, str] | None = None) -> Run:
    """Run ``cmd``; wall time and peak RSS of its whole process tree (sampled every 20 ms)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss_kb(proc.pid))
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate()
    seconds = time.monotonic() - start
    stop.set()
    t.join()
    return Run(seconds, peak / 1024, proc.returncode, out, err)


def fill_in_workers(
    worker: Callable[[int, int, int, int, int], None],
    port: int,
    keys: int,
    value_size: int,
    workers: int,
) -> None:
    """Run ``worker(port, index, first_key, stop_key, value_size)`` in ``workers`` processes,
    splitting ``keys`` between them; raise if one fails."""
    per = (keys + workers - 1) // workers
    procs = []
    for w in range(workers):
        args = (port, w, w * per, min(keys, (w + 1) * per), value_size)
        p = multiprocessing.Process(target=worker, args=args)
        p.start()
        procs.append(p)
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"fill worker exited with {p.exitcode}")


def timed(cmd: list[str]) -> tuple[float, int, str]:
    """Run ``cmd`` under /usr/bin/time: (wall seconds, peak RSS kB, stdout)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t0 = time.perf_counter()
        r = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", tf.name, *cmd],
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {r.stderr[-2000:]}")
        rss_kb = int(Path(tf.name).read_text().strip().splitlines()[-1])
    return wall, rss_kb, r.stdout


def print_timings(
    what: str, rows: dict[str, list[tuple[float, int]]], labels: dict[str, str], runs: int
) -> None:
    """A markdown table: per command, best and median wall time and peak RSS of ``runs``."""
    print(f"| {what} | wall s (best of {runs}) | wall s (median) | peak RSS MB |")
    print("|---|---|---|---|")
    for name, label in labels.items():
        walls = sorted(w for w, _ in rows[name])
        rss = max(r for _, r in rows[name]) / 1024
        print(f"| {label} | {walls[0]:.2f} | {walls[len(walls) // 2]:.2f} | {rss:.0f} |")
