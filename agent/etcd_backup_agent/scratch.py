"""Private scratch directories for restores, drills and verifies, and their sweeping.

They hold decrypted snapshots, so each is created 0700 and removed on every exit path.
SIGKILL skips every ``finally``: to find what a dead process left, each dir holds a
lock file that its owner keeps flock()ed for as long as it uses the dir. The kernel drops
the lock when the owner dies, so a sweep removes exactly the dirs whose lock it can take,
and never one that a live process (the daemon beside an offline drill) is using.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from . import log as logsetup
from .errors import RestoreError

PREFIXES = ("restore-", "drill-", "drillfetch-", "verify-", "inspect-")
LOCK_NAME = ".owner.lock"
UNLOCKED_GRACE = 60.0  # seconds


@contextlib.contextmanager
def scratch_dir(root: Path, prefix: str) -> Iterator[Path]:
    """A 0700 directory under ``root``, locked while in use, removed afterwards."""
    if prefix not in PREFIXES:
        raise ValueError(f"scratch prefix must be one of {PREFIXES}")
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))  # mkdtemp: mode 0700
        fd = os.open(path / LOCK_NAME, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise RestoreError(f"work dir {root}: cannot create a temporary dir: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def _abandoned(path: Path) -> bool:
    """True when no live process holds the dir's lock.

    A dir without a lock file is an older agent's, or one being created this instant
    (between mkdtemp and flock): only the first kind is old.
    """
    try:
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            return time.time() - path.stat().st_mtime > UNLOCKED_GRACE
        return False
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops the lock we may have taken; the dir goes next
    return True


def sweep(root: Path) -> list[Path]:
    """Remove the scratch dirs that dead processes left under ``root``; return them."""
    removed: list[Path] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(PREFIXES) or entry.is_symlink() or not entry.is_dir():
            continue
        if _abandoned(entry):
            shutil.rmtree(entry, ignore_errors=True)
            if not entry.exists():
                removed.append(entry)
    if removed:
        logsetup.get("scratch").warning(
            "removed scratch dirs left by an interrupted restore, drill or verify",
            dirs=[str(p) for p in removed],
        )
    return removed
