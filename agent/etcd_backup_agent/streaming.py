"""The parts of the overlapped backup: one pass over etcd's stream feeds the spool file
(for verification), the sealing child and, through it, the store.

    etcd stream --> Tee --> spool/snapshot-*.db     (verified once the stream ends)
                        \\-> SealStream child (zstd, age) --> Uploader thread --> ObjectWriter

Back-pressure runs the other way: a slow store blocks the uploader, which blocks the child's
stdout, which blocks the Tee, which stops reading the gRPC stream (and gRPC flow control then
holds etcd's sender back). Every buffer on the way is bounded.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from .ratelimit import RateLimiter
from .seal import CHUNK
from .seal_child import SealStream
from .store.base import ObjectWriter

Progress = Callable[[int, int], None]
PROGRESS_INTERVAL = 0.25  # at most 4 progress events a second


class Throttle:
    """Pass progress on at most every ``interval`` seconds, and always the final one."""

    def __init__(
        self,
        inner: Progress,
        interval: float = PROGRESS_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.interval = interval
        self.clock = clock
        self._last: float | None = None

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        final = total > 0 and done >= total
        if final or self._last is None or now - self._last >= self.interval:
            self._last = now
            self.inner(done, total)


class Tee:
    """The snapshot sink: each blob goes to the spool file and (while wanted) the sealer."""

    def __init__(
        self, raw: BinaryIO, seal: SealStream | None, limiter: RateLimiter | None = None
    ) -> None:
        self.raw = raw
        self.seal = seal
        self.limiter = limiter
        self.failure: BaseException | None = None  # set by the uploader: stop the stream
        self.drop_sealer = False  # set by the uploader: the upload failed, keep the spool copy

    def write(self, data: bytes) -> int:
        if self.limiter is not None:
            self.limiter.consume(len(data))
        if self.failure is not None:
            raise self.failure
        if self.drop_sealer and self.seal is not None:
            self.stop_sealing()
        self.raw.write(data)
        if self.seal is not None:
            self.seal.write(data)
        return len(data)

    def stop_sealing(self) -> None:
        """Stop feeding the sealer (the upload failed): the spool copy is still written."""
        seal, self.seal = self.seal, None
        if seal is not None:
            seal.kill()


class Uploader:
    """A thread moving the sealer's output into ``writer``, counting and hashing it.

    It never stops reading before the child's output ends: an upload failure is recorded,
    reported to ``on_failure`` and the rest is drained, so the child never blocks."""

    def __init__(
        self,
        seal: SealStream,
        writer: ObjectWriter | None,
        on_failure: Callable[[BaseException], None],
        block: int = CHUNK,
    ) -> None:
        self.seal = seal
        self.writer = writer
        self.on_failure = on_failure
        self.block = block
        self.size = 0
        self.digest = hashlib.sha256()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="seal-upload", daemon=True)

    def start(self) -> Uploader:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            while data := self.seal.read(self.block):
                self.size += len(data)
                self.digest.update(data)
                if self.writer is not None and self.error is None:
                    try:
                        self.writer.write(data)
                    except BaseException as exc:
                        self.error = exc
                        self.on_failure(exc)
        except (OSError, ValueError) as exc:  # the child's pipe closed under us (killed)
            if self.error is None:
                self.error = exc

    def join(self) -> None:
        self.thread.join()
