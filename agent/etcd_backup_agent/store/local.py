"""The local-directory store: atomic writes by temp file + fsync + rename."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ..errors import Cancelled, StoreAccessDenied, StoreError, StoreNotFound, StoreUnavailable
from ..fsutil import fsync_dir
from .base import Listing, PutResult, StoredObject

_TMP_PREFIX = ".tmp-"


class LocalStore:
    """Backups in a directory tree; keys map to relative paths."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return f"local:{self.root}"

    def _path(self, key: str) -> Path:
        parts = [p for p in key.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise StoreError(f"{self.describe()}: invalid key {key!r}")
        return self.root.joinpath(*parts)

    def _ensure_dir(self, path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except PermissionError:
            raise StoreAccessDenied(
                f"{self.describe()}: cannot create {path}: permission denied"
            ) from None
        except OSError as exc:
            raise StoreUnavailable(
                f"{self.describe()}: cannot create {path}: {exc.strerror}"
            ) from None

    def _write_atomic(self, key: str, write: Callable[[BinaryIO], object]) -> PutResult:
        dest = self._path(key)
        self._ensure_dir(dest.parent)
        fd, tmp_name = -1, ""
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=dest.parent)
            with os.fdopen(fd, "wb") as out:
                fd = -1
                write(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp_name, dest)
            tmp_name = ""
            fsync_dir(dest.parent)
            return PutResult(key=key, size=dest.stat().st_size)
        except PermissionError:
            raise StoreAccessDenied(
                f"{self.describe()}: cannot write {key}: permission denied"
            ) from None
        except OSError as exc:
            reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            raise StoreError(f"{self.describe()}: cannot write {key}: {reason}") from None
        finally:
            if fd >= 0:
                os.close(fd)
            if tmp_name:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)

    def put_file(
        self,
        key: str,
        src: Path,
        *,
        lock: bool = False,
        cancel: threading.Event | None = None,
    ) -> PutResult:
        def write(out: BinaryIO) -> None:
            with src.open("rb") as f:
                while block := f.read(1024 * 1024):
                    if cancel is not None and cancel.is_set():
                        raise Cancelled(f"upload of {key} cancelled by shutdown")
                    out.write(block)

        return self._write_atomic(key, write)

    def open_write(
        self,
        key: str,
        *,
        size_hint: int = 0,
        lock: bool = False,
        cancel: threading.Event | None = None,
    ) -> LocalWriter:
        """A streamed write of ``key``: a temp file beside it, renamed on ``complete``."""
        return LocalWriter(self, key, cancel)

    def put_bytes(self, key: str, data: bytes, *, lock: bool = False) -> PutResult:
        return self._write_atomic(key, lambda out: out.write(data))

    def get_bytes(self, key: str) -> bytes:
        with self.open_read(key) as f:
            return f.read()

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return path.open("rb")
        except FileNotFoundError:
            raise StoreNotFound(f"{self.describe()}: {key} does not exist") from None
        except PermissionError:
            raise StoreAccessDenied(
                f"{self.describe()}: cannot read {key}: permission denied"
            ) from None
        except OSError as exc:
            raise StoreError(f"{self.describe()}: cannot read {key}: {exc.strerror}") from None

    def list(self, prefix: str) -> Listing:
        if not self.root.exists():
            return Listing(objects=(), complete=True)
        if not self.root.is_dir():
            raise StoreUnavailable(f"{self.describe()}: not a directory")
        out: list[StoredObject] = []
        complete = True

        def onerror(exc: OSError) -> None:
            nonlocal complete
            complete = False

        base = self.root
        start = base
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        if head:
            start = base / head
            if not start.exists():
                return Listing(objects=(), complete=True)
        for dirpath, _dirs, files in os.walk(start, onerror=onerror):
            for name in files:
                if name.startswith(_TMP_PREFIX):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(base).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    st = full.stat()
                except OSError:
                    complete = False
                    continue
                out.append(
                    StoredObject(
                        key=key, size=st.st_size, modified=datetime.fromtimestamp(st.st_mtime, UTC)
                    )
                )
        out.sort(key=lambda o: o.key)
        return Listing(objects=tuple(out), complete=complete)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return
        except PermissionError:
            raise StoreAccessDenied(
                f"{self.describe()}: cannot delete {key}: permission denied"
            ) from None
        except OSError as exc:
            raise StoreError(f"{self.describe()}: cannot delete {key}: {exc.strerror}") from None

    def close(self) -> None:
        return None


class LocalWriter:
    """A ``.tmp-*`` file in the key's directory (``list`` skips those): fsync and rename
    on ``complete``, unlink on ``abort``."""

    def __init__(self, store: LocalStore, key: str, cancel: threading.Event | None) -> None:
        self.store, self.key, self.cancel = store, key, cancel
        self.dest = store._path(key)
        # directories this writer creates are removed again on abort (when still empty)
        self.created = [p for p in (self.dest.parent, *self.dest.parent.parents) if not p.exists()]
        store._ensure_dir(self.dest.parent)
        self.written = 0
        try:
            fd, name = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=self.dest.parent)
        except OSError as exc:
            raise self._error(exc) from None
        self.tmp = Path(name)
        self.file = os.fdopen(fd, "wb")

    def _error(self, exc: OSError) -> StoreError:
        if isinstance(exc, PermissionError):
            return StoreAccessDenied(
                f"{self.store.describe()}: cannot write {self.key}: permission denied"
            )
        reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        return StoreError(f"{self.store.describe()}: cannot write {self.key}: {reason}")

    def write(self, data: bytes) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(f"upload of {self.key} cancelled by shutdown")
        try:
            self.file.write(data)
        except OSError as exc:
            raise self._error(exc) from None
        self.written += len(data)

    def complete(self) -> PutResult:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.dest)
            fsync_dir(self.dest.parent)
            size = self.dest.stat().st_size
        except OSError as exc:
            self.abort()
            raise self._error(exc) from None
        return PutResult(key=self.key, size=size)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()
        for d in self.created:
            with contextlib.suppress(OSError):
                d.rmdir()
