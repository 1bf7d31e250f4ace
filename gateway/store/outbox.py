"""The outbox in MySQL: every statement that touches ``outbox`` is in this module.

Rows are written inside the transaction of the state change they report
(:func:`insert_statement` / :func:`enqueue`, called by the flow transitions),
so a terminal transition and its FLOW_RESULT row commit together (invariant
6); the ``dedupe_key`` unique index makes a second result row for the same
flow impossible even if two code paths race.

The relay (gateway/outbox/relay.py) reads and marks them through one
:class:`OutboxRound` per publishing round: the claiming transaction is held
over produce + mark, so the row locks are the claim (see the relay's doc).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from gateway.outbox.writer import EVENT_TYPE_NAMES
from gateway.store import audit
from gateway.store.db import Database, Tx
from paygate.v1 import events_pb2

_INSERT = "INSERT INTO outbox (event_id, event_type, flow_id, caller, msg_key, payload, created_at, dedupe_key) VALUES "
_ROW = "(%s, %s, %s, %s, %s, %s, UTC_TIMESTAMP(6), %s)"


def insert_statement(events: Sequence[tuple[events_pb2.FlowEvent, int]]) -> tuple[str, list[object]]:
    """One INSERT statement (sql, args) for ``(event, flow_id)`` pairs.

    FLOW_RESULT rows carry ``dedupe_key = result:<flow_id>``; a second one for
    the same flow fails with DuplicateKey (key ``uq_outbox_dedupe``).
    """
    args: list[object] = []
    for event, flow_id in events:
        dedupe_key = f"result:{flow_id}" if event.event_type == events_pb2.FLOW_RESULT else None
        args += [
            event.event_id,
            EVENT_TYPE_NAMES[event.event_type],
            flow_id,
            event.caller,
            event.flow_no,
            event.SerializeToString(),
            dedupe_key,
        ]
    return _INSERT + ",".join([_ROW] * len(events)), args


async def enqueue(tx: Tx, event: events_pb2.FlowEvent, *, flow_id: int) -> None:
    """Insert the event into the outbox within ``tx`` (see :func:`insert_statement`)."""
    await tx.execute(*insert_statement([(event, flow_id)]))


@dataclass(frozen=True)
class OutboxRow:
    id: int
    event_id: str
    event_type: str
    flow_id: int
    caller: str
    msg_key: str
    payload: bytes
    earlier: int = 0
    """Earlier unpublished, unparked events of the same flow when the row was claimed."""


def flows_held_elsewhere(rows: Sequence[OutboxRow]) -> set[int]:
    """Flows of claimed ``rows`` with an earlier unpublished, unparked event that is not among ``rows``.

    Such an event is in another relay's round right now (parked ones keep the flow's later rows
    from being claimed at all, see :meth:`OutboxRound.claim`), or was committed after this claim
    began: the flow's rows wait for a later round, so its events stay in order. No round trip: a
    claimed row knows its ``earlier`` count, compared with the claimed rows of its flow before it.
    """
    seen: dict[int, int] = {}
    held: set[int] = set()
    for row in sorted(rows, key=lambda r: r.id):
        before = seen.get(row.flow_id, 0)
        if row.earlier > before:
            held.add(row.flow_id)
        seen[row.flow_id] = before + 1
    return held


class OutboxRound:
    """One publishing round's transaction: claim rows, mark what was published, commit."""

    def __init__(self, tx: Tx) -> None:
        self._tx = tx

    async def claim(self, *, max_attempts: int, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` unpublished, unparked rows in id order, locked (``SKIP LOCKED``) until the round ends.

        A row whose flow has an earlier event parked (``attempts >= max_attempts``) is not
        claimed: it waits, in order, until an operator fixes the parked one (one index lookup
        per row on ``ix_outbox_flow``), and never takes a place in a batch it cannot use.

        Each row also says how many earlier unpublished, unparked events its flow has
        (``earlier``, counted by the same statement's consistent read, which neither waits for
        nor skips another relay's locks): see :func:`flows_held_elsewhere`.
        """
        rows = await self._tx.fetchall(
            "SELECT o.id, o.event_id, o.event_type, o.flow_id, o.caller, o.msg_key, o.payload,"
            " (SELECT COUNT(*) FROM outbox e WHERE e.flow_id = o.flow_id AND e.id < o.id"
            " AND e.published_at IS NULL AND e.attempts < %s) AS earlier FROM outbox o"
            " WHERE o.published_at IS NULL AND o.attempts < %s AND NOT EXISTS (SELECT 1 FROM outbox p"
            " WHERE p.flow_id = o.flow_id AND p.id < o.id AND p.published_at IS NULL AND p.attempts >= %s)"
            " ORDER BY o.id LIMIT %s FOR UPDATE SKIP LOCKED",
            (max_attempts, max_attempts, max_attempts, limit),
        )
        return [OutboxRow(**row) for row in rows]

    async def finish(self, published: Sequence[int], failures: Sequence[tuple[int, str]]) -> None:
        """Mark ``published``, count each ``(row id, error)`` failure of the row's own making, COMMIT.

        One round trip (the statements and the COMMIT in one script). A failure counts
        towards parking the row after ``max_attempts``.
        """
        statements: list[tuple[str, Sequence[object]]] = []
        if published:
            marks = ",".join(["%s"] * len(published))
            statements.append(
                (
                    "UPDATE outbox SET published_at = UTC_TIMESTAMP(6), attempts = attempts + 1, last_error = ''"
                    f" WHERE id IN ({marks})",
                    list(published),
                )
            )
        statements += [
            ("UPDATE outbox SET attempts = attempts + 1, last_error = %s WHERE id = %s", (error[:255], row_id))
            for row_id, error in failures
        ]
        if statements:
            await self._tx.script(statements, commit=True)
        else:
            await self._tx.commit()


class MySQLOutbox:
    """The relay's side of the outbox."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @asynccontextmanager
    async def round(self) -> AsyncIterator[OutboxRound]:
        """A round's transaction; rolled back (the claims released) unless :meth:`OutboxRound.commit` ran."""
        async with self.db.transaction() as tx:
            yield OutboxRound(tx)

    async def delete_published(self, *, older_than_us: int, limit: int) -> int:
        """Delete up to ``limit`` rows published more than ``older_than_us`` ago (database clock); how many."""
        async with self.db.transaction() as tx:
            deleted = await tx.execute(
                "DELETE FROM outbox WHERE published_at < UTC_TIMESTAMP(6) - INTERVAL %s MICROSECOND"
                " ORDER BY published_at LIMIT %s",
                (older_than_us, limit),
            )
            await tx.commit()
        return deleted

    async def backlog(self) -> tuple[int, float]:
        """Unpublished rows and the oldest one's age in seconds, by the database's clock."""
        row = await self.db.fetchone(
            "SELECT COUNT(*) AS backlog,"
            " TIMESTAMPDIFF(MICROSECOND, MIN(created_at), UTC_TIMESTAMP(6)) AS age_us"
            " FROM outbox WHERE published_at IS NULL"
        )
        backlog = int(row["backlog"]) if row else 0
        age_s = max(0.0, int(row["age_us"]) / 1_000_000) if row and row["age_us"] is not None else 0.0
        return backlog, age_s


class MySQLOutboxAdmin:
    """Operators' changes to the outbox (implements :class:`gateway.ports.OutboxAdmin`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def release_parked(self, ids: Sequence[int], *, max_attempts: int, operator: str, reason: str) -> int:
        """Give parked events (unpublished, tried ``max_attempts`` times) another round of tries; how many.

        Their try count goes back to zero so the relay picks them up again; each released event gets an
        audit row (target: its flow number) in the same commit. Ids that are not parked are left alone.
        """
        if not ids:
            return 0
        marks = ",".join(["%s"] * len(ids))
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                f"SELECT id, event_id, event_type, msg_key, attempts, last_error FROM outbox WHERE id IN ({marks})"
                " AND published_at IS NULL AND attempts >= %s ORDER BY id FOR UPDATE",
                (*ids, max_attempts),
            )
            if not rows:
                return 0
            found = [int(r["id"]) for r in rows]
            await tx.execute(f"UPDATE outbox SET attempts = 0 WHERE id IN ({','.join(['%s'] * len(found))})", found)
            for r in rows:
                detail = {
                    "event_id": r["event_id"],
                    "event_type": r["event_type"],
                    "attempts": int(r["attempts"]),
                    "last_error": r["last_error"],
                }
                await audit.record(tx, operator, "release_outbox_event", r["msg_key"], reason, detail)
            await tx.commit()
        return len(found)
