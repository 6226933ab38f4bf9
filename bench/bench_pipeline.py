"""Benchmark: the overlapped backup against etcd's own stream and the plain tool chain.

Usage:
    PYTHONPATH=agent .venv/bin/python bench/bench_pipeline.py [--size-gb 1.0] [--runs 3]

One run, alternating the scenarios round by round (median of ``--runs`` each):
  1. ``etcdctl snapshot save`` (the limit: etcd's stream)
  2. the plain chain an operator would script, one step after another: save,
     ``etcdutl snapshot status``, ``zstd -3 | age -r``, a boto3 ``upload_file``
  3. ``etcd-backup-agent backup`` to a local store and to S3 (same zstd level)
  4. ``etcd-backup-agent verify FILE`` against ``etcdutl snapshot status FILE`` (same output)
  5. ``etcd-backup-agent restore latest`` from S3 against ``etcdutl snapshot restore``
  6. etcd put latency (p50/p99, small puts at a steady rate) idle and during 1, 2 and 3
  7. the idle daemon's RSS and CPU over ``--idle-seconds``
Each: wall time, peak RSS of the process tree (sampled), CPU seconds (rusage of the tree).

The database (Kubernetes-like keys ``/registry/<resource>/<ns>/<name>``, several revisions per
key, deletes) is generated once and cached under ``--cache`` (default /var/tmp), outside the
repo. etcd 3.5.1 and SeaweedFS run on loopback and are stopped by pid. Results: a markdown
table on stdout and JSON in ``--json-out``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import _tree_rss_kb, machine  # noqa: E402
from tests.agent_helpers import agent_env, write_config  # noqa: E402
from tests.servers import EtcdServer, WeedServer, etcd_bin, free_port  # noqa: E402

BUCKET = "bench-pipeline"
RESOURCES = [
    ("pods", 0.30),
    ("configmaps", 0.15),
    ("secrets", 0.15),
    ("events", 0.15),
    ("replicasets", 0.08),
    ("deployments", 0.05),
    ("services", 0.04),
    ("endpointslices", 0.05),
    ("leases", 0.03),
]


# --- measuring ---------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float
    returncode: int = 0
    stdout: str = field(default="", repr=False)
    stderr: str = field(default="", repr=False)


def measure(cmd: list[str], env: dict[str, str] | None = None, shell: bool = False) -> Sample:
    """Run ``cmd``; wall time, peak tree RSS (20 ms samples), CPU seconds of the tree."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd if not shell else cmd[0], stdout=out, stderr=err, env=env, shell=shell
        )
        peak = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, _tree_rss_kb(proc.pid))
                time.sleep(0.02)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        _, status, ru = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        t.join()
        out.seek(0)
        err.seek(0)
        return Sample(
            seconds,
            peak / 1024,
            ru.ru_utime + ru.ru_stime,
            proc.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


def checked(s: Sample, what: str) -> Sample:
    if s.returncode != 0:
        raise SystemExit(f"{what} failed ({s.returncode}): {s.stderr[-2000:]}")
    return s


class Prober:
    """A separate process putting small values at a steady rate; latencies in ms."""

    def __init__(self, endpoint: str, rate: float, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--probe", endpoint, str(rate), str(out)],
            env=agent_env(),
        )
        deadline = time.monotonic() + 30
        while not out.with_suffix(".ready").exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("latency prober did not start")
            time.sleep(0.05)

    def stop(self) -> list[float]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        data: list[float] = json.loads(self.out.read_text())
        return data


def probe_main(endpoint: str, rate: float, out: Path) -> int:
    import etcd3

    host, port = endpoint.rsplit("//", 1)[1].rsplit(":", 1)
    client = etcd3.client(host=host, port=int(port), timeout=30)
    client.put("/bench/probe/warmup", b"x")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    out.with_suffix(".ready").write_text("")
    lat: list[float] = []
    interval = 1.0 / rate
    nxt = time.monotonic()
    i = 0
    value = b"v" * 100
    while not stop.is_set():
        t0 = time.monotonic()
        client.put(f"/bench/probe/{i % 100}", value)
        lat.append((time.monotonic() - t0) * 1000)
        i += 1
        nxt += interval
        delay = nxt - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        else:
            nxt = time.monotonic()
    out.write_text(json.dumps(lat))
    return 0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# --- the database ------------------------------------------------------------------------


def generate(data_dir: Path, target: int, peer_port: int, seed: int = 11) -> dict[str, int]:
    """Kubernetes-like history: keys written 1-4 times, ~8 % deleted; returns counts."""
    import etcd3

    server = EtcdServer(
        data_dir,
        peer_port=peer_port,
        extra_args=["--max-txn-ops", "100000", "--max-request-bytes", str(64 * 1024 * 1024)],
    ).start()
    rng = random.Random(seed)
    words = [rng.randbytes(5).hex() for _ in range(3000)]
    names = [r for r, _ in RESOURCES]
    weights = [w for _, w in RESOURCES]
    client = etcd3.client(host="127.0.0.1", port=server.client_port, timeout=300)
    keys: list[str] = []
    puts = deletes = created = 0
    written = 0
    try:
        while written < target:
            ops = []
            used: set[str] = set()  # etcd refuses a txn touching one key twice
            for _ in range(500):
                roll = rng.random()
                if keys and roll < 0.30:  # a new revision of an existing object
                    key = rng.choice(keys)
                    if key in used:
                        continue
                elif keys and roll < 0.33:  # a deletion
                    idx = rng.randrange(len(keys))
                    key = keys[idx]
                    if key in used:
                        continue
                    keys[idx] = keys[-1]
                    keys.pop()
                    used.add(key)
                    ops.append(client.transactions.delete(key))
                    deletes += 1
                    continue
                else:
                    res = rng.choices(names, weights)[0]
                    key = f"/registry/{res}/ns-{rng.randrange(300):03d}/{res[:-1]}-{created:07d}"
                    keys.append(key)
                    created += 1
                size = int(rng.lognormvariate(7.0, 0.6))  # median ~1.1 KB, long tail
                body = " ".join(rng.choice(words) for _ in range(max(4, size // 11)))
                value = (
                    '{"apiVersion":"v1","metadata":{"resourceVersion":"'
                    + str(puts)
                    + '","labels":{"app":"'
                    + rng.choice(words)
                    + '"}},"spec":"'
                    + body
                    + '"}'
                ).encode()
                used.add(key)
                ops.append(client.transactions.put(key, value))
                written += len(value) + len(key)
                puts += 1
            client.transaction(compare=[], success=ops, failure=[])
    finally:
        client.close()
        server.stop()
    return {"live_keys": len(keys), "puts": puts, "deletes": deletes}


def cached_db(cache: Path, size_gb: float) -> tuple[Path, dict[str, int]]:
    base = cache / f"etcd-bench-{size_gb:g}gb"
    info = base / "info.json"
    if info.is_file():
        return base / "etcd-data", json.loads(info.read_text())
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    print(f"generating ~{size_gb} GB of etcd data in {base} ...", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    # the member keeps its peer URL in the data dir: later runs reuse the same port
    peer_port = free_port()
    counts = generate(base / "etcd-data", int(size_gb * 1024**3), peer_port)
    counts["generation_seconds"] = int(time.monotonic() - t0)
    counts["peer_port"] = peer_port
    info.write_text(json.dumps(counts))
    return base / "etcd-data", counts


# --- the run ----------------------------------------------------------------------------


UPLOAD = """
import sys, boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
endpoint, bucket, key, path, profile, creds = sys.argv[1:7]
import os; os.environ["AWS_SHARED_CREDENTIALS_FILE"] = creds
s = boto3.session.Session(profile_name=profile)
c = s.client("s3", endpoint_url=endpoint, region_name="us-east-1",
             config=Config(s3={"addressing_style": "path"},
                           request_checksum_calculation="when_required"))
c.upload_file(path, bucket, key, Config=TransferConfig(multipart_chunksize=16 * 1024 * 1024,
              max_concurrency=2))
"""


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--level", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path("/var/tmp"))
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--probe-rate", type=float, default=50.0, help="puts per second")
    ap.add_argument(
        "--cost",
        metavar="RATE",
        help="also run the local backup under the unit's priorities (nice 10, best-effort "
        "I/O 7) and with [etcd] snapshot_rate_limit = RATE (e.g. 50MiB)",
    )
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--probe", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        return probe_main(args.probe[0], float(args.probe[1]), Path(args.probe[2]))

    data_dir, counts = cached_db(args.cache, args.size_gb)
    results: dict[str, list[Sample]] = {}
    latency: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-", dir=args.cache) as tmp:
        base = Path(tmp)
        etcd = EtcdServer(data_dir, peer_port=counts["peer_port"]).start(wait=False)
        weed: WeedServer | None = None
        try:
            etcd.wait_ready(timeout=300)  # loading 1.5 GB on a busy machine takes a while
            weed = WeedServer(base / "weed").start()
            out = run_all(args, base, etcd, weed, results, latency)
        finally:
            etcd.stop()
            if weed is not None:
                weed.stop()
    report = summarize(args, counts, out, results, latency)
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    return 0


def run_all(
    args: argparse.Namespace,
    base: Path,
    etcd: EtcdServer,
    weed: WeedServer,
    results: dict[str, list[Sample]],
    latency: dict[str, list[float]],
) -> dict[str, Any]:
    weed.client().create_bucket(Bucket=BUCKET)
    creds = weed.credentials_file(base / "s3-credentials", profile="bench")
    key = base / "key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    recipient = subprocess.run(
        ["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True
    ).stdout.strip()
    common: dict[str, dict[str, Any]] = {
        "compression": {"level": args.level},
        "log": {"level": "warning"},
        "restore": {"etcdutl": etcd_bin("etcdutl")},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "control": {"socket": str(base / "agent.sock")},
        "schedule": {"interval": "24h"},
    }
    local_cfg = write_config(
        base / "local.toml", endpoint=etcd.endpoint, recipient=recipient, root=base, extra=common
    )
    s3_table = {
        "type": "s3",
        "s3": {
            "bucket": BUCKET,
            "prefix": "bench",
            "region": "us-east-1",
            "endpoint_url": weed.endpoint,
            "addressing_style": "path",
            "checksum": "when_supported",
            "credentials_file": str(creds),
            "profile": "bench",
        },
    }
    s3_cfg = write_config(
        base / "s3.toml",
        endpoint=etcd.endpoint,
        recipient=recipient,
        root=base / "s3side",
        extra={**common, "store": s3_table},
    )
    agent = [sys.executable, "-m", "etcd_backup_agent.cli"]
    env = agent_env()
    ctl = etcd_bin("etcdctl")
    utl = etcd_bin("etcdutl")
    save_db = base / "save.db"
    chain_db = base / "chain.db"
    sealed = base / "chain.db.zst.age"
    identical: list[bool] = []

    def save() -> Sample:
        save_db.unlink(missing_ok=True)
        return checked(
            measure([ctl, "--endpoints", etcd.endpoint, "snapshot", "save", str(save_db)]), "save"
        )

    def chain() -> Sample:
        for p in (chain_db, sealed):
            p.unlink(missing_ok=True)
        steps = [
            measure([ctl, "--endpoints", etcd.endpoint, "snapshot", "save", str(chain_db)]),
            measure([utl, "snapshot", "status", str(chain_db), "-w", "json"]),
            measure(
                [f"zstd -{args.level} -q -c {chain_db} | age -r {recipient} -o {sealed}"],
                shell=True,
            ),
            measure(
                [
                    sys.executable,
                    "-c",
                    UPLOAD,
                    weed.endpoint,
                    BUCKET,
                    f"chain/{time.time_ns()}.age",
                    str(sealed),
                    "bench",
                    str(creds),
                ]
            ),
        ]
        for s in steps:
            checked(s, "chain step")
        return Sample(
            sum(s.seconds for s in steps),
            max(s.peak_rss_mb for s in steps),
            sum(s.cpu_seconds for s in steps),
        )

    def backup(cfg: Path, prefix: tuple[str, ...] = ()) -> Sample:
        cmd = [*prefix, *agent, "backup", "--config", str(cfg), "--json"]
        return checked(measure(cmd, env=env), "bk")

    capped_cfg = write_config(
        base / "capped.toml",
        endpoint=etcd.endpoint,
        recipient=recipient,
        root=base / "capped",
        extra={**common, "etcd": {"snapshot_rate_limit": args.cost or 0}},
    )
    niced = ("nice", "-n", "10", "ionice", "-c", "2", "-n", "7")

    def with_latency(name: str, fn: Any) -> Sample:
        prober = Prober(etcd.endpoint, args.probe_rate, base / f"probe-{name}.json")
        time.sleep(0.5)
        try:
            s = fn()
        finally:
            latency.setdefault(name, []).extend(prober.stop())
        return s

    def idle_latency() -> Sample:
        prober = Prober(etcd.endpoint, args.probe_rate, base / "probe-idle.json")
        time.sleep(8)
        latency.setdefault("idle", []).extend(prober.stop())
        return Sample(8, 0, 0)

    def verify_pair() -> None:
        ours = checked(measure([*agent, "verify", str(save_db), "-w", "json"], env=env), "verify")
        theirs = checked(measure([utl, "snapshot", "status", str(save_db), "-w", "json"]), "st")
        results.setdefault("verify", []).append(ours)
        results.setdefault("etcdutl_status", []).append(theirs)
        a, b = json.loads(ours.stdout), json.loads(theirs.stdout)
        fields = ("hash", "revision", "totalKey", "totalSize")
        identical.append(all(a.get(f) == b.get(f) for f in fields))

    def restore_pair() -> None:
        for d in ("r-agent", "r-utl"):
            shutil.rmtree(base / d, ignore_errors=True)
        peer = f"http://127.0.0.1:{free_port()}"
        ours = measure(
            [
                *agent,
                "restore",
                "latest",
                "--config",
                str(s3_cfg),
                "--identity",
                str(key),
                "--data-dir",
                str(base / "r-agent"),
                "--name",
                "r1",
                "--initial-cluster",
                f"r1={peer}",
                "--initial-advertise-peer-urls",
                peer,
            ],
            env=env,
        )
        theirs = measure(
            [
                utl,
                "snapshot",
                "restore",
                str(save_db),
                "--data-dir",
                str(base / "r-utl"),
                "--name",
                "r1",
                "--initial-cluster",
                f"r1={peer}",
                "--initial-advertise-peer-urls",
                peer,
            ]
        )
        results.setdefault("restore_s3", []).append(checked(ours, "restore"))
        results.setdefault("etcdutl_restore", []).append(checked(theirs, "etcdutl restore"))

    scenarios: list[tuple[str, Any]] = [
        ("idle_probe", idle_latency),
        ("etcdctl_save", lambda: with_latency("etcdctl_save", save)),
        ("chain", lambda: with_latency("chain", chain)),
        ("backup_local", lambda: with_latency("backup_local", lambda: backup(local_cfg))),
        ("backup_s3", lambda: with_latency("backup_s3", lambda: backup(s3_cfg))),
    ]
    if args.cost:
        scenarios += [
            ("backup_local_niced", lambda: with_latency("niced", lambda: backup(local_cfg, niced))),
            ("backup_local_capped", lambda: with_latency("capped", lambda: backup(capped_cfg))),
        ]
    for r in range(args.runs):
        order = scenarios[r % len(scenarios) :] + scenarios[: r % len(scenarios)]
        for name, fn in order:
            print(f"run {r + 1}/{args.runs}: {name}", file=sys.stderr, flush=True)
            results.setdefault(name, []).append(fn())
        if not save_db.exists():
            save()
        print(f"run {r + 1}/{args.runs}: verify, restore", file=sys.stderr, flush=True)
        verify_pair()
        restore_pair()
        prune_store(base)
    db_size = save_db.stat().st_size
    idle = idle_daemon(agent, env, local_cfg, args.idle_seconds)
    return {"db_size": db_size, "identical_status": all(identical), "idle": idle}


def prune_store(base: Path) -> None:
    """Keep the local store small between rounds (the bench is about speed, not retention)."""
    store = base / "store"
    files = sorted(store.rglob("*.db.zst.age"))
    for f in files[:-1]:
        f.unlink()
        f.with_name(f.name.replace(".db.zst.age", ".json")).unlink(missing_ok=True)


def idle_daemon(
    agent: list[str], env: dict[str, str], cfg: Path, seconds: float
) -> dict[str, float]:
    """RSS and CPU of ``etcd-backup-agent run`` between backups (its period is covered)."""
    proc = subprocess.Popen(
        [*agent, "run", "--config", str(cfg)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(20)  # start-up, first catalog refresh
        tick = os.sysconf("SC_CLK_TCK")

        def cpu() -> float:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick

        c0, t0 = cpu(), time.monotonic()
        rss: list[float] = []
        while time.monotonic() - t0 < seconds:
            rss.append(_tree_rss_kb(proc.pid) / 1024)
            time.sleep(1)
        c1, t1 = cpu(), time.monotonic()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    return {
        "seconds": round(t1 - t0, 1),
        "rss_mb_max": round(max(rss), 1),
        "cpu_percent_of_a_core": round(100 * (c1 - c0) / (t1 - t0), 3),
    }


# --- reporting --------------------------------------------------------------------------


def med(samples: list[Sample], attr: str) -> float:
    return float(statistics.median(getattr(s, attr) for s in samples))


def summarize(
    args: argparse.Namespace,
    counts: dict[str, int],
    out: dict[str, Any],
    results: dict[str, list[Sample]],
    latency: dict[str, list[float]],
) -> dict[str, Any]:
    rows = {}
    for name, samples in results.items():
        if name == "idle_probe":
            continue
        rows[name] = {
            "wall_s": round(med(samples, "seconds"), 2),
            "wall_runs_s": [round(s.seconds, 2) for s in samples],
            "peak_rss_mb": round(max(s.peak_rss_mb for s in samples), 1),
            "cpu_s": round(med(samples, "cpu_seconds"), 2),
        }
    lat = {
        name: {
            "samples": len(v),
            "p50_ms": round(pct(v, 0.50), 2),
            "p99_ms": round(pct(v, 0.99), 2),
        }
        for name, v in latency.items()
    }

    def ratio(a: str, b: str) -> float:
        return round(rows[a]["wall_s"] / rows[b]["wall_s"], 3)

    p99_save = lat["etcdctl_save"]["p99_ms"]
    targets = {
        "backup_s3 / etcdctl_save <= 1.3": ratio("backup_s3", "etcdctl_save"),
        "backup_s3 / chain <= 0.7": ratio("backup_s3", "chain"),
        "backup_s3 peak RSS MB < 150": rows["backup_s3"]["peak_rss_mb"],
        "backup_local / etcdctl_save <= 1.25": ratio("backup_local", "etcdctl_save"),
        "p99 during backup_s3 / p99 during save <= 1.2": round(
            lat["backup_s3"]["p99_ms"] / p99_save, 3
        ),
        "p99 during backup_local / p99 during save <= 1.2": round(
            lat["backup_local"]["p99_ms"] / p99_save, 3
        ),
        "verify / etcdutl status <= 1.3": ratio("verify", "etcdutl_status"),
        "verify peak RSS MB < 100": rows["verify"]["peak_rss_mb"],
        "restore_s3 / etcdutl restore <= 1.5": ratio("restore_s3", "etcdutl_restore"),
        "idle daemon RSS MB < 80": out["idle"]["rss_mb_max"],
        "idle daemon CPU % of a core < 1": out["idle"]["cpu_percent_of_a_core"],
    }
    return {
        "machine": machine(),
        "load_note": "shared machine: other jobs ran at the same time (loadavg "
        + " ".join(f"{x:.1f}" for x in os.getloadavg())
        + " at the end)",
        "database": {
            "bytes": out["db_size"],
            **counts,
        },
        "zstd_level": args.level,
        "runs": args.runs,
        "verify_output_identical_to_etcdutl": out["identical_status"],
        "scenarios": rows,
        "put_latency": lat,
        "idle_daemon": out["idle"],
        "targets": targets,
    }


def markdown(r: dict[str, Any]) -> str:
    db = r["database"]
    lines = [
        f"machine: {r['machine']}; {r['load_note']}",
        f"database: {db['bytes'] / 1e9:.2f} GB, {db['live_keys']} live keys, {db['puts']} puts, "
        f"{db['deletes']} deletes; zstd level {r['zstd_level']}; median of {r['runs']} runs",
        "",
        "| scenario | wall s (median) | runs | peak RSS MB | CPU s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in r["scenarios"].items():
        runs = ", ".join(f"{x:.1f}" for x in row["wall_runs_s"])
        lines.append(
            f"| {name} | {row['wall_s']:.2f} | {runs} | {row['peak_rss_mb']:.0f} | "
            f"{row['cpu_s']:.1f} |"
        )
    lines += [
        "",
        "| etcd put latency during | samples | p50 ms | p99 ms |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in r["put_latency"].items():
        lines.append(f"| {name} | {row['samples']} | {row['p50_ms']} | {row['p99_ms']} |")
    lines += ["", "| target | measured |", "| --- | --- |"]
    for name, value in r["targets"].items():
        lines.append(f"| {name} | {value} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
