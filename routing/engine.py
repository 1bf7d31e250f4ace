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
2. **Estimate** per (channel, operation, bank) (:mod:`routing.estimates`): the
   channel's reliability as a Beta posterior over decayed counts weighed by
   send time, shrunk toward the channel's and the bank's means, times one minus
   the payer-failure rate.
3. **Score** = estimate * (1 - cost_weight * fee / amount): the expected value
   of routing one unit of money when the fee is charged on success.
4. **First choice**: a due half-open probe of an eliminated channel
   (:mod:`routing.health`); else a due re-look at an idle candidate, else the
   best Thompson-sampled score, capped to a share of the segment's decisions
   (:mod:`routing.exploration`); the rest of :attr:`Decision.ranked` is the
   failover order by mean score.

The value types live in :mod:`routing.types` and are re-exported here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence

from channels.contract import Operation
from routing.config import (
    MINUTES_PER_WEEK,
    ChannelProfile,
    ChannelState,
    RouterConfig,
    RoutingConfigError,
)
from routing.estimates import FRESH_S, Evidence, Key, Posterior, bounded_get
from routing.exploration import Segment, Segments
from routing.health import Health
from routing.types import (
    CardUsage,
    ChannelStatus,
    Decision,
    EstimateStatus,
    Observation,
    Rejection,
    RouteRequest,
    Scored,
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

_EPOCH_WEEK_OFFSET_MIN = 3 * 1440
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)

# (-score, config order, channel, estimate, cost, sampled, draw, observations, reliability)
_Row = tuple[float, int, str, float, int, float | None, float, float, float]


def _rank_key(row: _Row) -> tuple[float, int]:
    return row[0], row[1]


class _Channel:
    __slots__ = ("cost_weight", "evidence", "health", "index", "maintenance", "profile", "state")

    def __init__(self, index: int, profile: ChannelProfile, config: RouterConfig) -> None:
        self.index = index
        self.profile = profile
        self.state = profile.state
        self.cost_weight = config.cost_weight if profile.cost_weight is None else profile.cost_weight
        # (operation, bank_code) -> evidence; bank_code "" is the (channel, operation) level
        self.evidence: dict[Key, Evidence] = {}
        self.health = Health(config)
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
        self._posterior = Posterior(config)
        self._segments = Segments(config)
        # (operation, bank) -> evidence across all channels: what is known of the bank
        self._pooled: dict[Key, Evidence] = {}

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

        Does no I/O. Besides the exploration random draws, the state it changes
        is bookkeeping: a due probe is handed to one decision and not again until
        its answer arrives or ``probe_timeout_s`` passes; the segment's
        exploration share and re-look clocks.
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
            probe.health.hand_out_probe(now, request.attempt_id, config.max_tracked_attempts)
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
        now = request.now
        segment = self._segments.get(request.operation, request.bank_code)
        choice_open = len(candidates) > 1 and probe is None and config.exploration > 0  # 0: greedy
        explore = choice_open and segment.may_explore(config)
        rows = [self._score(channel, request, explore, segment) for channel in candidates]
        rows.sort(key=_rank_key)
        if rows:
            segment.leader = (rows[0][2], rows[0][8])
        first_reason = reason
        pick = 0
        relook = False
        if choice_open:
            pick = self._relook(rows, segment, now)
            relook = pick > 0
            if relook:
                first_reason = "relook"
            elif explore:
                pick = self._most_valuable_look(rows) if config.exploration_value > 0 else self._best_draw(rows)
                if pick:
                    first_reason = "exploration"
            explored = pick > 0 and not relook
            segment.count_decision(explored, -rows[0][0], rows[pick][0] - rows[0][0] if explored else 0.0)
        if pick and request.attempt_id is not None:  # a re-look or exploration: its answer may prove a recovery
            # the answer says whether the channel did its part (a payer failure counts as done), so the look
            # carries the reliabilities a / (a + b), not the estimates, which include the payer-failure rate
            limit = config.max_tracked_attempts
            segment.hand_out_look(request.attempt_id, rows[pick][2], rows[pick][8], rows[0][8], limit, now)
        if pick:
            rows.insert(0, rows.pop(pick))
        if rows and probe is None:
            merit = first_reason in ("best_score", "eliminated_fallback")
            segment.chose(rows[0][2], now, config, relook=relook, merit=merit, estimate=rows[0][3])
            if relook and config.upward_chain_pending > 1:
                segment.keep_chaining(rows[0][2], now, config)
        if probe is not None:
            rows.insert(0, self._score(probe, request, False, None))
            first_reason = "probe"
        if not rows:
            return Decision([], rejected, "no_candidate")
        ranked = [
            Scored(row[2], -row[0], row[3], row[4], first_reason if i == 0 else "failover", row[5], row[7])
            for i, row in enumerate(rows)
        ]
        return Decision(ranked, rejected, first_reason)

    @staticmethod
    def _best_draw(rows: list[_Row]) -> int:
        return max(range(len(rows)), key=lambda i: (rows[i][6], -rows[i][1]))

    def _most_valuable_look(self, rows: list[_Row]) -> int:
        """The candidate whose measurement is worth most net of what it gives up (0: none is worth it).

        The worth of a look is the expected improvement of the candidate's score over the leader's mean
        (normal approximation of its posterior; ``rows[i][6]`` holds the score's standard deviation)
        times the traffic the discovery would serve, ``exploration_value * (leader's evidence +
        prior_strength)``; its cost is the gap of its mean score to the leader's. A channel far behind on
        plenty of evidence is worth nothing; a close rival, or one whose record has grown stale (the
        prior returns with idleness), is measured.
        """
        config = self._config
        best = -rows[0][0]
        horizon = config.exploration_value * (rows[0][7] + config.prior_strength)
        pick, most = 0, 0.0
        for i in range(1, len(rows)):
            sd = rows[i][6]
            if sd <= 0.0:
                continue
            gap = best + rows[i][0]
            z = -gap / sd
            improvement = sd * (math.exp(-0.5 * z * z) * _INV_SQRT_2PI + z * 0.5 * math.erfc(-z * _INV_SQRT_2))
            net = horizon * improvement - gap
            if net > most:
                pick, most = i, net
        return pick

    def _relook(self, rows: list[_Row], segment: Segment, now: float) -> int:
        """The index of the most overdue candidate for a re-look (0: none is due)."""
        pick, most = 0, 0.0
        for i in range(1, len(rows)):
            overdue = segment.relook_due(rows[i][2], rows[i][3], now, self._config)
            if overdue >= most:
                pick, most = i, overdue
        if pick:
            return pick
        segment.idle_s(rows[0][2], now)  # start the leader's clock
        return 0

    def _score(self, channel: _Channel, request: RouteRequest, sample: bool, segment: Segment | None) -> _Row:
        cid = channel.profile.channel_id
        idle = None if segment is None else segment.unmerited_s(cid, request.now)
        a, b, observations, payer = self._estimate(channel, request.operation, request.bank_code, request.now, idle)
        reliability = a / (a + b)
        reach = 1.0 - payer  # the share of attempts the payer does not fail
        estimate = reliability * reach
        cost = channel.profile.fee.fee(request.amount)
        value_factor = 1.0 - channel.cost_weight * cost / request.amount
        sampled: float | None = None
        draw = 0.0
        if sample and self._config.exploration_value > 0:
            n = a + b
            draw = reach * value_factor * math.sqrt(a * b / (n * n * (n + 1.0)))  # sd of the score
        elif sample:
            # the noise scale grows from ``exploration`` toward full Thompson sampling as the channel stays
            # out of the lead (the same clock as the prior's return): an idle channel's uncertainty shows
            scale = self._config.exploration
            if idle:
                scale += (1.0 - scale) * self._posterior.returned(idle) if scale < 1.0 else 0.0
            noise = self._rng.betavariate(a, b) - reliability
            sampled = min(max(reliability + scale * noise, 0.0), 1.0) * reach
            draw = sampled * value_factor
        score = estimate * value_factor
        return (-score, channel.index, cid, estimate, cost, sampled, draw, observations, reliability)

    def _estimate(
        self, channel: _Channel, operation: Operation, bank_code: str, now: float, idle_s: float | None = None
    ) -> tuple[float, float, float, float]:
        """Beta(a, b) of the channel's reliability, the evidence behind it and the payer-failure rate.

        Without a bank code the (channel, operation) level answers.
        """
        top = channel.evidence.get((operation, ""))
        if not bank_code:
            return self._posterior.channel(top, now, idle_s)
        key = (operation, bank_code)
        return self._posterior.pair(top, channel.evidence.get(key), self._pooled.get(key), now, idle_s)

    # --- learning -------------------------------------------------------------------

    def observe(
        self,
        channel_id: str,
        operation: Operation,
        bank_code: str,
        observation: Observation,
        at: float,
        attempt_id: str | None = None,
    ) -> None:
        """Feed back one resolved attempt. ``at`` is when the attempt was sent (epoch seconds).

        Call it when an attempt resolves, however late (delayed feedback from
        polls and callbacks): a result is weighed as of ``at``. A payer failure
        counts as the channel having done its part, and feeds the payer-failure
        rate. ``attempt_id`` identifies the answer to a probe handed out with
        :attr:`RouteRequest.attempt_id`. Unknown channel ids are ignored (a
        channel removed from configuration can still have attempts resolving).
        """
        channel = self._channels.get(channel_id)
        if channel is None:
            return
        config = self._config
        ok = observation is not Observation.CHANNEL_FAILURE
        payer = observation is Observation.PAYER_FAILURE
        limit = config.max_segments + len(Operation)
        segment = self._segments.peek(operation, bank_code)
        before = self._record_before(channel, operation, bank_code, at, segment)
        for key in ((operation, ""), (operation, bank_code)) if bank_code else ((operation, ""),):
            if bounded_get(channel.evidence, key, limit).add(ok, payer, at, config):
                self._soften_others(channel, key)
        if segment is not None:
            proven = None if attempt_id is None else segment.answer(attempt_id, channel_id, ok, config)
            if before is not None:
                proven = (
                    segment.any_answer(
                        channel_id, ok, before, config, at, self._fallen_from(channel, operation, bank_code)
                    )
                    or proven
                )
            if proven is not None:
                self._recovered(channel, operation, bank_code, proven, at)
        if bank_code:
            pooled = bounded_get(self._pooled, (operation, bank_code), config.max_segments)
            pooled.add(ok, payer, at, config, detect=False)
        if channel.health.record(not ok, at, config, attempt_id):
            self._forget(channel, at)

    def _record_before(
        self, channel: _Channel, operation: Operation, bank_code: str, at: float, segment: Segment | None
    ) -> float | None:
        """``upward_all_answers``: the channel's reliability as decisions see it, for a fresh answer; else None."""
        config = self._config
        if segment is None or config.upward_llr <= 0 or not config.upward_all_answers:
            return None
        evidence = channel.evidence.get((operation, bank_code))
        if evidence is not None and (at < evidence.t - FRESH_S or at < evidence.changed_at):
            # a late answer says what the channel was, not what it is; unless it is about an attempt sent since
            # the excursion under way began (upward_excursion_late): then it is about what the test is testing
            since = config.upward_excursion_late and at >= evidence.changed_at
            if not (since and segment.in_excursion(channel.profile.channel_id, at)):
                return None
        idle = max(at - segment.merit_at.get(channel.profile.channel_id, at), 0.0)
        a, b, _, _ = self._estimate(channel, operation, bank_code, at, idle)
        reliability = a / (a + b)
        if config.upward_fallen_only and not segment.in_excursion(channel.profile.channel_id, at):
            # an excursion only for a channel that fell: a detected drop from a level upward_gap above its record
            if evidence is None or evidence.high - reliability < config.upward_gap:
                return None
        return reliability

    def _fallen_from(self, channel: _Channel, operation: Operation, bank_code: str) -> float:
        """``upward_fallen_back``: the level a fallen channel had before its drop (-1: none, or off)."""
        if not self._config.upward_fallen_back:
            return -1.0
        evidence = channel.evidence.get((operation, bank_code))
        return -1.0 if evidence is None else evidence.high

    def _recovered(
        self, channel: _Channel, operation: Operation, bank_code: str, proven: tuple[float, float], at: float
    ) -> None:
        # a run of good look answers proved the channel better than its record: the record is stale.
        # The restart keeps the run's answers (the one being observed, counted already, among them).
        for key in ((operation, ""), (operation, bank_code)) if bank_code else ((operation, ""),):
            evidence = channel.evidence.get(key)
            if evidence is not None:
                evidence.restart(proven[0], at, proven[1])

    def _soften_others(self, changed: _Channel, key: Key) -> None:
        # When one channel changes, what we know about the alternatives may be stale just when it matters:
        # loosen it so exploration re-measures them before they inherit the traffic.
        for channel in self._channels.values():
            evidence = channel.evidence.get(key)
            if channel is not changed and evidence is not None:
                evidence.soften(self._config.fast_memory_observations)

    def _forget(self, channel: _Channel, readmitted_at: float) -> None:
        # Evidence from before an outage says little about the channel that came back; let the prior and
        # exploration relearn it rather than leave it buried under the outage's failures, including the
        # answers about attempts sent during the outage that arrive after the re-admission.
        for evidence in channel.evidence.values():
            evidence.reset(readmitted_at)

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
                a, b, observations, payer = self._estimate(channel, operation, bank_code, now)
                reliability = a / (a + b)
                estimates.append(
                    EstimateStatus(operation, bank_code, reliability * (1.0 - payer), observations, reliability, payer)
                )
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
