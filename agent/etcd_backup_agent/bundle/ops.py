"""``bundle list`` and ``bundle extract``: shared by the command line and the socket."""

from __future__ import annotations

import base64
import contextlib
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import RestoreError, UsageError
from ..events import Emit
from ..restore.fetch import resolve_backup
from ..restore.swap import ETCD_MANIFEST
from ..store.base import Store
from .check import open_bundle, open_bundle_tar, record_of
from .extract import check_target, extract, read_members
from .install import InstallPlan, apply_install, aside_dir_for, plan_install


def bundle_list(settings: Settings, store: Store, backup: str) -> dict[str, Any]:
    """The bundle record of one backup (names, modes, sha256; never contents)."""
    m = resolve_backup(settings, store, backup)
    return {"backup": m.id, "bundle": asdict(m.bundle) if m.bundle is not None else None}


def bundle_extract(
    settings: Settings, store: Store, backup: str, identity_text: str, to: Path, emit: Emit
) -> dict[str, Any]:
    """Check the bundle of ``backup`` end to end, then write it under ``to`` (this process)."""
    if not to.is_absolute():
        raise UsageError("the extract directory must be an absolute path")
    check_target(to)  # before the download, not after
    return write_fetched(bundle_fetch(settings, store, backup, identity_text, emit), to)


def bundle_fetch(
    settings: Settings, store: Store, backup: str, identity_text: str, emit: Emit
) -> dict[str, Any]:
    """The checked bundle tar of ``backup`` (base64): what the socket replies, so that the
    client writes the files as its own user, where it can (the daemon writes nothing)."""
    m = resolve_backup(settings, store, backup)
    rec = record_of(m)
    emit({"event": "log", "level": "info", "message": f"fetching {rec.object}"})
    tar, _ = open_bundle_tar(store, m, identity_text)
    return {
        "backup": m.id,
        "tar_base64": base64.b64encode(tar).decode(),
        "warnings": list(rec.warnings),
    }


def write_fetched(fetched: dict[str, Any], to: Path) -> dict[str, Any]:
    """Write a bundle_fetch reply under ``to``; the members are checked again here."""
    try:
        tar = base64.b64decode(fetched["tar_base64"], validate=True)
        backup, warnings = str(fetched["backup"]), [str(w) for w in fetched["warnings"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise RestoreError(f"unexpected bundle reply: {exc}") from None
    owners = os.geteuid() == 0
    try:
        written = extract(read_members(tar), to, chown=owners)
    except OSError as exc:
        raise RestoreError(f"writing the bundle under {to}: {exc}") from None
    return {
        "backup": backup,
        "to": str(to),
        "files": len(written),
        "owners": owners,
        "written": written,
        "warnings": warnings,
    }


def install_bundle(
    settings: Settings, store: Store, backup: str, identity_text: str, dry_run: bool
) -> InstallPlan:
    """Check the bundle of ``backup`` and plan (or apply) putting it back under the node root;
    the kubeadm swap's etcd.yaml is left to the swap."""
    m = resolve_backup(settings, store, backup)
    members = open_bundle(store, m, identity_text)
    root = settings.bundle.root
    manifests = settings.restore.manifests_dir
    skip: set[str] = set()
    with contextlib.suppress(ValueError):
        skip.add(str((manifests / ETCD_MANIFEST).relative_to(root)))
    plan = plan_install(members, root, aside_dir_for(manifests), frozenset(skip))
    if not dry_run:
        plan = apply_install(members, plan, chown=os.geteuid() == 0)
    return plan
