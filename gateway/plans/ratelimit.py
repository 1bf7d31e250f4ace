"""Per-channel rate limits for plan withholds, shared by every replica: a token bucket per channel in the store.

A channel limited to ``rate`` withholds per second has one bucket (a row in
``plan_rate_buckets``) holding at most ``capacity = max(1, rate x burst_s)`` tokens, refilled at
``rate`` per second. A replica takes tokens in small grants (half the capacity, at least one) in
one short transaction, and spends them locally; so the replicas together never start more than
``capacity + rate x t`` withholds on a channel in any ``t`` seconds, however many there are and
however the work is split between them (measured in ``bench/plans.py``). Local tokens not spent
within ``burst_s`` are dropped rather than saved up, so idle replicas cannot burst later; and a
replica releases its tokens one every ``1/rate`` seconds, not a grant at once, so what reaches a
bank in one second stays close to the rate even when the gateway's own latency varies.

Which channel: the executor asks routing first (the same ranking a withhold gets), then takes a
token from the best-ranked candidate that has one, and the withhold is routed there (see
:class:`gateway.plans.routing.RateAwarePlanner`); a failover takes a token of its own.

:func:`take` is the bucket arithmetic (pure, unit tested); :class:`RateLimiter` the replica's side.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from gateway.plans.clock import Clock

PACE_SLACK_S = 0.05  # how far a replica may catch up after a stall, in seconds of rate


@dataclass(frozen=True)
class Bucket:
    tokens: float
    refilled_at: datetime  # naive UTC


@dataclass(frozen=True)
class Grant:
    granted: int
    bucket: Bucket
    wait_s: float  # fewer granted than wanted: seconds until the next whole token (else 0)


def capacity_of(rate: float, burst_s: float) -> float:
    return max(1.0, rate * burst_s)


def take(bucket: Bucket, *, now: datetime, rate: float, capacity: float, want: int) -> Grant:
    """Refill ``bucket`` up to ``now`` and take up to ``want`` whole tokens.

    A clock behind the bucket's last refill (another replica's, slightly ahead) refills
    nothing and never moves the bucket back in time.
    """
    elapsed = max(0.0, (now - bucket.refilled_at).total_seconds())
    tokens = min(capacity, bucket.tokens + rate * elapsed)
    granted = max(0, min(want, math.floor(tokens + 1e-9)))
    tokens = max(0.0, tokens - granted)
    wait_s = 0.0 if granted >= want else max(0.0, (1.0 - tokens) / rate)
    return Grant(granted, Bucket(tokens, max(now, bucket.refilled_at)), wait_s)


class TokenStore(Protocol):
    async def take_tokens(self, channel: str, *, want: int, rate: float, capacity: float, now: datetime) -> Grant:
        """Take up to ``want`` tokens from ``channel``'s shared bucket (created full), in one transaction."""
        ...


@dataclass
class _Local:
    tokens: int = 0
    granted_at: datetime | None = None
    next_refill_at: datetime | None = None  # the store said "none before then"
    next_release_at: datetime | None = None  # this replica's pacing: not before then
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class RateLimiter:
    """One replica's view of the shared buckets. Channels without a limit are always available."""

    def __init__(self, store: TokenStore, limits: Mapping[str, float], *, burst_s: float, clock: Clock) -> None:
        self.store = store
        self.limits = dict(limits)
        self.burst_s = burst_s
        self.clock = clock
        self._local: dict[str, _Local] = {channel: _Local() for channel in self.limits}

    def limited(self, channel: str) -> bool:
        return channel in self.limits

    def _take_local(self, channel: str, now: datetime) -> bool:
        local = self._local[channel]
        if local.tokens and local.granted_at is not None and now - local.granted_at > timedelta(seconds=self.burst_s):
            local.tokens = 0  # not spent in time: dropped, never saved up for a burst
        if local.tokens > 0 and self._release_due(local, channel) <= now:
            local.tokens -= 1
            # pacing (a GCRA): the next release comes 1/rate after this one, so a grant's tokens go
            # out one by one; after a stall the replica may catch up by PACE_SLACK_S, not by a burst
            interval = timedelta(seconds=1.0 / self.limits[channel])
            local.next_release_at = max(local.next_release_at or now, now) + interval
            return True
        return False

    def _release_due(self, local: _Local, channel: str) -> datetime:
        if local.next_release_at is None:
            return datetime.min
        return local.next_release_at - timedelta(seconds=min(PACE_SLACK_S, self.burst_s / 2))

    def give_back(self, channel: str) -> None:
        """A token taken for a withhold that was not sent after all (its pacing step is undone too)."""
        local = self._local.get(channel)
        if local is None:
            return
        local.tokens += 1
        if local.next_release_at is not None:
            local.next_release_at -= timedelta(seconds=1.0 / self.limits[channel])

    async def acquire(self, candidates: Sequence[str], *, until: datetime | None = None) -> str | None:
        """The first of ``candidates`` (best first) with a token, taking it; waits while none has one.

        Returns None when ``until`` comes first, or when there are no candidates.
        """
        if not candidates:
            return None
        while True:
            now = self.clock.now()
            for channel in candidates:
                if channel not in self._local or self._take_local(channel, now):
                    return channel
            wake: datetime | None = None
            for channel in candidates:
                ready = await self._refill(channel)
                if ready is None:
                    return channel
                wake = ready if wake is None else min(wake, ready)
            assert wake is not None
            if until is not None and wake >= until:
                return None
            await self.clock.sleep(max((wake - self.clock.now()).total_seconds(), 0.001))

    async def _refill(self, channel: str) -> datetime | None:
        """Take a grant from the store for ``channel``; None when a token was taken, else when to look again."""
        local = self._local[channel]
        async with local.lock:  # one grant request per channel per replica at a time
            now = self.clock.now()
            if self._take_local(channel, now):
                return None
            if local.tokens > 0:
                return self._release_due(local, channel)  # tokens in hand, paced
            if local.next_refill_at is not None and now < local.next_refill_at:
                return local.next_refill_at
            rate = self.limits[channel]
            capacity = capacity_of(rate, self.burst_s)
            want = max(1, math.floor(capacity / 2))
            grant = await self.store.take_tokens(channel, want=want, rate=rate, capacity=capacity, now=now)
            if grant.granted:
                local.tokens += grant.granted
                local.granted_at = now
                local.next_refill_at = None
                if self._take_local(channel, now):
                    return None
                return self._release_due(local, channel)
            local.next_refill_at = now + timedelta(seconds=grant.wait_s)
            return local.next_refill_at
