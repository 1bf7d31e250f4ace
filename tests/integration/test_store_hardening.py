"""The store's money paths on MariaDB under concurrency and odd servers.

One lock order (no deadlock between resolving a flow and applying an outcome),
ids mapped without auto-increment arithmetic, strict sessions, a bad row that
fails alone, only connection failures called retriable, counters that count
only what committed, per-card limits that hold when withholds race, and a
settlement below zero that is never silent.
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import replace
from datetime import date
from typing import Any

import pytest

from channels.contract import Outcome, OutcomeStatus
from gateway import metrics
from gateway.domain import FlowKind, FlowStatus
from gateway.errors import CardLimitReached, Conflict, DataRefused, StoreError
from gateway.store import db as db_module
from gateway.store.db import SESSION_SQL_MODE, Database, DatabaseConfig, Tx, migrate
from gateway.store.flows import MySQLFlowStore
from gateway.store.positions import MySQLPositionStore
from gateway.store.rows import Applied, CardLimit, Created, FlowRow, NewAttempt, NewFlow, Source

pytestmark = pytest.mark.integration

OK = Outcome(OutcomeStatus.SUCCEEDED, "OK", raw_code="00", channel_txn_id="T1")
DECLINED = Outcome(OutcomeStatus.FAILED, "INSUFFICIENT_FUNDS", raw_code="51", payer_attributable=True)
PENDING = Outcome(OutcomeStatus.PENDING, "PROCESSING", raw_code="P")


def new_flow(
    request_id: str, amount: int = 1_000, *, kind: FlowKind = FlowKind.WITHHOLD, bank: str = "ICBC"
) -> NewFlow:
    return NewFlow("loans", request_id, kind, amount, "CNY", f"h-{request_id}", "acct", "6222****1234", bank)


def attempt(channel: str = "sbx", *, reserve: bool = False, limit: CardLimit | None = None) -> NewAttempt:
    op = "payout" if reserve else "withhold"
    return NewAttempt(channel, op, {"reason": "test"}, reserve_position=reserve, card_limit=limit)


async def create(store: MySQLFlowStore, new: NewFlow, first: NewAttempt | None = None) -> FlowRow:
    creation = await store.create(new, first or attempt())
    assert isinstance(creation, Created)
    return creation.row


def counter(metric: Any) -> float:
    return float(metric._value.get())


# --- one lock order ---------------------------------------------------------------------------

# Set in the task of the transaction to hold after its first statement: (held, resume).
HOLD: contextvars.ContextVar[tuple[asyncio.Event, asyncio.Event] | None] = contextvars.ContextVar("hold", default=None)


class HoldingTx(Tx):
    """A unit of work that, in a task that set HOLD, stops after its first statement (its first locks)."""

    async def _hold(self) -> None:
        gate = HOLD.get()
        if gate is not None:
            HOLD.set(None)
            held, resume = gate
            held.set()
            await resume.wait()

    async def execute(self, sql: str, args: Any = None) -> int:
        n = await super().execute(sql, args)
        await self._hold()
        return n

    async def fetchone(self, sql: str, args: Any = None) -> dict[str, Any] | None:
        row = await super().fetchone(sql, args)
        await self._hold()
        return row

    async def fetchall(self, sql: str, args: Any = None) -> list[dict[str, Any]]:
        rows = await super().fetchall(sql, args)
        await self._hold()
        return rows

    async def script(self, statements: Any, *, commit: bool = False) -> Any:
        results = await super().script(statements, commit=commit)
        if not commit:
            await self._hold()
        return results


@pytest.mark.parametrize("group_commit", [False, True], ids=["one-by-one", "batch"])
async def test_resolving_a_flow_and_applying_its_outcome_never_deadlock(
    database: Database, monkeypatch: pytest.MonkeyPatch, group_commit: bool
) -> None:
    store = MySQLFlowStore(database, group_commit=group_commit)
    flow = await create(store, new_flow("r-1"))
    attempt_id = flow.attempts[0].id
    await store.apply_outcome(attempt_id, PENDING, Source.RESPONSE, poll_due_in_s=60)
    monkeypatch.setattr(db_module, "Tx", HoldingTx)
    held, resume = asyncio.Event(), asyncio.Event()

    async def operator() -> bool:
        HOLD.set((held, resume))
        return await store.resolve(flow, FlowStatus.SUCCEEDED, "ops", "bank statement", "TX-9")

    retries = counter(metrics.DB_CONFLICT_RETRIES)
    resolving = asyncio.create_task(operator())
    await asyncio.wait_for(held.wait(), 5)  # the operator's transaction holds its first locks
    late = asyncio.create_task(store.apply_outcome(attempt_id, DECLINED, Source.POLL))
    await asyncio.sleep(0.3)  # the poll's transition waits on a lock the operator holds
    resume.set()
    resolved, applied = await asyncio.gather(resolving, late, return_exceptions=True)
    assert resolved is True, resolved
    assert not isinstance(applied, BaseException), applied
    assert applied.applied is Applied.DISCREPANCY  # resolved SUCCEEDED first; the FAILED report is recorded
    assert counter(metrics.DB_CONFLICT_RETRIES) == retries, "a deadlock happened (and was retried)"
    stored = await store.by_id(flow.id)
    assert stored is not None and stored.status is FlowStatus.SUCCEEDED
    events = await database.fetchall("SELECT event_type FROM outbox WHERE flow_id=%s ORDER BY id", (flow.id,))
    assert [e["event_type"] for e in events] == ["FLOW_RESULT", "DISCREPANCY"]


async def test_racing_resolutions_and_outcomes_on_many_flows_all_finish_once(database: Database) -> None:
    store = MySQLFlowStore(database)
    flows = [await create(store, new_flow(f"r-{i}")) for i in range(20)]
    await asyncio.gather(*[store.apply_outcome(f.attempts[0].id, PENDING, Source.RESPONSE) for f in flows])
    results = await asyncio.gather(
        *[store.resolve(f, FlowStatus.FAILED, "ops", "statement", "") for f in flows],
        *[store.apply_outcome(f.attempts[0].id, OK, Source.CALLBACK) for f in flows],
        return_exceptions=True,
    )
    assert not [r for r in results if isinstance(r, BaseException)]
    rows = await database.fetchall(
        "SELECT flow_id, COUNT(*) AS n FROM outbox WHERE event_type='FLOW_RESULT' GROUP BY flow_id"
    )
    assert sorted(r["flow_id"] for r in rows) == sorted(f.id for f in flows) and {r["n"] for r in rows} == {1}


# --- ids without auto-increment arithmetic ------------------------------------------------------


async def test_a_batch_maps_its_rows_to_their_ids_whatever_the_auto_increment_settings(
    db_config: DatabaseConfig,
) -> None:
    """A failover to a server with other auto-increment settings under a running process."""
    await migrate(db_config)
    async with Database(replace(db_config, pool_min=1, pool_max=1)) as database:
        store = MySQLFlowStore(database)
        await asyncio.gather(*[create(store, new_flow(f"before-{i}")) for i in range(4)])  # settings read, if ever
        async with database.transaction() as tx:  # the one pooled session now steps ids by 7
            await tx.execute("SET SESSION auto_increment_increment = 7")
        flows = await asyncio.gather(*[create(store, new_flow(f"after-{i}", 1_000 + i)) for i in range(12)])
        stored = {
            r["flow_no"]: r
            for r in await database.fetchall(
                "SELECT f.flow_no, f.id AS flow_id, f.amount, a.id AS attempt_id, a.channel_order_no"
                " FROM flows f JOIN attempts a ON a.flow_id = f.id"
            )
        }
        assert len(stored) == 16, "every attempt belongs to its own flow"
        for i, flow in enumerate(flows):
            row = stored[flow.flow_no]
            [att] = flow.attempts
            assert (row["flow_id"], row["attempt_id"]) == (flow.id, att.id)
            assert row["amount"] == 1_000 + i and row["channel_order_no"] == att.channel_order_no


# --- strict sessions, a bad row fails alone ------------------------------------------------------


async def test_every_session_refuses_rather_than_cuts(database: Database) -> None:
    row = await database.fetchone("SELECT @@SESSION.sql_mode AS mode")
    assert row is not None and "STRICT_ALL_TABLES" in row["mode"].split(",")
    assert set(SESSION_SQL_MODE.split(",")) <= set(row["mode"].split(","))
    with pytest.raises(DataRefused, match="request_id"):
        async with database.transaction() as tx:
            await tx.execute(
                "INSERT INTO flows (flow_no, caller, request_id, kind, amount, currency, request_hash, status,"
                " created_at, updated_at) VALUES ('F', 'loans', %s, 'WITHHOLD', 1, 'CNY', 'h', 'PROCESSING',"
                " UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
                ("r" * 65,),  # (trailing white space is cut with a warning in any mode: validation refuses it)
            )


async def test_a_row_the_database_refuses_fails_alone_and_the_rest_of_its_batch_is_recorded(
    database: Database,
) -> None:
    store = MySQLFlowStore(database)
    # validation refuses such a bank code; the store is handed one directly (the test seam)
    results = await asyncio.gather(
        *[store.create(new_flow(f"ok-{i}"), attempt()) for i in range(6)],
        store.create(new_flow("bad", bank="ABCDEFGHIJKLMNOPQ"), attempt()),
        *[store.create(new_flow(f"ok-{i}"), attempt()) for i in range(6, 9)],
        return_exceptions=True,
    )
    bad = results[6]
    good = results[:6] + results[7:]
    assert isinstance(bad, DataRefused) and "bank_code" in str(bad) and not bad.retriable
    assert all(isinstance(r, Created) for r in good), good
    rows = await database.fetchall("SELECT request_id FROM flows ORDER BY id")
    assert sorted(r["request_id"] for r in rows) == sorted(f"ok-{i}" for i in range(9))


async def test_a_transition_the_database_refuses_fails_alone(database: Database) -> None:
    store = MySQLFlowStore(database)
    flows = [await create(store, new_flow(f"t-{i}")) for i in range(6)]
    absurd_fee = replace(OK, fee=2**63)  # over BIGINT: no channel would say it, the database refuses it
    outcomes = [OK, OK, absurd_fee, OK, OK, OK]
    results = await asyncio.gather(
        *[store.apply_outcome(f.attempts[0].id, o, Source.RESPONSE) for f, o in zip(flows, outcomes, strict=True)],
        return_exceptions=True,
    )
    assert isinstance(results[2], DataRefused)
    assert [r.applied for i, r in enumerate(results) if i != 2] == [Applied.TRANSITIONED] * 5  # type: ignore[union-attr]
    statuses = [r["status"] for r in await database.fetchall("SELECT status FROM flows ORDER BY id")]
    assert statuses == ["SUCCEEDED", "SUCCEEDED", "PROCESSING", "SUCCEEDED", "SUCCEEDED", "SUCCEEDED"]


# --- only connection failures are UNAVAILABLE ----------------------------------------------------


async def test_an_out_of_range_adjustment_is_not_retriable(database: Database) -> None:
    positions = MySQLPositionStore(database)
    await positions.sync("pay", "CNY", 2**63 - 10**14, seen=None)
    with pytest.raises(StoreError) as refused:
        await positions.adjust("pay", 10**15, "ops", "top up")  # within the validated bound, over BIGINT
    assert refused.value.grpc_status == "INTERNAL" and not refused.value.retriable


# --- what is counted is what committed ----------------------------------------------------------


async def test_a_discrepancy_is_counted_once_when_its_transaction_is_retried(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MySQLFlowStore(database, group_commit=False)
    flow = await create(store, new_flow("r-1"))
    await store.apply_outcome(flow.attempts[0].id, OK, Source.RESPONSE)
    real_commit = Tx.commit
    failures = [Conflict("Deadlock found when trying to get lock")]

    async def commit_once_refused(self: Tx) -> None:
        if failures:
            raise failures.pop()
        await real_commit(self)

    monkeypatch.setattr(Tx, "commit", commit_once_refused)
    counted = counter(metrics.DISCREPANCIES.labels(channel="sbx", source="callback"))
    try:
        result = await store.apply_outcome(flow.attempts[0].id, DECLINED, Source.CALLBACK)
    except Conflict:  # a store without retries: the caller (the callback handler) tries again
        result = await store.apply_outcome(flow.attempts[0].id, DECLINED, Source.CALLBACK)
    assert result.applied is Applied.DISCREPANCY
    assert counter(metrics.DISCREPANCIES.labels(channel="sbx", source="callback")) == counted + 1
    assert len(await database.fetchall("SELECT id FROM discrepancies")) == 1


# --- per-card daily limits hold when withholds race ------------------------------------------------


async def test_concurrent_withholds_on_one_card_cannot_pass_its_daily_limits_together(database: Database) -> None:
    store = MySQLFlowStore(database)
    limit = CardLimit(date(2026, 12, 1), max_attempts=3, max_amount=None)
    results = await asyncio.gather(
        *[store.create(new_flow(f"w-{i}"), attempt(limit=limit)) for i in range(12)], return_exceptions=True
    )
    others = [repr(r) for r in results if not isinstance(r, (Created, CardLimitReached))]
    assert sum(isinstance(r, Created) for r in results) == 3, others
    assert sum(isinstance(r, CardLimitReached) for r in results) == 9, others  # once 8 and a deadlock (below)
    [usage] = await database.fetchall("SELECT day, attempts, amount FROM card_usage")
    assert (usage["day"], usage["attempts"], usage["amount"]) == (date(2026, 12, 1), 3, 3_000)
    by_amount = CardLimit(date(2026, 12, 1), max_attempts=None, max_amount=5_000)
    results = await asyncio.gather(
        *[store.create(new_flow(f"a-{i}", 2_000), attempt("other", limit=by_amount)) for i in range(6)],
        return_exceptions=True,
    )
    assert sum(isinstance(r, Created) for r in results) == 2  # 2 x 2 000 fit in 5 000, a third does not


async def test_concurrent_withholds_on_one_card_queue_on_its_usage_row_instead_of_deadlocking(
    database: Database,
) -> None:
    # Warm connections let all 12 reach the card's row together (a fresh pool opens them one by one,
    # which hid it): with a shared lock taken first they deadlocked, and some ran out of retries (Conflict).
    await asyncio.gather(*[database.fetchall("SELECT SLEEP(0.05)") for _ in range(12)])
    store = MySQLFlowStore(database)
    limit = CardLimit(date(2026, 12, 1), max_attempts=3, max_amount=None)
    retries = counter(metrics.DB_CONFLICT_RETRIES)
    for card in range(5):
        results = await asyncio.gather(
            *[
                store.create(replace(new_flow(f"q-{card}-{i}"), account_hash=f"card-{card}"), attempt(limit=limit))
                for i in range(12)
            ],
            return_exceptions=True,
        )
        kinds = sorted(type(r).__name__ for r in results)
        others = [repr(r) for r in results if not isinstance(r, (Created, CardLimitReached))]
        assert kinds == ["CardLimitReached"] * 9 + ["Created"] * 3, (kinds, others)
    assert counter(metrics.DB_CONFLICT_RETRIES) == retries  # no deadlock at all, not only none left over


# --- a settlement below zero is recorded --------------------------------------------------------------


async def test_a_payout_settling_below_zero_is_recorded_counted_and_logged(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    store = MySQLFlowStore(database)
    positions = MySQLPositionStore(database)
    await positions.sync("pay", "CNY", 10_000, seen=None)
    payout = await create(store, new_flow("p-1", 8_000, kind=FlowKind.PAYOUT), attempt("pay", reserve=True))
    seen = await positions.get("pay")
    assert seen is not None
    await positions.sync("pay", "CNY", 5_000, seen=seen)  # the channel already paid it out: counted twice
    below = counter(metrics.POSITION_BELOW_ZERO.labels(channel="pay"))
    await store.apply_outcome(payout.attempts[0].id, OK, Source.RESPONSE)
    after = await positions.get("pay")
    assert after is not None and (after.balance, after.reserved) == (-3_000, 0)
    assert counter(metrics.POSITION_BELOW_ZERO.labels(channel="pay")) == below + 1
    [audit] = await database.fetchall(
        "SELECT operator, target, detail FROM audit_log WHERE action='position_below_zero'"
    )
    assert (audit["operator"], audit["target"]) == ("paygate", "pay") and '"balance": -3000' in audit["detail"]
    assert any(r.levelname == "ERROR" and "below zero" in r.getMessage() for r in caplog.records)
