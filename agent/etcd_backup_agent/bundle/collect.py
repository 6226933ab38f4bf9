"""Walk the bundle's paths under the node root and read what a tar of them needs.

Symlinks are recorded as links and never followed; device files, FIFOs and sockets are
skipped with a warning; each regular file is opened with O_NOFOLLOW and checked to be the
file that was listed. Contents are read once (bounded by ``max_bytes``), so the sha256 in
the manifest is the digest of exactly the bytes put into the tar.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import stat
from dataclasses import dataclass, replace
from pathlib import Path

from .layout import on_node
from .record import BundleFile

MAX_BYTES_ERROR = "the bundle would exceed [bundle] max_bytes"


@dataclass(frozen=True)
class Item:
    meta: BundleFile
    data: bytes = b""


@dataclass(frozen=True)
class Collection:
    items: tuple[Item, ...]
    warnings: tuple[str, ...]
    errors: tuple[str, ...]  # any error fails the bundle (the snapshot is still stored)
    excluded: int = 0

    @property
    def data_bytes(self) -> int:
        return sum(len(i.data) for i in self.items)


def excluded(path: str, patterns: tuple[str, ...]) -> bool:
    """A glob with a '/' matches the whole absolute path, one without matches the name."""
    name = posixpath.basename(path)
    return any(fnmatch.fnmatchcase(path if "/" in pat else name, pat) for pat in patterns)


class _Walker:
    def __init__(self, root: Path, exclude: tuple[str, ...], max_bytes: int) -> None:
        self.root = root
        self.exclude = exclude
        self.max_bytes = max_bytes
        self.items: dict[str, Item] = {}
        self.warnings: list[str] = []
        self.errors: list[str] = []
        self.excluded = 0
        self.read = 0

    def top(self, path: str) -> None:
        try:
            os.lstat(on_node(self.root, path))
        except FileNotFoundError:
            self.warnings.append(f"{path}: does not exist (skipped)")
            return
        except OSError as exc:
            self.errors.append(f"{path}: cannot stat: {exc.strerror}")
            return
        self.visit(path)

    def visit(self, path: str) -> None:
        if path.lstrip("/") in self.items:
            return
        if excluded(path, self.exclude):
            self.excluded += 1
            return
        src = on_node(self.root, path)
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            return  # removed while walking
        except OSError as exc:
            self.errors.append(f"{path}: cannot stat: {exc.strerror}")
            return
        meta = BundleFile(
            path=path.lstrip("/"),
            type="",
            mode=f"{stat.S_IMODE(st.st_mode):04o}",
            uid=st.st_uid,
            gid=st.st_gid,
            mtime=int(st.st_mtime),
        )
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(src)
            except OSError as exc:
                self.errors.append(f"{path}: cannot read the link: {exc.strerror}")
                return
            self._add(Item(replace(meta, type="symlink", link=target)))
        elif stat.S_ISDIR(st.st_mode):
            self._add(Item(replace(meta, type="dir")))
            try:
                names = sorted(os.listdir(src))
            except OSError as exc:
                self.errors.append(f"{path}: cannot list: {exc.strerror}")
                return
            for name in names:
                self.visit(f"{path.rstrip('/')}/{name}")
        elif stat.S_ISREG(st.st_mode):
            data = self._read(path, src, st)
            if data is not None:
                digest = hashlib.sha256(data).hexdigest()
                self._add(Item(replace(meta, type="file", size=len(data), sha256=digest), data))
        else:
            self.warnings.append(f"{path}: not a regular file, directory or link (skipped)")

    def _read(self, path: str, src: Path, st: os.stat_result) -> bytes | None:
        budget = self.max_bytes - self.read
        try:
            fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            self.errors.append(f"{path}: cannot read: {exc.strerror}")
            return None
        try:
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
                self.errors.append(f"{path}: changed while it was read")
                return None
            chunks: list[bytes] = []
            size = 0
            while size <= budget:
                chunk = os.read(fd, min(1024 * 1024, budget - size + 1))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except OSError as exc:
            self.errors.append(f"{path}: cannot read: {exc.strerror}")
            return None
        finally:
            os.close(fd)
        if size > budget:
            self.errors.append(f"{path}: {MAX_BYTES_ERROR} ({self.max_bytes} bytes)")
            return None
        self.read += size
        return b"".join(chunks)

    def _add(self, item: Item) -> None:
        self.items[item.meta.path] = item


def collect(
    root: Path, paths: tuple[str, ...], exclude: tuple[str, ...], max_bytes: int
) -> Collection:
    """Everything under ``paths`` (absolute on the node, read under ``root``)."""
    walker = _Walker(root, exclude, max_bytes)
    for path in paths:
        walker.top(path)
    items = tuple(sorted(walker.items.values(), key=lambda i: i.meta.path))
    return Collection(items, tuple(walker.warnings), tuple(walker.errors), walker.excluded)


def holds_file(collection: Collection, path: str) -> bool:
    """True when ``path`` (absolute) is a regular file in the collection, directly or through
    links inside it (the apiserver reads through links)."""
    by_path = {i.meta.path: i.meta for i in collection.items}
    current = path.lstrip("/")
    for _ in range(16):
        meta = by_path.get(current)
        if meta is None:
            return False
        if meta.type == "file":
            return True
        if meta.type != "symlink":
            return False
        target = meta.link
        if not target.startswith("/"):
            target = posixpath.join("/" + posixpath.dirname(current), target)
        current = posixpath.normpath(target).lstrip("/")
    return False
