"""Routing collections: only channels offering the cashier kind, the configured preference first, and the
borrower's choice never held against a channel."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from channels.contract import CashierKind, Operation, Outcome, OutcomeStatus
from gateway.domain import AttemptStatus
from gateway.planner import Plan, Planner
from gateway.store.rows import AttemptRow, FinishedAttempt
from routing.config import parse_channel_routing
from routing.engine import RouteRequest
from tests.unit.routing.helpers import NOW, make_router, profile

COLLECTS = frozenset({Operation.COLLECT, Operation.WITHHOLD})


def collect(kind: CashierKind | None) -> RouteRequest:
    return RouteRequest(Operation.COLLECT, 10_000, "CNY", "", NOW, cashier_kind=kind)


def test_only_channels_offering_the_cashier_are_candidates() -> None:
    router = make_router(
        [
            profile("a", operations=COLLECTS, cashier_kinds=frozenset({CashierKind.QR})),
            profile("b", operations=COLLECTS, cashier_kinds=frozenset(CashierKind)),
            profile("c"),  # no COLLECT at all
        ]
    )
    decision = router.decide(collect(CashierKind.H5))
    assert [s.channel_id for s in decision.ranked] == ["b"]
    assert {r.channel_id: r.filter for r in decision.rejected} == {"a": "cashier", "c": "operation"}
    assert router.decide(collect(None)).ranked == []  # a collection names its cashier


def test_the_cashiers_of_a_profile_are_the_adapters_when_it_collects() -> None:
    kinds = frozenset({CashierKind.QR, CashierKind.IN_APP})
    profile_ = parse_channel_routing(
        "channels[0].routing",
        {},
        ["a"],
        channel_id="a",
        default_operations=COLLECTS,
        default_currencies=frozenset({"CNY"}),
        default_cashier_kinds=kinds,
    )
    assert profile_.cashier_kinds == kinds
    without = parse_channel_routing(
        "channels[0].routing",
        {"operations": ["withhold"]},
        ["a"],
        channel_id="a",
        default_operations=COLLECTS,
        default_currencies=frozenset({"CNY"}),
        default_cashier_kinds=kinds,
    )
    assert without.cashier_kinds == frozenset()


def test_a_plan_ranks_the_preferred_channels_first_and_can_be_kept_to_one() -> None:
    plan = Plan(["a", "b", "c"], None, "best_score", [("d", "cashier", "no H5")])
    preferred = plan.preferring(("c", "x"))
    assert (preferred.candidates, preferred.reason) == (["c", "a", "b"], "preference")
    assert plan.preferring(("a",)) is plan
    assert plan.only("b").candidates == ["b"]
    assert plan.only("d").candidates == [] and plan.only("d").rejected == [("d", "cashier", "no H5")]
    assert plan.only("z").rejected == [("z", "channel", "not a configured channel")]


def test_a_collection_closed_unpaid_teaches_the_router_nothing() -> None:
    router = make_router([profile("a", operations=COLLECTS, cashier_kinds=frozenset(CashierKind))])
    planner = Planner(router, None, None)  # type: ignore[arg-type]
    attempt = AttemptRow(1, 1, 1, "a", "collect", "F01", AttemptStatus.PENDING, 100, "CNY", created_at=None)
    before = router.snapshot(NOW)[0].to_dict()
    for code in ("COLLECTION_EXPIRED", "COLLECTION_CLOSED"):
        planner.observe(attempt, Outcome(OutcomeStatus.FAILED, code, safe_elsewhere=True))
    assert router.snapshot(NOW)[0].to_dict() == before
    refused = replace(attempt, id=2, channel_order_no="F02")  # another attempt: each is counted once
    planner.observe(refused, Outcome(OutcomeStatus.FAILED, "CHANNEL_BUSY", safe_elsewhere=True))
    assert router.snapshot(NOW)[0].to_dict() != before  # a refused creation is the channel's failure


def test_a_collection_closed_unpaid_on_another_replica_teaches_the_router_nothing_either() -> None:
    router = make_router([profile("a", operations=COLLECTS, cashier_kinds=frozenset(CashierKind))])
    planner = Planner(router, None, None)  # type: ignore[arg-type]
    before = router.snapshot(NOW)[0].to_dict()
    at = datetime.fromtimestamp(NOW - 60, UTC).replace(tzinfo=None)
    closed = [
        FinishedAttempt("a", "collect", "", AttemptStatus.FAILED, code == "COLLECTION_EXPIRED", at, f"F{i}", at, code)
        for i, code in enumerate(("COLLECTION_EXPIRED", "COLLECTION_CLOSED"))
    ]
    assert planner.fold(closed) == 0
    assert router.snapshot(NOW)[0].to_dict() == before
    busy = FinishedAttempt("a", "collect", "", AttemptStatus.FAILED, False, at, "F9", at, "CHANNEL_BUSY")
    assert planner.fold([busy]) == 1
    assert router.snapshot(NOW)[0].to_dict() != before
