"""The 32-byte sha256 trailer that ``etcdctl snapshot save`` leaves at the end of a snapshot."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

TRAILER_SIZE = 32
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class TrailerResult:
    """``present``: size % 512 == 32; ``ok``: the sha256 matches (None when absent)."""

    present: bool
    ok: bool | None
    file_size: int
    expected: str | None
    actual: str | None
    message: str


def _sha256_prefix(fd: int, length: int) -> bytes:
    h = hashlib.sha256()
    off = 0
    while off < length:
        chunk = os.pread(fd, min(CHUNK, length - off), off)
        if not chunk:
            raise OSError("file shrank while reading")
        h.update(chunk)
        off += len(chunk)
    return h.digest()


def check_trailer(path: str | os.PathLike[str], known_sha256: str | None = None) -> TrailerResult:
    """Check the trailer by streaming the file (bounded memory).

    ``known_sha256``: the digest of the data as it was written (the backup hashed the
    snapshot stream on its way to this file); the trailer is compared with it and the
    file is not read a second time."""
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        rem = size % 512
        if rem == 0:
            return TrailerResult(
                False, None, size, None, None, "no sha256 trailer (size is a whole number of pages)"
            )
        if rem != TRAILER_SIZE:
            return TrailerResult(
                False,
                False,
                size,
                None,
                None,
                f"size {size} is neither whole pages nor pages + a 32-byte trailer: "
                "the file is truncated or padded",
            )
        stored = os.pread(fd, TRAILER_SIZE, size - TRAILER_SIZE)
        if known_sha256 is not None:
            actual = bytes.fromhex(known_sha256)
        else:
            actual = _sha256_prefix(fd, size - TRAILER_SIZE)
    finally:
        os.close(fd)
    if actual == stored:
        return TrailerResult(True, True, size, stored.hex(), actual.hex(), "sha256 trailer matches")
    return TrailerResult(
        True,
        False,
        size,
        stored.hex(),
        actual.hex(),
        f"sha256 trailer mismatch: the file changed after it was saved "
        f"(trailer {stored.hex()[:16]}..., content {actual.hex()[:16]}...)",
    )
