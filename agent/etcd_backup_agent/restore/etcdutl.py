"""The etcdutl engine: ``etcdutl snapshot restore`` into a hidden sibling of the target,
renamed into place only when it succeeded (a failed restore leaves no half-written dir).

``[restore] etcdutl`` names the binary; ``--bump-revision`` needs etcdutl >= 3.5.10.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..binaries import candidates
from ..errors import RestoreError
from ..events import Emit, note, progress
from ..fsutil import fsync_dir
from .member import MemberSpec, check_target, check_wal_target

BUMP_MIN_VERSION = (3, 5, 10)


@dataclass(frozen=True)
class Etcdutl:
    path: str
    version: tuple[int, int, int]

    @property
    def version_text(self) -> str:
        return ".".join(str(p) for p in self.version)

    @property
    def can_bump(self) -> bool:
        return self.version >= BUMP_MIN_VERSION


def find_etcdutl(configured: str) -> Etcdutl:
    """Locate a working etcdutl (``[restore] etcdutl``) and read its version.

    Each candidate (see binaries.candidates) must answer ``etcdutl version``; the first
    that does is used, so a broken wrapper on PATH does not hide a working binary.
    """
    found = candidates(configured)
    if not found:
        raise RestoreError(
            f"etcdutl not found ({configured!r}): install etcd's etcdutl or set [restore] etcdutl"
        )
    failures = []
    for path in found:
        try:
            out = subprocess.run(
                [path, "version"], capture_output=True, text=True, timeout=30, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            failures.append(f"{path}: {exc}")
            continue
        m = re.search(r"etcdutl version:\s*(\d+)\.(\d+)\.(\d+)", out) or re.search(
            r"(\d+)\.(\d+)\.(\d+)", out
        )
        if not m:
            failures.append(f"{path}: cannot read a version from {out.strip()!r}")
            continue
        return Etcdutl(path, (int(m.group(1)), int(m.group(2)), int(m.group(3))))
    raise RestoreError("no working etcdutl: " + "; ".join(failures))


def restore_argv(
    etcdutl: Etcdutl,
    snapshot: Path,
    spec: MemberSpec,
    data_dir: Path,
    wal_dir: Path | None = None,
    skip_hash_check: bool = False,
) -> list[str]:
    """The etcdutl command line restoring ``snapshot`` as ``spec`` into ``data_dir``."""
    argv = [
        etcdutl.path,
        "snapshot",
        "restore",
        str(snapshot),
        "--data-dir",
        str(data_dir),
        "--name",
        spec.name,
        *spec.cluster_flags(),
    ]
    if wal_dir is not None:
        argv += ["--wal-dir", str(wal_dir)]
    if skip_hash_check:
        argv.append("--skip-hash-check")
    if spec.bump_revision:
        argv += ["--bump-revision", str(spec.bump_revision), "--mark-compacted"]
    return argv


def run_etcdutl(
    etcdutl: Etcdutl, snapshot: Path, spec: MemberSpec, emit: Emit, skip_hash_check: bool = False
) -> None:
    """Restore into a hidden sibling of the target, then rename it into place."""
    target = spec.data_dir
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if spec.wal_dir is not None:
            spec.wal_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RestoreError(f"cannot create {parent}: {exc.strerror}") from None
    holder = Path(tempfile.mkdtemp(prefix=f".{target.name}.restoring-", dir=parent))
    wal_holder = None
    staged = holder / "data"
    try:
        staged_wal = None
        if spec.wal_dir is not None:
            wal_holder = Path(
                tempfile.mkdtemp(prefix=f".{spec.wal_dir.name}.restoring-", dir=spec.wal_dir.parent)
            )
            staged_wal = wal_holder / "wal"
        argv = restore_argv(etcdutl, snapshot, spec, staged, staged_wal, skip_hash_check)
        note(emit, "running " + shlex.join(["etcdutl", *argv[1:]]))
        progress(emit, "etcdutl", 0, 1)
        try:
            proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=3600)
        except (OSError, subprocess.SubprocessError) as exc:
            raise RestoreError(f"etcdutl snapshot restore failed to run: {exc}") from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise RestoreError(
                f"etcdutl snapshot restore failed (exit {proc.returncode}): " + " | ".join(tail)
            )
        progress(emit, "etcdutl", 1, 1)
        check_target(target)
        check_wal_target(spec.wal_dir)
        try:
            if staged_wal is not None and spec.wal_dir is not None:
                os.rename(staged_wal, spec.wal_dir)
                fsync_dir(spec.wal_dir.parent)
            staged.chmod(0o700)
            # rename(2) replaces only an empty directory: a target filled meanwhile fails here
            os.rename(staged, target)
        except OSError as exc:
            if staged_wal is not None and spec.wal_dir is not None and spec.wal_dir.exists():
                with contextlib.suppress(OSError):
                    os.rename(spec.wal_dir, staged_wal)
            raise RestoreError(f"cannot move the restored data into {target}: {exc}") from None
        fsync_dir(parent)
    finally:
        shutil.rmtree(holder, ignore_errors=True)
        if wal_holder is not None:
            shutil.rmtree(wal_holder, ignore_errors=True)
