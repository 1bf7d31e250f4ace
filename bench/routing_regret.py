"""Instrumentation for ``paygate bench routing``: ours' regret per transaction by the reason of its choice.

``python -m bench.routing_regret [--short] [--seed N] [--set NAME=VALUE ...] [scenario ...]`` replays
:func:`bench.routing.simulate` and splits ours' regret (the oracle's expected
value minus ours', per transaction) by :attr:`Decision.reason`. It changes
nothing in the bench: it wraps ``Ours.choose`` to record the reason.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

from bench import routing_scenarios
from bench.routing import SCENARIOS, config_with, simulate
from bench.routing_scenarios import CURRENCY, _value
from channels.contract import Operation
from routing.config import RouterConfig
from routing.engine import RouteRequest


def regret_by_reason(
    scenario: routing_scenarios.Scenario, horizon: int, seed: int, config: RouterConfig | None = None
) -> dict[str, list[float]]:
    """reason -> [regret summed, decisions] for one run."""
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    original = routing_scenarios.Ours.choose

    def choose(self: routing_scenarios.Ours, now: float, x: float, amount: int, bank: str, tx: int) -> str:
        request = RouteRequest(
            Operation.WITHHOLD, amount, CURRENCY, bank, now, agreement_channels=self.agreements, attempt_id=str(tx)
        )
        decision = self.router.decide(request)
        chosen = decision.ranked[0].channel_id
        w = scenario.cost_weight
        values = {c.channel_id: _value(c, x, amount, w, bank) for c in scenario.channels}
        row = out[decision.reason]
        row[0] += max(values.values()) - values[chosen]
        row[1] += 1
        return chosen

    routing_scenarios.Ours.choose = choose  # type: ignore[method-assign]
    try:
        simulate(scenario, horizon, seed, config)
    finally:
        routing_scenarios.Ours.choose = original  # type: ignore[method-assign]
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.routing_regret")
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="as bench.routing --set")
    parser.add_argument("names", nargs="*")
    args = parser.parse_args(argv)
    config = config_with(args.set)
    horizon, repeats = (6000, 2) if args.short else (8000, 8)
    for index, scenario in enumerate(SCENARIOS):
        if args.names and scenario.name not in args.names:
            continue
        total: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for rep in range(repeats):
            run_seed = args.seed * 1_000_003 + index * 101 + rep  # as bench.routing.run
            for reason, (r, n) in regret_by_reason(scenario, horizon, run_seed, config).items():
                total[reason][0] += r
                total[reason][1] += n
        decisions = sum(n for _, n in total.values())
        parts = "  ".join(
            f"{reason} {r / decisions:.4f} ({100 * n / decisions:.1f} %)" for reason, (r, n) in sorted(total.items())
        )
        print(f"{scenario.name:<18} regret/tx {sum(r for r, _ in total.values()) / decisions:.4f}  {parts}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
