"""Issue 2 acceptance against real MariaDB and sandbox simulators over HTTP."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.store.db import DatabaseConfig
from paygate.v1 import gateway_pb2
from tests.support.harness import Harness, running_gateway


def withhold(request_id: str, card: str, amount: int, wait_ms: int = 0) -> gateway_pb2.WithholdRequest:
    return gateway_pb2.WithholdRequest(
        request_id=request_id,
        amount=gateway_pb2.Money(amount=amount, currency="CNY"),
        account_no=card,
        bank_code="ICBC",
        wait_ms=wait_ms,
    )


async def wait_for_status(h: Harness, flow_no: str, status: int, caller: str = "loans", timeout: float = 15.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        flow = await h.stub.GetFlow(gateway_pb2.GetFlowRequest(flow_no=flow_no), metadata=h.md(caller))
        if flow.status == status:
            return flow
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"flow stayed {gateway_pb2.FlowStatus.Name(flow.status)}: {flow}")
        await asyncio.sleep(0.1)


async def test_timeout_after_debit_stays_processing_and_never_fails_over(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour(), "bank-b": Behaviour()}) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a", "bank-b"])
        flow = await h.stub.Withhold(withhold("t-1", card, 10007), metadata=h.md())
        # the simulator debited, the answer never came: PROCESSING, one attempt, never FAILED
        assert flow.status == gateway_pb2.PROCESSING
        assert len(flow.attempts) == 1
        assert flow.attempts[0].status in (gateway_pb2.PENDING, gateway_pb2.SENDING)
        assert sum(h.debits().values()) == 1
        done = await wait_for_status(h, flow.flow_no, gateway_pb2.SUCCEEDED)
        assert len(done.attempts) == 1, "a timeout must never fail over"
        assert sum(h.debits().values()) == 1


async def test_pending_settles_by_callback_or_poll(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour(settle_after_ms=(100, 200))}) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        ok = await h.stub.Withhold(withhold("p-1", card, 10005), metadata=h.md())
        bad = await h.stub.Withhold(withhold("p-2", card, 10006), metadata=h.md())
        assert ok.status == gateway_pb2.PROCESSING and bad.status == gateway_pb2.PROCESSING
        await wait_for_status(h, ok.flow_no, gateway_pb2.SUCCEEDED)
        failed = await wait_for_status(h, bad.flow_no, gateway_pb2.FAILED)
        assert failed.failure.payer_attributable
        outbox = await h.gateway.db.fetchall("SELECT event_type, msg_key FROM outbox WHERE event_type='FLOW_RESULT'")
        assert sorted(r["msg_key"] for r in outbox) == sorted([ok.flow_no, bad.flow_no])


async def test_wait_budget_returns_processing(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour(p50_ms=600, p99_ms=800)}) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        flow = await h.stub.Withhold(withhold("w-1", card, 10000, wait_ms=50), metadata=h.md())
        assert flow.status == gateway_pb2.PROCESSING
        await wait_for_status(h, flow.flow_no, gateway_pb2.SUCCEEDED)


async def test_refunds_never_exceed_the_original(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour()}) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        paid = await h.stub.Withhold(withhold("rf-0", card, 10000), metadata=h.md())
        assert paid.status == gateway_pb2.SUCCEEDED

        def refund(rid: str, amount: int) -> gateway_pb2.RefundRequest:
            return gateway_pb2.RefundRequest(
                request_id=rid, original_flow_no=paid.flow_no, amount=gateway_pb2.Money(amount=amount, currency="CNY")
            )

        first = await h.stub.Refund(refund("rf-1", 6000), metadata=h.md())
        assert first.status == gateway_pb2.SUCCEEDED and first.original_flow_no == paid.flow_no
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.stub.Refund(refund("rf-2", 5000), metadata=h.md())
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        results = await asyncio.gather(
            *[h.stub.Refund(refund(f"rf-c{i}", 1000), metadata=h.md()) for i in range(10)], return_exceptions=True
        )
        ok = [r for r in results if isinstance(r, gateway_pb2.Flow) and r.status == gateway_pb2.SUCCEEDED]
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(ok) == 4 and all(e.code() == grpc.StatusCode.FAILED_PRECONDITION for e in refused)
        original = await h.stub.GetFlow(gateway_pb2.GetFlowRequest(flow_no=paid.flow_no), metadata=h.md())
        assert original.refunded.amount == 10000
        refunded = sum(
            e.amount
            for s in h.sims.values()
            for e in s.ledger.entries()
            if e.kind.value == "refund" and e.status.value == "SUCCEEDED"
        )
        assert refunded == 10000


async def test_callers_cannot_see_each_other(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour()}) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        flow = await h.stub.Withhold(withhold("iso-1", card, 10000), metadata=h.md("loans"))
        for request in (
            gateway_pb2.GetFlowRequest(flow_no=flow.flow_no),
            gateway_pb2.GetFlowRequest(request_id="iso-1"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await h.stub.GetFlow(request, metadata=h.md("collections"))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        # the other caller has no agreement for this card either
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.stub.Withhold(withhold("iso-1", card, 10000), metadata=h.md("collections"))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.stub.Refund(
                gateway_pb2.RefundRequest(
                    request_id="iso-r",
                    original_flow_no=flow.flow_no,
                    amount=gateway_pb2.Money(amount=1, currency="CNY"),
                ),
                metadata=h.md("collections"),
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_authentication(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour()}) as h:
        request = gateway_pb2.GetFlowRequest(request_id="x")
        for md in (
            (),
            (("authorization", "Bearer wrong-token-000000000"),),
            (("authorization", "Basic abc"),),
            h.op_md,
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await h.stub.GetFlow(request, metadata=md)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        from paygate.v1 import admin_pb2

        assert h.admin is not None
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.admin.ListChannels(admin_pb2.ListChannelsRequest(), metadata=h.md())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        channels = await h.admin.ListChannels(admin_pb2.ListChannelsRequest(), metadata=h.op_md)
        assert [c.channel for c in channels.channels] == ["bank-a"]


async def test_card_numbers_masked_in_logs_and_responses(
    db_config: DatabaseConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_gateway(db_config, {"bank-a": Behaviour()}) as h:
        card = luhn_card()
        agreements = await h.bind_card(card, ["bank-a"])
        flow = await h.stub.Withhold(withhold("m-1", card, 10001), metadata=h.md())
        listed = await h.stub.ListAgreements(gateway_pb2.ListAgreementsRequest(account_no=card), metadata=h.md())
        assert len(listed.agreements) == 1
        for message in (flow, listed, *agreements):
            assert card not in str(message) and "11010519491231002X" not in str(message)
        assert flow.account_masked.endswith(card[-4:])
        rows = await h.gateway.db.fetchall("SELECT * FROM flows")
        rows += await h.gateway.db.fetchall("SELECT * FROM agreements")
        assert card not in repr(rows)
    assert card not in caplog.text
    assert "11010519491231002X" not in caplog.text
