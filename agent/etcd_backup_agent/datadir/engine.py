"""The native restore: what ``etcdutl snapshot restore`` writes, with nothing but Python.

Layout written (etcdutl 3.5 ``Restore``; 3.6 writes the same, see docs/restore.md):

    <data-dir>/                          0700
      member/                            0700
        snap/                            0700
          db                             0600  the snapshot without its trailer, members
                                               rewritten, consistent index/term set
          <016x term>-<016x index>.snap  0666 & ~umask  raft snapshot + v2 store
        wal/                             0700  (or --wal-dir)
          0000000000000000-0000000000000000.wal  0600, preallocated 64 MB

Everything is built inside hidden siblings of the target (and of ``--wal-dir``) and renamed
into place only when complete; a failure removes only those siblings.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import RestoreError
from ..fsutil import fsync_dir
from . import bootstrap, snapfile, wal
from .bolt_write import BoltWriteError
from .db import DbRewrite, DbWriteError, write_db
from .members import Cluster

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class NativeRestore:
    data_dir: Path
    wal_dir: Path
    member_id: str
    cluster_id: str
    revision: int
    bumped_from: int | None
    db_size: int
    snap_file: str


def _mkdirs(path: Path, stop: Path) -> None:
    """Create ``path`` and its missing parents below ``stop`` with mode 0700 (CreateDirAll)."""
    missing = []
    cur = path
    while cur != stop and not cur.exists():
        missing.append(cur)
        cur = cur.parent
    for p in reversed(missing):
        os.mkdir(p, 0o700)


def _holder(target: Path) -> Path:
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.restoring-", dir=parent))
    except OSError as exc:
        raise RestoreError(f"cannot create a staging dir beside {target}: {exc}") from None


def _empty_or_absent(path: Path) -> bool:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        return False
    return not path.exists() or not any(path.iterdir())


def _move_into_place(staged: Path, target: Path) -> None:
    if not _empty_or_absent(target):
        raise RestoreError(f"{target} was filled while restoring; nothing was changed there")
    staged.chmod(0o700)
    # rename(2) replaces only an empty directory: a target filled meanwhile fails here
    os.rename(staged, target)
    fsync_dir(target.parent)


def restore_native(
    snapshot: Path,
    cluster: Cluster,
    name: str,
    data_dir: Path,
    wal_dir: Path | None = None,
    *,
    bump_revision: int = 0,
    mark_compacted: bool = False,
    has_trailer: bool = True,
    progress: Progress | None = None,
) -> NativeRestore:
    """Restore ``snapshot`` as member ``name`` of ``cluster`` into ``data_dir``.

    ``data_dir`` must be absent or empty and ``wal_dir`` (when given) absent, as etcdutl
    demands. The source snapshot is only read.
    """
    local = cluster.member_named(name)
    if not _empty_or_absent(data_dir):
        raise RestoreError(f"data dir {data_dir} exists and is not empty")
    if wal_dir is not None and (wal_dir.exists() or wal_dir.is_symlink()):
        raise RestoreError(f"wal dir {wal_dir} exists; choose a new path")
    boot = bootstrap.bootstrap(cluster, name)
    holders = [_holder(data_dir)]
    try:
        staged = holders[0] / "data"
        snap_dir = staged / "member" / "snap"
        _mkdirs(snap_dir, holders[0])
        try:
            result = write_db(
                snapshot,
                snap_dir / "db",
                DbRewrite(
                    members=cluster.bucket_members(),
                    consistent_index=boot.hard_state.commit,
                    term=boot.hard_state.term,
                    bump_revision=bump_revision,
                    mark_compacted=mark_compacted,
                ),
                has_trailer=has_trailer,
                progress=progress,
            )
        except (DbWriteError, BoltWriteError) as exc:
            raise RestoreError(f"cannot write the restored db: {exc}") from None
        except OSError as exc:
            raise RestoreError(f"cannot write the restored db: {exc}") from None
        snap_path = snapfile.save(
            snap_dir, bootstrap.TERM, boot.snapshot_index, bootstrap.raft_snapshot(cluster, boot)
        )
        fsync_dir(snap_dir)
        if wal_dir is None:
            wal.create(staged / "member" / "wal", boot)
        else:
            holders.append(_holder(wal_dir))
            wal.create(holders[1] / "wal", boot)
        fsync_dir(staged / "member")
        try:
            if wal_dir is not None:
                _move_into_place(holders[1] / "wal", wal_dir)
            try:
                _move_into_place(staged, data_dir)
            except BaseException:
                if wal_dir is not None:
                    os.rename(wal_dir, holders[1] / "wal")
                raise
        except OSError as exc:
            raise RestoreError(f"cannot move the restored data into place: {exc}") from None
    finally:
        for h in holders:
            shutil.rmtree(h, ignore_errors=True)
    return NativeRestore(
        data_dir=data_dir,
        wal_dir=wal_dir or data_dir / "member" / "wal",
        member_id=local.id_hex,
        cluster_id=cluster.id_hex,
        revision=result.revision,
        bumped_from=result.bumped_from,
        db_size=result.size,
        snap_file=snap_path.name,
    )
