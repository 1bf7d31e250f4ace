"""Issue 17 acceptance: withholding plans on real MariaDB, the sandbox banks over HTTP and the broker,
with the executor's clock moved by the test (no sleeping for time points)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta
from typing import Any

import grpc
import pytest

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.plans.model import InstalmentStatus, RunKey, RunStatus
from gateway.store.db import DatabaseConfig
from paygate.v1 import events_pb2, gateway_pb2, plans_pb2, plans_pb2_grpc
from tests.fakes.clock import FakeClock
from tests.support.harness import Harness, running_gateway
from tests.support.plans import ORDER_TO_REQUEST_SQL, debits_by_instalment, order_map, plan_pb

DAY = date(2026, 12, 1)
MORNING = datetime(2026, 12, 1, 0, 0)  # 08:00 in Shanghai
NOON = datetime(2026, 12, 1, 4, 0)  # 12:00
SIX = datetime(2026, 12, 1, 10, 0)  # 18:00
TOMORROW_NOON = datetime(2026, 12, 2, 4, 0)

POLICY: dict[str, Any] = {
    "time_points": ["12:00", "18:00"],
    "attempts_per_day": 2,
    "retry_days": 1,
    "quiet_start": "22:00",
    "quiet_end": "07:00",
}


def plans_config(**extra: Any) -> dict[str, Any]:
    return {
        "enabled": False,  # the test steps the executor itself
        "concurrency": 8,
        "claim_batch": 8,
        "lease_s": 30.0,
        "wait_s": 5.0,
        "policies": {"default": extra.pop("policy", POLICY)},
        "products": {"cash-loan": "default"},
        **extra,
    }


@asynccontextmanager
async def stack(
    db_config: DatabaseConfig, clock: FakeClock, *, banks: tuple[str, ...] = ("bank-a",), **kw: Any
) -> AsyncIterator[tuple[Harness, plans_pb2_grpc.WithholdingPlansStub, plans_pb2_grpc.PlanAdminStub]]:
    plans = plans_config(**kw.pop("plans", {}))
    async with running_gateway(db_config, {b: Behaviour() for b in banks}, clock=clock, plans=plans, **kw) as h:
        yield h, plans_pb2_grpc.WithholdingPlansStub(h.channel), plans_pb2_grpc.PlanAdminStub(h.channel)


async def submit(h: Harness, stub: plans_pb2_grpc.WithholdingPlansStub, *plans: plans_pb2.PlanSpec) -> None:
    reply = await stub.SubmitPlans(plans_pb2.SubmitPlansRequest(plans=list(plans)), metadata=h.md())
    assert not reply.rejected, reply


async def debits(h: Harness) -> dict[int, int]:
    """Instalment row id -> debits counted on the simulated banks' own ledgers."""
    return debits_by_instalment(h.debits(), order_map(await h.gateway.db.fetchall(ORDER_TO_REQUEST_SQL)))


async def statuses(h: Harness) -> dict[str, str]:
    rows = await h.gateway.db.fetchall("SELECT instalment_id, status FROM instalments")
    return {r["instalment_id"]: r["status"] for r in rows}


async def outcome_events(h: Harness) -> list[events_pb2.FlowEvent]:
    rows = await h.gateway.db.fetchall("SELECT payload FROM outbox WHERE event_type='INSTALMENT_OUTCOME' ORDER BY id")
    return [events_pb2.FlowEvent.FromString(r["payload"]) for r in rows]


async def at(h: Harness, clock: FakeClock, moment: datetime) -> None:
    clock.set(moment)
    assert h.gateway.executor is not None
    await h.gateway.executor.settle()


async def test_instalments_due_are_attempted_once_and_never_after_success(db_config: DatabaseConfig) -> None:
    clock = FakeClock(MORNING)
    async with stack(db_config, clock) as (h, stub, _):
        cards = [luhn_card() for _ in range(6)]
        for card in cards:
            await h.bind_card(card, ["bank-a"])
        await submit(
            h,
            stub,
            *(
                plan_pb(
                    f"loan-{i}",
                    card,
                    [(f"loan-{i}-1", "2026-12-01", 10000 + i * 100), (f"loan-{i}-2", "2027-01-01", 5000)],
                )
                for i, card in enumerate(cards)
            ),
        )
        await at(h, clock, datetime(2026, 12, 1, 3, 59))  # 11:59: nothing due
        assert not await debits(h)
        await at(h, clock, NOON)
        taken = await debits(h)
        assert len(taken) == 6 and set(taken.values()) == {1}
        status = await statuses(h)
        assert {status[f"loan-{i}-1"] for i in range(6)} == {"SUCCEEDED"}
        assert {status[f"loan-{i}-2"] for i in range(6)} == {"SCHEDULED"}  # due next month
        # the same time point again, the next one, tomorrow: repaid in full is never attempted again
        await h.gateway.executor.settle()
        await at(h, clock, SIX)
        await at(h, clock, TOMORROW_NOON)
        assert await debits(h) == taken
        events = [e for e in await outcome_events(h) if e.instalment.kind == events_pb2.OUTCOME_SUCCEEDED]
        assert len(events) == 6 and all(e.flow_no and e.request_id.startswith("plan:20261201:1200:") for e in events)
        plan = await stub.GetPlan(plans_pb2.GetPlanRequest(plan_id="loan-0", include_attempts=True), metadata=h.md())
        first = plan.instalments[0]
        assert first.status == plans_pb2.INSTALMENT_SUCCEEDED and len(first.attempt_history) == 1
        assert first.attempt_history[0].flow_no == events[0].flow_no or first.attempt_history[0].flow_no
        assert cards[0] not in str(plan) and plan.account_masked.endswith(cards[0][-4:])


async def test_insufficient_funds_retries_at_the_next_time_point_and_stops_after_the_attempts(
    db_config: DatabaseConfig,
) -> None:
    clock = FakeClock(MORNING)
    policy = {**POLICY, "retry_days": 0}
    async with stack(db_config, clock, plans={"policy": policy}) as (h, stub, _):
        card, lucky = luhn_card(), luhn_card()
        await h.bind_card(card, ["bank-a"])
        await h.bind_card(lucky, ["bank-a"])
        await submit(
            h,
            stub,
            plan_pb("poor", card, [("poor-1", "2026-12-01", 10001)]),  # ..01: the sandbox says insufficient funds
            plan_pb("lucky", lucky, [("lucky-1", "2026-12-01", 20001)]),
        )
        await at(h, clock, NOON)
        retries = await outcome_events(h)
        assert [e.instalment.kind for e in retries] == [events_pb2.OUTCOME_RETRY_SCHEDULED] * 2
        assert {(e.instalment.next_business_day, e.instalment.next_time_point) for e in retries} == {
            ("2026-12-01", "18:00")
        }
        assert all(e.instalment.failure_code == "INSUFFICIENT_FUNDS" for e in retries)
        # the borrowers' salaries arrive: the banks' answers are no longer insufficient funds (magic amounts off)
        h.sims["bank-a"].behaviour.update({"magic": False})
        rows = await h.gateway.db.fetchall("SELECT id, instalment_id FROM instalments")
        ref = {r["instalment_id"]: int(r["id"]) for r in rows}
        await at(h, clock, datetime(2026, 12, 1, 9, 59))  # 17:59: not yet
        assert len(await debits(h)) == 0
        await at(h, clock, SIX)
        status = await statuses(h)
        assert status["lucky-1"] == "SUCCEEDED" and status["poor-1"] == "SUCCEEDED"
        assert (await debits(h)) == {ref["lucky-1"]: 1, ref["poor-1"]: 1}


async def test_the_attempts_run_out_and_the_instalment_stops(db_config: DatabaseConfig) -> None:
    clock = FakeClock(MORNING)
    async with stack(db_config, clock, plans={"policy": {**POLICY, "retry_days": 0}}) as (h, stub, _):
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        await submit(h, stub, plan_pb("poor", card, [("poor-1", "2026-12-01", 10001)]))
        await at(h, clock, NOON)
        await at(h, clock, SIX)
        await at(h, clock, TOMORROW_NOON)
        kinds = [(e.instalment.kind, e.instalment.stop_reason) for e in await outcome_events(h)]
        assert kinds == [(events_pb2.OUTCOME_RETRY_SCHEDULED, ""), (events_pb2.OUTCOME_STOPPED, "ATTEMPTS_EXHAUSTED")]
        flows = await h.gateway.db.fetchall("SELECT request_id, status FROM flows WHERE kind='WITHHOLD'")
        assert sorted(f["request_id"].split(":")[2] for f in flows) == ["1200", "1800"]
        assert not await debits(h)


async def test_a_hard_decline_stops_the_instalment(db_config: DatabaseConfig) -> None:
    clock = FakeClock(MORNING)
    async with stack(db_config, clock) as (h, stub, _):
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        await submit(h, stub, plan_pb("frozen", card, [("frozen-1", "2026-12-01", 10002)]))  # ..02: account frozen
        await at(h, clock, NOON)
        await at(h, clock, SIX)
        [event] = await outcome_events(h)
        assert event.instalment.kind == events_pb2.OUTCOME_STOPPED
        assert event.instalment.stop_reason == "ACCOUNT_FROZEN"
        assert len(await h.gateway.db.fetchall("SELECT id FROM flows")) == 1


async def step_until(h: Harness, clock: FakeClock, done: Any, *, advance_s: float = 1.0, limit: int = 200) -> None:
    """Step the executor and move the clock ``advance_s`` at a time until ``await done()``."""
    executor = h.gateway.executor
    assert executor is not None
    for _ in range(limit):
        await executor.step()
        await asyncio.sleep(0.05)  # the attempts' database and bank calls take real time
        if await done():
            return
        clock.advance(advance_s)
    raise AssertionError("the run did not get there")


async def test_pause_resume_amend_settle_cancel_during_a_run(db_config: DatabaseConfig) -> None:
    clock = FakeClock(MORNING)
    # one withhold a second at the bank: the run lasts as long as the test moves the clock
    async with stack(db_config, clock, plans={"rate_limits": {"bank-a": 1.0}, "burst_s": 1.0}) as (h, stub, admin):
        cards = [luhn_card() for _ in range(8)]
        for card in cards:
            await h.bind_card(card, ["bank-a"])
        await submit(
            h, stub, *(plan_pb(f"p{i}", c, [(f"p{i}-1", "2026-12-01", 10000 + i * 100)]) for i, c in enumerate(cards))
        )
        clock.set(NOON)
        executor = h.gateway.executor
        assert executor is not None

        async def claimed_and_one_sent() -> bool:
            s = await statuses(h)
            return sum(v != "SCHEDULED" for v in s.values()) == 8 and len(await debits(h)) == 1

        await step_until(h, clock, claimed_and_one_sent, advance_s=0.0, limit=100)
        assert "CLAIMED" in (await statuses(h)).values()  # one token so far: the rest wait, claimed
        md = h.md()
        await stub.PausePlan(plans_pb2.PlanChangeRequest(plan_id="p5", reason="borrower called"), metadata=md)
        await stub.PausePlan(
            plans_pb2.PlanChangeRequest(plan_id="p6", instalment_id="p6-1", reason="dispute"), metadata=md
        )
        await stub.SettlePlan(plans_pb2.PlanChangeRequest(plan_id="p3", reason="repaid at the branch"), metadata=md)
        await stub.CancelPlan(
            plans_pb2.PlanChangeRequest(plan_id="p4", instalment_id="p4-1", reason="restructured"), metadata=md
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:  # claimed by the running time point: not now
            await stub.AmendInstalment(
                plans_pb2.AmendInstalmentRequest(
                    plan_id="p7", instalment_id="p7-1", amount=gateway_pb2.Money(amount=3000, currency="CNY")
                ),
                metadata=md,
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await stub.ResumePlan(plans_pb2.PlanChangeRequest(plan_id="p6", instalment_id="p6-1"), metadata=md)

        async def drained() -> bool:
            s = await statuses(h)
            return (
                all(v not in ("CLAIMED", "IN_FLIGHT") for v in s.values())
                and not executor.in_flight
                and (s["p6-1"] == "SUCCEEDED")
            )

        await step_until(h, clock, drained)
        status = await statuses(h)
        assert status["p3-1"] == "SETTLED" and status["p4-1"] == "CANCELLED"
        assert status["p5-1"] == "SCHEDULED"  # paused: not attempted
        assert {status[f"p{i}-1"] for i in (0, 1, 2, 6, 7)} == {"SUCCEEDED"}
        refs = {
            r["instalment_id"]: int(r["id"])
            for r in await h.gateway.db.fetchall("SELECT id, instalment_id FROM instalments")
        }
        taken = await debits(h)
        assert set(taken) == {refs[f"p{i}-1"] for i in (0, 1, 2, 6, 7)} and set(taken.values()) == {1}
        # resumed after its time point: due at the next one; amended there first
        await stub.ResumePlan(plans_pb2.PlanChangeRequest(plan_id="p5"), metadata=md)
        amended = await stub.AmendInstalment(
            plans_pb2.AmendInstalmentRequest(
                plan_id="p5", instalment_id="p5-1", amount=gateway_pb2.Money(amount=4000, currency="CNY")
            ),
            metadata=md,
        )
        assert amended.amount.amount == 4000 and amended.original_amount.amount == 10500
        run = await admin.GetRun(
            plans_pb2.RunRequest(policy="default", business_day="2026-12-01", time_point="12:00"), metadata=h.op_md
        )
        assert run.due == 8 and run.succeeded == 5 and run.remaining == 1  # p5, resumed within the window
        clock.set(SIX)

        async def p5_done() -> bool:
            return (await statuses(h))["p5-1"] == "SUCCEEDED"

        await step_until(h, clock, p5_done)
        row = await h.gateway.db.fetchone(
            "SELECT f.amount FROM flows f WHERE f.request_id LIKE %s", (f"plan:20261201:1800:{refs['p5-1']}",)
        )
        assert row is not None and row["amount"] == 4000


async def test_the_quiet_window_stops_a_run_and_what_it_left_waits_for_the_next_time_point(
    db_config: DatabaseConfig,
) -> None:
    clock = FakeClock(MORNING)
    policy = {**POLICY, "time_points": ["12:00", "21:30"]}
    plans = {"policy": policy, "rate_limits": {"bank-a": 1.0}, "burst_s": 1.0}
    async with stack(db_config, clock, plans=plans) as (h, stub, admin):
        cards = [luhn_card() for _ in range(5)]
        for card in cards:
            await h.bind_card(card, ["bank-a"])
        await submit(h, stub, *(plan_pb(f"q{i}", c, [(f"q{i}-1", "2026-12-01", 10000)]) for i, c in enumerate(cards)))
        run_key = RunKey("default", DAY, "21:30")
        late = datetime(2026, 12, 1, 13, 30)  # 21:30
        clock.set(late)
        executor = h.gateway.executor
        assert executor is not None

        async def first_sent() -> bool:
            return len(await debits(h)) == 1

        await step_until(h, clock, first_sent, advance_s=0.0, limit=40)
        clock.set(datetime(2026, 12, 1, 14, 0))  # 22:00: quiet

        async def closed() -> bool:
            run = await h.gateway.plans.store.run(run_key)  # type: ignore[union-attr]
            return run is not None and run.status is RunStatus.BEHIND and not executor.in_flight

        await step_until(h, clock, closed, advance_s=60.0)
        assert len(await debits(h)) == 1  # nothing sent inside the quiet window
        run = await h.gateway.plans.store.run(run_key)  # type: ignore[union-attr]
        assert run is not None and run.missed == 4
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin.StartRun(
                plans_pb2.RunRequest(
                    policy="default", business_day="2026-12-01", time_point="21:30", reason="catch up"
                ),
                metadata=h.op_md,
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        clock.set(TOMORROW_NOON)

        async def all_taken() -> bool:
            return len(await debits(h)) == 5

        await step_until(h, clock, all_taken)
        assert set((await debits(h)).values()) == {1}


async def test_bulk_submission_names_bad_items_and_is_idempotent(db_config: DatabaseConfig) -> None:
    clock = FakeClock(MORNING)
    async with stack(db_config, clock) as (h, stub, _):
        card = luhn_card()

        def book(start: int, n: int) -> plans_pb2.SubmitPlansRequest:
            return plans_pb2.SubmitPlansRequest(
                plans=[
                    plan_pb(f"b{i}", card, [(f"b{i}-{k}", f"2027-0{k}-15", 1000 * k) for k in range(1, 4)])
                    for i in range(start, start + n)
                ]
            )

        bad = book(100, 2)
        bad.plans[0].instalments[1].due_date = "2027-02-30"
        bad.plans[1].account_no = "12"

        async def messages() -> AsyncIterator[plans_pb2.SubmitPlansRequest]:
            yield book(0, 50)
            yield book(50, 50)
            yield bad
            yield book(0, 50)  # the same again: a replay

        async def one() -> AsyncIterator[plans_pb2.SubmitPlansRequest]:
            yield book(900, 1)

        with pytest.raises(grpc.aio.AioRpcError) as refused:  # the stream checks the token like a unary call
            _ = [r async for r in stub.ImportPlans(one(), metadata=h.op_md)]
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        replies = [r async for r in stub.ImportPlans(messages(), metadata=h.md())]
        assert [r.sequence for r in replies] == [0, 1, 2, 3]
        assert [(r.plans_accepted, r.instalments_accepted, r.instalments_replayed) for r in replies] == [
            (50, 150, 0),
            (50, 150, 0),
            (1, 2, 0),
            (50, 0, 150),
        ]
        assert {(x.field, x.instalments) for x in replies[2].rejected} == {
            ("plans[0].instalments[1].due_date", 1),
            ("plans[1].account_no", 3),
        }
        assert replies[2].instalments_rejected == 4
        conflict = book(0, 1)
        conflict.plans[0].instalments[0].amount.amount = 999
        reply = await stub.SubmitPlans(conflict, metadata=h.md())
        assert [(x.instalment_id, x.code) for x in reply.rejected] == [("b0-1", "ALREADY_EXISTS")]
        other_plan = book(0, 1)
        other_plan.plans[0].bank_code = "CCB"
        reply = await stub.SubmitPlans(other_plan, metadata=h.md())
        assert [(x.plan_id, x.field, x.code) for x in reply.rejected] == [("b0", "plans[0].plan_id", "ALREADY_EXISTS")]
        # pages of instalments by due date and status
        seen: list[str] = []
        token = ""
        while True:
            page = await stub.ListInstalments(
                plans_pb2.ListInstalmentsRequest(
                    due_from="2027-02-01", statuses=[plans_pb2.INSTALMENT_SCHEDULED], page_size=70, page_token=token
                ),
                metadata=h.md(),
            )
            seen += [i.instalment_id for i in page.instalments]
            token = page.next_page_token
            if not token:
                break
        assert len(seen) == 201 and len(set(seen)) == 201  # 2 of each 3 per plan, from February
        dates = [
            i.due_date
            for i in (
                await stub.ListInstalments(plans_pb2.ListInstalmentsRequest(page_size=500), metadata=h.md())
            ).instalments
        ]
        assert dates == sorted(dates)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetPlan(plans_pb2.GetPlanRequest(plan_id="b0"), metadata=h.md("collections"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND  # another caller's plan


async def test_operators_start_pause_resume_and_watch_runs(db_config: DatabaseConfig) -> None:
    clock = FakeClock(MORNING)
    async with stack(db_config, clock, plans={"scheduler": False}) as (h, stub, admin):
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        await submit(h, stub, plan_pb("o", card, [("o-1", "2026-12-01", 10000), ("o-2", "2026-12-01", 20000)]))
        clock.set(NOON)
        await h.gateway.executor.settle()  # type: ignore[union-attr]
        assert not await debits(h)  # no scheduler: nothing runs by itself
        key = plans_pb2.RunRequest(policy="default", business_day="2026-12-01", time_point="12:00", reason="by hand")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin.StartRun(key, metadata=h.md())  # a caller token is not an operator's
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        run = await admin.StartRun(key, metadata=h.op_md)
        assert run.status == plans_pb2.RUN_RUNNING and run.started_by == "ops" and run.due == 2
        paused = await admin.PauseRun(key, metadata=h.op_md)
        assert paused.status == plans_pb2.RUN_PAUSED
        await h.gateway.executor.settle()  # type: ignore[union-attr]
        assert not await debits(h)
        await admin.ResumeRun(key, metadata=h.op_md)
        await h.gateway.executor.settle()  # type: ignore[union-attr]
        done = await admin.GetRun(key, metadata=h.op_md)
        assert (done.attempted, done.succeeded, done.remaining) == (2, 2, 0)
        assert [(m.currency, m.amount) for m in done.succeeded_amounts] == [("CNY", 30000)]
        listed = await admin.ListRuns(plans_pb2.ListRunsRequest(business_day="2026-12-01"), metadata=h.op_md)
        assert [r.time_point for r in listed.runs] == ["12:00"]
        audit = await h.gateway.db.fetchall("SELECT action FROM audit_log ORDER BY id")
        assert [a["action"] for a in audit] == ["start_plan_run", "pause_plan_run", "resume_plan_run"]
        figures = await h.gateway.plans.store.daily_figures(DAY)  # type: ignore[union-attr]
        assert [(f.product, f.time_point, f.attempted, f.succeeded, f.succeeded_amount) for f in figures] == [
            ("cash-loan", "12:00", 2, 2, 30000)
        ]


async def test_outcome_events_reach_kafka_beside_the_flow_results(db_config: DatabaseConfig, kafka_broker: Any) -> None:
    from tests.integration.test_outbox_relay import raw_messages

    clock = FakeClock(MORNING)
    kafka = {
        "bootstrap_servers": kafka_broker.bootstrap,
        "default_topic": "plans.results",
        "event_topics": {"INSTALMENT_OUTCOME": "plans.outcomes"},
        "enable_idempotence": False,
        "create_topics": True,
        "topic_partitions": 1,
        "topic_replication_factor": 1,
    }
    async with stack(db_config, clock, kafka=kafka) as (h, stub, _):
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        await submit(h, stub, plan_pb("k", card, [("k-1", "2026-12-01", 10001), ("k-2", "2026-12-01", 10000)]))
        await at(h, clock, NOON)
        records = await raw_messages(kafka_broker.bootstrap, "plans.outcomes", expect=2)
        events = [events_pb2.FlowEvent.FromString(r.value) for r in records]
        assert {r.key for r in records} == {b"k"}
        assert {dict(r.headers)["event_type"] for r in records} == {b"INSTALMENT_OUTCOME"}
        assert sorted((e.instalment.instalment_id, e.instalment.kind) for e in events) == [
            ("k-1", events_pb2.OUTCOME_RETRY_SCHEDULED),
            ("k-2", events_pb2.OUTCOME_SUCCEEDED),
        ]
        results = await raw_messages(kafka_broker.bootstrap, "plans.results", expect=2)
        assert {events_pb2.FlowEvent.FromString(r.value).event_type for r in results} == {events_pb2.FLOW_RESULT}


async def test_claims_and_statuses_in_the_database_never_allow_two_attempts(db_config: DatabaseConfig) -> None:
    """The database's own guards: one attempt row per instalment per time point, whatever the code does."""
    clock = FakeClock(MORNING)
    async with stack(db_config, clock) as (h, stub, _):
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        await submit(h, stub, plan_pb("u", card, [("u-1", "2026-12-01", 10000)]))
        await at(h, clock, NOON)
        row = await h.gateway.db.fetchone("SELECT instalment_ref, run_id FROM instalment_attempts")
        assert row is not None
        from gateway.store.db import DuplicateKey

        with pytest.raises(DuplicateKey):
            async with h.gateway.db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO instalment_attempts (instalment_ref, business_day, time_point, request_id, amount,"
                    " currency, status, created_at) VALUES (%s, '2026-12-01', '12:00', 'x', 1, 'CNY', 'FAILED', NOW())",
                    (row["instalment_ref"],),
                )
        assert (await statuses(h)) == {"u-1": InstalmentStatus.SUCCEEDED.value}
        assert clock.now() + timedelta(0) == NOON
