"""Issue 4: verified callbacks, replays, fuzzing, exhaustion to review, operator resolution, discrepancies."""

from __future__ import annotations

import asyncio
import json
import random

import aiohttp
import pytest

from channels.sandbox import wire
from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway import metrics
from gateway.store.db import DatabaseConfig
from paygate.v1 import admin_pb2
from paygate.v1 import gateway_pb2 as pb
from tests.support.harness import Harness, running_gateway

SLOW_SETTLE = Behaviour(settle_after_ms=(60_000, 60_001))
NEVER = {"interval_s": 0.05, "first_delay_s": 0.1, "schedule": [[0.1, 3]]}


def withhold(rid: str, card: str, amount: int) -> pb.WithholdRequest:
    return pb.WithholdRequest(
        request_id=rid, amount=pb.Money(amount=amount, currency="CNY"), account_no=card, bank_code="ICBC"
    )


def callback_body(order_no: str, amount: int, code: str = "0000", status: str = "SUCCEEDED") -> bytes:
    return wire.encode(
        wire.OrderReply(
            code=code, message="ok", order_no=order_no, status=status, amount=amount, txn_id="T1", kind="withhold"
        )
    )


async def post(h: Harness, channel: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{h.gateway.http_port}/callbacks/{channel}"
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as reply:
        return reply.status, await reply.read()


def signed(body: bytes, secret: str = "bank-a-secret", merchant: str = "sandbox-merchant") -> dict[str, str]:
    headers = wire.sign_headers(merchant, secret, "POST", wire.CALLBACK_PATH, body)
    return {**headers, "Content-Type": "application/json"}


def counter(result: str, channel: str = "bank-a") -> float:
    return metrics.CALLBACKS.labels(channel=channel, result=result)._value.get()


async def pending_flow(h: Harness, rid: str, amount: int = 10005) -> pb.Flow:
    card = luhn_card()
    await h.bind_card(card, ["bank-a"])
    flow = await h.stub.Withhold(withhold(rid, card, amount), metadata=h.md())
    assert flow.status == pb.PROCESSING and flow.attempts[0].status == pb.PENDING
    return flow


async def snapshot(h: Harness) -> list[tuple]:
    rows = await h.gateway.db.fetchall("SELECT id, status, version FROM attempts ORDER BY id")
    rows += await h.gateway.db.fetchall("SELECT id, status, version, needs_review FROM flows ORDER BY id")
    rows += await h.gateway.db.fetchall("SELECT id FROM outbox ORDER BY id")
    return [tuple(r.values()) for r in rows]


async def test_forged_and_tampered_callbacks_change_nothing(db_config: DatabaseConfig) -> None:
    async with running_gateway(
        db_config, {"bank-a": SLOW_SETTLE}, poller={"interval_s": 0.1, "first_delay_s": 30, "schedule": [[30, 5]]}
    ) as h:
        flow = await pending_flow(h, "cb-1")
        order_no = flow.attempts[0].channel_order_no
        before = await snapshot(h)
        bad_sig = counter("bad_signature")
        polls = metrics.POLLS.labels(channel="bank-a", result="pending")._value.get()
        body = callback_body(order_no, 10005)
        status, reply = await post(h, "bank-a", body, signed(body, secret="not-the-secret"))
        assert (status, reply) == (400, b"FAIL")
        tampered = callback_body(order_no, 10006)
        status, _ = await post(h, "bank-a", tampered, signed(body))
        assert status == 400
        assert counter("bad_signature") == bad_sig + 2
        assert await snapshot(h) == before
        # a forged callback makes the gateway ask the channel at once
        for _ in range(40):
            if metrics.POLLS.labels(channel="bank-a", result="pending")._value.get() > polls:
                break
            await asyncio.sleep(0.05)
        # one query (rate-limited), and it did not use up the schedule
        assert metrics.POLLS.labels(channel="bank-a", result="pending")._value.get() == polls + 1
        row = await h.gateway.db.fetchone("SELECT tries FROM poll_queue")
        assert row is not None and row["tries"] == 0


async def test_signed_callback_with_wrong_amount_is_rejected(db_config: DatabaseConfig) -> None:
    async with running_gateway(
        db_config, {"bank-a": SLOW_SETTLE}, poller={"interval_s": 0.1, "first_delay_s": 30, "schedule": [[30, 5]]}
    ) as h:
        flow = await pending_flow(h, "cb-2")
        before = await snapshot(h)
        mismatch = counter("mismatch")
        body = callback_body(flow.attempts[0].channel_order_no, 99_999)
        status, _ = await post(h, "bank-a", body, signed(body))
        assert status == 400
        assert counter("mismatch") == mismatch + 1
        assert await snapshot(h) == before


async def test_genuine_callback_applies_once_and_replays_are_noops(db_config: DatabaseConfig) -> None:
    async with running_gateway(
        db_config, {"bank-a": SLOW_SETTLE}, poller={"interval_s": 0.1, "first_delay_s": 30, "schedule": [[30, 5]]}
    ) as h:
        flow = await pending_flow(h, "cb-3")
        body = callback_body(flow.attempts[0].channel_order_no, 10005)
        replays = counter("replay")
        assert await post(h, "bank-a", body, signed(body)) == (200, b"OK")
        done = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())
        assert done.status == pb.SUCCEEDED
        after = await snapshot(h)
        for _ in range(3):
            assert await post(h, "bank-a", body, signed(body)) == (200, b"OK")
        assert counter("replay") == replays + 3
        assert await snapshot(h) == after
        results = await h.gateway.db.fetchall("SELECT id FROM outbox WHERE event_type='FLOW_RESULT'")
        assert len(results) == 1


async def test_unknown_order_is_acknowledged_and_counted(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour()}) as h:
        unknown = counter("unknown_order")
        body = callback_body("01NOSUCHORDER0000000000000000", 100)
        assert await post(h, "bank-a", body, signed(body)) == (200, b"OK")
        assert counter("unknown_order") == unknown + 1


async def test_fuzzed_callbacks_never_500_never_change_state(db_config: DatabaseConfig) -> None:
    async with running_gateway(
        db_config, {"bank-a": SLOW_SETTLE}, poller={"interval_s": 0.1, "first_delay_s": 30, "schedule": [[30, 5]]}
    ) as h:
        flow = await pending_flow(h, "cb-fuzz")
        order_no = flow.attempts[0].channel_order_no
        before = await snapshot(h)
        rng = random.Random(4)
        genuine = callback_body(order_no, 10005)
        bodies: list[tuple[bytes, dict[str, str]]] = [
            (b"", {}),
            (b"not json", {"Content-Type": "application/json"}),
            (b"\xff\xfe\x00garbage", {"Content-Type": "application/octet-stream"}),
            (json.dumps([1, 2, 3]).encode(), {"Content-Type": "application/json"}),
            (genuine, {"Content-Type": "text/plain"}),
            (genuine, {k: v + "x" for k, v in signed(genuine).items()}),
            (b"x" * (2 * 1024 * 1024), {"Content-Type": "application/json"}),
            (genuine.replace(b"10005", b"10050"), signed(genuine)),
            (callback_body(order_no, -1), signed(callback_body(order_no, -1))),
            (
                callback_body(order_no, 10005, code="ZZZZ"),
                signed(callback_body(order_no, 10005, code="ZZZZ"), secret="x"),
            ),
        ]
        for _ in range(40):
            raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
            bodies.append((raw, {"Content-Type": rng.choice(["application/json", "text/xml", "multipart/form-data"])}))
            mutated = bytearray(genuine)
            mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
            bodies.append((bytes(mutated), signed(genuine)))
        for body, headers in bodies:
            status, _ = await post(h, "bank-a", body, headers)
            assert status < 500 or status == 503, status
            assert status != 200 or body == genuine
        status, _ = await post(h, "no-such-channel", genuine, signed(genuine))
        assert status == 404
        assert await snapshot(h) == before


async def test_exhausted_polling_goes_to_review_and_operator_resolves(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": SLOW_SETTLE}, poller=NEVER) as h:
        assert h.admin is not None
        flow = await pending_flow(h, "rv-1")
        for _ in range(100):
            got = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())
            if got.needs_review:
                break
            await asyncio.sleep(0.1)
        assert got.needs_review and got.status == pb.PROCESSING, "exhausted polls never auto-fail"
        review = await h.admin.ListReviewFlows(admin_pb2.ListReviewFlowsRequest(), metadata=h.op_md)
        assert [f.flow.flow_no for f in review.flows] == [flow.flow_no]
        events = await h.gateway.db.fetchall("SELECT event_type FROM outbox ORDER BY id")
        assert [e["event_type"] for e in events] == ["FLOW_NEEDS_REVIEW"]
        resolved = await h.admin.ResolveFlow(
            admin_pb2.ResolveFlowRequest(
                flow_no=flow.flow_no, status=pb.SUCCEEDED, reason="bank statement shows the debit", channel_txn_id="B1"
            ),
            metadata=h.op_md,
        )
        assert resolved.status == pb.SUCCEEDED and not resolved.needs_review
        events = await h.gateway.db.fetchall("SELECT event_type FROM outbox ORDER BY id")
        assert [e["event_type"] for e in events] == ["FLOW_NEEDS_REVIEW", "FLOW_RESULT"]
        audit = await h.gateway.db.fetchall("SELECT operator, action, reason FROM audit_log")
        assert [(a["operator"], a["action"]) for a in audit] == [("ops", "resolve_flow")]
        review = await h.admin.ListReviewFlows(admin_pb2.ListReviewFlowsRequest(), metadata=h.op_md)
        assert len(review.flows) == 0


async def test_conflicting_late_result_is_a_discrepancy(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": SLOW_SETTLE}, poller=NEVER) as h:
        assert h.admin is not None
        flow = await pending_flow(h, "dc-1")
        await h.admin.ResolveFlow(
            admin_pb2.ResolveFlowRequest(flow_no=flow.flow_no, status=pb.FAILED, reason="customer says not charged"),
            metadata=h.op_md,
        )
        body = callback_body(flow.attempts[0].channel_order_no, 10005)
        assert await post(h, "bank-a", body, signed(body)) == (200, b"OK")
        final = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())
        assert final.status == pb.FAILED, "a terminal state is never overwritten"
        found = await h.admin.ListDiscrepancies(admin_pb2.ListDiscrepanciesRequest(), metadata=h.op_md)
        assert [(d.recorded_status, d.reported_status, d.source) for d in found.discrepancies] == [
            ("FAILED", "SUCCEEDED", "callback")
        ]
        events = await h.gateway.db.fetchall("SELECT event_type FROM outbox ORDER BY id")
        assert [e["event_type"] for e in events].count("DISCREPANCY") == 1
        assert [e["event_type"] for e in events].count("FLOW_RESULT") == 1


async def test_requery_expedites_pending_attempts(db_config: DatabaseConfig) -> None:
    async with running_gateway(
        db_config, {"bank-a": SLOW_SETTLE}, poller={"interval_s": 0.1, "first_delay_s": 300, "schedule": [[300, 5]]}
    ) as h:
        assert h.admin is not None
        flow = await pending_flow(h, "rq-1")
        polls = metrics.POLLS.labels(channel="bank-a", result="pending")._value.get()
        reply = await h.admin.RequeryFlow(admin_pb2.RequeryFlowRequest(flow_no=flow.flow_no), metadata=h.op_md)
        assert reply.queued_attempts == 1
        for _ in range(40):
            if metrics.POLLS.labels(channel="bank-a", result="pending")._value.get() > polls:
                break
            await asyncio.sleep(0.05)
        assert metrics.POLLS.labels(channel="bank-a", result="pending")._value.get() == polls + 1


@pytest.mark.parametrize("n", [1])
async def test_callback_poll_and_response_race_one_winner(db_config: DatabaseConfig, n: int) -> None:
    async with running_gateway(
        db_config,
        {"bank-a": Behaviour(settle_after_ms=(50, 80))},
        poller={"interval_s": 0.02, "first_delay_s": 0.02, "schedule": [[0.02, 200]]},
    ) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        flows = await asyncio.gather(
            *[h.stub.Withhold(withhold(f"race-{i}", card, 10005 + i * 100), metadata=h.md()) for i in range(20)]
        )
        for _ in range(100):
            rows = await h.gateway.db.fetchall("SELECT status FROM flows")
            if all(r["status"] == "SUCCEEDED" for r in rows):
                break
            await asyncio.sleep(0.1)
        assert all(r["status"] == "SUCCEEDED" for r in rows)
        results = await h.gateway.db.fetchall("SELECT msg_key FROM outbox WHERE event_type='FLOW_RESULT'")
        assert sorted(r["msg_key"] for r in results) == sorted(f.flow_no for f in flows)
        assert (await h.gateway.db.fetchone("SELECT COUNT(*) AS n FROM discrepancies"))["n"] == 0
