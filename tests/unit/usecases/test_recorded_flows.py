"""Once a flow is recorded its caller always gets the flow; the RPC's deadline bounds the wait; 补单.

Over in-memory stores and channels of our own. What is checked each time: what
the caller was answered, what the channels received (what could have moved
money), what was queued for a query.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from gateway import metrics
from gateway.domain import AttemptStatus, FlowStatus
from gateway.errors import Conflict, CountMismatch, DatabaseUnavailable, DataRefused
from gateway.store.rows import FlowRow, utcnow
from gateway.validation import WithholdParams
from tests.fakes import CALLER, CARD, FakeChannel, FakeGateway
from tests.fakes.channel import Hang, busy, ok, processing


def withhold(amount: int = 10_000) -> WithholdParams:
    return WithholdParams(amount, "CNY", CARD, "ICBC", "", "")


@pytest.fixture
def gw() -> FakeGateway:
    gateway = FakeGateway(FakeChannel("bank-a"), FakeChannel("bank-b"))
    gateway.agree("bank-a", "bank-b")
    return gateway


def debits(gw: FakeGateway) -> int:
    return sum(len(c.orders()) for c in gw.channels.values())


# --- after commit 1 the caller gets the flow -------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(DatabaseUnavailable("lost connection during commit 2"), id="database-gone"),
        pytest.param(Conflict("Deadlock found"), id="deadlock"),
        pytest.param(CountMismatch([1, 0], [1, 1]), id="count-mismatch"),
        pytest.param(DataRefused(1406, "Data too long for column 'raw_message'"), id="data-error"),
    ],
)
async def test_an_error_recording_the_outcome_answers_the_flow_and_queries_it_at_once(
    gw: FakeGateway, error: Exception
) -> None:
    gw.store.fail_next("apply_outcome", error)  # the channel debited; its answer cannot be written
    flow = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    assert flow.status is FlowStatus.PROCESSING and not flow.replayed
    [attempt] = flow.attempts
    assert attempt.status is AttemptStatus.SENDING  # as recorded: the outcome is not
    assert debits(gw) == 1
    row = gw.tables.poll_queue[attempt.id]  # queued now, not when the sweep comes round
    assert row.expedited and row.due_at <= utcnow()
    assert await gw.poller.run_once() == 1  # the query finds the result
    stored = await gw.store.by_flow_no(flow.flow_no)
    assert stored is not None and stored.status is FlowStatus.PROCESSING  # the fake channel says "processing"


async def test_the_sweep_is_the_backstop_when_the_query_cannot_be_queued(gw: FakeGateway) -> None:
    gw.store.fail_next("apply_outcome", DatabaseUnavailable("lost during commit 2"))
    gw.queue.fail_next("expedite", DatabaseUnavailable("still lost"))
    flow = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    assert flow.status is FlowStatus.PROCESSING
    [attempt] = flow.attempts
    assert attempt.id not in gw.tables.poll_queue
    assert await gw.poller.recover() == 1  # the periodic sweep's work (start-up recovery does the same)
    assert attempt.id in gw.tables.poll_queue


async def test_a_failover_cut_short_by_the_database_ends_failed_from_its_recorded_failure(gw: FakeGateway) -> None:
    gw.channels["bank-a"].answer(busy())
    gw.store.fail_next("add_attempt", DatabaseUnavailable("lost before attempt 2"))
    flow = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    assert flow.status is FlowStatus.FAILED and flow.failure_code == "CHANNEL_BUSY"
    assert [a.channel for a in flow.attempts] == ["bank-a"] and gw.channels["bank-b"].calls == []
    assert len(gw.tables.events("FLOW_RESULT")) == 1


async def test_a_bug_in_the_drive_still_answers_the_flow(gw: FakeGateway) -> None:
    async def broken(*args: object, **kw: object) -> FlowRow:
        raise AssertionError("a bug after the channel call")

    gw.flows._drive = broken  # type: ignore[method-assign,assignment]
    flow = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    assert flow.status is FlowStatus.PROCESSING and flow.attempts[0].id in gw.tables.poll_queue
    assert metrics.FLOW_DRIVE_ERRORS.labels(kind="WITHHOLD")._value.get() >= 1  # type: ignore[attr-defined]


# --- the RPC's deadline bounds the wait -------------------------------------------------------


async def test_a_deadline_shorter_than_the_wait_budget_gets_the_flow_processing_before_it(gw: FakeGateway) -> None:
    gw.channels["bank-a"].answer(Hang(1.0, ok()))
    started = time.monotonic()
    flow = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5, deadline_s=0.3)
    elapsed = time.monotonic() - started
    assert flow.status is FlowStatus.PROCESSING
    assert elapsed < 0.3 - gw.flows.settings.deadline_margin_s + 0.1  # the margin is kept
    await gw.flows.drain(5.0)
    stored = await gw.store.by_flow_no(flow.flow_no)
    assert stored is not None and stored.status is FlowStatus.SUCCEEDED and debits(gw) == 1


async def test_the_budget_is_the_smaller_of_the_wait_and_the_deadline_less_the_margin(gw: FakeGateway) -> None:
    settings = gw.flows.settings
    assert settings.budget_s(5.0, None) == 5.0
    assert settings.budget_s(5.0, 2.0) == pytest.approx(2.0 - settings.deadline_margin_s)
    assert settings.budget_s(1.0, 2.0) == 1.0
    assert settings.budget_s(5.0, 0.05) == 0.0  # already within the margin: answer as soon as it is recorded


async def test_failover_stops_at_the_deadline_too(gw: FakeGateway) -> None:
    gw.channels["bank-a"].answer(Hang(0.25, busy()))
    flow = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5, deadline_s=0.2)
    assert flow.status is FlowStatus.PROCESSING
    await gw.flows.drain(5.0)
    stored = await gw.store.by_flow_no(flow.flow_no)
    assert stored is not None and stored.status is FlowStatus.FAILED and gw.channels["bank-b"].calls == []


# --- compensation (补单): a retry of a stuck flow queries it now -------------------------------


async def stuck_flow(gw: FakeGateway, age_s: float) -> tuple[FlowRow, int]:
    gw.channels["bank-a"].answer(processing())
    flow = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    [attempt] = flow.attempts
    gw.tables.attempts[attempt.id].created_at = utcnow() - timedelta(seconds=age_s)
    gw.tables.poll_queue[attempt.id].due_at = utcnow() + timedelta(minutes=10)  # next scheduled query far off
    return flow, attempt.id


def compensations(channel: str, result: str) -> float:
    return metrics.COMPENSATION_QUERIES.labels(channel=channel, result=result)._value.get()  # type: ignore[attr-defined,no-any-return]


async def test_a_retry_of_a_stuck_flow_queries_its_attempt_now_and_answers_the_flow(gw: FakeGateway) -> None:
    flow, attempt_id = await stuck_flow(gw, age_s=gw.poller.first_query_after_s("bank-a") + 1)
    queued = compensations("bank-a", "queued")
    again = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    assert again.replayed and again.flow_no == flow.flow_no and again.status is FlowStatus.PROCESSING
    row = gw.tables.poll_queue[attempt_id]
    assert row.expedited and row.due_at <= utcnow()
    assert compensations("bank-a", "queued") == queued + 1
    assert debits(gw) == 1  # a query, never a second order
    assert await gw.poller.run_once() == 1 and gw.channels["bank-a"].kinds() == ["withhold", "query"]


async def test_compensation_is_rate_limited(gw: FakeGateway) -> None:
    _flow, attempt_id = await stuck_flow(gw, age_s=60)
    await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    limited = compensations("bank-a", "rate_limited")
    due = gw.tables.poll_queue[attempt_id].due_at
    for _ in range(5):
        again = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
        assert again.replayed
    assert compensations("bank-a", "rate_limited") == limited + 5
    assert gw.tables.poll_queue[attempt_id].due_at == due


async def test_a_retry_before_the_first_scheduled_query_or_of_a_flow_in_review_queries_nothing(
    gw: FakeGateway,
) -> None:
    _flow, attempt_id = await stuck_flow(gw, age_s=0)
    await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    assert not gw.tables.poll_queue[attempt_id].expedited  # young: its own first query is still to come
    gw.tables.attempts[attempt_id].created_at = utcnow() - timedelta(hours=1)
    [flow] = gw.tables.flows.values()
    flow.needs_review = True  # an operator owns it now
    await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    assert not gw.tables.poll_queue[attempt_id].expedited


async def test_a_compensation_that_cannot_be_queued_still_answers_the_replay(gw: FakeGateway) -> None:
    flow, _ = await stuck_flow(gw, age_s=60)
    gw.queue.fail_next("expedite", DatabaseUnavailable("down"))
    again = await gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5)
    assert again.replayed and again.flow_no == flow.flow_no


async def test_a_caller_that_hangs_up_after_commit_1_leaves_nothing_behind(gw: FakeGateway) -> None:
    gw.channels["bank-a"].answer(Hang(0.05, ok()))
    gw.store.fail_next("apply_outcome", DatabaseUnavailable("lost"))
    rpc = asyncio.ensure_future(gw.flows.withhold(CALLER, "r-1", withhold(), wait_s=5))
    while not gw.channels["bank-a"].calls:
        await asyncio.sleep(0.001)
    rpc.cancel()
    with pytest.raises(asyncio.CancelledError):
        await rpc
    await gw.flows.drain(5.0)
    [attempt] = gw.tables.attempts.values()
    assert attempt.id in gw.tables.poll_queue  # the task queued its query although nobody waited
