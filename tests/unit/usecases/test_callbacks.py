"""The callback endpoint over in-memory stores: an unverified callback changes nothing.

Requests are built in memory (aiohttp's mocked request over a stream fed
with the body); no socket is opened.
"""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request

from channels.contract import Operation
from gateway.domain import AttemptStatus, FlowStatus
from gateway.errors import DatabaseUnavailable
from gateway.store.rows import AttemptRow
from gateway.validation import WithholdParams
from tests.fakes import CALLER, CARD, FakeChannel, FakeGateway
from tests.fakes.channel import declined, ok, processing


async def post(gw: FakeGateway, channel_id: str, headers: dict[str, str], body: bytes) -> web.Response:
    payload = StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop())
    payload.feed_data(body)
    payload.feed_eof()
    request = make_mocked_request(
        "POST",
        f"/callbacks/{channel_id}",
        headers={**headers, "Content-Length": str(len(body))},
        match_info={"channel_id": channel_id},
        payload=payload,
    )
    return await gw.callbacks.handle(request)


async def pending_attempt(gw: FakeGateway, channel: str = "bank-a") -> AttemptRow:
    gw.channels[channel].answer(processing())
    flow = await gw.flows.withhold(CALLER, f"r-{channel}", WithholdParams(10_000, "CNY", CARD, "ICBC", "", ""), 5)
    [attempt] = flow.attempts
    assert attempt.channel == channel and attempt.status is AttemptStatus.PENDING
    return attempt


@pytest.fixture
def gw() -> FakeGateway:
    gateway = FakeGateway(FakeChannel("bank-a"), FakeChannel("bank-b", secret=b"other-secret"))
    gateway.agree("bank-a", "bank-b")
    return gateway


def reply_of(response: web.Response) -> tuple[int, Any]:
    return response.status, response.body


async def test_a_verified_callback_applies_the_result_once(gw: FakeGateway) -> None:
    attempt = await pending_attempt(gw)
    headers, body = gw.channels["bank-a"].callback(attempt.channel_order_no, ok("T9"), amount=attempt.amount)
    assert reply_of(await post(gw, "bank-a", headers, body)) == (200, b"OK")
    flow = gw.tables.flows[attempt.flow_id]
    assert flow.status is FlowStatus.SUCCEEDED and flow.channel_txn_id == "T9"
    assert attempt.id not in gw.tables.poll_queue
    before = gw.tables.snapshot()
    # the channel retries its notification: acknowledged, nothing changes
    assert reply_of(await post(gw, "bank-a", headers, body)) == (200, b"OK")
    assert gw.tables.snapshot() == before
    assert len(gw.tables.events("FLOW_RESULT")) == 1
    assert gw.expedited == []


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param("signature", id="bad-signature"),
        pytest.param("amount", id="other-amount"),
        pytest.param("no-amount", id="success-without-amount"),
        pytest.param("operation", id="other-operation"),
        pytest.param("channel", id="another-channels-order"),
    ],
)
async def test_a_callback_that_does_not_check_out_changes_nothing_and_at_most_expedites_a_query(
    gw: FakeGateway, forge: str
) -> None:
    attempt = await pending_attempt(gw)
    channel, secret, amount, operation = "bank-a", None, attempt.amount, Operation.WITHHOLD
    if forge == "signature":
        secret = b"forged"
    elif forge == "amount":
        amount = attempt.amount + 1
    elif forge == "no-amount":
        amount = None  # nothing to check the success against
    elif forge == "operation":
        operation = Operation.PAYOUT
    else:
        channel = "bank-b"  # signed correctly by bank-b, about bank-a's order
    headers, body = gw.channels[channel].callback(
        attempt.channel_order_no, ok(), operation=operation, amount=amount, secret=secret
    )
    queue_before = {k: v.tries for k, v in gw.tables.poll_queue.items()}
    flows_before = gw.tables.snapshot()["flows"]
    attempts_before = gw.tables.snapshot()["attempts"]

    assert reply_of(await post(gw, channel, headers, body)) == (400, b"FAIL")

    assert gw.tables.snapshot()["flows"] == flows_before
    assert gw.tables.snapshot()["attempts"] == attempts_before
    assert gw.tables.outbox == [] and gw.tables.discrepancies == []
    assert gw.expedited == [(attempt.id, "bank-a")]  # ask the channel that owns the order, directly
    assert {k: v.tries for k, v in gw.tables.poll_queue.items()} == queue_before
    assert gw.tables.poll_queue[attempt.id].expedited


async def test_an_amountless_success_after_the_result_is_recorded_is_acknowledged_and_changes_nothing(
    gw: FakeGateway,
) -> None:
    attempt = await pending_attempt(gw)
    headers, body = gw.channels["bank-a"].callback(attempt.channel_order_no, ok("T9"), amount=attempt.amount)
    assert reply_of(await post(gw, "bank-a", headers, body)) == (200, b"OK")
    before = gw.tables.snapshot()
    # the channel's retries of a notice that never says the amount (the query settled the amount)
    headers, body = gw.channels["bank-a"].callback(attempt.channel_order_no, ok("T9"), amount=None)
    assert reply_of(await post(gw, "bank-a", headers, body)) == (200, b"OK")
    assert gw.tables.snapshot() == before and gw.expedited == []


async def test_a_flood_of_forged_callbacks_expedites_one_query(gw: FakeGateway) -> None:
    attempt = await pending_attempt(gw)
    headers, body = gw.channels["bank-a"].callback(attempt.channel_order_no, ok(), secret=b"forged")
    for _ in range(10):
        await post(gw, "bank-a", headers, body)
    claims = await gw.queue.claim(owner="x", limit=10, lease_s=60)
    assert len(claims) == 1 and claims[0].expedited
    assert gw.tables.flows[attempt.flow_id].status is FlowStatus.PROCESSING


async def test_a_forged_callback_for_an_unknown_order_expedites_nothing(gw: FakeGateway) -> None:
    await pending_attempt(gw)
    headers, body = gw.channels["bank-a"].callback("NO-SUCH-ORDER", ok(), secret=b"forged")
    before = gw.tables.snapshot()
    assert reply_of(await post(gw, "bank-a", headers, body)) == (400, b"FAIL")
    assert gw.expedited == [] and gw.tables.snapshot() == before


async def test_a_malformed_callback_is_rejected_and_changes_nothing(gw: FakeGateway) -> None:
    await pending_attempt(gw)
    before = gw.tables.snapshot()
    assert reply_of(await post(gw, "bank-a", {}, b"not json")) == (400, b"FAIL")
    assert gw.tables.snapshot() == before and gw.expedited == []


async def test_a_verified_callback_for_an_unknown_order_is_acknowledged_and_changes_nothing(gw: FakeGateway) -> None:
    await pending_attempt(gw)
    before = gw.tables.snapshot()
    headers, body = gw.channels["bank-a"].callback("NO-SUCH-ORDER", ok())
    assert reply_of(await post(gw, "bank-a", headers, body)) == (200, b"OK")
    assert gw.tables.snapshot() == before


async def test_a_contradicting_callback_is_a_discrepancy_not_an_overwrite(gw: FakeGateway) -> None:
    attempt = await pending_attempt(gw)
    headers, body = gw.channels["bank-a"].callback(attempt.channel_order_no, ok(), amount=attempt.amount)
    await post(gw, "bank-a", headers, body)
    headers, body = gw.channels["bank-a"].callback(attempt.channel_order_no, declined())
    assert reply_of(await post(gw, "bank-a", headers, body)) == (200, b"OK")
    assert gw.tables.flows[attempt.flow_id].status is FlowStatus.SUCCEEDED
    assert gw.tables.attempts[attempt.id].status is AttemptStatus.SUCCEEDED
    assert [d.reported_status for d in gw.tables.discrepancies] == ["FAILED"]


async def test_a_pending_callback_keeps_the_attempt_polled(gw: FakeGateway) -> None:
    attempt = await pending_attempt(gw)
    headers, body = gw.channels["bank-a"].callback(attempt.channel_order_no, processing())
    assert reply_of(await post(gw, "bank-a", headers, body)) == (200, b"OK")
    assert gw.tables.attempts[attempt.id].status is AttemptStatus.PENDING
    assert attempt.id in gw.tables.poll_queue


async def test_an_unknown_channel_is_404(gw: FakeGateway) -> None:
    response = await post(gw, "bank-zz", {}, b"{}")
    assert response.status == 404


async def test_a_body_over_the_cap_is_413_and_not_parsed(gw: FakeGateway) -> None:
    attempt = await pending_attempt(gw)
    headers, _ = gw.channels["bank-a"].callback(attempt.channel_order_no, ok())
    response = await post(gw, "bank-a", headers, b"x" * (64 * 1024 + 1))
    assert response.status == 413
    assert gw.tables.attempts[attempt.id].status is AttemptStatus.PENDING


async def test_our_own_failure_asks_the_channel_to_retry(gw: FakeGateway) -> None:
    attempt = await pending_attempt(gw)
    headers, body = gw.channels["bank-a"].callback(attempt.channel_order_no, ok(), amount=attempt.amount)
    gw.store.fail_next("apply_outcome", DatabaseUnavailable("database down"))
    response = await post(gw, "bank-a", headers, body)
    assert response.status == 503
    assert gw.tables.attempts[attempt.id].status is AttemptStatus.PENDING
    assert reply_of(await post(gw, "bank-a", headers, body)) == (200, b"OK")  # the retry lands
    assert gw.tables.flows[attempt.flow_id].status is FlowStatus.SUCCEEDED
