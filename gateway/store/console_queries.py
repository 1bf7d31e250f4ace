"""The operations console's reads (gateway/console): every statement is here, each bounded and indexed.

Nothing here writes. Searches run under MariaDB's ``max_statement_time`` (``query_timeout_s``), so
a search the indexes cannot serve fails fast with :class:`~gateway.errors.QueryTooBroad`
instead of holding a connection; the flow search pages with a keyset (``created_at, id``
descending, never OFFSET), so page 1,000 costs what page 1 does. Which index serves which search
is written next to each query and checked by tests/console/test_queries_explain.py; the figures
with 1,000,000 flows are in docs/CONSOLE.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.errors import QueryTooBroad, StoreError
from gateway.store.console_rows import (
    ChannelOutcomes,
    DayPoint,
    DiscrepancyEntry,
    FlowListItem,
    FlowQuery,
    FlowRecords,
    KindStatusTotal,
    OutboxBacklog,
    OutboxEntry,
    PollState,
)
from gateway.store.db import Database, error_number

# MariaDB's error when max_statement_time stops a statement
_STATEMENT_TIMEOUT = 1969

_FLOW_ITEM_COLUMNS = (
    "f.id, f.flow_no, f.caller, f.request_id, f.kind, f.amount, f.currency, f.account_masked, f.bank_code,"
    " f.status, f.channel, f.failure_code, f.needs_review, f.description, f.created_at, f.finished_at"
)


def _flow_item(r: dict[str, Any]) -> FlowListItem:
    return FlowListItem(
        id=int(r["id"]),
        flow_no=r["flow_no"],
        caller=r["caller"],
        request_id=r["request_id"],
        kind=r["kind"],
        amount=int(r["amount"]),
        currency=r["currency"],
        account_masked=r["account_masked"],
        bank_code=r["bank_code"],
        status=r["status"],
        channel=r["channel"],
        failure_code=r["failure_code"],
        needs_review=bool(r["needs_review"]),
        description=r["description"],
        created_at=r["created_at"],
        finished_at=r["finished_at"],
    )


def flow_search_sql(query: FlowQuery) -> tuple[str, list[Any]]:
    """The flow search's statement and arguments (also what the EXPLAIN tests look at).

    Newest first by ``(created_at, id)``. The index that serves it: ``uq_flows_flow_no`` for a
    flow number, ``ix_flows_request`` for a request id, ``ix_flows_caller_created`` for a caller,
    ``ix_flows_channel_created`` for a channel, ``ix_flows_status_created`` for a status,
    ``ix_flows_review`` for the review filter, else ``ix_flows_created``: each keeps
    ``(…, created_at, id)`` order, so the date range and the cursor are ranges of the same index
    and no sort happens. Kind and amount filter the rows that index yields, except a narrow amount
    range, which the optimizer finds through ``ix_flows_amount`` and sorts (a few thousand rows of a
    million at most).
    """
    where: list[str] = []
    args: list[Any] = []
    for column, value in (
        ("f.flow_no", query.flow_no),
        ("f.request_id", query.request_id),
        ("f.caller", query.caller),
        ("f.kind", query.kind),
        ("f.status", query.status),
        ("f.channel", query.channel),
    ):
        if value:
            where.append(f"{column} = %s")
            args.append(value)
    if query.needs_review:
        where.append("f.needs_review = 1 AND f.status = 'PROCESSING'")
    if query.min_amount is not None:
        where.append("f.amount >= %s")
        args.append(query.min_amount)
    if query.max_amount is not None:
        where.append("f.amount <= %s")
        args.append(query.max_amount)
    if query.created_from is not None:
        where.append("f.created_at >= %s")
        args.append(query.created_from)
    if query.created_to is not None:
        where.append("f.created_at < %s")
        args.append(query.created_to)
    if query.after is not None:
        # (created_at, id) < (c, i), written so that the range on created_at is visible to the optimizer
        where.append("f.created_at <= %s AND (f.created_at < %s OR f.id < %s)")
        args += [query.after.created_at, query.after.created_at, query.after.id]
    sql = f"SELECT {_FLOW_ITEM_COLUMNS} FROM flows f"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY f.created_at DESC, f.id DESC LIMIT %s"
    args.append(query.limit)
    return sql, args


class MySQLConsoleQueries:
    """The console's read model over MariaDB (implements :class:`gateway.console.ports.ConsoleReads`)."""

    def __init__(self, db: Database, *, timeout_s: float = 3.0) -> None:
        self.db = db
        self.timeout_s = timeout_s

    async def _bounded(self, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        """``sql`` under max_statement_time; a statement stopped by it raises QueryTooBroad."""
        bounded = f"SET STATEMENT max_statement_time={self.timeout_s:.3f} FOR {sql}"
        try:
            return await self.db.fetchall(bounded, args)
        except StoreError as exc:
            if error_number(exc.__cause__) == _STATEMENT_TIMEOUT:
                raise QueryTooBroad(f"the search ran longer than {self.timeout_s:g} s; narrow it") from exc
            raise

    # --- overview -------------------------------------------------------------------------

    async def totals(self, start: datetime, end: datetime) -> list[KindStatusTotal]:
        """Flows created in [start, end) by kind, status and currency (a range of ``ix_flows_created_totals``,
        which holds every column the query reads)."""
        rows = await self._bounded(
            "SELECT kind, status, currency, COUNT(*) AS n, SUM(amount) AS amount FROM flows"
            " WHERE created_at >= %s AND created_at < %s GROUP BY kind, status, currency",
            (start, end),
        )
        return [
            KindStatusTotal(r["kind"], r["status"], r["currency"], int(r["n"]), int(r["amount"] or 0)) for r in rows
        ]

    async def trend(self, bounds: Sequence[tuple[datetime, datetime]]) -> list[DayPoint]:
        """Flows created on each of consecutive days (``bounds``: each day's [start, end)), by status."""
        if not bounds:
            return []
        cases = " ".join("WHEN created_at < %s THEN " + str(i) for i in range(len(bounds)))
        rows = await self._bounded(
            f"SELECT CASE {cases} END AS day, status, COUNT(*) AS n, SUM(amount) AS amount FROM flows"
            " WHERE created_at >= %s AND created_at < %s GROUP BY day, status",
            (*(end for _, end in bounds), bounds[0][0], bounds[-1][1]),
        )
        return [DayPoint(int(r["day"]), r["status"], int(r["n"]), int(r["amount"] or 0)) for r in rows]

    async def channel_outcomes(self, since: datetime) -> list[ChannelOutcomes]:
        """Attempts created since ``since``, per channel and operation (a range of ``ix_attempts_created``,
        which holds every column the query reads)."""
        rows = await self._bounded(
            "SELECT channel, operation,"
            " SUM(status = 'SUCCEEDED') AS ok,"
            " SUM(status = 'FAILED' AND payer_attributable = 0) AS channel_failed,"
            " SUM(status = 'FAILED' AND payer_attributable = 1) AS payer_failed,"
            " SUM(status IN ('SENDING', 'PENDING')) AS open"
            " FROM attempts WHERE created_at >= %s GROUP BY channel, operation",
            (since,),
        )
        return [
            ChannelOutcomes(
                r["channel"],
                r["operation"],
                int(r["ok"] or 0),
                int(r["channel_failed"] or 0),
                int(r["payer_failed"] or 0),
                int(r["open"] or 0),
            )
            for r in rows
        ]

    async def discrepancies_since(self, since: datetime) -> int:
        rows = await self._bounded("SELECT COUNT(*) AS n FROM discrepancies WHERE created_at >= %s", (since,))
        return int(rows[0]["n"]) if rows else 0

    # --- flows ---------------------------------------------------------------------------

    async def search_flows(self, query: FlowQuery) -> list[FlowListItem]:
        sql, args = flow_search_sql(query)
        return [_flow_item(r) for r in await self._bounded(sql, args)]

    async def flow_records(self, flow_id: int, flow_no: str, attempt_ids: Sequence[int]) -> FlowRecords:
        """The poll-queue rows, outbox events, discrepancies and refunds of one flow (its audit entries come
        through the AuditLog port)."""
        records = FlowRecords()
        if attempt_ids:
            marks = ",".join(["%s"] * len(attempt_ids))
            for r in await self.db.fetchall(
                "SELECT attempt_id, tries, due_at, expedited_at, lease_owner FROM poll_queue"
                f" WHERE attempt_id IN ({marks})",
                list(attempt_ids),
            ):
                records.polls.append(
                    PollState(int(r["attempt_id"]), int(r["tries"]), r["due_at"], r["expedited_at"], r["lease_owner"])
                )
        records.events = [
            self._outbox_entry(r, flow_no)
            for r in await self.db.fetchall(
                "SELECT id, event_id, event_type, flow_id, caller, payload, created_at, published_at, attempts,"
                " last_error FROM outbox WHERE flow_id = %s ORDER BY id LIMIT 200",
                (flow_id,),
            )
        ]
        records.discrepancies = [
            DiscrepancyEntry(
                int(r["id"]),
                int(r["attempt_id"]),
                r["recorded_status"],
                r["reported_status"],
                r["reported_code"],
                r["source"],
                r["created_at"],
            )
            for r in await self.db.fetchall(
                "SELECT * FROM discrepancies WHERE flow_id = %s ORDER BY id LIMIT 200", (flow_id,)
            )
        ]
        records.refunds = [
            _flow_item(r)
            for r in await self.db.fetchall(
                f"SELECT {_FLOW_ITEM_COLUMNS} FROM flows f WHERE f.original_flow_id = %s ORDER BY f.id LIMIT 200",
                (flow_id,),
            )
        ]
        return records

    # --- outbox ----------------------------------------------------------------------------

    @staticmethod
    def _outbox_entry(r: dict[str, Any], flow_no: str = "") -> OutboxEntry:
        return OutboxEntry(
            id=int(r["id"]),
            event_id=r["event_id"],
            event_type=r["event_type"],
            flow_id=int(r["flow_id"]),
            flow_no=flow_no or r.get("flow_no") or "",
            caller=r["caller"],
            payload=bytes(r["payload"]),
            created_at=r["created_at"],
            published_at=r["published_at"],
            attempts=int(r["attempts"]),
            last_error=r["last_error"],
        )

    async def outbox_backlog(self, max_attempts: int) -> OutboxBacklog:
        """Unpublished events still tried and parked ones, and the oldest one's age (``ix_outbox_unpublished``)."""
        rows = await self._bounded(
            "SELECT SUM(attempts < %s) AS waiting, SUM(attempts >= %s) AS parked,"
            " TIMESTAMPDIFF(MICROSECOND, MIN(created_at), UTC_TIMESTAMP(6)) AS age_us"
            " FROM outbox WHERE published_at IS NULL",
            (max_attempts, max_attempts),
        )
        row = rows[0] if rows else {}
        age = row.get("age_us")
        return OutboxBacklog(
            int(row.get("waiting") or 0), int(row.get("parked") or 0), max(0.0, int(age) / 1e6) if age else 0.0
        )

    async def outbox_unpublished(
        self, *, parked: bool, max_attempts: int, after_id: int, limit: int
    ) -> list[OutboxEntry]:
        """Unpublished events, parked (tried ``max_attempts`` times) or still waiting, oldest first."""
        test = ">=" if parked else "<"
        rows = await self._bounded(
            "SELECT o.id, o.event_id, o.event_type, o.flow_id, o.msg_key AS flow_no, o.caller, o.payload,"
            " o.created_at, o.published_at, o.attempts, o.last_error FROM outbox o"
            f" WHERE o.published_at IS NULL AND o.attempts {test} %s AND o.id > %s ORDER BY o.id LIMIT %s",
            (max_attempts, after_id, limit),
        )
        return [self._outbox_entry(r) for r in rows]
