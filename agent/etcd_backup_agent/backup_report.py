"""The lines a finished backup prints, the same for ``backup`` and ``etcd-backupctl backup``."""

from __future__ import annotations

from .durations import format_duration
from .manifest import Manifest
from .units import human_size


def stored_lines(manifest: Manifest, store: str) -> tuple[str, str]:
    """What was stored, and where: ``store`` is the store's description (``s3://b/prefix``)."""
    m = manifest
    return (
        f"stored {m.id}: revision {m.revision}, {m.total_keys} keys, "
        f"{human_size(m.db_size)} -> {human_size(m.object_size)} sealed "
        f"in {format_duration(m.duration_seconds)}",
        f"object: {store.rstrip('/')}/{m.object}",
    )
