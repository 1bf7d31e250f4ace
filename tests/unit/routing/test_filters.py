"""Each filter removes a channel and says so in the decision."""

from __future__ import annotations

import json

import pytest

from channels.contract import Operation
from routing.config import ChannelState, MaintenanceWindow
from routing.engine import CardUsage, RouteRequest
from tests.unit.routing.helpers import ALL, NOW, make_router, profile, withhold


def rejected(decision, channel_id: str) -> str | None:
    return next((r.filter for r in decision.rejected if r.channel_id == channel_id), None)


def ranked_ids(decision) -> list[str]:
    return [s.channel_id for s in decision.ranked]


@pytest.mark.parametrize(
    ("b_profile", "request_kw", "filter_name"),
    [
        ({"operations": frozenset({Operation.PAYOUT})}, {}, "operation"),
        ({"currencies": frozenset({"USD"})}, {}, "currency"),
        ({"banks": frozenset({"CCB"})}, {}, "bank"),
        ({"min_amount": 200_000}, {}, "amount"),
        ({"max_amount": 50_000}, {}, "amount"),
        ({"bank_limits": {"ICBC": (1, 50_000)}}, {}, "bank_amount"),
        ({}, {"agreement_channels": frozenset({"a", "c"})}, "agreement"),
        ({"per_card_daily_attempts": 3}, {"card_usage": {"b": CardUsage(attempts=3, amount=0)}}, "card_attempts"),
        (
            {"per_card_daily_amount": 150_000},
            {"card_usage": {"b": CardUsage(attempts=1, amount=60_000)}},
            "card_amount",
        ),
        ({"state": ChannelState.DRAINING}, {}, "state"),
        ({"state": ChannelState.DISABLED}, {}, "state"),
        ({}, {"exclude": frozenset({"b"})}, "excluded"),
        ({"maintenance": (MaintenanceWindow.one_off(NOW - 60, NOW + 60, "upgrade"),)}, {}, "maintenance"),
        ({"maintenance": (MaintenanceWindow.recurring([3], "00:00", "00:30"),)}, {}, "maintenance"),  # Thursday
    ],
)
def test_each_filter_removes_the_channel_and_is_reported(b_profile, request_kw, filter_name) -> None:
    router = make_router([profile("a"), profile("b", **b_profile), profile("c")])
    decision = router.decide(withhold(**request_kw))
    assert rejected(decision, "b") == filter_name
    assert "b" not in ranked_ids(decision)
    assert set(ranked_ids(decision)) == {"a", "c"}
    json.dumps(decision.to_dict())


def test_same_limits_let_the_channel_through() -> None:
    b = profile(
        "b",
        banks=frozenset({"ICBC"}),
        min_amount=100_000,
        max_amount=100_000,
        bank_limits={"ICBC": (100_000, 100_000)},
        per_card_daily_attempts=3,
        per_card_daily_amount=160_000,
        maintenance=(MaintenanceWindow.recurring([3], "00:01", "00:30"),),
    )
    router = make_router([b])
    decision = router.decide(withhold(card_usage={"b": CardUsage(attempts=2, amount=60_000)}))
    assert ranked_ids(decision) == ["b"] and decision.rejected == []


def test_payout_needs_position_covering_the_amount() -> None:
    router = make_router()
    request = RouteRequest(
        Operation.PAYOUT, 100_000, "CNY", "ICBC", NOW, available_position={"a": 100_000, "b": 99_999}
    )
    decision = router.decide(request)
    assert ranked_ids(decision) == ["a"]
    assert rejected(decision, "b") == "position" and rejected(decision, "c") == "position"


def test_payout_without_known_positions_goes_nowhere() -> None:
    decision = make_router().decide(RouteRequest(Operation.PAYOUT, 100, "CNY", "ICBC", NOW))
    assert decision.ranked == [] and decision.reason == "no_candidate"
    assert {r.filter for r in decision.rejected} == {"position"}


def test_withhold_without_agreements_goes_nowhere() -> None:
    decision = make_router().decide(withhold(agreement_channels=None))
    assert decision.ranked == [] and {r.filter for r in decision.rejected} == {"agreement"}


def test_set_state_takes_effect_on_the_next_decision() -> None:
    router = make_router()
    router.set_state("a", ChannelState.DRAINING)
    assert rejected(router.decide(withhold()), "a") == "state"
    router.set_state("a", ChannelState.ENABLED)
    assert rejected(router.decide(withhold()), "a") is None


def test_recurring_maintenance_ends_on_time() -> None:
    b = profile("b", maintenance=(MaintenanceWindow.recurring([3], "00:00", "00:30"),))
    router = make_router([profile("a"), b])
    assert rejected(router.decide(withhold(now=NOW + 29 * 60)), "b") == "maintenance"
    assert rejected(router.decide(withhold(now=NOW + 30 * 60)), "b") is None


def test_decision_lists_all_candidates_and_rejections() -> None:
    router = make_router([profile("a"), profile("b", currencies=frozenset({"USD"})), profile("c")])
    decision = router.decide(withhold(agreement_channels=ALL))
    data = decision.to_dict()
    assert data["reason"] in {"best_score", "exploration"}
    assert [r["channel_id"] for r in data["ranked"]] == ranked_ids(decision)
    assert data["rejected"] == [{"channel_id": "b", "filter": "currency", "detail": "does not support CNY"}]
    assert all(r["cost"] == 300 for r in data["ranked"])  # 0.3 % of 100000
