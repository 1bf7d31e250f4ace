"""``paygate bench routing``: the router against baselines and an oracle, in simulated time.

Everything runs in-process, no network, deterministic by ``--seed``. One
transaction arrives per simulated second; each policy picks one channel for
it and the outcome is drawn from that channel's *true* success rate at that
moment (one uniform draw per transaction shared by all policies). The policies
learn from those drawn outcomes; the scores below are *expected* values (each
transaction counts the true success rate of the channel chosen for it), the
usual bandit "pseudo-reward", so a comparison is not decided by the luck of
the draw. Fees are charged on success. Single attempts, no failover: the
benchmark measures the choice, not the gateway.

Policies:

* ``ours``: :class:`routing.engine.Router` with the default configuration
  (only ``cost_weight`` is set to the scenario's).
* ``oracle``: knows the true rates and picks the best expected value
  ``rate * (1 - cost_weight * fee / amount)`` for each transaction.
* ``priority``: always the first configured channel (the best one at the start).
* ``round_robin``: the channels in turn.
* ``window``: the plain ratio successes / total over each channel's last 100
  outcomes; picks the best ratio (untried channels first), no exploration.

Every policy gets the same feedback at the same (simulated) time, including
the late results of the delayed-feedback scenario.

Per scenario the table shows success rate and fees (basis points of the
amount moved) per policy, ours / oracle, whether ours beat every baseline on
value (success net of weighted fees; non-stationary scenarios only), and
``recovery_tx``: how many transactions after a channel degraded ours kept
sending it traffic, i.e. the first point from which it sends that channel at
most 10 % of the next 50 transactions. The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import math
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from channels.contract import Operation
from routing.config import ChannelProfile, FeeSchedule, RouterConfig
from routing.engine import Observation, Router, RouteRequest

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: simulated time starts here
BANK = "ICBC"
CURRENCY = "CNY"
WINDOW = 100
RECOVERY_SPAN = 50
RECOVERY_SHARE = 0.10

TARGET_RATIO = 0.98
TARGET_RECOVERY_TX = 200

Rate = Callable[[float], float]  # fraction of the run elapsed (0..1) -> true success rate


def constant(p: float) -> Rate:
    return lambda x: p


def step(before: float, after: float, at: float, until: float = 2.0) -> Rate:
    """``before`` until fraction ``at``, ``after`` until fraction ``until``, then ``before`` again."""
    return lambda x: after if at <= x < until else before


def linear(start: float, end: float) -> Rate:
    return lambda x: start + (end - start) * x


@dataclass(frozen=True)
class SimChannel:
    channel_id: str
    rate: Rate
    fee: FeeSchedule = field(default_factory=lambda: FeeSchedule(rate_ppm=3000))


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
    ),
    Scenario(
        "delayed_feedback",
        (
            SimChannel("A", step(0.95, 0.20, 0.3, 0.6)),
            SimChannel("B", constant(0.90)),
            SimChannel("C", constant(0.85)),
        ),
        degradations=((0.3, "A"),),
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
)


# --- policies ---------------------------------------------------------------------------


class Policy:
    name = "policy"

    def choose(self, now: float, x: float, amount: int) -> str:
        raise NotImplementedError

    def feedback(self, channel_id: str, success: bool, at: float) -> None:
        """A result for an attempt sent at ``at``; may arrive late."""


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
        self.latencies_ns: list[int] = []

    def choose(self, now: float, x: float, amount: int) -> str:
        request = RouteRequest(Operation.WITHHOLD, amount, CURRENCY, BANK, now, agreement_channels=self.agreements)
        decision = self.router.decide(request)
        return decision.ranked[0].channel_id

    def feedback(self, channel_id: str, success: bool, at: float) -> None:
        observation = Observation.SUCCESS if success else Observation.CHANNEL_FAILURE
        self.router.observe(channel_id, Operation.WITHHOLD, BANK, observation, at)


class Oracle(Policy):
    name = "oracle"

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    def choose(self, now: float, x: float, amount: int) -> str:
        return max(self.scenario.channels, key=lambda c: _value(c, x, amount, self.scenario.cost_weight)).channel_id


class Priority(Policy):
    name = "priority"

    def __init__(self, scenario: Scenario) -> None:
        self.first = scenario.channels[0].channel_id

    def choose(self, now: float, x: float, amount: int) -> str:
        return self.first


class RoundRobin(Policy):
    name = "round_robin"

    def __init__(self, scenario: Scenario) -> None:
        self.ids = [c.channel_id for c in scenario.channels]
        self.turn = 0

    def choose(self, now: float, x: float, amount: int) -> str:
        self.turn += 1
        return self.ids[(self.turn - 1) % len(self.ids)]


class WindowRatio(Policy):
    name = "window"

    def __init__(self, scenario: Scenario) -> None:
        self.ids = [c.channel_id for c in scenario.channels]
        self.outcomes: dict[str, deque[bool]] = {i: deque(maxlen=WINDOW) for i in self.ids}

    def choose(self, now: float, x: float, amount: int) -> str:
        def ratio(channel_id: str) -> float:
            seen = self.outcomes[channel_id]
            return sum(seen) / len(seen) if seen else 2.0  # untried first

        return max(self.ids, key=ratio)  # ties: first configured

    def feedback(self, channel_id: str, success: bool, at: float) -> None:
        self.outcomes[channel_id].append(success)


def _value(channel: SimChannel, x: float, amount: int, cost_weight: float) -> float:
    return channel.rate(x) * (1.0 - cost_weight * channel.fee.fee(amount) / amount)


# --- running ----------------------------------------------------------------------------


@dataclass
class PolicyStats:
    """Expected values: each transaction counts the true success rate of the channel chosen for it."""

    transactions: int = 0
    successes: float = 0.0  # expected successes
    realized: int = 0  # successes actually drawn (what the policies were told)
    fees: float = 0.0  # expected fees (charged on success), minor units
    amount: float = 0.0  # expected amount moved
    value: float = 0.0  # sum of rate * (1 - cost_weight * fee / amount)

    @property
    def success_rate(self) -> float:
        return self.successes / self.transactions if self.transactions else 0.0

    @property
    def fee_bp(self) -> float:
        return 10_000 * self.fees / self.amount if self.amount else 0.0

    @property
    def mean_value(self) -> float:
        return self.value / self.transactions if self.transactions else 0.0


@dataclass
class ScenarioResult:
    name: str
    stationary: bool
    stats: dict[str, PolicyStats]
    recovery_tx: int | None

    @property
    def ratio(self) -> float:
        oracle = self.stats["oracle"].success_rate
        return self.stats["ours"].success_rate / oracle if oracle else 0.0

    @property
    def beats_baselines(self) -> bool:
        ours = self.stats["ours"].mean_value
        return all(ours > self.stats[name].mean_value for name in BASELINES)


BASELINES = ("priority", "round_robin", "window")
POLICY_ORDER = ("ours", "oracle", *BASELINES)


@dataclass
class BenchResult:
    scenarios: list[ScenarioResult]
    decision_p99_us: float

    @property
    def worst_ratio(self) -> float:
        return min(s.ratio for s in self.scenarios)

    @property
    def non_stationary(self) -> list[ScenarioResult]:
        return [s for s in self.scenarios if not s.stationary]

    @property
    def beats(self) -> int:
        return sum(s.beats_baselines for s in self.non_stationary)

    @property
    def max_recovery_tx(self) -> int:
        return max((s.recovery_tx for s in self.scenarios if s.recovery_tx is not None), default=0)

    def misses(self) -> list[str]:
        """The targets missed, in words; empty when all are met."""
        out = [
            f"{s.name}: ours/oracle {s.ratio:.4f} < {TARGET_RATIO}" for s in self.scenarios if s.ratio < TARGET_RATIO
        ]
        out += [f"{s.name}: a baseline did as well as ours" for s in self.non_stationary if not s.beats_baselines]
        out += [
            f"{s.name}: recovery took {s.recovery_tx} transactions > {TARGET_RECOVERY_TX}"
            for s in self.scenarios
            if s.recovery_tx is not None and s.recovery_tx > TARGET_RECOVERY_TX
        ]
        # decision latency is reported, not enforced: wall-clock timing on a shared machine is not a test
        return out

    def last_line(self) -> str:
        return (
            f"routing: worst_ratio={self.worst_ratio:.4f} beats_baselines={self.beats}/{len(self.non_stationary)}"
            f" max_recovery_tx={self.max_recovery_tx} decision_p99_us={round(self.decision_p99_us)}"
        )


def simulate(
    scenario: Scenario, horizon: int, seed: int, config: RouterConfig | None = None
) -> tuple[dict[str, PolicyStats], int | None]:
    """One run of ``horizon`` transactions; returns per-policy stats and ours' worst recovery.

    ``config`` is ours' router configuration (default: :class:`RouterConfig` defaults).
    """
    rng = random.Random(seed)
    policies: list[Policy] = [
        Ours(scenario, seed ^ 0x5EED, config or RouterConfig()),
        Oracle(scenario),
        Priority(scenario),
        RoundRobin(scenario),
        WindowRatio(scenario),
    ]
    stats = {p.name: PolicyStats() for p in policies}
    pending: dict[str, list[tuple[float, int, str, bool, float]]] = {p.name: [] for p in policies}
    channels = {c.channel_id: c for c in scenario.channels}
    ours_choices: list[str] = []
    for t in range(horizon):
        now = T0 + t
        x = t / horizon
        amount = rng.randint(*scenario.amounts)
        draw = rng.random()
        late = rng.random() < scenario.delayed_share
        delay = rng.uniform(*scenario.delay_s) if late else 0.0
        for policy in policies:
            queue = pending[policy.name]
            while queue and queue[0][0] <= now:
                _, _, channel_id, success, at = heapq.heappop(queue)
                policy.feedback(channel_id, success, at)
            channel_id = policy.choose(now, x, amount)
            if policy.name == "ours":
                ours_choices.append(channel_id)
            channel = channels[channel_id]
            rate = channel.rate(x)
            success = draw < rate
            fee = channel.fee.fee(amount)
            s = stats[policy.name]
            s.transactions += 1
            s.successes += rate
            s.realized += success
            s.fees += rate * fee
            s.amount += rate * amount
            s.value += rate * (1.0 - scenario.cost_weight * fee / amount)
            if delay:
                heapq.heappush(queue, (now + delay, t, channel_id, success, now))
            else:
                policy.feedback(channel_id, success, now)
    recoveries = [_recovery(ours_choices, math.ceil(at * horizon), cid) for at, cid in scenario.degradations]
    return stats, max(recoveries) if recoveries else None


def _recovery(choices: Sequence[str], start: int, channel_id: str) -> int:
    limit = RECOVERY_SHARE * RECOVERY_SPAN
    window = sum(1 for c in choices[start : start + RECOVERY_SPAN] if c == channel_id)
    for k in range(start, len(choices) - RECOVERY_SPAN):
        if window <= limit:
            return k - start
        window -= choices[k] == channel_id
        window += choices[k + RECOVERY_SPAN] == channel_id
    return len(choices) - start


def decision_latency_p99_us(channels: int = 20, decisions: int = 500, seed: int = 0, trials: int = 10) -> float:
    """p99 of one ``decide`` over ``channels`` warm channels (wall clock, microseconds).

    The best p99 of ``trials`` short trials: on a shared machine a slow trial
    measures the neighbours, not the router.
    """
    rng = random.Random(seed)
    profiles = [
        ChannelProfile(
            f"ch{i:02d}",
            frozenset({Operation.WITHHOLD, Operation.PAYOUT}),
            frozenset({CURRENCY}),
            fee=FeeSchedule(fixed=100, rate_ppm=2000 + 100 * i, minimum=100, maximum=5000),
            per_card_daily_attempts=10,
        )
        for i in range(channels)
    ]
    router = Router(profiles, RouterConfig(), rng=random.Random(seed))
    for t in range(channels * 50):
        cid = profiles[t % channels].channel_id
        ok = rng.random() < 0.8 + 0.01 * (t % channels)
        router.observe(
            cid, Operation.WITHHOLD, BANK, Observation.SUCCESS if ok else Observation.CHANNEL_FAILURE, T0 + t
        )
    agreements = frozenset(p.channel_id for p in profiles)
    best = math.inf
    for trial in range(trials):
        samples: list[int] = []
        for t in range(decisions):
            now = T0 + 1000 + trial * decisions + t
            amount = rng.randint(10_000, 500_000)
            request = RouteRequest(Operation.WITHHOLD, amount, CURRENCY, BANK, now, agreement_channels=agreements)
            started = time.perf_counter_ns()
            router.decide(request)
            samples.append(time.perf_counter_ns() - started)
        samples.sort()
        best = min(best, samples[min(len(samples) - 1, int(0.99 * len(samples)))] / 1000.0)
    return best


def run(short: bool, seed: int, config: RouterConfig | None = None) -> BenchResult:
    """Run every scenario (short: fewer, shorter runs) and measure decision latency."""
    horizon, repeats = (6000, 3) if short else (8000, 8)
    results: list[ScenarioResult] = []
    for index, scenario in enumerate(SCENARIOS):
        total = {name: PolicyStats() for name in POLICY_ORDER}
        worst: int | None = None
        for rep in range(repeats):
            stats, recovery = simulate(scenario, horizon, seed * 1_000_003 + index * 101 + rep, config)
            for name, s in stats.items():
                t = total[name]
                t.transactions += s.transactions
                t.successes += s.successes
                t.realized += s.realized
                t.fees += s.fees
                t.amount += s.amount
                t.value += s.value
            if recovery is not None:
                worst = recovery if worst is None else max(worst, recovery)
        results.append(ScenarioResult(scenario.name, scenario.stationary, total, worst))
    return BenchResult(results, decision_latency_p99_us(seed=seed))


def format_table(result: BenchResult) -> str:
    head = f"{'scenario':<18}" + "".join(f"{name:>13}" for name in POLICY_ORDER)
    head += f"{'ours/oracle':>13}{'beats':>7}{'recovery_tx':>13}"
    lines = [head, "-" * len(head)]
    for s in result.scenarios:
        row = f"{s.name:<18}" + "".join(f"{s.stats[name].success_rate:>13.4f}" for name in POLICY_ORDER)
        beats = "-" if s.stationary else ("yes" if s.beats_baselines else "NO")
        recovery = "-" if s.recovery_tx is None else str(s.recovery_tx)
        lines.append(f"{row}{s.ratio:>13.4f}{beats:>7}{recovery:>13}")
        fees = f"{'  fee_bp':<18}" + "".join(f"{s.stats[name].fee_bp:>13.1f}" for name in POLICY_ORDER)
        value = f"{'  value':<18}" + "".join(f"{s.stats[name].mean_value:>13.4f}" for name in POLICY_ORDER)
        lines += [fees, value]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="paygate bench routing", description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true", help="a quick run that fails when a target is missed")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = run(args.short, args.seed)
    print(format_table(result))
    misses = result.misses()
    for miss in misses:
        print(f"target missed: {miss}")
    print(f"({time.perf_counter() - started:.1f} s)")
    print(result.last_line())
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
