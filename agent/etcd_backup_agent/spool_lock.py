"""One agent process per spool: an exclusive flock on ``<spool>/.lock`` for its lifetime.

Every process that writes the spool (``run``, ``run --once``, ``backup``) holds it; a
second one is refused at once with the holder's pid, never left to delete the first
one's partial files or to upload its pending backups beside it. The kernel drops the
lock when the process dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from .errors import Busy, SpoolError

LOCK_NAME = ".lock"


class SpoolLocked(Busy):
    """Another agent process holds the spool."""


class SpoolLock:
    """The spool's lock file, held from ``acquire()`` until ``release()`` or exit."""

    def __init__(self, spool_dir: Path) -> None:
        self.path = spool_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, what: str) -> None:
        """Take the lock or raise SpoolLocked naming the holder; ``what`` names this process."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SpoolError(f"spool dir {self.path.parent}: cannot lock: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise SpoolLocked(
                f"spool dir {self.path.parent} is in use by another etcd-backup-agent process"
                f"{f' ({holder})' if holder else ''}; refusing to run {what} beside it. "
                "To back up now through the running daemon: `etcd-backupctl backup`; "
                "otherwise give this process its own [spool] dir."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid={os.getpid()} {what}\n".encode())
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing drops the flock; the file stays (harmless)
            self._fd = None


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return os.pread(fd, 200, 0).decode().strip()
    return ""
