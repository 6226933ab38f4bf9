"""A streamed S3 upload whose every byte is checked against what the server stored.

Parts are uploaded while the caller is still writing (bounded: ``max_concurrency`` parts
in flight plus one being filled). Each part carries a Content-MD5 (the server refuses a
part that arrived different, "BadDigest") and, when ``[store.s3] checksum =
"when_supported"`` or Object Lock is on, an x-amz-checksum-sha256. The part's ETag must be
its MD5 (unless SSE-KMS, whose ETags are not). After CompleteMultipartUpload a HEAD must
report the size sent, the multipart ETag ``md5(md5(part1)..md5(partN))-N`` when the server
returns one of that shape, and the composite SHA-256 when the server returns one. A
mismatch deletes the object and raises StoreError: a failed backup.

SeaweedFS 4.x (the test server) checks Content-MD5 and x-amz-checksum-sha256 per part
and returns both composite values on HEAD. An object smaller than one part is one
PutObject with the same checks.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import Cancelled, StoreError, StoreNotFound
from .base import PutResult

if TYPE_CHECKING:
    from .s3 import S3Store

MAX_PARTS = 10_000
_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-\d+$")


@dataclass(frozen=True)
class _Part:
    number: int
    size: int
    md5: bytes
    sha256: bytes
    etag: str


def _md5(data: bytes) -> Any:
    # MD5 is what S3 defines Content-MD5 and ETags with: an integrity check, not security
    return hashlib.md5(data, usedforsecurity=False)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _etag(value: Any) -> str:
    return str(value or "").strip('"').lower()


class MultipartWriter:
    """See the module docstring; built by ``S3Store.open_write``."""

    def __init__(
        self,
        store: S3Store,
        key: str,
        *,
        part_size: int,
        lock: bool,
        cancel: threading.Event | None,
        patient: bool = True,
    ) -> None:
        self.store = store
        self.key = key
        self.full = store._full(key)
        self.part_size = part_size
        self.cancel = cancel
        store._check_bucket("upload", key, retry=patient)
        extra, self.retain_until, self.lock_mode = store._extra_args(lock)
        # our own SHA-256 replaces the CRC32 _extra_args asks for under Object Lock
        extra.pop("ChecksumAlgorithm", None)
        self.extra = extra
        self.sha = lock or store.settings.checksum == "when_supported"
        self.etag_is_md5 = store.settings.sse != "aws:kms"
        self.upload_id: str | None = None
        self.part: bytearray | None = None
        self.buffered = 0
        self.sent = 0
        self.parts: list[_Part] = []
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._futures: list[Future[None]] = []
        concurrency = max(1, store.settings.max_concurrency)
        self._slots = threading.BoundedSemaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-part")
        self._done = False

    # -- writing ------------------------------------------------------------------------

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(f"upload of {self.full} to bucket {self.store.bucket} cancelled")

    def write(self, data: bytes) -> None:
        self._check()
        # each part is filled in place in one buffer of its final size: no joins or copies,
        # so at most max_concurrency parts uploading + the one being filled are in memory
        view = memoryview(data)
        while view:
            if self.part is None:
                self.part = bytearray(self.part_size)
            take = min(len(view), self.part_size - self.buffered)
            self.part[self.buffered : self.buffered + take] = view[:take]
            self.buffered += take
            view = view[take:]
            if self.buffered == self.part_size:
                self._submit(self._take())

    def _take(self) -> bytes:
        part = self.part if self.part is not None else bytearray()
        if self.buffered < len(part):
            del part[self.buffered :]  # the last part: shrink in place
        self.part, self.buffered = None, 0
        return part  # type: ignore[return-value]  # bytearray: botocore sends it as is

    def _create(self) -> str:
        args: dict[str, Any] = dict(self.extra)
        if self.sha:
            args["ChecksumAlgorithm"] = "SHA256"
        resp = self.store._call(
            "upload",
            self.key,
            lambda: self.store.client.create_multipart_upload(
                Bucket=self.store.bucket, Key=self.full, **args
            ),
        )
        return str(resp["UploadId"])

    def _submit(self, data: bytes) -> None:
        if self.upload_id is None:
            self.upload_id = self._create()
        number = len(self._futures) + 1
        if number > MAX_PARTS:
            raise StoreError(
                f"upload: bucket {self.store.bucket} (key {self.full}): more than {MAX_PARTS} "
                f"parts of {self.part_size} bytes: raise [store.s3] multipart_chunk_size"
            )
        while not self._slots.acquire(timeout=0.5):
            self._check()
        self._check()
        self.sent += len(data)
        self._futures.append(self._pool.submit(self._upload_part, number, data))

    def _upload_part(self, number: int, data: bytes) -> None:
        try:
            md5 = _md5(data).digest()
            sha = hashlib.sha256(data).digest()
            args: dict[str, Any] = {"ContentMD5": _b64(md5)}
            if self.sha:
                args["ChecksumSHA256"] = _b64(sha)
            assert self.upload_id is not None
            upload_id = self.upload_id
            resp = self.store._call(
                "upload",
                self.key,
                lambda: self.store.client.upload_part(
                    Bucket=self.store.bucket,
                    Key=self.full,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                    **args,
                ),
            )
            etag = _etag(resp.get("ETag"))
            if self.etag_is_md5 and _MD5_HEX.match(etag) and etag != md5.hex():
                raise self._mismatch(f"part {number} has ETag {etag}, sent MD5 {md5.hex()}")
            returned = resp.get("ChecksumSHA256")
            if self.sha and returned and returned != _b64(sha):
                raise self._mismatch(f"part {number} has SHA-256 {returned}, sent {_b64(sha)}")
            with self._lock:
                self.parts.append(_Part(number, len(data), md5, sha, str(resp.get("ETag", ""))))
        except BaseException as exc:
            with self._lock:
                if self._error is None:
                    self._error = exc
        finally:
            self._slots.release()

    def _mismatch(self, what: str) -> StoreError:
        return StoreError(
            f"upload: bucket {self.store.bucket} (key {self.full}): integrity check failed: {what}"
        )

    # -- finishing ------------------------------------------------------------------------

    def _wait(self) -> None:
        for f in self._futures:
            f.result()
        self._check()

    def complete(self) -> PutResult:
        try:
            result = self._complete()
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._pool.shutdown(wait=False)
        return result

    def _complete(self) -> PutResult:
        self._check()
        if self.upload_id is None:
            return self._put_single(self._take())
        if self.buffered or not self._futures:
            self._submit(self._take())
        self._wait()
        parts = sorted(self.parts, key=lambda p: p.number)
        listed: list[dict[str, Any]] = []
        for p in parts:
            entry: dict[str, Any] = {"PartNumber": p.number, "ETag": p.etag}
            if self.sha:
                entry["ChecksumSHA256"] = _b64(p.sha256)
            listed.append(entry)
        upload_id = self.upload_id
        # a retried Complete whose first try succeeded says NoSuchUpload: the HEAD decides
        with contextlib.suppress(StoreNotFound):
            self.store._call(
                "upload",
                self.key,
                lambda: self.store.client.complete_multipart_upload(
                    Bucket=self.store.bucket,
                    Key=self.full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": listed},  # type: ignore[typeddict-item]
                ),
            )
        self.upload_id = None  # completed: nothing left to abort
        etag = _md5(b"".join(p.md5 for p in parts)).hexdigest() + f"-{len(parts)}"
        sha = _b64(hashlib.sha256(b"".join(p.sha256 for p in parts)).digest()) + f"-{len(parts)}"
        return self._check_stored(self.sent, etag, sha)

    def _put_single(self, data: bytes) -> PutResult:
        md5 = _md5(data).digest()
        sha = hashlib.sha256(data).digest()
        args: dict[str, Any] = dict(self.extra)
        args["ContentMD5"] = _b64(md5)
        if self.sha:
            args["ChecksumSHA256"] = _b64(sha)
        self.store._call(
            "upload",
            self.key,
            lambda: self.store.client.put_object(
                Bucket=self.store.bucket, Key=self.full, Body=data, **args
            ),
        )
        self.sent = len(data)
        return self._check_stored(len(data), md5.hex(), _b64(sha))

    def _check_stored(self, size: int, etag: str, sha: str) -> PutResult:
        """HEAD the object and compare what the server holds with what was sent."""
        head = self.store._call(
            "head",
            self.key,
            lambda: self.store.client.head_object(
                Bucket=self.store.bucket, Key=self.full, ChecksumMode="ENABLED"
            ),
        )
        stored = int(head.get("ContentLength", -1))
        problem = None
        got_etag = _etag(head.get("ETag"))
        got_sha = head.get("ChecksumSHA256")
        if stored != size:
            problem = f"the server holds {stored} bytes, sent {size}"
        elif (
            self.etag_is_md5
            and (_MULTIPART_ETAG.match(got_etag) or _MD5_HEX.match(got_etag))
            and got_etag != etag
        ):
            problem = f"ETag {got_etag}, expected {etag}"
        elif self.sha and got_sha and got_sha != sha:
            problem = f"SHA-256 {got_sha}, expected {sha}"
        if problem is not None:
            with contextlib.suppress(Exception):
                self.store.client.delete_object(Bucket=self.store.bucket, Key=self.full)
            raise self._mismatch(problem)
        return PutResult(
            key=self.key, size=stored, retain_until=self.retain_until, lock_mode=self.lock_mode
        )

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        with self._lock:
            if self._error is None:
                self._error = Cancelled("upload aborted")
        for f in self._futures:
            f.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        upload_id = self.upload_id
        self.upload_id = None
        if upload_id is not None:
            with contextlib.suppress(Exception):
                self.store._call(
                    "abort",
                    self.key,
                    lambda: self.store.client.abort_multipart_upload(
                        Bucket=self.store.bucket, Key=self.full, UploadId=upload_id
                    ),
                    retry=False,
                )


__all__ = ["MultipartWriter"]
