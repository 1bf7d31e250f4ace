"""Issue 7 acceptance through the gateway: Alipay and WeChat Pay simulators alongside a sandbox bank."""

from __future__ import annotations

import asyncio
import itertools

import aiohttp
import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import Counter

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway import metrics
from gateway.store.db import DatabaseConfig
from paygate.v1 import admin_pb2
from paygate.v1 import gateway_pb2 as pb
from tests.support.harness import Harness, running_gateway
from tests.support.waiting import eventually

ADAPTERS = {"ali": "alipay", "wx": "wechatpay", "sbx": "sandbox"}
IDS = itertools.count()


def withhold(card: str, amount: int) -> pb.WithholdRequest:
    return pb.WithholdRequest(
        request_id=f"w-{next(IDS)}", amount=pb.Money(amount=amount, currency="CNY"), account_no=card, bank_code="ICBC"
    )


def payout(amount: int) -> pb.PayoutRequest:
    return pb.PayoutRequest(
        request_id=f"p-{next(IDS)}",
        amount=pb.Money(amount=amount, currency="CNY"),
        account_no="6222020200112233",
        account_name="李四",
        bank_code="ICBC",
    )


async def settle(h: Harness, flow: pb.Flow, timeout: float = 20.0) -> pb.Flow:
    deadline = asyncio.get_running_loop().time() + timeout
    while flow.status == pb.PROCESSING and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        flow = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())
    return flow


async def counted(counter: Counter, before: float, what: str) -> None:
    """``counter`` went past ``before``. The poller and the callback handler count a resolution after its
    commit, and a GetFlow can see the flow settled in between: the count is waited for (a few seconds)."""
    await eventually(lambda: counter._value.get() > before, timeout_s=5.0, what=what)


async def resolved_by_a_poll(channel: str, before: float) -> None:
    await counted(metrics.POLLS.labels(channel=channel, result="resolved"), before, f"a poll resolved on {channel}")


def one_debit_each(h: Harness) -> None:
    debits = h.debits()
    assert debits and all(n == 1 for n in debits.values()), debits


async def test_withholds_and_payouts_through_alipay_and_wechatpay(db_config: DatabaseConfig) -> None:
    behaviours = {"ali": Behaviour(settle_after_ms=(200, 400)), "wx": Behaviour(settle_after_ms=(200, 400))}
    async with running_gateway(db_config, behaviours, adapters=ADAPTERS) as h:
        for channel in ("ali", "wx"):
            card = luhn_card()
            await h.bind_card(card, [channel])
            flow = await settle(h, await h.stub.Withhold(withhold(card, 12_300), metadata=h.md()))
            assert flow.status == pb.SUCCEEDED and flow.channel == channel, flow
            declined = await settle(h, await h.stub.Withhold(withhold(card, 12_301), metadata=h.md()))
            assert declined.status == pb.FAILED and declined.failure.payer_attributable, declined
        paid = [await settle(h, await h.stub.Payout(payout(50_000 + i * 100), metadata=h.md())) for i in range(6)]
        assert all(p.status == pb.SUCCEEDED for p in paid), paid
        assert {p.channel for p in paid} <= {"ali", "wx"}
        one_debit_each(h)


async def test_failover_between_protocols_with_one_debit(db_config: DatabaseConfig) -> None:
    behaviours = {"sbx": Behaviour(declines={"channel_busy": 1.0}), "ali": Behaviour(outage=False), "wx": Behaviour()}
    # no exploration: ties on the prior go in configuration order, so the first flow tries sbx, ali, then wx
    routing = {"elimination_consecutive": 100, "exploration": 0}
    async with running_gateway(db_config, behaviours, adapters=ADAPTERS, routing=routing) as h:
        card = luhn_card()
        await h.bind_card(card, ["sbx", "ali", "wx"])
        h.sims["ali"].behaviour.outage = True  # refused before processing: safe to try elsewhere
        routes = []
        for i in range(10):
            flow = await settle(h, await h.stub.Withhold(withhold(card, 2_000 + i * 100), metadata=h.md()))
            assert flow.status == pb.SUCCEEDED and flow.channel == "wx", flow
            routes.append([a.channel for a in flow.attempts])
            for failed in flow.attempts[:-1]:
                assert failed.safe_elsewhere and failed.status == pb.ATTEMPT_FAILED
        assert routes[0] == ["sbx", "ali", "wx"], routes
        one_debit_each(h)


async def test_pending_settles_by_notify_and_by_query(db_config: DatabaseConfig) -> None:
    behaviours = {
        "ali": Behaviour(settle_after_ms=(300, 500), timeout_hold_s=3.0),
        "wx": Behaviour(settle_after_ms=(300, 500), timeout_hold_s=3.0),
    }
    # the first poll comes 2 s after a PENDING answer, so the notify (after 0.3-0.5 s) settles the first flow
    poller = {"interval_s": 0.1, "first_delay_s": 2.0, "schedule": [[0.5, 40]]}
    async with running_gateway(db_config, behaviours, adapters=ADAPTERS, poller=poller) as h:
        for channel in ("ali", "wx"):
            card = luhn_card()
            await h.bind_card(card, [channel])
            polls = metrics.POLLS.labels(channel=channel, result="resolved")._value.get()
            verified = metrics.CALLBACKS.labels(channel=channel, result="verified")._value.get()
            by_notify = await h.stub.Withhold(withhold(card, 45_605), metadata=h.md())  # pending, then notify
            by_query = await h.stub.Withhold(withhold(card, 33_307), metadata=h.md())  # debited, answer lost
            assert by_notify.status == pb.PROCESSING and by_query.status == pb.PROCESSING
            assert (await settle(h, by_notify)).status == pb.SUCCEEDED
            assert (await settle(h, by_query)).status == pb.SUCCEEDED
            await counted(metrics.CALLBACKS.labels(channel=channel, result="verified"), verified, "a verified notify")
            await resolved_by_a_poll(channel, polls)
        one_debit_each(h)


async def test_forged_notifies_are_rejected(db_config: DatabaseConfig) -> None:
    behaviours = {"ali": Behaviour(settle_after_ms=(60_000, 60_001)), "wx": Behaviour(settle_after_ms=(60_000, 60_001))}
    async with running_gateway(db_config, behaviours, adapters=ADAPTERS) as h:
        forged = {
            "ali": (
                "notify_type=trade_status_sync&out_trade_no={order}&total_amount=456.05&trade_status=TRADE_SUCCESS"
                "&app_id=2021000000000000&sign_type=RSA2&sign=AAAA",
                {"Content-Type": "application/x-www-form-urlencoded"},
            ),
            "wx": (
                '{"id":"x","event_type":"TRANSACTION.SUCCESS","resource":{"algorithm":"AEAD_AES_256_GCM",'
                '"ciphertext":"AAAA","nonce":"abc","associated_data":"transaction"}}',
                {
                    "Content-Type": "application/json",
                    "Wechatpay-Serial": "X",
                    "Wechatpay-Signature": "AAAA",
                    "Wechatpay-Timestamp": "1700000000",
                    "Wechatpay-Nonce": "n",
                },
            ),
        }
        for channel, (body, headers) in forged.items():
            card = luhn_card()
            await h.bind_card(card, [channel])
            flow = await h.stub.Withhold(withhold(card, 45_605), metadata=h.md())
            assert flow.status == pb.PROCESSING
            bad = metrics.CALLBACKS.labels(channel=channel, result="bad_signature")._value.get()
            url = f"http://127.0.0.1:{h.gateway.http_port}/callbacks/{channel}"
            async with aiohttp.ClientSession() as session:
                text = body.replace("{order}", flow.attempts[0].channel_order_no)
                async with session.post(url, data=text.encode(), headers=headers) as reply:
                    assert reply.status != 200 or (await reply.read()) == b"fail", (channel, reply.status)
                    assert reply.status < 500
            assert metrics.CALLBACKS.labels(channel=channel, result="bad_signature")._value.get() == bad + 1
            again = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())
            assert again.status == pb.PROCESSING and again.attempts[0].status == pb.PENDING
        assert sum(h.debits().values()) == 0


async def test_wechatpay_payout_settles_by_batch_notice_then_query(db_config: DatabaseConfig) -> None:
    """WeChat Pay calls back per batch; the notice says nothing about the transfer, so the gateway queries it."""
    behaviours = {"wx": Behaviour(settle_after_ms=(300, 500))}
    # polls would come after 30 s: the flow settling within seconds is the batch notice's query
    poller = {"interval_s": 0.1, "first_delay_s": 30.0, "schedule": [[30.0, 10]]}
    async with running_gateway(db_config, behaviours, adapters={"wx": "wechatpay"}, poller=poller) as h:
        polls = metrics.POLLS.labels(channel="wx", result="resolved")._value.get()
        flow = await h.stub.Payout(payout(40_005), metadata=h.md())  # accepted, settles after 0.3-0.5 s
        assert flow.status == pb.PROCESSING
        settled = await settle(h, flow, timeout=10.0)
        assert settled.status == pb.SUCCEEDED, settled
        await resolved_by_a_poll("wx", polls)
        one_debit_each(h)


async def test_a_channel_refusing_our_credentials_is_held_until_fixed(db_config: DatabaseConfig) -> None:
    """A WeChat Pay 401 (merchant key no longer accepted): failover, a metric, and no new flows to the channel."""
    behaviours = {"wx": Behaviour(), "sbx": Behaviour()}
    routing = {"exploration": 0, "elimination_consecutive": 100}  # ties in configuration order: wx first
    async with running_gateway(
        db_config, behaviours, adapters={"wx": "wechatpay", "sbx": "sandbox"}, routing=routing
    ) as h:
        assert h.admin is not None
        both, wx_only = luhn_card(), luhn_card()
        await h.bind_card(both, ["wx", "sbx"])
        await h.bind_card(wx_only, ["wx"])
        sim = h.sims["wx"]
        configured_key = sim.merchant_key
        sim.merchant_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # rotated on their side
        refused = metrics.CHANNEL_CREDENTIALS_REJECTED.labels(channel="wx")._value.get()

        first = await settle(h, await h.stub.Withhold(withhold(both, 12_300), metadata=h.md()))
        assert first.status == pb.SUCCEEDED and first.channel == "sbx", first
        wx_attempt = first.attempts[0]
        assert (wx_attempt.channel, wx_attempt.status, wx_attempt.code) == (
            "wx",
            pb.ATTEMPT_FAILED,
            "CREDENTIALS_REJECTED",
        )
        assert wx_attempt.safe_elsewhere and wx_attempt.raw_code == "SIGN_ERROR"
        assert metrics.CHANNEL_CREDENTIALS_REJECTED.labels(channel="wx")._value.get() == refused + 1

        # held: new flows are not routed to it, and say why
        second = await settle(h, await h.stub.Withhold(withhold(both, 12_400), metadata=h.md()))
        assert [a.channel for a in second.attempts] == ["sbx"]
        assert {r.channel: r.filter for r in second.attempts[0].decision.rejected}.get("wx") == "state"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.stub.Withhold(withhold(wx_only, 12_500), metadata=h.md())
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        # fixed on their side; the operator enables the channel and it is used again
        sim.merchant_key = configured_key
        await h.admin.SetChannelState(
            admin_pb2.SetChannelStateRequest(channel="wx", state=admin_pb2.ENABLED, reason="merchant key re-uploaded"),
            metadata=h.op_md,
        )
        third = await settle(h, await h.stub.Withhold(withhold(wx_only, 12_600), metadata=h.md()))
        assert third.status == pb.SUCCEEDED and third.channel == "wx", third
        assert sim.ledger.debit_count(wx_attempt.channel_order_no) == 0  # the refused order never executed
        one_debit_each(h)
