"""The overlapped backup against a real SeaweedFS: parts upload while the snapshot streams,
the upload completes only after verification, and any failure leaves nothing behind.

The etcd side is a fake stream (tests/unit/test_pipeline.py) so a test can cut it or corrupt
it at a chosen point; the store is a real S3 server and stock age/zstd read the result.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from etcd_backup_agent.config import Settings
from etcd_backup_agent.errors import EtcdUnavailable, VerificationError
from etcd_backup_agent.etcd_source import EtcdSource
from etcd_backup_agent.pipeline import Pipeline
from etcd_backup_agent.store.s3 import S3Store
from tests.boltwriter import build_db
from tests.integration.test_s3_store import settings_for
from tests.servers import WeedServer
from tests.snapfixtures import etcd_buckets
from tests.unit.test_pipeline import _Client, settings, spool_files

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def big_db() -> bytes:
    """~14 MB of incompressible values: the sealed object spans several 5 MiB parts."""
    history = [("put", f"/registry/big/{i:05d}".encode(), os.urandom(7000)) for i in range(2000)]
    data, _ = build_db(etcd_buckets(history), trailer=False)
    return data


class _CutRpc(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection reset by the test"


def streaming_source(s: Settings, db: bytes, before_end: Any = None, cut: bool = False) -> Any:
    """A fake etcd streaming ``db``; ``before_end`` runs before the last blob (or the cut)."""
    blobs = [db[i : i + 32768] for i in range(0, len(db), 32768)]
    blobs.append(hashlib.sha256(db).digest())

    class Resp:
        def __init__(self, blob: bytes, remaining: int) -> None:
            self.blob, self.remaining_bytes = blob, remaining

    class Stream:
        def __iter__(self) -> Any:
            left = sum(len(b) for b in blobs)
            for i, b in enumerate(blobs):
                if i == len(blobs) - 1:
                    if before_end is not None:
                        before_end()
                    if cut:
                        raise _CutRpc()
                left -= len(b)
                yield Resp(b, left)

        def cancel(self) -> None:
            return None

    client = _Client([])
    client.maintenancestub.Snapshot = lambda *a, **k: Stream()  # type: ignore[method-assign]
    source = EtcdSource(s.etcd)
    source._client = client
    return source


def s3_pipeline(
    tmp_path: Path, weed: WeedServer, bucket: str, creds: Path, **kw: object
) -> tuple[Settings, S3Store]:
    s3 = settings_for(weed, bucket, creds, **kw)
    s = settings(tmp_path)
    s = replace(s, store=replace(s.store, type="s3", s3=s3))
    return s, S3Store(s3)


def listing(weed: WeedServer, bucket: str) -> tuple[list[str], list[Any]]:
    c = weed.client()
    keys = sorted(o["Key"] for o in c.list_objects_v2(Bucket=bucket).get("Contents", []))
    return keys, list(c.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def wait_for_parts(weed: WeedServer, bucket: str) -> None:
    """Block the fake stream until the server holds uploaded parts of our upload."""
    c = weed.client()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for up in c.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            parts = c.list_parts(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
            if parts.get("Parts"):
                return
        time.sleep(0.05)
    raise AssertionError("no part was uploaded while the snapshot streamed")


def test_parts_upload_while_streaming_and_stock_tools_read_the_object(
    tmp_path: Path,
    weed: WeedServer,
    bucket: str,
    creds_file: Path,
    age_identity: tuple[Path, str],
) -> None:
    key, recipient = age_identity
    s, store = s3_pipeline(tmp_path, weed, bucket, creds_file, checksum="when_supported")
    s = replace(s, encryption=replace(s.encryption, recipients=(recipient,)))
    db = big_db()
    seen: list[bool] = []
    source = streaming_source(
        s, db, before_end=lambda: seen.append(bool(wait_for_parts(weed, bucket) or True))
    )
    m = Pipeline(s, store).run(source).manifest
    assert seen == [True]  # parts were on the server before etcd's last blob
    full = f"backups/etcd/{m.object}"
    head = weed.client().head_object(Bucket=bucket, Key=full, ChecksumMode="ENABLED")
    assert head["ContentLength"] == m.object_size
    assert head["ETag"].strip('"').endswith(f"-{-(-m.object_size // (5 * MIB))}")
    assert str(head.get("ChecksumSHA256", "")).endswith(f"-{-(-m.object_size // (5 * MIB))}")
    body = weed.client().get_object(Bucket=bucket, Key=full)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == m.object_sha256
    sealed = tmp_path / "o.age"
    sealed.write_bytes(body)
    plain = subprocess.run(
        f"age -d -i {key} {sealed} | zstd -d -c", shell=True, check=True, capture_output=True
    ).stdout
    assert plain == db + hashlib.sha256(db).digest()
    keys, uploads = listing(weed, bucket)
    assert keys == [full, f"backups/etcd/c/{m.id}.json"] and uploads == []
    assert spool_files(tmp_path) == []


def test_a_stream_cut_mid_upload_aborts_it_and_publishes_nothing(
    tmp_path: Path, weed: WeedServer, bucket: str, creds_file: Path
) -> None:
    s, store = s3_pipeline(tmp_path, weed, bucket, creds_file)
    source = streaming_source(
        s, big_db(), before_end=lambda: wait_for_parts(weed, bucket), cut=True
    )
    with pytest.raises(EtcdUnavailable, match="connection reset by the test"):
        Pipeline(s, store).run(source)
    assert listing(weed, bucket) == ([], [])
    assert spool_files(tmp_path) == []


def test_a_snapshot_failing_verification_after_the_stream_publishes_nothing(
    tmp_path: Path, weed: WeedServer, bucket: str, creds_file: Path
) -> None:
    s, store = s3_pipeline(tmp_path, weed, bucket, creds_file)
    db = bytearray(big_db())
    db[3 * 4096 + 8] = 0x10  # page 3 gets the freelist type: bolt's check rejects it
    source = streaming_source(s, bytes(db), before_end=lambda: wait_for_parts(weed, bucket))
    with pytest.raises(VerificationError):
        Pipeline(s, store).run(source)
    assert listing(weed, bucket) == ([], [])
    assert spool_files(tmp_path) == []
