"""The poller's scheduling decisions over an in-memory poll queue and a channel of our own.

When to query again, when to stop and ask for review (never a result by
guessing), when an order the channel never saw may be closed, what an
expedited query costs.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.domain import AttemptStatus, FlowStatus
from gateway.poller import Schedule
from gateway.store.rows import AttemptRow, FlowRow, utcnow
from gateway.validation import WithholdParams
from tests.fakes import CALLER, CARD, FakeChannel, FakeGateway
from tests.fakes.channel import busy, closed, insufficient_funds, not_found, ok, processing, timeout


async def pending_flow(gw: FakeGateway, request_id: str = "r-1") -> tuple[FlowRow, AttemptRow]:
    """A withhold whose channel answered "processing": PENDING, queued for its first query."""
    gw.channels["bank-a"].answer(processing())
    flow = await gw.flows.withhold(CALLER, request_id, WithholdParams(10_000, "CNY", CARD, "ICBC", "", ""), 5)
    [attempt] = flow.attempts
    assert attempt.status is AttemptStatus.PENDING and attempt.id in gw.tables.poll_queue
    return flow, attempt


async def poll_now(gw: FakeGateway, attempt_id: int) -> int:
    """Make the attempt's row due and run one round of the poller; the number claimed."""
    gw.queue.make_due(attempt_id)
    return await gw.poller.run_once()


async def stored(gw: FakeGateway, flow: FlowRow) -> FlowRow:
    row = await gw.store.by_flow_no(flow.flow_no)
    assert row is not None
    return row


@pytest.fixture
def gw() -> FakeGateway:
    gateway = FakeGateway(FakeChannel("bank-a"), FakeChannel("bank-b"))
    gateway.agree("bank-a", "bank-b")
    return gateway


def test_the_schedule_is_the_first_delay_then_each_step_then_none() -> None:
    schedule = Schedule.from_steps(2.0, [(5, 2), (30, 1)])
    assert [schedule.next_delay(n) for n in range(5)] == [2.0, 5.0, 5.0, 30.0, None]
    assert schedule.total_s == 2 + 5 + 5 + 30


async def test_a_row_not_yet_due_is_not_claimed(gw: FakeGateway) -> None:
    await pending_flow(gw)
    assert await gw.poller.run_once() == 0
    assert gw.channels["bank-a"].kinds() == ["withhold"]


async def test_a_query_that_finds_the_result_applies_it_and_empties_the_queue(gw: FakeGateway) -> None:
    flow, attempt = await pending_flow(gw)
    gw.channels["bank-a"].answer_queries(ok())
    assert await poll_now(gw, attempt.id) == 1
    after = await stored(gw, flow)
    assert after.status is FlowStatus.SUCCEEDED and after.attempts[0].status is AttemptStatus.SUCCEEDED
    assert gw.tables.poll_queue == {}
    assert len(gw.tables.events("FLOW_RESULT")) == 1
    assert gw.outbox_notices >= 1  # the relay is woken for the result


async def test_a_definite_failure_found_by_a_query_never_fails_over(gw: FakeGateway) -> None:
    flow, attempt = await pending_flow(gw)
    gw.channels["bank-a"].answer_queries(busy())  # safe elsewhere, but the flow had an attempt in flight
    await poll_now(gw, attempt.id)
    after = await stored(gw, flow)
    assert after.status is FlowStatus.FAILED and len(after.attempts) == 1
    assert gw.channels["bank-b"].calls == []


async def test_still_pending_is_queried_again_after_the_next_step_of_the_schedule(gw: FakeGateway) -> None:
    flow, attempt = await pending_flow(gw)
    gw.channels["bank-a"].answer_queries(timeout())
    before = utcnow()
    await poll_now(gw, attempt.id)
    row = gw.tables.poll_queue[attempt.id]
    assert row.tries == 1 and row.lease_owner == "" and row.lease_until is None  # the lease is released
    # the first delay came before the first query; then the steps: 5 s, 5 s, 30 s
    assert 4.5 < (row.due_at - before).total_seconds() < 6.0
    await poll_now(gw, attempt.id)
    await poll_now(gw, attempt.id)
    row = gw.tables.poll_queue[attempt.id]
    assert row.tries == 3 and 29.5 < (row.due_at - utcnow()).total_seconds() <= 30.0
    assert (await stored(gw, flow)).status is FlowStatus.PROCESSING


async def test_an_exhausted_schedule_asks_for_review_and_never_fails_the_flow(gw: FakeGateway) -> None:
    flow, attempt = await pending_flow(gw)
    # schedule: first delay, then 5 s x 2, 30 s x 1 -> the 4th query is the last one
    for _ in range(4):
        await poll_now(gw, attempt.id)
    after = await stored(gw, flow)
    assert after.status is FlowStatus.PROCESSING and after.needs_review
    assert after.attempts[0].status is AttemptStatus.PENDING
    assert attempt.id not in gw.tables.poll_queue
    assert [e.event_type for e in gw.tables.outbox] == ["FLOW_NEEDS_REVIEW"]
    assert gw.tables.events("FLOW_RESULT") == []
    assert gw.channels["bank-a"].kinds().count("query") == 4


async def test_an_expedited_query_does_not_use_up_the_schedule(gw: FakeGateway) -> None:
    _, attempt = await pending_flow(gw)
    assert await gw.poller.expedite(attempt.id, "bank-a")
    assert await gw.poller.run_once() == 1  # due at once
    assert gw.tables.poll_queue[attempt.id].tries == 0
    assert not await gw.poller.expedite(attempt.id, "bank-a")  # at most one per interval
    await poll_now(gw, attempt.id)
    assert gw.tables.poll_queue[attempt.id].tries == 1


async def test_an_order_the_channel_never_saw_is_left_alone_while_young(gw: FakeGateway) -> None:
    flow, attempt = await pending_flow(gw)
    gw.channels["bank-a"].answer_queries(not_found())
    await poll_now(gw, attempt.id)
    assert "close" not in gw.channels["bank-a"].kinds()
    assert (await stored(gw, flow)).status is FlowStatus.PROCESSING
    assert gw.tables.poll_queue[attempt.id].tries == 1


async def test_an_old_order_the_channel_never_saw_is_closed_and_only_the_close_fails_it(gw: FakeGateway) -> None:
    flow, attempt = await pending_flow(gw)
    gw.tables.attempts[attempt.id].created_at = utcnow() - timedelta(seconds=121)  # past not_found_close_after_s
    gw.channels["bank-a"].answer_queries(not_found()).answer_closes(closed())
    await poll_now(gw, attempt.id)
    assert gw.channels["bank-a"].kinds() == ["withhold", "query", "close"]
    after = await stored(gw, flow)
    assert after.status is FlowStatus.FAILED and after.failure_code == "ORDER_CLOSED"
    assert gw.channels["bank-b"].calls == []


async def test_a_close_is_counted_as_a_close_not_as_a_query(gw: FakeGateway) -> None:
    from gateway import metrics

    def calls(operation: str) -> float:
        sample = metrics.REGISTRY.get_sample_value(
            "paygate_channel_requests_total", {"channel": "bank-a", "operation": operation, "outcome": "pending"}
        )
        return sample or 0.0

    _flow, attempt = await pending_flow(gw)
    gw.tables.attempts[attempt.id].created_at = utcnow() - timedelta(seconds=121)
    gw.channels["bank-a"].answer_queries(not_found()).answer_closes(not_found())
    queries, closes = calls("query"), calls("close")
    await poll_now(gw, attempt.id)
    assert (calls("query"), calls("close")) == (queries + 1, closes + 1)


async def test_a_close_that_finds_the_order_paid_records_the_success(gw: FakeGateway) -> None:
    flow, attempt = await pending_flow(gw)
    gw.tables.attempts[attempt.id].created_at = utcnow() - timedelta(seconds=500)
    gw.channels["bank-a"].answer_queries(not_found()).answer_closes(ok())
    await poll_now(gw, attempt.id)
    assert (await stored(gw, flow)).status is FlowStatus.SUCCEEDED


async def test_a_sending_attempt_the_channel_has_becomes_pending(gw: FakeGateway) -> None:
    _flow, attempt = await pending_flow(gw)
    gw.tables.attempts[attempt.id].status = AttemptStatus.SENDING  # as after a crash before the answer
    gw.channels["bank-a"].answer_queries(processing())
    await poll_now(gw, attempt.id)
    assert gw.tables.attempts[attempt.id].status is AttemptStatus.PENDING


async def test_a_sending_attempt_the_channel_never_saw_stays_sending(gw: FakeGateway) -> None:
    _flow, attempt = await pending_flow(gw)
    gw.tables.attempts[attempt.id].status = AttemptStatus.SENDING
    gw.channels["bank-a"].answer_queries(not_found())
    await poll_now(gw, attempt.id)
    assert gw.tables.attempts[attempt.id].status is AttemptStatus.SENDING
    assert gw.tables.poll_queue[attempt.id].tries == 1


async def test_a_row_whose_attempt_already_ended_is_dropped_without_a_query(gw: FakeGateway) -> None:
    _flow, attempt = await pending_flow(gw)
    gw.tables.attempts[attempt.id].status = AttemptStatus.SUCCEEDED  # e.g. a callback won the race
    await poll_now(gw, attempt.id)
    assert "query" not in gw.channels["bank-a"].kinds()
    assert attempt.id not in gw.tables.poll_queue


async def test_a_result_that_changes_nothing_drops_the_row(gw: FakeGateway) -> None:
    _flow, attempt = await pending_flow(gw)
    real = gw.store.attempt_by_id

    async def stale(attempt_id: int) -> AttemptRow | None:  # the poller read it before a callback finished it
        row = await real(attempt_id)
        gw.tables.attempts[attempt_id].status = AttemptStatus.SUCCEEDED
        return row

    gw.store.attempt_by_id = stale  # type: ignore[method-assign]
    gw.channels["bank-a"].answer_queries(ok())
    await poll_now(gw, attempt.id)
    assert attempt.id not in gw.tables.poll_queue
    assert gw.tables.events("DISCREPANCY") == []


async def test_an_attempt_on_an_unconfigured_channel_is_rescheduled_not_queried() -> None:
    gw = FakeGateway(FakeChannel("bank-a"))
    gw.agree("bank-a")
    _flow, attempt = await pending_flow(gw)
    gw.tables.attempts[attempt.id].channel = "bank-gone"
    await poll_now(gw, attempt.id)
    assert gw.channels["bank-a"].kinds() == ["withhold"]
    assert gw.tables.poll_queue[attempt.id].tries == 1


async def test_a_failed_query_leaves_the_row_for_its_lease_to_expire(gw: FakeGateway) -> None:
    flow, attempt = await pending_flow(gw)
    gw.store.fail_next("attempt_by_id", ConnectionError("database went away mid-poll"))
    await poll_now(gw, attempt.id)
    row = gw.tables.poll_queue[attempt.id]
    assert row.lease_owner == "unit-poller" and row.tries == 0  # comes back when the lease ends
    assert (await stored(gw, flow)).status is FlowStatus.PROCESSING


async def test_recovery_queues_attempts_left_sending_and_finishes_failovers_cut_short(gw: FakeGateway) -> None:
    flow, attempt = await pending_flow(gw)
    gw.tables.attempts[attempt.id].status = AttemptStatus.SENDING
    gw.tables.poll_queue.clear()  # a crash between record and answer: nothing queued
    gw.channels["bank-a"].answer(busy())
    gw.store.fail_next("add_attempt", ConnectionError("database lost before attempt 2"))
    gw.store.fail_next("finish_from_attempt", ConnectionError("still lost"))
    # the flow is recorded: the caller gets it (PROCESSING), never the database's error
    answer = await gw.flows.withhold(CALLER, "r-2", WithholdParams(20_000, "CNY", CARD, "ICBC", "", ""), 5)
    [stranded] = [f for f in gw.tables.flows.values() if f.request_id == "r-2"]
    assert answer.flow_no == stranded.flow_no and answer.status is FlowStatus.PROCESSING
    assert stranded.status is FlowStatus.PROCESSING

    assert await gw.poller.recover() == 2
    assert attempt.id in gw.tables.poll_queue  # queried at once
    assert gw.tables.flows[stranded.id].status is FlowStatus.FAILED  # from its recorded failure
    assert gw.tables.flows[flow.id].status is FlowStatus.PROCESSING
    assert gw.channels["bank-b"].calls == []


async def test_recovery_does_not_requeue_a_pending_attempt_whose_flow_waits_for_review(gw: FakeGateway) -> None:
    flow, attempt = await pending_flow(gw)
    for _ in range(4):
        await poll_now(gw, attempt.id)
    assert gw.tables.flows[flow.id].needs_review
    assert await gw.poller.recover() == 0
    assert gw.tables.poll_queue == {}


async def test_a_payer_failure_found_by_a_query_is_not_counted_against_the_channel(gw: FakeGateway) -> None:
    flow, attempt = await pending_flow(gw)
    gw.channels["bank-a"].answer_queries(insufficient_funds())
    await poll_now(gw, attempt.id)
    after = await stored(gw, flow)
    assert after.status is FlowStatus.FAILED and after.payer_attributable


async def test_metrics_sampling_reads_the_ports(gw: FakeGateway) -> None:
    from gateway import metrics

    await pending_flow(gw)
    await gw.poller.sample_metrics()
    assert metrics.PENDING_ATTEMPTS._value.get() == 1  # type: ignore[attr-defined]
    assert metrics.POLL_QUEUE_DUE._value.get() == 0  # type: ignore[attr-defined]


def test_a_channels_share_is_half_the_queries_unless_it_is_the_only_channel() -> None:
    assert FakeGateway(FakeChannel("bank-a"), FakeChannel("bank-b")).poller.per_channel == 8  # 16 // 2
    assert FakeGateway(FakeChannel("bank-a")).poller.per_channel == 16  # nobody to keep a share for
    configured = FakeGateway(FakeChannel("bank-a"), FakeChannel("bank-b"), poller={"per_channel": 5})
    assert configured.poller.per_channel == 5
