"""Benchmark: ``etcd-backup-agent inspect --snapshot`` against ``verify`` on a >= 1 GB snapshot.

Generates (once) a Kubernetes-like database with a real etcd 3.5.1 on loopback: JSON
configmaps, protobuf-envelope pods, encrypted secrets, and leases/events rewritten and
deleted so the snapshot carries history and tombstones. The snapshot is cached outside
the repository (default /var/tmp/etcd-backup-agent-bench/inspect.db) and reused. Then
times ``verify FILE -w json`` and ``inspect --snapshot FILE --json`` (best and median of
--runs, peak RSS through /usr/bin/time) and prints a markdown table with the ratio.

usage: PYTHONPATH=agent:. python bench/bench_inspect.py [--size-mb 1100] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import fill_in_workers, machine, print_timings, timed
from tests.servers import LOOPBACK, EtcdServer

BATCH = 128
CACHE = Path("/var/tmp/etcd-backup-agent-bench/inspect.db")


def _value(rng: object, i: int, size: int) -> tuple[str, bytes]:
    import random

    assert isinstance(rng, random.Random)
    kind = i % 10
    ns = f"ns-{i % 211:03d}"
    if kind < 5:
        body = rng.randbytes(size // 2).hex()[:size]
        return f"/registry/configmaps/{ns}/cm-{i:09d}", (
            f'{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cm-{i}"}},'
            f'"data":{{"v":"{body}"}}}}'
        ).encode()
    if kind < 8:
        return f"/registry/pods/{ns}/pod-{i:09d}", b"k8s\x00\n\x0b\n\x02v1\x12\x03Pod\x12" + (
            rng.randbytes(size)
        )
    if kind < 9:
        return f"/registry/secrets/{ns}/s-{i:09d}", b"k8s:enc:aescbc:v1:key1:" + rng.randbytes(
            size // 2
        )
    return f"/registry/example.com/widgets/{ns}/w-{i:09d}", b'{"kind":"Widget","spec":"%s"}' % (
        rng.randbytes(size // 4).hex().encode()
    )


def _fill_worker(port: int, worker: int, start: int, stop: int, value_size: int) -> None:
    import random

    import etcd3

    client = etcd3.client(host=LOOPBACK, port=port, timeout=60)
    rng = random.Random(worker)
    try:
        for first in range(start, stop, BATCH):
            ops = []
            for i in range(first, min(first + BATCH, stop)):
                key, value = _value(rng, i, rng.randint(value_size // 2, value_size * 3 // 2))
                ops.append(client.transactions.put(key, value))
            client.transaction(compare=[], success=ops, failure=[])
            # history: leases renewed and events that come and go
            ops = []
            for j in range(8):
                ops.append(
                    client.transactions.put(
                        f"/registry/leases/kube-node-lease/node-{(first + j) % 300}",
                        rng.randbytes(300),
                    )
                )
            client.transaction(compare=[], success=ops, failure=[])
            if first % (BATCH * 4) == 0:
                ev = f"/registry/events/ns-{first % 211:03d}/ev-{first}"
                client.put(ev, rng.randbytes(400))
                if first % (BATCH * 8) == 0:
                    client.delete(ev)
    finally:
        client.close()


def generate(path: Path, size_mb: int, value_size: int, workers: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-inspect-", dir=path.parent))
    try:
        keys = size_mb * 1_000_000 // (value_size + 260)
        server = EtcdServer(tmp / "etcd-data").start()
        try:
            t0 = time.perf_counter()
            fill_in_workers(_fill_worker, server.client_port, keys, value_size, workers)
            print(f"filled {keys} keys in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            part = path.with_name(path.name + ".part")
            server.ctl("snapshot", "save", str(part))
            os.replace(part, path)
        finally:
            server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1100, help="target snapshot size")
    ap.add_argument("--value-size", type=int, default=1200, help="mean value size in bytes")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--snapshot", type=Path, default=CACHE, help="cached snapshot (made if absent)")
    ap.add_argument("--regenerate", action="store_true", help="make the snapshot again")
    opts = ap.parse_args()
    snap: Path = opts.snapshot
    snap.parent.mkdir(parents=True, exist_ok=True)
    if opts.regenerate or not snap.is_file():
        generate(snap, opts.size_mb, opts.value_size, opts.workers)
    cli = [sys.executable, "-m", "etcd_backup_agent.cli"]
    verify = [*cli, "verify", str(snap), "-w", "json"]
    inspect = [*cli, "inspect", "--snapshot", str(snap), "--json"]
    subprocess.run(["cat", str(snap)], stdout=subprocess.DEVNULL, check=True)  # warm cache
    rows: dict[str, list[tuple[float, int]]] = {"verify": [], "inspect": []}
    report: dict[str, object] = {}
    for _ in range(opts.runs):
        for name, cmd in (("verify", verify), ("inspect", inspect)):
            wall, rss, out = timed(cmd)
            rows[name].append((wall, rss))
            if name == "inspect":
                report = json.loads(out)
    print(f"machine: {machine()} (shared with other jobs)")
    print(
        f"snapshot: {snap.stat().st_size} bytes, {report.get('revisions')} revisions, "
        f"{report.get('objects')} live objects, {report.get('tombstones')} tombstones, "
        f"{len(report.get('resources', []))} resources, spilled {report.get('spilled_bytes')} B\n"  # type: ignore[arg-type]
    )
    labels = {
        "verify": "etcd-backup-agent verify FILE -w json",
        "inspect": "etcd-backup-agent inspect --snapshot FILE --json",
    }
    print_timings("command", rows, labels, opts.runs)
    ratio = min(w for w, _ in rows["inspect"]) / min(w for w, _ in rows["verify"])
    print(f"\ninspect / verify wall ratio (best runs): {ratio:.2f} (target <= 2)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
