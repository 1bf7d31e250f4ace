"""Wire compatibility with code we did not write: the ``wechatpayv3`` SDK.

The SDK builds Authorization headers and callbacks our side accepts, and
verifies (and decrypts) what our side signs. A changed byte in a body or a
header breaks verification in both directions.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from wechatpayv3 import utils as sdk_utils
from wechatpayv3.core import Core

from channels.contract import CallbackRejected, Operation, OutcomeStatus
from channels.wechatpay import wire
from tests.unit.channels.sdk_side import (
    APIV3_KEY,
    MCHID,
    MERCHANT_SERIAL,
    PLATFORM_ID,
    Keys,
    wechatpay_channel,
)


@pytest.fixture()
def channel(keys: Keys) -> Any:
    return wechatpay_channel(keys)


BODY = json.dumps({"appid": "wx1", "out_trade_no": "W1", "amount": {"total": 100, "currency": "CNY"}})
URL = "/v3/papay/pay/transactions/apply"


def test_our_authorization_equals_the_sdks(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    frozen = 1_763_800_000
    monkeypatch.setattr(sdk_utils.time, "time", lambda: frozen)
    theirs = sdk_utils.build_authorization(
        URL, "POST", MCHID, MERCHANT_SERIAL, keys["merchant"], data=BODY, nonce_str="593BEC0C930BF1AFEB40B4A08C8FB242"
    )
    ours = wire.build_authorization(
        "POST",
        URL,
        BODY,
        mchid=MCHID,
        serial_no=MERCHANT_SERIAL,
        key=keys["merchant"],
        timestamp=str(frozen),
        nonce="593BEC0C930BF1AFEB40B4A08C8FB242",
    )
    assert ours == theirs


def test_we_verify_an_sdk_authorization_and_a_changed_byte_breaks_it(keys: Keys) -> None:
    header = sdk_utils.build_authorization(URL, "POST", MCHID, MERCHANT_SERIAL, keys["merchant"], data=BODY)
    auth = wire.parse_authorization(header)
    assert auth is not None and auth.mchid == MCHID and auth.serial_no == MERCHANT_SERIAL
    public = keys["merchant"].public_key()
    assert wire.verify_authorization(auth, "POST", URL, BODY, public)
    assert not wire.verify_authorization(auth, "POST", URL, BODY.replace("100", "101"), public)
    assert not wire.verify_authorization(auth, "GET", URL, BODY, public)
    assert not wire.verify_authorization(auth, "POST", URL + "?x=1", BODY, public)


def test_sdk_verifies_our_response_signature(keys: Keys, sdk: Core) -> None:
    body = json.dumps({"trade_state": "SUCCESS", "amount": {"total": 100}})
    headers = wire.sign_message(body, key=keys["platform"], serial=PLATFORM_ID)
    assert sdk._verify_signature(headers, body)
    assert not sdk._verify_signature(headers, body.replace("100", "101"))
    bad_nonce = {**headers, "Wechatpay-Nonce": "Z" + headers["Wechatpay-Nonce"][1:]}  # our nonces are hex
    assert not sdk._verify_signature(bad_nonce, body)
    assert not sdk._verify_signature(
        {**headers, "Wechatpay-Timestamp": str(int(headers["Wechatpay-Timestamp"]) + 1)}, body
    )


def _sdk_callback(keys: Keys, resource: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    """A callback as WeChat Pay sends it, signed with the SDK's rsa_sign (AES-GCM done per the spec)."""
    nonce = "fdasflkja484"
    ciphertext = AESGCM(APIV3_KEY.encode()).encrypt(nonce.encode(), json.dumps(resource).encode(), b"transaction")
    envelope = {
        "id": "EV-2018-06-08",
        "create_time": "2026-11-22T10:00:00+08:00",
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "ok",
        "resource": {
            "original_type": "transaction",
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": base64.b64encode(ciphertext).decode(),
            "associated_data": "transaction",
            "nonce": nonce,
        },
    }
    body = json.dumps(envelope)
    timestamp, header_nonce = str(int(time.time())), "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"
    signature = sdk_utils.rsa_sign(keys["platform"], f"{timestamp}\n{header_nonce}\n{body}\n")
    headers = {
        "Wechatpay-Timestamp": timestamp,
        "Wechatpay-Nonce": header_nonce,
        "Wechatpay-Signature": signature,
        "Wechatpay-Serial": PLATFORM_ID,
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
    }
    return headers, body.encode()


RESOURCE = {
    "mchid": MCHID,
    "appid": "wxd678efh567hg6787",
    "out_trade_no": "W-CB-1",
    "transaction_id": "4200000000000001",
    "trade_state": "SUCCESS",
    "amount": {"total": 10005, "payer_total": 10005, "currency": "CNY"},
}


def test_adapter_accepts_a_callback_built_with_the_sdk(keys: Keys, channel: Any, sdk: Core) -> None:
    headers, body = _sdk_callback(keys, RESOURCE)
    assert sdk.callback(headers, body)["resource"] == RESOURCE  # the SDK agrees it is genuine
    notice = channel.parse_callback(headers, body)
    assert (notice.channel_order_no, notice.operation, notice.amount) == ("W-CB-1", Operation.WITHHOLD, 10005)
    assert notice.outcome.status is OutcomeStatus.SUCCEEDED


def test_adapter_rejects_changed_callback_bytes(keys: Keys, channel: Any) -> None:
    headers, body = _sdk_callback(keys, RESOURCE)
    with pytest.raises(CallbackRejected, match="signature"):
        channel.parse_callback(headers, body.replace(b"EV-2018", b"EV-2019"))
    with pytest.raises(CallbackRejected):
        channel.parse_callback({**headers, "Wechatpay-Nonce": "X" + headers["Wechatpay-Nonce"][1:]}, body)
    with pytest.raises(CallbackRejected):
        channel.parse_callback({**headers, "Wechatpay-Serial": "PUB_KEY_ID_OTHER"}, body)
    stale = str(int(time.time()) - 3600)
    with pytest.raises(CallbackRejected, match="Timestamp"):
        channel.parse_callback({**headers, "Wechatpay-Timestamp": stale}, body)


def test_adapter_rejects_a_signed_callback_for_another_merchant(keys: Keys, channel: Any) -> None:
    headers, body = _sdk_callback(keys, {**RESOURCE, "mchid": "1900000999"})
    with pytest.raises(CallbackRejected, match="mchid"):
        channel.parse_callback(headers, body)


def test_adapter_rejects_a_resource_sealed_with_another_key(keys: Keys, channel: Any) -> None:
    envelope_headers, body = _sdk_callback(keys, RESOURCE)
    envelope = json.loads(body)
    sealed = AESGCM(b"0" * 32).encrypt(b"fdasflkja484", json.dumps(RESOURCE).encode(), b"transaction")
    envelope["resource"]["ciphertext"] = base64.b64encode(sealed).decode()
    forged = json.dumps(envelope)
    ts, nonce = envelope_headers["Wechatpay-Timestamp"], envelope_headers["Wechatpay-Nonce"]
    headers = {
        **envelope_headers,
        "Wechatpay-Signature": sdk_utils.rsa_sign(keys["platform"], f"{ts}\n{nonce}\n{forged}\n"),
    }
    with pytest.raises(CallbackRejected, match="decrypt"):
        channel.parse_callback(headers, forged.encode())


def test_sdk_decrypts_what_we_encrypt_and_we_decrypt_what_it_would() -> None:
    resource = wire.encrypt_resource(APIV3_KEY.encode(), '{"a":1}', associated_data="refund")
    assert sdk_utils.aes_decrypt(resource["nonce"], resource["ciphertext"], "refund", APIV3_KEY) == '{"a":1}'
    assert sdk_utils.aes_decrypt(resource["nonce"], resource["ciphertext"], "transaction", APIV3_KEY) is None
    assert wire.decrypt_resource(APIV3_KEY.encode(), resource["nonce"], "refund", resource["ciphertext"]) == '{"a":1}'


def test_sensitive_fields_round_trip_with_the_sdk(keys: Keys) -> None:
    ours = wire.encrypt_field(keys["platform"].public_key(), "张三")
    assert sdk_utils.rsa_decrypt(ours, keys["platform"]) == "张三"
    theirs = sdk_utils.rsa_encrypt("李四", keys["platform"].public_key())
    assert wire.decrypt_field(keys["platform"], theirs) == "李四"


def test_acknowledgements(channel: Any) -> None:
    yes, no = channel.callback_reply(True), channel.callback_reply(False)
    assert yes.status in (200, 204) and yes.body == b""
    assert no.status >= 400 and json.loads(no.body)["code"] == "FAIL"
    assert no.content_type == "application/json"


@pytest.mark.parametrize(
    ("code", "status", "payer", "safe"),
    [
        ("NOTENOUGH", OutcomeStatus.FAILED, True, False),
        ("ACCOUNT_ERROR", OutcomeStatus.FAILED, True, False),
        ("FREQUENCY_LIMITED", OutcomeStatus.FAILED, False, True),
        ("SYSTEM_ERROR", OutcomeStatus.PENDING, False, False),
        ("ORDER_NOT_EXIST", OutcomeStatus.PENDING, False, False),
        ("CONTRACT_NOT_EXIST", OutcomeStatus.FAILED, True, False),
    ],
)
def test_code_table(code: str, status: OutcomeStatus, payer: bool, safe: bool) -> None:
    outcome = wire.CODES.outcome(code)
    assert (outcome.status, outcome.payer_attributable, outcome.safe_elsewhere) == (status, payer, safe)


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("SUCCESS", OutcomeStatus.SUCCEEDED),
        ("USERPAYING", OutcomeStatus.PENDING),
        ("PAYERROR", OutcomeStatus.FAILED),
        ("CLOSED", OutcomeStatus.FAILED),
        ("SOMETHING_NEW", OutcomeStatus.PENDING),
    ],
)
def test_trade_state_table(state: str, status: OutcomeStatus) -> None:
    assert wire.TRADE_STATE.outcome(state).status is status
