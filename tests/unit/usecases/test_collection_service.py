"""The collection use cases (主动还款) over in-memory stores and channels of our own.

Creation (record before call, routing by cashier kind and preference,
failover only before a cashier exists, lost answers asked again), replays
(the same cashier, the channel asked again when there was none), the
lifecycle the poller and callbacks drive (nothing before the expiry; then a
query, a close, FAILED only on the channel's confirmed close; a payment wins a
race with the close), CloseCollection, second payments, refunds.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from channels.contract import (
    AWAITING_PAYMENT,
    CashierKind,
    CollectOrder,
    CollectStarted,
    Operation,
    awaiting_payment,
)
from gateway.collections import CashierConfig, Collection, CollectParams
from gateway.domain import AttemptStatus, FlowStatus
from gateway.errors import DatabaseUnavailable, IdempotencyConflict, InvalidInput, NoRoute, PreconditionFailed
from gateway.store.rows import ANOTHER_TRANSACTION, AttemptRow, Source, utcnow
from gateway.validation import RefundParams
from tests.fakes import CALLER, FakeChannel, FakeGateway
from tests.fakes.channel import Hang, busy, cashier, closed, declined, ok, processing, timeout
from tests.unit.usecases.test_callbacks import post, reply_of
from tests.unit.usecases.test_flow_service import withhold


def params(kind: CashierKind = CashierKind.QR, **changes: object) -> CollectParams:
    base: dict[str, object] = {
        "amount": 12_300,
        "currency": "CNY",
        "cashier": kind.value,
        "expires_in_s": 600,
        "channel": "",
        "description": "第3期主动还款",
        "openid": "o-borrower",
        "client_ip": "203.0.113.7",
    }
    return CollectParams(**{**base, **changes})  # type: ignore[arg-type]


@pytest.fixture
def gw() -> FakeGateway:
    return FakeGateway(FakeChannel("bank-a"), FakeChannel("bank-b"))


async def collect(gw: FakeGateway, request_id: str = "c-1", **changes: object) -> Collection:
    return await gw.collections.create(CALLER, request_id, params(**changes), wait_s=5)  # type: ignore[arg-type]


def live(collection: Collection) -> AttemptRow:
    return collection.flow.attempts[-1]


def expire(gw: FakeGateway, collection: Collection) -> None:
    """As if the collection's expiry had passed, and its first poll was due."""
    gw.tables.collections[collection.flow.id].expires_at = utcnow() - timedelta(seconds=1)
    gw.queue.make_due(live(collection).id)


async def poll(gw: FakeGateway, collection: Collection) -> Collection:
    await gw.poller.run_once()
    flow = await gw.store.by_id(collection.flow.id)
    assert flow is not None
    return await gw.collections.collection(flow)


# --- creation ----------------------------------------------------------------------------


async def test_the_collection_is_recorded_before_the_channel_is_asked_and_waits_for_its_payer(gw: FakeGateway) -> None:
    seen: list[AttemptStatus] = []

    def recorded_first(operation: str, order_no: str) -> None:
        attempt = next(a for a in gw.tables.attempts.values() if a.channel_order_no == order_no)
        assert attempt.flow_id in gw.tables.collections  # the collection row is in the same commit
        seen.append(attempt.status)

    gw.channels["bank-a"].before_call = recorded_first
    started = await collect(gw)
    assert seen == [AttemptStatus.SENDING]
    assert started.flow.status is FlowStatus.PROCESSING and not started.flow.replayed
    assert started.cashier == cashier(live(started).channel_order_no)
    attempt = gw.tables.attempts[live(started).id]
    assert (attempt.status, attempt.code, attempt.operation) == (AttemptStatus.PENDING, AWAITING_PAYMENT, "collect")
    [order] = gw.channels["bank-a"].orders("collect")
    assert isinstance(order, CollectOrder)
    assert (order.amount, order.cashier, order.payer.openid, order.payer.client_ip) == (
        12_300,
        CashierKind.QR,
        "o-borrower",
        "203.0.113.7",
    )
    # the first query waits for the expiry, not the usual first delay
    row = gw.tables.collections[started.flow.id]
    due = gw.tables.poll_queue[attempt.id].due_at
    assert abs((due - row.expires_at).total_seconds()) < 1.0
    assert abs((row.expires_at - utcnow()).total_seconds() - 600) < 5
    assert order.expires_at.replace(tzinfo=None) == row.expires_at


async def test_a_replay_is_the_same_flow_and_cashier_and_other_parameters_are_refused(gw: FakeGateway) -> None:
    first = await collect(gw)
    again = await collect(gw)
    assert again.flow.replayed and again.flow.flow_no == first.flow.flow_no
    assert again.cashier == first.cashier and again.row == first.row
    assert len(gw.channels["bank-a"].orders("collect")) == 1  # nothing asked of the channel again
    with pytest.raises(IdempotencyConflict):
        await collect(gw, amount=12_301)


async def test_a_refusal_before_any_cashier_fails_over_and_then_never(gw: FakeGateway) -> None:
    gw.channels["bank-a"].answer_collects(CollectStarted(busy()))
    started = await collect(gw)
    assert [a.channel for a in started.flow.attempts] == ["bank-a", "bank-b"]
    assert started.row is not None and started.row.cashier_channel == "bank-b"
    assert started.cashier == cashier(live(started).channel_order_no)


async def test_a_refusal_that_is_not_safe_elsewhere_fails_the_collection(gw: FakeGateway) -> None:
    gw.channels["bank-a"].answer_collects(CollectStarted(declined()))
    started = await collect(gw)
    assert started.flow.status is FlowStatus.FAILED and started.cashier is None
    assert gw.channels["bank-b"].calls == []


async def test_a_named_channel_is_the_only_one_tried(gw: FakeGateway) -> None:
    gw.channels["bank-b"].answer_collects(CollectStarted(busy()))
    started = await collect(gw, channel="bank-b")
    assert started.flow.status is FlowStatus.FAILED and [a.channel for a in started.flow.attempts] == ["bank-b"]
    recorded = len(gw.tables.flows)
    with pytest.raises(InvalidInput) as unknown:  # not configured: bad input, never NO_ROUTE (retrying cannot help)
        await collect(gw, "c-2", channel="bank-z")
    assert unknown.value.field == "channel" and len(gw.tables.flows) == recorded


async def test_routing_keeps_to_channels_offering_the_cashier_and_to_the_preference() -> None:
    gw = FakeGateway(
        FakeChannel("bank-a", cashier_kinds=frozenset({CashierKind.QR})),
        FakeChannel("bank-b"),
        FakeChannel("bank-c"),
        cashier=CashierConfig(min_expiry_s=1, preference=("bank-c",)),
    )
    gw.planner.cashiers = {"bank-a": frozenset({CashierKind.QR})}
    h5 = await collect(gw, "c-h5", kind=CashierKind.H5)
    assert live(h5).channel == "bank-c"  # preferred
    assert gw.planner.asked[-1].operation is Operation.COLLECT
    gw.planner.cashiers = {"bank-a": frozenset({CashierKind.QR}), "bank-c": frozenset()}
    other = await collect(gw, "c-h5-2", kind=CashierKind.H5)
    assert live(other).channel == "bank-b"  # bank-a has no H5 cashier, bank-c none at all
    gw.planner.cashiers = {name: frozenset() for name in ("bank-a", "bank-b", "bank-c")}
    with pytest.raises(NoRoute):
        await collect(gw, "c-none", kind=CashierKind.IN_APP)


async def test_a_lost_answer_is_asked_again_with_the_same_order_number(gw: FakeGateway) -> None:
    gw.channels["bank-a"].answer_collects(CollectStarted(timeout()))
    started = await collect(gw)
    orders = gw.channels["bank-a"].orders("collect")
    assert len(orders) == 2 and orders[0].channel_order_no == orders[1].channel_order_no
    assert started.cashier is not None and gw.channels["bank-b"].calls == []


async def test_a_create_left_without_cashier_is_asked_again_by_a_replay() -> None:
    gw = FakeGateway(FakeChannel("bank-a"), cashier=CashierConfig(min_expiry_s=1, create_retries=0))
    gw.channels["bank-a"].answer_collects(CollectStarted(timeout()), CollectStarted(busy()))
    first = await collect(gw)
    assert first.cashier is None and first.flow.status is FlowStatus.PROCESSING
    assert gw.tables.attempts[live(first).id].status is AttemptStatus.PENDING  # polled, never failed over
    refused = await collect(gw)  # a refusal of a repeat says nothing about the first create
    assert refused.cashier is None and refused.flow.status is FlowStatus.PROCESSING
    replay = await collect(gw)
    assert replay.flow.replayed and replay.cashier == cashier(live(first).channel_order_no)
    assert len(gw.channels["bank-a"].orders("collect")) == 3


# --- the deadline and the recorded flow (as for every flow: gateway/flows.py) ------------


async def test_the_rpc_deadline_cuts_the_wait_for_the_cashier(gw: FakeGateway) -> None:
    # The channel hangs 3 s; a wait that ignored the deadline would take that long (or the 5 s
    # wait budget). Answered before the deadline, with room for a loaded machine's scheduling.
    gw.channels["bank-a"].answer_collects(Hang(3.0, processing()))  # then, asked again: a cashier
    started_at = time.monotonic()
    started = await gw.collections.create(CALLER, "c-1", params(), wait_s=5, deadline_s=0.6)
    assert time.monotonic() - started_at < 0.6 - gw.flows.settings.deadline_margin_s + 0.3
    assert started.flow.status is FlowStatus.PROCESSING and started.cashier is None
    await gw.flows.drain(5.0)
    replay = await collect(gw)
    assert replay.flow.replayed and replay.cashier == cashier(live(started).channel_order_no)
    assert len(gw.channels["bank-a"].orders("collect")) == 2  # the lost answer, asked again once


async def test_a_cashier_that_cannot_be_recorded_answers_the_flow_and_a_replay_hands_it_out(gw: FakeGateway) -> None:
    gw.collection_store.fail_next("record_cashier", DatabaseUnavailable("lost after the channel answered"))
    started = await collect(gw)
    assert started.flow.status is FlowStatus.PROCESSING and started.cashier is None
    attempt = gw.tables.attempts[live(started).id]
    assert attempt.status is AttemptStatus.PENDING and attempt.id in gw.tables.poll_queue  # never failed
    assert gw.channels["bank-b"].calls == []  # the order may exist at bank-a: no failover
    replay = await collect(gw)  # the same order number: the channel hands out the same cashier
    assert replay.cashier == cashier(attempt.channel_order_no)


async def test_a_collection_whose_cashier_cannot_be_read_is_answered_without_it(gw: FakeGateway) -> None:
    gw.collection_store.fail_next("by_flow", DatabaseUnavailable("lost before the answer"))
    started = await collect(gw)
    assert started.row is None and started.cashier is None
    assert started.flow.flow_no and started.flow.status is FlowStatus.PROCESSING
    again = await gw.collections.collection(started.flow)  # GetFlow later hands it out
    assert again.cashier == cashier(live(started).channel_order_no)


# --- the lifecycle -----------------------------------------------------------------------


async def test_nothing_is_closed_before_the_expiry(gw: FakeGateway) -> None:
    started = await collect(gw)
    attempt = live(started)
    assert await gw.poller.expedite(attempt.id, "bank-a")  # e.g. a callback that did not check out
    after = await poll(gw, started)
    assert gw.channels["bank-a"].kinds() == ["collect", "query"]
    assert after.flow.status is FlowStatus.PROCESSING
    row = gw.tables.poll_queue[attempt.id]
    assert row.tries == 0 and abs((row.due_at - gw.tables.collections[started.flow.id].expires_at).total_seconds()) < 1


async def test_abandoned_is_closed_at_the_expiry_and_fails_on_the_confirmed_close(gw: FakeGateway) -> None:
    started = await collect(gw)
    expire(gw, started)
    gw.channels["bank-a"].answer_queries(processing()).answer_closes(closed())
    after = await poll(gw, started)
    assert gw.channels["bank-a"].kinds() == ["collect", "query", "close"]
    assert after.flow.status is FlowStatus.FAILED
    assert (after.flow.failure_code, after.flow.payer_attributable) == ("COLLECTION_EXPIRED", True)
    assert after.row is not None and after.row.close_reason == "EXPIRED"
    assert len(gw.tables.events("FLOW_RESULT")) == 1
    close_ref = gw.channels["bank-a"].calls[-1][1]
    assert close_ref.operation is Operation.COLLECT and close_ref.expires_at is not None


async def test_paid_but_not_notified_is_found_by_the_query_at_the_expiry(gw: FakeGateway) -> None:
    started = await collect(gw)
    expire(gw, started)
    gw.channels["bank-a"].answer_queries(ok("T-PAID", amount=12_300))
    after = await poll(gw, started)
    assert after.flow.status is FlowStatus.SUCCEEDED and after.flow.channel_txn_id == "T-PAID"
    assert "close" not in gw.channels["bank-a"].kinds()


async def test_a_payment_that_beat_the_close_is_a_success(gw: FakeGateway) -> None:
    started = await collect(gw)
    expire(gw, started)
    gw.channels["bank-a"].answer_queries(processing()).answer_closes(ok("T-RACE"))  # "already paid"
    after = await poll(gw, started)
    assert after.flow.status is FlowStatus.SUCCEEDED


async def test_an_unconfirmed_close_is_never_a_failure(gw: FakeGateway) -> None:
    started = await collect(gw)
    expire(gw, started)
    gw.channels["bank-a"].answer_queries(processing(), processing()).answer_closes(timeout(), closed())
    after = await poll(gw, started)
    assert after.flow.status is FlowStatus.PROCESSING and live(started).id in gw.tables.poll_queue
    gw.queue.make_due(live(started).id)
    after = await poll(gw, started)
    assert after.flow.status is FlowStatus.FAILED and after.flow.failure_code == "COLLECTION_EXPIRED"


async def test_a_success_for_another_amount_sends_the_collection_to_review(gw: FakeGateway) -> None:
    started = await collect(gw)
    expire(gw, started)
    gw.channels["bank-a"].answer_queries(ok("T-SHORT", amount=12_000)).answer_closes(closed())
    after = await poll(gw, started)
    assert after.flow.status is FlowStatus.PROCESSING and after.flow.needs_review
    assert live(started).id not in gw.tables.poll_queue  # never closed nor failed: a person decides
    assert "close" not in gw.channels["bank-a"].kinds()
    assert [e.event_type for e in gw.tables.outbox] == ["FLOW_NEEDS_REVIEW"]


async def test_close_collection_fails_it_once_the_channel_confirms(gw: FakeGateway) -> None:
    started = await collect(gw)
    gw.channels["bank-a"].answer_queries(processing()).answer_closes(closed())
    closed_early = await gw.collections.close(CALLER, started.flow.flow_no)
    assert closed_early.flow.status is FlowStatus.FAILED
    assert (closed_early.flow.failure_code, closed_early.flow.payer_attributable) == ("COLLECTION_CLOSED", False)
    again = await gw.collections.close(CALLER, started.flow.flow_no)
    assert again.flow.status is FlowStatus.FAILED and gw.channels["bank-a"].kinds().count("close") == 1


async def test_close_collection_unconfirmed_stays_processing_and_is_queried_soon(gw: FakeGateway) -> None:
    started = await collect(gw)
    gw.channels["bank-a"].answer_queries(processing()).answer_closes(timeout())
    after = await gw.collections.close(CALLER, started.flow.flow_no)
    assert after.flow.status is FlowStatus.PROCESSING and after.row is not None and after.row.close_reason == "CALLER"
    assert gw.expedited == [(live(started).id, "bank-a")]


async def test_close_collection_of_something_else_is_refused(gw: FakeGateway) -> None:
    gw.agree("bank-a")
    flow = await gw.flows.withhold(CALLER, "w-1", withhold(), wait_s=5)
    with pytest.raises(PreconditionFailed):
        await gw.collections.close(CALLER, flow.flow_no)


# --- what the channel says later ---------------------------------------------------------


async def test_a_payment_notified_for_a_closed_collection_is_a_discrepancy(gw: FakeGateway) -> None:
    started = await collect(gw)
    expire(gw, started)
    gw.channels["bank-a"].answer_queries(processing()).answer_closes(closed())
    await poll(gw, started)
    headers, body = gw.channels["bank-a"].callback(
        live(started).channel_order_no, ok("T-LATE"), operation=Operation.COLLECT, amount=12_300
    )
    assert reply_of(await post(gw, "bank-a", headers, body)) == (200, b"OK")
    assert gw.tables.flows[started.flow.id].status is FlowStatus.FAILED  # never overwritten
    [discrepancy] = gw.tables.discrepancies
    assert (discrepancy.recorded_status, discrepancy.reported_status) == ("FAILED", "SUCCEEDED")


async def test_a_second_payment_is_a_discrepancy_and_one_result(gw: FakeGateway) -> None:
    started = await collect(gw)
    order_no = live(started).channel_order_no
    channel = gw.channels["bank-a"]
    # an Alipay trade notification says WITHHOLD for every trade: the order number says which it is
    first = channel.callback(order_no, ok("T-1"), operation=Operation.WITHHOLD, amount=12_300)
    again = channel.callback(order_no, ok("T-1"), operation=Operation.WITHHOLD, amount=12_300)
    second = channel.callback(order_no, ok("T-2"), operation=Operation.COLLECT, amount=12_300)
    for headers, body in (first, again, second):
        assert reply_of(await post(gw, "bank-a", headers, body)) == (200, b"OK")
    flow = gw.tables.flows[started.flow.id]
    assert flow.status is FlowStatus.SUCCEEDED and flow.channel_txn_id == "T-1"
    assert len(gw.tables.events("FLOW_RESULT")) == 1
    [discrepancy] = gw.tables.discrepancies
    assert (discrepancy.recorded_status, discrepancy.reported_status, discrepancy.reported_code) == (
        "SUCCEEDED",
        "SUCCEEDED",
        ANOTHER_TRANSACTION,
    )


async def test_a_paid_collection_is_refundable_like_a_withhold(gw: FakeGateway) -> None:
    gw.channels["bank-a"].answer_collects(awaiting_payment(cashier("X"), channel_txn_id="T-C"))
    started = await collect(gw)
    await gw.flows.apply(live(started).id, ok("T-C", amount=12_300), Source.CALLBACK)
    refund = await gw.flows.refund(CALLER, "rf-1", RefundParams(started.flow.flow_no, 2_300, "CNY", "多还"), 5)
    assert refund.status is FlowStatus.SUCCEEDED
    [order] = gw.channels["bank-a"].orders("refund")
    assert (order.original_channel_order_no, order.original_amount) == (live(started).channel_order_no, 12_300)
    assert gw.tables.flows[started.flow.id].refunded_amount == 2_300


async def test_a_slow_channel_leaves_the_collection_pending_without_a_cashier() -> None:
    gw = FakeGateway(FakeChannel("bank-a"), call_guard_s=0.05, cashier=CashierConfig(min_expiry_s=1, create_retries=0))
    gw.channels["bank-a"].answer_collects(Hang(1.0, processing()))
    started = await collect(gw)
    assert started.cashier is None
    attempt = gw.tables.attempts[live(started).id]
    assert attempt.status is AttemptStatus.PENDING and attempt.code == "CALL_GUARD_TIMEOUT"  # never failed
