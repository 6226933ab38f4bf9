"""The bundle object: a tar of the collected files, zstd-compressed, age-encrypted.

Stock tools read it: ``age -d -i KEY OBJ | zstd -d | tar -t``. The bundle is small (bounded
by ``[bundle] max_bytes``) and sealed in-process: only the compressed tar is held in memory
and the plaintext never touches the disk.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pyrage
import zstandard

from ..errors import CryptoError
from ..seal import parse_identities, parse_recipients
from .collect import Item

_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}


@dataclass(frozen=True)
class SealedBundle:
    tar_size: int
    tar_sha256: str
    compressed_size: int
    object_size: int
    object_sha256: str


class _Hashing(io.RawIOBase):
    """Counts and hashes what is written through it into ``inner``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.digest = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = bytes(data)
        self.digest.update(view)
        self.count += len(view)
        self.inner.write(view)
        return len(view)


def tar_info(item: Item) -> tarfile.TarInfo:
    m = item.meta
    info = tarfile.TarInfo(m.path + ("/" if m.type == "dir" else ""))
    info.type = _TYPES[m.type]
    info.mode = m.mode_bits
    info.uid, info.gid = m.uid, m.gid
    info.uname = info.gname = ""
    info.mtime = m.mtime
    info.size = len(item.data) if m.type == "file" else 0
    info.linkname = m.link
    return info


def write_tar(items: tuple[Item, ...], out: Any) -> None:
    """A POSIX (pax) tar of ``items`` into the writable ``out``."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for item in items:
            info = tar_info(item)
            tar.addfile(info, io.BytesIO(item.data) if item.meta.type == "file" else None)


def seal_bundle(
    items: tuple[Item, ...], dst: Path, recipients: tuple[str, ...], level: int
) -> SealedBundle:
    """Write the sealed bundle to ``dst`` (created new, fsynced)."""
    parsed = parse_recipients(recipients)
    compressed = io.BytesIO()
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
    with cctx.stream_writer(compressed, closefd=False) as zw:
        plain = _Hashing(zw)
        write_tar(items, plain)
    data = compressed.getvalue()
    with open(dst, "xb") as f:
        out = _Hashing(f)
        try:
            pyrage.encrypt_io(io.BytesIO(data), cast(Any, out), parsed)
        except Exception as exc:
            raise CryptoError(f"sealing the bundle failed: {exc}") from None
        f.flush()
        os.fsync(f.fileno())
    return SealedBundle(
        tar_size=plain.count,
        tar_sha256=plain.digest.hexdigest(),
        compressed_size=len(data),
        object_size=out.count,
        object_sha256=out.digest.hexdigest(),
    )


def unseal_bundle(sealed: bytes, identity_text: str, max_tar: int) -> bytes:
    """Decrypt and decompress a bundle object; refuse a tar larger than ``max_tar`` bytes."""
    identities = parse_identities(identity_text)
    try:
        compressed = pyrage.decrypt(sealed, identities)
    except pyrage.DecryptError as exc:
        raise CryptoError(
            f"cannot decrypt the bundle: {exc} (is this the identity of one of the recipients?)"
        ) from None
    try:
        parts: list[bytes] = []
        size = 0
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(compressed)) as r:
            while size <= max_tar and (chunk := r.read(max_tar + 1 - size)):
                parts.append(chunk)
                size += len(chunk)
        tar = b"".join(parts)
    except zstandard.ZstdError as exc:
        raise CryptoError(f"bundle decompression failed: {exc}") from None
    if len(tar) > max_tar:
        raise CryptoError(f"bundle tar is larger than the manifest says ({max_tar} bytes)")
    return tar
