"""Upload integrity (issue 12, hole 5): what the server says it stored must be what was sent.

A fake S3 client stands in for a server that stores the wrong thing (the error paths); the
agreeing path against a real server is in tests/integration/test_s3_stream.py.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from etcd_backup_agent.config import S3Settings
from etcd_backup_agent.errors import StoreError
from etcd_backup_agent.pipeline import Pipeline
from etcd_backup_agent.store.s3 import S3Store
from tests.unit.test_pipeline import fake_source, good_db, settings, spool_files

MIB = 1024 * 1024


def md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


class FakeS3:
    """Keeps objects in memory like S3; ``lie`` makes it report something else."""

    class meta:
        endpoint_url = "http://127.0.0.1:9"

    def __init__(self, lie: str = "") -> None:
        self.lie = lie
        self.objects: dict[str, bytes] = {}
        self.uploads: dict[str, dict[int, bytes]] = {}
        self.aborted: list[str] = []
        self.deleted: list[str] = []
        self.lock = threading.Lock()
        self.sha_sent = False

    def head_bucket(self, **kw: Any) -> dict[str, Any]:
        return {}

    def create_multipart_upload(self, Bucket: str, Key: str, **kw: Any) -> dict[str, Any]:
        uid = f"u{len(self.uploads)}"
        self.uploads[uid] = {}
        self.sha_sent = kw.get("ChecksumAlgorithm") == "SHA256"
        return {"UploadId": uid}

    def upload_part(
        self, Bucket: str, Key: str, UploadId: str, PartNumber: int, Body: bytes, **kw: Any
    ) -> dict[str, Any]:
        assert base64.b64decode(kw["ContentMD5"]) == md5(Body)
        with self.lock:
            self.uploads[UploadId][PartNumber] = Body
        etag = md5(Body).hex()
        if self.lie == "part-etag":
            etag = md5(b"other").hex()
        out: dict[str, Any] = {"ETag": f'"{etag}"'}
        if "ChecksumSHA256" in kw:
            out["ChecksumSHA256"] = kw["ChecksumSHA256"]
        return out

    def complete_multipart_upload(
        self, Bucket: str, Key: str, UploadId: str, MultipartUpload: Any
    ) -> dict[str, Any]:
        parts = self.uploads.pop(UploadId)
        data = b"".join(parts[n] for n in sorted(parts))
        if self.lie == "short":
            data = data[:-1]
        if self.lie == "swap-parts" and len(parts) > 1:
            data = b"".join(parts[n] for n in sorted(parts, reverse=True))
        self.objects[Key] = data
        self.parts = [parts[n] for n in sorted(parts)]
        return {}

    def put_object(self, Bucket: str, Key: str, Body: bytes, **kw: Any) -> dict[str, Any]:
        if "ContentMD5" in kw:
            assert base64.b64decode(kw["ContentMD5"]) == md5(Body)
        self.objects[Key] = Body[:-1] if self.lie == "short" and Key.endswith(".age") else Body
        return {"ETag": f'"{md5(Body).hex()}"'}

    def head_object(self, Bucket: str, Key: str, **kw: Any) -> dict[str, Any]:
        data = self.objects[Key]
        head: dict[str, Any] = {"ContentLength": len(data)}
        parts = getattr(self, "parts", None)
        if parts and Key.endswith(".age"):
            etag = md5(b"".join(md5(p) for p in parts)).hex() + f"-{len(parts)}"
            sha = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
            if self.lie == "composite-etag":
                etag = md5(b"x").hex() + f"-{len(parts)}"
            head["ETag"] = f'"{etag}"'
            if self.sha_sent:
                text = base64.b64encode(sha).decode() + f"-{len(parts)}"
                if self.lie == "composite-sha":
                    text = base64.b64encode(hashlib.sha256(b"x").digest()).decode() + "-2"
                head["ChecksumSHA256"] = text
        else:
            head["ETag"] = f'"{md5(data).hex()}"'
        return head

    def delete_object(self, Bucket: str, Key: str, **kw: Any) -> dict[str, Any]:
        self.deleted.append(Key)
        self.objects.pop(Key, None)
        return {}

    def abort_multipart_upload(self, Bucket: str, Key: str, UploadId: str) -> dict[str, Any]:
        self.aborted.append(UploadId)
        self.uploads.pop(UploadId, None)
        return {}

    def list_multipart_uploads(self, **kw: Any) -> dict[str, Any]:
        return {"Uploads": []}

    def close(self) -> None:
        return None


def s3_settings(checksum: str = "when_required") -> S3Settings:
    return S3Settings(
        bucket="bkt",
        prefix="p",
        multipart_chunk_size=5 * MIB,
        checksum=checksum,
        retry_max_time=0.0,
    )


def put(client: FakeS3, tmp_path: Path, size: int, checksum: str = "when_required") -> Any:
    src = tmp_path / "obj.db.zst.age"
    src.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    store = S3Store(s3_settings(checksum), client=client)  # type: ignore[arg-type]
    return store.put_file("c/obj.db.zst.age", src)


def test_an_agreeing_server_passes_and_the_size_comes_from_head(tmp_path: Path) -> None:
    client = FakeS3()
    result = put(client, tmp_path, 12 * MIB + 7, checksum="when_supported")
    assert result.size == 12 * MIB + 7
    assert len(client.parts) == 3 and client.sha_sent
    assert client.objects["p/c/obj.db.zst.age"] == (tmp_path / "obj.db.zst.age").read_bytes()


@pytest.mark.parametrize(
    ("lie", "size", "checksum", "message"),
    [
        ("short", 12 * MIB, "when_required", "holds 12582911 bytes, sent 12582912"),
        ("short", 1000, "when_required", "holds 999 bytes, sent 1000"),
        ("part-etag", 12 * MIB, "when_required", "has ETag"),  # parts upload in parallel
        ("composite-etag", 12 * MIB, "when_required", "ETag"),
        ("composite-sha", 12 * MIB, "when_supported", "SHA-256"),
    ],
)
def test_a_server_that_stored_something_else_fails_the_upload(
    tmp_path: Path, lie: str, size: int, checksum: str, message: str
) -> None:
    client = FakeS3(lie)
    with pytest.raises(StoreError, match="integrity check failed") as info:
        put(client, tmp_path, size, checksum)
    assert message in str(info.value)
    # nothing usable is left under the key: the bad object is deleted or never completed
    assert "p/c/obj.db.zst.age" not in client.objects
    assert client.uploads == {} or list(client.uploads) == client.aborted


def test_a_mismatch_is_a_failed_backup_with_no_manifest(tmp_path: Path) -> None:
    client = FakeS3("short")
    s = settings(tmp_path)
    s = replace(s, store=replace(s.store, type="s3", s3=s3_settings()))
    store = S3Store(s3_settings(), client=client)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="integrity check failed"):
        Pipeline(s, store).run(fake_source(s, good_db()))
    assert not [k for k in client.objects if k.endswith(".json")]
    assert not [k for k in client.objects if k.endswith(".age")]
    assert spool_files(tmp_path) == []
