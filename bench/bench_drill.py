"""Benchmark: a native drill vs a full drill of the same plaintext snapshot.

Generates a snapshot with a real etcd 3.5.1 on loopback (bench.common.fill), then runs
``drill.drill_plaintext`` on it in a child process twice: with no etcd binary to be found
(``native``: restore natively, read db, WAL and snap back) and with etcd 3.5.1 (``full``:
the same, then a throwaway etcd serves it and is read). Reports wall time and the peak RSS
of the whole process tree (the full drill's includes its etcd), on a warm page cache. The
child also computes the snapshot's status for its manifest (one extra read of the db).

usage: PYTHONPATH=agent:. python bench/bench_drill.py [--size-mb 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from bench.common import big_etcd, machine, measure
from tests.servers import etcd_bin

CHILD = """
import sys
from pathlib import Path
from etcd_backup_agent import drill
from etcd_backup_agent.config import DrillSettings, RestoreSettings, Settings, SpoolSettings
from etcd_backup_agent.manifest import Manifest
from etcd_backup_agent.snapshot.status import compute_status

snap, work, etcd = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
st = compute_status(snap, "3.5")
manifest = Manifest(id="bench", object="bench", created_at="2025-01-01T00:00:00Z",
    cluster="bench", node="bench", revision=st.revision, db_size=snap.stat().st_size - 32,
    snapshot_sha256="", object_size=0, object_sha256="", hash=st.hash,
    total_keys=st.total_key, status_rules="3.5")
settings = Settings(spool=SpoolSettings(dir=work), restore=RestoreSettings(work_dir=work),
                    drill=DrillSettings(etcd=etcd, sample_keys=100))
report = drill.drill_plaintext(snap, manifest, settings, verify=False)
print(report.kind, report.result, report.seconds, report.error)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=200)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-drill-"))
    server, keys = big_etcd(base, args.size_mb * 1_000_000)
    snap = base / "snapshot.db"
    try:
        server.ctl("snapshot", "save", str(snap))
    finally:
        server.stop()
    out = {"machine": machine(), "snapshot_bytes": snap.stat().st_size, "keys": keys}
    for kind, etcd in (("native", "etcd-not-installed"), ("full", etcd_bin("etcd"))):
        measure([sys.executable, "-c", CHILD, str(snap), str(base / "work"), etcd])  # warm
        run = measure([sys.executable, "-c", CHILD, str(snap), str(base / "work"), etcd])
        assert run.returncode == 0 and f"{kind} success" in run.stdout, run.stdout + run.stderr
        out[kind] = {"seconds": round(run.seconds, 2), "peak_rss_mb": round(run.peak_rss_mb)}
    shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
