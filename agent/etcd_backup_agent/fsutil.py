"""Small durable-filesystem helpers shared by the stores, the spool and restore."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it survives a crash (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc: dict[str, Any] = {}


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Free the disk blocks of ``[offset, offset+length)`` (the file keeps its size).

    Lets a sequential reader give a file's space back as it goes (the spool then never
    holds a whole raw snapshot and its whole sealed copy at once). False when the
    filesystem cannot do it; the caller carries on without."""
    if length <= 0:
        return True
    if "fallocate" not in _libc:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fn = libc.fallocate
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
            fn.restype = ctypes.c_int
            _libc["fallocate"] = fn
        except (OSError, AttributeError):
            _libc["fallocate"] = None
    fn = _libc["fallocate"]
    if fn is None:
        return False
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    return int(fn(fd, mode, offset, length)) == 0


def disk_usage(path: Path) -> int:
    """Bytes of disk a file occupies (its allocated blocks; 0 when it does not exist)."""
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0
