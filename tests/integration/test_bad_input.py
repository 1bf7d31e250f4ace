"""Bad input on every RPC gets the right status naming the field, and nothing is persisted."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.store.db import DatabaseConfig
from paygate.v1 import admin_pb2
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

KEY_64_NL = "k" * 64 + "\n"  # cut to 64 by the column, it would meet the caller's other key
ARABIC_INDIC = "".join(chr(0x0660 + int(d)) for d in "6222020000001234")
FULL_WIDTH_CARD = "".join(chr(0xFF10 + int(d)) for d in CARD)

CASES = [
    ("Withhold", pb.WithholdRequest(**{**W, "request_id": ""}), grpc.StatusCode.INVALID_ARGUMENT, "request_id"),
    ("Withhold", pb.WithholdRequest(**{**W, "request_id": "x" * 65}), grpc.StatusCode.INVALID_ARGUMENT, "request_id"),
    ("Withhold", pb.WithholdRequest(**{**W, "request_id": "bad id"}), grpc.StatusCode.INVALID_ARGUMENT, "request_id"),
    ("Withhold", pb.WithholdRequest(**{**W, "request_id": KEY_64_NL}), grpc.StatusCode.INVALID_ARGUMENT, "request_id"),
    ("Payout", pb.PayoutRequest(**{**P, "request_id": KEY_64_NL}), grpc.StatusCode.INVALID_ARGUMENT, "request_id"),
    (
        "Refund",
        pb.RefundRequest(request_id=KEY_64_NL, original_flow_no=FLOW_NO, amount=M(amount=1, currency="CNY")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "request_id",
    ),
    ("GetFlow", pb.GetFlowRequest(request_id=KEY_64_NL), grpc.StatusCode.INVALID_ARGUMENT, "request_id"),
    (
        "SignAgreement",
        pb.SignAgreementRequest(**{**S, "request_id": KEY_64_NL}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "request_id",
    ),
    ("Payout", pb.PayoutRequest(**{**P, "account_no": ARABIC_INDIC}), grpc.StatusCode.INVALID_ARGUMENT, "account_no"),
    (
        "Withhold",
        pb.WithholdRequest(**{**W, "account_no": FULL_WIDTH_CARD}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "account_no",
    ),
    (
        "Payout",
        pb.PayoutRequest(**{**P, "bank_code": "ABCDEFGHIJKLMNOP\n"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "bank_code",
    ),
    (
        "Payout",
        pb.PayoutRequest(**{**P, "bank_code": "ABCDEFGHIJKLMNOPQ"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "bank_code",
    ),
    ("Withhold", pb.WithholdRequest(**{**W, "bank_code": "ICBC\n"}), grpc.StatusCode.INVALID_ARGUMENT, "bank_code"),
    (
        "Payout",
        pb.PayoutRequest(**{**P, "amount": M(amount=2**63 - 1, currency="CNY")}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "amount.amount",
    ),
    (
        "Withhold",
        pb.WithholdRequest(**{**W, "description": "line\nbreak"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "description",
    ),
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
    (
        "SignAgreement",
        pb.SignAgreementRequest(**{**S, "phone": "13800138000\n"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "phone",
    ),
    (
        "ConfirmAgreement",
        pb.ConfirmAgreementRequest(agreement_no=FLOW_NO + "\n", sms_code="123456"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "agreement_no",
    ),
]

ADMIN_CASES = [
    ("AdjustPosition", admin_pb2.AdjustPositionRequest(channel="bank-a", delta=-(2**63) + 1, reason="fix"), "delta"),
    ("AdjustPosition", admin_pb2.AdjustPositionRequest(channel="bank-a", delta=2**63 - 1, reason="fix"), "delta"),
    ("AdjustPosition", admin_pb2.AdjustPositionRequest(channel="bank-a\n", delta=5, reason="fix"), "channel"),
    ("ListReviewFlows", admin_pb2.ListReviewFlowsRequest(page_size=2**31 - 1), "page_size"),
    ("ListDiscrepancies", admin_pb2.ListDiscrepanciesRequest(page_size=-1), "page_size"),
    ("ResolveFlow", admin_pb2.ResolveFlowRequest(flow_no=FLOW_NO + "\n", status=pb.FAILED, reason="x"), "flow_no"),
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
        if code == grpc.StatusCode.INVALID_ARGUMENT:  # the rich error model names the field too
            status = rpc_status.from_call(err.value)
            bad = error_details_pb2.BadRequest()
            assert status is not None and any(d.Unpack(bad) for d in status.details), method
            assert [v.field for v in bad.field_violations] == [field], (method, bad)
    for table in ("flows", "attempts", "agreements", "outbox", "positions"):
        if table == "positions":
            continue  # synced from the channel at start-up, not by requests
        row = await h.gateway.db.fetchone(f"SELECT COUNT(*) AS n FROM {table}")
        assert row["n"] == 0, table
    assert sum(h.debits().values()) == 0


async def test_admin_numbers_and_keys_are_bounded(harness) -> None:
    """The database never sees an out-of-range number (that would read as "retry", UNAVAILABLE)."""
    h = harness
    before = await h.gateway.db.fetchall("SELECT channel, balance FROM positions ORDER BY channel")
    for method, request, field in ADMIN_CASES:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await getattr(h.admin, method)(request, metadata=h.op_md)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, err.value.details())
        assert err.value.details().startswith(f"{field}:"), (method, err.value.details())
    assert await h.gateway.db.fetchall("SELECT channel, balance FROM positions ORDER BY channel") == before
    row = await h.gateway.db.fetchone("SELECT COUNT(*) AS n FROM audit_log")
    assert row["n"] == 0
