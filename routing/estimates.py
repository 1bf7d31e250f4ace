"""Estimates: decayed evidence per (channel, operation, bank), its prior, and the posterior that scores use.

Evidence is three decayed counts: channel-ok outcomes (successes and payer
failures: a payer failure proves the channel reached the bank), channel
failures, and payer failures among the channel-ok ones. The channel's
reliability ``r`` is a Beta posterior over the first two; the payer-failure
rate ``q`` is the share of the third in the first; the expected success of an
attempt is ``r * (1 - q)``.

Every observation is weighed by when its *attempt was sent*: counts decay with
``half_life_s`` from the newest send time seen, and a late answer about an old
attempt enters with the weight it would have had, had it arrived on time.

A channel that goes idle grows uncertain again: its evidence decays, and the
prior, which fades as the channel builds a history, regains its weight with
``prior_half_life_s`` of idleness.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping

from channels.contract import Operation
from routing.config import RouterConfig

LN2 = math.log(2.0)
# results about attempts older than this (behind the newest one seen) are "late" for change detection
FRESH_S = 30.0

Key = tuple[Operation, str]  # (operation, bank_code); bank_code "" is the (channel, operation) level


class Evidence:
    """Decayed counts with a long and a short memory (the short one for change detection).

    Both memories lose half their weight every ``half_life_s`` and are capped
    (the long one at ``memory_observations``, the short one at
    ``fast_memory_observations``). When the short memory disagrees with the
    long one by more than ``change_threshold`` (a log-likelihood ratio) the
    channel has changed: the long memory is cut back to the short one.
    """

    __slots__ = ("changed_at", "f", "ff", "fs", "high", "lifetime", "p", "s", "t")

    def __init__(self) -> None:
        self.s = 0.0  # channel-ok: successes and payer failures
        self.f = 0.0  # channel failures
        self.p = 0.0  # payer failures (a part of s)
        self.fs = 0.0
        self.ff = 0.0
        self.t = -math.inf  # the newest send time counted
        self.changed_at = -math.inf
        self.lifetime = 0.0  # outcomes ever counted (never decays)
        self.high = -1.0  # the rate before the last detected drop (-1: none); kept through resets and restarts

    def factor(self, now: float, rate: float) -> float:
        """How much the counts have shrunk between the newest send time counted and ``now``."""
        return math.exp((self.t - now) * rate) if now > self.t else 1.0

    def add(self, ok: bool, payer: bool, at: float, config: RouterConfig, *, detect: bool = True) -> bool:
        """Count one outcome of an attempt sent at ``at``; True when it revealed a change in behaviour.

        ``ok``: the channel did its part (success or payer failure); ``payer``: a payer failure.
        """
        if at < self.changed_at:
            return False  # a late result about the channel as it was before the change we detected
        rate = LN2 / config.half_life_s
        fresh = at >= self.t - FRESH_S
        weight = 1.0
        if at > self.t:
            shrink = self.factor(at, rate)
            self.s *= shrink
            self.f *= shrink
            self.p *= shrink
            self.fs *= shrink
            self.ff *= shrink
            self.t = at
        else:
            # late news about an old attempt: weighed by its age (on its own clock when late_half_life_s is set)
            late = rate if config.late_half_life_s is None else LN2 / config.late_half_life_s
            weight = math.exp((at - self.t) * late)
        self.lifetime += 1.0
        if ok:
            self.s += weight
            if payer:
                self.p += weight
        else:
            self.f += weight
        total = self.s + self.f
        if total > config.memory_observations:
            scale = config.memory_observations / total
            self.s *= scale
            self.f *= scale
            self.p *= scale
        if not fresh:
            return False  # the short memory describes the channel's latest behaviour only
        if ok:
            self.fs += weight
        else:
            self.ff += weight
        self.fs, self.ff = cap(self.fs, self.ff, config.fast_memory_observations)
        return detect and self._detect_change(config)

    def _detect_change(self, config: RouterConfig) -> bool:
        fast_n = self.fs + self.ff
        slow_n = self.s + self.f
        if fast_n < 0.5 * config.fast_memory_observations or slow_n <= fast_n:
            return False
        # Bernoulli generalized likelihood ratio: n * KL(recent || the long-run rate before the recent outcomes)
        before = max(self.s - self.fs, 0.0) / (slow_n - fast_n)
        if fast_n * kl(self.fs / fast_n, before) > config.change_threshold:
            if self.fs / fast_n < before:
                self.high = before  # a drop: what the channel was before it
            ratio = self.fs / self.s if self.s > 0 else 0.0
            self.p *= ratio
            self.s, self.f = self.fs, self.ff
            self.changed_at = self.t
            return True
        return False

    def reset(self, at: float = -math.inf) -> None:
        """Forget everything; results about attempts sent before ``at`` are ignored when they come later."""
        self.s = self.f = self.p = self.fs = self.ff = self.lifetime = 0.0
        self.changed_at = max(self.changed_at, at)

    def restart(self, successes: float, at: float, failures: float = 0.0) -> None:
        """Forget the record but ``successes`` and ``failures`` fresh ones as of ``at`` (a recovery proven by looks)."""
        self.reset()
        self.s = self.fs = float(successes)
        self.f = self.ff = float(failures)
        self.lifetime = float(successes + failures)
        self.t = max(self.t, at)
        self.changed_at = at

    def soften(self, limit: float) -> None:
        """Keep the estimate but trust it as if it rested on at most ``limit`` observations."""
        n = self.s + self.f
        if n > limit:
            scale = limit / n
            self.s *= scale
            self.f *= scale
            self.p *= scale


def kl(p: float, q: float) -> float:
    """Kullback-Leibler divergence between Bernoulli(p) and Bernoulli(q), clipped away from 0 and 1."""
    p = min(max(p, 1e-3), 1 - 1e-3)
    q = min(max(q, 1e-3), 1 - 1e-3)
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def cap(s: float, f: float, limit: float) -> tuple[float, float]:
    n = s + f
    if n <= limit:
        return s, f
    scale = limit / n
    return s * scale, f * scale


def bounded_get(table: MutableMapping[Key, Evidence], key: Key, limit: int) -> Evidence:
    """The evidence under ``key``, created when missing; the oldest entry goes when ``limit`` is passed."""
    evidence = table.get(key)
    if evidence is None:
        evidence = table[key] = Evidence()
        if len(table) > limit:
            oldest = next((k for k in table if k != key and k[1]), None)  # never a (channel, operation) level
            if oldest is not None:
                del table[oldest]
    return evidence


class Posterior:
    """Computes Beta posteriors from evidence, with the prior's return and hierarchical pooling."""

    __slots__ = ("_config", "_prior_a", "_prior_b", "_rate", "_return_rate")

    def __init__(self, config: RouterConfig) -> None:
        self._config = config
        self._rate = LN2 / config.half_life_s
        self._return_rate = LN2 / config.prior_half_life_s
        self._prior_a = config.prior_mean * config.prior_strength
        self._prior_b = config.prior_strength - self._prior_a

    def channel(
        self, top: Evidence | None, now: float, idle_s: float | None = None
    ) -> tuple[float, float, float, float]:
        """(a, b, observations, payer-failure rate) of the (channel, operation) level.

        The prior's weight fades with the channel's history (``prior_fade``), so a
        channel known to be bad does not jump back to the optimistic prior, and
        returns toward ``prior_strength`` with idleness (``prior_half_life_s``), so a
        channel nobody has measured for a while becomes uncertain again. ``idle_s``:
        how long the channel has not been chosen on its merits (default: since its
        newest observation).
        """
        config = self._config
        a, b = self._prior_a, self._prior_b
        if top is None:
            return a, b, 0.0, 0.0
        fade = config.prior_strength / (config.prior_strength + config.prior_fade * top.lifetime)
        idle = now - top.t if idle_s is None else idle_s
        if idle > 0:
            fade += (1.0 - fade) * self.returned(idle)
        factor = top.factor(now, self._rate)
        s, f = top.s * factor, top.f * factor
        q = top.p / (top.s + 1.0)
        return a * fade + s, b * fade + f, s + f, q

    def returned(self, idle_s: float) -> float:
        """The share of its lost weight the prior has regained after ``idle_s`` of idleness (0..1)."""
        return 1.0 - math.exp(-idle_s * self._return_rate)

    def segment_mean(self, pooled: Evidence | None, now: float) -> float | None:
        """The bank's success rate across channels (``prior_strength`` pseudo-observations at the prior)."""
        if pooled is None:
            return None
        factor = pooled.factor(now, self._rate)
        s, f = pooled.s * factor, pooled.f * factor
        if s + f < 1.0:
            return None
        return (self._prior_a + s) / (self._config.prior_strength + s + f)

    def pair(
        self,
        top: Evidence | None,
        bank: Evidence | None,
        pooled: Evidence | None,
        now: float,
        idle_s: float | None = None,
    ) -> tuple[float, float, float, float]:
        """(a, b, observations, payer-failure rate) of (channel, operation, bank).

        The pair's own evidence plus ``bank_prior_strength`` pseudo-observations at
        a blend of the channel-across-banks mean and the bank-across-channels mean
        (weight ``pool_across_channels`` on the latter): a channel that mostly
        carries its best bank does not look good everywhere. The payer-failure rate
        is the bank's across channels (a property of the payers, not the channel),
        else the channel's.
        """
        config = self._config
        a, b, _, q = self.channel(top, now, idle_s)
        if pooled is not None and pooled.s > 0:
            q = pooled.p / (pooled.s + 1.0)
        mean = a / (a + b)
        across = self.segment_mean(pooled, now)
        if across is not None:
            w = config.pool_across_channels
            mean = (1.0 - w) * mean + w * across
        k = config.bank_prior_strength
        if bank is None:
            return k * mean, k * (1.0 - mean), 0.0, q
        factor = bank.factor(now, self._rate)
        s, f = bank.s * factor, bank.f * factor
        return s + k * mean, f + k * (1.0 - mean), s + f, q
