"""The routing engine: filter the channels, rank the rest, learn from outcomes.

Pure and I/O-free: time comes in as arguments (epoch seconds), so the same code
runs in the gateway and in the simulated-time benchmark. Not thread-safe; the
gateway calls it from its event loop.

How a decision is made (docs/ROUTING.md has the full story):

1. **Filters**, in this order, each removal recorded as a :class:`Rejection`
   naming the filter: ``excluded``, ``state``, ``operation``, ``currency``,
   ``bank``, ``amount``, ``bank_amount``, ``agreement`` (withhold),
   ``position`` (payout), ``card_attempts``, ``card_amount``, ``maintenance``,
   ``eliminated``.
2. **Estimate** per (channel, operation, bank): a Beta posterior over decayed
   counts of channel-attributable outcomes (payer-attributable failures never
   count), shrunk toward the (channel, operation) estimate when the bank has
   little data, which is itself shrunk toward the configured prior.
3. **Score** = estimate * (1 - cost_weight * fee / amount): the expected value
   of routing one unit of money when the fee is charged on success.
4. **First choice**: a due half-open probe of an eliminated channel; else the
   best Thompson-sampled score (exploration), capped to a share of decisions;
   the rest of :attr:`Decision.ranked` is the failover order by mean score.
"""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from channels.contract import CashierKind, Operation, Outcome, OutcomeStatus
from routing.config import (
    MINUTES_PER_WEEK,
    ChannelProfile,
    ChannelState,
    RouterConfig,
    RoutingConfigError,
)

__all__ = [
    "CardUsage",
    "ChannelState",
    "ChannelStatus",
    "Decision",
    "EstimateStatus",
    "Observation",
    "Rejection",
    "RouteRequest",
    "Router",
    "Scored",
]

_LN2 = math.log(2.0)
# results about attempts older than this (behind the newest one seen) are "late" for change detection
_FRESH_S = 30.0

_EPOCH_WEEK_OFFSET_MIN = 3 * 1440
# how quickly the running share of exploration decisions forgets (about the last 200 decisions)
_EXPLORATION_SHARE_ALPHA = 1.0 / 200.0


class Observation(enum.StrEnum):
    """What one resolved attempt says about its channel."""

    SUCCESS = "success"
    CHANNEL_FAILURE = "channel_failure"
    PAYER_FAILURE = "payer_failure"  # insufficient funds, frozen account...: not the channel's fault

    @classmethod
    def from_outcome(cls, outcome: Outcome) -> Observation | None:
        """The observation for a definite outcome; None while it is PENDING."""
        if outcome.status is OutcomeStatus.SUCCEEDED:
            return cls.SUCCESS
        if outcome.status is OutcomeStatus.FAILED:
            return cls.PAYER_FAILURE if outcome.payer_attributable else cls.CHANNEL_FAILURE
        return None


@dataclass(frozen=True, slots=True)
class CardUsage:
    """Today's use of one card on one channel: attempts made and amount attempted (minor units)."""

    attempts: int = 0
    amount: int = 0


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """One routing question.

    ``agreement_channels``: channels holding an active agreement for the payer's
    account; required for WITHHOLD (None there means none known, so every
    channel is filtered). ``available_position``: channel -> available float in
    minor units; required for PAYOUT (None or a missing channel filters it).
    ``card_usage``: channel -> today's usage of this card. ``exclude``: channels
    already tried in this flow. ``cashier_kind``: required for COLLECT, the
    cashier the channel must offer.
    """

    operation: Operation
    amount: int
    currency: str
    bank_code: str
    now: float
    agreement_channels: frozenset[str] | None = None
    available_position: Mapping[str, int] | None = None
    card_usage: Mapping[str, CardUsage] = field(default_factory=dict)
    exclude: frozenset[str] = frozenset()
    cashier_kind: CashierKind | None = None  # COLLECT: the cashier the borrower needs


@dataclass(slots=True)  # not frozen: built 20 times per decision, and frozen construction is slow
class Scored:
    """A candidate that passed every filter.

    ``score`` = ``estimate * (1 - cost_weight * cost / amount)``; ``cost`` is the
    fee in minor units; ``sampled`` is the Thompson draw used for the first
    choice (None when not sampled); ``observations`` the effective evidence
    behind the estimate. ``reason``: probe, exploration, best_score,
    eliminated_fallback (first entry) or failover (the rest).
    """

    channel_id: str
    score: float
    estimate: float
    cost: int
    reason: str
    sampled: float | None = None
    observations: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel_id": self.channel_id,
            "score": round(self.score, 6),
            "estimate": round(self.estimate, 6),
            "cost": self.cost,
            "reason": self.reason,
            "sampled": None if self.sampled is None else round(self.sampled, 6),
            "observations": round(self.observations, 2),
        }


@dataclass(frozen=True, slots=True)
class Rejection:
    channel_id: str
    filter: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"channel_id": self.channel_id, "filter": self.filter, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Decision:
    """The full answer: ``ranked`` is the ordered failover list (may be empty), ``rejected`` every removal.

    ``reason`` explains the first choice: best_score, exploration, probe,
    eliminated_fallback, or no_candidate when ``ranked`` is empty.
    """

    ranked: list[Scored]
    rejected: list[Rejection]
    reason: str

    @property
    def chosen(self) -> Scored | None:
        return self.ranked[0] if self.ranked else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "ranked": [s.to_dict() for s in self.ranked],
            "rejected": [r.to_dict() for r in self.rejected],
        }


@dataclass(frozen=True, slots=True)
class EstimateStatus:
    operation: Operation
    bank_code: str  # "" for the (channel, operation) level
    estimate: float
    observations: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation.value,
            "bank_code": self.bank_code,
            "estimate": round(self.estimate, 6),
            "observations": round(self.observations, 2),
        }


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    """What the router thinks of one channel right now (for the admin API and dashboards)."""

    channel_id: str
    state: ChannelState
    eliminated: bool
    probing: bool  # eliminated and a probe is due or in flight
    next_probe_at: float | None
    recent_failure_share: float
    estimates: tuple[EstimateStatus, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel_id": self.channel_id,
            "state": self.state.value,
            "eliminated": self.eliminated,
            "probing": self.probing,
            "next_probe_at": self.next_probe_at,
            "recent_failure_share": round(self.recent_failure_share, 4),
            "estimates": [e.to_dict() for e in self.estimates],
        }


class _Evidence:
    """Decayed success/failure counts with a long and a short memory.

    Both memories lose half their weight every ``half_life_s`` and are capped
    (the long one at ``memory_observations``, the short one at
    ``fast_memory_observations``), which makes each an exponentially weighted
    sliding window over time and over count. When the short memory disagrees
    with the long one by more than ``change_threshold`` (a log-likelihood
    ratio) the channel has changed: the long memory is cut back to the short
    one so the estimate follows within a handful of observations instead of a
    whole window.
    """

    __slots__ = ("changed_at", "f", "ff", "fs", "lifetime", "s", "t")

    def __init__(self) -> None:
        self.s = 0.0
        self.f = 0.0
        self.fs = 0.0
        self.ff = 0.0
        self.t = -math.inf
        self.changed_at = -math.inf
        self.lifetime = 0.0  # outcomes ever counted (never decays)

    def decay(self, now: float, half_life_s: float) -> float:
        """The factor by which the counts have shrunk between the last update and ``now``."""
        if now <= self.t or self.t == -math.inf:
            return 1.0
        return math.exp(-(now - self.t) * _LN2 / half_life_s)

    def add(self, success: bool, at: float, config: RouterConfig) -> bool:
        """Count one outcome; True when it revealed a change in the channel's behaviour."""
        # A late result (delayed feedback) counts in full in the long memory: the news arrives now. It
        # stays out of the short memory, which must describe the channel's latest behaviour only.
        if at < self.changed_at:
            return False  # a late result about the channel as it was before the change we detected
        fresh = at >= self.t - _FRESH_S
        if at > self.t:
            factor = self.decay(at, config.half_life_s)
            self.s *= factor
            self.f *= factor
            self.fs *= factor
            self.ff *= factor
            self.t = at
        self.lifetime += 1.0
        if success:
            self.s += 1.0
        else:
            self.f += 1.0
        self.s, self.f = _cap(self.s, self.f, config.memory_observations)
        if fresh:
            if success:
                self.fs += 1.0
            else:
                self.ff += 1.0
            self.fs, self.ff = _cap(self.fs, self.ff, config.fast_memory_observations)
            return self._detect_change(config)
        return False

    def _detect_change(self, config: RouterConfig) -> bool:
        fast_n = self.fs + self.ff
        slow_n = self.s + self.f
        if fast_n < 0.5 * config.fast_memory_observations or slow_n <= fast_n:
            return False
        # Bernoulli generalized likelihood ratio: how much better "the recent rate" explains the recent
        # outcomes than "the long-run rate" does (n * KL(recent || long-run), in nats)
        # the long-run rate before the recent outcomes (the memories overlap; subtracting is close enough)
        before = max(self.s - self.fs, 0.0) / (slow_n - fast_n)
        if fast_n * _kl(self.fs / fast_n, before) > config.change_threshold:
            self.s, self.f = self.fs, self.ff
            self.changed_at = self.t
            return True
        return False

    def reset(self) -> None:
        self.s = self.f = self.fs = self.ff = self.lifetime = 0.0

    def soften(self, limit: float) -> None:
        """Keep the estimate but trust it as if it rested on at most ``limit`` observations."""
        self.s, self.f = _cap(self.s, self.f, limit)


_Row = tuple[float, int, str, float, int, float | None, float, float]


def _rank_key(row: _Row) -> tuple[float, int]:
    return row[0], row[1]


def _kl(p: float, q: float) -> float:
    """Kullback-Leibler divergence between Bernoulli(p) and Bernoulli(q), clipped away from 0 and 1."""
    p = min(max(p, 1e-3), 1 - 1e-3)
    q = min(max(q, 1e-3), 1 - 1e-3)
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def _cap(s: float, f: float, limit: float) -> tuple[float, float]:
    n = s + f
    if n <= limit:
        return s, f
    scale = limit / n
    return s * scale, f * scale


class _Health:
    """Elimination and half-open probing of one channel."""

    __slots__ = (
        "consecutive",
        "eliminated_at",
        "good_probes",
        "interval",
        "newest",
        "next_probe_at",
        "probe_sent_at",
        "readmitted_at",
        "recent",
    )

    def __init__(self, config: RouterConfig) -> None:
        self.recent: deque[tuple[float, bool]] = deque(maxlen=config.elimination_window)
        self.consecutive = 0
        self.eliminated_at: float | None = None
        self.interval = config.probe_interval_s
        self.next_probe_at = math.inf
        self.probe_sent_at: float | None = None
        self.readmitted_at = -math.inf
        self.newest = -math.inf  # the latest send time among the outcomes recorded
        self.good_probes = 0

    def failure_share(self, now: float, window_s: float) -> tuple[int, float]:
        outcomes = [failed for at, failed in self.recent if at >= now - window_s]
        if not outcomes:
            return 0, 0.0
        return len(outcomes), sum(outcomes) / len(outcomes)

    def probe_due(self, now: float, config: RouterConfig) -> bool:
        if self.eliminated_at is None or now < self.next_probe_at:
            return False
        return self.probe_sent_at is None or now - self.probe_sent_at >= config.probe_timeout_s

    def record(self, failed: bool, at: float, config: RouterConfig) -> bool:
        """Record one channel outcome; returns True when the channel is (re)admitted after a probe."""
        if self.eliminated_at is not None:
            if at < self.eliminated_at:
                return False  # a late answer to an attempt sent before the elimination says nothing new
            self.probe_sent_at = None
            if failed:
                self.good_probes = 0
                self.interval = min(self.interval * 2.0, config.probe_max_interval_s)
                self.next_probe_at = at + self.interval
                return False
            self.good_probes += 1
            if self.good_probes < config.probe_successes:
                self.next_probe_at = at  # half-open: the next probe may go right away
                return False
            self.good_probes = 0
            self.eliminated_at = None
            self.probe_sent_at = None
            self.next_probe_at = math.inf
            self.readmitted_at = at
            self.recent.clear()
            self.consecutive = 0
            return True
        if at < self.readmitted_at or at < self.newest - _FRESH_S:
            # a straggler: elimination judges the channel's latest behaviour, in the order attempts were sent
            return False
        self.newest = max(self.newest, at)
        self.recent.append((at, failed))
        self.consecutive = self.consecutive + 1 if failed else 0
        volume, share = self.failure_share(self.newest, config.elimination_window_s)
        windowed = volume >= config.elimination_min_volume and share >= config.elimination_threshold
        if windowed or self.consecutive >= config.elimination_consecutive:
            self._eliminate(at, config)
        return False

    def _eliminate(self, at: float, config: RouterConfig) -> None:
        # a channel that flaps (eliminated again soon after coming back) keeps its longer probe interval
        if at - self.readmitted_at > config.probe_max_interval_s:
            self.interval = config.probe_interval_s
        self.eliminated_at = at
        self.next_probe_at = at + self.interval
        self.probe_sent_at = None
        self.good_probes = 0


class _Channel:
    __slots__ = ("cost_weight", "evidence", "health", "index", "maintenance", "profile", "state")

    def __init__(self, index: int, profile: ChannelProfile, config: RouterConfig) -> None:
        self.index = index
        self.profile = profile
        self.state = profile.state
        self.cost_weight = config.cost_weight if profile.cost_weight is None else profile.cost_weight
        # (operation, bank_code) -> evidence; bank_code "" is the (channel, operation) level
        self.evidence: dict[tuple[Operation, str], _Evidence] = {}
        self.health = _Health(config)
        self.maintenance = [(window, window.week_segments()) for window in profile.maintenance]


class Router:
    """Chooses channels for transactions and learns from their outcomes.

    ``rng`` drives exploration (pass a seeded ``random.Random`` for determinism).
    Raises :class:`RoutingConfigError` on duplicate channel ids.
    """

    def __init__(
        self, profiles: Sequence[ChannelProfile], config: RouterConfig, *, rng: random.Random | None = None
    ) -> None:
        self._config = config
        self._rng = rng or random.Random()
        self._channels: dict[str, _Channel] = {}
        for i, profile in enumerate(profiles):
            if profile.channel_id in self._channels:
                raise RoutingConfigError(f"channels[{i}].id", f"duplicate channel id {profile.channel_id!r}")
            self._channels[profile.channel_id] = _Channel(i, profile, config)
        self._exploration_share = 0.0
        self._decay_rate = _LN2 / config.half_life_s
        self._prior_a = config.prior_mean * config.prior_strength
        self._prior_b = config.prior_strength - self._prior_a

    @property
    def config(self) -> RouterConfig:
        return self._config

    @property
    def channel_ids(self) -> list[str]:
        return list(self._channels)

    def profile(self, channel_id: str) -> ChannelProfile:
        """The channel's configured profile. Raises KeyError for an unknown id."""
        return self._channels[channel_id].profile

    def set_state(self, channel_id: str, state: ChannelState) -> None:
        """Operator override of the manual state. Raises KeyError for an unknown id."""
        self._channels[channel_id].state = state

    def state(self, channel_id: str) -> ChannelState:
        return self._channels[channel_id].state

    def eliminated(self, channel_id: str, now: float) -> bool:
        """True while the channel is automatically eliminated (including while a probe is due)."""
        return self._channels[channel_id].health.eliminated_at is not None

    # --- deciding -------------------------------------------------------------------

    def decide(self, request: RouteRequest) -> Decision:
        """Filter and rank the channels for one transaction.

        Does no I/O. Besides the exploration random draws, the only state it
        changes is probe bookkeeping: a due probe is handed to one decision and
        not again until its answer arrives or ``probe_timeout_s`` passes.
        """
        config = self._config
        now = request.now
        minute = (int(now // 60) + _EPOCH_WEEK_OFFSET_MIN) % MINUTES_PER_WEEK
        rejected: list[Rejection] = []
        candidates: list[_Channel] = []
        eliminated: list[_Channel] = []
        probe: _Channel | None = None
        for channel in self._channels.values():
            rejection = self._filter(channel, request, minute)
            if rejection is not None:
                rejected.append(rejection)
                continue
            health = channel.health
            if health.eliminated_at is None:
                candidates.append(channel)
            elif probe is None and health.probe_due(now, config):
                probe = channel
            else:
                eliminated.append(channel)
        reason = "best_score"
        if not candidates and probe is None and eliminated and config.elimination_fallback:
            candidates, eliminated, reason = eliminated, [], "eliminated_fallback"
        for channel in eliminated:
            when = channel.health.next_probe_at
            rejected.append(Rejection(channel.profile.channel_id, "eliminated", f"next probe at {when:.0f}"))
        if probe is not None:
            probe.health.probe_sent_at = now
        return self._rank(request, candidates, probe, rejected, reason)

    def _filter(self, channel: _Channel, request: RouteRequest, minute: int) -> Rejection | None:
        profile = channel.profile
        channel_id = profile.channel_id
        amount = request.amount
        if channel_id in request.exclude:
            return Rejection(channel_id, "excluded", "already tried in this flow")
        if channel.state is not ChannelState.ENABLED:
            return Rejection(channel_id, "state", channel.state.value)
        if request.operation not in profile.operations:
            return Rejection(channel_id, "operation", f"does not support {request.operation.value}")
        if request.operation is Operation.COLLECT and request.cashier_kind not in profile.cashier_kinds:
            kind = request.cashier_kind.value if request.cashier_kind else "none"
            return Rejection(channel_id, "cashier", f"does not offer the {kind} cashier")
        if request.currency not in profile.currencies:
            return Rejection(channel_id, "currency", f"does not support {request.currency}")
        if profile.banks is not None and request.bank_code not in profile.banks:
            return Rejection(channel_id, "bank", f"does not serve bank {request.bank_code}")
        if amount < profile.min_amount or (profile.max_amount is not None and amount > profile.max_amount):
            return Rejection(channel_id, "amount", f"{amount} outside [{profile.min_amount}, {profile.max_amount}]")
        bank_limit = profile.bank_limits.get(request.bank_code)
        if bank_limit is not None and not bank_limit[0] <= amount <= bank_limit[1]:
            return Rejection(channel_id, "bank_amount", f"{amount} outside {list(bank_limit)} for {request.bank_code}")
        if request.operation is Operation.WITHHOLD and (
            request.agreement_channels is None or channel_id not in request.agreement_channels
        ):
            return Rejection(channel_id, "agreement", "no active agreement for this account")
        if request.operation is Operation.PAYOUT:
            position = None if request.available_position is None else request.available_position.get(channel_id)
            if position is None or position < amount:
                return Rejection(channel_id, "position", f"available {position} < {amount}")
        usage = request.card_usage.get(channel_id)
        if usage is not None:
            limit = profile.per_card_daily_attempts
            if limit is not None and usage.attempts >= limit:
                return Rejection(channel_id, "card_attempts", f"{usage.attempts} attempts today, limit {limit}")
            limit = profile.per_card_daily_amount
            if limit is not None and usage.amount + amount > limit:
                return Rejection(channel_id, "card_amount", f"{usage.amount} + {amount} over daily limit {limit}")
        for window, segments in channel.maintenance:
            if window.is_one_off:
                active = window.active(request.now)
            else:
                active = any(lo <= minute < hi for lo, hi in segments)
            if active:
                return Rejection(channel_id, "maintenance", window.label or "maintenance window")
        return None

    def _rank(
        self,
        request: RouteRequest,
        candidates: list[_Channel],
        probe: _Channel | None,
        rejected: list[Rejection],
        reason: str,
    ) -> Decision:
        config = self._config
        choice_open = len(candidates) > 1 and probe is None
        explore = choice_open and config.exploration > 0 and self._exploration_share < config.max_exploration_share
        # (-score, config order, channel, estimate, cost, sampled, draw, observations)
        rows = [self._score(channel, request, explore) for channel in candidates]
        rows.sort(key=_rank_key)
        first_reason = reason
        pick = max(range(len(rows)), key=lambda i: (rows[i][6], -rows[i][1])) if explore else 0
        if choice_open:
            self._exploration_share += _EXPLORATION_SHARE_ALPHA * (float(pick != 0) - self._exploration_share)
        if pick:
            rows.insert(0, rows.pop(pick))
            first_reason = "exploration"
        if probe is not None:
            rows.insert(0, self._score(probe, request, False))
            first_reason = "probe"
        if not rows:
            return Decision([], rejected, "no_candidate")
        ranked = [
            Scored(row[2], -row[0], row[3], row[4], first_reason if i == 0 else "failover", row[5], row[7])
            for i, row in enumerate(rows)
        ]
        return Decision(ranked, rejected, first_reason)

    def _score(self, channel: _Channel, request: RouteRequest, sample: bool) -> _Row:
        a, b, observations = self._posterior(channel, request.operation, request.bank_code, request.now)
        estimate = a / (a + b)
        cost = channel.profile.fee.fee(request.amount)
        value_factor = 1.0 - channel.cost_weight * cost / request.amount
        sampled: float | None = None
        draw = 0.0
        if sample:
            noise = self._rng.betavariate(a, b) - estimate
            sampled = min(max(estimate + self._config.exploration * noise, 0.0), 1.0)
            draw = sampled * value_factor
        score = estimate * value_factor
        return (-score, channel.index, channel.profile.channel_id, estimate, cost, sampled, draw, observations)

    def _posterior(
        self, channel: _Channel, operation: Operation, bank_code: str, now: float
    ) -> tuple[float, float, float]:
        """Beta(a, b) for (channel, operation, bank) and the evidence behind it (decayed observation count).

        The (channel, operation) level is the configured prior plus that level's
        evidence; a bank's estimate is its own evidence plus ``bank_prior_strength``
        pseudo-observations at the (channel, operation) mean. Without a bank code
        the (channel, operation) level answers.
        """
        config = self._config
        rate = self._decay_rate
        a = self._prior_a
        b = self._prior_b
        n = 0.0
        top = channel.evidence.get((operation, ""))
        if top is not None:
            # the prior fades as the channel builds a history, so a channel known to be bad does not
            # drift back to the (optimistic) prior just because it has been idle for a while
            fade = config.prior_strength / (config.prior_strength + config.prior_fade * top.lifetime)
            a *= fade
            b *= fade
            factor = math.exp((top.t - now) * rate) if now > top.t else 1.0
            n = (top.s + top.f) * factor
            a += top.s * factor
            b += top.f * factor
        if not bank_code:
            return a, b, n
        mean = a / (a + b)
        k = config.bank_prior_strength
        bank = channel.evidence.get((operation, bank_code))
        if bank is None:
            return k * mean, k * (1.0 - mean), 0.0
        factor = math.exp((bank.t - now) * rate) if now > bank.t else 1.0
        s, f = bank.s * factor, bank.f * factor
        return s + k * mean, f + k * (1.0 - mean), s + f

    # --- learning -------------------------------------------------------------------

    def observe(
        self, channel_id: str, operation: Operation, bank_code: str, observation: Observation, at: float
    ) -> None:
        """Feed back one resolved attempt. ``at`` is when the attempt was sent (epoch seconds).

        Call it when an attempt resolves, however late (delayed feedback from
        polls and callbacks): a late result is weighed as of ``at``.
        Payer-attributable failures change no estimate; on an eliminated channel
        they still show the channel is reachable and re-admit it like a success.
        Unknown channel ids are ignored (a channel removed from configuration
        can still have attempts resolving).
        """
        channel = self._channels.get(channel_id)
        if channel is None:
            return
        config = self._config
        if observation is Observation.PAYER_FAILURE:
            if channel.health.eliminated_at is not None and channel.health.record(False, at, config):
                self._forget(channel)
            return
        success = observation is Observation.SUCCESS
        for key in ((operation, ""), (operation, bank_code)) if bank_code else ((operation, ""),):
            evidence = channel.evidence.get(key)
            if evidence is None:
                evidence = channel.evidence[key] = _Evidence()
            if evidence.add(success, at, config):
                self._soften_others(channel, key)
        if channel.health.record(not success, at, config):
            self._forget(channel)

    def _soften_others(self, changed: _Channel, key: tuple[Operation, str]) -> None:
        # When one channel changes, what we know about the alternatives may be stale just when it matters:
        # loosen it so exploration re-measures them before they inherit the traffic.
        for channel in self._channels.values():
            evidence = channel.evidence.get(key)
            if channel is not changed and evidence is not None:
                evidence.soften(self._config.fast_memory_observations)

    def _forget(self, channel: _Channel) -> None:
        # Evidence from before an outage says little about the channel that came back; let the prior and
        # exploration relearn it rather than leave it buried under the outage's failures.
        for evidence in channel.evidence.values():
            evidence.reset()

    def warm_start(self, observations: Iterable[tuple[str, Operation, str, Observation, float]]) -> None:
        """Rebuild estimates and elimination state from recent attempts (e.g. the last hour), oldest first."""
        for channel_id, operation, bank_code, observation, at in sorted(observations, key=lambda o: o[4]):
            self.observe(channel_id, operation, bank_code, observation, at)

    # --- reporting ------------------------------------------------------------------

    def snapshot(self, now: float) -> list[ChannelStatus]:
        config = self._config
        out: list[ChannelStatus] = []
        for channel in self._channels.values():
            health = channel.health
            estimates = []
            for operation, bank_code in sorted(channel.evidence):
                a, b, observations = self._posterior(channel, operation, bank_code, now)
                estimates.append(EstimateStatus(operation, bank_code, a / (a + b), observations))
            eliminated = health.eliminated_at is not None
            out.append(
                ChannelStatus(
                    channel_id=channel.profile.channel_id,
                    state=channel.state,
                    eliminated=eliminated,
                    probing=eliminated and (now >= health.next_probe_at or health.probe_sent_at is not None),
                    next_probe_at=health.next_probe_at if eliminated else None,
                    recent_failure_share=health.failure_share(now, config.elimination_window_s)[1],
                    estimates=tuple(estimates),
                )
            )
        return out
