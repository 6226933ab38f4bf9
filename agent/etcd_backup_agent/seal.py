"""Seal and unseal snapshots: zstd then age (X25519), as streams with bounded memory.

The output is what stock tools read: ``age -d -i key.txt X | zstd -d > snapshot.db``.
Sealing is CPU-heavy and pyrage holds the GIL, so the daemon runs it in a child
process (``run_seal``); ``seal_file`` is the in-process core. Every stage raises on
failure; a stream never ends early (an early EOF would make a valid, truncated age file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import pyrage
import zstandard

from .errors import Cancelled, CryptoError

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class SealResult:
    input_size: int
    compressed_size: int
    object_size: int
    object_sha256: str


@dataclass(frozen=True)
class UnsealResult:
    size: int
    sha256: str


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
    src: Path, dst: Path, recipients: list[str] | tuple[str, ...], level: int, threads: int = 0
) -> SealResult:
    """Compress ``src`` with zstd and encrypt it to ``recipients`` into ``dst`` (created new)."""
    parsed = parse_recipients(recipients)
    cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
    with src.open("rb") as fin, open(dst, "xb") as fout:
        size_hint = os.fstat(fin.fileno()).st_size
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


def unseal_stream(src: BinaryIO, dst: Path, identity_text: str) -> UnsealResult:
    """Decrypt and decompress ``src`` into ``dst`` via a temporary file renamed on success.

    A tampered or truncated object raises CryptoError and leaves nothing under ``dst``.
    """
    identities = parse_identities(identity_text)
    tmp = dst.with_name(f".{dst.name}.part")
    dctx = zstandard.ZstdDecompressor()
    try:
        with open(tmp, "xb") as fout:
            out = _HashingWriter(fout)
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
            os.fsync(fout.fileno())
        os.replace(tmp, dst)
        return UnsealResult(size=out.count, sha256=out.digest.hexdigest())
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# --- child-process runner -------------------------------------------------------------


def run_seal(
    src: Path,
    dst: Path,
    recipients: tuple[str, ...],
    level: int,
    threads: int = 0,
    cancel: threading.Event | None = None,
) -> SealResult:
    """Run ``seal_file`` in a child Python process, so the caller's threads keep the GIL.

    ``cancel`` kills the child; ``dst`` is removed on any failure.
    """
    request = json.dumps(
        {
            "src": str(src),
            "dst": str(dst),
            "recipients": list(recipients),
            "level": level,
            "threads": threads,
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "etcd_backup_agent.seal"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={
            **os.environ,
            "PYTHONPATH": _package_parent() + os.pathsep + os.environ.get("PYTHONPATH", ""),
        },
    )
    watcher: threading.Thread | None = None
    done = threading.Event()
    if cancel is not None:

        def watch() -> None:
            while not done.wait(0.2):
                if cancel.is_set():
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    return

        watcher = threading.Thread(target=watch, name="seal-cancel", daemon=True)
        watcher.start()
    try:
        out, err = proc.communicate(request.encode())
    finally:
        done.set()
    try:
        if cancel is not None and cancel.is_set():
            raise Cancelled("sealing cancelled")
        if proc.returncode != 0:
            message = err.decode(errors="replace").strip().splitlines()
            raise CryptoError(message[-1] if message else f"seal worker exited {proc.returncode}")
        return SealResult(**json.loads(out))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            dst.unlink()
        raise


def _package_parent() -> str:
    return str(Path(__file__).resolve().parent.parent)


def _worker() -> int:
    req = json.loads(sys.stdin.read())
    try:
        result = seal_file(
            Path(req["src"]),
            Path(req["dst"]),
            tuple(req["recipients"]),
            int(req["level"]),
            int(req["threads"]),
        )
    except CryptoError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"sealing failed: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(_worker())
