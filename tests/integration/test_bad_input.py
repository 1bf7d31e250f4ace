"""Bad input on every RPC gets the right status naming the field, and nothing is persisted."""

from __future__ import annotations

import grpc
import pytest

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.store.db import DatabaseConfig
from paygate.v1 import gateway_pb2 as pb
from tests.support.harness import running_gateway

CARD = luhn_card(rng=__import__("random").Random(7))
M = pb.Money
FLOW_NO = "01HZZZZZZZZZZZZZZZZZZZZZZZ"

W = dict(request_id="bad-1", amount=M(amount=100, currency="CNY"), account_no=CARD, bank_code="ICBC")
P = dict(
    request_id="bad-2",
    amount=M(amount=100, currency="CNY"),
    account_no="6222020000001234",
    account_name="李四",
    bank_code="ICBC",
)
S = dict(
    request_id="bad-3",
    account_no=CARD,
    holder_name="张三",
    id_no="11010519491231002X",
    phone="13800138000",
    bank_code="ICBC",
)

CASES = [
    ("Withhold", pb.WithholdRequest(**{**W, "request_id": ""}), grpc.StatusCode.INVALID_ARGUMENT, "request_id"),
    ("Withhold", pb.WithholdRequest(**{**W, "request_id": "x" * 65}), grpc.StatusCode.INVALID_ARGUMENT, "request_id"),
    ("Withhold", pb.WithholdRequest(**{**W, "request_id": "bad id"}), grpc.StatusCode.INVALID_ARGUMENT, "request_id"),
    (
        "Withhold",
        pb.WithholdRequest(**{k: v for k, v in W.items() if k != "amount"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "amount",
    ),
    (
        "Withhold",
        pb.WithholdRequest(**{**W, "amount": M(amount=0, currency="CNY")}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "amount.amount",
    ),
    (
        "Withhold",
        pb.WithholdRequest(**{**W, "amount": M(amount=-5, currency="CNY")}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "amount.amount",
    ),
    (
        "Withhold",
        pb.WithholdRequest(**{**W, "amount": M(amount=100, currency="XXX")}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "amount.currency",
    ),
    (
        "Withhold",
        pb.WithholdRequest(**{**W, "amount": M(amount=100, currency="")}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "amount.currency",
    ),
    ("Withhold", pb.WithholdRequest(**{**W, "account_no": "12ab"}), grpc.StatusCode.INVALID_ARGUMENT, "account_no"),
    (
        "Withhold",
        pb.WithholdRequest(**{**W, "account_no": CARD[:-1] + str((int(CARD[-1]) + 1) % 10)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "account_no",
    ),
    ("Withhold", pb.WithholdRequest(**{**W, "bank_code": "icbc"}), grpc.StatusCode.INVALID_ARGUMENT, "bank_code"),
    (
        "Withhold",
        pb.WithholdRequest(**{**W, "description": "d" * 5000}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "description",
    ),
    ("Withhold", pb.WithholdRequest(**{**W, "wait_ms": -1}), grpc.StatusCode.INVALID_ARGUMENT, "wait_ms"),
    ("Withhold", pb.WithholdRequest(**W), grpc.StatusCode.FAILED_PRECONDITION, "agreement"),
    ("Payout", pb.PayoutRequest(**{**P, "account_no": "12"}), grpc.StatusCode.INVALID_ARGUMENT, "account_no"),
    ("Payout", pb.PayoutRequest(**{**P, "account_name": ""}), grpc.StatusCode.INVALID_ARGUMENT, "account_name"),
    ("Payout", pb.PayoutRequest(**{**P, "account_name": "n" * 100}), grpc.StatusCode.INVALID_ARGUMENT, "account_name"),
    (
        "Payout",
        pb.PayoutRequest(**{**P, "amount": M(amount=100, currency="usd")}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "amount.currency",
    ),
    (
        "Refund",
        pb.RefundRequest(request_id="r", original_flow_no="nope", amount=M(amount=1, currency="CNY")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "original_flow_no",
    ),
    (
        "Refund",
        pb.RefundRequest(request_id="r", original_flow_no=FLOW_NO, amount=M(amount=1, currency="CNY")),
        grpc.StatusCode.NOT_FOUND,
        "original_flow_no",
    ),
    ("Refund", pb.RefundRequest(request_id="r", original_flow_no=FLOW_NO), grpc.StatusCode.INVALID_ARGUMENT, "amount"),
    ("GetFlow", pb.GetFlowRequest(), grpc.StatusCode.INVALID_ARGUMENT, "key"),
    ("GetFlow", pb.GetFlowRequest(flow_no="short"), grpc.StatusCode.INVALID_ARGUMENT, "flow_no"),
    ("GetFlow", pb.GetFlowRequest(flow_no=FLOW_NO), grpc.StatusCode.NOT_FOUND, "flow_no"),
    ("GetFlow", pb.GetFlowRequest(request_id="never-used"), grpc.StatusCode.NOT_FOUND, "request_id"),
    ("SignAgreement", pb.SignAgreementRequest(**{**S, "id_no": "123"}), grpc.StatusCode.INVALID_ARGUMENT, "id_no"),
    ("SignAgreement", pb.SignAgreementRequest(**{**S, "phone": "555"}), grpc.StatusCode.INVALID_ARGUMENT, "phone"),
    (
        "SignAgreement",
        pb.SignAgreementRequest(**{**S, "holder_name": ""}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "holder_name",
    ),
    (
        "SignAgreement",
        pb.SignAgreementRequest(**{**S, "channel": "no-such-channel"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "channel",
    ),
    (
        "ConfirmAgreement",
        pb.ConfirmAgreementRequest(agreement_no=FLOW_NO, sms_code="12"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "sms_code",
    ),
    (
        "ConfirmAgreement",
        pb.ConfirmAgreementRequest(agreement_no=FLOW_NO, sms_code="123456"),
        grpc.StatusCode.NOT_FOUND,
        "agreement_no",
    ),
    ("RevokeAgreement", pb.RevokeAgreementRequest(agreement_no=""), grpc.StatusCode.INVALID_ARGUMENT, "agreement_no"),
    ("ListAgreements", pb.ListAgreementsRequest(page_size=10_000), grpc.StatusCode.INVALID_ARGUMENT, "page_size"),
    ("ListAgreements", pb.ListAgreementsRequest(page_token="!!!"), grpc.StatusCode.INVALID_ARGUMENT, "page_token"),
]


@pytest.fixture
async def harness(db_config: DatabaseConfig):
    async with running_gateway(db_config, {"bank-a": Behaviour()}) as h:
        yield h


async def test_every_bad_input_is_refused_and_nothing_persisted(harness) -> None:
    h = harness
    for method, request, code, field in CASES:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await getattr(h.stub, method)(request, metadata=h.md())
        assert err.value.code() == code, (method, request, err.value.details())
        assert field in err.value.details(), (method, err.value.details())
        assert CARD not in err.value.details()
    for table in ("flows", "attempts", "agreements", "outbox", "positions"):
        if table == "positions":
            continue  # synced from the channel at start-up, not by requests
        row = await h.gateway.db.fetchone(f"SELECT COUNT(*) AS n FROM {table}")
        assert row["n"] == 0, table
    assert sum(h.debits().values()) == 0


async def test_overflowing_amount_is_refused(harness) -> None:
    h = harness
    # int64 overflow cannot be sent in a valid protobuf; the largest value must still be checked
    req = pb.PayoutRequest(**{**P, "amount": M(amount=2**63 - 1, currency="CNY")})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.stub.Payout(req, metadata=h.md())
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # no channel can fund it
    row = await h.gateway.db.fetchone("SELECT COUNT(*) AS n FROM flows")
    assert row["n"] == 0
