"""Re-sending a funder's settlement payout the bank refused (docs/SPLITS.md), on real MariaDB and the sandbox bank.

Who was paid is read from the bank simulator's ledger (the funder's payout account). The bank refuses
payouts while its behaviour declines them (``account_frozen``: definite, nothing moved).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import grpc
import pytest

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.businessday import BusinessCalendar
from gateway.splits import cli as splits_cli
from gateway.store.db import DatabaseConfig
from gateway.store.splits import MySQLSplitStore
from paygate.v1 import gateway_pb2, splits_pb2, splits_pb2_grpc
from tests.console.test_console_http import client, csrf_of, sign_in
from tests.fakes.clock import FakeClock
from tests.integration.test_splits_acceptance import ppm, withhold
from tests.support.harness import OPERATOR_TOKEN, Harness, running_gateway
from tests.support.services import drop_db, new_db_config

XD_ACCOUNT, BANK_ACCOUNT = "6222020000000301", "6222020000000702"
FUNDERS = {
    "xd": {"name": "某某小额贷款有限公司", "payout_account": XD_ACCOUNT, "account_name": "XD", "settle_from": "bank-a"},
    "bank": {"name": "某某银行", "payout_account": BANK_ACCOUNT, "account_name": "Bank", "settle_from": "bank-a"},
}
VIEWER_TOKEN = "viewer-token-resend-0123456789"
OPERATORS = {"ops": {"token": OPERATOR_TOKEN, "role": "operator"}, "watcher": {"token": VIEWER_TOKEN, "role": "viewer"}}
SECRET = "console-resend-test-secret-0123456789abcdef"
CAL = BusinessCalendar.named("Asia/Shanghai")
FROZEN = {"declines": {"account_frozen": 1.0}}
VIEWER_MD = (("authorization", f"Bearer {VIEWER_TOKEN}"),)


@asynccontextmanager
async def failed_day(db_config: DatabaseConfig) -> AsyncIterator[tuple[Harness, date]]:
    """A day of one 30 : 70 split withhold (xd 30.00, bank 70.01) settled while the bank refused every payout."""
    clock = FakeClock(datetime.now(UTC).replace(tzinfo=None))
    async with running_gateway(
        db_config,
        {"bank-a": Behaviour(magic=False)},
        clock=clock,
        funders=FUNDERS,
        operators=OPERATORS,
        console={"enabled": True, "port": 0, "secret_key": SECRET},
        settlement={"enabled": False, "lookback_days": 0, "wait_s": 2.0},
    ) as h:
        for account in (XD_ACCOUNT, BANK_ACCOUNT):
            h.sims["bank-a"].ledger.set_balance(account, 0)
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        repay = await h.stub.Withhold(withhold("joint-1", card, 10_001, ppm(xd=300_000, bank=700_000)), metadata=h.md())
        assert repay.status == gateway_pb2.SUCCEEDED
        day = CAL.today(datetime.now(UTC))
        clock.set(CAL.at(day + timedelta(days=1), time(1, 0)))
        h.sims["bank-a"].behaviour.update(FROZEN)
        rows = {r.funder_id: r for r in await h.gateway.settlement.settle_through(day)}
        assert {f: (r.status, r.paid, r.payout_attempt) for f, r in rows.items()} == {
            "xd": ("PAYOUT_FAILED", 3000, 0),
            "bank": ("PAYOUT_FAILED", 7001, 0),
        }
        assert orders_to(h, XD_ACCOUNT) == ["FAILED"] and orders_to(h, BANK_ACCOUNT) == ["FAILED"]
        yield h, day


async def write(h: Harness, sql: str, args: tuple[Any, ...]) -> None:
    async with h.gateway.db.transaction() as tx:
        await tx.execute(sql, args)
        await tx.commit()


async def open_recon_item(h: Harness, day: date, flow_no: str, *, by_flow: bool) -> int:
    """An OPEN item of a (current) reconciliation run naming ``flow_no``: by its flow id, or (as a
    statement line we have no flow for would) only by the channel order number of its attempt."""
    async with h.gateway.db.transaction() as tx:
        run_id = await tx.insert(
            "INSERT INTO recon_runs (channel, day, seq, trigger_kind, status, started_at)"
            " VALUES ('bank-a', %s, 1, 'manual', 'SUCCEEDED', UTC_TIMESTAMP(6))",
            (day,),
        )
        await tx.execute(
            "INSERT INTO recon_items (run_id, channel, day, class, channel_order_no, flow_id, flow_no, operation,"
            " created_at) SELECT %s, 'bank-a', %s, 'status_mismatch', a.channel_order_no, IF(%s, f.id, NULL),"
            " IF(%s, f.flow_no, ''), 'payout', UTC_TIMESTAMP(6) FROM attempts a JOIN flows f ON f.id = a.flow_id"
            " WHERE f.flow_no=%s",
            (run_id, day, by_flow, by_flow, flow_no),
        )
        await tx.commit()
    return run_id


@pytest.fixture
def db_config() -> Iterator[DatabaseConfig]:
    """This file's own database (dropped afterwards)."""
    config = new_db_config("settle29")
    try:
        yield config
    finally:
        drop_db(config)


def payouts_to(h: Harness, account: str) -> int:
    """Payouts the bank made to ``account`` (money moved)."""
    return sum(
        1
        for e in h.sims["bank-a"].ledger.entries()
        if e.account == account and e.kind.value == "payout" and e.status.value == "SUCCEEDED"
    )


def orders_to(h: Harness, account: str) -> list[str]:
    """The status of every payout order the bank received for ``account``, in order."""
    return [
        e.status.value for e in h.sims["bank-a"].ledger.entries() if e.account == account and e.kind.value == "payout"
    ]


def stub(h: Harness) -> splits_pb2_grpc.SplitSettlementStub:
    return splits_pb2_grpc.SplitSettlementStub(h.channel)


def resend_rq(
    day: date, funder: str = "xd", reason: str = "account unfrozen"
) -> splits_pb2.ResendSettlementPayoutRequest:
    return splits_pb2.ResendSettlementPayoutRequest(funder_id=funder, business_day=day.isoformat(), reason=reason)


async def flow_status(h: Harness, flow_no: str) -> str:
    row = await h.gateway.db.fetchone("SELECT status FROM flows WHERE flow_no=%s", (flow_no,))
    assert row is not None
    return str(row["status"])


async def audits(h: Harness) -> list[dict[str, Any]]:
    return await h.gateway.db.fetchall(
        "SELECT operator, target, reason, detail FROM audit_log WHERE action='resend_settlement_payout' ORDER BY id"
    )


async def replaced(h: Harness, funder: str, day: date) -> list[tuple[int, str, str, str]]:
    rows = await MySQLSplitStore(h.gateway.db).replaced_payouts(funder, day)
    return [(int(r["attempt"]), r["request_id"], r["flow_no"], r["replaced_by"]) for r in rows]


async def test_a_failed_payout_is_re_sent_failed_again_then_paid_exactly_once(db_config: DatabaseConfig) -> None:
    async with failed_day(db_config) as (h, day):
        ledger = h.sims["bank-a"].ledger
        first = await h.gateway.settlement.store.settlement("xd", day)
        assert first is not None
        ymd = f"{day:%Y%m%d}"
        assert first.payout_request_id == f"settle:xd:{ymd}"

        # still frozen: the re-send (r1) fails the way the first payout did
        again = await stub(h).ResendSettlementPayout(resend_rq(day, reason="retry 1"), metadata=h.op_md)
        assert again.status == splits_pb2.SETTLEMENT_PAYOUT_FAILED
        assert (again.payout_attempt, again.payout_request_id) == (1, f"settle:xd:{ymd}:r1")
        assert again.payout_flow_no not in ("", first.payout_flow_no)
        assert await flow_status(h, again.payout_flow_no) == "FAILED"
        assert payouts_to(h, XD_ACCOUNT) == 0

        # an open reconciliation item on the payout r1 replaced (attempt 0) also stops a re-send
        h.sims["bank-a"].behaviour.update({"declines": {}})
        run_id = await open_recon_item(h, day, first.payout_flow_no, by_flow=False)
        with pytest.raises(grpc.aio.AioRpcError) as doubt:
            await stub(h).ResendSettlementPayout(resend_rq(day), metadata=h.op_md)
        assert doubt.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "open reconciliation item" in (doubt.value.details() or "")
        await write(h, "UPDATE recon_items SET resolution='EXPLAINED' WHERE run_id=%s", (run_id,))

        # unfrozen: the second re-send (r2, from the CLI) pays the settlement's amount
        address = f"127.0.0.1:{h.gateway.grpc_port}"
        cli = ["resend", "--address", address, "--token", OPERATOR_TOKEN, "--funder", "xd", "--day", day.isoformat()]
        assert await asyncio.to_thread(splits_cli.main, [*cli, "--reason", "account unfrozen"]) == 0
        paid = await h.gateway.settlement.store.settlement("xd", day)
        assert paid is not None
        assert (paid.status, paid.payout_attempt, paid.payout_request_id) == ("PAID", 2, f"settle:xd:{ymd}:r2")
        assert await flow_status(h, paid.payout_flow_no) == "SUCCEEDED"
        assert ledger.balance(XD_ACCOUNT) == 3000 and payouts_to(h, XD_ACCOUNT) == 1

        # nothing pays it again: another re-send, a re-run, the follow-up, the CLI
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub(h).ResendSettlementPayout(resend_rq(day), metadata=h.op_md)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "PAID" in (refused.value.details() or "")
        assert await asyncio.to_thread(splits_cli.main, [*cli, "--reason", "once more"]) == 1
        await h.gateway.settlement.settle_through(day, "xd")
        await h.gateway.settlement.follow_payouts()
        assert ledger.balance(XD_ACCOUNT) == 3000 and payouts_to(h, XD_ACCOUNT) == 1
        assert orders_to(h, XD_ACCOUNT) == ["FAILED", "FAILED", "SUCCEEDED"], "one bank order per attempt"
        assert ledger.balance(BANK_ACCOUNT) == 0, "the other funder's failed day was not touched"
        assert orders_to(h, BANK_ACCOUNT) == ["FAILED"]

        # the history: both replaced payouts, each FAILED; two audit rows
        assert await replaced(h, "xd", day) == [
            (0, f"settle:xd:{ymd}", first.payout_flow_no, f"settle:xd:{ymd}:r1"),
            (1, f"settle:xd:{ymd}:r1", again.payout_flow_no, f"settle:xd:{ymd}:r2"),
        ]
        assert await flow_status(h, first.payout_flow_no) == "FAILED"
        rows = await audits(h)
        assert [(r["operator"], r["target"], r["reason"]) for r in rows] == [
            ("ops", f"settlement:xd:{day.isoformat()}", "retry 1"),
            ("ops", f"settlement:xd:{day.isoformat()}", "account unfrozen"),
        ]
        detail = json.loads(rows[0]["detail"])
        assert detail == {
            "failed_request_id": f"settle:xd:{ymd}",
            "failed_flow_no": first.payout_flow_no,
            "request_id": f"settle:xd:{ymd}:r1",
            "attempt": 1,
            "amount": 3000,
            "currency": "CNY",
        }
        listed = await stub(h).ListSettlements(
            splits_pb2.ListSettlementsRequest(business_day=day.isoformat(), funder_id="xd"), metadata=h.op_md
        )
        assert [(s.status, s.payout_attempt) for s in listed.settlements] == [(splits_pb2.SETTLEMENT_PAID, 2)]


async def test_a_re_send_is_refused_unless_the_failed_payout_is_final_and_unquestioned(
    db_config: DatabaseConfig,
) -> None:
    async with failed_day(db_config) as (h, day):
        h.sims["bank-a"].behaviour.update({"declines": {}})
        xd = await h.gateway.settlement.store.settlement("xd", day)
        assert xd is not None
        flow = await h.gateway.db.fetchone("SELECT id FROM flows WHERE flow_no=%s", (xd.payout_flow_no,))
        assert flow is not None

        async def refused(funder: str = "xd") -> str:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub(h).ResendSettlementPayout(resend_rq(day, funder), metadata=h.op_md)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            return err.value.details() or ""

        # an OPEN reconciliation item for the failed payout (the statement may show it paid)
        run_id = await open_recon_item(h, day, xd.payout_flow_no, by_flow=True)
        assert "open reconciliation item" in await refused()
        await write(h, "UPDATE recon_items SET resolution='RESOLVED' WHERE run_id=%s", (run_id,))

        # a discrepancy recorded against the failed payout (a later success report)
        await write(
            h,
            "INSERT INTO discrepancies (flow_id, attempt_id, recorded_status, reported_status, source, created_at)"
            " VALUES (%s, 0, 'FAILED', 'SUCCEEDED', 'callback', UTC_TIMESTAMP(6))",
            (flow["id"],),
        )
        assert "discrepancy" in await refused()
        await write(h, "DELETE FROM discrepancies WHERE flow_id=%s", (flow["id"],))

        # a settlement that says PAYOUT_FAILED while its payout flow is not final (re-read in the transaction)
        await write(h, "UPDATE flows SET status='PROCESSING' WHERE id=%s", (flow["id"],))
        assert "is PROCESSING, not FAILED" in await refused()
        await write(h, "UPDATE flows SET status='FAILED' WHERE id=%s", (flow["id"],))
        # ... or one of its attempts is not FAILED (a success that came too late to count)
        await write(h, "UPDATE attempts SET status='PENDING' WHERE flow_id=%s", (flow["id"],))
        assert "an attempt that did not fail" in await refused()
        await write(h, "UPDATE attempts SET status='FAILED' WHERE flow_id=%s", (flow["id"],))

        # nothing was changed, nothing paid, nothing audited by the refusals
        same = await h.gateway.settlement.store.settlement("xd", day)
        assert same is not None and (same.status, same.payout_attempt) == ("PAYOUT_FAILED", 0)
        assert payouts_to(h, XD_ACCOUNT) == 0 and await audits(h) == [] and await replaced(h, "xd", day) == []

        # the conditions met: re-sent and paid; then not PAYOUT_FAILED any more
        done = await stub(h).ResendSettlementPayout(resend_rq(day), metadata=h.op_md)
        assert done.status == splits_pb2.SETTLEMENT_PAID and h.sims["bank-a"].ledger.balance(XD_ACCOUNT) == 3000
        assert "only PAYOUT_FAILED" in await refused()

        # a payout in flight (PAYING) is never re-sent
        h.sims["bank-a"].behaviour.update({"pending_ratio": 1.0, "settle_after_ms": [60_000, 60_000]})
        paying = await stub(h).ResendSettlementPayout(resend_rq(day, "bank"), metadata=h.op_md)
        assert paying.status == splits_pb2.SETTLEMENT_PAYING and paying.payout_attempt == 1
        assert "PAYING" in await refused("bank")
        assert orders_to(h, BANK_ACCOUNT) == ["FAILED", "PENDING"] and len(await audits(h)) == 2

        # a day without a settlement
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub(h).ResendSettlementPayout(resend_rq(day - timedelta(days=3)), metadata=h.op_md)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_two_racing_re_sends_pay_once(db_config: DatabaseConfig) -> None:
    async with failed_day(db_config) as (h, day):
        h.sims["bank-a"].behaviour.update({"declines": {}})
        got = await asyncio.gather(
            *(stub(h).ResendSettlementPayout(resend_rq(day, reason=f"operator {i}"), metadata=h.op_md) for i in (1, 2)),
            return_exceptions=True,
        )
        won = [g for g in got if isinstance(g, splits_pb2.Settlement)]
        lost = [g for g in got if isinstance(g, grpc.aio.AioRpcError)]
        assert len(won) == 1 and len(lost) == 1
        assert won[0].status == splits_pb2.SETTLEMENT_PAID and won[0].payout_attempt == 1
        assert lost[0].code() == grpc.StatusCode.FAILED_PRECONDITION
        assert h.sims["bank-a"].ledger.balance(XD_ACCOUNT) == 3000 and payouts_to(h, XD_ACCOUNT) == 1
        assert orders_to(h, XD_ACCOUNT) == ["FAILED", "SUCCEEDED"]
        assert len(await audits(h)) == 1 and len(await replaced(h, "xd", day)) == 1

        # the store's own guard: two transactions re-sending the same read, exactly one changes the row
        bank = await h.gateway.settlement.store.settlement("bank", day)
        assert bank is not None
        store = MySQLSplitStore(h.gateway.db)
        ymd = f"{day:%Y%m%d}"
        tries = await asyncio.gather(
            *(
                store.begin_resend(
                    "bank",
                    day,
                    attempt=0,
                    flow_no=bank.payout_flow_no,
                    request_id=f"settle:bank:{ymd}:r1",
                    operator=f"replica-{i}",
                    reason="race",
                )
                for i in range(4)
            )
        )
        assert sum(1 for t in tries if t.row is not None) == 1
        assert [t.refused for t in tries if t.row is None] == [
            "the settlement is PAYING: only a PAYOUT_FAILED one can be re-sent"
        ] * 3
        # recorded PAYING under r1 before anything is sent: a late answer about the replaced payout
        # changes nothing, and the scheduler's follow-up sends r1 once
        assert not await store.record_payout("bank", day, bank.payout_request_id, bank.payout_flow_no, "PAYOUT_FAILED")
        assert orders_to(h, BANK_ACCOUNT) == ["FAILED"], "nothing sent before the follow-up"
        assert await h.gateway.settlement.follow_payouts() == 1
        after = await store.settlement("bank", day)
        assert after is not None and (after.status, after.payout_request_id) == ("PAID", f"settle:bank:{ymd}:r1")
        assert h.sims["bank-a"].ledger.balance(BANK_ACCOUNT) == 7001 and orders_to(h, BANK_ACCOUNT) == [
            "FAILED",
            "SUCCEEDED",
        ]


async def test_the_rpc_names_the_bad_field_and_needs_an_operator(db_config: DatabaseConfig) -> None:
    async with failed_day(db_config) as (h, day):
        for request, field in (
            (resend_rq(day, funder=""), "funder_id"),
            (resend_rq(day, funder="Bad Id!"), "funder_id"),
            (resend_rq(day, funder="nobody"), "funder_id"),
            (
                splits_pb2.ResendSettlementPayoutRequest(funder_id="xd", business_day="2026-13-01", reason="x"),
                "business_day",
            ),
            (splits_pb2.ResendSettlementPayoutRequest(funder_id="xd", reason="x"), "business_day"),
            (resend_rq(day, reason=" "), "reason"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await stub(h).ResendSettlementPayout(request, metadata=h.op_md)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (bad.value.details() or "").startswith(f"{field}:")
        with pytest.raises(grpc.aio.AioRpcError) as viewer:
            await stub(h).ResendSettlementPayout(resend_rq(day), metadata=VIEWER_MD)
        assert viewer.value.code() == grpc.StatusCode.PERMISSION_DENIED
        row = await h.gateway.settlement.store.settlement("xd", day)
        assert row is not None and (row.status, row.payout_attempt) == ("PAYOUT_FAILED", 0)
        assert await audits(h) == []


async def test_the_console_re_sends_a_failed_row_with_a_reason(db_config: DatabaseConfig) -> None:
    async with failed_day(db_config) as (h, day):
        h.sims["bank-a"].behaviour.update({"declines": {}})
        base = f"http://127.0.0.1:{h.gateway.console_port}"
        page_path = f"/settlements?day={day.isoformat()}"
        async with client() as viewer:
            await sign_in(viewer, base, token=VIEWER_TOKEN)
            page = await (await viewer.get(f"{base}{page_path}")).text()
            assert 'action="/settlements/resend"' not in page, "a viewer is not offered the re-send"
            token = await csrf_of(viewer, base, "/channels")
            r = await viewer.post(
                f"{base}/settlements/resend",
                data={"csrf": token, "funder": "xd", "day": day.isoformat(), "reason": "x"},
            )
            assert r.status == 403
        async with client() as s:
            await sign_in(s, base)
            page = await (await s.get(f"{base}{page_path}")).text()
            assert page.count('action="/settlements/resend"') == 2, "offered on both PAYOUT_FAILED rows"
            token = await csrf_of(s, base, page_path)
            form = {"funder": "xd", "day": day.isoformat()}
            r = await s.post(f"{base}/settlements/resend", data={**form, "reason": "x"}, allow_redirects=False)
            assert r.status == 403, "no CSRF token, no change"
            r = await s.post(f"{base}/settlements/resend", data={"csrf": token, **form, "reason": " "})
            assert r.status == 200 and "reason: is required" in await r.text()
            assert payouts_to(h, XD_ACCOUNT) == 0 and await audits(h) == []
            r = await s.post(
                f"{base}/settlements/resend",
                data={"csrf": token, **form, "reason": "账户已解冻 unfrozen"},
                allow_redirects=False,
            )
            assert r.status == 303 and r.headers["Location"] == page_path
            page = await (await s.get(f"{base}{page_path}")).text()
            assert 'id="notice"' in page and f"settle:xd:{day:%Y%m%d}:r1" in page
            assert 'data-funder="xd" data-day="' + day.isoformat() + '" data-paid="3000" data-status="PAID"' in page
            assert page.count('action="/settlements/resend"') == 1, "no longer offered on the paid row"
            r = await s.post(f"{base}/settlements/resend", data={"csrf": token, **form, "reason": "again"})
            assert r.status == 200 and "is PAID: only PAYOUT_FAILED is re-sent" in await r.text()
        assert h.sims["bank-a"].ledger.balance(XD_ACCOUNT) == 3000
        assert orders_to(h, XD_ACCOUNT) == ["FAILED", "SUCCEEDED"]
        assert [(a["operator"], a["reason"]) for a in await audits(h)] == [("ops", "账户已解冻 unfrozen")]
