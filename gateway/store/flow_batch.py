"""Group commit of the request path: the flow writes of concurrent requests in shared statements and commits.

:class:`FlowBatch` is what :class:`gateway.store.flows.MySQLFlowStore` hands
its common writes to when group commit is on (the default). It makes exactly
the changes the one-by-one path in flows.py makes, for many flows at once:

* creation: the flows and their first attempts (no reservation, no refund),
  one multi-row INSERT per table and the COMMIT in one round trip;
* transition: SENDING → PENDING, and → SUCCEEDED / FAILED of attempts without
  a float reservation or a refund whose flow is PROCESSING, with their poll
  queue rows, flow results and outbox rows, in one round trip that commits
  only if every statement changed the rows expected (``Tx.script_commit_if``).
  The rows are read under their locks first, in one more round trip, except
  those the request that created them hands in (``ApplyItem.known``: the
  response to a request's own call): those are written on condition that
  their versions have not moved, and when one has (a poller, a callback or an
  operator wrote first) the batch is rolled back and done again with every
  row read under its lock, so the writer that lost sees the winner's result
  exactly as it does on the locked path.

Everything else (a replay, a discrepancy, a reservation, a refund, a second
report on one attempt) goes one by one through the functions the store passes
in, after the batch's commit, so it sees what the batch wrote. Each caller is
answered only after the commit that holds its rows (gateway/store/batch.py).

A batch the database refuses as a whole (a duplicate key, a value it will not
store, a deadlock, a count that does not match) is rolled back and its items
go one by one, so the row at fault gets its own error and the other requests
in the batch are recorded as if they had come alone. Only a connection lost
while creating is passed to every caller of the batch: whether its COMMIT
happened is unknown, and each caller retries with its own request_id.

Ids: a multi-row INSERT's rows are mapped to their ids by their unique keys
(``flow_no``, ``channel_order_no``) in the same round trip, never by
arithmetic on ``LAST_INSERT_ID()``: consecutive ids depend on
``innodb_autoinc_lock_mode`` and ``auto_increment_increment``, which a
failover to another server can change under a running process.

Locks follow the store's one order (gateway/store/flows.py): a batch of
transitions locks every attempt of the batch (ascending id) before any flow.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from gateway import metrics
from gateway.domain import ATTEMPT_FROM, AttemptStatus, FlowStatus
from gateway.errors import CountMismatch, DatabaseUnavailable, StoreError
from gateway.outbox.writer import flow_event
from gateway.store import outbox, poll_queue
from gateway.store.batch import GroupCommitter, gather_each
from gateway.store.db import Database, Tx
from gateway.store.flow_sql import (
    ATTEMPT_CHANGE,
    ATTEMPT_WITH_FLOW,
    FLOW_RESULT,
    INSERT_ATTEMPT_COLUMNS,
    INSERT_ATTEMPT_ROW,
    INSERT_FLOW_COLUMNS,
    INSERT_FLOW_ROW,
    TARGET,
    ApplyItem,
    attempt_args,
    attempt_change,
    flow_args,
    flow_part,
    flow_result,
    record_attempt_change,
    record_flow_result,
    unchanged,
)
from gateway.store.rows import (
    Applied,
    ApplyResult,
    AttemptRow,
    Created,
    Creation,
    FlowRow,
    NewAttempt,
    NewFlow,
    new_attempt_row,
    new_flow_row,
    utcnow,
)
from paygate.v1 import events_pb2

CreateOne = Callable[[NewFlow, NewAttempt], Awaitable[Creation[FlowRow]]]
ApplyOne = Callable[[ApplyItem], Awaitable[ApplyResult]]

# A batch of transitions locks its attempts (ascending id) first, then reads them with their flows,
# locking the flows: attempts before flows, the store's one lock order.
_LOCK_ATTEMPTS = "SELECT id FROM attempts WHERE id IN ({marks}) ORDER BY id FOR UPDATE"
_ATTEMPTS_WITH_FLOWS = ATTEMPT_WITH_FLOW.replace("WHERE a.id=%s", "WHERE a.id IN ({marks}) ORDER BY a.id")
# The first attempt of a flow created in the same statement batch: its flow_id found by flow_no.
_INSERT_ATTEMPT_BY_FLOW_NO = INSERT_ATTEMPT_ROW.replace("(%s,", "((SELECT id FROM flows WHERE flow_no=%s),", 1)


def _marks(values: Sequence[object]) -> str:
    return ",".join(["%s"] * len(values))


def _values_table(columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> tuple[str, list[Any]]:
    """A derived table ``(SELECT %s AS c1, ... UNION ALL SELECT %s, ...)`` of per-row values for a batch UPDATE."""
    marks = ",".join(["%s"] * len(columns))
    first = "SELECT " + ", ".join(f"%s AS {c}" for c in columns)
    sql = " UNION ALL ".join([first] + [f"SELECT {marks}"] * (len(rows) - 1))
    return f"({sql})", [value for row in rows for value in row]


def _batch_update(
    table: str, keys: tuple[str, ...], columns: tuple[str, ...], rows: list[tuple[Any, ...]], on: str, extra: str = ""
) -> tuple[str, list[Any]]:
    """``UPDATE table t JOIN (per-row values) v ON <on> SET t.c = v.c, ...``: one statement for many rows."""
    derived, args = _values_table((*keys, *columns), rows)
    sets = ", ".join([*(f"t.{c} = v.{c}" for c in columns), *([extra] if extra else []), "t.version = t.version + 1"])
    return f"UPDATE {table} t JOIN {derived} v ON {on} SET {sets}", args


def _usable_known(item: ApplyItem) -> tuple[AttemptRow, FlowRow] | None:
    """The rows ``item``'s request recorded, if a batch may write it from them without reading them.

    Only transitions the batch writes itself (see :meth:`FlowBatch._apply_together`),
    from a status that allows them; anything else is read under its lock as always.
    """
    if item.known is None:
        return None
    attempt, flow = item.known
    target = TARGET[item.outcome.status]
    if attempt.id != item.attempt_id or attempt.status not in ATTEMPT_FROM[target]:
        return None
    usable = target is AttemptStatus.PENDING or (
        flow.id == attempt.flow_id
        and flow.status is FlowStatus.PROCESSING
        and attempt.position_reserved == 0
        and flow.original_flow_id is None
        and flow.split_shares is None
    )
    return item.known if usable else None


class FlowBatch:
    """The batch paths of flow creation and transition (see the module doc).

    ``create_one`` / ``apply_one`` are the store's one-by-one writes, used for
    whatever a batch leaves out.
    """

    def __init__(
        self,
        db: Database,
        *,
        create_one: CreateOne,
        apply_one: ApplyOne,
        max_batch: int = 64,
        workers: int = 1,
        incarnation: str = "",
    ) -> None:
        self.db = db
        self.incarnation = incarnation  # stamped on every attempt recorded (see MySQLFlowStore)
        self._create_one = create_one
        self._apply_one = apply_one
        self._creates: GroupCommitter[tuple[NewFlow, NewAttempt], Creation[FlowRow]] = GroupCommitter(
            "create", self._create_batch, max_batch=max_batch, workers=workers
        )
        self._applies: GroupCommitter[ApplyItem, ApplyResult] = GroupCommitter(
            "apply", self._apply_batch, max_batch=max_batch, workers=workers
        )

    async def create(self, new: NewFlow, attempt: NewAttempt) -> Creation[FlowRow]:
        """Record a flow and its first attempt with whatever else is waiting; returns after their commit."""
        return await self._creates.submit((new, attempt))

    async def apply(self, item: ApplyItem) -> ApplyResult:
        """Record one transition with whatever else is waiting; returns after its commit."""
        return await self._applies.submit(item)

    # --- creation ---------------------------------------------------------------------

    async def _create_batch(self, items: list[tuple[NewFlow, NewAttempt]]) -> list[Creation[FlowRow] | BaseException]:
        try:
            return [Created(flow) for flow in await self._create_together(items)]
        except DatabaseUnavailable:
            raise  # the COMMIT may or may not have happened: every caller hears it and retries its request_id
        except StoreError:
            pass  # e.g. a replay (duplicate key) or a value the database refuses: nothing was written
        return await gather_each([self._create_one(new, attempt) for new, attempt in items])

    async def _create_together(self, items: list[tuple[NewFlow, NewAttempt]]) -> list[FlowRow]:
        """Flows and their first attempts: one INSERT per table, the ids read back, the commit; one round trip.

        Each attempt's ``flow_id`` is its flow's id found by the flow's unique ``flow_no``, and
        every id is read back by the unique ``channel_order_no``, in the same round trip: the
        mapping holds whatever the server's auto-increment settings (see the module doc).
        """
        now = utcnow()
        flows = [new_flow_row(new, now) for new, _ in items]
        attempts = [
            new_attempt_row(flow, 1, attempt, 0, now, self.incarnation)
            for flow, (_, attempt) in zip(flows, items, strict=True)
        ]
        insert_flows = (
            f"INSERT INTO flows {INSERT_FLOW_COLUMNS} VALUES " + ",".join([INSERT_FLOW_ROW] * len(flows)),
            [arg for flow in flows for arg in flow_args(flow)],
        )
        insert_attempts = (
            f"INSERT INTO attempts {INSERT_ATTEMPT_COLUMNS} VALUES "
            + ",".join([_INSERT_ATTEMPT_BY_FLOW_NO] * len(attempts)),
            [arg for f, a in zip(flows, attempts, strict=True) for arg in (f.flow_no, *attempt_args(a, now)[1:])],
        )
        orders = [a.channel_order_no for a in attempts]
        read_ids = (
            f"SELECT id, flow_id, channel_order_no FROM attempts WHERE channel_order_no IN ({_marks(orders)})",
            orders,
        )
        async with self.db.transaction() as tx:
            *_, ids = await tx.script([insert_flows, insert_attempts, read_ids], commit=True)
        by_order = {str(r["channel_order_no"]): (int(r["flow_id"]), int(r["id"])) for r in ids.rows}
        for flow, attempt in zip(flows, attempts, strict=True):
            flow.id, attempt.id = by_order[attempt.channel_order_no]
            attempt.flow_id = flow.id
            flow.attempts.append(attempt)
            metrics.FLOWS_CREATED.labels(kind=flow.kind.value).inc()
        return flows

    # --- transition -------------------------------------------------------------------

    async def _apply_batch(self, items: list[ApplyItem]) -> list[ApplyResult | BaseException]:
        results: list[ApplyResult | BaseException | None] = [None] * len(items)
        try:
            try:
                later = await self._apply_together(items, results, trust_known=True)
            except CountMismatch:
                if not any(item.known is not None for item in items):
                    raise
                # a row a request knew was written since (a poller, a callback, an operator): rolled
                # back; the same batch again, every row read under its lock
                metrics.STORE_STALE_KNOWN.inc()
                results[:] = [None] * len(items)
                later = await self._apply_together(items, results, trust_known=False)
        except StoreError:
            # rolled back (a deadlock with another writer, a value refused, a count off): each on its own;
            # the one-by-one transition is a compare-and-set, so it is safe even if the COMMIT had happened
            results = [None] * len(items)
            later = list(range(len(items)))
        for i, result in zip(later, await gather_each([self._apply_one(items[i]) for i in later]), strict=True):
            results[i] = result
        done = [r for r in results if r is not None]
        assert len(done) == len(items)
        return done

    async def _apply_together(
        self, items: list[ApplyItem], results: list[ApplyResult | BaseException | None], *, trust_known: bool
    ) -> list[int]:
        """The common transitions of a batch in one commit; returns the indexes left for the one-by-one path.

        Handled here: SENDING → PENDING, and → SUCCEEDED/FAILED of attempts
        without a float reservation, a refund or a split, whose flow is PROCESSING; and
        reports that change nothing (replays, lost races, still pending).
        Everything else (discrepancies, positions, refunds, a second report on
        the same attempt) goes through the one-by-one path after this commit,
        and so sees what it wrote.

        With ``trust_known``, the attempts (and flows) of items that carry their rows as
        their request recorded them (:func:`_usable_known`) are not read: the writes are
        conditional on those rows' versions, every write of either table bumps its row's
        version, and a count that differs rolls the whole batch back (``CountMismatch``).
        The rest is read under its row locks, in one round trip, as always.
        """
        now = utcnow()
        first_of: dict[int, int] = {}
        later: list[int] = []
        for i, item in enumerate(items):
            if item.attempt_id in first_of:
                later.append(i)  # a second report on the same attempt: after this commit
            else:
                first_of[item.attempt_id] = i
        changes: list[tuple[int, AttemptRow, AttemptStatus]] = []
        finishing: list[tuple[int, FlowRow, tuple[Any, ...]]] = []
        transitions: list[tuple[int, FlowRow | None]] = []
        known = {a: rows for a, i in first_of.items() if trust_known and (rows := _usable_known(items[i])) is not None}
        async with self.db.transaction() as tx:
            by_id: dict[int, dict[str, Any]] = {}
            ids = sorted(a for a in first_of if a not in known)
            if ids:
                marks = _marks(ids)
                _, read = await tx.script(
                    [(_LOCK_ATTEMPTS.format(marks=marks), ids), (_ATTEMPTS_WITH_FLOWS.format(marks=marks), ids)]
                )
                by_id = {int(row["id"]): row for row in read.rows}
            for attempt_id, i in first_of.items():
                item, row, rows_known = items[i], by_id.get(attempt_id), known.get(attempt_id)
                if row is None and rows_known is None:
                    results[i] = ApplyResult(Applied.UNKNOWN, None)
                    continue
                target = TARGET[item.outcome.status]
                attempt = rows_known[0] if rows_known is not None else AttemptRow.from_row(row or {})
                if attempt.status not in ATTEMPT_FROM[target]:
                    # replays and lost races are answered here; only a conflict (discrepancy) writes, later
                    same = unchanged(attempt, target, item.outcome)
                    if same is None:
                        later.append(i)
                    else:
                        results[i] = same
                    continue
                flow: FlowRow | None = None
                if target is not AttemptStatus.PENDING:
                    flow = rows_known[1] if rows_known is not None else FlowRow.from_row(flow_part(row or {}))
                    finish = target is AttemptStatus.SUCCEEDED or item.finish_flow_on_failure
                    if (
                        attempt.position_reserved > 0
                        or flow.original_flow_id is not None
                        or flow.split_shares is not None  # its parts go with the transition (one by one)
                        or (finish and flow.status is not FlowStatus.PROCESSING)
                    ):
                        later.append(i)
                        continue
                changes.append((i, attempt, target))
                transitions.append((i, flow))
            flows = dict(transitions)
            if changes:
                await self._write_together(tx, items, changes, flows, finishing, now)
        finished = {i for i, _, _ in finishing}
        for i, attempt, _ in changes:
            flow = flows[i]
            results[i] = ApplyResult(Applied.TRANSITIONED, attempt, flow, i in finished)
            if flow is not None and i in finished:
                metrics.FLOWS_FINISHED.labels(kind=flow.kind.value, status=flow.status.value).inc()
        return sorted(later)

    async def _write_together(
        self,
        tx: Tx,
        items: Sequence[ApplyItem],
        changes: list[tuple[int, AttemptRow, AttemptStatus]],
        flows: dict[int, FlowRow | None],
        finishing: list[tuple[int, FlowRow, tuple[Any, ...]]],
        now: datetime,
    ) -> None:
        """One round trip: every attempt update, poll-queue change, flow result and outbox row of a batch, and COMMIT.

        Fills ``finishing`` with the flows it finished. Every attempt and flow is
        written on condition of its status and version as the batch knows them (read
        under the caller's row locks, or as its request recorded them); the COMMIT
        is conditional on every count being the one expected
        (``Tx.script_commit_if``), so a row written by someone else since its
        request recorded it (or a bug) rolls the whole batch back and raises.
        """
        statements: list[tuple[str, Sequence[Any]]] = []
        expected: list[int | None] = [len(changes)]
        changes.sort(key=lambda change: change[1].id)  # rows not read yet are locked here: ascending, as everywhere
        statements.append(
            _batch_update(
                "attempts",
                ("id", "prev", "ver"),
                ATTEMPT_CHANGE,
                [(a.id, a.status.value, a.version, *attempt_change(t, items[i].outcome, now)) for i, a, t in changes],
                "t.id = v.id AND t.status = v.prev AND t.version = v.ver",
            )
        )
        for i, attempt, target in changes:
            record_attempt_change(attempt, target, items[i].outcome, now)
        pending = [(a, i) for i, a, _ in changes if a.status is AttemptStatus.PENDING]
        terminal = [(a, i) for i, a, _ in changes if a.status is not AttemptStatus.PENDING]
        if pending:
            due = [(a.id, a.channel, now + timedelta(seconds=items[i].poll_due_in_s)) for a, i in pending]
            statements.append(poll_queue.enqueue_statement(due, now))
            expected.append(None)  # a row may already be queued
        if terminal:
            statements.append(poll_queue.dequeue_statement([a.id for a, _ in terminal]))
            expected.append(None)  # SENDING attempts have none
        for attempt, i in terminal:
            flow = flows[i]
            assert flow is not None
            if attempt.status is AttemptStatus.SUCCEEDED or items[i].finish_flow_on_failure:
                finishing.append((i, flow, flow_result(attempt, items[i].outcome, now)))
        if finishing:
            finishing.sort(key=lambda finish: finish[1].id)
            statements.append(
                _batch_update(
                    "flows",
                    ("id", "ver"),
                    FLOW_RESULT,
                    [(f.id, f.version, *values) for _, f, values in finishing],
                    "t.id = v.id AND t.status = 'PROCESSING' AND t.version = v.ver",
                    "t.needs_review = 0",
                )
            )
            for i, flow, values in finishing:
                record_flow_result(flow, values, items[i].outcome)
            statements.append(
                outbox.insert_statement(
                    [(flow_event(f.as_event_source(), events_pb2.FLOW_RESULT), f.id) for _, f, _ in finishing]
                )
            )
            expected += [len(finishing), len(finishing)]
        # the COMMIT goes in the same round trip, on condition that every count is the one expected
        await tx.script_commit_if(statements, expected)
