"""Sandbox adapter: settings validation and callback verification (no network)."""

from __future__ import annotations

import json
import time

import pytest

from channels.config import ConfigError
from channels.contract import CallbackRejected, Channel, Operation, OutcomeStatus
from channels.registry import ChannelRegistry, ChannelSpec
from channels.sandbox import wire
from channels.sandbox.adapter import SandboxChannel, _Answered, _Lost, _Unsent, build

SETTINGS = {"base_url": "http://127.0.0.1:9", "merchant_id": "m1", "secret": "top-secret-key"}


def _channel(**extra: object) -> SandboxChannel:
    return build(ChannelSpec("sbx-1", "sandbox", {**SETTINGS, **extra}, key="channels[3]"))


def test_build_applies_defaults_and_is_a_channel() -> None:
    channel = _channel()
    assert isinstance(channel, Channel)
    assert channel.channel_id == "sbx-1"
    assert channel.operations == frozenset(Operation)
    assert channel.currencies == frozenset({"CNY"})
    assert channel.banks is None
    assert channel.settings.timeout_s == 10.0 and channel.settings.connect_timeout_s == 2.0


def test_registry_finds_the_adapter() -> None:
    registry = ChannelRegistry.build([ChannelSpec("sbx-1", "sandbox", SETTINGS)])
    assert isinstance(registry.get("sbx-1"), SandboxChannel)


def test_optional_settings() -> None:
    channel = _channel(operations=["withhold", "agreement"], currencies=["CNY", "USD"], banks=["ICBC"], timeout_s=3)
    assert channel.operations == {Operation.WITHHOLD, Operation.AGREEMENT}
    assert channel.currencies == {"CNY", "USD"}
    assert channel.banks == frozenset({"ICBC"})
    assert channel.settings.timeout_s == 3.0


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"base_url": None}, "channels[3].base_url"),
        ({"base_url": "ftp://x"}, "channels[3].base_url"),
        ({"merchant_id": ""}, "channels[3].merchant_id"),
        ({"secret": None}, "channels[3].secret"),
        ({"timeout_s": 0}, "channels[3].timeout_s"),
        ({"connect_timeout_s": "2"}, "channels[3].connect_timeout_s"),
        ({"operations": ["teleport"]}, "channels[3].operations"),
        ({"currencies": []}, "channels[3].currencies"),
        ({"banks": "ICBC"}, "channels[3].banks"),
        ({"colour": "blue"}, "channels[3].colour"),
    ],
)
def test_bad_settings_name_the_key(change: dict[str, object], key: str) -> None:
    settings = {**SETTINGS, **change}
    settings = {k: v for k, v in settings.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        build(ChannelSpec("sbx-1", "sandbox", settings, key="channels[3]"))
    assert info.value.key == key


def test_secret_never_in_repr() -> None:
    channel = _channel()
    assert "top-secret-key" not in repr(channel)
    assert "top-secret-key" not in repr(channel.settings)


def _callback(
    body: dict[str, object], *, secret: str = "top-secret-key", merchant: str = "m1"
) -> tuple[dict[str, str], bytes]:
    raw = json.dumps(body).encode()
    return wire.sign_headers(merchant, secret, "POST", wire.CALLBACK_PATH, raw), raw


NOTICE = {
    "code": "0000",
    "message": "success",
    "order_no": "o1",
    "status": "SUCCEEDED",
    "amount": 10005,
    "txn_id": "T9",
    "kind": "withhold",
}


def test_parse_callback_accepts_a_signed_notice() -> None:
    headers, body = _callback(NOTICE)
    notice = _channel().parse_callback(headers, body)
    assert notice.channel_order_no == "o1"
    assert notice.operation is Operation.WITHHOLD
    assert notice.amount == 10005
    assert notice.outcome.status is OutcomeStatus.SUCCEEDED and notice.outcome.channel_txn_id == "T9"


def test_parse_callback_failure_notice() -> None:
    headers, body = _callback({**NOTICE, "code": "1001", "status": "FAILED", "kind": "payout"})
    notice = _channel().parse_callback(headers, body)
    assert notice.operation is Operation.PAYOUT
    assert notice.outcome.status is OutcomeStatus.FAILED and notice.outcome.payer_attributable


@pytest.mark.parametrize(
    "tamper",
    ["body", "secret", "merchant", "stale", "unsigned", "kind", "format"],
)
def test_parse_callback_rejects(tamper: str) -> None:
    headers, body = _callback(NOTICE)
    if tamper == "body":
        body = body.replace(b"10005", b"99999")
    elif tamper == "secret":
        headers, body = _callback(NOTICE, secret="guess")
    elif tamper == "merchant":
        headers, body = _callback(NOTICE, merchant="m2")
    elif tamper == "stale":
        raw = json.dumps(NOTICE).encode()
        headers = wire.sign_headers(
            "m1", "top-secret-key", "POST", wire.CALLBACK_PATH, raw, timestamp=int(time.time()) - 3600
        )
        body = raw
    elif tamper == "unsigned":
        headers = {}
    elif tamper == "kind":
        headers, body = _callback({**NOTICE, "kind": "teleport"})
    elif tamper == "format":
        headers, body = _callback({"hello": 1})
    with pytest.raises(CallbackRejected):
        _channel().parse_callback(headers, body)


def test_callback_reply() -> None:
    channel = _channel()
    accepted = channel.callback_reply(True)
    assert (accepted.status, accepted.body) == (200, b"OK")
    assert channel.callback_reply(False).status != 200


async def test_use_before_start_is_a_programming_error() -> None:
    from channels.contract import OrderRef

    with pytest.raises(RuntimeError, match="before start"):
        await _channel().query(OrderRef("o1", Operation.WITHHOLD, 1, "CNY"))


# --- how HTTP answers become outcomes (DESIGN.md invariant 3) ---------------------------


def _reply(code: str, order_no: str = "o1", **extra: object) -> bytes:
    return json.dumps({"code": code, "message": "m", "order_no": order_no, **extra}).encode()


@pytest.mark.parametrize(
    ("exchange", "status", "code", "safe"),
    [
        (_Unsent("ClientConnectorError"), OutcomeStatus.FAILED, "CONNECTION_FAILED", True),
        (_Lost("TIMEOUT", "SocketTimeoutError"), OutcomeStatus.PENDING, "TIMEOUT", False),
        (_Lost("CONNECTION_LOST", "ServerDisconnectedError"), OutcomeStatus.PENDING, "CONNECTION_LOST", False),
        (
            _Answered(503, b'{"code":"2003","message":"maintenance"}', True),
            OutcomeStatus.FAILED,
            "CHANNEL_MAINTENANCE",
            True,
        ),
        (
            _Answered(503, b'{"code":"2003","message":"maintenance"}', False),
            OutcomeStatus.PENDING,
            "CHANNEL_5XX",
            False,
        ),
        (_Answered(503, b'{"code":"2001","message":"busy"}', True), OutcomeStatus.PENDING, "CHANNEL_5XX", False),
        (_Answered(500, b"oops", False), OutcomeStatus.PENDING, "CHANNEL_5XX", False),
        (_Answered(502, _reply("0000"), True), OutcomeStatus.PENDING, "CHANNEL_5XX", False),
        (_Answered(200, _reply("0000"), False), OutcomeStatus.PENDING, "RESPONSE_SIGNATURE_INVALID", False),
        (_Answered(200, b"<html>", True), OutcomeStatus.PENDING, "BAD_RESPONSE", False),
        (_Answered(200, _reply("0000", order_no="o2"), True), OutcomeStatus.PENDING, "BAD_RESPONSE", False),
        (_Answered(200, _reply("0000", amount=5, txn_id="T1"), True), OutcomeStatus.SUCCEEDED, "OK", False),
        (_Answered(200, _reply("2002"), True), OutcomeStatus.FAILED, "BANK_NOT_SUPPORTED", True),
        (_Answered(200, _reply("3001"), True), OutcomeStatus.PENDING, "PROCESSING", False),
        (_Answered(200, _reply("7777"), True), OutcomeStatus.PENDING, "UNMAPPED", False),
        (_Answered(200, b'{"code":"4005","message":"order closed"}', True), OutcomeStatus.FAILED, "ORDER_CLOSED", True),
        (
            _Answered(401, b'{"code":"4001","message":"signature invalid"}', True),
            OutcomeStatus.FAILED,
            "SIGNATURE_INVALID",
            True,
        ),
    ],
)
def test_exchange_to_outcome(exchange: object, status: OutcomeStatus, code: str, safe: bool) -> None:
    outcome = _channel()._order_outcome(exchange, "o1")  # type: ignore[arg-type]
    assert (outcome.status, outcome.code, outcome.safe_elsewhere) == (status, code, safe)


def test_not_found_query_answer() -> None:
    outcome = _channel()._order_outcome(_Answered(200, _reply("4040"), True), "o1")
    assert (outcome.status, outcome.not_found) == (OutcomeStatus.PENDING, True)
