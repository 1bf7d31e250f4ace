"""The sandbox wire protocol: signing, the error table, struct parsing."""

from __future__ import annotations

import time

import pytest

from channels.contract import OutcomeStatus
from channels.sandbox import wire
from channels.sandbox.simulator import UNMAPPED_SUCCESS_CODE
from channels.sandbox.wire import ERROR_TABLE, RawCode

SECRET = "s3cret"
BODY = b'{"order_no":"o1","amount":100}'


def _signed(**kw: object) -> dict[str, str]:
    return wire.sign_headers("m1", SECRET, "POST", "/v1/withhold", BODY, **kw)  # type: ignore[arg-type]


def test_signature_round_trip_returns_the_nonce() -> None:
    headers = _signed(nonce="abc")
    assert wire.verify_headers(SECRET, headers, "POST", "/v1/withhold", BODY) == "abc"


@pytest.mark.parametrize(
    ("secret", "method", "path", "body"),
    [
        ("other", "POST", "/v1/withhold", BODY),
        (SECRET, "GET", "/v1/withhold", BODY),
        (SECRET, "POST", "/v1/payout", BODY),
        (SECRET, "POST", "/v1/withhold", BODY.replace(b"100", b"900")),
    ],
)
def test_any_change_breaks_the_signature(secret: str, method: str, path: str, body: bytes) -> None:
    with pytest.raises(wire.SignatureInvalid) as info:
        wire.verify_headers(secret, _signed(), method, path, body)
    assert info.value.raw_code == RawCode.SIGNATURE_INVALID


def test_headers_are_read_case_insensitively() -> None:
    headers = {k.lower(): v for k, v in _signed().items()}
    wire.verify_headers(SECRET, headers, "POST", "/v1/withhold", BODY)


def test_missing_headers_and_stale_timestamps() -> None:
    headers = _signed()
    del headers[wire.HEADER_SIGNATURE]
    with pytest.raises(wire.SignatureInvalid, match="missing"):
        wire.verify_headers(SECRET, headers, "POST", "/v1/withhold", BODY)
    stale = _signed(timestamp=int(time.time()) - 301)
    with pytest.raises(wire.SignatureInvalid) as info:
        wire.verify_headers(SECRET, stale, "POST", "/v1/withhold", BODY)
    assert info.value.raw_code == RawCode.REQUEST_EXPIRED
    # Within a wider window it passes.
    wire.verify_headers(SECRET, stale, "POST", "/v1/withhold", BODY, max_skew_s=600)


def test_response_must_echo_the_request_nonce() -> None:
    headers = wire.sign_headers("m1", SECRET, wire.response_method(200), "/v1/query", BODY, nonce="n-1")
    wire.verify_headers(SECRET, headers, "HTTP/200", "/v1/query", BODY, expected_nonce="n-1")
    with pytest.raises(wire.SignatureInvalid, match="nonce"):
        wire.verify_headers(SECRET, headers, "HTTP/200", "/v1/query", BODY, expected_nonce="n-2")
    with pytest.raises(wire.SignatureInvalid):
        wire.verify_headers(SECRET, headers, "HTTP/503", "/v1/query", BODY, expected_nonce="n-1")


PAYER = ["1001", "1002", "1003", "1004", "6001", "6002"]
SAFE = ["2001", "2002", "2003", "2004", "4001", "4002", "4003", "4005"]
PENDING = ["3001", "3002", "4004", "4040", "5000"]


@pytest.mark.parametrize("raw", PAYER)
def test_payer_attributable_codes(raw: str) -> None:
    outcome = ERROR_TABLE.outcome(raw)
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.payer_attributable and not outcome.safe_elsewhere


@pytest.mark.parametrize("raw", SAFE)
def test_safe_elsewhere_codes(raw: str) -> None:
    outcome = ERROR_TABLE.outcome(raw)
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.safe_elsewhere and not outcome.payer_attributable


@pytest.mark.parametrize("raw", PENDING)
def test_pending_codes(raw: str) -> None:
    outcome = ERROR_TABLE.outcome(raw)
    assert outcome.status is OutcomeStatus.PENDING and not outcome.unmapped


def test_table_is_exactly_the_documented_codes() -> None:
    mapped = {raw for raw, _ in ERROR_TABLE}
    others = {"0000", "4006", "4007", "6003", "6004"}
    assert mapped == set(PAYER) | set(SAFE) | set(PENDING) | others
    assert {code for name, code in vars(RawCode).items() if not name.startswith("_")} == mapped
    assert set(wire.MESSAGES) == mapped


def test_success_and_unknown_codes() -> None:
    ok = ERROR_TABLE.outcome("0000", channel_txn_id="T1", amount=5, fee=0)
    assert ok.status is OutcomeStatus.SUCCEEDED and ok.code == "OK" and ok.channel_txn_id == "T1"
    unknown = ERROR_TABLE.outcome(UNMAPPED_SUCCESS_CODE)
    assert unknown.status is OutcomeStatus.PENDING and unknown.unmapped and unknown.code == "UNMAPPED"


def test_raw_code_for_inverts_the_table() -> None:
    for raw, rule in ERROR_TABLE:
        assert wire.raw_code_for(rule.code) == raw
    with pytest.raises(KeyError):
        wire.raw_code_for("NOPE")


def test_decode_checks_fields() -> None:
    request = wire.decode(wire.RefundRequest, b'{"order_no":"r","original_order_no":"o","amount":3,"currency":"CNY"}')
    assert request.amount == 3 and request.reason == ""
    with pytest.raises(wire.WireError) as info:
        wire.decode(wire.RefundRequest, b'{"order_no":"r","original_order_no":"o","currency":"CNY"}')
    assert info.value.field == "amount"
    with pytest.raises(wire.WireError) as info:
        wire.decode(wire.OrderReply, {"code": 1, "message": "", "order_no": "x"})
    assert info.value.field == "code"
    with pytest.raises(wire.WireError):
        wire.decode(wire.OrderReply, {"code": "0000", "message": "", "order_no": "x", "amount": True})
    with pytest.raises(wire.WireError) as info:
        wire.decode(wire.OrderReply, b"not json")
    assert info.value.field == "body"
    with pytest.raises(wire.WireError):
        wire.decode(wire.OrderReply, b"[1]")
    assert wire.decode(wire.OrderReply, {"code": "0000", "message": "", "order_no": "x", "amount": None}).amount is None


def test_reprs_hide_card_and_id_numbers() -> None:
    sign = wire.SignAgreementRequest("s1", "6222020200112233445", "张三", "110101199001011234", "13800138000", "ICBC")
    withhold = wire.WithholdRequest("o1", 5, "CNY", "A1", "6222020200112233445", "ICBC")
    for text in (repr(sign), repr(withhold)):
        assert "6222020200112233445" not in text and "110101199001011234" not in text
    assert b"6222020200112233445" in wire.encode(withhold)  # the wire itself carries it


def test_simulator_nonce_window_rejects_replays_and_forgets_expired(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from channels.sandbox import simulator as sim_module
    from channels.simkit import Behaviour

    now = [1_000_000.0]
    monkeypatch.setattr(sim_module.time, "time", lambda: now[0])
    sim = sim_module.SandboxSimulator(Behaviour())
    window = 2 * sim.max_skew_s
    assert all(sim._fresh_nonce(f"n{i}") for i in range(50_000))
    assert not sim._fresh_nonce("n7"), "a nonce inside its window is a replay"
    now[0] += window / 2
    assert sim._fresh_nonce("late")
    now[0] += window / 2 + 0.001  # the first 50 000 expired; "late" has not
    assert sim._fresh_nonce("n7"), "an expired nonce may be used again"
    assert set(sim._nonces) == {"late", "n7"}
    assert not sim._fresh_nonce("late")
