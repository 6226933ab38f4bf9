"""The keyspace analysis of every backup: one call in the pipeline, after verification.

It never fails a backup: any error is logged and the manifest goes out without a summary.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import Settings
from ..manifest import Manifest


def with_keyspace(settings: Settings, raw: Path, manifest: Manifest, log: Any) -> Manifest:
    """``manifest`` with the keyspace summary of the verified snapshot ``raw``."""
    if not settings.inspect.on_backup:
        return manifest
    try:
        from .analyze import analyze_file
        from .ops import options

        started = time.monotonic()
        report = analyze_file(raw, options(settings, top_objects=0))
        summary = report.summary(settings.inspect.top_resources)
        log.info(
            "stage finished",
            stage="inspect",
            seconds=round(time.monotonic() - started, 3),
            objects=summary.objects,
            bytes=summary.bytes,
            history_bytes=summary.history_bytes,
            resources=summary.resource_count,
        )
        return replace(manifest, keyspace=summary)
    except Exception as exc:  # the backup matters more than its analysis
        log.warning(
            "keyspace analysis failed; the backup goes on without it",
            error=f"{exc.__class__.__name__}: {exc}",
            id=manifest.id,
        )
        return manifest
