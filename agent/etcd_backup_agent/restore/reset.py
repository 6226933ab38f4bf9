"""k3s / RKE2: the verified snapshot itself is what ``<k3s|rke2> server --cluster-reset``
restores from, so it is placed in the server's snapshot dir (never over an existing file)
and the operator is given the exact command (restore/swap.py: plan_cluster_reset).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from ..config import Settings
from ..errors import RestoreError
from ..events import Emit
from ..fsutil import fsync_dir
from ..manifest import Manifest
from ..store.base import Store
from .fetch import CHUNK, CheckedSnapshot, check_local_snapshot, fetched, resolve_backup
from .options import RestoreOptions
from .report import PlacedSnapshot, SwapDryRun
from .swap import cluster_reset_command, plan_cluster_reset
from .types import Exclusive, OpenStore


def place_file(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` (0600, fsynced); never replace an existing ``dest``."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    except OSError as exc:
        raise RestoreError(f"cannot write into {dest.parent}: {exc}") from None
    tmp = Path(tmp_name)
    try:
        with open(src, "rb") as f, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(f, out, CHUNK)
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, dest)  # fails when dest exists: nothing is overwritten
        fsync_dir(dest.parent)
    except FileExistsError:
        raise RestoreError(f"{dest} exists; nothing is overwritten") from None
    except OSError as exc:
        raise RestoreError(f"cannot write {dest}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def place_backup(
    settings: Settings,
    store: Store,
    manifest: Manifest,
    identity_text: str,
    dest: Path,
    emit: Emit,
) -> CheckedSnapshot:
    """Fetch and check ``manifest``'s backup, then copy its verified plaintext to ``dest``."""
    if dest.exists():
        raise RestoreError(f"{dest} exists; nothing is overwritten")
    with fetched(settings, store, manifest, identity_text, emit, "restore-") as checked:
        place_file(checked.path, dest)
    return checked


def cluster_reset(
    settings: Settings,
    options: RestoreOptions,
    identity_text: str | None,
    emit: Emit,
    *,
    exclusive: Exclusive,
    open_store: OpenStore,
) -> SwapDryRun | PlacedSnapshot:
    """Place the verified snapshot (a local ``--snapshot`` or a stored backup) where
    ``--cluster-reset`` restores from; with ``dry_run`` only plan it."""
    layout = str(options.layout)
    directory = settings.restore.reset_snapshot_dir
    if options.snapshot is not None:
        snapshot = options.snapshot
        plan = plan_cluster_reset(layout, directory, f"etcd-backup-agent-{snapshot.name}")
        if options.dry_run:
            return SwapDryRun(plan)
        with exclusive("restore"):
            report, _ = check_local_snapshot(snapshot, options.allow_no_trailer)
            place_file(snapshot, Path(plan.new_data_dir))
        revision = report.status.revision if report.status else None
        source = str(snapshot)
    else:
        assert identity_text is not None and options.backup is not None
        with exclusive("restore"), open_store() as store:
            manifest = resolve_backup(settings, store, options.backup)
            plan = plan_cluster_reset(layout, directory, f"etcd-backup-agent-{manifest.id}.db")
            if options.dry_run:
                return SwapDryRun(plan)
            checked = place_backup(
                settings, store, manifest, identity_text, Path(plan.new_data_dir), emit
            )
        revision = checked.revision
        source = manifest.id
    plan = replace(plan, applied=True)
    return PlacedSnapshot(
        placed_snapshot=plan.new_data_dir,
        source=source,
        revision=revision,
        layout=layout,
        command=cluster_reset_command(plan),
        swap=plan,
    )
