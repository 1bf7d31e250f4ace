"""Issue 18 acceptance on real MariaDB and the sandbox simulators over HTTP: joint-loan splits and settlement.

Who was paid is read from the simulator's ledger (the funder's payout account), not from the gateway.
Days before today are made by moving the success time of the day's small orders back (the
database's record of when they succeeded), since a day's parts are the parts that succeeded on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import grpc
import pytest

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.app import Gateway
from gateway.businessday import BusinessCalendar
from gateway.config import from_mapping
from gateway.splits import cli as splits_cli
from gateway.store.db import DatabaseConfig
from paygate.v1 import events_pb2, gateway_pb2, plans_pb2, plans_pb2_grpc, splits_pb2, splits_pb2_grpc
from tests.fakes.clock import FakeClock
from tests.support.harness import OPERATOR_TOKEN, Harness, gateway_config, running_gateway

XD_ACCOUNT, BANK_ACCOUNT, RPT_ACCOUNT = "6222020000000301", "6222020000000702", "6222020000000999"
FUNDERS = {
    "xd": {
        "name": "某某小额贷款有限公司",
        "payout_account": XD_ACCOUNT,
        "account_name": "XD Small Loans",
        "settle_from": "bank-a",
    },
    "bank": {
        "name": "某某银行",
        "payout_account": BANK_ACCOUNT,
        "account_name": "Some Bank",
        "settle_from": "bank-a",
    },
    "rpt": {"name": "报表出资方", "settle_from": "report"},
}
CAL = BusinessCalendar.named("Asia/Shanghai")


def ppm(**shares: int) -> list[gateway_pb2.FunderShare]:
    return [gateway_pb2.FunderShare(funder_id=k, ppm=v) for k, v in shares.items()]


def fixed(**shares: int) -> list[gateway_pb2.FunderShare]:
    return [gateway_pb2.FunderShare(funder_id=k, amount=v) for k, v in shares.items()]


def withhold(
    request_id: str, card: str, amount: int, shares: list[gateway_pb2.FunderShare]
) -> gateway_pb2.WithholdRequest:
    return gateway_pb2.WithholdRequest(
        request_id=request_id,
        amount=gateway_pb2.Money(amount=amount, currency="CNY"),
        account_no=card,
        bank_code="ICBC",
        shares=shares,
        wait_ms=8000,
    )


def refund(request_id: str, flow_no: str, amount: int) -> gateway_pb2.RefundRequest:
    return gateway_pb2.RefundRequest(
        request_id=request_id,
        original_flow_no=flow_no,
        amount=gateway_pb2.Money(amount=amount, currency="CNY"),
        reason="partial prepayment returned",
        wait_ms=8000,
    )


def parts(flow: gateway_pb2.Flow) -> list[tuple[str, int, int]]:
    return [(p.funder_id, p.amount, p.refunded) for p in flow.split.parts]


def tomorrow_morning() -> datetime:
    """01:00 tomorrow in the business timezone (past the default settle_after), naive UTC."""
    today = CAL.today(datetime.now(UTC))
    return CAL.at(today + timedelta(days=1), time(1, 0))


def settlements_stub(h: Harness) -> splits_pb2_grpc.SplitSettlementStub:
    return splits_pb2_grpc.SplitSettlementStub(h.channel)


async def shift_days(h: Harness, flow_nos: list[str], days: int) -> None:
    """Move the small orders of these flows (withholds or refunds) ``days`` back."""
    for flow_no in flow_nos:
        row = await h.gateway.db.fetchone("SELECT id FROM flows WHERE flow_no=%s", (flow_no,))
        assert row is not None
        async with h.gateway.db.transaction() as tx:
            for table, column in (("splits", "flow_id"), ("refund_splits", "refund_flow_id")):
                await tx.execute(
                    f"UPDATE {table} SET succeeded_at = succeeded_at - INTERVAL %s DAY WHERE {column}=%s",
                    (days, row["id"]),
                )
            await tx.commit()


def payouts_to(h: Harness, account: str) -> int:
    return sum(1 for e in h.sims["bank-a"].ledger.entries() if e.account == account and e.kind.value == "payout")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(tzinfo=None))


@asynccontextmanager
async def split_stack(db_config: DatabaseConfig, clock: FakeClock, *, lookback_days: int) -> AsyncIterator[Harness]:
    """One sandbox bank (magic amounts off), the funders, the scheduler off (the tests settle), a card bound."""
    async with running_gateway(
        db_config,
        {"bank-a": Behaviour(magic=False)},
        clock=clock,
        funders=FUNDERS,
        settlement={"enabled": False, "lookback_days": lookback_days},
    ) as h:
        for account in (XD_ACCOUNT, BANK_ACCOUNT):
            h.sims["bank-a"].ledger.set_balance(account, 0)
        yield h


async def test_a_day_of_split_withholds_and_refunds_settles_each_funder_once(
    db_config: DatabaseConfig, clock: FakeClock, tmp_path: Path
) -> None:
    async with split_stack(db_config, clock, lookback_days=0) as h:
        ledger = h.sims["bank-a"].ledger
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])

        # 30 : 70 over 100.01 yuan: the parts sum to the whole, the odd fen by largest remainder
        w1 = await h.stub.Withhold(withhold("jl-1", card, 10001, ppm(xd=300_000, bank=700_000)), metadata=h.md())
        assert w1.status == gateway_pb2.SUCCEEDED
        assert parts(w1) == [("xd", 3000, 0), ("bank", 7001, 0)]
        again = await h.stub.Withhold(withhold("jl-1", card, 10001, ppm(xd=300_000, bank=700_000)), metadata=h.md())
        assert again.replayed and parts(again) == parts(w1)
        with pytest.raises(grpc.aio.AioRpcError) as conflict:  # the shares are part of the request
            await h.stub.Withhold(withhold("jl-1", card, 10001, ppm(xd=400_000, bank=600_000)), metadata=h.md())
        assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS

        w2 = await h.stub.Withhold(withhold("jl-2", card, 20000, fixed(xd=5000, bank=14000, rpt=1000)), metadata=h.md())
        assert parts(w2) == [("xd", 5000, 0), ("bank", 14000, 0), ("rpt", 1000, 0)]
        plain = await h.stub.Withhold(
            gateway_pb2.WithholdRequest(
                request_id="plain-1",
                amount=gateway_pb2.Money(amount=777, currency="CNY"),
                account_no=card,
                bank_code="ICBC",
            ),
            metadata=h.md(),
        )
        assert plain.status == gateway_pb2.SUCCEEDED and not plain.split.parts

        r1 = await h.stub.Refund(refund("jl-1-r1", w1.flow_no, 5001), metadata=h.md())
        assert r1.status == gateway_pb2.SUCCEEDED
        assert [(p.funder_id, p.amount) for p in r1.split.parts] == [("xd", 1500), ("bank", 3501)]
        w1_now = await h.stub.GetFlow(gateway_pb2.GetFlowRequest(flow_no=w1.flow_no), metadata=h.md())
        assert parts(w1_now) == [("xd", 3000, 1500), ("bank", 7001, 3501)]
        r2 = await h.stub.Refund(refund("jl-2-r1", w2.flow_no, 1), metadata=h.md())
        assert sum(p.amount for p in r2.split.parts) == 1

        # the result events carry the split
        rows = await h.gateway.db.fetchall(
            "SELECT payload FROM outbox WHERE event_type='FLOW_RESULT' AND msg_key=%s", (w1.flow_no,)
        )
        assert len(rows) == 1
        event = events_pb2.FlowEvent.FromString(rows[0]["payload"])
        assert [(p.funder_id, p.amount) for p in event.split.parts] == [("xd", 3000), ("bank", 7001)]

        admin = settlements_stub(h)
        today = CAL.today(datetime.now(UTC))
        with pytest.raises(grpc.aio.AioRpcError) as early:
            await admin.RunSettlement(
                splits_pb2.RunSettlementRequest(business_day=today.isoformat(), reason="too early"),
                metadata=h.op_md,
            )
        assert early.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        clock.set(tomorrow_morning())
        run = splits_pb2.RunSettlementRequest(business_day=today.isoformat(), reason="daily settlement")
        settled = {s.funder_id: s for s in (await admin.RunSettlement(run, metadata=h.op_md)).settlements}
        expected = {"xd": 3000 + 5000 - 1500, "bank": 7001 + 14000 - 3501 - r2.split.parts[1].amount}
        for funder_id, net in expected.items():
            assert settled[funder_id].net == net
            assert settled[funder_id].status == splits_pb2.SETTLEMENT_PAID
            assert settled[funder_id].paid == net
        assert settled["rpt"].status == splits_pb2.SETTLEMENT_REPORTED and settled["rpt"].paid == 0
        assert ledger.balance(XD_ACCOUNT) == expected["xd"]
        assert ledger.balance(BANK_ACCOUNT) == expected["bank"]

        # a re-run pays nothing more
        await admin.RunSettlement(run, metadata=h.op_md)
        assert ledger.balance(XD_ACCOUNT) == expected["xd"] and payouts_to(h, XD_ACCOUNT) == 1
        assert ledger.balance(BANK_ACCOUNT) == expected["bank"] and payouts_to(h, BANK_ACCOUNT) == 1

        # the statement: every small order, totals equal to the payout
        statement = await admin.GetStatement(
            splits_pb2.StatementRequest(funder_id="bank", business_day=today.isoformat()), metadata=h.op_md
        )
        assert statement.filename == f"settlement-bank-{today:%Y%m%d}.csv"
        assert "出资方金额 funder_amount" in statement.csv
        assert w1.flow_no in statement.csv and w2.flow_no in statement.csv and r1.flow_no in statement.csv
        assert plain.flow_no not in statement.csv
        paid_line = next(line for line in statement.csv.splitlines() if line.startswith("结算支付 paid"))
        assert paid_line.split(",")[1] == f"{expected['bank'] // 100}.{expected['bank'] % 100:02d}"

        # the same statement from the CLI (through the admin API)
        out = tmp_path / "bank.csv"
        address = f"127.0.0.1:{h.gateway.grpc_port}"
        cli = ["statement", "--address", address, "--token", OPERATOR_TOKEN, "--funder", "bank", "--day"]
        assert await asyncio.to_thread(splits_cli.main, [*cli, today.isoformat(), "--out", str(out)]) == 0
        assert out.read_bytes().decode("utf-8") == statement.csv
        assert await asyncio.to_thread(splits_cli.main, [*cli[:-3], "--funder", "nobody", "--day", "x"]) == 1

        # a second replica with its scheduler on settles nothing more
        second_raw = gateway_config(
            db_config,
            h.sims,
            funders=FUNDERS,
            settlement={"enabled": True, "tick_s": 0.05, "lookback_days": 0},
            server={"replica_id": "second"},
        )
        second = Gateway.build(from_mapping(second_raw), clock=clock)
        await second.start()
        try:
            await asyncio.sleep(0.5)
        finally:
            await second.stop()
        assert payouts_to(h, XD_ACCOUNT) == 1 and payouts_to(h, BANK_ACCOUNT) == 1
        assert ledger.balance(XD_ACCOUNT) == expected["xd"]


async def test_unknown_funders_and_bad_shares_are_refused_naming_the_field(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour(magic=False)}, funders=FUNDERS) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        cases = [
            (ppm(xd=300_000, nobody=700_000), "shares[1].funder_id"),
            (ppm(xd=300_000, bank=600_000), "shares.ppm"),
            (fixed(xd=300, bank=600), "shares.amount"),
            ([*ppm(xd=500_000), *fixed(bank=500)], "shares"),
        ]
        for i, (shares, field) in enumerate(cases):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await h.stub.Withhold(withhold(f"bad-{i}", card, 1000, shares), metadata=h.md())
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in (err.value.details() or "")
        n = await h.gateway.db.fetchone("SELECT COUNT(*) AS n FROM flows")
        assert n is not None and n["n"] == 0  # nothing half-written


async def test_a_negative_net_is_carried_to_the_next_day_never_paid_negative(
    db_config: DatabaseConfig, clock: FakeClock
) -> None:
    async with split_stack(db_config, clock, lookback_days=7) as h:
        ledger = h.sims["bank-a"].ledger
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        shares = ppm(xd=500_000, bank=500_000)
        # day -3: 100.00 withheld, 50.00 each
        d3 = await h.stub.Withhold(withhold("c-1", card, 10000, shares), metadata=h.md())
        await shift_days(h, [d3.flow_no], 3)
        # day -2: the whole withhold refunded: -50.00 each
        r = await h.stub.Refund(refund("c-1-r", d3.flow_no, 10000), metadata=h.md())
        assert [(p.funder_id, p.amount) for p in r.split.parts] == [("xd", 5000), ("bank", 5000)]
        await shift_days(h, [r.flow_no], 2)
        # day -1: 60.00 withheld: 30.00 - 50.00 = -20.00 carried
        d1 = await h.stub.Withhold(withhold("c-2", card, 6000, shares), metadata=h.md())
        await shift_days(h, [d1.flow_no], 1)
        # today: 100.00 withheld: 50.00 - 20.00 = 30.00 paid
        await h.stub.Withhold(withhold("c-3", card, 10000, shares), metadata=h.md())

        clock.set(tomorrow_morning())
        today = CAL.today(datetime.now(UTC))
        # the scheduler's tick: yesterday (the real today) and the unsettled days before it, in order
        await h.gateway.settlement.tick()
        rows = await settlements_stub(h).ListSettlements(
            splits_pb2.ListSettlementsRequest(funder_id="xd", limit=10), metadata=h.op_md
        )
        by_day = {s.business_day: s for s in rows.settlements}
        day = [(today - timedelta(days=n)).isoformat() for n in (3, 2, 1, 0)]
        assert (by_day[day[0]].net, by_day[day[0]].paid, by_day[day[0]].status) == (
            5000,
            5000,
            splits_pb2.SETTLEMENT_PAID,
        )
        assert (by_day[day[1]].net, by_day[day[1]].paid, by_day[day[1]].carried_out) == (-5000, 0, -5000)
        assert by_day[day[1]].status == splits_pb2.SETTLEMENT_CARRIED
        assert (by_day[day[2]].carried_in, by_day[day[2]].net, by_day[day[2]].carried_out) == (-5000, -2000, -2000)
        assert (by_day[day[3]].carried_in, by_day[day[3]].net, by_day[day[3]].paid) == (-2000, 3000, 3000)
        assert ledger.balance(XD_ACCOUNT) == 5000 + 3000
        assert payouts_to(h, XD_ACCOUNT) == 2
        await h.gateway.settlement.tick()  # again: nothing more
        assert ledger.balance(XD_ACCOUNT) == 8000 and payouts_to(h, XD_ACCOUNT) == 2


async def test_a_plan_instalment_with_shares_is_withheld_split(db_config: DatabaseConfig) -> None:
    day = CAL.today(datetime.now(UTC))
    clock = FakeClock(CAL.at(day, time(8, 0)))
    plans = {
        "enabled": False,  # the test steps the executor
        "wait_s": 5.0,
        "policies": {"default": {"time_points": ["12:00"], "retry_days": 0}},
        "products": {"cash-loan": "default"},
    }
    async with running_gateway(
        db_config, {"bank-a": Behaviour(magic=False)}, clock=clock, plans=plans, funders=FUNDERS
    ) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        stub = plans_pb2_grpc.WithholdingPlansStub(h.channel)

        def instalment(iid: str, shares: list[gateway_pb2.FunderShare]) -> plans_pb2.InstalmentSpec:
            return plans_pb2.InstalmentSpec(
                instalment_id=iid,
                due_date=day.isoformat(),
                amount=gateway_pb2.Money(amount=10001, currency="CNY"),
                shares=shares,
            )

        spec = plans_pb2.PlanSpec(
            plan_id="jl-plan",
            product="cash-loan",
            account_no=card,
            bank_code="ICBC",
            instalments=[
                instalment("jl-plan-1", ppm(xd=300_000, bank=700_000)),
                instalment("jl-plan-bad", ppm(xd=300_000, nobody=700_000)),
            ],
        )
        reply = await stub.SubmitPlans(plans_pb2.SubmitPlansRequest(plans=[spec]), metadata=h.md())
        assert [(r.instalment_id, r.field) for r in reply.rejected] == [
            ("jl-plan-bad", "plans[0].instalments[1].shares[1].funder_id")
        ]
        clock.set(CAL.at(day, time(12, 0)))
        assert h.gateway.executor is not None
        await h.gateway.executor.settle()
        row = await h.gateway.db.fetchone(
            "SELECT f.flow_no FROM instalments i JOIN flows f ON f.id = i.flow_id WHERE i.instalment_id='jl-plan-1'"
        )
        assert row is not None
        flow = await h.stub.GetFlow(gateway_pb2.GetFlowRequest(flow_no=row["flow_no"]), metadata=h.md())
        assert flow.status == gateway_pb2.SUCCEEDED and flow.request_id.startswith("plan:")
        assert parts(flow) == [("xd", 3000, 0), ("bank", 7001, 0)]
