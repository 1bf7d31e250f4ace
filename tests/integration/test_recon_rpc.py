"""``paygate.v1.Reconciliation`` over gRPC on a running gateway (real MariaDB, a sandbox simulator over HTTP)."""

from __future__ import annotations

import grpc
import pytest

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.store.db import DatabaseConfig
from paygate.v1 import gateway_pb2, recon_pb2, recon_pb2_grpc
from tests.support.harness import OPERATOR_TOKEN, running_gateway

VIEWER_TOKEN = "viewer-token-0123456789abc"


async def test_run_list_mark_and_import_over_grpc(db_config: DatabaseConfig) -> None:
    operators = {
        "ops": {"token": OPERATOR_TOKEN, "role": "operator"},
        "watcher": {"token": VIEWER_TOKEN, "role": "viewer"},
    }
    async with running_gateway(db_config, {"bank-a": Behaviour()}, operators=operators) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        for i in range(3):
            flow = await h.stub.Withhold(
                gateway_pb2.WithholdRequest(
                    request_id=f"rc-{i}",
                    amount=gateway_pb2.Money(amount=10_000 + i * 100, currency="CNY"),
                    account_no=card,
                    bank_code="ICBC",
                ),
                metadata=h.md(),
            )
            assert flow.status == gateway_pb2.SUCCEEDED
        sim = h.sims["bank-a"]
        day = sim.ledger.booking_day(sim.ledger.now())
        sim.statements.faults.add_line(day, "GHOST9", 4_200)
        recon = recon_pb2_grpc.ReconciliationStub(h.channel)
        viewer = (("authorization", f"Bearer {VIEWER_TOKEN}"),)

        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await recon.Run(
                recon_pb2.RunReconRequest(channel="bank-a", business_day=day.isoformat(), reason="x"), metadata=viewer
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

        run = await recon.Run(
            recon_pb2.RunReconRequest(channel="bank-a", business_day=day.isoformat(), reason="morning check"),
            metadata=h.op_md,
        )
        assert (run.status, run.outcome, run.lines, run.matched, run.discrepancies) == (
            "SUCCEEDED",
            "inconsistent",
            4,
            3,
            1,
        )
        withhold = next(t for t in run.totals if t.kind == "withhold")
        assert (withhold.statement_count, withhold.local_count) == (4, 3)
        assert withhold.statement_amount == withhold.local_amount + 4_200

        listed = await recon.ListDiscrepancies(
            recon_pb2.ListReconDiscrepanciesRequest(business_day=day.isoformat()), metadata=viewer
        )
        [item] = listed.items
        assert (getattr(item, "class"), item.critical, item.channel_order_no, item.line_amount) == (
            "channel_only",
            True,
            "GHOST9",
            4_200,
        )
        marked = await recon.ResolveDiscrepancy(
            recon_pb2.ResolveReconDiscrepancyRequest(
                id=item.id, resolution="EXPLAINED", reason="a test order of the bank"
            ),
            metadata=h.op_md,
        )
        assert (marked.resolution, marked.resolved_by) == ("EXPLAINED", "ops")
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await recon.ResolveDiscrepancy(
                recon_pb2.ResolveReconDiscrepancyRequest(id=item.id, resolution="RESOLVED", reason="twice"),
                metadata=h.op_md,
            )
        assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        audit = await h.gateway.db.fetchall("SELECT operator, action FROM audit_log WHERE action LIKE 'recon%%'")
        assert sorted((a["operator"], a["action"]) for a in audit) == [("ops", "recon_mark"), ("ops", "recon_run")]

        bad = (
            b"# sandbox statement v1\n# merchant_id: m\n# day: " + day.isoformat().encode() + b"\n# timezone: +08:00\n"
        )
        bad += b"order_no,kind,status,amount,currency,fee,booked_at,txn_id,original_order_no,original_txn_id\n"
        bad += b"X1,withhold,SUCCEEDED,12x,CNY,0,2026-03-05T02:03:04.250000Z,T1,,\n"
        with pytest.raises(grpc.aio.AioRpcError) as malformed:
            await recon.Import(
                recon_pb2.ImportStatementRequest(
                    channel="bank-a",
                    business_day=day.isoformat(),
                    format="sandbox",
                    content=bad,
                    file_name="bank-a.csv",
                    reason="e-mailed",
                ),
                metadata=h.op_md,
            )
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "content" in malformed.value.details() and "line 6" in malformed.value.details()
        runs = await recon.ListRuns(recon_pb2.ListReconRunsRequest(channel="bank-a"), metadata=viewer)
        assert [(r.trigger, r.status) for r in runs.runs] == [("import", "FAILED"), ("manual", "SUCCEEDED")]
