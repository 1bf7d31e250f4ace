"""Alipay wire details: exact yuan conversion, the code tables, response extraction, configuration."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from channels.alipay import wire
from channels.alipay.adapter import build
from channels.config import ConfigError
from channels.contract import OutcomeStatus
from channels.registry import ChannelSpec


@pytest.mark.parametrize(
    ("fen", "yuan"), [(0, "0.00"), (1, "0.01"), (10, "0.10"), (1234, "12.34"), (100_000_000_01, "100000000.01")]
)
def test_fen_and_yuan_round_trip(fen: int, yuan: str) -> None:
    assert wire.fen_to_yuan(fen) == yuan
    assert wire.yuan_to_fen(yuan) == fen


@pytest.mark.parametrize(("yuan", "fen"), [("12", 1200), ("12.3", 1230), ("0.07", 7), ("19.99", 1999)])
def test_short_forms(yuan: str, fen: int) -> None:
    assert wire.yuan_to_fen(yuan) == fen


@pytest.mark.parametrize("bad", ["", "1.234", "-1.00", "1e3", "01.00", " ", "1,00", "NaN", "0.1.2"])
def test_bad_yuan_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        wire.yuan_to_fen(bad)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_fen_is_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        wire.fen_to_yuan(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "status", "payer", "safe"),
    [
        ("ACQ.BUYER_BALANCE_NOT_ENOUGH", OutcomeStatus.FAILED, True, False),
        ("ACQ.AGREEMENT_NOT_EXIST", OutcomeStatus.FAILED, True, False),
        ("ACQ.SYSTEM_ERROR", OutcomeStatus.PENDING, False, False),
        ("20000", OutcomeStatus.PENDING, False, False),
        ("10003", OutcomeStatus.PENDING, False, False),
        ("ACQ.TRADE_HAS_SUCCESS", OutcomeStatus.SUCCEEDED, False, False),
        ("ACQ.TRADE_NOT_EXIST", OutcomeStatus.PENDING, False, False),
        ("isv.invalid-signature", OutcomeStatus.FAILED, False, True),
        ("PAYER_BALANCE_NOT_ENOUGH", OutcomeStatus.FAILED, False, True),
        ("ACQ.CONTEXT_INCONSISTENT", OutcomeStatus.PENDING, False, False),
    ],
)
def test_code_table(raw: str, status: OutcomeStatus, payer: bool, safe: bool) -> None:
    outcome = wire.CODES.outcome(raw)
    assert (outcome.status, outcome.payer_attributable, outcome.safe_elsewhere, outcome.unmapped) == (
        status,
        payer,
        safe,
        False,
    )


def test_unknown_code_is_pending_unmapped() -> None:
    outcome = wire.CODES.outcome("ACQ.SOMETHING_NEW")
    assert outcome.status is OutcomeStatus.PENDING and outcome.unmapped


@pytest.mark.parametrize(
    ("trade_status", "status"),
    [
        ("TRADE_SUCCESS", OutcomeStatus.SUCCEEDED),
        ("TRADE_FINISHED", OutcomeStatus.SUCCEEDED),
        ("WAIT_BUYER_PAY", OutcomeStatus.PENDING),
        ("TRADE_CLOSED", OutcomeStatus.FAILED),
    ],
)
def test_trade_status_table(trade_status: str, status: OutcomeStatus) -> None:
    assert wire.TRADE_STATUS.outcome(trade_status).status is status


def test_no_failure_is_both_payer_attributable_and_safe_elsewhere() -> None:
    for table in (wire.CODES, wire.TRADE_STATUS, wire.TRANSFER_STATUS, wire.REFUND_STATUS):
        for _, rule in table:
            assert not (rule.payer_attributable and rule.safe_elsewhere)


def test_signed_segment_is_the_exact_text_with_braces_in_strings() -> None:
    inner = '{"code":"10000","msg":"a } b { c \\" }","x":{"y":"}"}}'
    raw = '{"alipay_trade_pay_response":' + inner + ',"sign":"abc"}'
    assert wire.signed_segment(raw, "alipay_trade_pay_response") == inner
    assert json.loads(inner)["x"]["y"] == "}"


@pytest.fixture(scope="module")
def pems() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def _bare(pem: str) -> str:
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))


def test_build_accepts_pem_bare_base64_and_files(pems: tuple[str, str], tmp_path) -> None:
    private, public = pems
    path = tmp_path / "app.key"
    path.write_text(private)
    channel = build(
        ChannelSpec(
            "ali", "alipay", {"app_id": "1", "app_private_key_path": str(path), "alipay_public_key": _bare(public)}
        )
    )
    assert "PRIVATE" not in repr(channel)
    assert "BEGIN" not in repr(channel._settings)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"app_id": ""}, "channels[3].app_id"),
        ({"app_private_key": "nonsense"}, "channels[3].app_private_key"),
        ({"alipay_public_key": None}, "channels[3].alipay_public_key"),
        ({"gateway_url": "ftp://x"}, "channels[3].gateway_url"),
        ({"timeout_s": 0}, "channels[3].timeout_s"),
        ({"connect_timeout_s": 20}, "channels[3].connect_timeout_s"),
    ],
)
def test_build_names_the_bad_setting(pems: tuple[str, str], change: dict[str, object], key: str) -> None:
    private, public = pems
    settings = {"app_id": "1", "app_private_key": private, "alipay_public_key": public, **change}
    with pytest.raises(ConfigError) as caught:
        build(ChannelSpec("ali", "alipay", settings, key="channels[3]"))
    assert caught.value.key == key
    assert "BEGIN" not in str(caught.value)
