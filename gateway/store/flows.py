"""Flows and attempts in MySQL: idempotent creation and compare-and-set transitions.

Every status change is ``UPDATE ... WHERE id=? AND status IN (allowed)``;
terminal states never change. :meth:`MySQLFlowStore.apply_outcome` is the one
transition used by the synchronous response, the poller, callbacks and
operators, so they race safely: exactly one wins, the others are no-ops, and
a conflicting late result becomes a discrepancy row instead of an overwrite.

This module holds the one-by-one path: each call in its own transaction.
With group commit on, the common creations and transitions of concurrent
requests go through :mod:`gateway.store.flow_batch` instead, which makes the
same changes with the same pieces (:mod:`gateway.store.flow_sql`).

Lock order, the one every transaction of the store follows (so two of them
can wait for each other but never in a circle):

1. attempts, ascending id (a flow's attempts: ascending ``seq``, the same order);
2. then their flows;
3. then the rows that hang off them: poll queue rows, positions (ascending
   channel), card usage counters, a split withhold's parts (a refund of one
   locks the original's, after both flows), and last the inserts (outbox, discrepancies,
   audit, a collection's row), which wait for nobody. A collection's own
   updates (its cashier, a close asked for) lock its row alone.

A transition locks its attempt, then the flow, in one statement
(``ATTEMPT_WITH_FLOW``); a batch of transitions locks all its attempts, then
the flows; resolving a flow and finishing a failover cut short lock the
flow's attempts, then the flow; marking for review locks the flow, then its
poll row; recording a failover attempt locks the flow and inserts the new
attempt (a new row waits for nobody). A transaction the database still rolls
back for a deadlock or a lock wait (``Conflict``) is retried whole
(:meth:`Database.retrying`), so callers do not see it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from channels.contract import Outcome, OutcomeStatus
from gateway import metrics
from gateway.domain import ATTEMPT_FROM, AttemptStatus, FlowStatus
from gateway.errors import CardLimitReached, DuplicateKey, FlowClosed, PositionShort, RefundExceeds
from gateway.outbox.writer import flow_event
from gateway.store import audit, card_usage, discrepancies, outbox, poll_queue, positions, splits
from gateway.store.db import Database, Tx
from gateway.store.flow_batch import FlowBatch
from gateway.store.flow_sql import (
    ATTEMPT_CHANGE,
    ATTEMPT_WITH_FLOW,
    FLOW_RESULT,
    FLOW_SELECT,
    INSERT_ATTEMPT_COLUMNS,
    INSERT_ATTEMPT_ROW,
    INSERT_FLOW_COLUMNS,
    INSERT_FLOW_ROW,
    TARGET,
    ApplyItem,
    attempt_args,
    attempt_change,
    conflict_code,
    flow_args,
    flow_part,
    flow_result,
    record_attempt_change,
    record_flow_result,
    unchanged,
)
from gateway.store.replicas import takeable
from gateway.store.rows import (
    Applied,
    ApplyResult,
    AttemptRow,
    Created,
    Creation,
    Existing,
    FlowRow,
    NewAttempt,
    NewFlow,
    OpenAttempts,
    RecoveryScope,
    Source,
    new_attempt_row,
    new_flow_row,
    utcnow,
)
from paygate.v1 import events_pb2

log = logging.getLogger(__name__)

# Writes the side rows of a flow kind inside the transaction that creates the flow (see create_with).
SideRows = Callable[[Tx, FlowRow, datetime], Awaitable[None]]


class MySQLFlowStore:
    """Implements :class:`gateway.ports.FlowStore`.

    ``group_commit`` (default on): concurrent creations and transitions share
    statements and commits (:class:`~gateway.store.flow_batch.FlowBatch`).
    ``incarnation``: this process's run (``replicas`` table), stamped on every
    attempt it records, so that recovery elsewhere can tell whether the
    attempt's sender is still alive (:class:`~gateway.store.rows.RecoveryScope`).
    """

    def __init__(
        self,
        db: Database,
        *,
        group_commit: bool = True,
        max_batch: int = 64,
        workers: int = 1,
        incarnation: str = "",
    ) -> None:
        self.db = db
        self.group_commit = group_commit
        self.incarnation = incarnation
        self.batch = FlowBatch(
            db,
            create_one=self._create_one,
            apply_one=self._apply_one,
            max_batch=max_batch,
            workers=workers,
            incarnation=incarnation,
        )

    # --- reads ----------------------------------------------------------------------

    async def by_request_id(self, caller: str, request_id: str, *, with_attempts: bool = True) -> FlowRow | None:
        row = await self.db.fetchone(f"{FLOW_SELECT} WHERE f.caller=%s AND f.request_id=%s", (caller, request_id))
        return await self._hydrate(row, with_attempts)

    async def by_flow_no(
        self, flow_no: str, *, caller: str | None = None, with_attempts: bool = True
    ) -> FlowRow | None:
        if caller is None:
            row = await self.db.fetchone(f"{FLOW_SELECT} WHERE f.flow_no=%s", (flow_no,))
        else:
            row = await self.db.fetchone(f"{FLOW_SELECT} WHERE f.flow_no=%s AND f.caller=%s", (flow_no, caller))
        return await self._hydrate(row, with_attempts)

    async def by_id(self, flow_id: int, *, with_attempts: bool = True) -> FlowRow | None:
        row = await self.db.fetchone(f"{FLOW_SELECT} WHERE f.id=%s", (flow_id,))
        return await self._hydrate(row, with_attempts)

    async def _hydrate(self, row: dict[str, Any] | None, with_attempts: bool) -> FlowRow | None:
        if row is None:
            return None
        flow = FlowRow.from_row(row)
        if with_attempts:
            flow.attempts = await self.attempts_of(flow.id)
        if flow.split_shares is not None and flow.status is FlowStatus.SUCCEEDED:
            flow.split = await splits.parts_of(self.db, flow)
        return flow

    async def attempts_of(self, flow_id: int) -> list[AttemptRow]:
        rows = await self.db.fetchall("SELECT * FROM attempts WHERE flow_id=%s ORDER BY seq", (flow_id,))
        return [AttemptRow.from_row(r) for r in rows]

    async def refunded_order_no(self, refund_flow_id: int) -> str:
        """The channel order number of the succeeded attempt a refund flow refunds ('' if none)."""
        row = await self.db.fetchone(
            "SELECT a.channel_order_no FROM flows r JOIN attempts a ON a.flow_id = r.original_flow_id"
            " WHERE r.id=%s AND a.status='SUCCEEDED' ORDER BY a.seq LIMIT 1",
            (refund_flow_id,),
        )
        return str(row["channel_order_no"]) if row else ""

    async def attempt_by_order_no(self, order_no: str) -> AttemptRow | None:
        row = await self.db.fetchone("SELECT * FROM attempts WHERE channel_order_no=%s", (order_no,))
        return AttemptRow.from_row(row) if row else None

    async def attempt_by_id(self, attempt_id: int) -> AttemptRow | None:
        row = await self.db.fetchone("SELECT * FROM attempts WHERE id=%s", (attempt_id,))
        return AttemptRow.from_row(row) if row else None

    async def in_review(self, *, after_id: int, limit: int) -> list[FlowRow]:
        """PROCESSING flows that need review, by id after ``after_id``, with their attempts."""
        rows = await self.db.fetchall(
            f"{FLOW_SELECT} WHERE f.needs_review=1 AND f.status='PROCESSING' AND f.id > %s ORDER BY f.id LIMIT %s",
            (after_id, limit),
        )
        flows = [FlowRow.from_row(r) for r in rows]
        for flow in flows:
            flow.attempts = await self.attempts_of(flow.id)
        return flows

    async def review_count(self) -> int:
        """PROCESSING flows that need review (the gauge)."""
        row = await self.db.fetchone("SELECT COUNT(*) AS n FROM flows WHERE needs_review=1 AND status='PROCESSING'")
        return int(row["n"]) if row else 0

    async def open_attempts(self) -> OpenAttempts:
        """SENDING / PENDING attempts of flows not in review: how many, and the oldest one's creation."""
        # flows waiting for review are counted by review_count, not as "pending too old"
        row = await self.db.fetchone(
            "SELECT COUNT(*) AS n, MIN(a.created_at) AS oldest FROM attempts a JOIN flows f ON f.id = a.flow_id"
            " WHERE a.status IN ('SENDING','PENDING') AND f.needs_review = 0"
        )
        if row is None:
            return OpenAttempts(0, None)
        return OpenAttempts(int(row["n"]), row["oldest"])

    # --- creation ---------------------------------------------------------------------

    async def create(self, new: NewFlow, attempt: NewAttempt | None) -> Creation[FlowRow]:
        """Insert the flow and its first attempt (SENDING) in one commit: record before call.

        Returns ``Existing(flow)`` if (caller, request_id) already has a flow;
        raises ``PositionShort`` / ``RefundExceeds`` when a reservation does not
        fit. Nothing is written then. Flows without a reservation share their
        commit with concurrent ones (group commit); each caller returns only
        after that commit.
        """
        if (
            self.group_commit
            and attempt is not None
            and not attempt.reserve_position
            and attempt.card_limit is None
            and new.original_flow_id is None
        ):
            return await self.batch.create(new, attempt)
        return await self._create_one(new, attempt)

    async def create_with(self, new: NewFlow, attempt: NewAttempt, also: SideRows) -> Creation[FlowRow]:
        """:meth:`create` one flow and its first attempt, plus the side rows ``also`` writes, in one commit.

        For a flow kind with a table of its own beside ``flows`` (gateway/store/collections.py):
        ``also(tx, flow, now)`` runs after both inserts, inside the transaction (its inserts come
        last in the lock order); a retried transaction runs it again. Never group-committed.
        """
        return await self._create_one(new, attempt, also)

    async def _create_one(
        self, new: NewFlow, attempt: NewAttempt | None, also: SideRows | None = None
    ) -> Creation[FlowRow]:
        return await self.db.retrying(lambda: self._create_once(new, attempt, also))

    async def _create_once(
        self, new: NewFlow, attempt: NewAttempt | None, also: SideRows | None = None
    ) -> Creation[FlowRow]:
        now = utcnow()
        flow = new_flow_row(new, now)
        try:
            async with self.db.transaction() as tx:
                flow.id = await tx.insert(
                    f"INSERT INTO flows {INSERT_FLOW_COLUMNS} VALUES {INSERT_FLOW_ROW}", flow_args(flow)
                )
                if new.original_flow_id is not None:
                    reserved = await tx.execute(
                        "UPDATE flows SET refund_reserved = refund_reserved + %s, version = version + 1,"
                        " updated_at=%s WHERE id=%s AND status='SUCCEEDED' AND refund_reserved + %s <= amount",
                        (new.amount, now, new.original_flow_id, new.amount),
                    )
                    if reserved != 1:
                        raise RefundExceeds()
                if attempt is not None:
                    flow.attempts.append(await self._insert_attempt(tx, flow, 1, attempt, now))
                if also is not None:
                    await also(tx, flow, now)
                await tx.commit()
        except DuplicateKey as exc:
            if exc.key != "uq_flows_caller_request":
                raise
            existing = await self.by_request_id(new.caller, new.request_id)
            if existing is None:  # pragma: no cover - the row that beat us cannot vanish
                raise
            return Existing(existing)
        metrics.FLOWS_CREATED.labels(kind=new.kind.value).inc()
        return Created(flow)

    async def add_attempt(self, flow: FlowRow, attempt: NewAttempt) -> AttemptRow:
        """Record the next attempt of a flow (failover) before calling its channel.

        Raises ``FlowClosed`` when the flow is no longer PROCESSING,
        ``PositionShort`` when a payout's float does not fit and
        ``CardLimitReached`` when the card's daily limits on the channel are used
        up; nothing is written then.
        """
        seq = (flow.attempts[-1].seq if flow.attempts else 0) + 1

        async def once() -> AttemptRow:
            now = utcnow()
            async with self.db.transaction() as tx:
                still = await tx.fetchone("SELECT status FROM flows WHERE id=%s FOR UPDATE", (flow.id,))
                if still is None or still["status"] != FlowStatus.PROCESSING.value:
                    raise FlowClosed(flow.flow_no)
                row = await self._insert_attempt(tx, flow, seq, attempt, now)
                await tx.commit()
            return row

        row = await self.db.retrying(once)
        flow.attempts.append(row)
        return row

    async def _insert_attempt(self, tx: Tx, flow: FlowRow, seq: int, attempt: NewAttempt, now: datetime) -> AttemptRow:
        reserved = 0
        if attempt.reserve_position:
            if not await positions.reserve(
                tx, channel=attempt.channel, currency=flow.currency, amount=flow.amount, now=now
            ):
                raise PositionShort(attempt.channel)
            reserved = flow.amount
        row = new_attempt_row(flow, seq, attempt, reserved, now, self.incarnation)
        row.id = await tx.insert(
            f"INSERT INTO attempts {INSERT_ATTEMPT_COLUMNS} VALUES {INSERT_ATTEMPT_ROW}", attempt_args(row, now)
        )
        if attempt.card_limit is not None and not await card_usage.count(
            tx, flow.account_hash, attempt.channel, attempt.card_limit, flow.amount, now
        ):
            raise CardLimitReached(attempt.channel)
        return row

    # --- the transition -----------------------------------------------------------------

    async def apply_outcome(
        self,
        attempt_id: int,
        outcome: Outcome,
        source: Source,
        *,
        finish_flow_on_failure: bool = True,
        poll_due_in_s: float = 2.0,
        known: tuple[AttemptRow, FlowRow] | None = None,
    ) -> ApplyResult:
        """Record what a channel said about one attempt; exactly one writer wins.

        * PENDING: SENDING → PENDING and a poll-queue row (due in ``poll_due_in_s``).
        * SUCCEEDED / FAILED: the attempt becomes terminal; the flow too (unless
          ``finish_flow_on_failure`` is False, used when the caller will fail
          over), with its FLOW_RESULT outbox row in the same commit. Positions
          settle or release; refunds add up on the original.
        * A result that contradicts a recorded terminal one creates a
          discrepancy (and a DISCREPANCY event), never an overwrite.

        Concurrent transitions share one commit (group commit); returns after it.
        ``known``: the attempt and its flow as the request that created them holds them
        (not changed here); with group commit, the transition is written without reading
        them first, on condition that their versions have not moved (one round trip fewer),
        and under their row locks like any other when they have.
        """
        if known is not None and self.group_commit:
            attempt, flow = known
            known = (copy.copy(attempt), copy.copy(flow)) if attempt.id == attempt_id else None
        else:
            known = None
        item = ApplyItem(attempt_id, outcome, source, finish_flow_on_failure, poll_due_in_s, known)
        if self.group_commit:
            return await self.batch.apply(item)
        return await self._apply_one(item)

    async def _apply_one(self, item: ApplyItem) -> ApplyResult:
        return await self.db.retrying(lambda: self._apply_once(item))

    async def _apply_once(self, item: ApplyItem) -> ApplyResult:
        outcome, target = item.outcome, TARGET[item.outcome.status]
        now = utcnow()
        async with self.db.transaction() as tx:
            if target is AttemptStatus.PENDING:
                row = await tx.fetchone("SELECT * FROM attempts WHERE id=%s FOR UPDATE", (item.attempt_id,))
            else:  # a terminal result also updates the flow: lock it in the same statement
                row = await tx.fetchone(ATTEMPT_WITH_FLOW, (item.attempt_id,))
            if row is None:
                return ApplyResult(Applied.UNKNOWN, None)
            attempt = AttemptRow.from_row(row)
            allowed = ATTEMPT_FROM[target]
            if attempt.status not in allowed:
                result = await self._not_allowed(tx, attempt, target, outcome, item.source, now)
                await tx.commit()
                return result
            await self._write_attempt(tx, attempt, target, outcome, now)
            if target is AttemptStatus.PENDING:
                due = now + timedelta(seconds=item.poll_due_in_s)
                await poll_queue.enqueue(tx, attempt.id, attempt.channel, due, now)
                await tx.commit()
                return ApplyResult(Applied.TRANSITIONED, attempt)
            await poll_queue.dequeue(tx, attempt.id)
            flow = FlowRow.from_row(flow_part(row))
            await positions.settle(tx, attempt, succeeded=target is AttemptStatus.SUCCEEDED, now=now)
            finished = False
            if target is AttemptStatus.SUCCEEDED or item.finish_flow_on_failure:
                finished = await self._finish_flow(tx, flow, attempt, outcome, now, item.source)
            await tx.commit()
        return ApplyResult(Applied.TRANSITIONED, attempt, flow, finished)

    async def _write_attempt(
        self, tx: Tx, attempt: AttemptRow, target: AttemptStatus, outcome: Outcome, now: datetime
    ) -> None:
        sets = ", ".join(f"{c}=%s" for c in ATTEMPT_CHANGE)
        n = await tx.execute(
            f"UPDATE attempts SET {sets}, version=version+1 WHERE id=%s AND status=%s",
            (*attempt_change(target, outcome, now), attempt.id, attempt.status.value),
        )
        if n != 1:  # pragma: no cover - guarded by the row lock above
            raise RuntimeError("attempt changed under its row lock")
        record_attempt_change(attempt, target, outcome, now)

    async def _finish_flow(
        self, tx: Tx, flow: FlowRow, attempt: AttemptRow, outcome: Outcome, now: datetime, source: Source
    ) -> bool:
        target = FlowStatus.SUCCEEDED if attempt.status is AttemptStatus.SUCCEEDED else FlowStatus.FAILED
        if flow.status is not FlowStatus.PROCESSING:
            # e.g. an operator resolved it first; the channel now says otherwise
            if flow.status is not target:
                await self._discrepancy(tx, flow, attempt, flow.status.value, target.value, outcome.code, source, now)
            return False
        values = flow_result(attempt, outcome, now)
        sets = ", ".join(f"{c}=%s" for c in FLOW_RESULT)
        n = await tx.execute(
            f"UPDATE flows SET {sets}, needs_review=0, version=version+1 WHERE id=%s AND status='PROCESSING'",
            (*values, flow.id),
        )
        if n != 1:  # pragma: no cover - guarded by the row lock
            return False
        record_flow_result(flow, values, outcome)
        kind, status = flow.kind.value, flow.status.value
        tx.on_commit(lambda: metrics.FLOWS_FINISHED.labels(kind=kind, status=status).inc())
        if flow.original_flow_id is not None:
            if target is FlowStatus.SUCCEEDED:
                sql = "UPDATE flows SET refunded_amount = refunded_amount + %s, updated_at=%s, version=version+1"
            else:
                sql = "UPDATE flows SET refund_reserved = refund_reserved - %s, updated_at=%s, version=version+1"
            await tx.execute(f"{sql} WHERE id=%s", (flow.amount, now, flow.original_flow_id))
        if flow.split_shares is not None and target is FlowStatus.SUCCEEDED:
            # the funders' parts (small orders) commit with the transition, before its event is written;
            # a refund's locks the original's parts after the flows (the store's lock order)
            flow.split = await splits.record_parts(tx, flow, now)
        await self._emit(tx, flow, events_pb2.FLOW_RESULT)
        return True

    async def _emit(self, tx: Tx, flow: FlowRow, event_type: events_pb2.EventType.ValueType, detail: str = "") -> None:
        original = ""
        if flow.original_flow_id is not None:
            row = await tx.fetchone("SELECT flow_no FROM flows WHERE id=%s", (flow.original_flow_id,))
            original = row["flow_no"] if row else ""
        event = flow_event(flow.as_event_source(), event_type, original_flow_no=original, detail=detail)
        await outbox.enqueue(tx, event, flow_id=flow.id)

    async def _not_allowed(
        self, tx: Tx, attempt: AttemptRow, target: AttemptStatus, outcome: Outcome, source: Source, now: datetime
    ) -> ApplyResult:
        same = unchanged(attempt, target, outcome)
        if same is not None:
            return same
        # A terminal attempt told the opposite (or paid again): record, alert, never overwrite.
        flow_row = await tx.fetchone("SELECT * FROM flows WHERE id=%s", (attempt.flow_id,))
        assert flow_row is not None
        flow = FlowRow.from_row(flow_row)
        code = conflict_code(attempt, outcome)
        await self._discrepancy(tx, flow, attempt, attempt.status.value, target.value, code, source, now)
        return ApplyResult(Applied.DISCREPANCY, attempt, flow)

    async def _discrepancy(
        self,
        tx: Tx,
        flow: FlowRow,
        attempt: AttemptRow,
        recorded: str,
        reported: str,
        code: str,
        source: Source,
        now: datetime,
    ) -> None:
        new = await discrepancies.record(
            tx,
            flow_id=flow.id,
            attempt_id=attempt.id,
            recorded=recorded,
            reported=reported,
            code=code,
            source=source.value,
            now=now,
        )
        if new:
            # counted and logged once it is durable: a transaction retried after a deadlock
            # must not count the same discrepancy twice
            def alert() -> None:
                metrics.DISCREPANCIES.labels(channel=attempt.channel, source=source.value).inc()
                log.error(
                    "discrepancy: channel reported %s for an attempt recorded %s",
                    reported,
                    recorded,
                    extra={
                        "flow_no": flow.flow_no,
                        "channel": attempt.channel,
                        "channel_order_no": attempt.channel_order_no,
                    },
                )

            tx.on_commit(alert)
            detail = f"attempt {attempt.channel_order_no}: recorded {recorded}, channel reported {reported} ({code})"
            await self._emit(tx, flow, events_pb2.DISCREPANCY, detail)

    async def finish_from_attempt(self, attempt_id: int) -> bool:
        """Finish a PROCESSING flow with the failure already recorded on ``attempt_id``.

        Used when a failover was planned but no further attempt could be made,
        and by recovery for a failover cut short (:meth:`stranded_failovers`).
        Does nothing unless ``attempt_id`` is the flow's last attempt and every
        attempt of the flow FAILED (checked under the locks of the flow's
        attempts and the flow, which :meth:`add_attempt` takes too).
        """
        known = await self.attempt_by_id(attempt_id)  # flow_id never changes: read it without a lock
        if known is None:
            return False
        return await self.db.retrying(lambda: self._finish_from_attempt_once(known.flow_id, attempt_id))

    async def _finish_from_attempt_once(self, flow_id: int, attempt_id: int) -> bool:
        now = utcnow()
        async with self.db.transaction() as tx:
            attempts, flow = await self._lock_flow(tx, flow_id)
            if flow is None or flow.status is not FlowStatus.PROCESSING or not attempts:
                return False
            last = attempts[-1]
            if last.id != attempt_id or any(a.status is not AttemptStatus.FAILED for a in attempts):
                return False
            outcome = Outcome(
                OutcomeStatus.FAILED,
                last.code,
                raw_code=last.raw_code,
                raw_message=last.raw_message,
                payer_attributable=last.payer_attributable,
                safe_elsewhere=last.safe_elsewhere,
            )
            finished = await self._finish_flow(tx, flow, last, outcome, now, Source.RESPONSE)
            await tx.commit()
        return finished

    @staticmethod
    async def _lock_flow(tx: Tx, flow_id: int) -> tuple[list[AttemptRow], FlowRow | None]:
        """Lock a flow's attempts (ascending) and then the flow, in the store's lock order; one round trip."""
        attempts, flow = await tx.script(
            [
                ("SELECT * FROM attempts WHERE flow_id=%s ORDER BY seq FOR UPDATE", (flow_id,)),
                ("SELECT * FROM flows WHERE id=%s FOR UPDATE", (flow_id,)),
            ]
        )
        rows = [AttemptRow.from_row(r) for r in attempts.rows]
        return rows, FlowRow.from_row(flow.rows[0]) if flow.rows else None

    async def stranded_failovers(
        self, cutoff: datetime, limit: int = 500, scope: RecoveryScope | None = None
    ) -> list[int]:
        """Last attempt ids of PROCESSING flows (not in review) whose every attempt FAILED, for recovery to finish.

        A crash or a database error between failing one attempt (safe
        elsewhere) and recording the next leaves such a flow with nothing in
        flight and nothing to poll: no money moved, nobody would ever finish it.
        Only flows whose last attempt ``scope`` lets recovery take (see
        :func:`gateway.store.replicas.takeable`; ``cutoff`` bounds the last
        change): the replica that recorded it is the one failing it over, and
        while it is alive it may be about to record the next attempt.
        """
        ours, values = takeable("last.incarnation", "s.updated_at", cutoff, scope)
        rows = await self.db.fetchall(
            "SELECT s.attempt_id FROM (SELECT MAX(a.id) AS attempt_id, MAX(a.updated_at) AS updated_at"
            " FROM flows f JOIN attempts a ON a.flow_id = f.id WHERE f.status='PROCESSING' AND f.needs_review=0"
            " GROUP BY f.id HAVING SUM(a.status <> 'FAILED') = 0) s"
            f" JOIN attempts last ON last.id = s.attempt_id WHERE {ours} LIMIT %s",
            (*values, limit),
        )
        return [int(r["attempt_id"]) for r in rows]

    # --- review and operators ---------------------------------------------------------

    async def mark_needs_review(self, attempt: AttemptRow, detail: str) -> bool:
        """Polling ran out: the flow stays PROCESSING with needs_review (never auto-failed)."""
        return await self.db.retrying(lambda: self._mark_needs_review_once(attempt, detail))

    async def _mark_needs_review_once(self, attempt: AttemptRow, detail: str) -> bool:
        now = utcnow()
        async with self.db.transaction() as tx:
            # the flow before its poll row (the store's lock order)
            n = await tx.execute(
                "UPDATE flows SET needs_review=1, updated_at=%s, version=version+1"
                " WHERE id=%s AND status='PROCESSING' AND needs_review=0",
                (now, attempt.flow_id),
            )
            await poll_queue.dequeue(tx, attempt.id)
            if n == 1:
                row = await tx.fetchone("SELECT * FROM flows WHERE id=%s", (attempt.flow_id,))
                assert row is not None
                await self._emit(tx, FlowRow.from_row(row), events_pb2.FLOW_NEEDS_REVIEW, detail)
            await tx.commit()
        return n == 1

    async def resolve(self, flow: FlowRow, status: FlowStatus, operator: str, reason: str, channel_txn_id: str) -> bool:
        """An operator decides a PROCESSING flow. Pending attempts take the same result.

        Writes the audit record and the normal FLOW_RESULT event in one commit.
        Locks the flow's attempts, then the flow (the store's lock order), so it
        never deadlocks with a transition of one of them.
        """
        return await self.db.retrying(lambda: self._resolve_once(flow, status, operator, reason, channel_txn_id))

    async def _resolve_once(
        self, flow: FlowRow, status: FlowStatus, operator: str, reason: str, channel_txn_id: str
    ) -> bool:
        now = utcnow()
        code = "OK" if status is FlowStatus.SUCCEEDED else "MANUAL_FAILED"
        async with self.db.transaction() as tx:
            attempts, current = await self._lock_flow(tx, flow.id)
            assert current is not None
            if current.status is not FlowStatus.PROCESSING:
                return False
            open_attempts = [a for a in attempts if a.status in (AttemptStatus.SENDING, AttemptStatus.PENDING)]
            outcome = Outcome(
                OutcomeStatus.SUCCEEDED if status is FlowStatus.SUCCEEDED else OutcomeStatus.FAILED,
                code,
                raw_code="MANUAL",
                raw_message=f"resolved by {operator}: {reason}"[:255],
                channel_txn_id=channel_txn_id,
            )
            target = AttemptStatus.SUCCEEDED if status is FlowStatus.SUCCEEDED else AttemptStatus.FAILED
            chosen = open_attempts[-1] if open_attempts else None
            for attempt in open_attempts:
                await self._write_attempt(tx, attempt, target, outcome, now)
            for attempt in open_attempts:
                await poll_queue.dequeue(tx, attempt.id)
            for attempt in sorted(open_attempts, key=lambda a: a.channel):  # positions in channel order
                await positions.settle(tx, attempt, succeeded=target is AttemptStatus.SUCCEEDED, now=now)
            if chosen is None:
                chosen = AttemptRow(0, flow.id, 0, current.channel, "", "", target, flow.amount, flow.currency)
            await self._finish_flow(tx, current, chosen, outcome, now, Source.OPERATOR)
            await audit.record(tx, operator, "resolve_flow", current.flow_no, reason, {"status": status.value})
            await tx.commit()
        return True
