"""WeChat Pay v3 over HTTP on 127.0.0.1: adapter <-> simulator, SDK client <-> simulator, callbacks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from wechatpayv3.core import Core
from wechatpayv3.type import RequestType

from channels.contract import (
    ChannelRejected,
    Operation,
    OrderRef,
    OutcomeStatus,
    PayoutOrder,
    RefundOrder,
    SignRequest,
    WithholdOrder,
)
from channels.registry import ChannelSpec
from channels.simkit import Behaviour
from channels.wechatpay import wire
from channels.wechatpay.adapter import WeChatPayChannel, build
from channels.wechatpay.simulator import WeChatPaySimulator, _pem_private, create
from tests.conformance.receiver import Receiver, start_receiver

OPENID = "o-MYE42l80oelYMDE34nYD456Xoy"
CARD = "6222020000007777"


@dataclass
class Setup:
    sim: WeChatPaySimulator
    channel: WeChatPayChannel
    receiver: Receiver
    notify_url: str
    contract: str


@pytest.fixture()
async def setup() -> AsyncIterator[Setup]:
    receiver, server, notify_url = await start_receiver()
    sim = create(Behaviour(timeout_hold_s=2.0, settle_after_ms=(30, 80)), notify_url=notify_url, key_size=1024)
    await sim.start()
    channel = build(ChannelSpec("wx-it", "wechatpay", {**sim.adapter_settings(), "timeout_s": 0.8}))
    receiver.channel = channel
    started = await channel.sign_agreement(SignRequest("S1", CARD, "Sun Ba", "110101199001011234", "137", "ICBC"))
    contract = (await channel.confirm_agreement(started.sign_ref, sim.sms_code(started.sign_ref))).agreement_ref
    try:
        yield Setup(sim, channel, receiver, notify_url, contract)
    finally:
        await channel.stop()
        await sim.stop()
        await server.stop()


def _withhold(s: Setup, no: str, amount: int) -> WithholdOrder:
    return WithholdOrder(no, amount, "CNY", s.contract, CARD, "ICBC")


def _sdk(sim: WeChatPaySimulator, *, key: rsa.RSAPrivateKey | None = None) -> Core:
    core = Core(
        mchid=sim.mchid,
        cert_serial_no=sim.merchant_serial_no,
        private_key=_pem_private(key or sim.merchant_key),
        apiv3_key=sim.apiv3_key,
        public_key=sim.platform_public_key_pem(),
        public_key_id=sim.platform_serial,
        timeout=5,
    )
    core._gate_way = sim.base_url
    return core


async def test_withhold_payout_refund_query_round_trip(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    s = setup
    paid = await s.channel.withhold(_withhold(s, "W1", 12_345))
    assert paid.status is OutcomeStatus.SUCCEEDED and paid.amount == 12_345
    assert s.sim.ledger.balance(CARD) == s.sim.ledger.default_balance - 12_345
    out = await s.channel.payout(PayoutOrder("P1", 50_000, "CNY", OPENID, "Zhou Jiu", ""))
    assert out.status is OutcomeStatus.SUCCEEDED and out.amount == 50_000
    back = await s.channel.refund(RefundOrder("R1", "W1", paid.channel_txn_id, 2_345, 12_345, "CNY"))
    assert back.status is OutcomeStatus.SUCCEEDED and back.amount == 2_345
    assert (await s.channel.query(OrderRef("R1", Operation.REFUND, 2_345, "CNY"))).status is OutcomeStatus.SUCCEEDED
    frozen = await s.channel.payout(PayoutOrder("P2", 1_002, "CNY", OPENID, "Zhou Jiu", ""))
    assert frozen.status is OutcomeStatus.FAILED and frozen.payer_attributable and frozen.code == "ACCOUNT_FROZEN"
    missing = await s.channel.query(OrderRef("R404", Operation.REFUND, 1, "CNY"))
    assert missing.status is OutcomeStatus.PENDING and missing.not_found
    assert "W1" in caplog.text  # outcomes are logged
    assert CARD not in caplog.text and OPENID not in caplog.text  # account numbers are not


async def test_pending_settles_by_callback_and_by_query(setup: Setup) -> None:
    s = setup
    accepted = await s.channel.withhold(_withhold(s, "W5", 20_005))
    assert accepted.status is OutcomeStatus.PENDING
    notice = await s.receiver.notice_for("W5")
    assert (notice.operation, notice.outcome.status, notice.amount) == (
        Operation.WITHHOLD,
        OutcomeStatus.SUCCEEDED,
        20_005,
    )
    assert (await s.channel.query(OrderRef("W5", Operation.WITHHOLD, 20_005, "CNY"))).status is OutcomeStatus.SUCCEEDED
    out = await s.channel.payout(PayoutOrder("P6", 20_006, "CNY", OPENID, "Zhou Jiu", ""))
    assert out.status is OutcomeStatus.PENDING
    # the platform calls back per batch, which says the batch ended, not how its transfer did: query it
    notice = await s.receiver.notice_for("P6")
    assert (notice.operation, notice.outcome.status, notice.amount) == (Operation.PAYOUT, OutcomeStatus.PENDING, 20_006)
    assert notice.outcome.raw_code == "FINISHED"
    _, raw = s.receiver.raw[-1]
    assert json.loads(raw)["event_type"] == "MCHTRANSFER.BATCH.FINISHED"
    settled = await s.channel.query(OrderRef("P6", Operation.PAYOUT, 20_006, "CNY"))
    assert settled.status is OutcomeStatus.FAILED
    assert s.sim.ledger.debit_count("P6") == 0


async def test_forged_callbacks_are_rejected(setup: Setup) -> None:
    s = setup
    await s.channel.withhold(_withhold(s, "W7", 30_000))
    entry = s.sim.ledger.get("W7")
    assert entry is not None
    body = s.sim.callback_body(entry)
    headers = s.sim.callback_headers(body)
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    forged_headers = {**headers, **wire.sign_message(body, key=impostor, serial=s.sim.platform_serial)}
    async with aiohttp.ClientSession() as http:
        async with http.post(s.notify_url, data=body, headers=forged_headers) as reply:
            assert reply.status >= 400 and (await reply.json())["code"] == "FAIL"
        async with http.post(s.notify_url, data=body.replace('"id":"', '"id":"X'), headers=headers) as reply:
            assert reply.status >= 400
        async with http.post(s.notify_url, data=body, headers=headers) as reply:
            assert reply.status == 204
    assert s.receiver.rejected == 2
    assert [n.channel_order_no for n in s.receiver.notices] == ["W7"]


async def test_sdk_decrypts_the_simulators_callbacks(setup: Setup) -> None:
    s = setup
    await s.channel.withhold(_withhold(s, "W8", 40_005))
    await s.receiver.notice_for("W8")
    headers, body = s.receiver.raw[-1]
    result = _sdk(s.sim).callback(headers, body)
    assert result["resource"]["out_trade_no"] == "W8"
    assert result["resource"]["trade_state"] == "SUCCESS"


async def test_the_sdk_client_talks_to_the_simulator(setup: Setup) -> None:
    s = setup
    paid = await s.channel.withhold(_withhold(s, "W9", 8_888))
    sdk = _sdk(s.sim)
    # The simulator checks the SDK's Authorization; the SDK checks the simulator's signature.
    code, text = await asyncio.to_thread(sdk.request, f"/v3/pay/transactions/out-trade-no/W9?mchid={s.sim.mchid}")
    assert code == 200 and json.loads(text)["trade_state"] == "SUCCESS"
    refund = {
        "out_refund_no": "R9",
        "transaction_id": paid.channel_txn_id,
        "amount": {"refund": 888, "total": 8_888, "currency": "CNY"},
    }
    code, text = await asyncio.to_thread(sdk.request, "/v3/refund/domestic/refunds", RequestType.POST, refund)
    assert code == 200 and json.loads(text)["status"] == "SUCCESS"
    code, text = await asyncio.to_thread(sdk.request, "/v3/merchant/fund/balance/BASIC")
    assert json.loads(text)["available_amount"] == s.sim.ledger.merchant_balance
    impostor = _sdk(s.sim, key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    code, text = await asyncio.to_thread(impostor.request, "/v3/merchant/fund/balance/BASIC")
    assert code == 401 and json.loads(text)["code"] == "SIGN_ERROR"


async def test_transport_failures_and_contracts(setup: Setup) -> None:
    s = setup
    s.sim.behaviour.update({"outage": True})
    busy = await s.channel.withhold(_withhold(s, "W10", 1_000))
    assert busy.status is OutcomeStatus.FAILED and busy.safe_elsewhere
    assert s.sim.ledger.get("W10") is None
    s.sim.behaviour.update({"outage": False})
    five = await s.channel.withhold(_withhold(s, "W11", 1_008))
    assert five.status is OutcomeStatus.PENDING and five.code == "HTTP_5XX"
    unreachable = build(
        ChannelSpec("wx-down", "wechatpay", {**s.sim.adapter_settings(), "base_url": "http://127.0.0.1:9"})
    )
    try:
        refused = await unreachable.withhold(_withhold(s, "W12", 1_000))
    finally:
        await unreachable.stop()
    assert refused.status is OutcomeStatus.FAILED and refused.safe_elsewhere and refused.code == "CONNECTION_FAILED"
    await s.channel.revoke_agreement(s.contract)
    revoked = await s.channel.withhold(_withhold(s, "W13", 1_000))
    assert revoked.status is OutcomeStatus.FAILED and revoked.payer_attributable
    with pytest.raises(ChannelRejected):
        await s.channel.revoke_agreement(s.contract)


async def test_the_simulator_answers_like_the_platform(setup: Setup) -> None:
    """An unverifiable request is answered 401 unsigned; a payout is called back per batch (the SDK decrypts it)."""
    s = setup
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": 'WECHATPAY2-SHA256-RSA2048 mchid="1",nonce_str="n",signature="x",timestamp="1"'}
        async with http.get(f"{s.sim.base_url}/v3/merchant/fund/balance/BASIC", headers=headers) as reply:
            assert reply.status == 401 and (await reply.json())["code"] == "SIGN_ERROR"
            assert "Wechatpay-Signature" not in reply.headers
    await s.channel.payout(PayoutOrder("P30", 30_005, "CNY", OPENID, "Zhou Jiu", ""))  # pending, then the batch ends
    await s.receiver.notice_for("P30")
    callback_headers, body = s.receiver.raw[-1]
    envelope = json.loads(body)
    assert envelope["event_type"] == "MCHTRANSFER.BATCH.FINISHED"
    assert (envelope["resource"]["original_type"], envelope["resource"]["associated_data"]) == ("mch_payment", "")
    resource = _sdk(s.sim).callback(callback_headers, body)["resource"]
    assert {k: resource[k] for k in ("out_batch_no", "batch_status", "total_num", "total_amount", "success_num")} == {
        "out_batch_no": "P30",
        "batch_status": "FINISHED",
        "total_num": 1,
        "total_amount": 30_005,
        "success_num": 1,
    }
    assert "out_detail_no" not in resource  # no per-transfer callback


async def test_order_numbers_with_the_characters_v3_allows(setup: Setup) -> None:
    """``*``, ``@`` and ``|`` are allowed in v3 order numbers; the simulator checks the signature over the raw path."""
    s = setup
    paid = await s.channel.withhold(_withhold(s, "W*40@1|a", 4_000))
    assert paid.status is OutcomeStatus.SUCCEEDED, paid
    assert (await s.channel.query(OrderRef("W*40@1|a", Operation.WITHHOLD, 4_000, "CNY"))).status is (
        OutcomeStatus.SUCCEEDED
    )
    back = await s.channel.refund(RefundOrder("R|40*", "W*40@1|a", paid.channel_txn_id, 1_000, 4_000, "CNY"))
    assert back.status is OutcomeStatus.SUCCEEDED
    assert (await s.channel.query(OrderRef("R|40*", Operation.REFUND, 1_000, "CNY"))).status is OutcomeStatus.SUCCEEDED
