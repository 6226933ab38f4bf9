"""Faults against the daemon as a subprocess, real etcd 3.5.1 and real SeaweedFS.

After each fault ``after_fault`` checks, with stock tools only: the store holds only complete
backups that ``age -d | zstd -d`` opens and ``etcdutl snapshot status`` accepts; orphans are
reported by ``list --orphans``; the next backup succeeds; the newest complete verified backup
was never deleted (the ledger).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from etcd_backup_agent.config import load
from etcd_backup_agent.daemon import Daemon
from tests.integration.agents import write_config
from tests.reliability import counters
from tests.reliability.checker import Ledger, LocalView, check_store
from tests.reliability.harness import (
    AgentPool,
    after_fault,
    events,
    stored_ids,
    wait_for,
)
from tests.servers import EtcdServer, WeedServer, _client, free_port, put_many

pytestmark = pytest.mark.integration

# How long the store stays down in the outage test; operators may run it for minutes.
STORE_OUTAGE = float(os.environ.get("RELIABILITY_STORE_OUTAGE", "20"))
RETENTION = "[retention]\nkeep_last = 3\n"


def put_large(etcd: EtcdServer, megabytes: int) -> None:
    """Half-random 1 MiB values: a snapshot stream and an upload that take a moment."""
    client = _client(etcd)
    try:
        for i in range(megabytes):
            value = b"".join(os.urandom(4096) + b"a" * 4096 for _ in range(127))
            client.put(f"/big/{i:05d}", value)
    finally:
        client.close()


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
    store_toml = f"""[store]
type = "s3"

[store.s3]
bucket = "{bucket}"
prefix = "p"
endpoint_url = "{weed.endpoint}"
region = "us-east-1"
addressing_style = "path"
credentials_file = "{creds}"
multipart_chunk_size = "5MiB"
retry_max_time = "3s"
"""
    cfg = local_config(
        tmp_path, etcd, recipient, store_toml=store_toml, spool_extra="keep_unuploaded = true"
    )
    cfg.update(kw)
    return cfg


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
    etcd.start()
    # the failed period is retried after retry_backoff (1 s, doubling)
    after_fault(agent, view, age_identity[0], tmp_path / "scratch", ledger)


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
        wait_for(lambda: not [p for p in spool.rglob("*") if p.is_file()], 10, "spool cleaned")
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
