"""Benchmark: the native db step (``write_db``) vs ``etcdutl snapshot restore`` on >= 1 GB.

Generates a snapshot once with a real etcd 3.5.1 on loopback (batched txn puts from several
processes, then deletes and a compaction so the file holds free pages, as real ones do) and
caches it outside the repository. Each run restores it with etcdutl, then writes
``member/snap/db`` natively in a child process with the same members and consistent index;
both run under /usr/bin/time (wall time, peak RSS) on a warm page cache, and
``etcdutl snapshot status`` of the two dbs must agree in hash, revision, totalKey, totalSize.

etcdutl's time includes the WAL and .snap files (a few KB, negligible next to the db copy,
its sha256 check and its four bbolt opens).

usage: PYTHONPATH=agent:. python bench/bench_native_db.py [--size-mb 1100] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_verify import fill
from bench.common import machine, timed
from tests.servers import EtcdServer, etcd_bin

CACHE = Path("/var/tmp/eba-bench-native-db")


def generate(path: Path, size_mb: int, value_size: int, workers: int) -> None:
    import etcd3

    tmp = Path(tempfile.mkdtemp(prefix="bench-native-db-", dir=path.parent))
    try:
        keys = size_mb * 1_000_000 // (value_size + 150)
        server = EtcdServer(tmp / "etcd-data").start()
        try:
            t0 = time.perf_counter()
            fill(server, keys, value_size, workers)
            client = etcd3.client(host="127.0.0.1", port=server.client_port, timeout=120)
            try:
                # Churn: delete a slice of the keys and compact, leaving free pages behind.
                client.delete_prefix("/registry/bench/ns-07/")
                client.delete_prefix("/registry/bench/ns-42/")
                header = json.loads(server.ctl("get", "x", "-w", "json").stdout)["header"]
                client.compact(int(header["revision"]), physical=True)
            finally:
                client.close()
            print(f"filled {keys} keys in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            server.ctl("snapshot", "save", str(tmp / "snapshot.db"))
        finally:
            server.stop()
        (tmp / "snapshot.db").rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def native_child(snapshot: Path, out: Path, ref_db: Path) -> int:
    """Run write_db with the members and consistent index etcdutl wrote (this child process
    is what /usr/bin/time measures; reading those few keys first is part of it)."""
    from etcd_backup_agent.datadir.bolt_write import BoltWriter
    from etcd_backup_agent.datadir.db import DbRewrite, write_db

    with BoltWriter(ref_db) as w:
        tx = w.begin()
        members, meta = tx.bucket(b"members"), tx.bucket(b"meta")
        assert members is not None and meta is not None
        ci, term = meta.get(b"consistent_index"), meta.get(b"term")
        assert ci is not None and term is not None
        rewrite = DbRewrite(
            list(members.items()), struct.unpack(">Q", ci)[0], struct.unpack(">Q", term)[0]
        )
    t0 = time.perf_counter()
    result = write_db(snapshot, out, rewrite)
    print(json.dumps({"seconds": time.perf_counter() - t0, "size": result.size}))
    return 0


def status(db: Path) -> dict[str, int]:
    r = subprocess.run(
        [etcd_bin("etcdutl"), "snapshot", "status", str(db), "-w", "json"],
        capture_output=True,
        check=True,
    )
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--native-child":
        return native_child(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1100, help="target snapshot size")
    ap.add_argument("--value-size", type=int, default=1200, help="mean value size in bytes")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=CACHE, help="where the snapshot is kept")
    opts = ap.parse_args()

    opts.cache.mkdir(parents=True, exist_ok=True)
    snap = opts.cache / f"snapshot-{opts.size_mb}mb.db"
    if not snap.exists():
        generate(snap, opts.size_mb, opts.value_size, opts.workers)
    subprocess.run(["cat", str(snap)], stdout=subprocess.DEVNULL, check=True)  # warm cache
    rows: dict[str, list[tuple[float, int]]] = {"etcdutl": [], "native": []}
    same = True
    for _ in range(opts.runs):
        work = Path(tempfile.mkdtemp(prefix="run-", dir=opts.cache))
        try:
            peer = "http://127.0.0.1:2380"
            wall, rss, _ = timed(
                [
                    etcd_bin("etcdutl"),
                    "snapshot",
                    "restore",
                    str(snap),
                    "--data-dir",
                    str(work / "ref"),
                    "--name",
                    "bench",
                    "--initial-cluster",
                    f"bench={peer}",
                    "--initial-advertise-peer-urls",
                    peer,
                ]
            )
            rows["etcdutl"].append((wall, rss))
            ref_db = work / "ref" / "member" / "snap" / "db"
            out = work / "native-db"
            script = Path(__file__).resolve()
            wall, rss, _ = timed(
                [sys.executable, str(script), "--native-child", str(snap), str(out), str(ref_db)]
            )
            rows["native"].append((wall, rss))
            a, b = status(ref_db), status(out)
            same = same and a == b
            print(f"etcdutl {a}\nnative  {b}", file=sys.stderr)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {machine()} (shared with other jobs)")
    print(f"snapshot: {snap.stat().st_size} bytes; identical status: {same}\n")
    print(f"| step | wall s (best of {opts.runs}) | wall s (median) | peak RSS MB |")
    print("|---|---|---|---|")
    for name, label in (
        ("etcdutl", "etcdutl snapshot restore (3.5.1)"),
        ("native", "write_db (native db step)"),
    ):
        walls = sorted(w for w, _ in rows[name])
        peak = max(r for _, r in rows[name]) / 1024
        print(f"| {label} | {walls[0]:.2f} | {walls[len(walls) // 2]:.2f} | {peak:.0f} |")
    ratio = min(w for w, _ in rows["native"]) / min(w for w, _ in rows["etcdutl"])
    print(f"\nnative / etcdutl wall ratio (best runs): {ratio:.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
