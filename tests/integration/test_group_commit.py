"""Group commit in the store: concurrent creations and transitions share commits and stay correct.

Every test compares what each caller was told with what MariaDB holds, so a
batch that mixed up ids, lost a row or answered before its commit would fail.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from channels.contract import Outcome, OutcomeStatus
from gateway.domain import FlowKind
from gateway.store.db import Database
from gateway.store.flows import MySQLFlowStore
from gateway.store.rows import Applied, ApplyResult, Created, Existing, FlowRow, NewAttempt, NewFlow, Source

OK = Outcome(OutcomeStatus.SUCCEEDED, "OK", raw_code="0000", channel_txn_id="txn")
DECLINED = Outcome(OutcomeStatus.FAILED, "INSUFFICIENT_FUNDS", raw_code="51", payer_attributable=True)
BUSY = Outcome(OutcomeStatus.FAILED, "CHANNEL_BUSY", raw_code="96", safe_elsewhere=True)
PENDING = Outcome(OutcomeStatus.PENDING, "PROCESSING", raw_code="P")


def new_flow(request_id: str, amount: int = 1000, caller: str = "loans") -> NewFlow:
    return NewFlow(
        caller=caller,
        request_id=request_id,
        kind=FlowKind.WITHHOLD,
        amount=amount,
        currency="CNY",
        request_hash=f"hash-{request_id}-{amount}",
        account_hash="acct",
        account_masked="6222****1234",
        bank_code="ICBC",
    )


def attempt(channel: str = "sbx", reserve: bool = False) -> NewAttempt:
    op = "payout" if reserve else "withhold"
    return NewAttempt(channel=channel, operation=op, decision={"reason": "test"}, reserve_position=reserve)


async def rows(db: Database, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    return await db.fetchall(sql, args)


async def create(store: MySQLFlowStore, new: NewFlow, first: NewAttempt) -> FlowRow:
    creation = await store.create(new, first)
    assert isinstance(creation, Created)
    return creation.row


async def create_many(store: MySQLFlowStore, n: int, prefix: str) -> list[FlowRow]:
    return list(
        await asyncio.gather(*[create(store, new_flow(f"{prefix}-{i}", 1000 + i), attempt()) for i in range(n)])
    )


async def test_concurrent_creates_share_a_commit_and_get_their_own_ids(database: Database) -> None:
    store = MySQLFlowStore(database)
    async with database.transaction() as tx:  # ids of the two tables apart, so a mix-up cannot pass by chance
        await tx.execute("ALTER TABLE attempts AUTO_INCREMENT = 5000")
        await tx.commit()
    before = database.commits
    flows = await create_many(store, 40, "c")
    assert database.commits - before < 40 / 4, "concurrent creations should share commits"
    stored = {r["id"]: r for r in await rows(database, "SELECT id, flow_no, request_id, amount, status FROM flows")}
    assert len(stored) == 40
    for i, flow in enumerate(flows):
        row = stored[flow.id]
        assert (row["flow_no"], row["request_id"], row["amount"]) == (flow.flow_no, f"c-{i}", 1000 + i)
        assert row["status"] == "PROCESSING"
        [att] = flow.attempts
        [arow] = await rows(database, "SELECT * FROM attempts WHERE id=%s", (att.id,))
        assert arow["flow_id"] == flow.id and arow["channel_order_no"] == att.channel_order_no
        assert arow["status"] == "SENDING" and arow["amount"] == 1000 + i


async def test_a_replay_inside_a_batch_is_answered_as_a_replay(database: Database) -> None:
    store = MySQLFlowStore(database)
    first = await create(store, new_flow("dup-old"), attempt())
    results = await asyncio.gather(
        *[store.create(new_flow(f"fresh-{i}"), attempt()) for i in range(10)],
        store.create(new_flow("dup-old"), attempt()),  # already recorded
        store.create(new_flow("dup-new"), attempt()),
        store.create(new_flow("dup-new"), attempt()),  # the same request twice in one batch
        return_exceptions=True,
    )
    fresh, old, new_a, new_b = results[:10], results[10], results[11], results[12]
    assert all(isinstance(f, Created) for f in fresh)
    assert isinstance(old, Existing) and old.row.flow_no == first.flow_no
    hits = [r for r in (new_a, new_b) if isinstance(r, Existing)]
    made = [r for r in (new_a, new_b) if isinstance(r, Created)]
    assert len(hits) == 1 and len(made) == 1 and hits[0].row.flow_no == made[0].row.flow_no
    [count] = await rows(database, "SELECT COUNT(*) AS n FROM flows")
    [attempts] = await rows(database, "SELECT COUNT(*) AS n FROM attempts")
    assert count["n"] == attempts["n"] == 12  # dup-old, 10 fresh, dup-new once


@pytest.mark.parametrize("group_commit", [True, False])
async def test_concurrent_transitions_match_one_by_one_semantics(database: Database, group_commit: bool) -> None:
    store = MySQLFlowStore(database, group_commit=group_commit)
    flows = await create_many(store, 30, "t")
    ids = [f.attempts[0].id for f in flows]
    calls: list[tuple[int, Outcome, bool]] = []
    calls += [(ids[i], OK, True) for i in range(0, 10)]
    calls += [(ids[i], DECLINED, True) for i in range(10, 18)]
    calls += [(ids[i], PENDING, True) for i in range(18, 24)]
    calls += [(ids[i], BUSY, False) for i in range(24, 30)]  # the caller fails over: the flow stays open
    calls += [(ids[0], DECLINED, True)]  # contradicts the success above: a discrepancy, never an overwrite
    calls += [(ids[18], PENDING, True)]  # the same pending report twice
    calls += [(987654321, OK, True)]  # no such attempt
    before = database.commits
    results: list[ApplyResult] = list(
        await asyncio.gather(
            *[
                store.apply_outcome(a, o, Source.RESPONSE, finish_flow_on_failure=f, poll_due_in_s=60)
                for a, o, f in calls
            ]
        )
    )
    if group_commit:
        assert database.commits - before < len(calls) / 2
    assert [r.applied for r in results[:30]] == [Applied.TRANSITIONED] * 30
    assert [r.flow_finished for r in results[:30]] == [True] * 18 + [False] * 12
    assert results[30].applied is Applied.DISCREPANCY
    assert results[31].applied in (Applied.STILL_PENDING, Applied.TRANSITIONED)
    assert [results[18].applied, results[31].applied].count(Applied.TRANSITIONED) == 1
    assert results[32].applied is Applied.UNKNOWN
    for r in results[:18]:
        assert r.flow is not None and r.attempt is not None and r.flow.status.value == r.attempt.status.value

    by_flow = {r["id"]: r for r in await rows(database, "SELECT * FROM flows")}
    by_attempt = {r["id"]: r for r in await rows(database, "SELECT * FROM attempts")}
    for i, flow in enumerate(flows):
        f, a = by_flow[flow.id], by_attempt[ids[i]]
        want_attempt = "SUCCEEDED" if i < 10 else "FAILED" if i < 18 else "PENDING" if i < 24 else "FAILED"
        want_flow = "SUCCEEDED" if i < 10 else "FAILED" if i < 18 else "PROCESSING"
        assert (a["status"], f["status"]) == (want_attempt, want_flow), i
        if i < 10:
            assert f["channel_txn_id"] == "txn" and f["channel"] == "sbx" and f["finished_at"] is not None
            assert a["code"] == "OK" and a["channel_txn_id"] == "txn" and a["version"] == 1
        elif i < 18:
            assert f["failure_code"] == "INSUFFICIENT_FUNDS" and f["payer_attributable"] == 1
            assert a["payer_attributable"] == 1 and a["safe_elsewhere"] == 0
        elif i >= 24:
            assert a["safe_elsewhere"] == 1 and a["finished_at"] is not None and f["finished_at"] is None
    outbox = await rows(database, "SELECT event_type, flow_id FROM outbox ORDER BY id")
    results_out = sorted(r["flow_id"] for r in outbox if r["event_type"] == "FLOW_RESULT")
    assert results_out == sorted(f.id for f in flows[:18]), "exactly one result event per finished flow"
    assert [r["flow_id"] for r in outbox if r["event_type"] == "DISCREPANCY"] == [flows[0].id]
    queued = sorted(r["attempt_id"] for r in await rows(database, "SELECT attempt_id FROM poll_queue"))
    assert queued == sorted(ids[18:24])
    [disc] = await rows(database, "SELECT attempt_id, recorded_status, reported_status FROM discrepancies")
    assert (disc["attempt_id"], disc["recorded_status"], disc["reported_status"]) == (ids[0], "SUCCEEDED", "FAILED")

    # Every report again (callback and poll replays): nothing changes, nothing is written.
    before = database.commits
    again = await asyncio.gather(
        *[
            store.apply_outcome(a, o, Source.CALLBACK, finish_flow_on_failure=f, poll_due_in_s=60)
            for a, o, f in calls[:30]
        ]
    )
    assert [r.applied for r in again] == [Applied.NOOP] * 18 + [Applied.STILL_PENDING] * 6 + [Applied.NOOP] * 6
    if group_commit:
        assert database.commits == before, "replays need no commit"
    assert len(await rows(database, "SELECT id FROM outbox")) == len(outbox)
    assert {r["id"]: r["version"] for r in await rows(database, "SELECT id, version FROM attempts")} == {
        a: r["version"] for a, r in by_attempt.items()
    }


async def test_position_and_pending_results_in_a_batch(database: Database) -> None:
    """Attempts with a float reservation go through the one-by-one path inside a batch; pending ones finish later."""
    store = MySQLFlowStore(database)
    async with database.transaction() as tx:
        await tx.execute(
            "INSERT INTO positions (channel, currency, balance, reserved, updated_at)"
            " VALUES ('pay', 'CNY', 100000, 0, UTC_TIMESTAMP(6))"
        )
        await tx.commit()
    payouts = [await create(store, new_flow(f"p-{i}", 10_000), attempt("pay", reserve=True)) for i in range(3)]
    withholds = await create_many(store, 6, "w")
    await asyncio.gather(*[store.apply_outcome(f.attempts[0].id, PENDING, Source.RESPONSE) for f in withholds])
    outcomes = [OK, DECLINED, OK]
    results = await asyncio.gather(
        *[store.apply_outcome(p.attempts[0].id, o, Source.RESPONSE) for p, o in zip(payouts, outcomes, strict=True)],
        *[store.apply_outcome(f.attempts[0].id, OK, Source.POLL) for f in withholds],
    )
    assert all(r.applied is Applied.TRANSITIONED and r.flow_finished for r in results)
    [pos] = await rows(database, "SELECT balance, reserved FROM positions WHERE channel='pay'")
    assert (pos["balance"], pos["reserved"]) == (100000 - 20_000, 0)
    assert await rows(database, "SELECT * FROM poll_queue") == []
    statuses = [r["status"] for r in await rows(database, "SELECT status FROM flows ORDER BY id")]
    assert statuses == ["SUCCEEDED", "FAILED", "SUCCEEDED"] + ["SUCCEEDED"] * 6


async def test_a_cancelled_caller_before_its_batch_writes_nothing(database: Database) -> None:
    store = MySQLFlowStore(database, workers=1)
    first = asyncio.ensure_future(store.create(new_flow("a"), attempt()))
    await asyncio.sleep(0)  # the worker takes "a"; "b" waits for the next batch
    second = asyncio.ensure_future(store.create(new_flow("b"), attempt()))
    await asyncio.sleep(0)
    second.cancel()
    await first
    with pytest.raises(asyncio.CancelledError):
        await second
    await asyncio.sleep(0.05)
    assert [r["request_id"] for r in await rows(database, "SELECT request_id FROM flows")] == ["a"]
