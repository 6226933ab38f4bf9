"""Seal and unseal snapshots: zstd then age (X25519), as streams with bounded memory.

The output is what stock tools read: ``age -d -i key.txt X | zstd -d > snapshot.db``.
Sealing is CPU-heavy and pyrage holds the GIL, so the daemon runs it in a child
process (``seal_child``); ``seal_file`` and ``unseal_stream`` here are the in-process
core. Every stage raises on failure; a stream never ends early (an early EOF would make a
valid, truncated age file).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import pyrage
import zstandard

from .errors import CryptoError
from .fsutil import punch_hole

CHUNK = 1024 * 1024
# consume=True frees the source's blocks behind the reader in steps of this many bytes
PUNCH_STEP = 32 * 1024 * 1024


@dataclass(frozen=True)
class SealResult:
    input_size: int
    compressed_size: int
    object_size: int
    object_sha256: str


@dataclass(frozen=True)
class UnsealResult:
    """``sha256`` of all output; ``data_sha256`` of all but its last 32 bytes (``trailer``):
    for a snapshot, the digest etcd's trailer must equal, computed without a re-read."""

    size: int
    sha256: str
    data_sha256: str = ""
    trailer: bytes = b""


class _CountingReader:
    """A readable that counts bytes; read() errors propagate (never a silent EOF)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.inner.read(n)
        self.count += len(data)
        return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True


class _ConsumingReader(_CountingReader):
    """A counting reader over a file that frees the blocks it has read (punch_hole)."""

    def __init__(self, inner: Any, step: int) -> None:
        super().__init__(inner)
        self.step = step
        self.freed = 0
        self.on_punch: Any = None

    def read(self, n: int = -1) -> bytes:
        data = super().read(n)
        if self.count - self.freed >= self.step or (not data and self.count > self.freed):
            end = self.count - self.count % 4096 if data else self.count
            if end > self.freed and punch_hole(self.inner.fileno(), self.freed, end - self.freed):
                self.freed = end
                if self.on_punch is not None:
                    self.on_punch(self.freed)
        return data


class _HashingWriter:
    """A writable that hashes and counts what passes into ``inner``."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.digest = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.count += len(data)
        self.inner.write(data)
        return len(data)

    def flush(self) -> None:
        self.inner.flush()

    def writable(self) -> bool:
        return True


class _TrailerHashingWriter(_HashingWriter):
    """Also hashes everything but the last TRAILER bytes (known only at the end)."""

    TRAILER = 32

    def __init__(self, inner: BinaryIO) -> None:
        super().__init__(inner)
        self.data_digest = hashlib.sha256()
        self.tail = b""

    def write(self, data: bytes) -> int:
        super().write(data)
        if len(data) >= self.TRAILER:
            self.data_digest.update(self.tail)
            self.data_digest.update(memoryview(data)[: -self.TRAILER])
            self.tail = bytes(data[-self.TRAILER :])
        else:
            joined = self.tail + bytes(data)
            self.data_digest.update(joined[: -self.TRAILER])
            self.tail = joined[-self.TRAILER :]
        return len(data)


def parse_recipients(recipients: list[str] | tuple[str, ...]) -> list[pyrage.x25519.Recipient]:
    try:
        return [pyrage.x25519.Recipient.from_str(r) for r in recipients]
    except Exception as exc:
        raise CryptoError(f"invalid age recipient: {exc}") from None


def parse_identities(text: str) -> list[pyrage.x25519.Identity]:
    """Identities from the text of an age identity file (comments and blank lines skipped)."""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(pyrage.x25519.Identity.from_str(line))
        except Exception:
            raise CryptoError(
                "identity file holds a line that is not an age X25519 identity"
            ) from None
    if not out:
        raise CryptoError("identity file holds no age identity (AGE-SECRET-KEY-...)")
    return out


def seal_file(
    src: Path,
    dst: Path,
    recipients: list[str] | tuple[str, ...],
    level: int,
    threads: int = 0,
    consume: bool = False,
    on_punch: Any = None,
) -> SealResult:
    """Compress ``src`` with zstd and encrypt it to ``recipients`` into ``dst`` (created new).

    ``consume=True`` frees ``src``'s disk blocks as they are read (the file is useless
    afterwards): disk use stays about one copy, whatever the compression ratio."""
    parsed = parse_recipients(recipients)
    cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
    # punching holes needs a descriptor open for writing (fallocate(2) says EBADF otherwise)
    with src.open("r+b" if consume else "rb") as fin, open(dst, "xb") as fout:
        size_hint = os.fstat(fin.fileno()).st_size
        counted_in: _CountingReader
        if consume:
            step = min(PUNCH_STEP, max(CHUNK, size_hint // 16))
            counted_in = _ConsumingReader(fin, step)
            counted_in.on_punch = on_punch
        else:
            counted_in = _CountingReader(fin)
        reader = cctx.stream_reader(cast(Any, counted_in), size=size_hint, read_size=CHUNK)
        compressed = _CountingReader(reader)
        out = _HashingWriter(fout)
        try:
            pyrage.encrypt_io(cast(Any, compressed), cast(Any, out), parsed)
        except Exception as exc:
            raise CryptoError(f"sealing {src.name} failed: {exc}") from None
        fout.flush()
        os.fsync(fout.fileno())
    if counted_in.count != size_hint:
        raise CryptoError(f"sealing {src.name}: read {counted_in.count} of {size_hint} bytes")
    return SealResult(
        input_size=counted_in.count,
        compressed_size=compressed.count,
        object_size=out.count,
        object_sha256=out.digest.hexdigest(),
    )


def unseal_stream(
    src: BinaryIO, dst: Path, identity_text: str, durable: bool = True
) -> UnsealResult:
    """Decrypt and decompress ``src`` into ``dst`` via a temporary file renamed on success.

    A tampered or truncated object raises CryptoError and leaves nothing under ``dst``.
    ``src`` may be the store's download stream: fetch, decryption and decompression then
    run as one pass. ``durable=False`` skips the fsync (a scratch file used and removed
    at once; after a crash it is swept, never read).
    """
    identities = parse_identities(identity_text)
    tmp = dst.with_name(f".{dst.name}.part")
    dctx = zstandard.ZstdDecompressor()
    try:
        with open(tmp, "xb") as fout:
            out = _TrailerHashingWriter(fout)
            writer: Any = dctx.stream_writer(cast(Any, out), write_size=CHUNK, closefd=False)
            try:
                pyrage.decrypt_io(cast(Any, src), writer, identities)
                writer.flush()
            except pyrage.DecryptError as exc:
                raise CryptoError(
                    f"cannot decrypt: {exc} (is this the identity of one of the recipients?)"
                ) from None
            except zstandard.ZstdError as exc:
                raise CryptoError(f"decompression failed: {exc}") from None
            except OSError as exc:
                raise CryptoError(
                    f"decryption failed (object tampered or truncated): {exc}"
                ) from None
            fout.flush()
            if durable:
                os.fsync(fout.fileno())
        os.replace(tmp, dst)
        return UnsealResult(
            size=out.count,
            sha256=out.digest.hexdigest(),
            data_sha256=out.data_digest.hexdigest(),
            trailer=out.tail,
        )
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# --- child-process runner -------------------------------------------------------------
