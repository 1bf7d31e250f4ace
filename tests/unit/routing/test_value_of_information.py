"""Exploration by the value of information (routing/engine.py ``Router._most_valuable_look``)."""

from __future__ import annotations

from collections import Counter

from tests.unit.routing.helpers import NOW, feed, make_router, withhold


def _explored(exploration_value: float = 0.05, **config: object) -> Counter[str]:
    """Which channels 300 decisions explore: a leads (0.95 on 400), b is far behind on plenty of
    evidence (0.60 on 200), c is a close rival on little (0.93 on 15)."""
    config.update(exploration_value=exploration_value, relook_after_s=10_000.0, relook_max_after_s=10_000.0)
    router = make_router(seed=5, **config)
    feed(router, "a", ("S" * 19 + "F") * 20, start=NOW)
    feed(router, "b", "SSSFF" * 40, start=NOW + 200)
    feed(router, "c", "S" * 14 + "F", start=NOW + 385)
    explored: Counter[str] = Counter()
    for t in range(300):
        decision = router.decide(withhold(now=NOW + 400 + t))
        if decision.reason == "exploration":
            explored[decision.ranked[0].channel_id] += 1
    return explored


def test_a_close_rival_is_measured_and_a_channel_far_behind_is_not() -> None:
    explored = _explored()
    assert explored["b"] == 0, explored
    assert explored["c"] >= 10, explored  # up to the share cap: nothing was learnt in between


def test_no_look_is_worth_it_when_every_rival_is_far_behind() -> None:
    router = make_router(seed=5, exploration_value=0.05, relook_after_s=10_000.0, relook_max_after_s=10_000.0)
    end = feed(router, "a", ("S" * 19 + "F") * 20)
    feed(router, "b", "SSSFF" * 40, start=NOW + 200)
    feed(router, "c", "SSF" * 60, start=NOW + 220)
    reasons = Counter(router.decide(withhold(now=end + t)).reason for t in range(300))
    assert reasons == Counter({"best_score": 300}), reasons


def test_thompson_draws_still_explore_far_behind_channels_when_chosen() -> None:
    """exploration_value = 0 (the default) selects the Thompson draws: they explore too."""
    draws = _explored(exploration_value=0.0, exploration=1.0)
    assert sum(draws.values()) > 0, draws
