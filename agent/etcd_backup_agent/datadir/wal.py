"""A new WAL as etcd's ``wal.Create`` + ``Save`` + ``SaveSnapshot`` write it.

Facts from ``server/wal`` (3.5) / ``server/storage/wal`` (3.6), which agree on the format:

- the first segment is ``0000000000000000-0000000000000000.wal``, preallocated to
  ``SegmentSizeBytes`` (64,000,000 bytes) and written from offset 0; it is created in
  ``<dir>.tmp`` (mode 0700, file 0600) which is then renamed to ``<dir>`` and the parent
  directory fsynced;
- each record is a ``walpb.Record`` framed by an 8-byte little-endian length whose top byte,
  when the record is not a multiple of 8 bytes long, is ``0x80 | padding`` and the record
  is followed by that many zero bytes;
- ``Record.crc`` is the running CRC-32 (Castagnoli) of every record's data so far in the
  file, starting from the previous segment's (0 for the first); the first record is a
  crcType record carrying that start value;
- ``Create`` writes crc, metadata and an empty snapshot record; a restore then saves the
  entries, the hard state, and the snapshot record of the ``.snap``.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

import google_crc32c

from ..fsutil import fsync_dir
from . import raftpb

SEGMENT_SIZE_BYTES = 64 * 1000 * 1000
FIRST_SEGMENT = f"{0:016x}-{0:016x}.wal"


def frame(record: bytes) -> bytes:
    """One record with its length field and padding (``encodeFrameSize``)."""
    pad = (8 - len(record) % 8) % 8
    length = len(record)
    if pad:
        length |= (0x80 | pad) << 56
    return length.to_bytes(8, "little") + record + b"\0" * pad


class Encoder:
    """The WAL encoder: frames records and keeps the CRC chain."""

    def __init__(self, prev_crc: int = 0) -> None:
        self.crc = prev_crc
        self.out = bytearray()

    def encode(self, record_type: int, data: bytes | None) -> None:
        if data:
            self.crc = google_crc32c.extend(self.crc, data)
        self.out += frame(raftpb.wal_record(record_type, self.crc, data))


def records(boot: raftpb.Bootstrap) -> bytes:
    """The bytes at the start of the restored WAL segment (before the zero tail)."""
    enc = Encoder()
    enc.encode(raftpb.CRC_TYPE, None)
    enc.encode(raftpb.METADATA_TYPE, boot.metadata)
    enc.encode(raftpb.SNAPSHOT_TYPE, raftpb.wal_snapshot(0, 0, None))
    for e in boot.entries:
        enc.encode(raftpb.ENTRY_TYPE, e.encode())
    enc.encode(raftpb.STATE_TYPE, boot.hard_state.encode())
    enc.encode(
        raftpb.SNAPSHOT_TYPE,
        raftpb.wal_snapshot(boot.snapshot_index, boot.snapshot_term, boot.conf_state),
    )
    return bytes(enc.out)


def _preallocate(fd: int, size: int) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        # etcd falls back to ftruncate where the filesystem cannot fallocate
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
        os.ftruncate(fd, size)


def create(wal_dir: Path, boot: raftpb.Bootstrap) -> Path:
    """Write the WAL of a restored member into ``wal_dir`` (which must not exist)."""
    tmp = wal_dir.with_name(wal_dir.name + ".tmp")
    os.mkdir(tmp, 0o700)
    try:
        path = tmp / FIRST_SEGMENT
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _preallocate(fd, SEGMENT_SIZE_BYTES)
            data = records(boot)
            written = 0
            while written < len(data):
                written += os.pwrite(fd, data[written:], written)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(tmp)
        os.rename(tmp, wal_dir)
    except BaseException:
        with contextlib.suppress(OSError):
            for child in tmp.iterdir():
                child.unlink()
            tmp.rmdir()
        raise
    fsync_dir(wal_dir.parent)
    return wal_dir / FIRST_SEGMENT
