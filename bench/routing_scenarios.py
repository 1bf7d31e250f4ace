"""Scenarios and policies of ``paygate bench routing`` (bench/routing.py runs them).

A scenario is a set of simulated channels whose true reliability follows a
function of the run's elapsed fraction (per bank where it differs), plus the
traffic's bank mix, amounts, payer-failure share and feedback delays. A policy
chooses a channel per transaction and learns from the (possibly late) results.
"""

from __future__ import annotations

import dataclasses
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from channels.contract import Operation
from routing.config import ChannelProfile, FeeSchedule, RouterConfig
from routing.engine import Observation, Router, RouteRequest

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: simulated time starts here
BANK = "ICBC"
CURRENCY = "CNY"
WINDOW = 100

SRV3_WINDOW = 50
SRV3_EXPLORATION = 0.05
SRV3_PENDING_S = 300.0

Rate = Callable[[float], float]  # fraction of the run elapsed (0..1) -> true success rate


def constant(p: float) -> Rate:
    return lambda x: p


def step(before: float, after: float, at: float, until: float = 2.0) -> Rate:
    """``before`` until fraction ``at``, ``after`` until fraction ``until``, then ``before`` again."""
    return lambda x: after if at <= x < until else before


def linear(start: float, end: float) -> Rate:
    return lambda x: start + (end - start) * x


def flapping(healthy: float, broken: float, spans: Sequence[tuple[float, float]]) -> Rate:
    """``broken`` inside each [start, end) fraction of the run, ``healthy`` elsewhere."""
    return lambda x: broken if any(lo <= x < hi for lo, hi in spans) else healthy


@dataclass(frozen=True)
class SimChannel:
    channel_id: str
    rate: Rate  # the channel's reliability (it does its part); the payer may still fail the attempt
    fee: FeeSchedule = field(default_factory=lambda: FeeSchedule(rate_ppm=3000))
    bank_rates: Mapping[str, Rate] = field(default_factory=dict)  # per bank, overriding ``rate``

    def rate_at(self, x: float, bank: str) -> float:
        return self.bank_rates.get(bank, self.rate)(x)


@dataclass(frozen=True)
class Scenario:
    name: str
    channels: tuple[SimChannel, ...]
    stationary: bool = False
    # (fraction of the run, channel) where a channel stops being the best choice suddenly
    degradations: tuple[tuple[float, str], ...] = ()
    delayed_share: float = 0.0
    delay_s: tuple[float, float] = (0.0, 0.0)
    cost_weight: float = 1.0
    amounts: tuple[int, int] = (10_000, 500_000)  # minor units, uniform
    # (fraction of the run, channel) where a channel becomes the best choice again
    recoveries: tuple[tuple[float, str], ...] = ()
    bank_mix: tuple[tuple[str, float], ...] = ((BANK, 1.0),)  # banks and their share of the traffic
    payer_failure: float = 0.0  # share of attempts the payer fails (insufficient funds...) on any channel


# the flapping channel's half-broken spans (fractions of the run)
_FLAPS = ((0.15, 0.25), (0.40, 0.50), (0.65, 0.75))

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "stationary",
        (
            SimChannel("A", constant(0.95)),
            SimChannel("B", constant(0.90)),
            SimChannel("C", constant(0.85)),
            SimChannel("D", constant(0.75)),
        ),
        stationary=True,
    ),
    Scenario(
        "sudden_drop",
        (SimChannel("A", step(0.95, 0.55, 0.3)), SimChannel("B", constant(0.90)), SimChannel("C", constant(0.85))),
        degradations=((0.3, "A"),),
    ),
    Scenario(
        "slow_drift",
        (SimChannel("A", linear(0.95, 0.75)), SimChannel("B", linear(0.78, 0.95)), SimChannel("C", constant(0.84))),
    ),
    Scenario(
        "outage_recovery",
        (SimChannel("A", step(0.95, 0.0, 0.3, 0.5)), SimChannel("B", constant(0.88)), SimChannel("C", constant(0.80))),
        degradations=((0.3, "A"),),
        recoveries=((0.5, "A"),),
    ),
    Scenario(
        "delayed_feedback",
        (
            SimChannel("A", step(0.95, 0.20, 0.3, 0.6)),
            SimChannel("B", constant(0.90)),
            SimChannel("C", constant(0.85)),
        ),
        degradations=((0.3, "A"),),
        recoveries=((0.6, "A"),),
        delayed_share=0.6,
        delay_s=(60.0, 300.0),
    ),
    Scenario(
        "cost_tradeoff",
        (
            SimChannel("C", constant(0.97), FeeSchedule(rate_ppm=12_000)),
            SimChannel("A", constant(0.94), FeeSchedule(rate_ppm=2_000)),
            SimChannel("B", step(0.95, 0.80, 0.5), FeeSchedule(fixed=300)),
        ),
        degradations=((0.5, "B"),),
        cost_weight=5.0,
        amounts=(10_000, 1_000_000),
    ),
    Scenario(
        "flapping",
        (
            SimChannel("A", flapping(0.95, 0.50, _FLAPS)),
            SimChannel("B", constant(0.90)),
            SimChannel("C", constant(0.85)),
        ),
        degradations=tuple((lo, "A") for lo, _ in _FLAPS),
        recoveries=tuple((hi, "A") for _, hi in _FLAPS),
    ),
    Scenario(
        "bank_mix",
        (
            SimChannel("A", constant(0.96), bank_rates={"CCB": constant(0.92), "PSBC": constant(0.70)}),
            SimChannel("B", constant(0.91), bank_rates={"CCB": constant(0.95), "PSBC": constant(0.93)}),
            SimChannel("C", constant(0.88), bank_rates={"PSBC": constant(0.90)}),
        ),
        stationary=True,
        bank_mix=((BANK, 0.7), ("CCB", 0.2), ("PSBC", 0.1)),
    ),
    Scenario(
        "late_outcomes",
        (SimChannel("A", step(0.95, 0.30, 0.3, 0.6)), SimChannel("B", constant(0.90)), SimChannel("C", constant(0.85))),
        degradations=((0.3, "A"),),
        recoveries=((0.6, "A"),),
        delayed_share=0.5,
        delay_s=(1800.0, 10_800.0),
    ),
    Scenario(
        "fee_gap",
        (
            SimChannel("A", constant(0.95), FeeSchedule(rate_ppm=3_000)),
            SimChannel("B", constant(0.95), FeeSchedule(rate_ppm=8_000)),
            SimChannel("C", constant(0.90), FeeSchedule(rate_ppm=3_000)),
        ),
        stationary=True,
        cost_weight=5.0,
    ),
    Scenario(
        "payer_failures",
        (SimChannel("A", step(0.95, 0.55, 0.4)), SimChannel("B", constant(0.90)), SimChannel("C", constant(0.85))),
        degradations=((0.4, "A"),),
        payer_failure=0.4,
    ),
)


# --- policies ---------------------------------------------------------------------------

KINDS = {"S": Observation.SUCCESS, "F": Observation.CHANNEL_FAILURE, "P": Observation.PAYER_FAILURE}


class Policy:
    name = "policy"

    def choose(self, now: float, x: float, amount: int, bank: str, tx: int) -> str:
        raise NotImplementedError

    def feedback(self, channel_id: str, kind: str, at: float, bank: str, tx: int) -> None:
        """The result (S, F = channel failure, P = payer failure) of attempt ``tx`` sent at ``at``; may be late."""


class Ours(Policy):
    name = "ours"

    def __init__(self, scenario: Scenario, seed: int, config: RouterConfig) -> None:
        profiles = [
            ChannelProfile(c.channel_id, frozenset({Operation.WITHHOLD}), frozenset({CURRENCY}), fee=c.fee)
            for c in scenario.channels
        ]
        config = dataclasses.replace(config, cost_weight=scenario.cost_weight)
        self.router = Router(profiles, config, rng=random.Random(seed))
        self.agreements = frozenset(c.channel_id for c in scenario.channels)

    def choose(self, now: float, x: float, amount: int, bank: str, tx: int) -> str:
        request = RouteRequest(
            Operation.WITHHOLD, amount, CURRENCY, bank, now, agreement_channels=self.agreements, attempt_id=str(tx)
        )
        return self.router.decide(request).ranked[0].channel_id

    def feedback(self, channel_id: str, kind: str, at: float, bank: str, tx: int) -> None:
        self.router.observe(channel_id, Operation.WITHHOLD, bank, KINDS[kind], at, attempt_id=str(tx))


class Oracle(Policy):
    name = "oracle"

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    def choose(self, now: float, x: float, amount: int, bank: str, tx: int) -> str:
        weight = self.scenario.cost_weight
        return max(self.scenario.channels, key=lambda c: _value(c, x, amount, weight, bank)).channel_id


class Priority(Policy):
    name = "priority"

    def __init__(self, scenario: Scenario) -> None:
        self.first = scenario.channels[0].channel_id

    def choose(self, now: float, x: float, amount: int, bank: str, tx: int) -> str:
        return self.first


class RoundRobin(Policy):
    name = "round_robin"

    def __init__(self, scenario: Scenario) -> None:
        self.ids = [c.channel_id for c in scenario.channels]
        self.turn = 0

    def choose(self, now: float, x: float, amount: int, bank: str, tx: int) -> str:
        self.turn += 1
        return self.ids[(self.turn - 1) % len(self.ids)]


class WindowRatio(Policy):
    name = "window"

    def __init__(self, scenario: Scenario) -> None:
        self.ids = [c.channel_id for c in scenario.channels]
        self.outcomes: dict[str, deque[bool]] = {i: deque(maxlen=WINDOW) for i in self.ids}

    def choose(self, now: float, x: float, amount: int, bank: str, tx: int) -> str:
        def ratio(channel_id: str) -> float:
            seen = self.outcomes[channel_id]
            return sum(seen) / len(seen) if seen else 2.0  # untried first

        return max(self.ids, key=ratio)  # ties: first configured

    def feedback(self, channel_id: str, kind: str, at: float, bank: str, tx: int) -> None:
        self.outcomes[channel_id].append(kind == "S")


class SrV3(Policy):
    """Success-rate routing after Juspay's decision engine (SR v3), as described in docs/ROUTING.md.

    Per (channel, bank) the last ``SRV3_WINDOW`` outcomes, initialised with
    successes; ``SRV3_EXPLORATION`` of transactions go to a uniformly drawn
    channel; an attempt unanswered for ``SRV3_PENDING_S`` counts as a failure and
    its late answer is ignored. Payer failures count as failures (it scores
    success rates, not causes).
    """

    name = "sr_v3"

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.ids = [c.channel_id for c in scenario.channels]
        self.rng = random.Random(seed)
        self.windows: dict[tuple[str, str], deque[bool]] = {}
        self.pending: dict[int, tuple[str, str]] = {}
        self.sent: deque[tuple[float, int]] = deque()

    def _window(self, channel_id: str, bank: str) -> deque[bool]:
        window = self.windows.get((channel_id, bank))
        if window is None:
            window = self.windows[(channel_id, bank)] = deque([True] * SRV3_WINDOW, maxlen=SRV3_WINDOW)
        return window

    def choose(self, now: float, x: float, amount: int, bank: str, tx: int) -> str:
        while self.sent and self.sent[0][0] <= now - SRV3_PENDING_S:
            _, old = self.sent.popleft()
            unanswered = self.pending.pop(old, None)
            if unanswered is not None:
                self._window(*unanswered).append(False)
        if self.rng.random() < SRV3_EXPLORATION:
            channel_id = self.rng.choice(self.ids)
        else:
            channel_id = max(self.ids, key=lambda c: sum(self._window(c, bank)))  # ties: first configured
        self.pending[tx] = (channel_id, bank)
        self.sent.append((now, tx))
        return channel_id

    def feedback(self, channel_id: str, kind: str, at: float, bank: str, tx: int) -> None:
        if self.pending.pop(tx, None) is not None:
            self._window(channel_id, bank).append(kind == "S")


def _value(channel: SimChannel, x: float, amount: int, cost_weight: float, bank: str) -> float:
    return channel.rate_at(x, bank) * (1.0 - cost_weight * channel.fee.fee(amount) / amount)
