"""FlowService over in-memory stores and channels of our own: every branch that decides money.

No MariaDB, no network. Each test checks what the channels received (what
could have moved money) next to what was recorded (flows, attempts, poll
queue, result events).
"""

from __future__ import annotations

import asyncio

import pytest

from channels.contract import Operation, OutcomeStatus
from gateway.domain import AttemptStatus, FlowStatus
from gateway.errors import FlowClosed, IdempotencyConflict, NoRoute, PreconditionFailed
from gateway.store.rows import Applied, FlowRow, Source
from gateway.validation import PayoutParams, RefundParams, WithholdParams
from tests.fakes import CALLER, CARD, FakeChannel, FakeGateway
from tests.fakes.channel import (
    Hang,
    busy,
    declined,
    insufficient_funds,
    ok,
    processing,
    timeout,
    unmapped,
)


def withhold(
    amount: int = 10_000, *, card: str = CARD, agreement_no: str = "", description: str = ""
) -> WithholdParams:
    return WithholdParams(amount, "CNY", card, "ICBC", agreement_no, description)


def payout(amount: int = 50_000) -> PayoutParams:
    return PayoutParams(amount, "CNY", "6222000011112222", "张三", "ICBC", "")


def debits(gw: FakeGateway) -> int:
    """Orders that could have moved money, over every channel."""
    return sum(len(c.orders()) for c in gw.channels.values())


async def settled(gw: FakeGateway, flow_no: str) -> FlowRow:
    """The stored flow once every background drive has finished."""
    await gw.flows.drain(5.0)
    flow = await gw.store.by_flow_no(flow_no)
    assert flow is not None
    return flow


@pytest.fixture
def two_banks() -> FakeGateway:
    gw = FakeGateway(FakeChannel("bank-a"), FakeChannel("bank-b"))
    gw.agree("bank-a", "bank-b")
    return gw


# --- the happy path, record before call ----------------------------------------------------


async def test_a_withhold_is_recorded_before_its_channel_call_and_finishes_with_one_result(
    two_banks: FakeGateway,
) -> None:
    gw = two_banks
    seen_before_call: list[AttemptStatus] = []

    def recorded_first(operation: str, order_no: str) -> None:
        [attempt] = [a for a in gw.tables.attempts.values() if a.channel_order_no == order_no]
        seen_before_call.append(attempt.status)

    gw.channels["bank-a"].before_call = recorded_first
    flow = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)

    assert seen_before_call == [AttemptStatus.SENDING]
    assert flow.status is FlowStatus.SUCCEEDED and not flow.replayed
    [attempt] = flow.attempts
    assert attempt.status is AttemptStatus.SUCCEEDED and attempt.channel == "bank-a"
    [order] = gw.channels["bank-a"].orders("withhold")
    assert order.channel_order_no == attempt.channel_order_no and order.amount == 10_000
    assert order.agreement_ref == "agr-bank-a" and order.notify_url == "http://gateway.test/callbacks/bank-a"
    assert [e.flow_id for e in gw.tables.events("FLOW_RESULT")] == [flow.id]
    assert gw.tables.poll_queue == {}
    assert gw.planner.observed == [("bank-a", OutcomeStatus.SUCCEEDED)]


# --- idempotency ---------------------------------------------------------------------------


async def test_the_same_key_with_the_same_parameters_replays_the_flow_without_a_second_debit(
    two_banks: FakeGateway,
) -> None:
    gw = two_banks
    first = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    before = gw.tables.snapshot()
    again = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    assert again.replayed and again.flow_no == first.flow_no and again.status is FlowStatus.SUCCEEDED
    assert debits(gw) == 1
    assert gw.tables.snapshot() == before


async def test_the_same_key_with_other_parameters_is_a_conflict_and_changes_nothing(two_banks: FakeGateway) -> None:
    gw = two_banks
    await gw.flows.withhold(CALLER, "r-1", withhold(10_000), wait_s=5)
    before = gw.tables.snapshot()
    with pytest.raises(IdempotencyConflict, match="already used with different parameters"):
        await gw.flows.withhold(CALLER, "r-1", withhold(10_001), wait_s=5)
    assert debits(gw) == 1
    assert gw.tables.snapshot() == before


async def test_concurrent_duplicates_make_one_flow_and_one_debit(two_banks: FakeGateway) -> None:
    gw = two_banks
    flows = await asyncio.gather(*[gw.flows.withhold(CALLER, "dup", withhold(), wait_s=5) for _ in range(20)])
    assert len({f.flow_no for f in flows}) == 1
    assert sum(1 for f in flows if not f.replayed) == 1
    assert len(gw.tables.flows) == 1 and debits(gw) == 1


async def test_a_replay_is_answered_even_when_the_agreement_is_gone(two_banks: FakeGateway) -> None:
    gw = two_banks
    first = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    gw.tables.agreements.clear()
    again = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    assert again.replayed and again.flow_no == first.flow_no and debits(gw) == 1


async def test_no_active_agreement_is_a_precondition_and_calls_nobody() -> None:
    gw = FakeGateway(FakeChannel("bank-a"))
    gw.agree("bank-a", caller="another-lender")  # agreements belong to their caller
    with pytest.raises(PreconditionFailed, match="no ACTIVE withholding agreement"):
        await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    assert debits(gw) == 0 and gw.tables.flows == {}


# --- failover: allowed only after a definite failure marked safe elsewhere --------------------


async def test_a_definite_safe_elsewhere_failure_fails_over_to_the_next_channel(two_banks: FakeGateway) -> None:
    gw = two_banks
    gw.channels["bank-a"].answer(busy())
    flow = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    assert flow.status is FlowStatus.SUCCEEDED and flow.channel == "bank-b"
    assert [(a.channel, a.status) for a in flow.attempts] == [
        ("bank-a", AttemptStatus.FAILED),
        ("bank-b", AttemptStatus.SUCCEEDED),
    ]
    assert flow.attempts[0].channel_order_no != flow.attempts[1].channel_order_no
    assert [a.exclude for a in gw.planner.asked] == [frozenset(), frozenset({"bank-a"})]
    assert gw.planner.chosen_channels == [("bank-a", False), ("bank-b", True)]
    assert len(gw.tables.events("FLOW_RESULT")) == 1  # the first failure did not finish the flow


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        pytest.param(processing(), AttemptStatus.PENDING, id="processing"),
        pytest.param(timeout(), AttemptStatus.PENDING, id="timeout-after-sending"),
        pytest.param(unmapped(), AttemptStatus.PENDING, id="unknown-code"),
        pytest.param(RuntimeError("adapter bug"), AttemptStatus.PENDING, id="adapter-raised"),
    ],
)
async def test_an_answer_without_a_definite_result_is_polled_never_failed_over(
    two_banks: FakeGateway, answer: object, status: AttemptStatus
) -> None:
    gw = two_banks
    gw.channels["bank-a"].answer(answer)  # type: ignore[arg-type]
    flow = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    assert flow.status is FlowStatus.PROCESSING and not flow.needs_review
    [attempt] = flow.attempts
    assert attempt.status is status
    assert gw.channels["bank-b"].calls == []  # never elsewhere
    row = gw.tables.poll_queue[attempt.id]  # queued for a query, after the first delay
    assert 1.5 < (row.due_at - attempt.created_at).total_seconds() <= 2.5  # type: ignore[operator]
    assert gw.tables.events("FLOW_RESULT") == []
    assert gw.planner.observed == []  # nothing definite to learn from


async def test_an_adapter_that_hangs_past_the_call_guard_is_pending_not_failed() -> None:
    gw = FakeGateway(FakeChannel("bank-a"), FakeChannel("bank-b"), call_guard_s=0.05)
    gw.agree("bank-a", "bank-b")
    gw.channels["bank-a"].answer(Hang(1.0, busy()))
    flow = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    [attempt] = flow.attempts
    assert attempt.status is AttemptStatus.PENDING and attempt.code == "CALL_GUARD_TIMEOUT"
    assert gw.channels["bank-b"].calls == [] and attempt.id in gw.tables.poll_queue


async def test_a_success_for_another_amount_is_held_pending_not_taken(two_banks: FakeGateway) -> None:
    gw = two_banks
    gw.channels["bank-a"].answer(ok(amount=9_999))
    flow = await gw.flows.withhold(CALLER, "r-1", withhold(10_000), wait_s=5)
    [attempt] = flow.attempts
    assert flow.status is FlowStatus.PROCESSING
    assert attempt.status is AttemptStatus.PENDING and attempt.code == "AMOUNT_MISMATCH"


async def test_a_payer_attributable_failure_ends_the_flow_without_failover(two_banks: FakeGateway) -> None:
    gw = two_banks
    gw.channels["bank-a"].answer(insufficient_funds())
    flow = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    assert flow.status is FlowStatus.FAILED and flow.payer_attributable
    assert flow.failure_code == "INSUFFICIENT_FUNDS"
    assert gw.channels["bank-b"].calls == [] and len(flow.attempts) == 1
    assert len(gw.tables.events("FLOW_RESULT")) == 1


async def test_a_definite_failure_not_safe_elsewhere_ends_the_flow_without_failover(two_banks: FakeGateway) -> None:
    gw = two_banks
    gw.channels["bank-a"].answer(declined())
    flow = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    assert flow.status is FlowStatus.FAILED and not flow.payer_attributable
    assert gw.channels["bank-b"].calls == []


async def test_failover_stops_at_the_attempt_limit() -> None:
    gw = FakeGateway(FakeChannel("bank-a"), FakeChannel("bank-b"), FakeChannel("bank-c"), max_attempts=2)
    gw.agree("bank-a", "bank-b", "bank-c")
    gw.channels["bank-a"].answer(busy())
    gw.channels["bank-b"].answer(busy())
    flow = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    assert flow.status is FlowStatus.FAILED and flow.failure_code == "CHANNEL_BUSY"
    assert [a.channel for a in flow.attempts] == ["bank-a", "bank-b"]
    assert gw.channels["bank-c"].calls == []
    assert len(gw.tables.events("FLOW_RESULT")) == 1


async def test_failover_stops_when_the_wait_budget_is_spent(two_banks: FakeGateway) -> None:
    gw = two_banks
    gw.channels["bank-a"].answer(Hang(0.02, busy()))
    first = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=0)
    assert first.status is FlowStatus.PROCESSING  # the budget ran out; the drive goes on by itself
    flow = await settled(gw, first.flow_no)
    assert flow.status is FlowStatus.FAILED and flow.failure_code == "CHANNEL_BUSY"
    assert len(flow.attempts) == 1 and gw.channels["bank-b"].calls == []


async def test_failover_stops_when_no_other_channel_is_left(two_banks: FakeGateway) -> None:
    gw = two_banks
    gw.channels["bank-a"].answer(busy())
    gw.channels["bank-b"].answer(busy())
    flow = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    assert flow.status is FlowStatus.FAILED and [a.channel for a in flow.attempts] == ["bank-a", "bank-b"]


async def test_failover_is_refused_when_rerouting_fails(two_banks: FakeGateway) -> None:
    gw = two_banks
    gw.channels["bank-a"].answer(busy())
    first_ask = gw.planner.plan

    async def router_down_on_failover(*args: object, **kw: object) -> object:
        if kw["exclude"]:
            raise RuntimeError("router down")
        return await first_ask(*args, **kw)  # type: ignore[arg-type]

    gw.planner.plan = router_down_on_failover  # type: ignore[method-assign,assignment]
    flow = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    assert flow.status is FlowStatus.FAILED and [a.channel for a in flow.attempts] == ["bank-a"]
    assert gw.channels["bank-b"].calls == []


async def test_a_flow_closed_before_its_failover_attempt_ends_from_the_failure_recorded(
    two_banks: FakeGateway,
) -> None:
    gw = two_banks
    gw.channels["bank-a"].answer(busy())
    gw.store.fail_next("add_attempt", FlowClosed("resolved by an operator meanwhile"))
    flow = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    flow = await settled(gw, flow.flow_no)
    assert flow.status is FlowStatus.FAILED and len(flow.attempts) == 1
    assert gw.channels["bank-b"].calls == []
    assert len(gw.tables.events("FLOW_RESULT")) == 1


# --- the RPC may go, the drive may not -------------------------------------------------------


async def test_a_caller_that_hangs_up_does_not_cancel_the_recorded_call(two_banks: FakeGateway) -> None:
    gw = two_banks
    gw.channels["bank-a"].answer(Hang(0.05, ok()))
    rpc = asyncio.ensure_future(gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5))
    while not gw.channels["bank-a"].calls:
        await asyncio.sleep(0.001)
    rpc.cancel()
    with pytest.raises(asyncio.CancelledError):
        await rpc
    [flow_row] = gw.tables.flows.values()
    flow = await settled(gw, flow_row.flow_no)
    assert flow.status is FlowStatus.SUCCEEDED and debits(gw) == 1


# --- payouts: the float ----------------------------------------------------------------------


async def test_a_payout_reserves_float_and_skips_a_channel_whose_float_is_gone() -> None:
    gw = FakeGateway(FakeChannel("pay-a"), FakeChannel("pay-b"))
    gw.fund("pay-a", 10_000)  # less than the payout: the reservation does not fit
    gw.fund("pay-b", 100_000)
    flow = await gw.flows.payout(CALLER, "p-1", payout(50_000), wait_s=5)
    assert flow.status is FlowStatus.SUCCEEDED and [a.channel for a in flow.attempts] == ["pay-b"]
    assert gw.channels["pay-a"].calls == []
    [order] = gw.channels["pay-b"].orders("payout")
    assert (order.channel_order_no, order.amount, order.account_no, order.account_name) == (
        flow.attempts[0].channel_order_no,
        50_000,
        "6222000011112222",
        "张三",
    )
    assert (gw.tables.positions["pay-b"].balance, gw.tables.positions["pay-b"].reserved) == (50_000, 0)
    assert gw.tables.positions["pay-a"].reserved == 0


async def test_a_payout_without_float_anywhere_is_no_route_and_writes_nothing() -> None:
    gw = FakeGateway(FakeChannel("pay-a"))
    gw.fund("pay-a", 10)
    with pytest.raises(NoRoute, match="enough float"):
        await gw.flows.payout(CALLER, "p-1", payout(50_000), wait_s=5)
    assert gw.tables.flows == {} and debits(gw) == 0


async def test_a_pending_payout_keeps_its_reservation() -> None:
    gw = FakeGateway(FakeChannel("pay-a"))
    gw.fund("pay-a", 100_000)
    gw.channels["pay-a"].answer(timeout())
    flow = await gw.flows.payout(CALLER, "p-1", payout(50_000), wait_s=5)
    assert flow.status is FlowStatus.PROCESSING
    assert (gw.tables.positions["pay-a"].balance, gw.tables.positions["pay-a"].reserved) == (100_000, 50_000)


# --- refunds -----------------------------------------------------------------------------------


async def test_a_refund_goes_back_through_the_channel_that_took_the_money_and_never_fails_over(
    two_banks: FakeGateway,
) -> None:
    gw = two_banks
    gw.channels["bank-a"].answer(busy())  # the withhold fails over to bank-b
    original = await gw.flows.withhold(CALLER, "w-1", withhold(10_000), wait_s=5)
    assert original.channel == "bank-b"
    gw.channels["bank-b"].answer(busy())  # safe elsewhere, but a refund has nowhere else to go
    refund = await gw.flows.refund(CALLER, "rf-1", RefundParams(original.flow_no, 4_000, "CNY", "goods back"), 5)
    assert refund.status is FlowStatus.FAILED and [a.channel for a in refund.attempts] == ["bank-b"]
    [order] = gw.channels["bank-b"].orders("refund")
    assert order.original_channel_order_no == original.attempts[-1].channel_order_no
    assert order.amount == 4_000 and order.original_amount == 10_000
    stored = await gw.store.by_flow_no(original.flow_no)
    assert stored is not None and stored.refund_reserved == 0 and stored.refunded_amount == 0


async def test_refunds_never_exceed_the_original(two_banks: FakeGateway) -> None:
    gw = two_banks
    original = await gw.flows.withhold(CALLER, "w-1", withhold(10_000), wait_s=5)
    done = await gw.flows.refund(CALLER, "rf-1", RefundParams(original.flow_no, 6_000, "CNY", ""), 5)
    assert done.status is FlowStatus.SUCCEEDED
    with pytest.raises(PreconditionFailed, match="exceeds the refundable 4000"):
        await gw.flows.refund(CALLER, "rf-2", RefundParams(original.flow_no, 4_001, "CNY", ""), 5)
    stored = await gw.store.by_flow_no(original.flow_no)
    assert stored is not None and (stored.refunded_amount, stored.refund_reserved) == (6_000, 6_000)
    assert len(gw.channels["bank-a"].orders("refund")) == 1


async def test_a_refund_racing_past_the_check_is_refused_by_the_store(two_banks: FakeGateway) -> None:
    gw = two_banks
    original = await gw.flows.withhold(CALLER, "w-1", withhold(10_000), wait_s=5)
    # another refund took the amount after this one read the original (the store's guard decides)
    gw.tables.flows[original.id].refund_reserved = 10_000
    real_by_flow_no = gw.store.by_flow_no

    async def stale_read(flow_no: str, **kw: object) -> FlowRow | None:
        row = await real_by_flow_no(flow_no, **kw)  # type: ignore[arg-type]
        if row is not None:
            row.refund_reserved = 0
        return row

    gw.store.by_flow_no = stale_read  # type: ignore[method-assign,assignment]
    with pytest.raises(PreconditionFailed, match="can never exceed"):
        await gw.flows.refund(CALLER, "rf-1", RefundParams(original.flow_no, 5_000, "CNY", ""), 5)
    assert gw.channels["bank-a"].orders("refund") == []


async def test_only_a_succeeded_withhold_can_be_refunded(two_banks: FakeGateway) -> None:
    gw = two_banks
    gw.channels["bank-a"].answer(processing())
    pending_one = await gw.flows.withhold(CALLER, "w-1", withhold(), wait_s=5)
    with pytest.raises(PreconditionFailed, match="PROCESSING, not SUCCEEDED"):
        await gw.flows.refund(CALLER, "rf-1", RefundParams(pending_one.flow_no, 1, "CNY", ""), 5)


# --- one transition for every source -------------------------------------------------------------


async def test_a_late_contradicting_result_is_a_discrepancy_never_an_overwrite(two_banks: FakeGateway) -> None:
    gw = two_banks
    flow = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    result = await gw.flows.apply(flow.attempts[0].id, declined(), Source.CALLBACK)
    assert result.applied is Applied.DISCREPANCY
    stored = await gw.store.by_flow_no(flow.flow_no)
    assert stored is not None and stored.status is FlowStatus.SUCCEEDED
    assert stored.attempts[0].status is AttemptStatus.SUCCEEDED
    assert [d.reported_status for d in gw.tables.discrepancies] == ["FAILED"]
    assert [e.event_type for e in gw.tables.outbox] == ["FLOW_RESULT", "DISCREPANCY"]


async def test_the_order_of_each_operation_goes_to_its_channel_method() -> None:
    gw = FakeGateway(FakeChannel("bank-a"))
    gw.agree("bank-a")
    gw.fund("bank-a", 100_000)
    await gw.flows.withhold(CALLER, "w", withhold(), wait_s=5)
    await gw.flows.payout(CALLER, "p", payout(1_000), wait_s=5)
    assert gw.channels["bank-a"].kinds() == [Operation.WITHHOLD.value, Operation.PAYOUT.value]
