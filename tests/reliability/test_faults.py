"""Faults against the daemon as a subprocess, real etcd 3.5.1 and real SeaweedFS.

After each fault ``after_fault`` checks, with stock tools only: the store holds only complete
backups that ``age -d | zstd -d`` opens and ``etcdutl snapshot status`` accepts; orphans are
reported by ``list --orphans``; the next backup succeeds; the newest complete verified backup
was never deleted (the ledger).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from etcd_backup_agent.config import load
from etcd_backup_agent.daemon import Daemon
from tests.agent_helpers import agent_env, run_agent
from tests.integration.agents import Agent, write_config
from tests.reliability import counters
from tests.reliability.checker import Ledger, LocalView, S3View, check_store
from tests.reliability.harness import (
    AgentPool,
    after_fault,
    assert_no_secrets,
    assert_orphans_reported,
    events,
    stored_ids,
    wait_for,
)
from tests.servers import EtcdServer, WeedServer, free_port, put_large, put_many

pytestmark = pytest.mark.integration

# How long the store stays down in the outage test; operators may run it for minutes.
STORE_OUTAGE = float(os.environ.get("RELIABILITY_STORE_OUTAGE", "20"))
RETENTION = "[retention]\nkeep_last = 3\n"


def local_config(
    tmp_path: Path, etcd: EtcdServer, recipient: str, **kw: object
) -> dict[str, object]:
    cfg: dict[str, object] = {
        "endpoints": [etcd.endpoint],
        "recipient": recipient,
        "store": tmp_path / "store",
        "spool": tmp_path / "spool",
        "interval": "2s",
        "extra": RETENTION,
    }
    cfg.update(kw)
    return cfg


@pytest.fixture
def weed1(tmp_path: Path) -> Iterator[WeedServer]:
    """A SeaweedFS server of this test alone: the test kills and restarts it."""
    server = WeedServer(tmp_path / "weed").start()
    try:
        yield server
    finally:
        server.stop()


def s3_config(
    tmp_path: Path, etcd: EtcdServer, recipient: str, weed: WeedServer, bucket: str, **kw: object
) -> dict[str, object]:
    creds = weed.credentials_file(tmp_path / "credentials")
    s3 = {
        "bucket": bucket,
        "prefix": "p",
        "endpoint_url": weed.endpoint,
        "region": "us-east-1",
        "addressing_style": "path",
        "credentials_file": creds,
        "multipart_chunk_size": "5MiB",
        "retry_max_time": "3s",
    }
    store = {"type": "s3", "s3": s3}
    cfg = local_config(
        tmp_path, etcd, recipient, store_toml=store, spool_extra="keep_unuploaded = true"
    )
    cfg.update(kw)
    return cfg


def identity_secret(identity: Path) -> str:
    return identity.read_text().split("AGE-SECRET-KEY-")[1].split()[0]


def new_bucket(weed: WeedServer) -> str:
    name = f"rel-{random.Random(time.time_ns()).randrange(16**8):08x}"
    weed.client().create_bucket(Bucket=name)
    return name


def test_etcd_member_down_then_back(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], pool: AgentPool
) -> None:
    put_many(etcd, 200)
    agent = pool.new(**local_config(tmp_path, etcd, age_identity[1])).start()
    wait_for(lambda: stored_ids(agent), 60, "a first backup")
    view, ledger = LocalView(tmp_path / "store"), Ledger()
    check_store(view, age_identity[0], tmp_path / "scratch", ledger=ledger)

    etcd.stop()
    counters.fault("etcd member down")
    wait_for(lambda: events(agent, "backup failed"), 60, "a failed attempt while etcd is down")
    time.sleep(3)
    etcd.start()
    after_fault(agent, view, age_identity[0], tmp_path / "scratch", ledger)


def test_etcd_sigkilled_mid_stream(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], pool: AgentPool
) -> None:
    put_large(etcd, 48)
    spool = tmp_path / "spool"
    agent = pool.new(**local_config(tmp_path, etcd, age_identity[1], interval="1h")).start()
    # the first backup is due at once (empty store): kill etcd while its stream is written
    deadline = time.monotonic() + 60
    while not (spool.exists() and list(spool.glob("snapshot-*.part"))):
        assert time.monotonic() < deadline, agent.log_text()[-2000:]
        time.sleep(0.002)
    etcd.kill()
    counters.fault("etcd SIGKILL mid-stream")
    wait_for(lambda: events(agent, "backup failed"), 60, "the interrupted backup to fail")
    assert not list(spool.glob("snapshot-*")), "the partial stream was left in the spool"
    view, ledger = LocalView(tmp_path / "store"), Ledger()
    assert check_store(view, age_identity[0], tmp_path / "scratch", ledger=ledger).ids == []
    before = len(stored_ids(agent))  # counted before etcd is back: the retry may be quick
    etcd.start()
    # the failed period is retried after retry_backoff (1 s, doubling)
    after_fault(agent, view, age_identity[0], tmp_path / "scratch", ledger, before=before)


@contextlib.contextmanager
def small_spool(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (root here and in CI), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_spool_disk_full(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], pool: AgentPool
) -> None:
    put_large(etcd, 24)
    with small_spool(tmp_path / "spool", "8m") as spool:
        agent = pool.new(**local_config(tmp_path, etcd, age_identity[1], interval="1h")).start()
        counters.fault("spool disk full")
        wait_for(lambda: events(agent, "backup failed"), 60, "the backup to fail on a full spool")
        failed = events(agent, "backup failed")[0]
        assert failed["code"] == "spool" and "no space left" in str(failed["error"]), failed
        assert agent.alive()
        # nothing but the spool lock stays (a retry may be writing again meanwhile)
        wait_for(
            lambda: not [p for p in spool.rglob("*") if p.is_file() and p.name != ".lock"],
            20,
            "spool cleaned",
            every=0.02,
        )
        view, ledger = LocalView(tmp_path / "store"), Ledger()
        assert check_store(view, age_identity[0], tmp_path / "scratch", ledger=ledger).ids == []
        # the operator grows the disk: the retry of this period succeeds
        subprocess.run(["mount", "-o", "remount,size=256m", str(spool)], check=True)
        after_fault(agent, view, age_identity[0], tmp_path / "scratch", ledger)
        agent.stop()


class JumpingClock:
    """The daemon's time source: the true UTC time plus an offset the test changes."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def run_ticks(daemon: Daemon, until: Callable[[], bool], timeout: float, what: str) -> None:
    """Tick the daemon like its main loop does until ``until()``."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        daemon.scheduler.run_pending()
        time.sleep(0.2)


def test_clock_jumps_a_year_forward_then_a_day_back(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str]
) -> None:
    """The daemon's wall clock jumps (ids, scheduling, retention all read it); monotonic not.

    In-process because the clock is injected (``Daemon.clock``, passed on to the pipeline);
    libfaketime breaks Python's clock_nanosleep, so it cannot fake the subprocess's clock.
    """
    put_many(etcd, 100)
    cfg = tmp_path / "agent.toml"
    write_config(
        cfg,
        metrics_port=free_port(),
        **local_config(
            tmp_path,
            etcd,
            age_identity[1],
            interval="3s",
            extra="[retention]\nkeep_last = 2\n",
        ),  # type: ignore[arg-type]
    )
    clock = JumpingClock()
    daemon = Daemon(load(cfg), clock=clock)
    old_handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    view, ledger = LocalView(tmp_path / "store"), Ledger()
    scratch = tmp_path / "scratch"

    def ids() -> list[str]:
        return check_store(view, age_identity[0], scratch, ledger=ledger).ids

    try:
        daemon._start()
        run_ticks(daemon, lambda: len(ids()) >= 2, 60, "two backups at the true time")
        year = datetime.now(UTC).year

        clock.offset = timedelta(days=365)
        counters.fault("clock jump +1 year")
        run_ticks(
            daemon,
            lambda: sum(b.startswith(str(year + 1)) for b in ids()) >= 2,
            60,
            "two backups dated a year ahead",
        )
        ahead = ids()
        # keep_last = 2: the two year-ahead backups; the true-time ones were pruned
        assert all(b.startswith(str(year + 1)) for b in ahead), ahead

        clock.offset = timedelta(days=-1)
        counters.fault("clock jump -1 day (from +1 year)")
        day_back = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y%m%d")
        # the newest stored backup is a year "in the future": it must not cover today's
        # periods, or the daemon would take no backup for a year
        run_ticks(
            daemon,
            lambda: any(b.startswith(day_back) for b in ids()),
            30,
            "a backup after the clock went back",
        )
        run_ticks(
            daemon,
            lambda: sum(b.startswith(day_back) for b in ids()) >= 2,
            30,
            "the next backup after the clock went back",
        )
        back = ids()
        # retention orders by created_at: the newest verified (a year ahead) is never deleted
        assert ledger.newest is not None and ledger.newest.id in back, (ledger.newest, back)
        counters.add("cycles", len(back))
    finally:
        daemon.flags.stop = True
        daemon._shutdown()
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)


def wait_stage(agent: Agent, stage: str, count: int, timeout: float = 60) -> None:
    wait_for(
        lambda: sum(1 for e in events(agent, "stage finished") if e.get("stage") == stage) >= count,
        timeout,
        f"stage {stage} x{count}",
        every=0.005,
    )


def test_seaweedfs_sigkilled_mid_upload(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], pool: AgentPool
) -> None:
    weed = WeedServer(tmp_path / "weed").start()
    try:
        bucket = new_bucket(weed)
        put_large(etcd, 24)
        cfg = s3_config(tmp_path, etcd, age_identity[1], weed, bucket, interval="1h")
        agent = pool.new(**cfg).start()
        wait_stage(agent, "seal", 1)  # the upload starts now
        weed.kill()
        weed.stop()  # its leftover gRPC sockets
        counters.fault("SeaweedFS SIGKILL mid-upload")
        wait_for(
            lambda: events(agent, "backup failed") or stored_ids(agent), 60, "the upload to end"
        )
        time.sleep(2)
        weed.start()
        view, ledger = S3View(weed.client(), bucket, "p"), Ledger()
        # the sealed backup waited in the spool (keep_unuploaded) and is uploaded now
        wait_for(lambda: stored_ids(agent), 60, "the pending upload after the restart")
        check = check_store(view, age_identity[0], tmp_path / "scratch", ledger=ledger)
        assert check.ids == stored_ids(agent)[:1] or len(check.ids) >= 1, check.ids
        agent.config.write_text(
            agent.config.read_text().replace('interval = "1h"', 'interval = "2s"')
        )
        agent.signal(signal.SIGHUP)
        after_fault(agent, view, age_identity[0], tmp_path / "scratch", ledger)
        assert_no_secrets(agent, [weed.secret_key, identity_secret(age_identity[0])])
    finally:
        weed.stop()


def test_seaweedfs_stopped_for_a_while_then_started(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], pool: AgentPool
) -> None:
    weed = WeedServer(tmp_path / "weed").start()
    try:
        bucket = new_bucket(weed)
        put_many(etcd, 200)
        agent = pool.new(**s3_config(tmp_path, etcd, age_identity[1], weed, bucket)).start()
        wait_for(lambda: stored_ids(agent), 60, "a first backup")
        view, ledger = S3View(weed.client(), bucket, "p"), Ledger()
        check_store(view, age_identity[0], tmp_path / "scratch", ledger=ledger)
        weed.stop()
        counters.fault(f"SeaweedFS stopped {STORE_OUTAGE:.0f}s")
        time.sleep(STORE_OUTAGE)
        pending = list((tmp_path / "spool" / "pending").glob("*.json"))
        assert pending, "no backup waited in the spool during the outage"
        assert agent.alive()
        weed.start()
        waiting = sorted(p.stem for p in pending)
        wait_for(
            lambda: set(waiting) <= set(stored_ids(agent)), 120, "the waiting backups uploaded"
        )
        flushed = [str(e["id"]) for e in events(agent, "backup stored") if e.get("from_spool")]
        assert flushed == sorted(flushed), "pending backups were not uploaded oldest first"
        after_fault(agent, view, age_identity[0], tmp_path / "scratch", ledger)
        assert_no_secrets(agent, [weed.secret_key, identity_secret(age_identity[0])])
    finally:
        weed.stop()


def test_agent_sigkilled_mid_upload_and_restarted(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str], pool: AgentPool
) -> None:
    weed = WeedServer(tmp_path / "weed").start()
    try:
        bucket = new_bucket(weed)
        put_large(etcd, 24)
        agent = pool.new(**s3_config(tmp_path, etcd, age_identity[1], weed, bucket)).start()
        wait_stage(agent, "seal", 1)
        agent.kill()
        counters.fault("agent SIGKILL mid-upload")
        view, ledger = S3View(weed.client(), bucket, "p"), Ledger()
        check_store(view, age_identity[0], tmp_path / "scratch", ledger=ledger)
        again = pool.restart(agent, "again")
        wait_for(lambda: stored_ids(again), 90, "a backup after the restart")
        assert not list((tmp_path / "spool").glob("snapshot-*")), "raw snapshot left behind"
        after_fault(again, view, age_identity[0], tmp_path / "scratch", ledger)
        assert_no_secrets(
            again, [weed.secret_key, identity_secret(age_identity[0])], agent.log_text()
        )
    finally:
        weed.stop()


def test_s3_down_mid_prune(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str]
) -> None:
    """S3 dies at a seeded moment of a prune of 40 backups: nothing good is lost."""
    weed = WeedServer(tmp_path / "weed").start()
    try:
        bucket = new_bucket(weed)
        put_many(etcd, 100)
        cfg_kw = s3_config(tmp_path, etcd, age_identity[1], weed, bucket)
        cfg = tmp_path / "prune.toml"
        write_config(cfg, metrics_port=free_port(), **cfg_kw)  # type: ignore[arg-type]
        r = run_agent("backup", "--config", cfg)
        assert r.returncode == 0, r.stderr
        client = weed.client()
        view, ledger = S3View(client, bucket, "p"), Ledger()
        real = check_store(view, age_identity[0], tmp_path / "scratch", ledger=ledger).backups[0]
        # 40 older complete backups: the real object under older ids, with their manifests
        m = json.loads(view.read(f"test/{real.id}.json"))
        sealed = view.read(f"test/{real.id}.db.zst.age")
        created = datetime.fromisoformat(m["created_at"].replace("Z", "+00:00"))
        for i in range(1, 41):
            t = created - timedelta(hours=i)
            bid = f"{t:%Y%m%dT%H%M%SZ}-r{m['revision']}-{m['node']}"
            client.put_object(Bucket=bucket, Key=f"p/test/{bid}.db.zst.age", Body=sealed)
            body = {
                **m,
                "id": bid,
                "object": f"test/{bid}.db.zst.age",
                "created_at": f"{t:%Y-%m-%dT%H:%M:%SZ}",
            }
            client.put_object(
                Bucket=bucket, Key=f"p/test/{bid}.json", Body=json.dumps(body).encode()
            )
        check_store(view, age_identity[0], tmp_path / "scratch", ledger=ledger)
        cfg.write_text(cfg.read_text().replace("keep_last = 3", "keep_last = 2"))
        env_cmd = [sys.executable, "-m", "etcd_backup_agent.cli", "prune", "--config", str(cfg)]
        proc = subprocess.Popen(
            env_cmd, env=agent_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        time.sleep(random.Random(5).uniform(0.8, 2.0))
        weed.kill()
        weed.stop()
        counters.fault("S3 down mid-prune")
        _out, _err = proc.communicate(timeout=120)
        time.sleep(1)
        weed.start()
        check = check_store(view, age_identity[0], tmp_path / "scratch", ledger=ledger)
        assert real.id in check.ids, "prune deleted the newest complete verified backup"
        assert_orphans_reported(cfg, check.orphans, view)
        # the next prune finishes the job; the next backup succeeds
        r = run_agent("prune", "--config", cfg)
        assert r.returncode == 0, r.stdout + r.stderr
        r = run_agent("backup", "--config", cfg)
        assert r.returncode == 0, r.stderr
        final = check_store(view, age_identity[0], tmp_path / "scratch", ledger=ledger)
        assert len(final.backups) <= 3 and real.id in final.ids, final.ids
        assert_orphans_reported(cfg, final.orphans, view)
        counters.note(f"prune under S3 death: first prune exit {proc.returncode}")
    finally:
        weed.stop()
