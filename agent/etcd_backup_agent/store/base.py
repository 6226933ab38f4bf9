"""The Store interface: flat keys relative to the store root, streamed objects."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: datetime | None = None


@dataclass(frozen=True)
class Listing:
    """The result of listing a prefix; ``complete`` is False when the listing was cut short."""

    objects: tuple[StoredObject, ...]
    complete: bool = True


@dataclass(frozen=True)
class PutResult:
    key: str
    size: int
    retain_until: datetime | None = None
    lock_mode: str | None = None


class Store(Protocol):
    """Where sealed backups and manifests live. Keys use '/' and are relative to the root."""

    def describe(self) -> str:
        """A human name for errors and logs, e.g. 'local:/var/backups' or 's3://bucket/prefix'."""
        ...

    def put_file(
        self,
        key: str,
        src: Path,
        *,
        lock: bool = False,
        cancel: threading.Event | None = None,
    ) -> PutResult:
        """Upload the file ``src`` as ``key`` atomically (never a half object under ``key``).

        When ``cancel`` is set during the upload, the upload stops, nothing is left under
        ``key``, and ``Cancelled`` is raised."""
        ...

    def put_bytes(self, key: str, data: bytes, *, lock: bool = False) -> PutResult:
        """Write a small object (a manifest) atomically."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """Read a small object; raise StoreNotFound when it does not exist."""
        ...

    def open_read(self, key: str) -> BinaryIO:
        """Open ``key`` for streaming reads; the caller closes it."""
        ...

    def list(self, prefix: str) -> Listing:
        """Every object whose key starts with ``prefix``."""
        ...

    def delete(self, key: str) -> None:
        """Delete ``key``; raise ObjectLocked when a lock prevents it; no error if absent."""
        ...

    def close(self) -> None: ...


class ObjectWriter(Protocol):
    """An object being written as a stream; it appears under its key only on ``complete``.

    The pipeline writes the sealed bytes while the snapshot still streams in, and calls
    ``complete`` only after the snapshot passed verification; any failure calls ``abort``,
    which leaves nothing under the key (S3: the multipart upload is aborted)."""

    def write(self, data: bytes) -> None:
        """Add bytes; may block (bounded buffers); raises StoreError/Cancelled."""
        ...

    def complete(self) -> PutResult:
        """Publish the object and check what the store now holds (size, checksums).

        ``PutResult.size`` is the size the store reports, not the size sent."""
        ...

    def abort(self) -> None:
        """Discard everything written; best-effort, never raises."""
        ...
