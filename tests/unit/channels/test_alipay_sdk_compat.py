"""Wire compatibility with code we did not write: python-alipay-sdk (import name ``alipay``).

Keys are generated here; the SDK signs and verifies with PyCryptodome, we
with ``cryptography``. A changed byte must break verification both ways.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from alipay import AliPay
from alipay.exceptions import AliPayValidationError

from channels.alipay import wire
from channels.contract import CallbackRejected, Operation, OutcomeStatus
from tests.unit.channels.sdk_side import APP_ID, Keys, alipay_channel, sdk_notify


@pytest.fixture()
def channel(keys: Keys) -> Any:
    return alipay_channel(keys)


def _our_request(keys: Keys) -> dict[str, str]:
    biz = {"out_trade_no": "W1", "total_amount": "12.34", "subject": "还款", "agreement_params": {"agreement_no": "A1"}}
    params = wire.common_params(APP_ID, "alipay.trade.pay", biz, notify_url="https://example.test/n")
    return wire.sign_request(params, keys["merchant"])


def test_sdk_produces_the_same_request_signature_as_ours(keys: Keys, merchant_sdk: AliPay) -> None:
    ours = _our_request(keys)
    unsigned = {k: v for k, v in ours.items() if k != "sign"}
    sdk_signed = dict(parse_qsl(merchant_sdk.sign_data(dict(unsigned))))
    assert sdk_signed["sign"] == ours["sign"]


def test_sdk_verifies_our_request_and_a_changed_byte_breaks_it(keys: Keys, alipay_side_sdk: AliPay) -> None:
    ours = _our_request(keys)
    content = wire.sign_content(ours)
    # alipay_side_sdk holds the merchant public key: it verifies like the Alipay gateway does.
    assert alipay_side_sdk._verify(content, ours["sign"])
    assert not alipay_side_sdk._verify(content.replace("12.34", "12.35"), ours["sign"])


def test_we_verify_a_request_the_sdk_signed(keys: Keys, merchant_sdk: AliPay) -> None:
    data = merchant_sdk.build_body("alipay.trade.query", {"out_trade_no": "W1"})
    signed = dict(parse_qsl(merchant_sdk.sign_data(data)))
    public = keys["merchant"].public_key()
    assert wire.rsa2_verify(public, wire.sign_content(signed), signed["sign"])
    signed["biz_content"] = signed["biz_content"].replace("W1", "W2")
    assert not wire.rsa2_verify(public, wire.sign_content(signed), signed["sign"])


def test_sdk_verifies_our_sync_response_and_rejects_a_tampered_one(keys: Keys, merchant_sdk: AliPay) -> None:
    body = {
        "code": "10000",
        "msg": "Success",
        "out_trade_no": "W1",
        "trade_status": "TRADE_SUCCESS",
        "total_amount": "8.88",
    }
    raw = wire.build_response("alipay.trade.query", body, keys["alipay"])
    assert merchant_sdk._verify_and_return_sync_response(raw, "alipay_trade_query_response") == body
    with pytest.raises(AliPayValidationError):
        merchant_sdk._verify_and_return_sync_response(raw.replace("8.88", "8.89"), "alipay_trade_query_response")


def test_we_verify_a_response_signed_with_the_sdk_utilities(keys: Keys, alipay_side_sdk: AliPay) -> None:
    segment = json.dumps(
        {"code": "10000", "msg": "Success", "trade_no": "T1", "nested": {"a": "{}"}}, separators=(",", ":")
    )
    raw = f'{{"alipay_trade_pay_response":{segment},"sign":"{alipay_side_sdk._sign(segment)}"}}'
    assert wire.parse_response(raw, "alipay.trade.pay", keys["alipay"].public_key())["trade_no"] == "T1"
    with pytest.raises(wire.ResponseError):
        wire.parse_response(raw.replace("T1", "T2"), "alipay.trade.pay", keys["alipay"].public_key())


def test_adapter_accepts_a_notify_signed_by_the_sdk(channel: Any, alipay_side_sdk: AliPay) -> None:
    body = urlencode(sdk_notify(alipay_side_sdk)).encode()
    notice = channel.parse_callback({"Content-Type": "application/x-www-form-urlencoded"}, body)
    assert notice.channel_order_no == "W-NOTIFY-1"
    assert notice.operation is Operation.WITHHOLD
    assert notice.outcome.status is OutcomeStatus.SUCCEEDED
    assert notice.amount == 10_005


@pytest.mark.parametrize(
    ("field", "value"),
    [("total_amount", "100.06"), ("out_trade_no", "W-NOTIFY-2"), ("trade_status", "TRADE_CLOSED")],
)
def test_adapter_rejects_a_changed_notify_field(channel: Any, alipay_side_sdk: AliPay, field: str, value: str) -> None:
    fields = sdk_notify(alipay_side_sdk)
    fields[field] = value
    with pytest.raises(CallbackRejected, match="signature"):
        channel.parse_callback({}, urlencode(fields).encode())


def test_adapter_rejects_a_validly_signed_notify_for_another_app(channel: Any, alipay_side_sdk: AliPay) -> None:
    body = urlencode(sdk_notify(alipay_side_sdk, app_id="2021000000000999")).encode()
    with pytest.raises(CallbackRejected, match="app_id"):
        channel.parse_callback({}, body)


def test_sdk_verifies_a_notify_we_sign(keys: Keys, merchant_sdk: AliPay) -> None:
    fields = {"app_id": APP_ID, "out_trade_no": "W9", "total_amount": "1.00", "trade_status": "TRADE_SUCCESS"}
    signed = wire.sign_notify(fields, keys["alipay"])
    data = dict(signed)
    signature = data.pop("sign")
    assert merchant_sdk.verify(dict(data), signature)
    data["total_amount"] = "1.01"
    assert not merchant_sdk.verify(data, signature)


def test_acknowledgement_is_exactly_success(channel: Any) -> None:
    assert channel.callback_reply(True).body == b"success"
    assert channel.callback_reply(True).status == 200
    assert channel.callback_reply(False).body != b"success"
