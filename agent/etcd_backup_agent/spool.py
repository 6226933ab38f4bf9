"""The spool directory: raw snapshots while they are checked, sealed backups until stored.

``pending/`` holds sealed backups (object + manifest) that wait for the store; everything
else in the spool is transient and removed at start (``clean_partials``), under the spool
lock (spool_lock.py) so a second process never removes a running one's files.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from pathlib import Path

from .bundle.attach import discard_pending
from .errors import SpoolError
from .manifest import MANIFEST_SUFFIX, OBJECT_SUFFIX, Manifest

PENDING_DIR = "pending"


@dataclass(frozen=True)
class SealedBackup:
    """A verified, sealed backup waiting in the spool; ``manifest`` lacks only store fields."""

    manifest: Manifest
    object_path: Path
    manifest_path: Path


class Spool:
    """The spool directory: raw snapshots while they are checked, sealed ones until stored."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.pending = directory / PENDING_DIR

    def ensure(self) -> None:
        try:
            # mode applies to the last component only: create the spool dir itself 0700 too
            self.dir.parent.mkdir(parents=True, exist_ok=True)
            self.dir.mkdir(exist_ok=True, mode=0o700)
            self.pending.mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise SpoolError(f"spool dir {self.dir}: cannot create: {exc.strerror}") from None
        if not os.access(self.dir, os.W_OK | os.X_OK) or not os.access(self.pending, os.W_OK):
            raise SpoolError(f"spool dir {self.dir} is not writable by this user")

    def raw_path(self, stamp: str) -> Path:
        return self.dir / f"snapshot-{stamp}.db"

    def clean_partials(self) -> int:
        """Remove leftover raw snapshots and partial files from an earlier crash."""
        removed = 0
        if not self.dir.is_dir():
            return 0
        for p in list(self.dir.iterdir()) + list(self.pending.glob("*.part")):
            if p.is_file() and (p.name.startswith("snapshot-") or p.name.endswith(".part")):
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed += 1
        return removed

    def waiting(self) -> list[SealedBackup]:
        """Sealed backups still to be uploaded, oldest first."""
        out: list[SealedBackup] = []
        if not self.pending.is_dir():
            return out
        for mpath in sorted(self.pending.glob(f"*{MANIFEST_SUFFIX}")):
            opath = mpath.with_name(mpath.name[: -len(MANIFEST_SUFFIX)] + OBJECT_SUFFIX)
            try:
                manifest = Manifest.from_json(mpath.read_bytes())
            except (OSError, ValueError):
                continue
            if opath.is_file():
                out.append(SealedBackup(manifest, opath, mpath))
        out.sort(key=lambda s: s.manifest.created_at)
        return out

    def used_bytes(self) -> int:
        total = 0
        for p in self.dir.rglob("*"):
            with contextlib.suppress(OSError):
                if p.is_file():
                    total += p.stat().st_size
        return total

    def discard(self, sealed: SealedBackup) -> None:
        for p in (sealed.object_path, sealed.manifest_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        discard_pending(self.pending, sealed.manifest.id)


def spool_error(exc: OSError, spool: Path) -> SpoolError:
    if exc.errno == errno.ENOSPC:
        return SpoolError(f"spool dir {spool} is full (no space left on device)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return SpoolError(f"spool dir {spool} is not writable: {exc.strerror}")
    return SpoolError(f"spool dir {spool}: {exc.strerror or exc}")
