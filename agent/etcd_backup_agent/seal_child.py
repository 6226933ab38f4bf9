"""The sealing child process: zstd then age, off the daemon's GIL.

pyrage holds the GIL while it encrypts, and zstd at high levels is CPU-bound, so the
daemon seals in a child Python process (``python -m etcd_backup_agent.seal_child``):
``run_seal`` seals one spooled file, ``SealStream`` seals a stream as it is fed (the
backup's overlapped path). The child's stderr carries its errors, and its result as JSON
on the last line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import pyrage
import zstandard

from .errors import Cancelled, CryptoError
from .seal import (
    CHUNK,
    SealResult,
    _CountingReader,
    _HashingWriter,
    parse_recipients,
    seal_file,
)

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1024 * 1024


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
        [sys.executable, "-m", "etcd_backup_agent.seal_child"],
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
            [sys.executable, "-m", "etcd_backup_agent.seal_child", "--stream", request],
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


def _failed(exc: CryptoError | OSError) -> int:
    """The child's failure, as the parent shows it: its stderr's last line, exit 1."""
    text = str(exc) if isinstance(exc, CryptoError) else f"sealing failed: {exc}"
    sys.stderr.write(f"{text}\n")
    return 1


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
    except (CryptoError, OSError) as exc:
        return _failed(exc)
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
    except (CryptoError, OSError) as exc:
        return _failed(exc)
    sys.stdout.write(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(_worker())
