"""S3Store against a real SeaweedFS S3 gateway on loopback."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from etcd_backup_agent.config import S3Settings
from etcd_backup_agent.errors import (
    ObjectLocked,
    StoreAccessDenied,
    StoreNotFound,
    StoreUnavailable,
)
from etcd_backup_agent.store.s3 import S3Store
from etcd_backup_agent.store.s3_client import build_client
from tests.servers import LOOPBACK, WeedServer, free_port

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def settings_for(weed: WeedServer, bucket: str, creds: Path, **kw: object) -> S3Settings:
    base = S3Settings(
        bucket=bucket,
        prefix="backups/etcd",
        region="us-east-1",
        endpoint_url=weed.endpoint,
        addressing_style="path",
        checksum="when_required",
        multipart_chunk_size=5 * MIB,
        max_concurrency=2,
        credentials_file=creds,
        profile="backup",
        retry_max_time=2.0,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, MIB))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def test_round_trip(weed: WeedServer, bucket: str, creds_file: Path) -> None:
    store = S3Store(settings_for(weed, bucket, creds_file))
    assert store.describe() == f"s3://{bucket}/backups/etcd/"
    res = store.put_bytes("c1/a.json", b'{"a": 1}')
    assert res.size == 8 and res.retain_until is None
    store.put_bytes("c1/b.json", b"{}")
    store.put_bytes("c2/x.json", b"{}")
    assert store.get_bytes("c1/a.json") == b'{"a": 1}'
    # the prefix is added on the server side and stripped from listings
    raw = weed.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert sorted(o["Key"] for o in raw)[0] == "backups/etcd/c1/a.json"
    listing = store.list("c1/")
    assert listing.complete
    assert [o.key for o in listing.objects] == ["c1/a.json", "c1/b.json"]
    assert listing.objects[0].size == 8 and listing.objects[0].modified is not None
    with store.open_read("c1/a.json") as f:
        assert f.read(2) == b'{"'
        assert f.read() == b'a": 1}'
    store.delete("c1/a.json")
    store.delete("c1/a.json")  # absent: no error
    with pytest.raises(StoreNotFound, match=r"c1/a\.json"):
        store.get_bytes("c1/a.json")
    assert [o.key for o in store.list("c1/").objects] == ["c1/b.json"]
    assert len(store.list("").objects) == 2
    store.close()


def test_list_paginates(weed: WeedServer, bucket: str, creds_file: Path) -> None:
    store = S3Store(settings_for(weed, bucket, creds_file))
    client = weed.client()
    for i in range(1005):
        client.put_object(Bucket=bucket, Key=f"backups/etcd/c/{i:05d}.json", Body=b"")
    listing = store.list("c/")
    assert listing.complete and len(listing.objects) == 1005


def test_multipart_upload_and_stream_back(
    weed: WeedServer, bucket: str, creds_file: Path, tmp_path: Path
) -> None:
    src = tmp_path / "big.db.zst.age"
    digest = write_random(src, 15 * MIB + 1234)  # 4 parts of 5 MiB
    store = S3Store(settings_for(weed, bucket, creds_file))
    res = store.put_file("c1/big.db.zst.age", src)
    assert res.size == src.stat().st_size
    head = weed.client().head_object(Bucket=bucket, Key="backups/etcd/c1/big.db.zst.age")
    assert head["ETag"].strip('"').endswith("-4"), head["ETag"]
    assert head["Metadata"].get("etcd-backup-agent")
    got = hashlib.sha256()
    with store.open_read("c1/big.db.zst.age") as f:
        while block := f.read(MIB):
            got.update(block)
    assert got.hexdigest() == digest
    assert store.sweep_multipart(0) == 0


def test_object_lock(weed: WeedServer, lock_bucket: str, creds_file: Path, tmp_path: Path) -> None:
    store = S3Store(
        settings_for(
            weed, lock_bucket, creds_file, object_lock_mode="GOVERNANCE", object_lock_days=1
        )
    )
    src = tmp_path / "x.db.zst.age"
    write_random(src, 6 * MIB)  # multipart: the lock passes through CreateMultipartUpload
    before = datetime.now(UTC)
    res = store.put_file("c1/x.db.zst.age", src, lock=True)
    assert res.lock_mode == "GOVERNANCE" and res.retain_until is not None
    assert before + timedelta(days=1) - timedelta(seconds=5) < res.retain_until
    man = store.put_bytes("c1/x.json", b"{}", lock=True)
    assert man.lock_mode == "GOVERNANCE"
    client = weed.client()
    for key in ("backups/etcd/c1/x.db.zst.age", "backups/etcd/c1/x.json"):
        head = client.head_object(Bucket=lock_bucket, Key=key)
        assert head["ObjectLockMode"] == "GOVERNANCE"
        assert abs(head["ObjectLockRetainUntilDate"] - res.retain_until) < timedelta(seconds=5)
    with pytest.raises(ObjectLocked, match=r"c1/x\.db\.zst\.age.*GOVERNANCE.*until"):
        store.delete("c1/x.db.zst.age")
    # the object is untouched, and the server itself refuses to delete the locked version
    head = client.head_object(Bucket=lock_bucket, Key="backups/etcd/c1/x.db.zst.age")
    with pytest.raises(ClientError):
        client.delete_object(
            Bucket=lock_bucket, Key="backups/etcd/c1/x.db.zst.age", VersionId=head["VersionId"]
        )
    assert store.get_bytes("c1/x.json") == b"{}"
    # lock=False writes no retention even with a lock mode configured
    store.put_bytes("c1/free.json", b"{}")
    free = client.head_object(Bucket=lock_bucket, Key="backups/etcd/c1/free.json")
    assert "ObjectLockMode" not in free
    store.delete("c1/free.json")
    assert [o.key for o in store.list("c1/").objects] == ["c1/x.db.zst.age", "c1/x.json"]


def test_unreachable_endpoint(weed: WeedServer, bucket: str, creds_file: Path) -> None:
    port = free_port()  # nothing listens here: what a stopped S3 looks like
    endpoint = f"http://{LOOPBACK}:{port}"
    store = S3Store(
        settings_for(weed, bucket, creds_file, endpoint_url=endpoint, retry_max_time=1.0)
    )
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match=f"endpoint unreachable: {endpoint}.*{bucket}"):
        store.list("c1/")
    assert time.monotonic() - start < 20
    with pytest.raises(StoreUnavailable, match=r"c1/a\.json"):
        store.put_bytes("c1/a.json", b"{}")


def test_wrong_credentials(
    weed: WeedServer,
    bucket: str,
    creds_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = tmp_path / "bad-credentials"
    bad.write_text(
        f"[backup]\naws_access_key_id = {weed.access_key}\naws_secret_access_key = wrong-secret\n"
    )
    store = S3Store(settings_for(weed, bucket, bad))
    with pytest.raises(StoreAccessDenied, match=f"access denied to bucket {bucket}") as info:
        store.put_bytes("c1/a.json", b"{}")
    assert "c1/a.json" in str(info.value)
    assert weed.secret_key not in str(info.value) and weed.access_key not in str(info.value)
    unknown = tmp_path / "unknown-credentials"
    unknown.write_text("[backup]\naws_access_key_id = AKNOBODY\naws_secret_access_key = x\n")
    with pytest.raises(StoreAccessDenied, match=bucket):
        S3Store(settings_for(weed, bucket, unknown)).list("c1/")
    with pytest.raises(StoreAccessDenied, match="profile"):
        S3Store(settings_for(weed, bucket, creds_file, profile="missing"))
    out = capsys.readouterr()
    assert weed.secret_key not in out.out + out.err


def test_missing_bucket(weed: WeedServer, creds_file: Path) -> None:
    store = S3Store(settings_for(weed, "no-such-bucket-here", creds_file))
    with pytest.raises(StoreNotFound, match="bucket no-such-bucket-here does not exist"):
        store.list("c1/")
    with pytest.raises(StoreNotFound, match="no-such-bucket-here"):
        store.get_bytes("c1/a.json")
    # (SeaweedFS creates a missing bucket on PutObject for an admin identity, so no put here)


def test_sweep_multipart(weed: WeedServer, bucket: str, creds_file: Path) -> None:
    client = weed.client()
    ours = client.create_multipart_upload(Bucket=bucket, Key="backups/etcd/c1/old.db.zst.age")
    client.upload_part(
        Bucket=bucket,
        Key="backups/etcd/c1/old.db.zst.age",
        UploadId=ours["UploadId"],
        PartNumber=1,
        Body=b"x" * 1024,
    )
    client.create_multipart_upload(Bucket=bucket, Key="backups/etcd/c1/other.bin")
    client.create_multipart_upload(Bucket=bucket, Key="elsewhere/c1/y.db.zst.age")
    store = S3Store(settings_for(weed, bucket, creds_file))
    assert store.sweep_multipart(3600) == 0
    assert store.sweep_multipart(0) == 1
    keys = sorted(u["Key"] for u in client.list_multipart_uploads(Bucket=bucket)["Uploads"])
    assert keys == ["backups/etcd/c1/other.bin", "elsewhere/c1/y.db.zst.age"]
    assert store.sweep_multipart(0) == 0


def test_client_config(weed: WeedServer, bucket: str, creds_file: Path, tmp_path: Path) -> None:
    for style in ("path", "virtual", "auto"):
        client = build_client(settings_for(weed, bucket, creds_file, addressing_style=style))
        assert client.meta.config.s3 is not None
        assert client.meta.config.s3["addressing_style"] == style
        assert client.meta.config.request_checksum_calculation == "when_required"
        assert client.meta.config.response_checksum_validation == "when_required"
        client.close()
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    client = build_client(settings_for(weed, bucket, creds_file, ca_file=ca))
    assert client._endpoint.http_session._verify == str(ca)  # type: ignore[attr-defined]
    client.close()
    client = build_client(settings_for(weed, bucket, creds_file, verify_tls=False))
    assert client._endpoint.http_session._verify is False  # type: ignore[attr-defined]
    client.close()


def test_checksum_when_supported(weed: WeedServer, bucket: str, creds_file: Path) -> None:
    """SeaweedFS 4.48 also accepts the default (when_supported) checksums; record it."""
    store = S3Store(settings_for(weed, bucket, creds_file, checksum="when_supported"))
    store.put_bytes("c1/a.json", b"{}")
    assert store.get_bytes("c1/a.json") == b"{}"


def test_tls_failure(weed: WeedServer, bucket: str, creds_file: Path) -> None:
    """https:// against the plain-HTTP gateway fails the handshake: reported as TLS, not retried."""
    endpoint = f"https://{LOOPBACK}:{weed.s3_port}"
    store = S3Store(settings_for(weed, bucket, creds_file, endpoint_url=endpoint))
    with pytest.raises(StoreUnavailable, match=f"TLS failure talking to {endpoint}.*{bucket}"):
        store.list("c1/")
