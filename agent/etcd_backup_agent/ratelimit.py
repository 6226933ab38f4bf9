"""A byte-rate cap for the snapshot stream (``[etcd] snapshot_rate_limit``).

The stream is read more slowly than etcd can send it; gRPC flow control then holds etcd's
sender back, so the member spends less disk bandwidth and CPU per second on the backup.
The clock and sleep are injected so the limiter is tested without wall-clock assertions.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# A short burst allowance keeps the reader from sleeping after every 32 KiB blob.
BURST_SECONDS = 0.25


class RateLimiter:
    """Blocks ``consume(n)`` so that bytes pass at no more than ``rate`` per second.

    ``rate <= 0`` means unlimited. Over any interval of T seconds at most
    ``rate * (T + BURST_SECONDS)`` bytes pass.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        burst_seconds: float = BURST_SECONDS,
    ) -> None:
        self.rate = float(rate)
        self._clock = clock
        self._sleep = sleep
        self._burst = burst_seconds
        self._due: float | None = None

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def consume(self, n: int) -> None:
        """Account for ``n`` bytes; sleep until they fit under the rate."""
        if self.rate <= 0 or n <= 0:
            return
        now = self._clock()
        # ``_due`` is when the bytes passed so far would have finished at exactly ``rate``;
        # idle time earns at most ``burst`` seconds of credit.
        start = now - self._burst if self._due is None else max(self._due, now - self._burst)
        self._due = start + n / self.rate
        wait = self._due - now
        if wait > 0:
            self._sleep(wait)
