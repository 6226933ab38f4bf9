"""Leftovers of crashed runs: swept at the daemon's start, counted while they remain.

- ``spool/pending/<id>.db.zst.age`` without its ``<id>.json``: a crash between sealing and
  writing the pending manifest; without the manifest the object cannot be published.
- ``.tmp-*`` files in a local store's cluster directory: a crash mid-write. Only those
  untouched for ``STALE_TMP`` seconds are removed: another node sharing the directory may
  be writing a fresh one right now.

Raw snapshots and ``*.part`` files are ``Spool.clean_partials``' job. The spool is locked
(``spool_lock``) by the sweeping process, so nothing else of this host writes it meanwhile.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from .config import Settings
from .manifest import MANIFEST_SUFFIX, OBJECT_SUFFIX, cluster_prefix
from .spool import PENDING_DIR

STALE_TMP = 3600.0
TMP_PREFIX = ".tmp-"


def sweep_pending_orphans(spool_dir: Path, log: Any) -> int:
    """Remove sealed objects in the spool that have no pending manifest; return the count."""
    pending = spool_dir / PENDING_DIR
    removed = 0
    if not pending.is_dir():
        return 0
    for obj in pending.glob(f"*{OBJECT_SUFFIX}"):
        manifest = obj.with_name(obj.name[: -len(OBJECT_SUFFIX)] + MANIFEST_SUFFIX)
        if manifest.exists():
            continue
        with contextlib.suppress(OSError):
            size = obj.stat().st_size
            obj.unlink()
            removed += 1
            log.warning("removed a pending object without its manifest", file=str(obj), bytes=size)
    return removed


def sweep_store_tmp(settings: Settings, log: Any, now: float | None = None) -> int:
    """Remove stale ``.tmp-*`` files of a local store; return the bytes of fresh ones left."""
    if settings.store.type != "local":
        return 0
    directory = settings.store.path / cluster_prefix(settings.cluster).rstrip("/")
    if not directory.is_dir():
        return 0
    now = time.time() if now is None else now
    left = 0
    for tmp in directory.glob(f"{TMP_PREFIX}*"):
        with contextlib.suppress(OSError):
            st = tmp.stat()
            if now - st.st_mtime < STALE_TMP:
                left += st.st_size  # maybe being written: counted, swept at a later start
                continue
            tmp.unlink()
            log.warning("removed a stale temporary file in the store", file=str(tmp))
    return left


def sweep_leftovers(settings: Settings, log: Any) -> int:
    """The store part of the start sweep; the bytes of leftovers that had to stay."""
    return sweep_store_tmp(settings, log)
