"""``restore --apply --layout kubeadm --with-bundle``: put the bundle's files back on the node.

Every file that exists and differs is first copied aside (same relative path under the
aside directory, with its mode, owner and mtime), then replaced atomically (a temporary
name in the same directory, renamed over it). Nothing is ever deleted: files on the node
that the bundle does not hold stay as they are. The kubeadm swap writes etcd.yaml itself
(pointing it at the restored data dir), so the bundle's copy of that one file is skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import RestoreError
from .extract import Member


@dataclass(frozen=True)
class InstallPlan:
    root: str
    aside_dir: str
    replaced: tuple[str, ...] = ()
    created: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    applied: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InstallPlan:
        """The plan of a socket reply (``to_dict``'s inverse)."""
        lists = {k: tuple(str(p) for p in d.get(k, ())) for k in _LISTS}
        return cls(str(d["root"]), str(d["aside_dir"]), applied=bool(d.get("applied")), **lists)


_LISTS = ("replaced", "created", "unchanged", "skipped")


def aside_dir_for(manifests_dir: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return manifests_dir.parent / f"bundle-aside-{stamp}"


def _same(member: Member, target: Path, st: os.stat_result) -> bool:
    m = member.meta
    if stat.S_IMODE(st.st_mode) != m.mode_bits and m.type != "symlink":
        return False
    if m.type == "dir":
        return stat.S_ISDIR(st.st_mode)
    if m.type == "symlink":
        return stat.S_ISLNK(st.st_mode) and os.readlink(target) == m.link
    return stat.S_ISREG(st.st_mode) and target.read_bytes() == member.data


def plan_install(
    members: list[Member], root: Path, aside: Path, skip: frozenset[str]
) -> InstallPlan:
    """What installing ``members`` under ``root`` would replace, create or leave alone."""
    replaced, created, unchanged, skipped = [], [], [], []
    for member in sorted(members, key=lambda m: m.meta.path):
        path = member.meta.path
        if path in skip:
            skipped.append(path)
            continue
        target = root / path
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            created.append(path)
            continue
        if _same(member, target, st) or (member.meta.type == "dir" and stat.S_ISDIR(st.st_mode)):
            unchanged.append(path)  # an existing directory keeps its mode
        elif member.meta.type == "dir" or stat.S_ISDIR(st.st_mode):
            raise RestoreError(
                f"{target}: the bundle holds a {member.meta.type} where the node has "
                "a different kind of entry; move it away by hand first (nothing was changed)"
            )
        else:
            replaced.append(path)
    return InstallPlan(
        str(root),
        str(aside),
        tuple(replaced),
        tuple(created),
        tuple(unchanged),
        tuple(skipped),
    )


def apply_install(members: list[Member], plan: InstallPlan, chown: bool) -> InstallPlan:
    """Copy aside, then write, every replaced or created entry of ``plan``."""
    root, aside = Path(plan.root), Path(plan.aside_dir)
    todo = set(plan.replaced) | set(plan.created)
    aside.mkdir(mode=0o700, parents=True)
    for path in plan.replaced:
        dst = aside / path
        dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copy2(root / path, dst, follow_symlinks=False)
        with contextlib.suppress(OSError):
            st = os.lstat(root / path)
            os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    for member in sorted(members, key=lambda m: m.meta.path):
        m = member.meta
        if m.path not in todo:
            continue
        target = root / m.path
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        if m.type == "dir":
            target.mkdir(mode=m.mode_bits)
            if chown:
                os.chown(target, m.uid, m.gid)
            continue
        tmp = target.with_name(f".{target.name}.from-bundle")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if m.type == "symlink":
            os.symlink(m.link, tmp)  # as it was on the node (read_members checked it)
            if chown:
                os.lchown(tmp, m.uid, m.gid)
        else:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                view = memoryview(member.data)
                while view:
                    view = view[os.write(fd, view) :]
                if chown:
                    os.fchown(fd, m.uid, m.gid)
                os.fchmod(fd, m.mode_bits)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.utime(tmp, (m.mtime, m.mtime))
        os.rename(tmp, target)
    return InstallPlan(**{**asdict(plan), "applied": True})


def format_install(plan: InstallPlan) -> list[str]:
    state = "done" if plan.applied else "plan"
    lines = [f"bundle install under {plan.root} ({state}):"]
    lines += [f"  replaced {p} (original copied to {plan.aside_dir}/{p})" for p in plan.replaced]
    lines += [f"  created  {p}" for p in plan.created]
    lines += [f"  skipped  {p} (the swap writes it)" for p in plan.skipped]
    lines.append(f"  {len(plan.unchanged)} entries already identical")
    if plan.replaced:
        lines.append(f"  undo: cp -a {plan.aside_dir}/. {plan.root.rstrip('/')}/")
    return lines
