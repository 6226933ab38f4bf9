"""Benchmark: ``etcd-backup-agent verify`` vs ``etcdutl snapshot status`` on a >= 1 GB snapshot.

Starts a real etcd 3.5.1 on loopback in a temp dir, fills it with batched txn puts from
several processes, saves a snapshot with etcdctl, then times both tools (wall time and peak
RSS through /usr/bin/time), checks their JSON is identical and prints a markdown table.
Nothing is kept unless --keep is given.

usage: PYTHONPATH=agent:. python bench/bench_verify.py [--size-mb 1100] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import fill_in_workers, machine, print_timings, timed
from tests.servers import LOOPBACK, EtcdServer, etcd_bin

BATCH = 128  # etcd's default --max-txn-ops


def _fill_worker(port: int, worker: int, start: int, stop: int, value_size: int) -> None:
    import random

    import etcd3

    client = etcd3.client(host=LOOPBACK, port=port, timeout=60)
    rng = random.Random(worker)
    try:
        for first in range(start, stop, BATCH):
            ops = []
            for i in range(first, min(first + BATCH, stop)):
                size = rng.randint(value_size // 2, value_size * 3 // 2)
                key = f"/registry/bench/ns-{i % 97:02d}/obj-{i:09d}".encode()
                ops.append(client.transactions.put(key, rng.randbytes(size)))
            client.transaction(compare=[], success=ops, failure=[])
    finally:
        client.close()


def fill(server: EtcdServer, keys: int, value_size: int, workers: int) -> None:
    """Write ``keys`` keys with ~value_size random bytes each, from ``workers`` processes."""
    fill_in_workers(_fill_worker, server.client_port, keys, value_size, workers)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1100, help="target snapshot size")
    ap.add_argument("--value-size", type=int, default=1200, help="mean value size in bytes")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="keep the snapshot at this path")
    ap.add_argument("--snapshot", type=Path, help="skip generation: use this snapshot file")
    opts = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        snap = opts.snapshot
        if snap is None:
            snap = tmp / "snapshot.db"
            # Per-key overhead (rev key, KeyValue fields, page slack) is roughly 150 bytes.
            keys = opts.size_mb * 1_000_000 // (opts.value_size + 150)
            server = EtcdServer(tmp / "etcd-data").start()
            try:
                t0 = time.perf_counter()
                fill(server, keys, opts.value_size, opts.workers)
                print(f"filled {keys} keys in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
                server.ctl("snapshot", "save", str(snap))
            finally:
                server.stop()
            shutil.rmtree(tmp / "etcd-data", ignore_errors=True)
        size = snap.stat().st_size
        etcdutl = [etcd_bin("etcdutl"), "snapshot", "status", str(snap), "-w", "json"]
        ours = [sys.executable, "-m", "etcd_backup_agent.cli", "verify", str(snap), "-w", "json"]
        subprocess.run(["cat", str(snap)], stdout=subprocess.DEVNULL, check=True)  # warm cache
        rows: dict[str, list[tuple[float, int]]] = {"etcdutl": [], "verify": []}
        outputs: dict[str, dict[str, object]] = {}
        for _ in range(opts.runs):
            for name, cmd in (("etcdutl", etcdutl), ("verify", ours)):
                wall, rss, out = timed(cmd)
                rows[name].append((wall, rss))
                outputs[name] = json.loads(out)
        same = outputs["etcdutl"] == outputs["verify"]
        print(f"machine: {machine()}")
        print(f"snapshot: {size} bytes; etcdutl JSON: {json.dumps(outputs['etcdutl'])}")
        print(f"identical JSON: {same}\n")
        labels = {
            "etcdutl": "etcdutl snapshot status -w json",
            "verify": "etcd-backup-agent verify -w json",
        }
        print_timings("tool", rows, labels, opts.runs)
        ratio = min(w for w, _ in rows["verify"]) / min(w for w, _ in rows["etcdutl"])
        print(f"\nverify / etcdutl wall ratio (best runs): {ratio:.2f}")
        if opts.keep and opts.snapshot is None:
            shutil.move(str(snap), opts.keep)
        return 0 if same else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
