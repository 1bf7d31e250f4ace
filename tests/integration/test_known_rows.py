"""The response's transition written from the rows its request recorded (``known``), without reading them.

The request that created an attempt hands the store the attempt and its flow as
it recorded them; the group-commit batch writes the transition on condition
that their versions have not moved, and when another writer (a poller, a
callback, an operator) got there first, the batch rolls back and is done again
under the row locks, so the loser sees the winner's result: never a double
transition, never a second result event, never a lost one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from channels.contract import Outcome, OutcomeStatus
from gateway import metrics
from gateway.domain import FlowStatus
from gateway.store import db as store_db
from gateway.store.db import Database
from gateway.store.flows import MySQLFlowStore
from gateway.store.rows import Applied, ApplyResult, FlowRow, Source
from tests.integration.test_group_commit import BUSY, DECLINED, OK, PENDING, attempt, create, create_many, new_flow

OTHER_TXN = Outcome(OutcomeStatus.SUCCEEDED, "OK", raw_code="0000", channel_txn_id="txn-2")


def stale_batches() -> float:
    return float(metrics.STORE_STALE_KNOWN._value.get())


async def rows(db: Database, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    return await db.fetchall(sql, args)


async def respond(store: MySQLFlowStore, flow: FlowRow, outcome: Outcome, *, finish: bool = True) -> ApplyResult:
    """The driver's own transition: the flow's last attempt, with the rows as this request holds them."""
    att = flow.attempts[-1]
    return await store.apply_outcome(
        att.id, outcome, Source.RESPONSE, finish_flow_on_failure=finish, poll_due_in_s=60, known=(att, flow)
    )


async def result_events(db: Database, flow_id: int) -> list[dict[str, Any]]:
    return await rows(db, "SELECT event_type FROM outbox WHERE flow_id=%s ORDER BY id", (flow_id,))


class ReadCounter:
    """Counts the locked reads (``Tx.script``) and checked commits of a window."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.scripts = 0
        self.checked = 0
        script, checked = store_db.Tx.script, store_db.Tx.script_commit_if

        async def counted_script(tx: store_db.Tx, *args: Any, **kw: Any) -> Any:
            self.scripts += 1
            return await script(tx, *args, **kw)

        async def counted_checked(tx: store_db.Tx, *args: Any, **kw: Any) -> Any:
            self.checked += 1
            return await checked(tx, *args, **kw)

        monkeypatch.setattr(store_db.Tx, "script", counted_script)
        monkeypatch.setattr(store_db.Tx, "script_commit_if", counted_checked)


async def test_the_response_is_written_in_one_round_trip_and_says_what_the_database_holds(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MySQLFlowStore(database)
    flows = await create_many(store, 3, "k")
    counter = ReadCounter(monkeypatch)
    before = stale_batches()
    results = [await respond(store, flows[0], OK), await respond(store, flows[1], DECLINED)]
    results.append(await respond(store, flows[2], PENDING))
    assert (counter.scripts, counter.checked) == (0, 3), "no locked read before the checked commit"
    assert stale_batches() == before
    assert [r.applied for r in results] == [Applied.TRANSITIONED] * 3
    assert [r.flow_finished for r in results] == [True, True, False]
    for result, flow in zip(results[:2], flows, strict=False):
        assert result.flow is not None and result.attempt is not None
        [f] = await rows(database, "SELECT * FROM flows WHERE id=%s", (flow.id,))
        [a] = await rows(database, "SELECT * FROM attempts WHERE id=%s", (result.attempt.id,))
        assert (result.flow.status.value, result.flow.version, result.flow.finished_at) == (
            f["status"],
            f["version"],
            f["finished_at"],
        )
        assert (result.flow.created_at, result.flow.updated_at) == (f["created_at"], f["updated_at"])
        assert (result.attempt.status.value, result.attempt.version) == (a["status"], a["version"]) != ("SENDING", 0)
        assert [e["event_type"] for e in await result_events(database, flow.id)] == ["FLOW_RESULT"]
    assert flows[0].attempts[0].version == 0 and flows[0].status is FlowStatus.PROCESSING, "the caller's rows"
    assert [r["attempt_id"] for r in await rows(database, "SELECT attempt_id FROM poll_queue")] == [
        flows[2].attempts[0].id
    ]


@pytest.mark.parametrize(
    ("first", "then", "applied", "flow_status", "discrepancy"),
    [
        (OK, OK, Applied.NOOP, "SUCCEEDED", False),  # the poller heard the same success first
        (OK, DECLINED, Applied.DISCREPANCY, "SUCCEEDED", True),  # the channel contradicts itself
        (DECLINED, OK, Applied.DISCREPANCY, "FAILED", True),
        (OK, OTHER_TXN, Applied.DISCREPANCY, "SUCCEEDED", True),  # paid twice under another transaction
        (PENDING, OK, Applied.TRANSITIONED, "SUCCEEDED", False),  # a callback made it PENDING: now it finishes
    ],
)
async def test_a_poller_that_wrote_first_makes_the_response_lose_cleanly(
    database: Database, first: Outcome, then: Outcome, applied: Applied, flow_status: str, discrepancy: bool
) -> None:
    store = MySQLFlowStore(database)
    poller = MySQLFlowStore(database)  # another process's store, reading under locks
    flow = await create(store, new_flow("race"), attempt())
    won = await poller.apply_outcome(flow.attempts[0].id, first, Source.POLL, poll_due_in_s=60)
    assert won.applied is Applied.TRANSITIONED
    before = stale_batches()
    result = await respond(store, flow, then)
    assert stale_batches() == before + 1, "the stale rows were noticed and the batch done again under locks"
    assert result.applied is applied
    [f] = await rows(database, "SELECT status, version FROM flows WHERE id=%s", (flow.id,))
    assert f["status"] == flow_status
    events = [e["event_type"] for e in await result_events(database, flow.id)]
    assert events.count("FLOW_RESULT") == 1, "exactly one result event"
    assert events.count("DISCREPANCY") == int(discrepancy)
    assert len(await rows(database, "SELECT id FROM discrepancies")) == int(discrepancy)


async def test_a_flow_marked_for_review_since_is_finished_under_its_lock(database: Database) -> None:
    store = MySQLFlowStore(database)
    flow = await create(store, new_flow("review"), attempt())
    assert await store.mark_needs_review(flow.attempts[0], "polling ran out")  # the flow's version moves alone
    before = stale_batches()
    result = await respond(store, flow, OK)
    assert stale_batches() == before + 1
    assert result.applied is Applied.TRANSITIONED and result.flow_finished
    [f] = await rows(database, "SELECT status, needs_review, version FROM flows WHERE id=%s", (flow.id,))
    assert (f["status"], f["needs_review"], f["version"]) == ("SUCCEEDED", 0, 2)
    assert [e["event_type"] for e in await result_events(database, flow.id)] == ["FLOW_NEEDS_REVIEW", "FLOW_RESULT"]


async def test_an_operator_resolution_first_is_never_overwritten(database: Database) -> None:
    store = MySQLFlowStore(database)
    flow = await create(store, new_flow("operator"), attempt())
    assert await store.resolve(flow, FlowStatus.FAILED, "ops-1", "customer cancelled", "")
    result = await respond(store, flow, OK)
    assert result.applied is Applied.DISCREPANCY
    [f] = await rows(database, "SELECT status FROM flows WHERE id=%s", (flow.id,))
    assert f["status"] == "FAILED"
    events = [e["event_type"] for e in await result_events(database, flow.id)]
    assert events == ["FLOW_RESULT", "DISCREPANCY"]


async def test_a_failover_writes_both_attempts_from_the_rows_it_recorded(database: Database) -> None:
    store = MySQLFlowStore(database)
    flow = await create(store, new_flow("failover"), attempt("a"))
    before = stale_batches()
    first = await respond(store, flow, BUSY, finish=False)
    assert first.applied is Applied.TRANSITIONED and not first.flow_finished
    await store.add_attempt(flow, attempt("b"))
    second = await respond(store, flow, OK)
    assert stale_batches() == before, "the flow's row did not move between the attempts"
    assert second.applied is Applied.TRANSITIONED and second.flow_finished
    [f] = await rows(database, "SELECT status, channel FROM flows WHERE id=%s", (flow.id,))
    assert (f["status"], f["channel"]) == ("SUCCEEDED", "b")
    statuses = [r["status"] for r in await rows(database, "SELECT status FROM attempts ORDER BY seq")]
    assert statuses == ["FAILED", "SUCCEEDED"]


async def test_responses_racing_pollers_and_callbacks_make_exactly_one_transition(database: Database) -> None:
    """40 flows; each one's response races another process's poll result and a callback, at once."""
    store = MySQLFlowStore(database)
    others = MySQLFlowStore(database)
    flows = await create_many(store, 40, "r")
    calls = []
    for i, flow in enumerate(flows):
        response = OK if i % 2 == 0 else DECLINED
        poll = OK if i % 4 < 2 else DECLINED  # agrees with the response for half of them
        att = flow.attempts[0].id
        calls.append(respond(store, flow, response))
        calls.append(others.apply_outcome(att, poll, Source.POLL, poll_due_in_s=60))
        calls.append(others.apply_outcome(att, response, Source.CALLBACK, poll_due_in_s=60))
    results = list(await asyncio.gather(*calls))
    for i, flow in enumerate(flows):
        mine = results[3 * i : 3 * i + 3]
        assert [r.applied for r in mine].count(Applied.TRANSITIONED) == 1, (i, [r.applied for r in mine])
        [f] = await rows(database, "SELECT status FROM flows WHERE id=%s", (flow.id,))
        [a] = await rows(database, "SELECT status, version FROM attempts WHERE id=%s", (flow.attempts[0].id,))
        assert f["status"] == a["status"] != "PROCESSING" and a["version"] == 1, i
        events = [e["event_type"] for e in await result_events(database, flow.id)]
        assert events.count("FLOW_RESULT") == 1, i
        agreed = (i % 2 == 0) == (i % 4 < 2)
        assert ("DISCREPANCY" in events) is not agreed, (i, events)
