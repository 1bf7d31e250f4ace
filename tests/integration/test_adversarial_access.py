"""Adversarial probes: one caller reaching for another caller's flows, agreements and plans.

Every read and change is scoped to the caller the credentials name: another caller's flow or
agreement is NOT_FOUND (its existence is not confirmed), and nothing of it changes. Viewers and
callers get nothing from the operator services that change state.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.businessday import BusinessCalendar
from gateway.store.db import DatabaseConfig
from paygate.v1 import gateway_pb2 as pb
from paygate.v1 import plans_pb2, plans_pb2_grpc, recon_pb2, recon_pb2_grpc, splits_pb2, splits_pb2_grpc
from tests.fakes.clock import FakeClock
from tests.integration.test_adversarial_input import refused
from tests.support.harness import CALLER_TOKENS, OPERATOR_TOKEN, Harness, running_gateway
from tests.support.plans import plan_pb

pytestmark = pytest.mark.integration

PLANS = {
    "enabled": False,
    "policies": {"default": {"time_points": ["12:00"], "attempts_per_day": 1, "retry_days": 0}},
    "products": {"cash-loan": "default"},
}
VIEWER_TOKEN = "viewer-token-adversarial-0123456789"
OPERATORS = {"ops": {"token": OPERATOR_TOKEN, "role": "approver"}, "watcher": {"token": VIEWER_TOKEN, "role": "viewer"}}


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def rows(h: Harness) -> list[Any]:
    out: list[Any] = []
    for table in ("flows", "attempts", "agreements", "plans", "instalments", "outbox", "audit_log"):
        out += [(table, tuple(r.values())) for r in await h.gateway.db.fetchall(f"SELECT * FROM {table} ORDER BY id")]
    return out


async def test_a_caller_cannot_reach_another_callers_records(db_config: DatabaseConfig) -> None:
    clock = FakeClock(datetime.now(UTC).replace(tzinfo=None))
    async with running_gateway(
        db_config, {"bank-a": Behaviour()}, clock=clock, plans=PLANS, cashier={"min_expiry_s": 1}
    ) as h:
        card = luhn_card()
        [agreement] = await h.bind_card(card, ["bank-a"], caller="loans")
        flow = await h.stub.Withhold(
            pb.WithholdRequest(
                request_id="own-1", amount=pb.Money(amount=10_000, currency="CNY"), account_no=card, bank_code="ICBC"
            ),
            metadata=h.md("loans"),
        )
        assert flow.status == pb.SUCCEEDED
        plans = plans_pb2_grpc.WithholdingPlansStub(h.channel)
        due = (BusinessCalendar.named("Asia/Shanghai").today() + timedelta(days=3)).isoformat()
        reply = await plans.SubmitPlans(
            plans_pb2.SubmitPlansRequest(plans=[plan_pb("own-plan", card, [("own-plan-1", due, 5_000)])]),
            metadata=h.md("loans"),
        )
        assert not reply.rejected
        before = await rows(h)
        debits = h.debits()

        theirs = h.md("collections")
        not_found: list[tuple[Any, Any]] = [
            (h.stub.GetFlow, pb.GetFlowRequest(flow_no=flow.flow_no)),
            (h.stub.GetFlow, pb.GetFlowRequest(request_id="own-1")),
            (
                h.stub.Refund,
                pb.RefundRequest(
                    request_id="steal-1", original_flow_no=flow.flow_no, amount=pb.Money(amount=100, currency="CNY")
                ),
            ),
            (h.stub.CloseCollection, pb.CloseCollectionRequest(flow_no=flow.flow_no)),
            (h.stub.RevokeAgreement, pb.RevokeAgreementRequest(agreement_no=agreement.agreement_no)),
            (h.stub.ConfirmAgreement, pb.ConfirmAgreementRequest(agreement_no=agreement.agreement_no, sms_code="1234")),
            (plans.GetPlan, plans_pb2.GetPlanRequest(plan_id="own-plan")),
            (plans.PausePlan, plans_pb2.PlanChangeRequest(plan_id="own-plan", reason="x")),
            (plans.CancelPlan, plans_pb2.PlanChangeRequest(plan_id="own-plan", reason="x")),
            (plans.SettlePlan, plans_pb2.PlanChangeRequest(plan_id="own-plan", instalment_id="own-plan-1")),
            (
                plans.AmendInstalment,
                plans_pb2.AmendInstalmentRequest(
                    plan_id="own-plan", instalment_id="own-plan-1", amount=pb.Money(amount=1, currency="CNY")
                ),
            ),
        ]
        for call, request in not_found:
            err = await refused(call, request, theirs)
            assert err.code() == grpc.StatusCode.NOT_FOUND, (type(request).__name__, err.code(), err.details())
            assert card not in (err.details() or "")
        # another caller's agreement neither withholds nor lists
        err = await refused(
            h.stub.Withhold,
            pb.WithholdRequest(
                request_id="steal-2",
                amount=pb.Money(amount=10_000, currency="CNY"),
                account_no=card,
                bank_code="ICBC",
                agreement_no=agreement.agreement_no,
            ),
            theirs,
        )
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and err.details().startswith("agreement")
        listed = await h.stub.ListAgreements(pb.ListAgreementsRequest(account_no=card), metadata=theirs)
        assert list(listed.agreements) == []
        instalments = await plans.ListInstalments(plans_pb2.ListInstalmentsRequest(), metadata=theirs)
        assert list(instalments.instalments) == []
        assert await rows(h) == before and h.debits() == debits


async def test_viewers_and_callers_change_nothing_through_the_operator_services(db_config: DatabaseConfig) -> None:
    clock = FakeClock(datetime.now(UTC).replace(tzinfo=None))
    async with running_gateway(
        db_config,
        {"bank-a": Behaviour()},
        clock=clock,
        plans=PLANS,
        operators=OPERATORS,
        funders={"xd": {"name": "某某小额贷款有限公司", "settle_from": "report"}},
        settlement={"enabled": False},
    ) as h:
        before = await rows(h)
        yesterday = (BusinessCalendar.named("Asia/Shanghai").today() - timedelta(days=1)).isoformat()
        recon = recon_pb2_grpc.ReconciliationStub(h.channel)
        splits = splits_pb2_grpc.SplitSettlementStub(h.channel)
        plan_admin = plans_pb2_grpc.PlanAdminStub(h.channel)
        changes: list[tuple[Any, Any]] = [
            (recon.Run, recon_pb2.RunReconRequest(channel="bank-a", business_day=yesterday, reason="x")),
            (
                recon.Import,
                recon_pb2.ImportStatementRequest(
                    channel="bank-a", business_day=yesterday, format="sandbox", reason="x", content=b"x"
                ),
            ),
            (recon.ResolveDiscrepancy, recon_pb2.ResolveReconDiscrepancyRequest(id=1, resolution="EXPLAINED")),
            (splits.RunSettlement, splits_pb2.RunSettlementRequest(business_day=yesterday, reason="x")),
            (
                splits.ResendSettlementPayout,
                splits_pb2.ResendSettlementPayoutRequest(funder_id="xd", business_day=yesterday, reason="x"),
            ),
            (plan_admin.StartRun, plans_pb2.RunRequest(policy="default", business_day=yesterday, time_point="12:00")),
            (plan_admin.PauseRun, plans_pb2.RunRequest(policy="default", business_day=yesterday, time_point="12:00")),
        ]
        for call, request in changes:
            err = await refused(call, request, bearer(VIEWER_TOKEN))
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED, (type(request).__name__, err.code())
            # a caller's token is no operator's, whatever the method
            err = await refused(call, request, bearer(CALLER_TOKENS["loans"]))
            assert err.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), err.code()
        # an operator's token is no caller's
        err = await refused(h.stub.GetFlow, pb.GetFlowRequest(request_id="x"), bearer(VIEWER_TOKEN))
        assert err.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
        assert await rows(h) == before
