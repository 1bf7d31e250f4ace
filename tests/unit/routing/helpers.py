"""Builders shared by the routing unit tests."""

from __future__ import annotations

import random
from collections.abc import Iterable

from channels.contract import Operation
from routing.config import ChannelProfile, FeeSchedule, RouterConfig
from routing.engine import Observation, Router, RouteRequest

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a Thursday
ALL = frozenset({"a", "b", "c"})


def profile(channel_id: str, **overrides: object) -> ChannelProfile:
    fields: dict[str, object] = {
        "operations": frozenset({Operation.WITHHOLD, Operation.PAYOUT}),
        "currencies": frozenset({"CNY"}),
        "fee": FeeSchedule(rate_ppm=3000),
    }
    fields.update(overrides)
    return ChannelProfile(channel_id, **fields)  # type: ignore[arg-type]


def withhold(amount: int = 100_000, now: float = NOW, bank: str = "ICBC", **kw: object) -> RouteRequest:
    kw.setdefault("agreement_channels", ALL)
    return RouteRequest(Operation.WITHHOLD, amount, "CNY", bank, now, **kw)  # type: ignore[arg-type]


def make_router(profiles: Iterable[ChannelProfile] | None = None, seed: int = 7, **config: object) -> Router:
    profiles = list(profiles) if profiles is not None else [profile("a"), profile("b"), profile("c")]
    return Router(profiles, RouterConfig(**config), rng=random.Random(seed))  # type: ignore[arg-type]


def feed(
    router: Router, channel_id: str, outcomes: str, start: float = NOW, step: float = 1.0, bank: str = "ICBC"
) -> float:
    """Feed 'S' (success), 'F' (channel failure), 'P' (payer failure) outcomes one per ``step`` seconds."""
    kinds = {"S": Observation.SUCCESS, "F": Observation.CHANNEL_FAILURE, "P": Observation.PAYER_FAILURE}
    at = start
    for symbol in outcomes:
        router.observe(channel_id, Operation.WITHHOLD, bank, kinds[symbol], at)
        at += step
    return at
