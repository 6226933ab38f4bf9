"""The stream rate cap, driven by an injected clock (no wall-clock assertions)."""

from __future__ import annotations

import pytest

from etcd_backup_agent.ratelimit import RateLimiter
from etcd_backup_agent.streaming import Throttle


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.slept += seconds
        self.now += seconds


@pytest.mark.parametrize("blob", [512, 32768, 1 << 20])
def test_bytes_never_pass_faster_than_the_rate(blob: int) -> None:
    clock = FakeClock()
    rate = 100 * blob
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep, burst_seconds=0.25)
    start = clock.now
    passed = 0
    total = 5000 * blob  # 50 s at the rate
    while passed < total:
        limiter.consume(blob)
        passed += blob
        # after consume returns, what passed fits under rate * (elapsed + burst)
        assert passed <= rate * (clock.now - start + 0.25) + blob
    elapsed = clock.now - start
    assert elapsed == pytest.approx(total / rate - 0.25, rel=0.01)


def test_a_slow_reader_earns_at_most_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1000, clock=clock, sleep=clock.sleep, burst_seconds=0.5)
    limiter.consume(100)
    clock.now += 3600  # idle for an hour (e.g. the store was slow)
    clock.slept = 0
    limiter.consume(2500)  # 2.5 s worth: only 0.5 s of credit
    assert clock.slept == pytest.approx(2.0)


def test_unlimited_never_sleeps() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        limiter.consume(1 << 20)
    assert clock.slept == 0 and limiter.unlimited


def test_progress_is_throttled_and_the_last_event_always_passes() -> None:
    clock = FakeClock()
    seen: list[tuple[int, int]] = []
    throttle = Throttle(lambda d, t: seen.append((d, t)), interval=0.25, clock=clock)
    total = 30_000 * 32768
    for i in range(30_000):  # 30,000 blobs over 10 s of fake time
        clock.now += 10 / 30_000
        throttle(i * 32768, total)
    throttle(total, total)
    assert len(seen) <= 10 / 0.25 + 2
    assert seen[0] == (0, total) and seen[-1] == (total, total)
