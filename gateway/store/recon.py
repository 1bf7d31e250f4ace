"""Reconciliation in MySQL: runs, the staged statement lines, items, carry-over, scheduler claims.

The statement is staged into ``recon_lines`` in batches of multi-row INSERTs
while it is parsed; matching is then set-based: one join of the run's lines
with ``attempts`` on ``channel_order_no`` (the unique key) counts the pairs
that plainly agree (:data:`MATCHED_SQL`) and returns the others for
:func:`gateway.recon.model.classify`; one anti-join finds the day's successes
no line names. A run's result (items, carry-over, counts, supersession of the
previous run of the same day) is written in one commit by :meth:`finish`.
Implements :class:`gateway.recon.ports.ReconStore`.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import date, datetime
from typing import Any

from channels.contract import Operation
from channels.statement import LineStatus, StatementLine
from gateway.domain import AttemptStatus, FlowStatus
from gateway.errors import DuplicateKey
from gateway.outbox.writer import recon_event
from gateway.recon.model import (
    CRITICAL,
    Carry,
    Item,
    ItemClass,
    KindTotals,
    LineSide,
    LocalSide,
    Resolution,
    RunRow,
    RunStatus,
    RunTotals,
)
from gateway.store import outbox
from gateway.store.bulk import field
from gateway.store.db import Tx
from gateway.store.recon_queries import ReconQueries
from gateway.store.rows import utcnow
from routing.config import FeeSchedule

_LINE_COLUMNS = (
    "(run_id, line_no, channel_order_no, operation, status, amount, fee, currency, booked_at, channel_txn_id,"
    " original_order_no)"
)


_LINE_NAMES = _LINE_COLUMNS.strip("()").replace(" ", "").split(",")


def _write_tsv(fd: int, run_id: int, lines: Sequence[StatementLine]) -> None:
    """The lines as the bulk loader's rows (the columns of :data:`_LINE_NAMES`), into ``fd`` (closed)."""
    operations = {op: op.value for op in Operation}
    statuses = {status: status.value for status in LineStatus}
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
        out.writelines(
            f"{run_id}\t{int(line.line_no)}\t{field(line.channel_order_no)}\t{operations[line.operation]}\t"
            f"{statuses[line.status]}\t{int(line.amount)}\t{int(line.fee)}\t{field(line.currency)}\t"
            f"{line.booked_at.isoformat(' ')}\t{field(line.channel_txn_id[:128])}\t"
            f"{field(line.original_channel_order_no)}\n"
            for line in lines
        )


_STAGE_STATEMENT_BYTES = 1 << 20  # well under MariaDB's default max_allowed_packet (16 MB)


def _chunks(rows: Sequence[str], limit: int) -> Iterator[Sequence[str]]:
    """``rows`` in consecutive runs whose joined length stays under ``limit`` (at least one row each)."""
    start, size = 0, 0
    for i, row in enumerate(rows):
        if size and size + len(row) + 1 > limit:
            yield rows[start:i]
            start, size = i, 0
        size += len(row) + 1
    if start < len(rows):
        yield rows[start:]


def expected_fee_sql(schedule: FeeSchedule | None) -> str:
    """The fee we expect for attempt ``a``: the channel's word on the result, else ``schedule``'s.

    ``schedule`` written as SQL is :meth:`routing.config.FeeSchedule.fee` (half-up on the
    percentage, then the clamp); refunds are checked against the channel's word only.
    Values are the configuration's integers, never input.
    """
    if schedule is None:
        return "a.fee"
    fixed, ppm, minimum = int(schedule.fixed), int(schedule.rate_ppm), int(schedule.minimum)
    value = f"GREATEST({fixed} + (a.amount * {ppm} + 500000) DIV 1000000, {minimum})"
    if schedule.maximum is not None:
        value = f"LEAST({value}, {int(schedule.maximum)})"
    return f"COALESCE(a.fee, IF(a.operation = 'refund', NULL, {value}))"


_SAME_OPERATION = "(a.operation = l.operation OR (l.operation = 'withhold' AND a.operation = 'collect'))"


def matched_sql(schedule: FeeSchedule | None) -> str:
    """True for a line and attempt ``a`` of the channel (its one ``%s``) that agree (model.classify says MATCHED).

    NULL when the line has no attempt: wrap it in COALESCE(..., 0).
    """
    fee = expected_fee_sql(schedule)
    return (
        f"(a.channel = %s AND {_SAME_OPERATION} AND ("
        f"(l.status = 'SUCCEEDED' AND a.status = 'SUCCEEDED' AND a.amount = l.amount"
        f" AND ({fee} IS NULL OR {fee} = l.fee))"
        " OR (l.status = 'FAILED' AND a.status = 'FAILED')))"
    )


def _run(row: dict[str, Any]) -> RunRow:
    totals = row.get("totals")
    return RunRow(
        id=int(row["id"]),
        channel=row["channel"],
        day=row["day"],
        seq=int(row["seq"]),
        trigger=row["trigger_kind"],
        operator=row["operator"],
        status=RunStatus(row["status"]),
        outcome=row["outcome"],
        format=row["format"],
        source=row["source"],
        sha256=row["sha256"],
        lines=int(row["line_count"]),
        matched=int(row["matched"]),
        discrepancies=int(row["discrepancies"]),
        resolved=int(row["resolved"]),
        carried=int(row["carried"]),
        totals=json.loads(totals) if totals else {},
        error=row["error"],
        superseded_by=row["superseded_by"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _line_side(row: dict[str, Any]) -> LineSide:
    return LineSide(
        line_no=int(row["line_no"]),
        operation=row["operation"],
        status=LineStatus(row["status"]),
        amount=int(row["amount"]),
        fee=int(row["fee"]),
        channel_txn_id=row["channel_txn_id"],
        booked_at=row["booked_at"],
    )


def _local_side(row: dict[str, Any]) -> LocalSide | None:
    if row.get("a_id") is None:
        return None
    fee = row.get("a_expected_fee")
    return LocalSide(
        attempt_id=int(row["a_id"]),
        flow_id=int(row["a_flow_id"]),
        flow_no=row["f_flow_no"],
        channel=row["a_channel"],
        operation=row["a_operation"],
        status=AttemptStatus(row["a_status"]),
        amount=int(row["a_amount"]),
        expected_fee=None if fee is None else int(fee),
        flow_status=FlowStatus(row["f_status"]),
        needs_review=bool(row["f_needs_review"]),
    )


def _attempt_columns(schedule: FeeSchedule | None) -> str:
    return (
        "a.id AS a_id, a.flow_id AS a_flow_id, a.channel AS a_channel, a.operation AS a_operation,"
        f" a.status AS a_status, a.amount AS a_amount, {expected_fee_sql(schedule)} AS a_expected_fee"
    )


def _local_columns(schedule: FeeSchedule | None) -> str:
    return (
        f"{_attempt_columns(schedule)}, f.flow_no AS f_flow_no, f.status AS f_status, f.needs_review AS f_needs_review"
    )


def _operations_sql(operations: Iterable[str]) -> tuple[str, list[str]]:
    names = sorted(set(operations) | ({"collect"} if "withhold" in operations else set()))
    return ",".join(["%s"] * len(names)), names


def _item_args(run: RunRow, item: Item, now: datetime) -> tuple[Any, ...]:
    line, local = item.line, item.local
    return (
        run.id,
        run.channel,
        run.day,
        item.item_class.value,
        item.channel_order_no,
        local.flow_id if local else None,
        local.flow_no if local else "",
        local.attempt_id if local else None,
        (local.operation if local else line.operation if line else "")[:16],
        local.status.value if local else "",
        local.amount if local else None,
        local.expected_fee if local else None,
        line.line_no if line else None,
        line.status.value if line else "",
        line.amount if line else None,
        line.fee if line else None,
        line.channel_txn_id[:128] if line else "",
        line.booked_at if line else None,
        item.resolution.value,
        item.resolved_by,
        item.reason[:500],
        now if item.resolution is not Resolution.OPEN else None,
        now,
    )


_ITEM_INSERT = (
    "INSERT INTO recon_items (run_id, channel, day, class, channel_order_no, flow_id, flow_no, attempt_id, operation,"
    " local_status, local_amount, local_fee, line_no, line_status, line_amount, line_fee, line_txn_id,"
    " line_booked_at, resolution, resolved_by, resolution_reason, resolved_at, created_at)"
    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
)


def _classes(items: Sequence[Item]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item.item_class.value] = counts.get(item.item_class.value, 0) + 1
    return dict(sorted(counts.items()))


class MySQLReconStore(ReconQueries):
    """Implements :class:`gateway.recon.ports.ReconStore` (the reads and marks of items, the report's
    figures and the scheduler's claims are :class:`~gateway.store.recon_queries.ReconQueries`')."""

    # -- runs ---------------------------------------------------------------------------------

    async def start_run(
        self, channel: str, day: date, *, trigger: str, operator: str, format: str, source: str, sha256: str
    ) -> RunRow:
        """A new RUNNING run, numbered after the (channel, day)'s earlier ones (never overwriting one)."""
        for _ in range(5):
            try:
                async with self.db.transaction() as tx:
                    row = await tx.fetchone(
                        "SELECT COALESCE(MAX(seq), 0) AS seq FROM recon_runs WHERE channel=%s AND day=%s",
                        (channel, day),
                    )
                    seq = int(row["seq"] if row else 0) + 1
                    run_id = await tx.insert(
                        "INSERT INTO recon_runs (channel, day, seq, trigger_kind, operator, status, format, source,"
                        " sha256, started_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                        (
                            channel,
                            day,
                            seq,
                            trigger,
                            operator[:64],
                            RunStatus.RUNNING.value,
                            format,
                            source[:255],
                            sha256,
                            utcnow(),
                        ),
                    )
                    await tx.commit()
            except DuplicateKey:
                continue  # another replica numbered the same seq first: take the next
            found = await self.run(run_id)
            assert found is not None
            return found
        raise DuplicateKey("uq_recon_runs_seq", f"could not number a run of {channel} {day}")

    async def run(self, run_id: int) -> RunRow | None:
        row = await self.db.fetchone("SELECT * FROM recon_runs WHERE id=%s", (run_id,))
        return _run(row) if row else None

    async def runs(
        self, *, channel: str = "", day: date | None = None, current_only: bool = False, limit: int = 100
    ) -> list[RunRow]:
        """Runs newest first; ``current_only`` leaves out superseded ones."""
        where: list[str] = ["1=1"]
        args: list[Any] = []
        if channel:
            where.append("channel=%s")
            args.append(channel)
        if day is not None:
            where.append("day=%s")
            args.append(day)
        if current_only:
            where.append("superseded_by IS NULL")
        rows = await self.db.fetchall(
            f"SELECT * FROM recon_runs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT %s", (*args, limit)
        )
        return [_run(r) for r in rows]

    async def fail_run(self, run_id: int, error: str) -> None:
        """The run failed (a malformed file, a statement not available): its staged lines go, nothing else."""
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM recon_lines WHERE run_id=%s", (run_id,))
            await tx.execute(
                "UPDATE recon_runs SET status=%s, error=%s, line_count=0, finished_at=%s WHERE id=%s",
                (RunStatus.FAILED.value, error[:500], utcnow(), run_id),
            )
            await tx.commit()

    async def last_success(self) -> dict[str, datetime]:
        """The finish time of the last successful run of each channel."""
        rows = await self.db.fetchall(
            "SELECT channel, MAX(finished_at) AS at FROM recon_runs WHERE status='SUCCEEDED' GROUP BY channel"
        )
        return {r["channel"]: r["at"] for r in rows}

    # -- staging ------------------------------------------------------------------------------

    async def stage_lines(self, run_id: int, lines: Sequence[StatementLine]) -> None:
        """Stage a batch of the run's statement lines, committed.

        ``LOAD DATA LOCAL INFILE`` of a private temporary file (:mod:`gateway.store.bulk`: half the
        server's CPU of INSERTs), else multi-row INSERTs of at most ~1 MB. Either way the values are
        written here: integers as integers, the two enums are our own fixed words, the time is a
        datetime formatted by us, and every text from the file is escaped for its destination.
        """
        if not lines:
            return
        run = int(run_id)
        fd, path = await asyncio.to_thread(tempfile.mkstemp, prefix="paygate-recon-", suffix=".tsv")
        try:
            await asyncio.to_thread(_write_tsv, fd, run, lines)
            if await self.db.load_file(path, "recon_lines", _LINE_NAMES) is not None:
                return
        finally:
            await asyncio.to_thread(os.unlink, path)
        async with self.db.transaction() as tx:
            q = tx.quote
            rows = [
                f"({run},{int(line.line_no)},{q(line.channel_order_no)},'{Operation(line.operation).value}',"
                f"'{LineStatus(line.status).value}',{int(line.amount)},{int(line.fee)},{q(line.currency)},"
                f"'{line.booked_at:%Y-%m-%d %H:%M:%S.%f}',{q(line.channel_txn_id[:128])},"
                f"{q(line.original_channel_order_no)})"
                for line in lines
            ]
            for chunk in _chunks(rows, _STAGE_STATEMENT_BYTES):
                await tx.execute(f"INSERT INTO recon_lines {_LINE_COLUMNS} VALUES {','.join(chunk)}")
            await tx.commit()

    # -- matching -----------------------------------------------------------------------------

    async def unmatched_pairs(
        self, run_id: int, channel: str, schedule: FeeSchedule | None
    ) -> list[tuple[str, LineSide, LocalSide | None]]:
        """The run's lines that do not plainly agree with an attempt, each with our side (None: no attempt)."""
        rows = await self.db.fetchall(
            # the flows of the few rows that come back are read afterwards, not joined for every line
            f"SELECT l.*, {_attempt_columns(schedule)} FROM recon_lines l"
            " LEFT JOIN attempts a ON a.channel_order_no = l.channel_order_no"
            f" WHERE l.run_id = %s AND NOT COALESCE({matched_sql(schedule)}, 0) ORDER BY l.line_no",
            (run_id, channel),
        )
        await self._add_flows(rows)
        return [(r["channel_order_no"], _line_side(r), _local_side(r)) for r in rows]

    async def _add_flows(self, rows: list[dict[str, Any]]) -> None:
        """Our side's flow columns (``f_*``) for rows with an attempt (``a_flow_id``)."""
        ids = sorted({int(r["a_flow_id"]) for r in rows if r.get("a_flow_id") is not None})
        flows: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            for f in await self.db.fetchall(
                f"SELECT id, flow_no, status, needs_review FROM flows WHERE id IN ({','.join(['%s'] * len(chunk))})",
                chunk,
            ):
                flows[int(f["id"])] = f
        for r in rows:
            if r.get("a_flow_id") is not None:
                f = flows[int(r["a_flow_id"])]
                r["f_flow_no"], r["f_status"], r["f_needs_review"] = f["flow_no"], f["status"], f["needs_review"]

    async def day_successes(
        self,
        run_id: int,
        channel: str,
        bounds: tuple[datetime, datetime],
        operations: Iterable[str],
        schedule: FeeSchedule | None,
    ) -> tuple[list[tuple[str, LocalSide]], dict[str, KindTotals]]:
        """The channel's attempts that succeeded within ``bounds``, in one pass: those no line of the
        run names (with our side), and our side's totals by kind.

        One scan of the day's attempts, anti-joined to the run's lines by index lookups (NOT EXISTS
        would materialize the whole statement first) and grouped by kind and, for the lone ones
        only, by attempt: every attempt the statement names falls into its kind's one group.
        """
        marks, names = _operations_sql(operations)
        groups = await self.db.fetchall(
            "SELECT IF(a.operation='collect', 'withhold', a.operation) AS op,"
            " IF(l.run_id IS NULL, a.id, 0) AS lone_id, COUNT(*) AS n, SUM(a.amount) AS amount,"
            " SUM(COALESCE(a.fee, 0)) AS fee FROM attempts a"
            " LEFT JOIN recon_lines l ON l.run_id = %s AND l.channel_order_no = a.channel_order_no"
            " WHERE a.channel = %s AND a.finished_at >= %s AND a.finished_at < %s AND a.status = 'SUCCEEDED'"
            f" AND a.operation IN ({marks}) GROUP BY op, lone_id",
            (run_id, channel, bounds[0], bounds[1], *names),
        )
        totals: dict[str, KindTotals] = {}
        for g in groups:
            totals.setdefault(g["op"], KindTotals()).add(KindTotals(int(g["n"]), int(g["amount"]), int(g["fee"])))
        lone_ids = sorted(int(g["lone_id"]) for g in groups if int(g["lone_id"]))
        rows: list[dict[str, Any]] = []
        for start in range(0, len(lone_ids), 1000):
            chunk = lone_ids[start : start + 1000]
            rows += await self.db.fetchall(
                f"SELECT a.channel_order_no, {_attempt_columns(schedule)} FROM attempts a"
                f" WHERE a.id IN ({','.join(['%s'] * len(chunk))}) ORDER BY a.id",
                chunk,
            )
        await self._add_flows(rows)
        lone = []
        for r in rows:
            local = _local_side(r)
            assert local is not None
            lone.append((r["channel_order_no"], local))
        return lone, totals

    async def local_side(self, order_no: str, schedule: FeeSchedule | None) -> LocalSide | None:
        """Our side of one order, read afresh (after a resolve lost a race)."""
        row = await self.db.fetchone(
            f"SELECT {_local_columns(schedule)} FROM attempts a JOIN flows f ON f.id = a.flow_id"
            " WHERE a.channel_order_no = %s",
            (order_no,),
        )
        return _local_side(row) if row else None

    async def local_totals(
        self, channel: str, bounds: tuple[datetime, datetime], operations: Iterable[str], attempt_ids: Sequence[int]
    ) -> dict[str, KindTotals]:
        """Our side's successes by kind among ``attempt_ids``: those of the channel that succeeded within ``bounds``."""
        marks, names = _operations_sql(operations)
        local: dict[str, KindTotals] = {}
        if not attempt_ids:
            return local
        ids = [int(i) for i in attempt_ids]
        for r in await self.db.fetchall(
            "SELECT IF(operation='collect', 'withhold', operation) AS op, COUNT(*) AS n, SUM(amount) AS amount,"
            " SUM(COALESCE(fee, 0)) AS fee FROM attempts WHERE channel=%s AND finished_at >= %s AND finished_at < %s"
            f" AND status='SUCCEEDED' AND operation IN ({marks}) AND id IN ({','.join(['%s'] * len(ids))}) GROUP BY op",
            (channel, bounds[0], bounds[1], *names, *ids),
        ):
            local[r["op"]] = KindTotals(int(r["n"]), int(r["amount"]), int(r["fee"]))
        return local

    # -- the result, in one commit ------------------------------------------------------------

    async def finish(
        self,
        run: RunRow,
        *,
        items: Sequence[Item],
        carry: Sequence[Carry],
        lines: int,
        matched: int,
        totals: RunTotals,
        schedule: FeeSchedule | None,
    ) -> RunRow:
        """Record the run's result and supersede the (channel, day)'s previous run, in one commit.

        Carry-over: the candidates an earlier day left that this statement has are FOUND; those
        due by this day and still missing are declared (a local_only item of this run); this
        run's own candidates are added. What a superseded run of the same day settled or
        carried is undone first, so a re-run decides it again, from its own statement.
        """
        now = utcnow()
        async with self.db.transaction() as tx:
            prev = [
                int(r["id"])
                for r in await tx.fetchall(
                    "SELECT id FROM recon_runs WHERE channel=%s AND day=%s AND status='SUCCEEDED'"
                    " AND superseded_by IS NULL AND id <> %s FOR UPDATE",
                    (run.channel, run.day, run.id),
                )
            ]
            if prev:
                marks = ",".join(str(p) for p in prev)  # ids read just above
                await tx.execute(
                    f"UPDATE recon_carry SET status='OPEN', settled_run_id=NULL WHERE settled_run_id IN ({marks})"
                )
                await tx.execute(f"DELETE FROM recon_carry WHERE origin_run_id IN ({marks}) AND status='OPEN'")
                await tx.execute(f"UPDATE recon_runs SET superseded_by=%s WHERE id IN ({marks})", (run.id,))
            await tx.execute(
                "UPDATE recon_carry c JOIN recon_lines l ON l.run_id=%s AND l.channel_order_no=c.channel_order_no"
                " SET c.status='FOUND', c.settled_run_id=%s"
                " WHERE c.channel=%s AND c.status='OPEN' AND c.origin_day < %s",
                (run.id, run.id, run.channel, run.day),
            )
            due = await tx.fetchall(
                f"SELECT c.id AS c_id, c.channel_order_no, {_local_columns(schedule)} FROM recon_carry c"
                " JOIN attempts a ON a.id = c.attempt_id JOIN flows f ON f.id = a.flow_id"
                " WHERE c.channel=%s AND c.status='OPEN' AND c.origin_day < %s"
                " AND c.declare_day <= %s FOR UPDATE",
                (run.channel, run.day, run.day),
            )
            declared = []
            for r in due:
                local = _local_side(r)
                if local is not None and local.status is AttemptStatus.SUCCEEDED:
                    declared.append(Item(ItemClass.LOCAL_ONLY, r["channel_order_no"], None, local))
            if due:
                marks = ",".join(str(int(r["c_id"])) for r in due)
                await tx.execute(
                    f"UPDATE recon_carry SET status='DECLARED', settled_run_id=%s WHERE id IN ({marks})", (run.id,)
                )
            everything = [*items, *declared]
            if everything:
                await tx.executemany(_ITEM_INSERT, [_item_args(run, item, now) for item in everything])
            if carry:
                await tx.executemany(
                    "INSERT IGNORE INTO recon_carry (channel, attempt_id, channel_order_no, origin_day, declare_day,"
                    " origin_run_id, status, created_at) VALUES (%s,%s,%s,%s,%s,%s,'OPEN',%s)",
                    [
                        (run.channel, c.attempt_id, c.channel_order_no, run.day, c.declare_day, run.id, now)
                        for c in carry
                    ],
                )
            published = await self._publish_critical(tx, run.id, prev)
            discrepancies = sum(1 for item in everything if item.item_class is not ItemClass.RESOLVED_BY_STATEMENT)
            resolved = len(everything) - discrepancies
            outcome = "inconsistent" if discrepancies else "consistent"
            await tx.execute(
                "UPDATE recon_runs SET status='SUCCEEDED', outcome=%s, line_count=%s, matched=%s, discrepancies=%s,"
                " resolved=%s, carried=%s, totals=%s, finished_at=%s WHERE id=%s",
                (
                    outcome,
                    lines,
                    matched,
                    discrepancies,
                    resolved,
                    len(carry),
                    json.dumps({**totals.to_json(), "classes": _classes(everything)}),
                    now,
                    run.id,
                ),
            )
            await tx.commit()
        done = await self.run(run.id)
        assert done is not None
        return replace(done, published=published)

    async def _publish_critical(self, tx: Tx, run_id: int, prev: Sequence[int]) -> int:
        """RECON_DISCREPANCY outbox rows for the run's critical items, in the run's commit.

        An item a superseded run of the same day already published (same class and order) is not
        published again. Returns how many were written.
        """
        critical = ",".join(f"'{c.value}'" for c in sorted(CRITICAL))  # our enum's values
        again = ""
        if prev:
            marks = ",".join(str(p) for p in prev)
            again = (
                f" AND NOT EXISTS (SELECT 1 FROM recon_items p WHERE p.run_id IN ({marks})"
                " AND p.class = i.class AND p.channel_order_no = i.channel_order_no)"
            )
        rows = await tx.fetchall(
            "SELECT i.*, f.id AS f_id, f.caller, f.request_id, f.kind, f.status, f.amount, f.currency,"
            " f.channel AS f_channel, f.channel_txn_id, f.failure_code, f.failure_message, f.payer_attributable,"
            " f.needs_review, f.created_at AS f_created_at, f.finished_at AS f_finished_at"
            " FROM recon_items i LEFT JOIN flows f ON f.id = i.flow_id"
            f" WHERE i.run_id = %s AND i.class IN ({critical}){again} ORDER BY i.id",
            (run_id,),
        )
        events = []
        for r in rows:
            flow = None
            if r["f_id"] is not None:
                flow = {
                    "caller": r["caller"],
                    "request_id": r["request_id"],
                    "flow_no": r["flow_no"],
                    "kind": r["kind"],
                    "status": r["status"],
                    "amount": r["amount"],
                    "currency": r["currency"],
                    "channel": r["f_channel"],
                    "channel_txn_id": r["channel_txn_id"],
                    "failure_code": r["failure_code"],
                    "failure_message": r["failure_message"],
                    "payer_attributable": r["payer_attributable"],
                    "needs_review": r["needs_review"],
                    "created_at": r["f_created_at"],
                    "finished_at": r["f_finished_at"],
                }
            events.append((recon_event(r, flow), int(r["f_id"] or 0)))
        for start in range(0, len(events), 500):
            await tx.execute(*outbox.insert_statement(events[start : start + 500]))
        return len(events)
