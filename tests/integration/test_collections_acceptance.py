"""Issue 20 acceptance: payer-initiated collections (主动还款) through the gateway, on MariaDB.

The Alipay and WeChat Pay simulators (and a sandbox bank) run over HTTP; the
test plays the borrower on them (channels.simkit.Borrower: open the cashier
the gateway handed out, as the wallet would, and pay it, pay it twice, pay
another amount, or walk away). Money is counted in the simulators' ledgers,
results in the gateway's rows, outbox and on Kafka.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from typing import Any

import grpc
import pytest
from alipay import AliPay
from wechatpayv3.core import Core

from channels.alipay import wire as alipay_wire
from channels.contract import Cashier, CashierKind
from channels.simkit import Behaviour, CallbackPolicy, PaymentRefused, pem_private, pem_public
from devstack.kafka import KafkaBroker, gateway_kafka
from gateway.store.db import DatabaseConfig
from paygate.v1 import events_pb2
from paygate.v1 import gateway_pb2 as pb
from tests.integration.test_outbox_relay import raw_messages
from tests.support.harness import Harness, running_gateway

ADAPTERS = {"ali": "alipay", "wx": "wechatpay", "sbx": "sandbox"}
CASHIER = {"min_expiry_s": 1, "default_expiry_s": 60}
KINDS = {CashierKind.QR: pb.CASHIER_QR, CashierKind.H5: pb.CASHIER_H5, CashierKind.IN_APP: pb.CASHIER_IN_APP}
IDS = itertools.count()
HINTS = pb.PayerHints(openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", client_ip="203.0.113.7", return_url="https://app.test/r")


def behaviours(**kw: Any) -> dict[str, Behaviour]:
    return {name: Behaviour(**kw) for name in ADAPTERS}


def gateway(db: DatabaseConfig, **kw: Any) -> Any:
    kw.setdefault("cashier", CASHIER)
    return running_gateway(db, kw.pop("behaviours", None) or behaviours(), adapters=ADAPTERS, **kw)


def create(
    channel: str, kind: CashierKind = CashierKind.QR, *, amount: int = 12_300, expires_in_s: int = 60, rid: str = ""
) -> pb.CreateCollectionRequest:
    return pb.CreateCollectionRequest(
        request_id=rid or f"c-{next(IDS)}",
        amount=pb.Money(amount=amount, currency="CNY"),
        cashier=KINDS[kind],
        expires_in_s=expires_in_s,
        channel=channel,
        description="第3期主动还款",
        payer=HINTS,
    )


def cashier_of(flow: pb.Flow) -> Cashier:
    """The cashier the app got, as the contract's Cashier (what the borrower's wallet opens)."""
    kind = next(k for k, v in KINDS.items() if v == flow.cashier.kind)
    c = flow.cashier
    return Cashier(kind, qr_code=c.qr_code, url=c.url, order_string=c.order_string, sdk_params=dict(c.sdk_params))


async def settled(h: Harness, flow: pb.Flow, timeout: float = 20.0) -> pb.Flow:
    deadline = asyncio.get_running_loop().time() + timeout
    while flow.status == pb.PROCESSING and not flow.needs_review and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        flow = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())
    return flow


async def events(h: Harness, flow_no: str) -> list[str]:
    rows = await h.gateway.db.fetchall(
        "SELECT o.event_type FROM outbox o JOIN flows f ON f.id = o.flow_id WHERE f.flow_no=%s ORDER BY o.id",
        (flow_no,),
    )
    return [str(r["event_type"]) for r in rows]


def order_no(flow: pb.Flow) -> str:
    return flow.attempts[-1].channel_order_no


def paid(h: Harness, flow: pb.Flow) -> int:
    return int(h.sims[flow.channel].ledger.paid_total(order_no(flow)))


async def test_the_borrower_pays_every_cashier_and_each_collection_succeeds_once(
    db_config: DatabaseConfig, kafka_broker: KafkaBroker
) -> None:
    topic = f"collections-{random.randrange(10**9)}"
    cases = [(ch, kind) for ch in ("ali", "wx") for kind in CashierKind] + [("sbx", CashierKind.QR)]
    async with gateway(db_config, kafka=gateway_kafka(kafka_broker.bootstrap, topic)) as h:
        flows = []
        for channel, kind in cases:
            flow = await h.stub.CreateCollection(create(channel, kind), metadata=h.md())
            assert (flow.kind, flow.status, flow.channel) == (pb.COLLECT, pb.PROCESSING, channel)
            assert flow.cashier.kind == KINDS[kind] and flow.cashier.HasField("expires_at")
            cashier = cashier_of(flow)  # exactly one payload, of the kind asked for
            h.sims[channel].pay_cashier(cashier)
            flows.append(flow)
        for flow in flows:
            done = await settled(h, flow)
            assert done.status == pb.SUCCEEDED, (done.channel, done.cashier.kind, done.attempts)
            assert paid(h, done) == 12_300 and done.channel_txn_id
            assert await events(h, done.flow_no) == [events_pb2.EventType.Name(events_pb2.FLOW_RESULT)]
        # the result went to Kafka as for a withhold: one FLOW_RESULT per collection, kind COLLECT
        records = await raw_messages(kafka_broker.bootstrap, topic, expect=len(flows))
        received = [events_pb2.FlowEvent.FromString(r.value) for r in records]
        assert sorted(e.flow_no for e in received) == sorted(f.flow_no for f in flows)
        assert {(e.kind, e.status, e.event_type) for e in received} == {
            (pb.COLLECT, pb.SUCCEEDED, events_pb2.FLOW_RESULT)
        }


async def test_paid_with_the_notification_lost_is_found_by_the_query_at_the_expiry(db_config: DatabaseConfig) -> None:
    async with gateway(db_config) as h:
        for sim in h.sims.values():
            sim.callbacks.policy = CallbackPolicy(max_attempts=0)  # every notification lost
        flows = [
            await h.stub.CreateCollection(create(ch, CashierKind.QR, expires_in_s=2), metadata=h.md())
            for ch in ADAPTERS
        ]
        for flow in flows:
            h.sims[flow.channel].pay_cashier(cashier_of(flow))
        await asyncio.sleep(0.5)
        for flow in flows:  # nothing told the gateway yet
            now = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())
            assert now.status == pb.PROCESSING
        for flow in flows:
            done = await settled(h, flow)
            assert done.status == pb.SUCCEEDED and paid(h, done) == 12_300, done.channel
            assert await events(h, done.flow_no) == ["FLOW_RESULT"]


async def test_an_abandoned_cashier_is_closed_at_the_expiry_and_fails(db_config: DatabaseConfig) -> None:
    async with gateway(db_config) as h:
        flows = []
        for channel in ADAPTERS:
            for kind in (CashierKind.QR, CashierKind.H5):
                # 4 s: under load one create can take over a second, and the H5 cashier must still be open
                flow = await h.stub.CreateCollection(create(channel, kind, expires_in_s=4), metadata=h.md())
                if kind is CashierKind.H5:  # opened and left; the QR codes are never even scanned
                    sim = h.sims[channel]
                    sim.abandon(sim.open_cashier(cashier_of(flow)))
                flows.append(flow)
        for flow in flows:
            done = await settled(h, flow)
            assert done.status == pb.FAILED, (done.channel, done.cashier.kind)
            assert (done.failure.code, done.failure.payer_attributable) == ("COLLECTION_EXPIRED", True)
            assert paid(h, done) == 0
            assert await events(h, done.flow_no) == ["FLOW_RESULT"]
            with pytest.raises(PaymentRefused):  # too late: the channel refuses the payment now
                h.sims[done.channel].pay_cashier(cashier_of(done))


async def test_another_amount_is_not_taken_but_sent_to_review(db_config: DatabaseConfig) -> None:
    async with gateway(db_config) as h:
        flows = [
            await h.stub.CreateCollection(create(ch, CashierKind.QR, expires_in_s=3), metadata=h.md())
            for ch in ADAPTERS
        ]
        for flow in flows:
            h.sims[flow.channel].pay_cashier(cashier_of(flow), amount=12_000)
        for flow in flows:
            done = await settled(h, flow)
            assert done.status == pb.PROCESSING and done.needs_review, done.channel  # never SUCCEEDED, never FAILED
            assert paid(h, done) == 12_000
            assert await events(h, done.flow_no) == ["FLOW_NEEDS_REVIEW"]
        await asyncio.sleep(3.5)  # past the expiry: a flow in review is not closed
        for flow in flows:
            still = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())
            assert still.status == pb.PROCESSING and not still.cashier.closing


async def test_paid_twice_is_one_success_and_a_discrepancy(db_config: DatabaseConfig) -> None:
    async with gateway(db_config) as h:
        flows = [await h.stub.CreateCollection(create(ch, CashierKind.H5), metadata=h.md()) for ch in ADAPTERS]
        for flow in flows:
            sim = h.sims[flow.channel]
            first = sim.pay_cashier(cashier_of(flow))
            assert (await settled(h, flow)).status == pb.SUCCEEDED
            second = sim.pay_again(first.order_no)
            assert second.txn_id != first.txn_id
        for flow in flows:
            deadline = asyncio.get_running_loop().time() + 10
            while len(await events(h, flow.flow_no)) < 2 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
            assert await events(h, flow.flow_no) == ["FLOW_RESULT", "DISCREPANCY"], flow.channel
            done = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())
            assert done.status == pb.SUCCEEDED and paid(h, done) == 2 * 12_300
            row = await h.gateway.db.fetchone(
                "SELECT d.recorded_status, d.reported_status, d.reported_code FROM discrepancies d"
                " JOIN flows f ON f.id = d.flow_id WHERE f.flow_no=%s",
                (flow.flow_no,),
            )
            assert row is not None and dict(row) == {
                "recorded_status": "SUCCEEDED",
                "reported_status": "SUCCEEDED",
                "reported_code": "ANOTHER_TRANSACTION",
            }


async def test_a_payment_racing_the_close_is_never_failed_with_money_taken(db_config: DatabaseConfig) -> None:
    # the platforms take their time over a close: a payment can land after it was sent, before it is done
    slow = {name: Behaviour(p50_ms=80, p99_ms=250, seed=n) for n, name in enumerate(ADAPTERS)}
    async with gateway(db_config, behaviours=slow) as h:
        loop = asyncio.get_running_loop()
        channels = list(ADAPTERS)
        kinds = [CashierKind.QR, CashierKind.H5, CashierKind.IN_APP]

        async def race(i: int) -> pb.Flow:
            channel = channels[i % 3]
            kind = kinds[(i // 3) % 3] if channel != "sbx" else CashierKind.QR
            flow = await h.stub.CreateCollection(create(channel, kind, expires_in_s=3), metadata=h.md())
            by_caller = i % 2 == 0
            # the moment the close goes out: the caller's CloseCollection, or the expiry the gateway closes at
            close_at = (
                loop.time() + 0.8
                if by_caller
                else flow.cashier.expires_at.ToMicroseconds() / 1e6 - time.time() + loop.time()
            )
            pay_at = close_at + (-0.15 + 0.55 * (i // 2) / 17)  # spread from before the close to after it

            async def borrower() -> None:
                await asyncio.sleep(max(pay_at - loop.time(), 0))
                try:
                    h.sims[channel].pay_cashier(cashier_of(flow))
                except PaymentRefused:
                    pass  # the platform had closed it, or it had expired: nothing taken

            async def caller() -> None:
                await asyncio.sleep(max(close_at - loop.time(), 0))
                await h.stub.CloseCollection(pb.CloseCollectionRequest(flow_no=flow.flow_no), metadata=h.md())

            await asyncio.gather(borrower(), *([caller()] if by_caller else []))
            return flow

        flows = await asyncio.gather(*(race(i) for i in range(36)))
        outcomes = {"paid": 0, "paid_though_closing": 0, "closed": 0}
        for flow in flows:
            done = await settled(h, flow, timeout=30)
            taken = paid(h, done)
            if taken:
                assert done.status == pb.SUCCEEDED and taken == 12_300, (done.channel, done.cashier.kind)
                outcomes["paid"] += 1
                outcomes["paid_though_closing"] += done.cashier.closing
            else:
                assert done.status == pb.FAILED, (done.channel, done.cashier.kind, done.status)
                assert done.failure.code in ("COLLECTION_EXPIRED", "COLLECTION_CLOSED")
                outcomes["closed"] += 1
            assert await events(h, done.flow_no) == ["FLOW_RESULT"]  # exactly one result, never a discrepancy
        # the race went both ways, and some payments beat a close that was already asked for
        assert outcomes["paid"] and outcomes["closed"] and outcomes["paid_though_closing"], outcomes


async def test_a_replay_is_the_same_order_and_cashier_and_other_parameters_are_refused(
    db_config: DatabaseConfig,
) -> None:
    async with gateway(db_config) as h:
        for channel in ADAPTERS:
            request = create(channel, CashierKind.IN_APP if channel != "sbx" else CashierKind.H5)
            first = await h.stub.CreateCollection(request, metadata=h.md())
            again = await h.stub.CreateCollection(request, metadata=h.md())
            assert again.replayed and again.flow_no == first.flow_no
            assert order_no(again) == order_no(first) and len(again.attempts) == 1
            assert again.cashier == first.cashier  # byte for byte: a WeChat paySign is not signed anew
            other = pb.CreateCollectionRequest()
            other.CopyFrom(request)
            other.amount.amount += 1
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await h.stub.CreateCollection(other, metadata=h.md())
            assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
            fetched = await h.stub.GetFlow(pb.GetFlowRequest(request_id=request.request_id), metadata=h.md())
            assert fetched.cashier == first.cashier


async def test_a_paid_collection_is_refunded_like_a_withhold(db_config: DatabaseConfig) -> None:
    async with gateway(db_config) as h:
        for channel in ADAPTERS:
            flow = await h.stub.CreateCollection(create(channel, CashierKind.QR), metadata=h.md())
            h.sims[channel].pay_cashier(cashier_of(flow))
            assert (await settled(h, flow)).status == pb.SUCCEEDED
            refund = await h.stub.Refund(
                pb.RefundRequest(
                    request_id=f"rf-{next(IDS)}",
                    original_flow_no=flow.flow_no,
                    amount=pb.Money(amount=2_300, currency="CNY"),
                    reason="多还",
                ),
                metadata=h.md(),
            )
            refund = await settled(h, refund)
            assert refund.status == pb.SUCCEEDED and refund.original_flow_no == flow.flow_no, channel
            original = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())
            assert original.refunded.amount == 2_300
            ledger = h.sims[channel].ledger
            assert ledger.debit_count(refund.attempts[0].channel_order_no) == 1
            with pytest.raises(grpc.aio.AioRpcError) as over:
                await h.stub.Refund(
                    pb.RefundRequest(
                        request_id=f"rf-{next(IDS)}",
                        original_flow_no=flow.flow_no,
                        amount=pb.Money(amount=10_001, currency="CNY"),
                    ),
                    metadata=h.md(),
                )
            assert over.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_close_collection_and_the_cashiers_the_official_sdks_accept(db_config: DatabaseConfig) -> None:
    async with gateway(db_config) as h:
        ali, wx = h.sims["ali"], h.sims["wx"]
        # the WeChat Pay JSAPI parameters: the SDK's signer gives the same paySign over the documented string
        js = await h.stub.CreateCollection(create("wx", CashierKind.IN_APP), metadata=h.md())
        params = dict(js.cashier.sdk_params)
        sdk = Core(
            mchid=wx.mchid,
            cert_serial_no=wx.merchant_serial_no,
            private_key=pem_private(wx.merchant_key),
            apiv3_key=wx.apiv3_key,
            public_key=wx.platform_public_key_pem(),
            public_key_id=wx.platform_serial,
        )
        signed = [params["appId"], params["timeStamp"], params["nonceStr"], params["package"]]
        assert sdk.sign(signed) == params["paySign"] and params["signType"] == "RSA"
        # the Alipay order string: Alipay's side (the SDK with the merchant's public key) checks it
        app = await h.stub.CreateCollection(create("ali", CashierKind.IN_APP), metadata=h.md())
        fields = alipay_wire.parse_order_string(app.cashier.order_string)
        signature = fields.pop("sign")
        as_alipay = AliPay(
            appid=ali.app_id,
            app_private_key_string=pem_private(ali.alipay_key),
            alipay_public_key_string=pem_public(ali.merchant_key.public_key()),
        )
        assert as_alipay._verify("&".join(f"{k}={v}" for k, v in sorted(fields.items()) if v), signature)
        # the caller closes both before the borrower pays: FAILED only on the channel's confirmed close
        for flow in (js, app):
            closed = await h.stub.CloseCollection(pb.CloseCollectionRequest(flow_no=flow.flow_no), metadata=h.md())
            assert closed.cashier.closing
            done = await settled(h, closed)
            assert (done.status, done.failure.code, done.failure.payer_attributable) == (
                pb.FAILED,
                "COLLECTION_CLOSED",
                False,
            )
            assert await events(h, done.flow_no) == ["FLOW_RESULT"]
        with pytest.raises(PaymentRefused):
            wx.pay_cashier(cashier_of(js))
        # a paid one is not closed: the close answers with the payment
        paid_first = await h.stub.CreateCollection(create("wx", CashierKind.QR), metadata=h.md())
        wx.pay_cashier(cashier_of(paid_first))
        after = await h.stub.CloseCollection(pb.CloseCollectionRequest(flow_no=paid_first.flow_no), metadata=h.md())
        assert (await settled(h, after)).status == pb.SUCCEEDED
        with pytest.raises(grpc.aio.AioRpcError) as not_mine:
            await h.stub.CloseCollection(pb.CloseCollectionRequest(flow_no=js.flow_no), metadata=h.md("collections"))
        assert not_mine.value.code() == grpc.StatusCode.NOT_FOUND
