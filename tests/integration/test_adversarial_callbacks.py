"""Adversarial probes on the callback endpoint: notices that are signed, but not about what they claim.

A notice signed with one channel's key about another channel's order, one naming another operation,
one without the amount, one for an order that is already final: none changes state (invariant 7),
each gets the channel's "retry" answer or its plain acknowledgement, as its protocol expects.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from channels.sandbox import wire
from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway import metrics
from gateway.store.db import DatabaseConfig
from paygate.v1 import gateway_pb2 as pb
from tests.support.harness import Harness, running_gateway

pytestmark = pytest.mark.integration

SLOW_SETTLE = Behaviour(settle_after_ms=(60_000, 60_001))
QUIET_POLLER = {"interval_s": 0.1, "first_delay_s": 30, "schedule": [[30, 5]]}


def notice(
    order_no: str, amount: int | None, *, kind: str = "withhold", code: str = "0000", txn_id: str = "T1"
) -> bytes:
    return wire.encode(
        wire.OrderReply(
            code=code,
            message="ok",
            order_no=order_no,
            status="SUCCEEDED" if code == "0000" else "FAILED",
            amount=amount,
            txn_id=txn_id,
            kind=kind,
        )
    )


def signed(body: bytes, channel: str = "bank-a", **kw: Any) -> dict[str, str]:
    headers = wire.sign_headers("sandbox-merchant", f"{channel}-secret", "POST", wire.CALLBACK_PATH, body, **kw)
    return {**headers, "Content-Type": "application/json"}


async def post(h: Harness, channel: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{h.gateway.http_port}/callbacks/{channel}"
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as reply:
        return reply.status, await reply.read()


async def snapshot(h: Harness) -> list[tuple[Any, ...]]:
    rows = await h.gateway.db.fetchall("SELECT id, status, version FROM attempts ORDER BY id")
    rows += await h.gateway.db.fetchall("SELECT id, status, version, needs_review FROM flows ORDER BY id")
    rows += await h.gateway.db.fetchall("SELECT id FROM outbox ORDER BY id")
    rows += await h.gateway.db.fetchall("SELECT id FROM discrepancies ORDER BY id")
    return [tuple(r.values()) for r in rows]


def counter(result: str, channel: str = "bank-a") -> float:
    return float(metrics.CALLBACKS.labels(channel=channel, result=result)._value.get())


async def pending(h: Harness, rid: str, amount: int = 10_005) -> pb.Flow:
    card = luhn_card()
    await h.bind_card(card, ["bank-a"])
    flow = await h.stub.Withhold(
        pb.WithholdRequest(
            request_id=rid, amount=pb.Money(amount=amount, currency="CNY"), account_no=card, bank_code="ICBC"
        ),
        metadata=h.md(),
    )
    assert flow.status == pb.PROCESSING and flow.attempts[0].status == pb.PENDING
    return flow


async def test_signed_notices_that_do_not_check_out_change_nothing(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": SLOW_SETTLE, "bank-b": SLOW_SETTLE}, poller=QUIET_POLLER) as h:
        flow = await pending(h, "cb-x-1")
        order_no = flow.attempts[0].channel_order_no
        before = await snapshot(h)
        mismatches = counter("mismatch", "bank-b"), counter("mismatch")
        bad_signatures = counter("bad_signature", "bank-b")
        # bank-b's genuine key, about bank-a's order: refused on bank-b's endpoint
        body = notice(order_no, 10_005)
        assert await post(h, "bank-b", body, signed(body, "bank-b")) == (400, b"FAIL")
        # bank-a's key on bank-b's endpoint: not bank-b's signature
        assert await post(h, "bank-b", body, signed(body, "bank-a")) == (400, b"FAIL")
        # another operation about the same order, with its amount (a "collect" notice would match: both are
        # payments in, an Alipay trade notice does not say which - channels.contract.notice_matches)
        for kind in ("payout", "refund"):
            other = notice(order_no, 10_005, kind=kind)
            assert await post(h, "bank-a", other, signed(other)) == (400, b"FAIL"), kind
        assert counter("mismatch", "bank-b") == mismatches[0] + 1
        assert counter("bad_signature", "bank-b") == bad_signatures + 1
        assert counter("mismatch") == mismatches[1] + 2
        assert await snapshot(h) == before
        # a stale signature (a notice recorded long ago and sent again) is not taken either
        stale = signed(body, timestamp=int(time.time()) - 10**6)
        status, _ = await post(h, "bank-a", body, stale)
        assert status == 400
        assert await snapshot(h) == before


async def test_a_success_notice_must_say_the_amount(db_config: DatabaseConfig) -> None:
    """A success the channel signed without saying what it moved cannot be checked against the order (invariant
    7): refused, and the channel is asked instead."""
    async with running_gateway(db_config, {"bank-a": SLOW_SETTLE}, poller=QUIET_POLLER) as h:
        flow = await pending(h, "cb-amt-1")
        order_no = flow.attempts[0].channel_order_no
        before = await snapshot(h)
        body = notice(order_no, None)
        assert await post(h, "bank-a", body, signed(body)) == (400, b"FAIL")
        assert await snapshot(h) == before
        got = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())
        assert got.status == pb.PROCESSING


async def test_a_notice_about_a_final_flow_changes_nothing(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour()}) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        flow = await h.stub.Withhold(
            pb.WithholdRequest(
                request_id="cb-final-1",
                amount=pb.Money(amount=10_000, currency="CNY"),
                account_no=card,
                bank_code="ICBC",
            ),
            metadata=h.md(),
        )
        assert flow.status == pb.SUCCEEDED
        order_no = flow.attempts[0].channel_order_no
        before = await snapshot(h)
        # the same success, many times at once: acknowledged, nothing written
        body = notice(order_no, 10_000, txn_id=flow.channel_txn_id)
        replies = await asyncio.gather(*(post(h, "bank-a", body, signed(body)) for _ in range(10)))
        assert set(replies) == {(200, b"OK")}
        assert await snapshot(h) == before
        # a signed failure, or a success under another transaction, for the succeeded order: each one
        # discrepancy (sent at once, many times), the flow stays SUCCEEDED with its one result event
        failed = notice(order_no, 10_000, code="1001")
        second = notice(order_no, 10_000, txn_id="ANOTHER-TXN")
        for body in (failed, second):
            replies = await asyncio.gather(*(post(h, "bank-a", body, signed(body)) for _ in range(5)))
            assert set(replies) == {(200, b"OK")}
        got = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())
        assert got.status == pb.SUCCEEDED and got.channel_txn_id == flow.channel_txn_id
        events = await h.gateway.db.fetchall("SELECT event_type FROM outbox ORDER BY id")
        assert [e["event_type"] for e in events].count("FLOW_RESULT") == 1
        found = await h.gateway.db.fetchall("SELECT reported_status FROM discrepancies ORDER BY id")
        assert sorted(r["reported_status"] for r in found) == ["FAILED", "SUCCEEDED"], found
        assert sum(h.debits().values()) == 1
