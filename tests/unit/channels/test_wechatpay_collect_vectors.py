"""The WeChat Pay cashiers (collect orders) against wechatpayv3 and the published v3 API, not our wire module.

Sources, per test:

* Native / H5 / JSAPI 下单: the documented request fields (``appid``,
  ``mchid``, ``description``, ``out_trade_no``, ``time_expire`` in RFC 3339
  "2018-06-08T10:34:56+08:00", ``notify_url``, ``amount``; H5 ``scene_info``
  with ``payer_client_ip`` and ``h5_info``; JSAPI ``payer.openid``) and the
  documented answers (``code_url`` "weixin://wxpay/bizpayurl?pr=p4lpSuKzz",
  ``h5_url`` "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id=...",
  ``prepay_id`` "wx201410272009395522657a690389285100"), signed with the SDK's
  ``utils.rsa_sign``; paths as the SDK's ``transaction.pay`` builds them;
* JSAPI 调起支付: ``paySign`` is SHA256withRSA over
  "appId\\ntimeStamp\\nnonceStr\\npackage\\n", ``signType`` RSA: the SDK's
  ``Core.sign([appId, timeStamp, nonceStr, package])`` computes the same;
* 支付通知: the documented decrypted resource, ``trade_type`` changed from the
  example's MICROPAY to the cashier's and ``mchid`` to ours, decrypted by the
  SDK's ``Core.callback`` before the adapter sees it.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from wechatpayv3 import utils as sdk_utils
from wechatpayv3.core import Core

from channels.contract import (
    AWAITING_PAYMENT,
    CashierKind,
    CollectOrder,
    Operation,
    OutcomeStatus,
    PayerHints,
)
from tests.unit.channels.platform_double import Reply, platform
from tests.unit.channels.sdk_side import MCHID, PLATFORM_ID, Keys, wechatpay_channel
from tests.unit.channels.test_wechatpay_sdk_compat import _sdk_callback
from tests.unit.channels.test_wechatpay_vectors import _signature_verifies

APPID = "wxd678efh567hg6787"
EXPIRES = datetime(2018, 6, 8, 2, 34, 56, tzinfo=UTC)  # the documented 2018-06-08T10:34:56+08:00
NOTIFY = "https://www.weixin.qq.com/wxpay/pay.php"
DOCUMENTED = {
    CashierKind.QR: ("/v3/pay/transactions/native", {"code_url": "weixin://wxpay/bizpayurl?pr=p4lpSuKzz"}),
    CashierKind.H5: (
        "/v3/pay/transactions/h5",
        {
            "h5_url": "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb"
            "?prepay_id=wx2916263004719461949c84457c735b0000&package=2150917749"
        },
    ),
    CashierKind.IN_APP: ("/v3/pay/transactions/jsapi", {"prepay_id": "wx201410272009395522657a690389285100"}),
}


def _order(kind: CashierKind, hints: PayerHints | None = None) -> CollectOrder:
    return CollectOrder(
        "1217752501201407033233368018",
        100,
        "CNY",
        kind,
        EXPIRES,
        description="Image形象店-深圳腾大-QQ公仔",
        notify_url=NOTIFY,
        payer=hints or PayerHints(openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", client_ip="14.23.150.211"),
    )


def _platform_answer(keys: Keys, body: dict[str, Any]) -> Reply:
    """A 200 answer signed with the SDK's signer, as the platform signs: TIMESTAMP\\nNONCE\\nBODY\\n."""
    text = json.dumps(body)
    ts, nonce = str(int(time.time())), "593BEC0C930BF1AFEB40B4A08C8FB242"
    headers = {
        "Wechatpay-Timestamp": ts,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": sdk_utils.rsa_sign(keys["platform"], f"{ts}\n{nonce}\n{text}\n"),
        "Wechatpay-Serial": PLATFORM_ID,
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
    }
    return Reply(200, text, headers)


@pytest.mark.parametrize("kind", list(CashierKind))
async def test_prepay_request_and_the_cashier_it_opens(keys: Keys, sdk: Core, kind: CashierKind) -> None:
    path, answer = DOCUMENTED[kind]
    async with platform(lambda seen: _platform_answer(keys, answer)) as p:
        async with wechatpay_channel(keys, p.url) as channel:
            started = await channel.create_collect(_order(kind))
    seen = p.received[0]
    assert (seen.method, seen.raw_path) == ("POST", path)
    assert _signature_verifies(keys, seen)  # over the request line and body as they arrived
    body = json.loads(seen.body)
    expected: dict[str, Any] = {
        "appid": APPID,
        "mchid": MCHID,
        "description": "Image形象店-深圳腾大-QQ公仔",
        "out_trade_no": "1217752501201407033233368018",
        "time_expire": "2018-06-08T10:34:56+08:00",
        "notify_url": NOTIFY,
        "amount": {"total": 100, "currency": "CNY"},
    }
    if kind is CashierKind.H5:
        expected["scene_info"] = {"payer_client_ip": "14.23.150.211", "h5_info": {"type": "Wap"}}
    if kind is CashierKind.IN_APP:
        expected["payer"] = {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}
    assert body == expected
    assert (started.outcome.status, started.outcome.code) == (OutcomeStatus.PENDING, AWAITING_PAYMENT)
    cashier = started.cashier
    assert cashier is not None and cashier.kind is kind
    if kind is CashierKind.QR:
        assert cashier.qr_code == answer["code_url"]
    elif kind is CashierKind.H5:
        assert cashier.url == answer["h5_url"]
    else:
        _check_jsapi_params(keys, sdk, dict(cashier.sdk_params), answer["prepay_id"])


def _check_jsapi_params(keys: Keys, sdk: Core, params: dict[str, str], prepay_id: str) -> None:
    assert set(params) == {"appId", "timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert (params["appId"], params["package"], params["signType"]) == (APPID, f"prepay_id={prepay_id}", "RSA")
    signed = [params["appId"], params["timeStamp"], params["nonceStr"], params["package"]]
    assert sdk.sign(signed) == params["paySign"]  # the SDK's signer gives the same signature
    message = "".join(f"{part}\n" for part in signed).encode()
    keys["merchant"].public_key().verify(  # the platform checks it with the merchant's public key
        base64.b64decode(params["paySign"]), message, padding.PKCS1v15(), hashes.SHA256()
    )


@pytest.mark.parametrize(
    ("kind", "hints", "missing"),
    [
        (CashierKind.H5, PayerHints(openid="o-1"), "client_ip"),
        (CashierKind.IN_APP, PayerHints(client_ip="1.2.3.4"), "openid"),
    ],
)
async def test_a_cashier_without_its_payer_hint_is_refused_before_sending(
    keys: Keys, kind: CashierKind, hints: PayerHints, missing: str
) -> None:
    async with platform(lambda seen: Reply(500)) as p:
        async with wechatpay_channel(keys, p.url) as channel:
            started = await channel.create_collect(_order(kind, hints))
    assert p.received == []
    assert (started.outcome.status, started.outcome.raw_code, started.outcome.safe_elsewhere) == (
        OutcomeStatus.FAILED,
        missing,
        True,
    )


async def test_a_5xx_to_prepay_is_pending_without_a_cashier(keys: Keys) -> None:
    error = json.dumps({"code": "SYSTEM_ERROR", "message": "系统错误"}, ensure_ascii=False)
    async with platform(lambda seen: Reply(500, error)) as p:
        async with wechatpay_channel(keys, p.url) as channel:
            started = await channel.create_collect(_order(CashierKind.QR))
    assert len(p.received) == 1
    assert started.outcome.status is OutcomeStatus.PENDING and started.cashier is None


# 支付通知API: the decrypted resource as published (trade_type and mchid changed, promotion_detail left out)
DOCUMENTED_PAYMENT = {
    "transaction_id": "1217752501201407033233368018",
    "amount": {"payer_total": 100, "total": 100, "currency": "CNY", "payer_currency": "CNY"},
    "mchid": MCHID,
    "trade_state": "SUCCESS",
    "bank_type": "CMC",
    "success_time": "2018-06-08T10:34:56+08:00",
    "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
    "out_trade_no": "1217752501201407033233368018",
    "appid": APPID,
    "trade_state_desc": "支付成功",
    "trade_type": "MICROPAY",
    "attach": "自定义数据",
    "scene_info": {"device_id": "013467007045764"},
}


@pytest.mark.parametrize(
    ("trade_type", "operation"),
    [
        ("NATIVE", Operation.COLLECT),
        ("JSAPI", Operation.COLLECT),
        ("MWEB", Operation.COLLECT),
        ("PAP", Operation.WITHHOLD),
    ],
)
def test_a_payment_notification_names_the_kind_of_order(
    keys: Keys, sdk: Core, trade_type: str, operation: Operation
) -> None:
    resource = {**DOCUMENTED_PAYMENT, "trade_type": trade_type}
    headers, body = _sdk_callback(keys, resource)
    assert sdk.callback(headers, body)["resource"] == resource  # genuine: the SDK verifies and decrypts it
    notice = wechatpay_channel(keys).parse_callback(headers, body)
    assert (notice.operation, notice.amount, notice.outcome.status) == (operation, 100, OutcomeStatus.SUCCEEDED)
    assert notice.outcome.channel_txn_id == "1217752501201407033233368018"
