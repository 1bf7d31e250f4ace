"""Adversarial probes: plans run by two executors at once, and instalments whose withhold is still pending.

Two executors (two replicas' worth: same database, other owners) settling one time point together withhold
no instalment twice; an instalment whose withhold is still pending at the next time point (or the next
day) is not withheld again; a plan cancelled while its withhold is in flight takes that withhold's result
and is never attempted again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Any

import pytest

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.plans.executor import PlanExecutor
from gateway.store.db import DatabaseConfig
from paygate.v1 import plans_pb2, plans_pb2_grpc
from tests.fakes.clock import FakeClock
from tests.support.harness import Harness, running_gateway
from tests.support.plans import ORDER_TO_REQUEST_SQL, debits_by_instalment, order_map, plan_pb
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

DAY = date(2026, 12, 1)
MORNING = datetime(2026, 12, 1, 0, 0)  # 08:00 in Shanghai
NOON = datetime(2026, 12, 1, 4, 0)  # 12:00
SIX = datetime(2026, 12, 1, 10, 0)  # 18:00
TOMORROW_NOON = datetime(2026, 12, 2, 4, 0)
POLICY: dict[str, Any] = {"time_points": ["12:00", "18:00"], "attempts_per_day": 2, "retry_days": 2}


@asynccontextmanager
async def stack(
    db_config: DatabaseConfig, clock: FakeClock, behaviour: Behaviour
) -> AsyncIterator[tuple[Harness, plans_pb2_grpc.WithholdingPlansStub]]:
    plans = {
        "enabled": False,  # the test steps the executors itself
        "concurrency": 8,
        "claim_batch": 4,
        "lease_s": 30.0,
        "wait_s": 0.5,
        "policies": {"default": POLICY},
        "products": {"cash-loan": "default"},
    }
    async with running_gateway(db_config, {"bank-a": behaviour}, clock=clock, plans=plans) as h:
        yield h, plans_pb2_grpc.WithholdingPlansStub(h.channel)


def second_executor(h: Harness, owner: str) -> PlanExecutor:
    """Another replica's executor: the same database and banks, its own owner, claims and workers."""
    first = h.gateway.executor
    assert first is not None
    return PlanExecutor(
        store=first.store,
        flows=first.flows,
        agreements=first.agreements,
        planner=first.planner,
        limiter=first.limiter,
        config=first.config,
        schedules=first.schedules,
        sealer=first.sealer,
        clock=first.clock,
        owner=owner,
        on_outbox=first.on_outbox,
    )


async def submit(h: Harness, stub: plans_pb2_grpc.WithholdingPlansStub, cards: list[str], amount: int) -> None:
    specs = [plan_pb(f"loan-{i}", c, [(f"loan-{i}-1", "2026-12-01", amount + i * 100)]) for i, c in enumerate(cards)]
    reply = await stub.SubmitPlans(plans_pb2.SubmitPlansRequest(plans=specs), metadata=h.md())
    assert not reply.rejected, reply


async def bound_cards(h: Harness, n: int) -> list[str]:
    cards = [luhn_card() for _ in range(n)]
    for card in cards:
        await h.bind_card(card, ["bank-a"])
    return cards


async def withholds_per_instalment(h: Harness) -> dict[str, int]:
    rows = await h.gateway.db.fetchall(
        "SELECT i.instalment_id, COUNT(f.id) AS n FROM instalments i"
        " LEFT JOIN flows f ON f.request_id LIKE CONCAT('plan:%%:', i.id) GROUP BY i.instalment_id"
    )
    return {r["instalment_id"]: int(r["n"]) for r in rows}


async def statuses(h: Harness) -> dict[str, str]:
    rows = await h.gateway.db.fetchall("SELECT instalment_id, status FROM instalments")
    return {r["instalment_id"]: r["status"] for r in rows}


async def test_two_executors_on_one_time_point_withhold_each_instalment_once(db_config: DatabaseConfig) -> None:
    clock = FakeClock(MORNING)
    behaviour = Behaviour(magic=False, p50_ms=30, p99_ms=120, pending_ratio=0.2, settle_after_ms=(100, 300))
    async with stack(db_config, clock, behaviour) as (h, stub):
        cards = await bound_cards(h, 24)
        await submit(h, stub, cards, 10_000)
        clock.set(NOON)
        assert h.gateway.executor is not None
        other = second_executor(h, "replica-b")
        await asyncio.wait_for(asyncio.gather(h.gateway.executor.settle(), other.settle()), timeout=15)

        async def all_succeeded() -> bool:
            for executor in (h.gateway.executor, other):
                assert executor is not None
                await executor.settle()
            return set((await statuses(h)).values()) == {"SUCCEEDED"}

        await eventually(all_succeeded, timeout_s=10, what="every instalment succeeded")
        debits = debits_by_instalment(h.debits(), order_map(await h.gateway.db.fetchall(ORDER_TO_REQUEST_SQL)))
        assert len(debits) == 24 and set(debits.values()) == {1}, debits
        assert set((await withholds_per_instalment(h)).values()) == {1}
        owners = await h.gateway.db.fetchall("SELECT COUNT(*) AS n FROM instalment_attempts GROUP BY instalment_ref")
        assert {int(r["n"]) for r in owners} == {1}


async def test_a_withhold_still_pending_at_the_next_time_points_is_not_sent_again(db_config: DatabaseConfig) -> None:
    clock = FakeClock(MORNING)
    # the bank answers "processing" and keeps the order open far beyond the test
    behaviour = Behaviour(magic=False, pending_ratio=1.0, settle_after_ms=(60_000, 61_000))
    async with stack(db_config, clock, behaviour) as (h, stub):
        cards = await bound_cards(h, 3)
        await submit(h, stub, cards, 10_000)
        executor = h.gateway.executor
        assert executor is not None
        for moment in (NOON, SIX, TOMORROW_NOON):
            clock.set(moment)
            await asyncio.wait_for(executor.settle(), timeout=10)
            assert set((await statuses(h)).values()) == {"IN_FLIGHT"}, moment
            assert set((await withholds_per_instalment(h)).values()) == {1}, moment
        orders = [e for e in h.sims["bank-a"].ledger.entries() if e.kind.value == "withhold"]
        assert len(orders) == 3


async def test_a_plan_cancelled_while_its_withhold_is_in_flight_takes_its_result_once(
    db_config: DatabaseConfig,
) -> None:
    clock = FakeClock(MORNING)
    behaviour = Behaviour(magic=False, pending_ratio=1.0, settle_after_ms=(1_500, 1_600))
    async with stack(db_config, clock, behaviour) as (h, stub):
        cards = await bound_cards(h, 2)
        await submit(h, stub, cards, 10_000)
        executor = h.gateway.executor
        assert executor is not None
        clock.set(NOON)
        await asyncio.wait_for(executor.settle(), timeout=10)
        assert set((await statuses(h)).values()) == {"IN_FLIGHT"}
        await stub.CancelPlan(plans_pb2.PlanChangeRequest(plan_id="loan-0", reason="restructured"), metadata=h.md())
        await stub.PausePlan(plans_pb2.PlanChangeRequest(plan_id="loan-1", reason="borrower called"), metadata=h.md())

        async def resolved() -> bool:
            await executor.settle()
            s = await statuses(h)
            return "IN_FLIGHT" not in s.values()

        await eventually(resolved, timeout_s=10, what="the in-flight withholds' results are recorded")
        status = await statuses(h)
        # the bank took the money: that is the instalment's result, whatever was asked meanwhile
        assert status == {"loan-0-1": "SUCCEEDED", "loan-1-1": "SUCCEEDED"}, status
        for moment in (SIX, TOMORROW_NOON):
            clock.set(moment)
            await asyncio.wait_for(executor.settle(), timeout=10)
        assert set((await withholds_per_instalment(h)).values()) == {1}
        debits = debits_by_instalment(h.debits(), order_map(await h.gateway.db.fetchall(ORDER_TO_REQUEST_SQL)))
        assert set(debits.values()) == {1} and len(debits) == 2
