"""Adversarial probes: one request id sent concurrently, with the same and with other parameters.

Whatever mix arrives at once, there is exactly one flow, the calls with its parameters get it, the
others ``ALREADY_EXISTS`` naming ``request_id``, the bank's ledger holds at most one movement and
nothing is left half-written (reservations, extra attempts).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.store.db import DatabaseConfig
from paygate.v1 import gateway_pb2 as pb
from tests.support.harness import Harness, running_gateway

pytestmark = pytest.mark.integration

FUNDERS = {
    "xd": {"name": "某某小额贷款有限公司", "settle_from": "report"},
    "bank": {"name": "某某银行", "settle_from": "report"},
}


def withhold(rid: str, card: str, amount: int = 5_000, **kw: Any) -> pb.WithholdRequest:
    return pb.WithholdRequest(
        request_id=rid, amount=pb.Money(amount=amount, currency="CNY"), account_no=card, bank_code="ICBC", **kw
    )


def payout(rid: str, amount: int = 5_000, account: str = "6222020000001234", **kw: Any) -> pb.PayoutRequest:
    return pb.PayoutRequest(
        request_id=rid,
        amount=pb.Money(amount=amount, currency="CNY"),
        account_no=account,
        account_name="李四",
        bank_code="ICBC",
        **kw,
    )


def refund(rid: str, flow_no: str, amount: int, reason: str = "多还") -> pb.RefundRequest:
    return pb.RefundRequest(
        request_id=rid, original_flow_no=flow_no, amount=pb.Money(amount=amount, currency="CNY"), reason=reason
    )


async def race(calls: list[Any]) -> tuple[list[pb.Flow], list[grpc.aio.AioRpcError]]:
    results = await asyncio.gather(*calls, return_exceptions=True)
    flows = [r for r in results if isinstance(r, pb.Flow)]
    errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    others = [r for r in results if not isinstance(r, (pb.Flow, grpc.aio.AioRpcError))]
    assert not others, others
    return flows, errors


def assert_conflicts(errors: list[grpc.aio.AioRpcError], card: str = "") -> None:
    for err in errors:
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS, (err.code(), err.details())
        assert "request_id" in err.details(), err.details()
        assert not card or card not in err.details()


async def count(h: Harness, sql: str, *args: Any) -> int:
    row = await h.gateway.db.fetchone(sql, args)
    assert row is not None
    return int(row["n"])


async def test_mixed_withholds_under_one_request_id_make_one_flow_and_one_debit(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour(magic=False, p50_ms=30, p99_ms=80)}) as h:
        card, other_card = luhn_card(), luhn_card()
        [agreement] = await h.bind_card(card, ["bank-a"])
        await h.bind_card(other_card, ["bank-a"])
        variants = [
            withhold("mix-1", card),
            withhold("mix-1", card, amount=5_001),
            withhold("mix-1", other_card),
            withhold("mix-1", card, description="other"),
            withhold("mix-1", card, agreement_no=agreement.agreement_no),
        ]
        flows, errors = await race([h.stub.Withhold(variants[i % 5], metadata=h.md()) for i in range(20)])
        assert len({f.flow_no for f in flows}) == 1
        # whichever variant won, every call with its parameters got the flow, the rest a conflict
        assert len(flows) == 4 and len(errors) == 16
        assert_conflicts(errors, card)
        assert await count(h, "SELECT COUNT(*) AS n FROM flows") == 1
        assert await count(h, "SELECT COUNT(*) AS n FROM attempts") == 1
        assert sum(h.debits().values()) == 1


async def test_mixed_payouts_under_one_request_id_pay_once_and_leave_no_reservation(
    db_config: DatabaseConfig,
) -> None:
    async with running_gateway(
        db_config, {"only": Behaviour(magic=False, p50_ms=30, p99_ms=80)}, floats={"only": 100_000}
    ) as h:
        variants = [payout("po-1"), payout("po-1", amount=5_001), payout("po-1", account="6222020000009999")]
        flows, errors = await race([h.stub.Payout(variants[i % 3], metadata=h.md()) for i in range(15)])
        assert len({f.flow_no for f in flows}) == 1 and len(flows) == 5 and len(errors) == 10
        assert_conflicts(errors)
        [flow] = {f.flow_no: f for f in flows}.values()
        done = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())
        assert done.status == pb.SUCCEEDED
        paid = [e for e in h.sims["only"].ledger.entries() if e.kind.value == "payout"]
        assert len(paid) == 1
        row = await h.gateway.db.fetchone("SELECT balance, reserved FROM positions WHERE channel='only'")
        assert row is not None and (row["balance"], row["reserved"]) == (100_000 - done.amount.amount, 0)


async def test_a_request_id_names_one_flow_whatever_its_kind(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour()}) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        first = await h.stub.Withhold(withhold("kind-1", card), metadata=h.md())
        assert first.status == pb.SUCCEEDED
        for call, request in (
            (h.stub.Payout, payout("kind-1")),
            (h.stub.Refund, refund("kind-1", first.flow_no, 100)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(request, metadata=h.md())
            assert_conflicts([err.value])
        # another caller's request id space is its own
        theirs = await h.stub.Payout(payout("kind-1"), metadata=h.md("collections"))
        assert theirs.flow_no != first.flow_no
        assert sorted(h.debits().values()) == [1, 1]  # the first withhold and the other caller's payout


async def test_racing_refunds_never_exceed_the_original(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour(magic=False, p50_ms=20, p99_ms=60)}) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        original = await h.stub.Withhold(withhold("rf-orig", card, amount=10_000), metadata=h.md())
        assert original.status == pb.SUCCEEDED
        # ten refunds of 40% each, all at once: two fit
        flows, errors = await race(
            [h.stub.Refund(refund(f"rf-{i}", original.flow_no, 4_000), metadata=h.md()) for i in range(10)]
        )
        assert len(flows) == 2 and all(f.status == pb.SUCCEEDED for f in flows)
        assert {e.code() for e in errors} == {grpc.StatusCode.FAILED_PRECONDITION}
        assert all(e.details().startswith("amount:") for e in errors), [e.details() for e in errors]
        # one id, different amounts and reasons, at once: one refund
        same = [refund("rf-same", original.flow_no, 1_000), refund("rf-same", original.flow_no, 999)]
        same.append(refund("rf-same", original.flow_no, 1_000, reason="另一原因"))
        flows, errors = await race([h.stub.Refund(same[i % 3], metadata=h.md()) for i in range(9)])
        assert len({f.flow_no for f in flows}) == 1 and len(flows) == 3
        assert_conflicts(errors)
        row = await h.gateway.db.fetchone("SELECT refund_reserved FROM flows WHERE flow_no=%s", (original.flow_no,))
        assert row is not None and row["refund_reserved"] == 8_000 + flows[0].amount.amount
        assert await count(h, "SELECT COUNT(*) AS n FROM flows WHERE kind='REFUND'") == 3


async def test_split_withholds_under_one_request_id_keep_the_first_shares(db_config: DatabaseConfig) -> None:
    async with running_gateway(
        db_config, {"bank-a": Behaviour(magic=False, p50_ms=20, p99_ms=60)}, funders=FUNDERS
    ) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])

        def shares(xd: int) -> list[pb.FunderShare]:
            return [pb.FunderShare(funder_id="xd", ppm=xd), pb.FunderShare(funder_id="bank", ppm=1_000_000 - xd)]

        variants = [withhold("sp-1", card, shares=shares(300_000)), withhold("sp-1", card, shares=shares(400_000))]
        variants.append(withhold("sp-1", card))  # the same payment without its split
        flows, errors = await race([h.stub.Withhold(variants[i % 3], metadata=h.md()) for i in range(12)])
        assert len({f.flow_no for f in flows}) == 1 and len(flows) == 4
        assert_conflicts(errors)
        assert sum(h.debits().values()) == 1


def sign(rid: str, card: str, phone: str = "13800138000", **kw: Any) -> pb.SignAgreementRequest:
    return pb.SignAgreementRequest(
        request_id=rid,
        channel="bank-a",
        account_no=card,
        holder_name="张三",
        id_no="11010519491231002X",
        phone=phone,
        bank_code="ICBC",
        **kw,
    )


async def test_a_sign_request_id_reused_for_another_phone_is_a_conflict(db_config: DatabaseConfig) -> None:
    """The SMS goes to the phone of the first request: a second phone under the same key is other parameters."""
    async with running_gateway(db_config, {"bank-a": Behaviour()}) as h:
        card = luhn_card()
        first = await h.stub.SignAgreement(sign("sg-1", card), metadata=h.md())
        again = await h.stub.SignAgreement(sign("sg-1", card), metadata=h.md())
        assert again.agreement_no == first.agreement_no
        for other in (sign("sg-1", card, phone="13900138000"), sign("sg-1", luhn_card())):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await h.stub.SignAgreement(other, metadata=h.md())
            assert_conflicts([err.value], card)
        assert await count(h, "SELECT COUNT(*) AS n FROM agreements") == 1


async def test_racing_signs_and_confirms_make_one_active_agreement(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour(p50_ms=20, p99_ms=60)}) as h:
        card = luhn_card()
        variants = [sign("sg-2", card), sign("sg-2", luhn_card())]
        results = await asyncio.gather(
            *(h.stub.SignAgreement(variants[i % 2], metadata=h.md()) for i in range(10)), return_exceptions=True
        )
        signed = [r for r in results if isinstance(r, pb.Agreement)]
        errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(signed) + len(errors) == 10 and len({a.agreement_no for a in signed}) == 1
        assert_conflicts(errors)
        assert await count(h, "SELECT COUNT(*) AS n FROM agreements") == 1
        code = h.sims["bank-a"].last_sms("13800138000").code
        confirm = pb.ConfirmAgreementRequest(agreement_no=signed[0].agreement_no, sms_code=code)
        confirmed = await asyncio.gather(
            *(h.stub.ConfirmAgreement(confirm, metadata=h.md()) for _ in range(8)), return_exceptions=True
        )
        agreements = [c for c in confirmed if isinstance(c, pb.Agreement)]
        assert agreements and {a.status for a in agreements} == {pb.ACTIVE}, confirmed
        listed = await h.stub.ListAgreements(pb.ListAgreementsRequest(), metadata=h.md())
        assert [a.status for a in listed.agreements] == [pb.ACTIVE]
