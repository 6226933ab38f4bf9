"""Read a bundle tar and write it under a directory, never outside it.

Every member is checked before anything is written: names must be relative and free of
``..``; only regular files, directories and symlinks are accepted; a relative link target
must stay inside the directory, and an absolute one is read as rooted at the directory (it
names a path on the node) and written as the equivalent relative link. Files are created
with O_EXCL|O_NOFOLLOW below directories this module created, so nothing already on disk
(a link planted beside the target, say) is followed or overwritten.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import RestoreError
from .record import BundleFile


@dataclass(frozen=True)
class Member:
    meta: BundleFile
    data: bytes = b""


def _safe_name(name: str) -> str:
    """The normalised relative name, or raise for absolute names and any '..' part."""
    stripped = name.rstrip("/")
    if not stripped or stripped.startswith("/") or "\0" in stripped:
        raise RestoreError(f"bundle member {name!r}: absolute or empty name (refusing)")
    parts = stripped.split("/")
    if any(p == ".." for p in parts):
        raise RestoreError(f"bundle member {name!r}: '..' in the name (refusing)")
    norm = posixpath.normpath(stripped)
    if norm in (".", "") or norm.startswith("../"):
        raise RestoreError(f"bundle member {name!r}: name escapes the directory (refusing)")
    return norm


def link_inside(name: str, target: str) -> str:
    """The target to write for a link ``name`` -> ``target``, relative and inside the root.

    Raise when a relative target climbs out of the root."""
    if target.startswith("/"):
        absolute = posixpath.normpath(target).lstrip("/")
    else:
        absolute = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if absolute == ".." or absolute.startswith("../") or absolute.startswith("/"):
            raise RestoreError(f"bundle link {name!r} -> {target!r} points outside (refusing)")
    return posixpath.relpath(absolute or ".", posixpath.dirname(name) or ".")


def read_members(tar_bytes: bytes) -> list[Member]:
    """Parse and check every member of a bundle tar; raise RestoreError on the first bad one."""
    members: list[Member] = []
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            for info in tar:
                name = _safe_name(info.name)
                if name in seen:
                    raise RestoreError(f"bundle member {name!r} appears twice (refusing)")
                seen.add(name)
                meta = BundleFile(
                    path=name,
                    type="",
                    mode=f"{info.mode & 0o7777:04o}",
                    uid=info.uid,
                    gid=info.gid,
                    mtime=int(info.mtime),
                )
                if info.isreg():
                    f = tar.extractfile(info)
                    data = f.read() if f is not None else b""
                    digest = hashlib.sha256(data).hexdigest()
                    members.append(
                        Member(replace(meta, type="file", size=len(data), sha256=digest), data)
                    )
                elif info.isdir():
                    members.append(Member(replace(meta, type="dir")))
                elif info.issym():
                    link_inside(name, info.linkname)
                    members.append(Member(replace(meta, type="symlink", link=info.linkname)))
                else:
                    raise RestoreError(
                        f"bundle member {name!r}: not a file, directory or symlink (refusing)"
                    )
    except tarfile.TarError as exc:
        raise RestoreError(f"bundle is not a readable tar: {exc}") from None
    # a member below a symlink member would be written through that link
    links = {m.meta.path for m in members if m.meta.type == "symlink"}
    for m in members:
        parent = posixpath.dirname(m.meta.path)
        while parent:
            if parent in links:
                raise RestoreError(f"bundle member {m.meta.path!r} lies below a link (refusing)")
            parent = posixpath.dirname(parent)
    return members


def check_target(dest: Path) -> None:
    """Raise unless ``dest`` does not exist or is an empty directory (before any download)."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise RestoreError(f"{dest} exists and is not a directory")
    if dest.is_dir() and any(dest.iterdir()):
        raise RestoreError(f"{dest} is not empty; bundle extract never overwrites: use a new dir")


def extract(members: list[Member], dest: Path, chown: bool) -> list[str]:
    """Write ``members`` under ``dest`` (which must not exist, or be an empty directory)."""
    check_target(dest)
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    root = dest.resolve()
    written: list[str] = []
    dirs: list[Member] = []
    for m in sorted(members, key=lambda m: m.meta.path):
        target = root / m.meta.path
        _make_parents(root, target.parent)
        if m.meta.type == "dir":
            if not target.is_dir() or target.is_symlink():
                target.mkdir(mode=0o700)
            dirs.append(m)
        elif m.meta.type == "symlink":
            os.symlink(link_inside(m.meta.path, m.meta.link), target)
            if chown:
                os.lchown(target, m.meta.uid, m.meta.gid)
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(target, flags, 0o600)
            try:
                view = memoryview(m.data)
                while view:
                    view = view[os.write(fd, view) :]
                if chown:
                    os.fchown(fd, m.meta.uid, m.meta.gid)
                os.fchmod(fd, m.meta.mode_bits)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.utime(target, (m.meta.mtime, m.meta.mtime), follow_symlinks=False)
        written.append(m.meta.path)
    # directories last (deepest first): their modes may forbid writing into them
    for m in sorted(dirs, key=lambda m: m.meta.path, reverse=True):
        target = root / m.meta.path
        if chown:
            os.chown(target, m.meta.uid, m.meta.gid, follow_symlinks=False)
        os.chmod(target, m.meta.mode_bits)
        os.utime(target, (m.meta.mtime, m.meta.mtime), follow_symlinks=False)
    return written


def _make_parents(root: Path, parent: Path) -> None:
    """Create missing parents (0755) below ``root``; refuse any that is a link."""
    rel = parent.relative_to(root)
    current = root
    for part in rel.parts:
        current = current / part
        if current.is_symlink():
            raise RestoreError(f"{current} is a symlink; refusing to write below it")
        if not current.exists():
            current.mkdir(mode=0o755)
