"""Streamed object writes: ``open_writer`` picks the store's own writer or a spool file.

LocalStore and S3Store write streams natively (a temp file renamed on ``complete``; an S3
multipart upload completed on ``complete``). Any other Store gets a temp file in the spool
that ``put_file`` uploads on ``complete``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..errors import Cancelled, SpoolError
from .base import ObjectWriter, PutResult, Store


def open_writer(
    store: Store,
    key: str,
    *,
    size_hint: int,
    lock: bool,
    cancel: threading.Event | None,
    scratch: Path,
    patient: bool = True,
) -> ObjectWriter:
    """A writer for ``key``; ``size_hint`` (an upper estimate) sizes S3 parts.

    ``patient=False`` asks the store to fail fast when it is unreachable right now."""
    native: Any = getattr(store, "open_write", None)
    if native is not None:
        kwargs: dict[str, Any] = {"size_hint": size_hint, "lock": lock, "cancel": cancel}
        if not patient and "patient" in inspect.signature(native).parameters:
            kwargs["patient"] = False
        writer: ObjectWriter = native(key, **kwargs)
        return writer
    return SpoolFileWriter(store, key, lock=lock, cancel=cancel, scratch=scratch)


class SpoolFileWriter:
    """Collect the object in a temp file under ``scratch``; ``put_file`` it on complete."""

    def __init__(
        self,
        store: Store,
        key: str,
        *,
        lock: bool,
        cancel: threading.Event | None,
        scratch: Path,
    ) -> None:
        self.store, self.key, self.lock, self.cancel = store, key, lock, cancel
        try:
            fd, name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=scratch)
        except OSError as exc:
            raise SpoolError(f"spool dir {scratch}: {exc.strerror}") from None
        self.path = Path(name)
        self.file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(f"upload of {self.key} cancelled by shutdown")
        try:
            self.file.write(data)
        except OSError as exc:
            raise SpoolError(f"spool dir {self.path.parent}: {exc.strerror}") from None

    def complete(self) -> PutResult:
        try:
            self.file.close()
            return self.store.put_file(self.key, self.path, lock=self.lock, cancel=self.cancel)
        finally:
            self._remove()

    def abort(self) -> None:
        self._remove()

    def _remove(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
