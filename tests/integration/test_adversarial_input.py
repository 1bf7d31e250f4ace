"""Adversarial probes: hostile input on the plan, reconciliation, settlement, admin and collection RPCs.

Every refusal is INVALID_ARGUMENT (or the documented status) naming the field, never INTERNAL or
UNAVAILABLE (a value the database would have to refuse), and nothing is written.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.businessday import BusinessCalendar
from gateway.store.db import DatabaseConfig
from paygate.v1 import (
    admin_pb2,
    gateway_pb2,
    plans_pb2,
    plans_pb2_grpc,
    recon_pb2,
    recon_pb2_grpc,
    splits_pb2,
    splits_pb2_grpc,
)
from tests.fakes.clock import FakeClock
from tests.support.harness import Harness, running_gateway
from tests.support.plans import plan_pb

pytestmark = pytest.mark.integration

PLANS = {
    "enabled": False,
    "policies": {"default": {"time_points": ["12:00"], "attempts_per_day": 1, "retry_days": 0}},
    "products": {"cash-loan": "default"},
}
FUNDERS = {"xd": {"name": "某某小额贷款有限公司", "settle_from": "report"}}
WRITTEN = ("flows", "attempts", "plans", "instalments", "audit_log", "recon_runs", "settlements", "outbox")


def token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.fixture
async def harness(db_config: DatabaseConfig) -> Any:
    clock = FakeClock(datetime.now(UTC).replace(tzinfo=None))
    async with running_gateway(
        db_config, {"bank-a": Behaviour()}, clock=clock, plans=PLANS, funders=FUNDERS, settlement={"enabled": False}
    ) as h:
        yield h


async def refused(call: Any, request: Any, metadata: Any) -> grpc.aio.AioRpcError:
    try:
        answer = await call(request, metadata=metadata)
    except grpc.aio.AioRpcError as err:
        return err
    raise AssertionError(f"accepted: {type(request).__name__} {request} -> {answer}")


async def nothing_written(h: Harness) -> None:
    for table in WRITTEN:
        row = await h.gateway.db.fetchone(f"SELECT COUNT(*) AS n FROM {table}")
        assert row is not None and row["n"] == 0, table


async def test_plan_rpcs_refuse_hostile_input_naming_the_field(harness: Harness) -> None:
    h = harness
    plans = plans_pb2_grpc.WithholdingPlansStub(h.channel)
    cases: list[tuple[Any, Any, str]] = [
        # page tokens this server never issued
        (plans.ListInstalments, plans_pb2.ListInstalmentsRequest(page_token=token("12/01/2026:1")), "page_token"),
        (plans.ListInstalments, plans_pb2.ListInstalmentsRequest(page_size=-1), "page_size"),
        (plans.ListInstalments, plans_pb2.ListInstalmentsRequest(page_size=10**6), "page_size"),
        (plans.ListInstalments, plans_pb2.ListInstalmentsRequest(due_from="2026-02-30"), "due_from"),
        (plans.ListInstalments, plans_pb2.ListInstalmentsRequest(due_to="9999-12-31"), "due_to"),
        (plans.ListInstalments, plans_pb2.ListInstalmentsRequest(due_from="2026-W49-1"), "due_from"),
        (plans.ListInstalments, plans_pb2.ListInstalmentsRequest(statuses=[99]), "statuses[0]"),
        (plans.ListInstalments, plans_pb2.ListInstalmentsRequest(plan_id="p' OR '1'='1"), "plan_id"),
        (plans.GetPlan, plans_pb2.GetPlanRequest(plan_id=""), "plan_id"),
        (
            plans.AmendInstalment,
            plans_pb2.AmendInstalmentRequest(
                plan_id="p1", instalment_id="i1", amount=gateway_pb2.Money(amount=2**63 - 1, currency="CNY")
            ),
            "amount.amount",
        ),
        (
            plans.AmendInstalment,
            plans_pb2.AmendInstalmentRequest(plan_id="p1", instalment_id="i1", reason="r" * 300),
            "reason",
        ),
    ]
    for call, request, field in cases:
        err = await refused(call, request, h.md())
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, err.code(), err.details())
        assert err.details().startswith(f"{field}:"), (field, err.details())
    await nothing_written(h)


async def test_a_plan_submission_refuses_each_bad_item_naming_the_field(harness: Harness) -> None:
    """Held to a Withhold's rules: a bank code a Withhold would refuse is refused here too (the executor's
    withholds are not checked again), and a due date is exactly YYYY-MM-DD (not an ISO week date)."""
    h = harness
    plans = plans_pb2_grpc.WithholdingPlansStub(h.channel)
    card = luhn_card()
    bad = [
        plan_pb("p-1", card, [("i-1", "2026-12-10", 0)]),
        plan_pb("p-2", card, [("i-2", "2026-12-10", 2**63 - 1)]),
        plan_pb("p-3", card, [("i-3", "2026-13-01", 100)]),
        plan_pb("p-4", card, [("i-4", "2026-W50-1", 100)]),
        plan_pb("p-5", card, [("i-5", "2026-12-10", 100)], bank_code="NOSUCHBANK"),
        plan_pb("p-6", card[:-1] + str((int(card[-1]) + 1) % 10), [("i-6", "2026-12-10", 100)]),
        plan_pb("p 7", card, [("i-7", "2026-12-10", 100)]),
        plan_pb("p-8", card, [("i-8", "2026-12-10", 100)], product="Bad Product"),
    ]
    reply = await plans.SubmitPlans(plans_pb2.SubmitPlansRequest(plans=bad), metadata=h.md())
    fields = sorted(r.field for r in reply.rejected)
    assert fields == sorted(
        [
            "plans[0].instalments[0].amount.amount",
            "plans[1].instalments[0].amount.amount",
            "plans[2].instalments[0].due_date",
            "plans[3].instalments[0].due_date",
            "plans[4].bank_code",
            "plans[5].account_no",
            "plans[6].plan_id",
            "plans[7].product",
        ]
    ), reply
    assert {r.code for r in reply.rejected} == {"INVALID_ARGUMENT"}
    assert all(card not in r.message for r in reply.rejected)
    await nothing_written(h)


async def test_operator_rpcs_refuse_hostile_input_naming_the_field(harness: Harness) -> None:
    h = harness
    recon = recon_pb2_grpc.ReconciliationStub(h.channel)
    splits = splits_pb2_grpc.SplitSettlementStub(h.channel)
    plan_admin = plans_pb2_grpc.PlanAdminStub(h.channel)
    assert h.admin is not None
    cases: list[tuple[Any, Any, str]] = [
        (recon.Run, recon_pb2.RunReconRequest(channel="bank-a", business_day="2026-12-01"), "reason"),
        (recon.Run, recon_pb2.RunReconRequest(channel="bank-a", business_day="1-2-3", reason="x"), "business_day"),
        (recon.Run, recon_pb2.RunReconRequest(channel="BANK A", business_day="2026-12-01", reason="x"), "channel"),
        (recon.ListRuns, recon_pb2.ListReconRunsRequest(limit=501), "limit"),
        (recon.ListDiscrepancies, recon_pb2.ListReconDiscrepanciesRequest(limit=1001), "limit"),
        (recon.GetRun, recon_pb2.GetReconRunRequest(), "run_id"),
        (
            recon.ResolveDiscrepancy,
            recon_pb2.ResolveReconDiscrepancyRequest(id=1, resolution="X", reason="r"),
            "resolution",
        ),
        (splits.ListSettlements, splits_pb2.ListSettlementsRequest(), "business_day"),
        (splits.ListSettlements, splits_pb2.ListSettlementsRequest(funder_id="xd", limit=-1), "limit"),
        (splits.RunSettlement, splits_pb2.RunSettlementRequest(business_day="2026-12-01"), "reason"),
        (
            splits.RunSettlement,
            splits_pb2.RunSettlementRequest(funder_id="XD!", business_day="2026-12-01"),
            "funder_id",
        ),
        (
            splits.ResendSettlementPayout,
            splits_pb2.ResendSettlementPayoutRequest(funder_id="xd", business_day="2026-02-30", reason="r"),
            "business_day",
        ),
        (plan_admin.ListRuns, plans_pb2.ListRunsRequest(business_day="yesterday"), "business_day"),
        (plan_admin.ListRuns, plans_pb2.ListRunsRequest(policy="Robert'); DROP TABLE plans;--"), "policy"),
        (h.admin.ListAuditLog, admin_pb2.ListAuditLogRequest(page_size=-5), "page_size"),
        (h.admin.ListPendingResolutions, admin_pb2.ListPendingResolutionsRequest(page_size=10**6), "page_size"),
    ]
    for call, request, field in cases:
        err = await refused(call, request, h.op_md)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, err.code(), err.details())
        assert err.details().startswith(f"{field}:"), (field, err.details())
    # a settlement of a day that has not ended is refused, whatever the day
    for day in ("2099-12-31", BusinessCalendar.named("Asia/Shanghai").today().isoformat()):
        err = await refused(
            splits.RunSettlement, splits_pb2.RunSettlementRequest(business_day=day, reason="r"), h.op_md
        )
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and err.details().startswith("business_day:")
    await nothing_written(h)


async def test_collection_requests_refuse_hostile_input_naming_the_field(harness: Harness) -> None:
    h = harness

    def create(**kw: Any) -> gateway_pb2.CreateCollectionRequest:
        base: dict[str, Any] = dict(
            request_id="col-1", amount=gateway_pb2.Money(amount=100, currency="CNY"), cashier=gateway_pb2.CASHIER_H5
        )
        return gateway_pb2.CreateCollectionRequest(**{**base, **kw})

    cases = [
        (create(cashier=0), "cashier"),
        (create(cashier=42), "cashier"),
        (create(expires_in_s=-1), "expires_in_s"),
        (create(expires_in_s=10**9), "expires_in_s"),
        (create(amount=gateway_pb2.Money(amount=-1, currency="CNY")), "amount.amount"),
        (create(channel="bank-a/../../admin"), "channel"),
        (create(channel="no-such-channel"), "channel"),  # not NO_ROUTE: retrying would never help
        (create(payer=gateway_pb2.PayerHints(client_ip="999.1.1.1")), "payer.client_ip"),
        (create(payer=gateway_pb2.PayerHints(return_url="javascript:alert(1)")), "payer.return_url"),
        (create(payer=gateway_pb2.PayerHints(openid="o" * 500)), "payer.openid"),
        (create(description="\u202egnp.exe"), "description"),
        (create(wait_ms=-1), "wait_ms"),
    ]
    for request, field in cases:
        err = await refused(h.stub.CreateCollection, request, h.md())
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, err.code(), err.details())
        assert err.details().startswith(f"{field}:"), (field, err.details())
    err = await refused(h.stub.CloseCollection, gateway_pb2.CloseCollectionRequest(flow_no="x"), h.md())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith("flow_no:")
    await nothing_written(h)
