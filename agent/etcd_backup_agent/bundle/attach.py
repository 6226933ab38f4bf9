"""The pipeline's bundle step: collect and seal beside the snapshot, store before the manifest.

A bundle problem never loses a snapshot: an unreadable listed file, an oversized bundle or a
sealing error gives a ``failed`` record (the reason in ``error``) and the snapshot is stored
as usual. Warnings (a missing optional path, an encryption config the bundle does not hold)
are logged and kept in the record, which ``status`` and the metrics read.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import AgentError, Cancelled, StoreError
from ..manifest import Manifest
from ..store.base import Store
from .collect import MAX_BYTES_ERROR, collect, holds_file
from .layout import enabled, missing_layout, plan, resolve_layout
from .record import BUNDLE_SUFFIX, ENCRYPTION_WARNING, FAILED, OK, BundleRecord, bundle_key
from .tarball import seal_bundle


def pending_path(pending_dir: Path, bid: str) -> Path:
    return pending_dir / f"{bid}{BUNDLE_SUFFIX}"


def build_record(settings: Settings, manifest: Manifest, pending_dir: Path, log: Any) -> Manifest:
    """Collect and seal the bundle for ``manifest`` into the spool; return the manifest with
    its ``bundle`` record (unchanged when the bundle is off)."""
    cfg = settings.bundle
    layout = resolve_layout(cfg)
    if not enabled(cfg, layout):
        return manifest
    what = plan(cfg, layout)
    coll = collect(cfg.root, what.paths, cfg.exclude, cfg.max_bytes)
    warnings = list(what.notes) + list(coll.warnings)
    saved = bool(what.encryption_config) and holds_file(coll, what.encryption_config)
    errors = [e for e in (missing_layout(cfg, what),) if e] + list(coll.errors)
    # past max_bytes nothing more is read: that is the cause, not an unreadable config
    over = any(MAX_BYTES_ERROR in e for e in errors)
    if what.encryption_config and not saved and not over:
        warnings.append(
            f"kube-apiserver encrypts Secrets with {what.encryption_config}, which the bundle "
            f"could not read: {ENCRYPTION_WARNING}"
        )
    record = BundleRecord(
        status=FAILED,
        layout=layout,
        warnings=tuple(warnings),
        encryption_config=what.encryption_config,
        encryption_config_saved=saved,
    )
    for w in warnings:
        log.warning("bundle warning", warning=w, id=manifest.id)
    if errors:
        error = errors[0] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
        log.error("bundle failed; the snapshot is stored without it", error=error, id=manifest.id)
        return replace(manifest, bundle=replace(record, error=error))
    dst = pending_path(pending_dir, manifest.id)
    tmp = dst.with_name(dst.name + ".part")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        sealed = seal_bundle(
            coll.items, tmp, settings.encryption.recipients, settings.compression.level
        )
        os.replace(tmp, dst)
    except (AgentError, OSError) as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        log.error("bundle failed; the snapshot is stored without it", error=str(exc))
        return replace(manifest, bundle=replace(record, error=f"sealing failed: {exc}"))
    record = replace(
        record,
        status=OK,
        object=bundle_key(manifest.cluster, manifest.id),
        object_size=sealed.object_size,
        object_sha256=sealed.object_sha256,
        tar_size=sealed.tar_size,
        tar_sha256=sealed.tar_sha256,
        compressed_size=sealed.compressed_size,
        files=tuple(i.meta for i in coll.items),
    )
    log.info(
        "bundle sealed",
        layout=layout,
        files=len(record.files),
        bytes=coll.data_bytes,
        object_bytes=sealed.object_size,
    )
    return replace(manifest, bundle=record)


def store_bundle(
    store: Store,
    manifest: Manifest,
    pending_dir: Path,
    *,
    lock: bool,
    cancel: threading.Event | None = None,
) -> Manifest:
    """Upload the bundle object (after the snapshot object, before the manifest); return
    the manifest to publish.

    On a store failure the snapshot object just stored is deleted too (best effort), so
    the backup fails as a whole and nothing is left half-stored (it is retried). A sealed
    bundle that is gone from the spool (deleted behind the agent's back while the backup
    waited for the store) can never be uploaded: the snapshot is published with the bundle
    marked failed, rather than blocking every later pending upload."""
    rec = manifest.bundle
    if rec is None or rec.status != OK:
        return manifest
    src = pending_path(pending_dir, manifest.id)
    if not src.is_file():
        lost = BundleRecord(
            status=FAILED,
            layout=rec.layout,
            error=f"the sealed bundle was lost from the spool before its upload ({src})",
            warnings=rec.warnings,
            encryption_config=rec.encryption_config,
        )
        return replace(manifest, bundle=lost)
    try:
        put = store.put_file(rec.object, src, lock=lock, cancel=cancel)
        if put.size != rec.object_size:
            store.delete(rec.object)
            raise StoreError(
                f"{store.describe()}: stored bundle {rec.object} has {put.size} bytes, "
                f"expected {rec.object_size}"
            )
    except (AgentError, OSError) as exc:
        with contextlib.suppress(Exception):
            store.delete(manifest.object)
        if isinstance(exc, Cancelled | StoreError):
            raise
        raise StoreError(f"{store.describe()}: storing the bundle failed: {exc}") from None
    return manifest


def discard_pending(pending_dir: Path, bid: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        pending_path(pending_dir, bid).unlink()
