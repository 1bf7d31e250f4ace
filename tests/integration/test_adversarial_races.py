"""Adversarial probes: concurrent duplicates of collections, plan submissions and settlement runs.

As for flows (test_adversarial_idempotency.py): one record, one channel order, one payment; the
duplicates with other parameters are refused naming the item, never half-written.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta

import grpc
import pytest

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.businessday import BusinessCalendar
from gateway.store.db import DatabaseConfig
from paygate.v1 import admin_pb2, plans_pb2, plans_pb2_grpc, splits_pb2, splits_pb2_grpc
from paygate.v1 import gateway_pb2 as pb
from tests.fakes.clock import FakeClock
from tests.integration.test_adversarial_idempotency import assert_conflicts, count, race
from tests.integration.test_splits_acceptance import ppm, withhold
from tests.support.harness import running_gateway
from tests.support.plans import plan_pb

pytestmark = pytest.mark.integration

CAL = BusinessCalendar.named("Asia/Shanghai")
XD_ACCOUNT, BANK_ACCOUNT = "6222020000000301", "6222020000000702"
FUNDERS = {
    "xd": {"name": "某某小额贷款有限公司", "payout_account": XD_ACCOUNT, "account_name": "XD", "settle_from": "bank-a"},
    "bank": {"name": "某某银行", "payout_account": BANK_ACCOUNT, "account_name": "Bank", "settle_from": "bank-a"},
}
PLANS = {
    "enabled": False,
    "policies": {"default": {"time_points": ["12:00"], "attempts_per_day": 1, "retry_days": 0}},
    "products": {"cash-loan": "default"},
}


def collection(
    rid: str, amount: int = 12_300, kind: int = pb.CASHIER_H5, expires_in_s: int = 60
) -> pb.CreateCollectionRequest:
    return pb.CreateCollectionRequest(
        request_id=rid,
        amount=pb.Money(amount=amount, currency="CNY"),
        cashier=kind,
        expires_in_s=expires_in_s,
        channel="sbx",
        description="第3期主动还款",
    )


async def test_racing_collections_under_one_request_id_make_one_order(db_config: DatabaseConfig) -> None:
    async with running_gateway(
        db_config,
        {"sbx": Behaviour(magic=False, p50_ms=30, p99_ms=80)},
        cashier={"min_expiry_s": 1, "default_expiry_s": 60},
    ) as h:
        variants = [
            collection("col-1"),
            collection("col-1", amount=12_301),
            collection("col-1", kind=pb.CASHIER_QR),
            collection("col-1", expires_in_s=120),
        ]
        flows, errors = await race([h.stub.CreateCollection(variants[i % 4], metadata=h.md()) for i in range(16)])
        assert len({f.flow_no for f in flows}) == 1 and len(flows) == 4 and len(errors) == 12
        assert_conflicts(errors)
        assert await count(h, "SELECT COUNT(*) AS n FROM flows") == 1
        assert await count(h, "SELECT COUNT(*) AS n FROM attempts") == 1
        assert await count(h, "SELECT COUNT(*) AS n FROM collections") == 1
        # every caller with the winning parameters got the same cashier, once it was handed out
        cashiers = {f.cashier.SerializeToString() for f in flows if f.cashier.kind}
        assert len(cashiers) <= 1
        # and the caller closing it twice at once closes it once
        flow_no = flows[0].flow_no
        closed, errors = await race(
            [h.stub.CloseCollection(pb.CloseCollectionRequest(flow_no=flow_no), metadata=h.md()) for _ in range(6)]
        )
        assert not errors and {f.flow_no for f in closed} == {flow_no}
        # another caller cannot close it, nor learn that it exists
        with pytest.raises(grpc.aio.AioRpcError) as theirs:
            await h.stub.CloseCollection(pb.CloseCollectionRequest(flow_no=flow_no), metadata=h.md("collections"))
        assert theirs.value.code() == grpc.StatusCode.NOT_FOUND


async def test_racing_plan_submissions_store_one_plan(db_config: DatabaseConfig) -> None:
    clock = FakeClock(datetime.now(UTC).replace(tzinfo=None))
    async with running_gateway(db_config, {"bank-a": Behaviour()}, clock=clock, plans=PLANS) as h:
        stub = plans_pb2_grpc.WithholdingPlansStub(h.channel)
        card = luhn_card()
        due = (CAL.today() + timedelta(days=5)).isoformat()
        same = plan_pb("pl-1", card, [("pl-1-1", due, 10_000), ("pl-1-2", due, 10_000)])
        other = plan_pb("pl-1", card, [("pl-1-1", due, 10_001), ("pl-1-2", due, 10_000)])
        requests = [plans_pb2.SubmitPlansRequest(plans=[same if i % 2 else other]) for i in range(10)]
        replies = await asyncio.gather(*(stub.SubmitPlans(r, metadata=h.md()) for r in requests))
        assert await count(h, "SELECT COUNT(*) AS n FROM plans") == 1
        assert await count(h, "SELECT COUNT(*) AS n FROM instalments") == 2
        rows = await h.gateway.db.fetchall("SELECT instalment_id, amount FROM instalments ORDER BY instalment_id")
        winner = {r["instalment_id"]: r["amount"] for r in rows}
        assert winner["pl-1-2"] == 10_000 and winner["pl-1-1"] in (10_000, 10_001)
        accepted = sum(r.instalments_accepted for r in replies)
        assert accepted == 2, replies  # written once, whoever raced
        for reply in replies:
            for rejection in reply.rejected:  # the losers' other amount, named
                assert rejection.code == "ALREADY_EXISTS" and rejection.instalment_id == "pl-1-1", reply
        refused = sum(len(r.rejected) for r in replies)
        assert refused == 5, replies  # the five that sent the other amount of pl-1-1


async def test_racing_settlement_runs_pay_each_funder_once(db_config: DatabaseConfig) -> None:
    clock = FakeClock(datetime.now(UTC).replace(tzinfo=None))
    async with running_gateway(
        db_config,
        {"bank-a": Behaviour(magic=False, p50_ms=20, p99_ms=60)},
        clock=clock,
        funders=FUNDERS,
        settlement={"enabled": False, "lookback_days": 0},
    ) as h:
        ledger = h.sims["bank-a"].ledger
        for account in (XD_ACCOUNT, BANK_ACCOUNT):
            ledger.set_balance(account, 0)
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        repay = await h.stub.Withhold(withhold("joint-1", card, 10_001, ppm(xd=300_000, bank=700_000)), metadata=h.md())
        assert repay.status == pb.SUCCEEDED
        day = CAL.today(datetime.now(UTC))
        clock.set(CAL.at(day + timedelta(days=1), time(1, 0)))
        stub = splits_pb2_grpc.SplitSettlementStub(h.channel)
        run = splits_pb2.RunSettlementRequest(business_day=day.isoformat(), reason="daily settlement")
        results = await asyncio.gather(*(stub.RunSettlement(run, metadata=h.op_md) for _ in range(8)))
        for reply in results:
            assert {s.funder_id: s.paid for s in reply.settlements} == {"xd": 3000, "bank": 7001}
        payouts = [e for e in ledger.entries() if e.kind.value == "payout"]
        assert sorted((e.account, e.status.value) for e in payouts) == [
            (XD_ACCOUNT, "SUCCEEDED"),
            (BANK_ACCOUNT, "SUCCEEDED"),
        ]
        assert (ledger.balance(XD_ACCOUNT), ledger.balance(BANK_ACCOUNT)) == (3000, 7001)
        assert await count(h, "SELECT COUNT(*) AS n FROM settlements") == 2


async def test_racing_refunds_of_a_split_withhold_never_refund_a_funder_beyond_its_part(
    db_config: DatabaseConfig,
) -> None:
    funders = {f: {"name": FUNDERS[f]["name"], "settle_from": "report"} for f in FUNDERS}
    async with running_gateway(
        db_config, {"bank-a": Behaviour(magic=False, p50_ms=20, p99_ms=60)}, funders=funders
    ) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        repay = await h.stub.Withhold(withhold("joint-2", card, 10_001, ppm(xd=300_000, bank=700_000)), metadata=h.md())
        assert repay.status == pb.SUCCEEDED and [(p.funder_id, p.amount) for p in repay.split.parts] == [
            ("xd", 3000),
            ("bank", 7001),
        ]

        def refund(i: int, amount: int) -> pb.RefundRequest:
            return pb.RefundRequest(
                request_id=f"jr-{i}",
                original_flow_no=repay.flow_no,
                amount=pb.Money(amount=amount, currency="CNY"),
                reason="提前还款退回",
                wait_ms=8000,
            )

        flows, errors = await race([h.stub.Refund(refund(i, 1_111), metadata=h.md()) for i in range(12)])
        assert len(flows) == 9 and all(f.status == pb.SUCCEEDED for f in flows), [f.status for f in flows]
        assert {e.code() for e in errors} == {grpc.StatusCode.FAILED_PRECONDITION}
        assert all(sum(p.amount for p in f.split.parts) == 1_111 for f in flows)
        got = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=repay.flow_no), metadata=h.md())
        refunded = {p.funder_id: (p.amount, p.refunded) for p in got.split.parts}
        assert sum(r for _, r in refunded.values()) == 9 * 1_111
        assert all(r <= a for a, r in refunded.values()), refunded
        rows = await h.gateway.db.fetchall("SELECT funder_id, SUM(amount) AS n FROM refund_splits GROUP BY funder_id")
        assert {r["funder_id"]: int(r["n"]) for r in rows} == {f: r for f, (_, r) in refunded.items()}


async def test_operators_resolving_one_flow_at_once_end_it_once(db_config: DatabaseConfig) -> None:
    async with running_gateway(
        db_config,
        {"bank-a": Behaviour(magic=False, settle_after_ms=(60_000, 60_001), pending_ratio=1.0)},
        poller={"interval_s": 0.1, "first_delay_s": 30, "schedule": [[30, 5]]},
    ) as h:
        assert h.admin is not None
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        flow = await h.stub.Withhold(
            pb.WithholdRequest(
                request_id="rs-1", amount=pb.Money(amount=10_000, currency="CNY"), account_no=card, bank_code="ICBC"
            ),
            metadata=h.md(),
        )
        assert flow.status == pb.PROCESSING

        def resolve(status: int, i: int) -> admin_pb2.ResolveFlowRequest:
            return admin_pb2.ResolveFlowRequest(
                flow_no=flow.flow_no, status=status, reason=f"statement {i}", channel_txn_id=f"B{i}"
            )

        results = await asyncio.gather(
            *(
                h.admin.ResolveFlow(resolve(pb.SUCCEEDED if i % 2 else pb.FAILED, i), metadata=h.op_md)
                for i in range(8)
            ),
            return_exceptions=True,
        )
        done = [r for r in results if isinstance(r, pb.Flow)]
        errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(done) + len(errors) == 8 and done
        assert {e.code() for e in errors} <= {grpc.StatusCode.FAILED_PRECONDITION}, [e.details() for e in errors]
        final = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())
        assert final.status in (pb.SUCCEEDED, pb.FAILED)
        assert all(d.status == final.status for d in done)  # nobody was told another ending
        events = await h.gateway.db.fetchall("SELECT event_type FROM outbox WHERE event_type='FLOW_RESULT'")
        assert len(events) == 1
        audit = await h.gateway.db.fetchall("SELECT action FROM audit_log WHERE action='resolve_flow'")
        assert len(audit) == 1
