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
* ``sr_v3``: a re-implementation of the success-rate routing of Juspay's
  decision engine (SR v3): per channel and segment (bank) a window of the last
  50 outcomes, initialised optimistic (all successes); 5 % of transactions go
  to a channel drawn uniformly; an attempt pending for more than 300 s counts
  as a failure (its late answer is then ignored).

Every policy gets the same feedback at the same (simulated) time, including
the late results of the delayed-feedback scenario.

Per scenario the table shows success rate and fees (basis points of the
amount moved) per policy, ours / oracle, whether ours beat every baseline on
value (success net of weighted fees; non-stationary scenarios only), and
``recovery_tx``: how many transactions after a channel degraded ours kept
sending it traffic, i.e. the first point from which it sends that channel at
most 10 % of the next 50 transactions; and ``stranded_s``: how long after a
channel recovered (became the best choice again) ours took to send it at least
10 % of 50 consecutive transactions. The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.routing_scenarios import (
    BANK,
    CURRENCY,
    SCENARIOS,
    SRV3_EXPLORATION,
    SRV3_PENDING_S,
    SRV3_WINDOW,
    T0,
    Oracle,
    Ours,
    Policy,
    Priority,
    RoundRobin,
    Scenario,
    SrV3,
    WindowRatio,
)
from channels.config import read
from channels.contract import Operation
from routing.config import ChannelProfile, FeeSchedule, RouterConfig
from routing.engine import Observation, Router, RouteRequest

__all__ = [
    "BANK",
    "SCENARIOS",
    "SRV3_EXPLORATION",
    "SRV3_PENDING_S",
    "SRV3_WINDOW",
    "T0",
    "BenchResult",
    "SrV3",
    "main",
    "run",
    "simulate",
]
RECOVERY_SPAN = 50
RECOVERY_SHARE = 0.10

TARGET_RATIO = 0.99
TARGET_RECOVERY_TX = 200
TARGET_STRANDED_S = 300

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
    stranded_s: int | None = None

    @property
    def ratio(self) -> float:
        oracle = self.stats["oracle"].success_rate
        return self.stats["ours"].success_rate / oracle if oracle else 0.0

    @property
    def beats_baselines(self) -> bool:
        ours = self.stats["ours"].mean_value
        return all(ours > self.stats[name].mean_value for name in BASELINES)


BASELINES = ("priority", "round_robin", "window", "sr_v3")
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

    @property
    def max_stranded_s(self) -> int:
        return max((s.stranded_s for s in self.scenarios if s.stranded_s is not None), default=0)

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
        out += [
            f"{s.name}: a recovered channel waited {s.stranded_s} s for traffic > {TARGET_STRANDED_S}"
            for s in self.scenarios
            if s.stranded_s is not None and s.stranded_s > TARGET_STRANDED_S
        ]
        # decision latency is reported, not enforced: wall-clock timing on a shared machine is not a test
        return out

    def last_line(self) -> str:
        return (
            f"routing: worst_ratio={self.worst_ratio:.4f} beats_baselines={self.beats}/{len(self.non_stationary)}"
            f" max_recovery_tx={self.max_recovery_tx} decision_p99_us={round(self.decision_p99_us)}"
            f" max_stranded_s={self.max_stranded_s}"
        )


def simulate(
    scenario: Scenario, horizon: int, seed: int, config: RouterConfig | None = None
) -> tuple[dict[str, PolicyStats], int | None, int | None]:
    """One run of ``horizon`` transactions; per-policy stats, ours' worst recovery and worst stranding.

    ``config`` is ours' router configuration (default: :class:`RouterConfig` defaults).
    """
    rng = random.Random(seed)
    policies: list[Policy] = [
        Ours(scenario, seed ^ 0x5EED, config or RouterConfig()),
        Oracle(scenario),
        Priority(scenario),
        RoundRobin(scenario),
        WindowRatio(scenario),
        SrV3(scenario, seed ^ 0x5A3),
    ]
    stats = {p.name: PolicyStats() for p in policies}
    pending: dict[str, list[tuple[float, int, str, str, float, str]]] = {p.name: [] for p in policies}
    channels = {c.channel_id: c for c in scenario.channels}
    banks = [bank for bank, _ in scenario.bank_mix]
    weights = [share for _, share in scenario.bank_mix]
    ours_choices: list[str] = []
    for t in range(horizon):
        now = T0 + t
        x = t / horizon
        amount = rng.randint(*scenario.amounts)
        bank = banks[0] if len(banks) == 1 else rng.choices(banks, weights)[0]
        draw = rng.random()
        payer_fails = rng.random() < scenario.payer_failure
        late = rng.random() < scenario.delayed_share
        delay = rng.uniform(*scenario.delay_s) if late else 0.0
        for policy in policies:
            queue = pending[policy.name]
            while queue and queue[0][0] <= now:
                _, tx, channel_id, kind, at, sent_bank = heapq.heappop(queue)
                policy.feedback(channel_id, kind, at, sent_bank, tx)
            channel_id = policy.choose(now, x, amount, bank, t)
            if policy.name == "ours":
                ours_choices.append(channel_id)
            channel = channels[channel_id]
            rate = channel.rate_at(x, bank)
            kind = "F" if draw >= rate else ("P" if payer_fails else "S")
            expected = rate * (1.0 - scenario.payer_failure)  # expected successes of this choice
            fee = channel.fee.fee(amount)
            s = stats[policy.name]
            s.transactions += 1
            s.successes += expected
            s.realized += kind == "S"
            s.fees += expected * fee
            s.amount += expected * amount
            s.value += expected * (1.0 - scenario.cost_weight * fee / amount)
            if delay:
                heapq.heappush(queue, (now + delay, t, channel_id, kind, now, bank))
            else:
                policy.feedback(channel_id, kind, now, bank, t)
    recoveries = [_recovery(ours_choices, math.ceil(at * horizon), cid) for at, cid in scenario.degradations]
    stranded = [_stranded(ours_choices, math.ceil(at * horizon), cid) for at, cid in scenario.recoveries]
    return stats, max(recoveries) if recoveries else None, max(stranded) if stranded else None


def _stranded(choices: Sequence[str], start: int, channel_id: str) -> int:
    """Transactions (= simulated seconds) from ``start`` until the channel has 10 % of 50 in a row."""
    need = RECOVERY_SHARE * RECOVERY_SPAN
    window = sum(1 for c in choices[start : start + RECOVERY_SPAN] if c == channel_id)
    for k in range(start, len(choices) - RECOVERY_SPAN):
        if window >= need:
            return k - start
        window -= choices[k] == channel_id
        window += choices[k + RECOVERY_SPAN] == channel_id
    return len(choices) - start


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
    horizon, repeats = (6000, 2) if short else (8000, 8)
    results: list[ScenarioResult] = []
    for index, scenario in enumerate(SCENARIOS):
        total = {name: PolicyStats() for name in POLICY_ORDER}
        worst: int | None = None
        stranded: int | None = None
        for rep in range(repeats):
            stats, recovery, strand = simulate(scenario, horizon, seed * 1_000_003 + index * 101 + rep, config)
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
            if strand is not None:
                stranded = strand if stranded is None else max(stranded, strand)
        results.append(ScenarioResult(scenario.name, scenario.stationary, total, worst, stranded))
    return BenchResult(results, decision_latency_p99_us(seed=seed))


def format_table(result: BenchResult) -> str:
    head = f"{'scenario':<18}" + "".join(f"{name:>13}" for name in POLICY_ORDER)
    head += f"{'ours/oracle':>13}{'beats':>7}{'recovery_tx':>13}{'stranded_s':>12}"
    lines = [head, "-" * len(head)]
    for s in result.scenarios:
        row = f"{s.name:<18}" + "".join(f"{s.stats[name].success_rate:>13.4f}" for name in POLICY_ORDER)
        beats = "-" if s.stationary else ("yes" if s.beats_baselines else "NO")
        recovery = "-" if s.recovery_tx is None else str(s.recovery_tx)
        stranded = "-" if s.stranded_s is None else str(s.stranded_s)
        lines.append(f"{row}{s.ratio:>13.4f}{beats:>7}{recovery:>13}{stranded:>12}")
        fees = f"{'  fee_bp':<18}" + "".join(f"{s.stats[name].fee_bp:>13.1f}" for name in POLICY_ORDER)
        value = f"{'  value':<18}" + "".join(f"{s.stats[name].mean_value:>13.4f}" for name in POLICY_ORDER)
        lines += [fees, value]
    return "\n".join(lines)


def config_with(settings: Sequence[str]) -> RouterConfig | None:
    """The default RouterConfig with ``name=value`` overrides (values in JSON: 3, 0.5, true); None without any."""
    if not settings:
        return None
    fields: dict[str, object] = {}
    for setting in settings:
        name, _, value = setting.partition("=")
        fields[name.strip()] = json.loads(value)
    return read(RouterConfig, fields, "routing")  # the config reader: a bad value is refused, naming the field


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="paygate bench routing", description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true", help="a quick run that fails when a target is missed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a RouterConfig field for ours (repeatable)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = run(args.short, args.seed, config_with(args.set))
    print(format_table(result))
    misses = result.misses()
    for miss in misses:
        print(f"target missed: {miss}")
    print(f"({time.perf_counter() - started:.1f} s)")
    print(result.last_line())
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
