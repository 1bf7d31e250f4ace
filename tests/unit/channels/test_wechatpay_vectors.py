"""The WeChat Pay adapter against requests, answers and callbacks that do not come from ``channels/wechatpay/wire.py``.

Vectors come from the wechatpayv3 SDK's code paths (``utils.rsa_sign``,
``Core.callback``, which also decrypts the resource) and the published v3
documentation, and are served by a stand-in platform that shares no code with
our wire module or simulator (``platform_double``). Sources, per test:

* batch callbacks: 商家转账批次回调通知 (MCHTRANSFER.BATCH.FINISHED /
  MCHTRANSFER.BATCH.CLOSED), the request body and the decrypted resource
  exactly as documented (``original_type`` ``mch_payment``, empty
  ``associated_data``; only ``mchid`` is ours, the check needs it);
* the request signature: 签名生成 ("HTTP请求方法\\nURL\\n请求时间戳\\n请求随机串\\n请求报文主体\\n",
  URL = the absolute URL without the domain, query included), checked here
  against the request line as it arrived, with ``cryptography``;
* 401: 签名 ("没有携带签名或者签名验证不通过的请求,都不会被执行,并返回401
  Unauthorized"; answers are signed only "对于签名验证成功的请求"), and the
  SDK's ``Core.request`` verifies answer signatures of 2xx answers only.
"""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from wechatpayv3 import utils as sdk_utils
from wechatpayv3.core import Core

from channels.contract import (
    CallbackRejected,
    ChannelRejected,
    Operation,
    OrderRef,
    OutcomeStatus,
    PayoutOrder,
    WithholdOrder,
)
from channels.wechatpay.adapter import WeChatPayChannel
from tests.unit.channels.platform_double import Received, Reply, platform
from tests.unit.channels.sdk_side import (
    APIV3_KEY,
    MCHID,
    PLATFORM_ID,
    Keys,
    wechatpay_channel,
)


def _channel(keys: Keys, base_url: str = "http://127.0.0.1:9") -> WeChatPayChannel:
    return wechatpay_channel(keys, base_url)


# --- 4. batch-level transfer callbacks -----------------------------------------------------------

# 商家转账批次回调通知: the decrypted resource as documented (the CLOSED example; FINISHED has no close_reason)
DOCUMENTED_BATCH = {
    "out_batch_no": "bfatestnotify000033",
    "batch_id": "131000007026709999520922023081519403795655",
    "batch_status": "CLOSED",
    "total_num": 2,
    "total_amount": 200,
    "success_amount": 100,
    "success_num": 1,
    "fail_amount": 100,
    "fail_num": 1,
    "mchid": "2483775951",
    "close_reason": "OVERDUE_CLOSE",
    "update_time": "2023-08-15T20:33:22+08:00",
}


def _documented_callback(keys: Keys, event_type: str, resource: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    """The documented callback: AES-256-GCM with the APIv3 key per the spec, signed with the SDK's rsa_sign."""
    nonce = "G331CyBcibi4"
    sealed = AESGCM(APIV3_KEY.encode()).encrypt(nonce.encode(), json.dumps(resource).encode(), b"")
    body = json.dumps(
        {
            "id": "EV-2018022511223320873",
            "create_time": "2015-05-20T13:29:35+08:00",
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "商家转账批次关闭通知" if event_type.endswith("CLOSED") else "商家转账批次完成通知",
            "resource": {
                "original_type": "mch_payment",
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(sealed).decode(),
                "nonce": nonce,
                "associated_data": "",
            },
        },
        ensure_ascii=False,
    )
    timestamp, header_nonce = str(int(time.time())), "3d980fb850fdce97f6bfb3d248597f16"
    headers = {
        "Wechatpay-Nonce": header_nonce,
        "Wechatpay-Serial": PLATFORM_ID,
        "Wechatpay-Signature": sdk_utils.rsa_sign(keys["platform"], f"{timestamp}\n{header_nonce}\n{body}\n"),
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        "Wechatpay-Timestamp": timestamp,
    }
    return headers, body.encode()


@pytest.mark.parametrize("status", ["FINISHED", "CLOSED"])
def test_a_batch_callback_is_a_payout_notice_that_asks_for_a_query(keys: Keys, sdk: Core, status: str) -> None:
    resource = {**DOCUMENTED_BATCH, "mchid": MCHID, "batch_status": status}
    if status == "FINISHED":
        del resource["close_reason"]
    headers, body = _documented_callback(keys, f"MCHTRANSFER.BATCH.{status}", resource)
    assert sdk.callback(headers, body)["resource"] == resource  # the SDK decrypts and verifies it: genuine
    notice = _channel(keys).parse_callback(headers, body)
    assert (notice.channel_order_no, notice.operation, notice.amount) == ("bfatestnotify000033", Operation.PAYOUT, 200)
    # the batch ended; how its transfer did is not said: PENDING, and the gateway queries the transfer
    assert notice.outcome.status is OutcomeStatus.PENDING
    assert notice.outcome.raw_code == status


def test_a_batch_callback_for_another_merchant_is_rejected(keys: Keys) -> None:
    headers, body = _documented_callback(keys, "MCHTRANSFER.BATCH.CLOSED", DOCUMENTED_BATCH)  # mchid 2483775951
    with pytest.raises(CallbackRejected, match="mchid"):
        _channel(keys).parse_callback(headers, body)


# --- 5a. the signature is over the request line on the wire ---------------------------------------

_AUTH = re.compile(r'(\w+)="([^"]*)"')


def _signature_verifies(keys: Keys, seen: Received) -> bool:
    """Check the Authorization the way the platform does, over the request line as received."""
    schema, _, rest = seen.headers["Authorization"].partition(" ")
    fields = dict(_AUTH.findall(rest))
    assert schema == "WECHATPAY2-SHA256-RSA2048" and fields["mchid"] == MCHID
    message = f"{seen.method}\n{seen.raw_path}\n{fields['timestamp']}\n{fields['nonce_str']}\n{seen.body.decode()}\n"
    try:
        keys["merchant"].public_key().verify(
            base64.b64decode(fields["signature"]), message.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
    except Exception:
        return False
    return True


def _not_found(seen: Received) -> Reply:
    return Reply(404, json.dumps({"code": "ORDER_NOT_EXIST", "message": "order does not exist"}))


@pytest.mark.parametrize("order_no", ["W*1@2|3", "P@7", "R|9*"])
async def test_order_numbers_with_star_at_and_bar_are_signed_as_sent(keys: Keys, order_no: str) -> None:
    async with platform(_not_found) as p:
        async with _channel(keys, p.url) as channel:
            for operation in (Operation.WITHHOLD, Operation.PAYOUT, Operation.REFUND):
                await channel.query(OrderRef(order_no, operation, 100, "CNY"))
            await channel.close_order(OrderRef(order_no, Operation.WITHHOLD, 100, "CNY"))
    assert len(p.received) >= 4
    for seen in p.received:
        assert _signature_verifies(keys, seen), seen.raw_path


# --- 5d. an unsigned 401 SIGN_ERROR: our credentials were refused --------------------------------


def _unsigned_401(seen: Received) -> Reply:
    return Reply(401, json.dumps({"code": "SIGN_ERROR", "message": "签名错误"}, ensure_ascii=False))


async def test_an_unsigned_401_is_a_credentials_failure_not_pending(keys: Keys) -> None:
    async with platform(_unsigned_401) as p:
        async with _channel(keys, p.url) as channel:
            withheld = await channel.withhold(WithholdOrder("W-401", 100, "CNY", "C1", "6222020000001234", "ICBC"))
            paid = await channel.payout(PayoutOrder("P-401", 100, "CNY", "o-openid", "张三", ""))
            queried = await channel.query(OrderRef("W-0", Operation.WITHHOLD, 100, "CNY"))
    for outcome in (withheld, paid):
        # not executed (401): definite, safe elsewhere, and flagged so the gateway stops using the channel
        assert (outcome.status, outcome.code, outcome.raw_code) == (
            OutcomeStatus.FAILED,
            "CREDENTIALS_REJECTED",
            "SIGN_ERROR",
        )
        assert outcome.safe_elsewhere and outcome.credentials_rejected
    assert queried.status is OutcomeStatus.PENDING and queried.credentials_rejected
    async with platform(_unsigned_401) as p:
        async with _channel(keys, p.url) as channel:
            with pytest.raises(ChannelRejected) as rejected:
                await channel.balance()
    assert rejected.value.credentials_rejected


async def test_other_unsigned_error_answers_stay_unverified(keys: Keys) -> None:
    def unsigned_400(seen: Received) -> Reply:
        return Reply(400, json.dumps({"code": "PARAM_ERROR", "message": "x"}))

    async with platform(unsigned_400) as p:
        async with _channel(keys, p.url) as channel:
            outcome = await channel.withhold(WithholdOrder("W-400", 100, "CNY", "C1", "6222020000001234", "ICBC"))
    assert (outcome.status, outcome.code) == (OutcomeStatus.PENDING, "UNVERIFIED_RESPONSE")
    assert not outcome.credentials_rejected
