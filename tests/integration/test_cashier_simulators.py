"""The Alipay and WeChat Pay simulators' cashiers, with the official SDKs as the merchant's client.

The simulators must refuse what the platforms refuse and send what they send,
so these tests drive them with python-alipay-sdk and wechatpayv3, not with our
adapters: the SDK creates the order, the test plays the borrower over the
simulator's admin routes (HTTP, as the demo does), the SDK verifies the
simulator's notifications and answers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web
from wechatpayv3 import WeChatPay, WeChatPayType

from channels.alipay import wire as alipay_wire
from channels.alipay.simulator import AlipaySimulator
from channels.alipay.simulator import create as create_alipay
from channels.contract import CashierKind, CollectOrder
from channels.registry import ChannelSpec
from channels.sandbox.adapter import build as build_sandbox
from channels.sandbox.simulator import create as create_sandbox
from channels.simkit import Behaviour, HttpServer, pem_private
from channels.wechatpay.simulator import WeChatPaySimulator
from channels.wechatpay.simulator import create as create_wechatpay
from tests.integration.test_alipay_http import _merchant_sdk


def ten_minutes_from_now() -> datetime:
    """An order's expiry in China time, read when the test runs (not when the module was collected: a long
    run reaches these tests more than ten minutes later, and the simulators then refuse the expired orders)."""
    return (datetime.now(UTC) + timedelta(minutes=10)).astimezone(alipay_wire.CHINA_TZ)


@dataclass
class Sink:
    """The merchant's notify endpoint: keeps each notification as it arrived, acknowledges it."""

    url: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        return web.Response(text="success")  # Alipay's acknowledgement; WeChat Pay takes any 200

    async def next(self) -> tuple[dict[str, str], bytes]:
        async with asyncio.timeout(5):
            while not self.received:
                await asyncio.sleep(0.02)
        return self.received.pop(0)


@pytest.fixture()
async def sink() -> AsyncIterator[Sink]:
    found = Sink()
    app = web.Application()
    app.router.add_post("/notify", found.handle)
    server = HttpServer(app)
    found.url = f"{await server.start()}/notify"
    try:
        yield found
    finally:
        await server.stop()


async def _admin(sim: Any, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(f"{sim.base_url}{path}", json=body) as response:
        return response.status, await response.json()


# --- Alipay --------------------------------------------------------------------------------------


@pytest.fixture()
async def alipay(sink: Sink) -> AsyncIterator[AlipaySimulator]:
    sim = create_alipay(Behaviour(), notify_url=sink.url, key_size=1024)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def test_alipay_precreate_by_the_sdk_is_paid_by_scanning(alipay: AlipaySimulator) -> None:
    china_expiry = ten_minutes_from_now()
    sdk = _merchant_sdk(alipay)
    expiry = alipay_wire.china_time(china_expiry)
    answer = await asyncio.to_thread(
        sdk.api_alipay_trade_precreate, "repayment", "QR-SDK-1", "88.00", time_expire=expiry
    )
    assert answer["code"] == "10000" and answer["qr_code"].startswith("https://qr.alipay.com/")
    again = await asyncio.to_thread(
        sdk.api_alipay_trade_precreate, "repayment", "QR-SDK-1", "88.00", time_expire=expiry
    )
    assert again["qr_code"] == answer["qr_code"]  # a repeat of the same order: the same code
    before = await asyncio.to_thread(sdk.api_alipay_trade_query, out_trade_no="QR-SDK-1")
    assert before["sub_code"] == "ACQ.TRADE_NOT_EXIST"  # no trade until the payer scans
    status, paid = await _admin(
        alipay, "/_admin/cashier/pay", {"cashier": {"kind": "qr", "qr_code": answer["qr_code"]}}
    )
    assert status == 200 and paid["amount"] == 8_800
    after = await asyncio.to_thread(sdk.api_alipay_trade_query, out_trade_no="QR-SDK-1")
    assert (after["trade_status"], after["total_amount"], after["trade_no"]) == (
        "TRADE_SUCCESS",
        "88.00",
        paid["txn_id"],
    )
    closed = await asyncio.to_thread(sdk.api_alipay_trade_close, out_trade_no="QR-SDK-1")
    assert closed["sub_code"] == "ACQ.TRADE_STATUS_ERROR"  # a paid trade is not closable
    assert alipay.ledger.paid_total("QR-SDK-1") == 8_800


async def test_alipay_wap_order_string_from_the_sdk_opens_in_the_browser(alipay: AlipaySimulator, sink: Sink) -> None:
    china_expiry = ten_minutes_from_now()
    sdk = _merchant_sdk(alipay)
    order_string = sdk.api_alipay_trade_wap_pay(
        "repayment",
        "WAP-SDK-1",
        "12.34",
        notify_url=sink.url,
        time_expire=alipay_wire.china_time(china_expiry),
        product_code="QUICK_WAP_WAY",
    )
    async with aiohttp.ClientSession() as session, session.get(f"{sdk._gateway}?{order_string}") as page:
        assert page.status == 200 and "Alipay cashier" in await page.text()  # the payer's browser opens it
    status, _ = await _admin(alipay, "/_admin/cashier/pay", {"order_no": "WAP-SDK-1"})
    assert status == 200
    notify = dict(parse_qsl((await sink.next())[1].decode(), keep_blank_values=True))
    signature = notify.pop("sign")
    assert sdk.verify(notify, signature)  # the merchant's SDK calls the simulator's notify genuine
    assert (notify["out_trade_no"], notify["trade_status"], notify["total_amount"]) == (
        "WAP-SDK-1",
        "TRADE_SUCCESS",
        "12.34",
    )


async def test_alipay_refuses_a_tampered_or_expired_order_string(alipay: AlipaySimulator) -> None:
    china_expiry = ten_minutes_from_now()
    sdk = _merchant_sdk(alipay)
    genuine = sdk.api_alipay_trade_app_pay(
        "repayment", "APP-SDK-1", "12.34", time_expire=alipay_wire.china_time(china_expiry)
    )
    tampered = genuine.replace("12.34", "0.01")
    status, refused = await _admin(
        alipay, "/_admin/cashier/pay", {"cashier": {"kind": "in_app", "order_string": tampered}}
    )
    assert (status, refused["error"]) == (409, "BAD_SIGNATURE")
    past = alipay_wire.china_time(datetime.now(UTC) - timedelta(minutes=1))
    stale = sdk.api_alipay_trade_app_pay("repayment", "APP-SDK-2", "12.34", time_expire=past)
    status, refused = await _admin(
        alipay, "/_admin/cashier/pay", {"cashier": {"kind": "in_app", "order_string": stale}}
    )
    assert (status, refused["error"]) == (409, "ORDER_EXPIRED")  # 订单参数异常: no trade after time_expire
    status, paid = await _admin(alipay, "/_admin/cashier/pay", {"cashier": {"kind": "in_app", "order_string": genuine}})
    assert status == 200 and paid["amount"] == 1_234
    assert alipay.ledger.paid_total("APP-SDK-2") == 0 and alipay.ledger.get("APP-SDK-2") is None


# --- WeChat Pay ----------------------------------------------------------------------------------


@pytest.fixture()
async def wechat(sink: Sink) -> AsyncIterator[WeChatPaySimulator]:
    sim = create_wechatpay(Behaviour(), notify_url=sink.url, key_size=1024)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def _wechat_sdk(sim: WeChatPaySimulator, kind: WeChatPayType, notify_url: str) -> WeChatPay:
    sdk = WeChatPay(
        wechatpay_type=kind,
        mchid=sim.mchid,
        private_key=pem_private(sim.merchant_key),
        cert_serial_no=sim.merchant_serial_no,
        appid=sim.appid,
        apiv3_key=sim.apiv3_key,
        notify_url=notify_url,
        public_key=sim.platform_public_key_pem(),
        public_key_id=sim.platform_serial,
        timeout=5,
    )
    sdk._core._gate_way = sim.base_url
    return sdk


async def test_wechat_jsapi_by_the_sdk_is_paid_with_the_sdks_pay_sign(wechat: WeChatPaySimulator, sink: Sink) -> None:
    china_expiry = ten_minutes_from_now()
    sdk = _wechat_sdk(wechat, WeChatPayType.JSAPI, sink.url)
    expiry = china_expiry.isoformat(timespec="seconds")
    code, text = await asyncio.to_thread(
        sdk.pay, "repayment", "JS-SDK-1", {"total": 5_000}, payer={"openid": "o-1"}, time_expire=expiry
    )
    assert code == 200
    prepay_id = json.loads(text)["prepay_id"]
    missing = await asyncio.to_thread(sdk.pay, "repayment", "JS-SDK-2", {"total": 5_000}, payer={"x": 1})
    assert missing[0] == 400  # JSAPI without the payer's openid is refused
    timestamp, nonce = "1414561699", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"
    package = f"prepay_id={prepay_id}"
    params = {
        "appId": wechat.appid,
        "timeStamp": timestamp,
        "nonceStr": nonce,
        "package": package,
        "signType": "RSA",
        "paySign": sdk.sign([wechat.appid, timestamp, nonce, package]),
    }
    forged = {**params, "paySign": sdk.sign([wechat.appid, timestamp, "OTHER", package])}
    status, refused = await _admin(wechat, "/_admin/cashier/pay", {"cashier": {"kind": "in_app", "sdk_params": forged}})
    assert (status, refused["error"]) == (409, "BAD_SIGNATURE")  # WeChat checks paySign before it pays
    status, paid = await _admin(wechat, "/_admin/cashier/pay", {"cashier": {"kind": "in_app", "sdk_params": params}})
    assert status == 200 and paid["amount"] == 5_000
    headers, body = await sink.next()
    resource = sdk.callback(headers, body)["resource"]  # the SDK verifies and decrypts the simulator's callback
    assert (resource["out_trade_no"], resource["trade_state"], resource["trade_type"]) == (
        "JS-SDK-1",
        "SUCCESS",
        "JSAPI",
    )
    code, text = await asyncio.to_thread(sdk.close, "JS-SDK-1")
    assert (code, json.loads(text)["code"]) == (400, "ORDERPAID")


async def test_wechat_native_by_the_sdk_closes_unpaid_and_refuses_a_late_payment(
    wechat: WeChatPaySimulator, sink: Sink
) -> None:
    china_expiry = ten_minutes_from_now()
    sdk = _wechat_sdk(wechat, WeChatPayType.NATIVE, sink.url)
    code, text = await asyncio.to_thread(
        sdk.pay, "repayment", "NT-SDK-1", {"total": 900}, time_expire=china_expiry.isoformat(timespec="seconds")
    )
    assert code == 200
    code_url = json.loads(text)["code_url"]
    assert code_url.startswith("weixin://wxpay/bizpayurl?pr=")
    again = await asyncio.to_thread(
        sdk.pay, "repayment", "NT-SDK-1", {"total": 900}, time_expire=china_expiry.isoformat(timespec="seconds")
    )
    assert json.loads(again[1])["code_url"] == code_url
    other = await asyncio.to_thread(sdk.pay, "repayment", "NT-SDK-1", {"total": 901})
    assert (other[0], json.loads(other[1])["code"]) == (400, "OUT_TRADE_NO_USED")
    code, text = await asyncio.to_thread(sdk.query, out_trade_no="NT-SDK-1")
    assert json.loads(text)["trade_state"] == "NOTPAY"
    code, _ = await asyncio.to_thread(sdk.close, "NT-SDK-1")
    assert code == 204
    status, refused = await _admin(wechat, "/_admin/cashier/pay", {"cashier": {"kind": "qr", "qr_code": code_url}})
    assert (status, refused["error"]) == (409, "ORDER_CLOSED")
    code, text = await asyncio.to_thread(sdk.query, out_trade_no="NT-SDK-1")
    assert json.loads(text)["trade_state"] == "CLOSED"
    assert wechat.ledger.paid_total("NT-SDK-1") == 0


# --- the sandbox bank ----------------------------------------------------------------------------


async def test_the_sandbox_cashier_page_opens_only_with_the_banks_seal() -> None:
    sim = create_sandbox(Behaviour())
    await sim.start()
    try:
        async with build_sandbox(ChannelSpec("sbx", "sandbox", sim.adapter_settings())) as channel:
            expires_at = datetime.now(UTC) + timedelta(minutes=5)
            started = await channel.create_collect(CollectOrder("SBX-PAGE-1", 4_200, "CNY", CashierKind.QR, expires_at))
        assert started.cashier is not None
        async with aiohttp.ClientSession() as session:
            async with session.get(started.cashier.qr_code) as page:
                assert page.status == 200 and "42.00 CNY" in await page.text()
            forged = started.cashier.qr_code.replace("token=", "token=0")
            async with session.get(forged) as page:
                assert page.status == 404
        assert sim.cashiers.opened("SBX-PAGE-1") and sim.ledger.paid_total("SBX-PAGE-1") == 0
    finally:
        await sim.stop()
