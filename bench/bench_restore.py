"""Benchmark: native ``restore --snapshot`` vs ``etcdutl snapshot restore`` on >= 1 GB, and a
native restore of the newest backup from S3 (SeaweedFS on loopback) end to end.

The snapshot is generated once with etcd 3.5.1 (bench/bench_native_db.py's generator) and
cached outside the repository. The agent runs without any etcd binary reachable
(tests/no_binaries.py). Wall time and peak RSS of the whole process tree (bench.common.measure);
``etcdutl snapshot status`` of the restored dbs must agree. Page cache warm (each restore
reads the same file).

usage: PYTHONPATH=agent:. python bench/bench_restore.py [--runs 2] [--no-s3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_backup import s3_store
from bench.bench_native_db import CACHE, generate
from bench.common import Run, machine, measure
from tests.agent_helpers import agent_env, write_config
from tests.no_binaries import base_python, isolated_env
from tests.servers import EtcdServer, etcd_bin, etcdutl_status, free_port


def native_cmd(*args: str | Path) -> list[str]:
    return [base_python(), "-m", "etcd_backup_agent.cli", *map(str, args)]


def member_flags(name: str, peer: str) -> list[str]:
    return [
        "--name",
        name,
        "--initial-cluster",
        f"{name}={peer}",
        "--initial-advertise-peer-urls",
        peer,
    ]


def row(label: str, run: Run) -> str:
    return f"| {label} | {run.seconds:.1f} s | {run.peak_rss_mb:.0f} MB |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1100)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--no-s3", action="store_true")
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    snapshot = CACHE / f"snapshot-{args.size_mb}mb.db"
    if not snapshot.exists():
        print(f"generating {snapshot} ...", file=sys.stderr, flush=True)
        generate(snapshot, args.size_mb, 1200, 3)
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-restore-", dir="/var/tmp") as tmp:
        base = Path(tmp)
        key = base / "key.txt"
        subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
        recipient = subprocess.run(
            ["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True
        ).stdout.strip()
        peer = f"http://127.0.0.1:{free_port()}"
        cfg = write_config(
            base / "local.toml", endpoint="http://127.0.0.1:1", recipient=recipient, root=base
        )
        env = isolated_env(base / "shim")
        ref: dict[str, int] | None = None
        for i in range(args.runs):
            theirs = base / f"etcdutl-{i}"
            ours = base / f"native-{i}"
            native_argv = native_cmd(
                "restore",
                "--config",
                cfg,
                "--snapshot",
                snapshot,
                "--data-dir",
                ours,
                *member_flags("bench", peer),
                "--json",
            )
            if i % 2:  # alternate which goes first (page cache, neighbours)
                nat = measure(native_argv, env=env)
            util = measure(
                [
                    etcd_bin("etcdutl"),
                    "snapshot",
                    "restore",
                    str(snapshot),
                    "--data-dir",
                    str(theirs),
                    *member_flags("bench", peer),
                ]
            )
            assert util.returncode == 0, util.stderr[-2000:]
            if not i % 2:
                nat = measure(native_argv, env=env)
            assert nat.returncode == 0, nat.stderr[-2000:]
            a = etcdutl_status(theirs / "member" / "snap" / "db")
            b = etcdutl_status(ours / "member" / "snap" / "db")
            assert a == b, (a, b)
            ref = a
            rows.append(row(f"`etcdutl snapshot restore` (run {i + 1})", util))
            rows.append(row(f"`etcd-backup-agent restore --snapshot` native (run {i + 1})", nat))
            shutil.rmtree(ours)
            if i + 1 < args.runs:
                shutil.rmtree(theirs)
        if not args.no_s3:
            # serve the restored db, back it up to S3, then restore the newest backup natively
            server = EtcdServer(base / f"etcdutl-{args.runs - 1}", name="bench")
            server.peer_port = int(peer.rsplit(":", 1)[1])
            server.start()
            weed = None
            try:
                weed, store = s3_store(base)
                s3cfg = write_config(
                    base / "s3.toml",
                    endpoint=server.endpoint,
                    recipient=recipient,
                    root=base,
                    extra={"store": store, "log": {"level": "warning"}},
                )
                backup = subprocess.run(
                    [sys.executable, "-m", "etcd_backup_agent.cli", "backup", "--config", s3cfg],
                    env=agent_env(),
                    capture_output=True,
                    text=True,
                    check=False,
                )
                assert backup.returncode == 0, backup.stderr[-2000:]
                server.stop()
                s3run = measure(
                    native_cmd(
                        "restore",
                        "latest",
                        "--config",
                        s3cfg,
                        "--identity",
                        key,
                        "--data-dir",
                        base / "from-s3",
                        *member_flags("bench", peer),
                        "--json",
                        "--log-level",
                        "info",
                        "--log-format",
                        "json",
                    ),
                    env=env,
                )
                assert s3run.returncode == 0, s3run.stderr[-2000:]
                report = json.loads(s3run.stdout)
                stamps = {}
                for line in s3run.stderr.splitlines():
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(ev, dict) and "timestamp" in ev:
                        stamps[ev.get("event")] = datetime.fromisoformat(ev["timestamp"])
                if {"restore starting", "backup checked", "restore finished"} <= set(stamps):
                    checked = stamps["backup checked"] - stamps["restore starting"]
                    wrote = stamps["restore finished"] - stamps["backup checked"]
                    rows.append(
                        f"<!-- s3: fetch+decrypt+check+verify {checked.total_seconds():.1f} s, "
                        f"native write {wrote.total_seconds():.1f} s -->"
                    )
                rows.append(
                    row(
                        "`etcd-backup-agent restore latest` native, from S3 (fetch, sha256, "
                        "decrypt, decompress, verify, restore)",
                        s3run,
                    )
                )
                rows.append(f"<!-- s3 restore revision {report['revision']} -->")
            finally:
                server.stop()
                if weed is not None:
                    weed.stop()
    print(f"machine: {machine()}")
    assert ref is not None
    print(
        f"snapshot: {snapshot.stat().st_size / 1e9:.2f} GB, revision {ref['revision']}, "
        f"{ref['totalKey']} keys; both dbs: hash {ref['hash']}, totalSize {ref['totalSize']}\n"
    )
    print("| command | wall time | peak RSS (process tree) |")
    print("| --- | --- | --- |")
    for r in rows:
        print(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
