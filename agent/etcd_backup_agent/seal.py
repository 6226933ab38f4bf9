"""Seal and unseal snapshots: zstd then age (X25519), as streams with bounded memory.

The output is what stock tools read: ``age -d -i key.txt X | zstd -d > snapshot.db``.
Sealing is CPU-heavy and pyrage holds the GIL, so the daemon runs it in a child
process (``run_seal``); ``seal_file`` is the in-process core. Every stage raises on
failure; a stream never ends early (an early EOF would make a valid, truncated age file).
"""

from __future__ import annotations

import contextlib
import fcntl
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
from .fsutil import punch_hole

CHUNK = 1024 * 1024
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1024 * 1024
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


def run_seal(
    src: Path,
    dst: Path,
    recipients: tuple[str, ...],
    level: int,
    threads: int = 0,
    cancel: threading.Event | None = None,
    consume: bool = False,
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
            "consume": consume,
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "etcd_backup_agent.seal"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(),
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


def _child_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": _package_parent() + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }


class SealStream:
    """A child process sealing a byte stream: raw bytes in on its stdin, the sealed object
    (zstd, then age) out on its stdout, as they come.

    The backup feeds it the snapshot while the snapshot streams in, and a reader thread
    uploads what comes out. The child is what keeps pyrage (which holds the GIL) and zstd
    off the daemon's serving threads. Failures: ``write`` raises CryptoError when the child
    died; ``finish`` raises CryptoError/Cancelled; ``kill`` is always safe.
    """

    def __init__(
        self,
        recipients: tuple[str, ...],
        level: int,
        threads: int = 0,
    ) -> None:
        parse_recipients(recipients)  # fail here, in the caller, with a clear message
        request = json.dumps({"recipients": list(recipients), "level": level, "threads": threads})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "etcd_backup_agent.seal", "--stream", request],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            env=_child_env(),
        )
        for pipe in (self.proc.stdin, self.proc.stdout):
            # 1 MiB pipes instead of 64 KiB: the writer and the child wake each other up
            # once per 32 blobs rather than once per 2 (fewer context switches on 2 cores)
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_SIZE)  # type: ignore[union-attr]
        self._err: list[bytes] = []
        self._err_reader = threading.Thread(target=self._drain_err, name="seal-stderr", daemon=True)
        self._err_reader.start()
        self.fed = 0

    def _drain_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if len(self._err) < 200:
                self._err.append(line)

    def _failure(self) -> str:
        self._err_reader.join(timeout=5)
        lines = b"".join(self._err).decode(errors="replace").strip().splitlines()
        lines = [ln for ln in lines if not ln.startswith("{")]
        return lines[-1] if lines else f"seal worker exited {self.proc.returncode}"

    def write(self, data: bytes | memoryview) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
        except (BrokenPipeError, ValueError, OSError):
            self.proc.wait()
            raise CryptoError(f"sealing failed: {self._failure()}") from None
        self.fed += len(data)

    def read(self, n: int) -> bytes:
        """Up to ``n`` sealed bytes (fewer only at the end); b"" once the child is done."""
        assert self.proc.stdout is not None
        out = bytearray()
        while len(out) < n:
            chunk = self.proc.stdout.read(n - len(out))
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def close_input(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def finish(self) -> SealResult:
        """Wait for the child (input closed, output drained); its counts of what it sealed."""
        self.close_input()
        code = self.proc.wait()
        self._err_reader.join(timeout=5)
        if code != 0:
            raise CryptoError(f"sealing failed: {self._failure()}")
        try:
            last = b"".join(self._err).decode().strip().splitlines()[-1]
            result = SealResult(**json.loads(last))
        except (IndexError, ValueError, TypeError):
            raise CryptoError("seal worker gave no result") from None
        if result.input_size != self.fed:
            raise CryptoError(f"sealing: the worker read {result.input_size} of {self.fed} bytes")
        return result

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.close_input()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            with contextlib.suppress(OSError):
                self.proc.stdout.close()


def _stream_worker(request: str) -> int:
    """stdin (raw snapshot) -> zstd -> age -> stdout; the result as JSON on stderr's last line."""
    req = json.loads(request)
    try:
        parsed = parse_recipients(tuple(req["recipients"]))
        cctx = zstandard.ZstdCompressor(
            level=int(req["level"]), threads=int(req["threads"]), write_checksum=True
        )
        fin = os.fdopen(sys.stdin.fileno(), "rb", buffering=CHUNK, closefd=False)
        fout = os.fdopen(sys.stdout.fileno(), "wb", buffering=CHUNK, closefd=False)
        counted_in = _CountingReader(fin)
        reader = cctx.stream_reader(cast(Any, counted_in), read_size=CHUNK)
        compressed = _CountingReader(reader)
        out = _HashingWriter(fout)
        try:
            pyrage.encrypt_io(cast(Any, compressed), cast(Any, out), parsed)
        except Exception as exc:
            raise CryptoError(f"sealing the stream failed: {exc}") from None
        fout.flush()
    except CryptoError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"sealing failed: {exc}\n")
        return 1
    result = SealResult(
        input_size=counted_in.count,
        compressed_size=compressed.count,
        object_size=out.count,
        object_sha256=out.digest.hexdigest(),
    )
    sys.stderr.write(json.dumps(asdict(result)) + "\n")
    return 0


def _worker() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "--stream":
        return _stream_worker(sys.argv[2])
    req = json.loads(sys.stdin.read())
    try:
        result = seal_file(
            Path(req["src"]),
            Path(req["dst"]),
            tuple(req["recipients"]),
            int(req["level"]),
            int(req["threads"]),
            consume=bool(req.get("consume", False)),
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
