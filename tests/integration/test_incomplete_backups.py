"""A manifest whose object is gone (or has another size) is not a backup (issue 12, hole 1).

Real etcd, real backups by the CLI, then the newest object is deleted or truncated behind
the agent's back. Retention must keep the newest *complete* backup, `list` must flag the
incomplete one, `verify latest` must pick the complete one, and nothing good is deleted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.agent_helpers import run_agent, write_config, write_toml
from tests.integration.test_daemon_s3 import PREFIX, s3_store
from tests.servers import EtcdServer, WeedServer, put_many

pytestmark = pytest.mark.integration


def three_backups(cfg: Path, etcd: EtcdServer) -> list[str]:
    ids = []
    for i in range(3):
        put_many(etcd, 5, prefix=f"/round{i}/")  # a new revision: a new backup id
        r = run_agent("backup", "--config", cfg, "--json")
        assert r.returncode == 0, r.stderr
        ids.append(json.loads(r.stdout)["id"])
    return ids  # oldest first


def listed(cfg: Path) -> tuple[list[str], list[dict[str, str]], str]:
    r = run_agent("list", "--config", cfg, "--json", "--orphans")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    return [b["id"] for b in data["backups"]], data["incomplete"], r.stderr


def decrypts_with_stock_age(obj: Path, key: Path) -> None:
    age = subprocess.run(
        [shutil.which("age") or "age", "-d", "-i", str(key), str(obj)],
        capture_output=True,
        check=True,
    )
    zstd = subprocess.run(["zstd", "-d", "-c"], input=age.stdout, capture_output=True, check=True)
    assert len(zstd.stdout) > 4096


def test_prune_keeps_the_newest_complete_backup_when_the_newest_object_is_gone(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str]
) -> None:
    put_many(etcd, 20)
    cfg = write_config(
        tmp_path / "config.toml",
        endpoint=etcd.endpoint,
        recipient=age_identity[1],
        root=tmp_path,
        extra={"retention": {"keep_last": 1}},
    )
    oldest, middle, newest = three_backups(cfg, etcd)
    store = tmp_path / "store" / "test"
    (store / f"{newest}.db.zst.age").unlink()

    r = run_agent("prune", "--config", cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"INCOMPLETE    {newest}" in r.stdout
    # the newest complete backup survives, whole; only the older one is pruned
    assert (store / f"{middle}.json").is_file()
    decrypts_with_stock_age(store / f"{middle}.db.zst.age", age_identity[0])
    assert not (store / f"{oldest}.json").exists()
    # the incomplete manifest is reported, not "repaired"
    assert (store / f"{newest}.json").is_file()

    ids, incomplete, err = listed(cfg)
    assert ids == [middle]
    assert [i["id"] for i in incomplete] == [newest]
    assert "missing" in incomplete[0]["reason"]
    assert f"INCOMPLETE {newest}" in err

    r = run_agent(
        "verify", "--config", cfg, "--backup", "latest", "--identity", str(age_identity[0])
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert middle in r.stdout + r.stderr
    r = run_agent("verify", "--config", cfg, "--backup", newest, "--identity", str(age_identity[0]))
    assert r.returncode == 1
    assert "incomplete" in r.stderr


def test_a_truncated_object_is_incomplete_too(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str]
) -> None:
    cfg = write_config(
        tmp_path / "config.toml",
        endpoint=etcd.endpoint,
        recipient=age_identity[1],
        root=tmp_path,
        extra={"retention": {"keep_last": 1}},
    )
    oldest, middle, newest = three_backups(cfg, etcd)
    obj = tmp_path / "store" / "test" / f"{newest}.db.zst.age"
    obj.write_bytes(obj.read_bytes()[:100])
    ids, incomplete, _ = listed(cfg)
    assert ids == [middle, oldest]
    assert "has 100 bytes" in incomplete[0]["reason"]
    r = run_agent("prune", "--config", cfg, "--json")
    data = json.loads(r.stdout)
    assert [d["id"] for d in data["decisions"] if d["action"] == "keep"] == [middle]
    assert data["summary"]["incomplete"] == 1


def test_s3_prune_keeps_the_newest_complete_backup_when_the_newest_object_is_gone(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    weed: WeedServer,
    bucket: str,
) -> None:
    client = weed.client()
    cluster = "test"
    creds = weed.credentials_file(tmp_path / "credentials", profile="backup")
    store = s3_store(weed, creds)
    store["s3"]["bucket"] = bucket
    doc = {
        "cluster": {"name": cluster, "node": "n1"},
        "etcd": {"endpoints": [etcd.endpoint]},
        "encryption": {"recipients": [age_identity[1]]},
        "spool": {"dir": tmp_path / "spool"},
        "retention": {"keep_last": 1},
        "store": store,
    }
    cfg = write_toml(tmp_path / "config.toml", doc)
    oldest, middle, newest = three_backups(cfg, etcd)
    client.delete_object(Bucket=bucket, Key=f"{PREFIX}/{cluster}/{newest}.db.zst.age")
    ids, incomplete, _ = listed(cfg)
    assert ids == [middle, oldest]
    assert [i["id"] for i in incomplete] == [newest]
    r = run_agent("prune", "--config", cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    base = f"{PREFIX}/{cluster}/"
    assert f"{base}{middle}.json" in keys
    assert f"{base}{middle}.db.zst.age" in keys
    assert f"{base}{newest}.json" in keys  # reported, not deleted
    assert f"{base}{oldest}.json" not in keys


def test_the_daemon_does_not_count_an_incomplete_backup_as_covering_the_period(
    tmp_path: Path, etcd: EtcdServer, age_identity: tuple[Path, str]
) -> None:
    from tests.integration.agents import manifests, new_agent

    agent = new_agent(
        tmp_path,
        endpoints=[etcd.endpoint],
        recipient=age_identity[1],
        store=tmp_path / "store",
        spool=tmp_path / "spool",
        interval="1d",
    )
    r = run_agent("backup", "--config", agent.config, "--json")
    assert r.returncode == 0, r.stderr
    gone = json.loads(r.stdout)["id"]
    (tmp_path / "store" / "test" / f"{gone}.db.zst.age").unlink()
    agent.start()
    try:
        # the day holds only an incomplete backup: the catch-up backs up at once
        agent.wait_log("backup stored", timeout=60)
        assert len(manifests(tmp_path / "store")) == 2
        samples = agent.scrape()
        assert samples[("etcd_backup_incomplete_backups", ())] == 1
        assert samples[("etcd_backup_stored_backups", ())] == 1
        assert "incomplete backup in the store: not counted, restored or pruned" in {
            e.get("event") for e in agent.events()
        }
    finally:
        agent.stop()
