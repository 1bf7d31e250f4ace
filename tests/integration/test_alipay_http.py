"""Alipay over HTTP on 127.0.0.1: adapter <-> simulator, SDK client <-> simulator, notifies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

import aiohttp
import pytest
from alipay import AliPay
from alipay.exceptions import AliPayException
from cryptography.hazmat.primitives.asymmetric import rsa

from channels.alipay import wire
from channels.alipay.adapter import AlipayChannel, build
from channels.alipay.simulator import AlipaySimulator, _pem_private, _pem_public, create
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
from tests.conformance.receiver import Receiver, start_receiver

CARD = "6222020000004321"


@dataclass
class Setup:
    sim: AlipaySimulator
    channel: AlipayChannel
    receiver: Receiver
    notify_url: str
    agreement: str


@pytest.fixture()
async def setup() -> AsyncIterator[Setup]:
    receiver, server, notify_url = await start_receiver()
    sim = create(Behaviour(timeout_hold_s=2.0, settle_after_ms=(30, 80)), notify_url=notify_url, key_size=1024)
    await sim.start()
    channel = build(ChannelSpec("alipay-it", "alipay", {**sim.adapter_settings(), "timeout_s": 0.8}))
    receiver.channel = channel
    started = await channel.sign_agreement(
        SignRequest("S1", CARD, "Wang Wu", "110101199001011234", "13900000000", "ICBC")
    )
    agreement = (await channel.confirm_agreement(started.sign_ref, sim.sms_code(started.sign_ref))).agreement_ref
    try:
        yield Setup(sim, channel, receiver, notify_url, agreement)
    finally:
        await channel.stop()
        await sim.stop()
        await server.stop()


def _withhold(s: Setup, no: str, amount: int) -> WithholdOrder:
    return WithholdOrder(no, amount, "CNY", s.agreement, CARD, "ICBC")


async def test_withhold_payout_refund_query_round_trip(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    s = setup
    paid = await s.channel.withhold(_withhold(s, "W1", 12_345))
    assert paid.status is OutcomeStatus.SUCCEEDED and paid.amount == 12_345
    assert s.sim.ledger.balance(CARD) == s.sim.ledger.default_balance - 12_345
    out = await s.channel.payout(PayoutOrder("P1", 50_000, "CNY", "6222020000009999", "Zhao Liu", "ICBC"))
    assert out.status is OutcomeStatus.SUCCEEDED
    to_wallet = await s.channel.payout(PayoutOrder("P2", 1_000, "CNY", "user@example.com", "Zhao Liu", "ALIPAY"))
    assert to_wallet.status is OutcomeStatus.SUCCEEDED
    back = await s.channel.refund(RefundOrder("R1", "W1", paid.channel_txn_id, 2_345, 12_345, "CNY"))
    assert back.status is OutcomeStatus.SUCCEEDED
    too_much = await s.channel.refund(RefundOrder("R2", "W1", paid.channel_txn_id, 10_001, 12_345, "CNY"))
    assert too_much.status is OutcomeStatus.FAILED and too_much.raw_code == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"
    assert (await s.channel.query(OrderRef("P1", Operation.PAYOUT, 50_000, "CNY"))).amount == 50_000
    assert (await s.channel.query(OrderRef("R1", Operation.REFUND, 2_345, "CNY"))).status is OutcomeStatus.SUCCEEDED
    missing = await s.channel.query(OrderRef("P404", Operation.PAYOUT, 1, "CNY"))
    assert missing.status is OutcomeStatus.PENDING and missing.not_found
    assert "W1" in caplog.text  # outcomes are logged
    assert CARD not in caplog.text and "6222020000009999" not in caplog.text  # account numbers are not


async def test_pending_payout_and_withhold_settle_by_notify(setup: Setup) -> None:
    s = setup
    out = await s.channel.payout(PayoutOrder("P5", 20_005, "CNY", "6222020000008888", "Qian Qi", "ICBC"))
    assert out.status is OutcomeStatus.PENDING
    notice = await s.receiver.notice_for("P5")
    assert (notice.operation, notice.outcome.status, notice.amount) == (
        Operation.PAYOUT,
        OutcomeStatus.SUCCEEDED,
        20_005,
    )
    failing = await s.channel.withhold(_withhold(s, "W6", 20_006))
    assert failing.status is OutcomeStatus.PENDING
    notice = await s.receiver.notice_for("W6")
    assert notice.outcome.status is OutcomeStatus.FAILED
    assert (await s.channel.query(OrderRef("W6", Operation.WITHHOLD, 20_006, "CNY"))).status is OutcomeStatus.FAILED


async def test_forged_notifies_are_rejected_and_not_acknowledged(setup: Setup) -> None:
    s = setup
    await s.channel.withhold(_withhold(s, "W7", 30_000))
    entry = s.sim.ledger.get("W7")
    assert entry is not None
    fields = s.sim.notify_fields(entry)
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    forged_key = wire.sign_notify({**fields, "total_amount": "3000.00"}, impostor)
    genuine_but_changed = {**wire.sign_notify(fields, s.sim.alipay_key), "total_amount": "3000.00"}
    genuine = wire.sign_notify(fields, s.sim.alipay_key)
    async with aiohttp.ClientSession() as http:
        for forged in (forged_key, genuine_but_changed):
            async with http.post(s.notify_url, data=urlencode(forged)) as reply:
                assert await reply.read() != b"success"
        async with http.post(s.notify_url, data=urlencode(genuine)) as reply:
            assert await reply.read() == b"success"
    assert s.receiver.rejected == 2
    assert [n.channel_order_no for n in s.receiver.notices] == ["W7"]


async def test_transport_failures_follow_invariant_3(setup: Setup) -> None:
    s = setup
    s.sim.behaviour.update({"outage": True})
    busy = await s.channel.withhold(_withhold(s, "W8", 40_000))
    assert busy.status is OutcomeStatus.FAILED and busy.safe_elsewhere and busy.code == "CHANNEL_BUSY"
    assert s.sim.ledger.get("W8") is None
    s.sim.behaviour.update({"outage": False})
    settings = {**s.sim.adapter_settings(), "gateway_url": "http://127.0.0.1:9/gateway.do"}
    unreachable = build(ChannelSpec("alipay-down", "alipay", settings))
    try:
        refused = await unreachable.withhold(_withhold(s, "W9", 40_000))
    finally:
        await unreachable.stop()
    assert refused.status is OutcomeStatus.FAILED and refused.safe_elsewhere and refused.code == "CONNECTION_FAILED"
    wrong_key = {
        **s.sim.adapter_settings(),
        "alipay_public_key": _pem_public(rsa.generate_private_key(65537, 1024).public_key()),
    }
    suspicious = build(ChannelSpec("alipay-mitm", "alipay", wrong_key))
    try:
        unverified = await suspicious.withhold(_withhold(s, "W10", 40_000))
    finally:
        await suspicious.stop()
    assert unverified.status is OutcomeStatus.PENDING and unverified.code == "UNVERIFIED_RESPONSE"


async def test_agreement_errors(setup: Setup) -> None:
    s = setup
    started = await s.channel.sign_agreement(SignRequest("S2", CARD, "Wang Wu", "110101199001011234", "139", "ICBC"))
    with pytest.raises(ChannelRejected):
        await s.channel.confirm_agreement(started.sign_ref, "not-the-code")
    await s.channel.revoke_agreement(s.agreement)
    revoked = await s.channel.withhold(_withhold(s, "W11", 1_000))
    assert revoked.status is OutcomeStatus.FAILED and revoked.payer_attributable and revoked.code == "AGREEMENT_INVALID"
    with pytest.raises(ChannelRejected):
        await s.channel.revoke_agreement(s.agreement)


async def test_the_official_sdk_talks_to_the_simulator(setup: Setup) -> None:
    s = setup
    await s.channel.withhold(_withhold(s, "W12", 8_888))
    sdk = AliPay(
        appid=s.sim.app_id,
        app_private_key_string=_pem_private(s.sim.merchant_key),
        alipay_public_key_string=_pem_public(s.sim.alipay_key.public_key()),
    )
    sdk._gateway = f"{s.sim.base_url}/gateway.do"
    # The simulator verifies the SDK's signed GET; the SDK verifies the simulator's signed answer.
    result = await asyncio.to_thread(sdk.api_alipay_trade_query, out_trade_no="W12")
    assert (result["trade_status"], result["total_amount"]) == ("TRADE_SUCCESS", "88.88")
    biz = {"alipay_user_id": s.sim.alipay_user_id, "account_type": "ACCTRANS_ACCOUNT"}
    balance = await asyncio.to_thread(sdk.server_api, "alipay.fund.account.query", biz)
    assert wire.yuan_to_fen(balance["available_amount"]) == s.sim.ledger.merchant_balance
    # like the platform, the simulator refuses the balance query without the merchant's alipay_user_id
    refused = await asyncio.to_thread(sdk.server_api, "alipay.fund.account.query", {"account_type": "ACCTRANS_ACCOUNT"})
    assert (refused["code"], refused["sub_code"]) == ("40004", "INVALID_PARAMETER")
    impostor = AliPay(
        appid=s.sim.app_id,
        app_private_key_string=_pem_private(rsa.generate_private_key(65537, 1024)),
        alipay_public_key_string=_pem_public(s.sim.alipay_key.public_key()),
    )
    impostor._gateway = sdk._gateway
    with pytest.raises(AliPayException, match="invalid-signature"):
        await asyncio.to_thread(impostor.api_alipay_trade_query, out_trade_no="W12")


def _merchant_sdk(sim: AlipaySimulator) -> AliPay:
    sdk = AliPay(
        appid=sim.app_id,
        app_private_key_string=_pem_private(sim.merchant_key),
        alipay_public_key_string=_pem_public(sim.alipay_key.public_key()),
    )
    sdk._gateway = f"{sim.base_url}/gateway.do"
    return sdk


async def test_the_simulator_answers_like_the_platform(setup: Setup) -> None:
    """Checked with the official SDK as the client, not with our adapter."""
    s = setup
    sdk = _merchant_sdk(s.sim)
    paid = await s.channel.withhold(_withhold(s, "W20", 50_000))
    assert paid.status is OutcomeStatus.SUCCEEDED

    # refund: the call that moves the money says fund_change=Y; a repeat of it (or one in progress) says N
    first = await asyncio.to_thread(sdk.api_alipay_trade_refund, "10.00", "W20", out_request_no="R20")
    again = await asyncio.to_thread(sdk.api_alipay_trade_refund, "10.00", "W20", out_request_no="R20")
    slow = await asyncio.to_thread(sdk.api_alipay_trade_refund, "10.05", "W20", out_request_no="R21")  # pending
    assert [r["code"] for r in (first, again, slow)] == ["10000"] * 3
    assert [r["fund_change"] for r in (first, again, slow)] == ["Y", "N", "N"]

    # transfer query by out_biz_no: product_code and biz_scene are required, and must be the transfer's
    await s.channel.payout(PayoutOrder("P20", 1_000, "CNY", "6222020000009999", "Zhao Liu", "ICBC"))
    query = "alipay.fund.trans.common.query"
    bare = await asyncio.to_thread(sdk.server_api, query, {"out_biz_no": "P20"})
    wrong = await asyncio.to_thread(
        sdk.server_api,
        query,
        {"out_biz_no": "P20", "product_code": "TRANS_ACCOUNT_NO_PWD", "biz_scene": "DIRECT_TRANSFER"},
    )
    right = await asyncio.to_thread(
        sdk.server_api,
        query,
        {"out_biz_no": "P20", "product_code": "TRANS_BANKCARD_NO_PWD", "biz_scene": "DIRECT_TRANSFER"},
    )
    assert (bare["code"], bare["sub_code"]) == ("40004", "INVALID_PARAMETER")
    assert wrong["sub_code"] == "ORDER_NOT_EXIST"
    assert (right["code"], right["status"]) == ("10000", "SUCCESS")

    # a bank code where the institution's name belongs is refused
    transfer = {
        "out_biz_no": "P21",
        "trans_amount": "1.00",
        "product_code": "TRANS_BANKCARD_NO_PWD",
        "biz_scene": "DIRECT_TRANSFER",
        "payee_info": {
            "identity": "6222020000009999",
            "identity_type": "BANKCARD_ACCOUNT",
            "name": "Zhao Liu",
            "bankcard_ext_info": {"account_type": "2", "inst_name": "ICBC"},
        },
    }
    coded = await asyncio.to_thread(sdk.server_api, "alipay.fund.trans.uni.transfer", transfer)
    assert coded["sub_code"] == "INVALID_PARAMETER" and s.sim.ledger.get("P21") is None

    # an unknown app id is refused unsigned, which the SDK reports as an exception carrying the raw answer
    stranger = _merchant_sdk(s.sim)
    stranger._appid = "2021000000000999"
    with pytest.raises(AliPayException, match=r"isv\.invalid-app-id"):
        await asyncio.to_thread(stranger.api_alipay_trade_query, out_trade_no="W20")


async def test_notifies_carry_empty_fields_the_sdk_verifies(setup: Setup) -> None:
    s = setup
    await s.channel.withhold(_withhold(s, "W22", 30_005))  # pending, then a notify
    await s.receiver.notice_for("W22")
    _headers, body = s.receiver.raw[-1]
    fields = dict(parse_qsl(body.decode(), keep_blank_values=True))
    assert fields["passback_params"] == ""
    signature = fields.pop("sign")
    assert _merchant_sdk(s.sim).verify(fields, signature)  # the SDK's verification keeps key= for it
