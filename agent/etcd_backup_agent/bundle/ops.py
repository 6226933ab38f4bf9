"""``bundle list`` and ``bundle extract``: shared by the command line and the socket."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..catalog import find_backup, list_backups
from ..config import Settings
from ..errors import StoreError, UsageError
from ..manifest import Manifest
from ..store.base import Store
from ..swap import ETCD_MANIFEST
from .check import open_bundle, record_of
from .extract import check_target, extract
from .install import apply_install, aside_dir_for, plan_install

Emit = Callable[[dict[str, Any]], None]


def resolve(settings: Settings, store: Store, backup: str) -> Manifest:
    try:
        catalog = list_backups(store, settings.cluster)
    except ValueError as exc:
        raise StoreError(f"{store.describe()}: unreadable manifest: {exc}") from None
    return find_backup(catalog, backup)


def bundle_list(settings: Settings, store: Store, backup: str) -> dict[str, Any]:
    """The bundle record of one backup (names, modes, sha256; never contents)."""
    m = resolve(settings, store, backup)
    return {"backup": m.id, "bundle": asdict(m.bundle) if m.bundle is not None else None}


def bundle_extract(
    settings: Settings, store: Store, backup: str, identity_text: str, to: Path, emit: Emit
) -> dict[str, Any]:
    """Check the bundle of ``backup`` end to end, then write it under ``to``."""
    if not to.is_absolute():
        raise UsageError("the extract directory must be an absolute path")
    check_target(to)  # before the download, not after
    m = resolve(settings, store, backup)
    rec = record_of(m)
    emit({"event": "log", "level": "info", "message": f"fetching {rec.object}"})
    members = open_bundle(store, m, identity_text)
    owners = os.geteuid() == 0
    written = extract(members, to, chown=owners)
    return {
        "backup": m.id,
        "to": str(to),
        "files": len(written),
        "owners": owners,
        "written": written,
        "warnings": list(rec.warnings),
    }


def install_bundle(
    settings: Settings, store: Store, backup: str, identity_text: str, dry_run: bool
) -> dict[str, Any]:
    """Check the bundle of ``backup`` and plan (or apply) putting it back under the node root;
    the kubeadm swap's etcd.yaml is left to the swap."""
    m = resolve(settings, store, backup)
    members = open_bundle(store, m, identity_text)
    root = settings.bundle.root
    manifests = settings.restore.manifests_dir
    skip: set[str] = set()
    with contextlib.suppress(ValueError):
        skip.add(str((manifests / ETCD_MANIFEST).relative_to(root)))
    plan = plan_install(members, root, aside_dir_for(manifests), frozenset(skip))
    if not dry_run:
        plan = apply_install(members, plan, chown=os.geteuid() == 0)
    return plan.to_dict()
