"""The daemon as a real process storing to a real SeaweedFS: outages, the spool, SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agents import Agent, new_agent, wait_for
from tests.servers import EtcdServer, WeedServer, _client

pytestmark = pytest.mark.integration

BUCKET = "t-daemon-bucket"
PREFIX = "backups"


@pytest.fixture
def own_weed(own_weed: WeedServer) -> WeedServer:
    """The per-test SeaweedFS server (conftest), with this module's bucket."""
    own_weed.client().create_bucket(Bucket=BUCKET)
    return own_weed


def s3_store(weed: WeedServer, creds: Path, **extra: Any) -> dict[str, Any]:
    """The [store] table of an agent storing in ``weed``'s BUCKET under PREFIX."""
    s3 = {
        "bucket": BUCKET,
        "prefix": PREFIX,
        "region": "us-east-1",
        "endpoint_url": weed.endpoint,
        "addressing_style": "path",
        "checksum": "when_required",
        "multipart_chunk_size": "5MiB",
        "credentials_file": creds,
        "profile": "backup",
        "retry_max_time": "1s",
    }
    return {"type": "s3", "s3": s3 | extra}


def agent_for(
    tmp_path: Path, etcd: EtcdServer, recipient: str, weed: WeedServer, **kw: Any
) -> Agent:
    creds = weed.credentials_file(tmp_path / "credentials", profile="backup")
    store_extra = kw.pop("store_extra", {})
    return new_agent(
        tmp_path,
        endpoints=[etcd.endpoint],
        recipient=recipient,
        store=tmp_path / "unused-store",
        spool=tmp_path / "spool",
        store_toml=s3_store(weed, creds, **store_extra),
        **kw,
    )


def bucket_keys(weed: WeedServer) -> list[str]:
    page = weed.client().list_objects_v2(Bucket=BUCKET)
    assert not page.get("IsTruncated")
    return sorted(o["Key"] for o in page.get("Contents", []))


def manifest_ids(weed: WeedServer) -> set[str]:
    return {k.rsplit("/", 1)[1][: -len(".json")] for k in bucket_keys(weed) if k.endswith(".json")}


def pending_ids(spool: Path) -> set[str]:
    pending = spool / "pending"
    return {p.name[: -len(".json")] for p in pending.glob("*.json")} if pending.is_dir() else set()


def spool_files(spool: Path) -> list[Path]:
    """Files in the spool except its lock file (which stays, by design)."""
    if not spool.exists():
        return []
    return [p for p in spool.rglob("*") if p.is_file() and p.name != ".lock"]


def test_backups_wait_in_the_spool_while_s3_is_down_and_all_reach_it(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    own_weed: WeedServer,
    agents: list[Agent],
) -> None:
    spool = tmp_path / "spool"
    agent = agent_for(
        tmp_path,
        etcd,
        age_identity[1],
        own_weed,
        interval="2s",
        spool_extra="keep_unuploaded = true",
    )
    own_weed.stop()  # the daemon starts with S3 down
    agents.append(agent.start())
    seen: set[str] = set()

    def two_pending() -> bool:
        seen.update(pending_ids(spool))
        return len(seen) >= 2

    wait_for(two_pending, 120, "two backups kept in the spool")
    samples = agent.scrape()
    assert samples[("etcd_backup_runs_total", (("result", "failure"),))] >= 1
    assert samples[("etcd_backup_pending_uploads", ())] >= 1
    assert samples[("etcd_backup_store_up", ())] == 0

    own_weed.start()
    wait_for(lambda: seen <= manifest_ids(own_weed), 120, "the pending backups in S3")
    agent.signal(signal.SIGTERM)
    assert agent.wait(60) == 0
    events = agent.events()
    sealed = sum(1 for e in events if e.get("event") == "stage finished" and e["stage"] == "seal")
    stored = manifest_ids(own_weed)
    left = pending_ids(spool)
    stored_ids = {str(e["id"]) for e in events if e.get("event") == "backup stored"}
    assert stored == stored_ids
    assert seen <= stored
    # nothing lost: every sealed backup is in S3 or (cancelled at shutdown) still pending
    assert len(stored) + len(left) == sealed, (sorted(stored), sorted(left), sealed)
    assert not left & stored
    for bid in stored:
        assert f"{PREFIX}/test/{bid}.db.zst.age" in bucket_keys(own_weed)
    assert any(e.get("from_spool") for e in events if e.get("event") == "backup stored")


def put_random(server: EtcdServer, megabytes: int) -> None:
    client = _client(server)
    try:
        for i in range(megabytes):
            client.put(f"/big/{i:05d}", os.urandom(1024 * 1024))
    finally:
        client.close()


def test_sigterm_during_an_s3_upload_cancels_it_cleanly(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    own_weed: WeedServer,
    agents: list[Agent],
) -> None:
    put_random(etcd, 48)
    agent = agent_for(
        tmp_path,
        etcd,
        age_identity[1],
        own_weed,
        interval="1h",
        store_extra={"max_concurrency": 1},
    )
    agents.append(agent.start())
    client = own_weed.client()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and agent.alive():
        if client.list_multipart_uploads(Bucket=BUCKET).get("Uploads"):
            break
        time.sleep(0.02)
    else:
        raise AssertionError(f"no multipart upload started; log:\n{agent.log_text()[-3000:]}")
    assert own_weed.proc is not None
    # freeze S3 so the upload is still running when the shutdown grace (1s) is over
    os.kill(own_weed.proc.pid, signal.SIGSTOP)
    try:
        agent.signal(signal.SIGTERM)
        time.sleep(2.5)
    finally:
        os.kill(own_weed.proc.pid, signal.SIGCONT)
    assert agent.wait(60) == 0
    events = [e.get("event") for e in agent.events()]
    assert "backup stored" not in events, "the upload finished before SIGTERM"
    assert "cancelling the running backup (shutdown grace is over)" in events
    assert "backup cancelled" in events
    assert bucket_keys(own_weed) == []
    uploads: list[Any] = []
    with contextlib.suppress(KeyError):
        uploads = client.list_multipart_uploads(Bucket=BUCKET)["Uploads"]
    assert uploads == []
    assert spool_files(tmp_path / "spool") == []
