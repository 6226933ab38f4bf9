"""The S3 store (AWS S3 or a compatible service); with s3_client, s3_errors and
s3_multipart, the only modules importing boto3/botocore.

Behaviour the rest of the agent relies on:

- Keys are relative to ``s3://bucket/prefix/``; the store adds and strips the prefix.
- ``open_write``/``put_file`` upload with multipart when the object is larger than one
  part; S3 shows an object only when the upload completes, so a key never holds half an
  object. Every upload is checked against what the server stored (s3_multipart: Content-MD5
  per part, size and ETag from HEAD, SHA-256 where enabled). A failed upload is aborted; a
  killed process leaves an incomplete upload behind, which ``sweep_multipart`` (or a bucket
  lifecycle rule) removes.
- ``list`` pages through every result. It never returns a partial listing: when a page
  fails after the retries it raises a StoreError, so ``Listing.complete`` is always True.
- ``delete`` first reads the object's lock (HEAD). A version under an unexpired retention
  or a legal hold raises ObjectLocked; otherwise DeleteObject without a version id is sent,
  which on a versioned bucket only adds a delete marker (the old version stays until a
  lifecycle rule expires noncurrent versions).
- Transient failures (unreachable endpoint, 5xx, throttling) are retried with exponential
  backoff until ``retry_max_time`` has passed; every error names the bucket and the key.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from boto3.s3.transfer import TransferConfig

from .. import __version__
from .. import log as logging
from ..config import S3Settings
from ..errors import (
    Cancelled,
    ObjectLocked,
    StoreError,
    StoreNotFound,
)
from ..manifest import OBJECT_SUFFIX
from .base import Listing, PutResult, StoredObject
from .s3_client import S3Body, build_client, part_size_for
from .s3_errors import BOTO_ERRORS, S3Where, map_error
from .s3_multipart import MultipartWriter

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

T = TypeVar("T")

_MIB = 1024 * 1024
METADATA_KEY = "etcd-backup-agent"

_log = logging.get("store")


class S3Store:
    """Backups in ``s3://bucket/prefix/``; see the module docstring for the semantics."""

    def __init__(
        self,
        settings: S3Settings,
        *,
        client: S3Client | None = None,
        sleep: Callable[[float], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        """``cancel`` (the agent's shutdown) ends a retry loop at once with Cancelled,
        instead of after ``retry_max_time``."""
        self.settings = settings
        self._cancel = cancel
        self.bucket = settings.bucket
        self.root = f"{settings.prefix.strip('/')}/" if settings.prefix.strip("/") else ""
        self.client: S3Client = client if client is not None else build_client(settings)
        self._sleep = sleep or (cancel.wait if cancel is not None else time.sleep)
        self._bucket_checked = False

    # -- naming -------------------------------------------------------------------------

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.root}"

    @property
    def endpoint(self) -> str:
        return str(self.client.meta.endpoint_url)

    def _full(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"{self.describe()}: invalid key {key!r}")
        return self.root + key

    def _relative(self, full: str) -> str:
        return full[len(self.root) :] if full.startswith(self.root) else full

    # -- errors and retries ---------------------------------------------------------------

    def _error(self, exc: BaseException, op: str, key: str | None) -> tuple[StoreError, bool]:
        """Map a boto error to (StoreError naming bucket and key, whether it is transient)."""
        where = S3Where(self.bucket, self.root, self.endpoint, self.settings.region)
        return map_error(exc, op, key, where)

    def _call(self, op: str, key: str | None, fn: Callable[[], T], *, retry: bool = True) -> T:
        """Run ``fn``, retrying transient failures with backoff within retry_max_time."""
        deadline = time.monotonic() + self.settings.retry_max_time
        delay = 0.5
        attempt = 1
        while True:
            try:
                return fn()
            except BOTO_ERRORS as exc:
                error, transient = self._error(exc, op, key)
                if not (retry and transient) or time.monotonic() + delay > deadline:
                    raise error from None
                if self._cancel is not None and self._cancel.is_set():
                    raise Cancelled(f"{op} cancelled while retrying: {error}") from None
                _log.warning(
                    "store_retry",
                    op=op,
                    bucket=self.bucket,
                    key=key,
                    attempt=attempt,
                    delay=delay,
                    error=str(error),
                )
                self._sleep(delay)
                delay = min(delay * 2, 30.0)
                attempt += 1

    # -- writing --------------------------------------------------------------------------

    def _extra_args(self, lock: bool) -> tuple[dict[str, Any], datetime | None, str | None]:
        s = self.settings
        extra: dict[str, Any] = {"Metadata": {METADATA_KEY: __version__}}
        if s.storage_class:
            extra["StorageClass"] = s.storage_class
        if s.sse != "none":
            extra["ServerSideEncryption"] = s.sse
            if s.kms_key_id:
                extra["SSEKMSKeyId"] = s.kms_key_id
        retain_until: datetime | None = None
        mode: str | None = None
        if lock and s.object_lock_mode and s.object_lock_days > 0:
            mode = s.object_lock_mode
            now = datetime.now(UTC).replace(microsecond=0)
            retain_until = now + timedelta(days=s.object_lock_days)
            extra["ObjectLockMode"] = mode
            extra["ObjectLockRetainUntilDate"] = retain_until
            # S3 requires an integrity checksum on writes carrying Object Lock parameters
            extra["ChecksumAlgorithm"] = "CRC32"
        return extra, retain_until, mode

    def _transfer_config(self, size: int | None) -> TransferConfig:
        chunk = part_size_for(size or 0, self.settings.multipart_chunk_size)
        config = TransferConfig(
            multipart_threshold=chunk,
            multipart_chunksize=chunk,
            max_concurrency=self.settings.max_concurrency,
            preferred_transfer_client="classic",
        )
        # bounds memory for non-seekable streams: (in-memory chunks + concurrency) x chunk
        config.max_in_memory_upload_chunks = 1
        return config

    def open_write(
        self,
        key: str,
        *,
        size_hint: int = 0,
        lock: bool = False,
        cancel: threading.Event | None = None,
        patient: bool = True,
    ) -> MultipartWriter:
        """A streamed upload of ``key`` (multipart; parts sized from ``size_hint``, an upper
        estimate). Nothing is visible under ``key`` before ``complete``, which checks what
        the server stored (see s3_multipart). ``patient=False``: the first request (HEAD
        bucket) is tried once, so a store that is down now fails fast."""
        part = part_size_for(size_hint, self.settings.multipart_chunk_size)
        return MultipartWriter(self, key, part_size=part, lock=lock, cancel=cancel, patient=patient)

    def put_file(
        self,
        key: str,
        src: Path,
        *,
        lock: bool = False,
        cancel: threading.Event | None = None,
    ) -> PutResult:
        """Upload the file ``src`` (multipart above one part; parts stay <= 10,000), checked
        like every streamed upload: Content-MD5 per part, then size and ETag from HEAD.

        A set ``cancel`` stops the upload at its next block: the multipart upload is
        aborted, and ``Cancelled`` is raised."""
        try:
            f = src.open("rb")
        except OSError as exc:
            raise StoreError(f"{self.describe()}: cannot read {src}: {exc.strerror}") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            writer = self.open_write(key, size_hint=size, lock=lock, cancel=cancel)
            try:
                while block := f.read(_MIB):
                    writer.write(block)
            except BaseException:
                writer.abort()
                raise
            return writer.complete()

    def _check_bucket(self, op: str, key: str, retry: bool = True) -> None:
        """HEAD the bucket once per store: some services (SeaweedFS) create a missing bucket
        on the first PutObject, which would hide a misspelt bucket name (and its lock
        settings) from the operator."""
        if self._bucket_checked:
            return
        try:
            self._call(op, key, lambda: self.client.head_bucket(Bucket=self.bucket), retry=retry)
        except StoreNotFound:
            raise StoreNotFound(f"{op}: bucket {self.bucket} does not exist") from None
        self._bucket_checked = True

    def _head_size(self, key: str) -> int:
        head = self._call(
            "head", key, lambda: self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        )
        return int(head.get("ContentLength", 0))

    def put_bytes(self, key: str, data: bytes, *, lock: bool = False) -> PutResult:
        """Write a small object with one PutObject."""
        full = self._full(key)
        self._check_bucket("put", key)
        extra, retain_until, mode = self._extra_args(lock)
        self._call(
            "put",
            key,
            lambda: self.client.put_object(Bucket=self.bucket, Key=full, Body=data, **extra),
        )
        return PutResult(key=key, size=len(data), retain_until=retain_until, lock_mode=mode)

    # -- reading --------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as f:
            return f.read()

    def open_read(self, key: str) -> BinaryIO:
        """Stream ``key``; a cut connection raises StoreUnavailable, never a short EOF."""
        full = self._full(key)
        resp = self._call("get", key, lambda: self.client.get_object(Bucket=self.bucket, Key=full))

        def describe(exc: BaseException) -> StoreError:
            return self._error(exc, "read", key)[0]

        return io.BufferedReader(S3Body(resp["Body"], describe), buffer_size=1024 * 1024)

    def list(self, prefix: str) -> Listing:
        """Every object under ``prefix``; raises StoreError rather than return a partial list."""
        if prefix.startswith("/") or ".." in prefix.split("/"):
            raise StoreError(f"{self.describe()}: invalid prefix {prefix!r}")
        full = self.root + prefix
        out: list[StoredObject] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full, "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(
                "list", prefix or None, partial(self.client.list_objects_v2, **kwargs)
            )
            for item in page.get("Contents", []):
                out.append(
                    StoredObject(
                        key=self._relative(item["Key"]),
                        size=int(item["Size"]),
                        modified=item.get("LastModified"),
                    )
                )
            if not page.get("IsTruncated"):
                break
            token = page.get("NextContinuationToken")
            if not token:
                raise StoreError(
                    f"list: bucket {self.bucket} (prefix {full}): truncated page without "
                    f"a continuation token"
                )
        out.sort(key=lambda o: o.key)
        return Listing(objects=tuple(out), complete=True)

    # -- deleting -------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        """Delete ``key``; ObjectLocked if retention or a legal hold protects it."""
        full = self._full(key)
        try:
            head = self._call(
                "delete", key, lambda: self.client.head_object(Bucket=self.bucket, Key=full)
            )
        except StoreNotFound:
            return
        until = head.get("ObjectLockRetainUntilDate")
        now = datetime.now(UTC)
        if until is not None and until > now:
            raise ObjectLocked(
                f"delete: {self.root}{key} in bucket {self.bucket} is under "
                f"{head.get('ObjectLockMode', 'object')} lock until "
                f"{until.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
            )
        if head.get("ObjectLockLegalHoldStatus") == "ON":
            raise ObjectLocked(
                f"delete: {self.root}{key} in bucket {self.bucket} is under a legal hold"
            )
        self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=full))

    def sweep_multipart(self, older_than_seconds: float) -> int:
        """Abort this agent's incomplete multipart uploads (keys under the prefix ending in
        ``.db.zst.age``) started more than ``older_than_seconds`` ago; return how many."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        aborted = 0
        key_marker: str | None = None
        upload_marker: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.root}
            if key_marker:
                kwargs["KeyMarker"] = key_marker
            if upload_marker:
                kwargs["UploadIdMarker"] = upload_marker
            # one attempt (botocore still retries): a sweep is best-effort, never a wait
            page = self._call(
                "sweep", None, partial(self.client.list_multipart_uploads, **kwargs), retry=False
            )
            for up in page.get("Uploads", []):
                key, upload_id, started = up.get("Key", ""), up.get("UploadId"), up.get("Initiated")
                if not key.endswith(OBJECT_SUFFIX) or not upload_id or started is None:
                    continue
                if started > cutoff:
                    continue
                rel = self._relative(key)
                try:
                    abort = partial(
                        self.client.abort_multipart_upload,
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                    )
                    self._call("sweep", rel, abort, retry=False)
                except StoreNotFound:
                    continue  # already completed or aborted by someone else
                aborted += 1
                _log.info(
                    "multipart_aborted", bucket=self.bucket, key=key, initiated=started.isoformat()
                )
            if not page.get("IsTruncated"):
                break
            key_marker = page.get("NextKeyMarker")
            upload_marker = page.get("NextUploadIdMarker")
            if not key_marker and not upload_marker:
                break
        return aborted

    def close(self) -> None:
        self.client.close()


__all__ = ["S3Store", "build_client", "part_size_for"]
