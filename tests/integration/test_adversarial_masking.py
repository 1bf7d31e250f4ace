"""Adversarial probes: card, id and phone numbers put where free text goes never come back whole.

The numbers are typed into descriptions, refund reasons and operators' reasons, and sent as the
fields themselves; what leaves the process (responses, error details, the outbox rows that become
Kafka events, the log) shows at most their last four digits.
"""

from __future__ import annotations

import logging

import grpc
import pytest

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.store.db import DatabaseConfig
from paygate.v1 import admin_pb2, recon_pb2, recon_pb2_grpc, splits_pb2
from paygate.v1 import gateway_pb2 as pb
from tests.support.harness import Harness, running_gateway

pytestmark = pytest.mark.integration

ID_NO = "11010519491231002X"
PHONE = "13800138000"


def leaks(text: str, numbers: list[str]) -> list[str]:
    return [n for n in numbers if n in text]


async def outbox_text(h: Harness) -> str:
    rows = await h.gateway.db.fetchall("SELECT payload FROM outbox ORDER BY id")
    return "".join(bytes(r["payload"]).decode("utf-8", "replace") for r in rows)


async def test_numbers_in_free_text_and_fields_never_leave_whole(
    db_config: DatabaseConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_gateway(db_config, {"bank-a": Behaviour(magic=False)}) as h:
        assert h.admin is not None
        card, other = luhn_card(), luhn_card()
        numbers = [card, other, ID_NO, PHONE]
        pii = f"卡号 {other} 身份证 {ID_NO} 电话 {PHONE}"
        await h.bind_card(card, ["bank-a"])
        flow = await h.stub.Withhold(
            pb.WithholdRequest(
                request_id="mask-1",
                amount=pb.Money(amount=10_000, currency="CNY"),
                account_no=card,
                bank_code="ICBC",
                description=pii[:128],
            ),
            metadata=h.md(),
        )
        assert flow.status == pb.SUCCEEDED
        refund = await h.stub.Refund(
            pb.RefundRequest(
                request_id="mask-2",
                original_flow_no=flow.flow_no,
                amount=pb.Money(amount=100, currency="CNY"),
                reason=pii[:128],
            ),
            metadata=h.md(),
        )
        payout = await h.stub.Payout(
            pb.PayoutRequest(
                request_id="mask-3",
                amount=pb.Money(amount=100, currency="CNY"),
                account_no=other,
                account_name="李四",
                bank_code="ICBC",
                description=pii[:128],
            ),
            metadata=h.md(),
        )
        answers = [str(flow), str(refund), str(payout)]
        answers += [str(await h.stub.ListAgreements(pb.ListAgreementsRequest(account_no=card), metadata=h.md()))]
        # refusals that concern the numbers themselves
        for call, request in (
            (
                h.stub.Withhold,
                pb.WithholdRequest(
                    request_id="mask-4", amount=pb.Money(amount=1, currency="CNY"), account_no=other, bank_code="ICBC"
                ),
            ),
            (
                h.stub.Withhold,
                pb.WithholdRequest(
                    request_id="mask-1", amount=pb.Money(amount=1, currency="CNY"), account_no=card, bank_code="ICBC"
                ),
            ),
            (
                h.stub.SignAgreement,
                pb.SignAgreementRequest(
                    request_id="mask-5",
                    account_no=card,
                    holder_name="张三",
                    id_no=ID_NO[:-1] + "Y",
                    phone=PHONE,
                    bank_code="ICBC",
                ),
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(request, metadata=h.md())
            answers.append(err.value.details() or "")
        # an operator's reason
        resolved = await h.admin.ListAuditLog(admin_pb2.ListAuditLogRequest(), metadata=h.op_md)
        answers.append(str(resolved))
        for answer in answers:
            assert not leaks(answer, numbers), answer
        assert not leaks(await outbox_text(h), numbers)
        assert not leaks(caplog.text, [other, ID_NO, PHONE])  # the log: free text is scrubbed by the formatter too


async def test_a_reconciliation_mark_reason_is_scrubbed(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour()}) as h:
        sim = h.sims["bank-a"]
        day = sim.ledger.booking_day(sim.ledger.now())
        sim.statements.faults.add_line(day, "GHOST9", 4_200)
        recon = recon_pb2_grpc.ReconciliationStub(h.channel)
        await recon.Run(
            recon_pb2.RunReconRequest(channel="bank-a", business_day=day.isoformat(), reason="morning"),
            metadata=h.op_md,
        )
        [item] = (
            await recon.ListDiscrepancies(
                recon_pb2.ListReconDiscrepanciesRequest(business_day=day.isoformat()), metadata=h.op_md
            )
        ).items
        card = luhn_card()
        reason = f"the bank says card {card} of id {ID_NO} was a test"
        marked = await recon.ResolveDiscrepancy(
            recon_pb2.ResolveReconDiscrepancyRequest(id=item.id, resolution="EXPLAINED", reason=reason),
            metadata=h.op_md,
        )
        assert not leaks(marked.resolution_reason, [card, ID_NO]), marked.resolution_reason
        assert marked.resolution_reason.endswith("was a test") and card[-4:] in marked.resolution_reason
        listed = await recon.ListDiscrepancies(
            recon_pb2.ListReconDiscrepanciesRequest(business_day=day.isoformat()), metadata=h.op_md
        )
        assert not leaks(str(listed), [card, ID_NO])
        rows = await h.gateway.db.fetchall("SELECT resolution_reason FROM recon_items")
        assert not leaks(str(rows), [card, ID_NO])  # stored scrubbed, as every operator's reason is


async def audit_text(h: Harness) -> str:
    rows = await h.gateway.db.fetchall("SELECT reason, detail FROM audit_log ORDER BY id")
    return str(rows)


async def test_reconciliation_reasons_and_file_names_are_stored_scrubbed(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour()}) as h:
        sim = h.sims["bank-a"]
        day = sim.ledger.booking_day(sim.ledger.now()).isoformat()
        card = luhn_card()
        recon = recon_pb2_grpc.ReconciliationStub(h.channel)
        await recon.Run(
            recon_pb2.RunReconRequest(channel="bank-a", business_day=day, reason=f"card {card} disputed"),
            metadata=h.op_md,
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:  # refused file: the audit record is written first
            await recon.Import(
                recon_pb2.ImportStatementRequest(
                    channel="bank-a",
                    business_day=day,
                    format="sandbox",
                    content=b"not a statement\n",
                    file_name=f"{card}.csv",
                    reason=f"e-mailed by {PHONE} for id {ID_NO}",
                ),
                metadata=h.op_md,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        stored = await audit_text(h)
        actions = await h.gateway.db.fetchall("SELECT action FROM audit_log WHERE action LIKE 'recon%%'")
        assert sorted(a["action"] for a in actions) == ["recon_import", "recon_run"]
        assert not leaks(stored, [card, PHONE, ID_NO]), stored
        assert card[-4:] in stored and "disputed" in stored


async def test_settlement_run_and_re_send_reasons_are_stored_scrubbed(db_config: DatabaseConfig) -> None:
    from tests.integration.test_settlement_resend import failed_day, resend_rq, stub

    async with failed_day(db_config) as (h, day):
        card = luhn_card()
        await stub(h).RunSettlement(
            splits_pb2.RunSettlementRequest(business_day=day.isoformat(), reason=f"funder asked, card {card}"),
            metadata=h.op_md,
        )
        h.sims["bank-a"].behaviour.update({"declines": {}})
        await stub(h).ResendSettlementPayout(resend_rq(day, reason=f"unfrozen, call {PHONE}"), metadata=h.op_md)
        stored = await audit_text(h)
        actions = await h.gateway.db.fetchall("SELECT action FROM audit_log WHERE action LIKE '%%settlement%%'")
        assert {a["action"] for a in actions} == {"run_settlement", "resend_settlement_payout"}
        assert not leaks(stored, [card, PHONE]), stored
        payouts = await h.gateway.db.fetchall("SELECT reason FROM settlement_payouts")
        assert payouts and not leaks(str(payouts), [PHONE]), payouts
