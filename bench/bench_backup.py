"""Benchmark: `etcd-backup-agent backup` vs `etcdctl snapshot save` on a >= 1 GB database.

Usage:  .venv/bin/python bench/bench_backup.py [--size-gb 1.1] [--store local|s3]
Prints a markdown table (wall time, peak RSS of the whole process tree) to paste into
docs/benchmarks.md. The database is generated in a temp dir and deleted afterwards.
With ``--store s3`` the backup goes to a SeaweedFS S3 gateway the bench starts on loopback
(``weed`` from the dev extras) and stops by pid; its RSS is not counted (it is the server).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import big_etcd, machine, measure
from tests.agent_helpers import agent_env, write_config
from tests.servers import WeedServer, etcd_bin

BUCKET = "bench-backups"


def s3_store(base: Path) -> tuple[WeedServer, dict[str, Any]]:
    """Start SeaweedFS on loopback with a bucket; return it and the [store] table."""
    weed = WeedServer(base / "weed").start()
    weed.client().create_bucket(Bucket=BUCKET)
    creds = weed.credentials_file(base / "s3-credentials", profile="bench")
    table: dict[str, Any] = {
        "type": "s3",
        "s3": {
            "bucket": BUCKET,
            "prefix": "bench",
            "region": "us-east-1",
            "endpoint_url": weed.endpoint,
            "addressing_style": "path",
            "checksum": "when_required",
            "credentials_file": creds,
            "profile": "bench",
        },
    }
    return weed, table


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-gb", type=float, default=1.1)
    ap.add_argument("--level", type=int, default=3, help="zstd level for the agent")
    ap.add_argument(
        "--store", choices=("local", "s3"), default="local", help="where the agent stores"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-backup-") as tmp:
        base = Path(tmp)
        weed: WeedServer | None = None
        extra: dict[str, dict[str, Any]] = {
            "compression": {"level": args.level},
            "log": {"level": "warning"},
        }
        print(f"generating ~{args.size_gb} GB of etcd data ...", file=sys.stderr, flush=True)
        server, keys = big_etcd(base, int(args.size_gb * 1024**3))
        try:
            if args.store == "s3":
                weed, extra["store"] = s3_store(base)
            key = base / "key.txt"
            subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
            recipient = subprocess.run(
                ["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True
            ).stdout.strip()
            cfg = write_config(
                base / "c.toml",
                endpoint=server.endpoint,
                recipient=recipient,
                root=base,
                extra=extra,
            )
            ctl = measure(
                [
                    etcd_bin("etcdctl"),
                    "--endpoints",
                    server.endpoint,
                    "snapshot",
                    "save",
                    str(base / "etcdctl.db"),
                ]
            )
            assert ctl.returncode == 0, ctl.stderr
            db_size = (base / "etcdctl.db").stat().st_size
            (base / "etcdctl.db").unlink()
            agent = measure(
                [
                    sys.executable,
                    "-m",
                    "etcd_backup_agent.cli",
                    "backup",
                    "--config",
                    str(cfg),
                    "--json",
                    "--log-level",
                    "info",
                    "--log-format",
                    "json",
                ],
                env=agent_env(),
            )
            assert agent.returncode == 0, agent.stderr
            manifest = json.loads(agent.stdout)
            if weed is not None:
                head = weed.client().head_object(Bucket=BUCKET, Key=f"bench/{manifest['object']}")
                assert head["ContentLength"] == manifest["object_size"]
        finally:
            server.stop()
            if weed is not None:
                weed.stop()
    print(f"machine: {machine()}")
    print(
        f"database: {db_size / 1e9:.2f} GB, {keys} keys written, revision "
        f"{manifest['revision']}; sealed object {manifest['object_size'] / 1e6:.0f} MB "
        f"(zstd level {args.level}); store: {args.store}"
        + (" (SeaweedFS S3 on loopback)" if args.store == "s3" else "")
        + "\n"
    )
    print("| command | wall time | peak RSS (process tree) |")
    print("| --- | --- | --- |")
    print(f"| `etcdctl snapshot save` | {ctl.seconds:.1f} s | {ctl.peak_rss_mb:.0f} MB |")
    print(
        f"| `etcd-backup-agent backup` (snapshot, verify, seal, store to {args.store}) | "
        f"{agent.seconds:.1f} s | {agent.peak_rss_mb:.0f} MB |"
    )
    stages = {}
    for line in agent.stderr.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("event") == "stage finished":
                stages[event["stage"]] = event["seconds"]
    print("\nagent stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
