"""Shared token buckets: the replicas together never exceed a channel's rate; the best channel with a token is used."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timedelta

import pytest

from gateway.plans.ratelimit import Bucket, Grant, RateLimiter, capacity_of, take
from tests.fakes.clock import FakeClock

T0 = datetime(2026, 12, 1, 4, 0)


def test_take_refills_at_the_rate_and_caps_at_the_capacity() -> None:
    bucket = Bucket(0.0, T0)
    g = take(bucket, now=datetime(2026, 12, 1, 4, 0, 1), rate=10, capacity=5, want=3)
    assert g.granted == 3 and g.bucket.tokens == pytest.approx(2.0) and g.wait_s == 0
    g = take(g.bucket, now=datetime(2026, 12, 1, 4, 0, 1), rate=10, capacity=5, want=3)
    assert g.granted == 2 and g.wait_s == pytest.approx(0.1)
    g = take(g.bucket, now=datetime(2026, 12, 1, 4, 0, 1, 50_000), rate=10, capacity=5, want=3)
    assert g.granted == 0 and g.wait_s == pytest.approx(0.05)


def test_a_clock_behind_the_bucket_refills_nothing_and_never_moves_it_back() -> None:
    bucket = Bucket(0.5, datetime(2026, 12, 1, 4, 0, 10))
    g = take(bucket, now=datetime(2026, 12, 1, 4, 0, 9), rate=10, capacity=5, want=1)
    assert g.granted == 0 and g.bucket.refilled_at == datetime(2026, 12, 1, 4, 0, 10)


class Buckets:
    """The store's side, in memory (one row per channel)."""

    def __init__(self) -> None:
        self.rows: dict[str, Bucket] = {}
        self.calls = 0

    async def take_tokens(self, channel: str, *, want: int, rate: float, capacity: float, now: datetime) -> Grant:
        self.calls += 1
        grant = take(self.rows.get(channel, Bucket(capacity, now)), now=now, rate=rate, capacity=capacity, want=want)
        self.rows[channel] = grant.bucket
        return grant


async def test_two_replicas_together_stay_within_the_rate() -> None:
    clock = FakeClock(T0)
    buckets = Buckets()
    rate, burst = 20.0, 0.2
    replicas = [RateLimiter(buckets, {"bank-a": rate}, burst_s=burst, clock=clock) for _ in range(2)]
    sent: list[datetime] = []

    async def worker(limiter: RateLimiter) -> None:
        while True:
            channel = await limiter.acquire(["bank-a"])
            assert channel == "bank-a"
            sent.append(clock.now())

    tasks = [asyncio.create_task(worker(r)) for r in replicas for _ in range(8)]
    for _ in range(1000):  # ten simulated seconds, in steps of 10 ms
        await asyncio.sleep(0)
        clock.advance(0.01)
        for _ in range(5):
            await asyncio.sleep(0)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = (clock.now() - T0).total_seconds()
    assert len(sent) <= capacity_of(rate, burst) + rate * elapsed
    assert len(sent) >= 0.9 * rate * elapsed  # and the rate is used, not wasted
    for start in range(0, 9):  # any one-second window
        lo = T0 + timedelta(seconds=start)
        window = [t for t in sent if lo <= t < lo + timedelta(seconds=1)]
        assert len(window) <= capacity_of(rate, burst) + rate


async def test_the_best_candidate_with_a_token_is_taken_and_unlimited_channels_always_are() -> None:
    clock = FakeClock(T0)
    limiter = RateLimiter(Buckets(), {"bank-a": 1.0, "bank-b": 1.0}, burst_s=1.0, clock=clock)
    assert await limiter.acquire(["bank-a", "bank-b"]) == "bank-a"
    assert await limiter.acquire(["bank-a", "bank-b"]) == "bank-b"  # bank-a's one token is gone
    until = datetime(2026, 12, 1, 4, 0, 0, 500_000)
    assert await limiter.acquire(["bank-a", "bank-b"], until=until) is None  # none before "until"
    assert await limiter.acquire(["bank-a", "free"]) == "free"
    limiter.give_back("bank-a")
    assert await limiter.acquire(["bank-a"]) == "bank-a"


async def test_a_replica_releases_its_tokens_one_by_one() -> None:
    clock = FakeClock(T0)
    limiter = RateLimiter(Buckets(), {"bank-a": 10.0}, burst_s=1.0, clock=clock)  # a grant is 5 tokens
    released: list[datetime] = []

    async def one() -> None:
        assert await limiter.acquire(["bank-a"]) == "bank-a"
        released.append(clock.now())

    tasks = [asyncio.create_task(one()) for _ in range(5)]
    for _ in range(40):  # two simulated seconds in steps of 50 ms
        for _ in range(5):
            await asyncio.sleep(0)
        clock.advance(0.05)
    await asyncio.gather(*tasks)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(released)]
    assert len(released) == 5 and all(gap >= 0.05 - 1e-9 for gap in gaps), released  # not all at once
    assert (released[-1] - released[0]).total_seconds() >= 0.3  # ~1/rate apart, less the catch-up slack
