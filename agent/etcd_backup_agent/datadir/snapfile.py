"""``member/snap/<term>-<index>.snap``: the snapshotter's ``SaveSnap``.

The file is a ``snappb.Snapshot{crc, data}`` where data is the marshalled
``raftpb.Snapshot`` and crc its CRC-32 (Castagnoli). etcd writes it with mode 0666 before
the umask (``pioutil.WriteAndSyncFile(path, d, 0666)``) and fsyncs it.
"""

from __future__ import annotations

import os
from pathlib import Path

import google_crc32c

from . import raftpb


def snap_name(term: int, index: int) -> str:
    return f"{term:016x}-{index:016x}.snap"


def encode(raft_snapshot: bytes) -> bytes:
    """The ``.snap`` file content for a marshalled raftpb.Snapshot."""
    return raftpb.snap_file(google_crc32c.value(raft_snapshot), raft_snapshot)


def save(snap_dir: Path, term: int, index: int, raft_snapshot: bytes) -> Path:
    """Write and fsync the ``.snap`` file; return its path."""
    path = snap_dir / snap_name(term, index)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(encode(raft_snapshot))
            f.flush()
        os.fsync(fd)
    finally:
        os.close(fd)
    return path
