"""Backups to S3 end to end: real etcd 3.5.1, real SeaweedFS, the CLI as an operator runs it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from etcd_backup_agent.manifest import parse_time
from tests.agent_helpers import agent_env, run_agent, write_config
from tests.servers import EtcdServer, WeedServer, _client, etcd_bin, free_port, put_many

pytestmark = pytest.mark.integration

PREFIX = "backups"
CLUSTER = "test"


def s3_config(
    tmp_path: Path,
    etcd: EtcdServer,
    recipient: str,
    weed: WeedServer,
    bucket: str,
    creds: Path,
    name: str = "c.toml",
    extra: dict[str, dict[str, Any]] | None = None,
    **s3: object,
) -> Path:
    """A config storing to ``s3://bucket/backups/`` on ``weed`` with path addressing."""
    table: dict[str, object] = {
        "bucket": bucket,
        "prefix": PREFIX,
        "region": "us-east-1",
        "endpoint_url": weed.endpoint,
        "addressing_style": "path",
        "checksum": "when_required",
        "multipart_chunk_size": "5MiB",
        "max_concurrency": 2,
        "credentials_file": creds,
        "profile": "backup",
        "retry_max_time": "1s",
    }
    table.update(s3)
    tables: dict[str, dict[str, Any]] = {
        "store": {"type": "s3", "s3": table},
        "compression": {"level": 1},
    }
    for k, v in (extra or {}).items():
        tables.setdefault(k, {}).update(v)
    return write_config(
        tmp_path / name, endpoint=etcd.endpoint, recipient=recipient, root=tmp_path, extra=tables
    )


def put_random(server: EtcdServer, megabytes: int) -> None:
    """``megabytes`` x 1 MiB of random values: zstd cannot shrink them."""
    client = _client(server)
    try:
        for i in range(megabytes):
            client.put(f"/big/{i:05d}", os.urandom(1024 * 1024))
    finally:
        client.close()


def keys(weed: WeedServer, bucket: str) -> list[str]:
    page = weed.client().list_objects_v2(Bucket=bucket)
    assert not page.get("IsTruncated")
    return sorted(o["Key"] for o in page.get("Contents", []))


def uploads(weed: WeedServer, bucket: str) -> list[dict[str, Any]]:
    return list(weed.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def spool_files(tmp_path: Path) -> list[str]:
    spool = tmp_path / "spool"
    return (
        sorted(str(p) for p in spool.rglob("*") if p.is_file() and p.name != ".lock")
        if spool.exists()
        else []
    )


def no_secret(weed: WeedServer, *texts: str) -> None:
    for text in texts:
        assert weed.secret_key not in text and weed.access_key not in text


def restore_check(snap: Path, tmp_path: Path) -> None:
    """``etcdutl snapshot restore`` accepts the file without --skip-hash-check."""
    peer = free_port()
    r = subprocess.run(
        [
            etcd_bin("etcdutl"),
            "snapshot",
            "restore",
            str(snap),
            "--data-dir",
            str(tmp_path / "restored"),
            "--name",
            "r1",
            "--initial-cluster",
            f"r1=http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "restored" / "member" / "snap" / "db").is_file()


def test_multipart_backup_to_s3_restores_with_stock_tools(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    weed: WeedServer,
    bucket: str,
    creds_file: Path,
) -> None:
    key, recipient = age_identity
    put_many(etcd, 200)
    put_random(etcd, 22)  # ~22 MB sealed: five parts of 5 MiB
    cfg = s3_config(tmp_path, etcd, recipient, weed, bucket, creds_file)
    r = run_agent("backup", "--config", cfg, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    no_secret(weed, r.stdout, r.stderr)
    manifest = json.loads(r.stdout)
    obj_key = f"{PREFIX}/{manifest['object']}"
    man_key = f"{PREFIX}/{CLUSTER}/{manifest['id']}.json"
    assert keys(weed, bucket) == sorted([obj_key, man_key])
    assert uploads(weed, bucket) == []
    assert spool_files(tmp_path) == []

    client = weed.client()
    head = client.head_object(Bucket=bucket, Key=obj_key)
    parts = int(head["ETag"].strip('"').rsplit("-", 1)[1])
    assert parts >= 4, head["ETag"]
    assert head["ContentLength"] == manifest["object_size"] > 20 * 1024 * 1024
    stored_manifest = json.loads(client.get_object(Bucket=bucket, Key=man_key)["Body"].read())
    assert stored_manifest["id"] == manifest["id"]
    assert stored_manifest["object_sha256"] == manifest["object_sha256"]

    listing = run_agent("list", "--config", cfg)
    assert listing.returncode == 0, listing.stderr
    assert manifest["id"] in listing.stdout

    obj = tmp_path / "download.db.zst.age"
    client.download_file(bucket, obj_key, str(obj))
    assert hashlib.sha256(obj.read_bytes()).hexdigest() == manifest["object_sha256"]
    snap = tmp_path / "snapshot.db"
    subprocess.run(
        f"age -d -i {key} {obj} | zstd -d -q -o {snap}", shell=True, check=True, timeout=120
    )
    data = snap.read_bytes()
    assert hashlib.sha256(data[:-32]).hexdigest() == manifest["snapshot_sha256"]
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]
    restore_check(snap, tmp_path)

    v = run_agent("verify", "--config", cfg, "--backup", "latest", "--identity", key)
    assert v.returncode == 0, v.stdout + v.stderr
    no_secret(weed, v.stdout, v.stderr)


def test_list_orphans_reports_an_object_without_manifest_and_keeps_it(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    weed: WeedServer,
    bucket: str,
    creds_file: Path,
) -> None:
    cfg = s3_config(tmp_path, etcd, age_identity[1], weed, bucket, creds_file)
    r = run_agent("backup", "--config", cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    good = r.stdout.split()[1].rstrip(":")
    assert f"object: s3://{bucket}/{PREFIX}/{CLUSTER}/{good}.db.zst.age" in r.stdout
    orphan = f"{PREFIX}/{CLUSTER}/20200101T000000Z-r7-node1.db.zst.age"
    weed.client().put_object(Bucket=bucket, Key=orphan, Body=b"leftover of a failed run")

    text = run_agent("list", "--config", cfg, "--orphans")
    assert text.returncode == 0, text.stderr
    assert f"orphan (no manifest): {CLUSTER}/20200101T000000Z-r7-node1.db.zst.age" in text.stdout
    as_json = run_agent("list", "--config", cfg, "--orphans", "--json")
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["orphans"] == [f"{CLUSTER}/20200101T000000Z-r7-node1.db.zst.age"]
    assert [m["id"] for m in doc["backups"]] == [good]
    prune = run_agent("prune", "--config", cfg)
    assert prune.returncode == 0, prune.stdout + prune.stderr
    assert orphan in keys(weed, bucket)


def test_object_lock_is_recorded_and_prune_skips_locked_backups(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    weed: WeedServer,
    lock_bucket: str,
    creds_file: Path,
) -> None:
    cfg = s3_config(
        tmp_path,
        etcd,
        age_identity[1],
        weed,
        lock_bucket,
        creds_file,
        object_lock_mode="GOVERNANCE",
        object_lock_days=1,
        extra={"retention": {"keep_last": 1}},
    )
    ids = []
    client = weed.client()
    for i in range(2):
        etcd.ctl("put", f"/k{i}", "v")
        time.sleep(1.1)  # distinct second-resolution ids
        r = run_agent("backup", "--config", cfg, "--json")
        assert r.returncode == 0, r.stderr[-3000:]
        m = json.loads(r.stdout)
        ids.append(m["id"])
        assert m["object_lock_mode"] == "GOVERNANCE"
        assert m["retain_until"]
        until = parse_time(m["retain_until"])
        obj_key = f"{PREFIX}/{m['object']}"
        ret = client.get_object_retention(Bucket=lock_bucket, Key=obj_key)["Retention"]
        assert ret["Mode"] == "GOVERNANCE"
        assert ret["RetainUntilDate"].astimezone(UTC) == until
        head = client.head_object(Bucket=lock_bucket, Key=obj_key)
        assert head["ObjectLockMode"] == "GOVERNANCE"
        assert head["ObjectLockRetainUntilDate"].astimezone(UTC) == until

    before = keys(weed, lock_bucket)
    assert len(before) == 4
    prune = run_agent("prune", "--config", cfg, "--json")
    assert prune.returncode == 0, prune.stdout + prune.stderr
    report = json.loads(prune.stdout)
    assert report["deleted"] == [], report
    # the plan skips it by the manifest's retain_until: reported as locked, never deleted
    assert report["summary"]["skipped_locked"] == 1, report
    actions = {d["id"]: d["action"] for d in report["decisions"]}
    assert actions == {ids[0]: "locked", ids[1]: "keep"}
    assert keys(weed, lock_bucket) == before
    listing = json.loads(run_agent("list", "--config", cfg, "--json").stdout)
    assert sorted(m["id"] for m in listing) == sorted(ids)


def test_s3_down_before_the_backup_fails_cleanly(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    own_weed: WeedServer,
) -> None:
    bucket = "t-down-bucket"
    own_weed.client().create_bucket(Bucket=bucket)
    creds = own_weed.credentials_file(tmp_path / "credentials", profile="backup")
    cfg = s3_config(tmp_path, etcd, age_identity[1], own_weed, bucket, creds)
    own_weed.stop()
    r = run_agent("backup", "--config", cfg)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"127.0.0.1:{own_weed.s3_port}" in r.stderr
    assert bucket in r.stderr
    assert "unreachable" in r.stderr
    no_secret(own_weed, r.stdout, r.stderr)
    assert spool_files(tmp_path) == []
    own_weed.start()
    assert keys(own_weed, bucket) == []
    assert uploads(own_weed, bucket) == []


def test_s3_killed_mid_upload_leaves_no_manifest_and_the_upload_is_swept(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    own_weed: WeedServer,
) -> None:
    bucket = "t-kill-bucket"
    own_weed.client().create_bucket(Bucket=bucket)
    creds = own_weed.credentials_file(tmp_path / "credentials", profile="backup")
    put_random(etcd, 40)
    cfg = s3_config(
        tmp_path,
        etcd,
        age_identity[1],
        own_weed,
        bucket,
        creds,
        max_concurrency=1,
        multipart_abort_after="0s",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "etcd_backup_agent.cli", "backup", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=agent_env(),
    )
    try:
        deadline = time.monotonic() + 120
        started: list[dict[str, Any]] = []
        while not started and proc.poll() is None and time.monotonic() < deadline:
            started = uploads(own_weed, bucket)
            time.sleep(0.02)
        assert started, "no multipart upload seen before the backup ended: make the DB bigger"
        own_weed.kill()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 1, err[-3000:]
    assert bucket in err
    no_secret(own_weed, err)
    assert spool_files(tmp_path) == []

    own_weed.start()
    assert not [k for k in keys(own_weed, bucket) if k.endswith(".json")]
    left = {u["UploadId"] for u in uploads(own_weed, bucket)}
    r = run_agent("backup", "--config", cfg, "--log-format", "json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert uploads(own_weed, bucket) == []
    if left:  # weed kept the killed upload: the run before the upload aborted it
        assert '"aborted stale multipart uploads"' in r.stderr
        assert f'"count": {len(left)}' in r.stderr
    manifests = [k for k in keys(own_weed, bucket) if k.endswith(".json")]
    assert len(manifests) == 1


def test_wrong_credentials_say_access_denied_naming_the_bucket(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    weed: WeedServer,
    bucket: str,
) -> None:
    creds = tmp_path / "credentials"
    # a different first character (the random secret itself starts with "x" 1 time in 64)
    wrong = ("y" if weed.secret_key.startswith("x") else "x") + weed.secret_key[1:]
    creds.write_text(
        f"[backup]\naws_access_key_id = {weed.access_key}\naws_secret_access_key = {wrong}\n"
    )
    creds.chmod(0o600)
    cfg = s3_config(tmp_path, etcd, age_identity[1], weed, bucket, creds)
    r = run_agent("backup", "--config", cfg)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "access denied" in r.stderr.lower()
    assert bucket in r.stderr
    no_secret(weed, r.stdout, r.stderr)
    assert wrong not in r.stderr
    assert spool_files(tmp_path) == []
    assert keys(weed, bucket) == []


def test_missing_bucket_says_so(
    tmp_path: Path,
    etcd: EtcdServer,
    age_identity: tuple[Path, str],
    weed: WeedServer,
    creds_file: Path,
) -> None:
    cfg = s3_config(tmp_path, etcd, age_identity[1], weed, "t-no-such-bucket", creds_file)
    r = run_agent("backup", "--config", cfg)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "bucket t-no-such-bucket does not exist" in r.stderr
    # not created behind the operator's back (SeaweedFS creates buckets on PutObject)
    names = [b["Name"] for b in weed.client().list_buckets()["Buckets"]]
    assert "t-no-such-bucket" not in names
    no_secret(weed, r.stdout, r.stderr)
    assert spool_files(tmp_path) == []
