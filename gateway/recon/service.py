"""Reconciliation use cases: reconcile a channel's day, import a statement by hand, list, mark.

A run of (channel, day), whether scheduled, asked for or imported:

1. a RUNNING run is recorded (numbered after the day's earlier runs: a re-run is a new run);
2. the statement is parsed, streaming, and staged in batches; a file that fails to parse
   leaves nothing staged and the run FAILED with the parser's line and column;
3. the store counts the lines that plainly agree with our attempt; every other line, and
   every success of the day that no line names, goes through :func:`model.classify`;
4. flows still PROCESSING that the statement settles are resolved through the audited
   operator path (actor ``reconciliation``, the line as the reason; one result event each);
   a terminal flow is never changed;
5. successes missing from the statement are carried over (``carry_over_days``) instead of
   being reported; the result is written in one commit, superseding the day's previous run.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date
from typing import BinaryIO

from channels.contract import Channel, Operation
from channels.statement import (
    LineStatus,
    StatementError,
    StatementFile,
    StatementFormatError,
    StatementLine,
    StatementUnavailable,
    UnknownStatementFormat,
)
from channels.statements import statement_format
from gateway import metrics
from gateway.businessday import BusinessCalendar
from gateway.domain import INT64_MAX, scrub
from gateway.errors import InvalidInput, NotFound, PreconditionFailed, Unavailable
from gateway.ports import FlowStore
from gateway.recon.config import ReconConfig
from gateway.recon.model import (
    DISCREPANCIES,
    Carry,
    Item,
    ItemClass,
    ItemRow,
    KindTotals,
    LineSide,
    LocalSide,
    Resolution,
    RunRow,
    RunTotals,
    Trigger,
    classify,
    declare_day,
    resolution_reason,
)
from gateway.recon.ports import ReconStore
from routing.config import FeeSchedule

log = logging.getLogger("paygate.recon")

ACTOR = "reconciliation"


@dataclass(frozen=True)
class ChannelBooks:
    """What reconciliation knows of one channel: its adapter and the fee it is expected to charge."""

    channel: Channel | None  # None: no adapter here, statements are imported by hand
    fee: FeeSchedule | None = None


def _take(lines: Iterator[StatementLine], n: int) -> list[StatementLine]:
    batch = []
    for line in lines:
        batch.append(line)
        if len(batch) == n:
            break
    return batch


def tally(totals: dict[str, KindTotals], lines: Sequence[StatementLine]) -> None:
    """Add the successes of ``lines`` to ``totals`` by kind. Raises StatementFormatError at the line
    where a sum leaves int64 (totals are int64 wherever they go: no statement of a real day gets there)."""
    for line in lines:
        if line.status is LineStatus.SUCCEEDED:
            kind = totals.get(line.operation.value)
            if kind is None:
                kind = totals[line.operation.value] = KindTotals()
            kind.count += 1
            kind.amount += line.amount
            kind.fee += line.fee
            if kind.amount > INT64_MAX or abs(kind.fee) > INT64_MAX:
                raise StatementFormatError(
                    line.line_no, 0, f"the {line.operation.value} lines add up beyond int64: not a day's statement"
                )


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Reconciler:
    """The reconciliation use cases (see the module docstring)."""

    def __init__(
        self,
        store: ReconStore,
        flows: FlowStore,
        books: Mapping[str, ChannelBooks],
        calendar: BusinessCalendar,
        config: ReconConfig,
        *,
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.flows = flows
        self.books = dict(books)
        self.calendar = calendar
        self.config = config
        self.on_outbox = on_outbox  # wakes the outbox relay after a run published critical discrepancies

    def _books(self, channel: str) -> ChannelBooks:
        found = self.books.get(channel)
        if found is None:
            raise NotFound(f"no channel {channel!r} (known: {', '.join(sorted(self.books)) or 'none'})")
        return found

    # -- runs ---------------------------------------------------------------------------------

    async def reconcile(
        self, channel: str, day: date, *, trigger: Trigger = Trigger.MANUAL, operator: str = ""
    ) -> RunRow:
        """Download the channel's statement of ``day`` and reconcile it.

        Raises NotFound (unknown channel), PreconditionFailed (the channel publishes no
        statement), Unavailable (not published yet / not reachable: retry later; no run recorded).
        """
        books = self._books(channel)
        if books.channel is None or Operation.STATEMENT not in books.channel.operations:
            raise PreconditionFailed(f"channel {channel!r} publishes no statement here: import its file by hand")
        folder = self.config.statement_dir or None
        with tempfile.TemporaryDirectory(dir=folder, prefix="paygate-recon-") as directory:
            try:
                fetched = await books.channel.fetch_statement(day, directory)
            except StatementUnavailable as exc:
                raise Unavailable(f"statement of {channel} for {day}: {exc}") from exc
            except StatementError as exc:
                raise Unavailable(f"statement of {channel} for {day} could not be fetched: {exc}") from exc
            return await self._reconcile_file(fetched, trigger=trigger, operator=operator)

    async def import_file(
        self, channel: str, day: date, path: str, fmt: str, *, operator: str, file_name: str = ""
    ) -> RunRow:
        """Reconcile a statement file an operator brings (a bank's e-mailed file), format ``fmt``.

        Raises InvalidInput naming ``format`` (unknown) or ``file`` (malformed: line and column;
        the run is recorded FAILED and nothing of the file is kept).
        """
        self._books(channel)
        try:
            statement_format(fmt)
        except UnknownStatementFormat as exc:
            raise InvalidInput("format", str(exc)) from None
        if not await asyncio.to_thread(os.path.isfile, path):
            raise InvalidInput("file", f"no such file: {os.path.basename(path)}")
        sha = await asyncio.to_thread(file_sha256, path)
        statement = StatementFile(channel, day, path, fmt, sha, f"import:{file_name or os.path.basename(path)}")
        run = await self._reconcile_file(statement, trigger=Trigger.IMPORT, operator=operator)
        if run.error:
            raise InvalidInput("file", run.error)
        return run

    async def _reconcile_file(self, statement: StatementFile, *, trigger: Trigger, operator: str) -> RunRow:
        channel, day = statement.channel_id, statement.day
        fmt = statement_format(statement.format)
        run = await self.store.start_run(
            channel,
            day,
            trigger=trigger.value,
            operator=operator,
            format=statement.format,
            source=statement.source,
            sha256=statement.sha256,
        )
        statement_totals: dict[str, KindTotals] = {}
        try:
            lines = await self._stage(run, statement, statement_totals)
            repeated = await self.store.repeated_line(run.id)
            if repeated is not None:  # one order, two lines: which one is the bank's word? an operator decides
                order_no, first, again = repeated
                raise StatementFormatError(
                    again, 0, f"order {order_no[:64]!r} is listed twice (lines {first} and {again})"
                )
        except StatementFormatError as exc:
            await self.store.fail_run(run.id, f"{statement.source}: {exc}")
            failed = await self.store.run(run.id)
            assert failed is not None
            metrics.RECON_RUNS.labels(channel=channel, result="failed").inc()
            return failed
        except BaseException:
            await asyncio.shield(self.store.fail_run(run.id, "interrupted while staging the statement"))
            raise
        schedule = self._books(channel).fee
        bounds = self.calendar.bounds(day)
        operations = [str(op) for op in fmt.covers]
        items: list[Item] = []
        carry: list[Carry] = []
        # the day's successes (those no line names, and our totals) are read on another connection
        # while the lines are matched; both reads end before any flow is settled
        unmatched, (lone, local_totals) = await asyncio.gather(
            self.store.unmatched_pairs(run.id, channel, schedule),
            self.store.day_successes(run.id, channel, bounds, operations, schedule),
        )
        # a line pairs with at most one attempt (channel_order_no is unique): the rest plainly agree
        matched = lines - len(unmatched)
        settled: list[int] = []
        for order_no, line, local in unmatched:
            item = await self._decide(channel, day, statement.source, order_no, line, local, schedule)
            if item.item_class is ItemClass.MATCHED:
                matched += 1
            elif item.item_class is not ItemClass.IGNORED:
                items.append(item)
            if item.item_class is ItemClass.RESOLVED_BY_STATEMENT and local is not None:
                settled.append(local.attempt_id)
        for order_no, local in lone:
            if classify(channel, None, local).item_class is not ItemClass.LOCAL_ONLY:
                continue
            if self.config.carry_over_days == 0:
                items.append(Item(ItemClass.LOCAL_ONLY, order_no, None, local))
            else:
                carry.append(Carry(local.attempt_id, order_no, declare_day(day, self.config.carry_over_days)))
        # what this run settled ended now: in the day's totals when now is within the day
        for kind, add in (await self.store.local_totals(channel, bounds, operations, settled)).items():
            local_totals.setdefault(kind, KindTotals()).add(add)
        totals = RunTotals(statement_totals, local_totals)
        done = await self.store.finish(
            run, items=items, carry=carry, lines=lines, matched=matched, totals=totals, schedule=schedule
        )
        log.info(
            "reconciliation run finished",
            extra={
                "channel": channel,
                "day": day.isoformat(),
                "run_id": done.id,
                "lines": lines,
                "matched": done.matched,
                "discrepancies": done.discrepancies,
                "resolved": done.resolved,
                "carried": done.carried,
            },
        )
        self._count(done)
        if done.published and self.on_outbox is not None:
            self.on_outbox()
        return done

    @staticmethod
    def _count(run: RunRow) -> None:
        """The run's metrics, once it is committed."""
        metrics.RECON_RUNS.labels(channel=run.channel, result=run.outcome or run.status.value.lower()).inc()
        for name, n in run.totals.get("classes", {}).items():
            if ItemClass(name) in DISCREPANCIES:
                metrics.RECON_DISCREPANCIES.labels(channel=run.channel, **{"class": name}).inc(n)
        if run.finished_at is not None:
            metrics.RECON_LAST_SUCCESS.labels(channel=run.channel).set(run.finished_at.replace(tzinfo=UTC).timestamp())

    def declare_series(self, started_at: float) -> None:
        """The alerts' series exist from the start: the critical counters at zero (so the first
        discrepancy is an increase), and the scheduled channels' last success at ``started_at``
        until their first run (a channel that never succeeds is alerted on 26 hours later)."""
        for channel in self.books:
            for item_class in DISCREPANCIES:
                metrics.RECON_DISCREPANCIES.labels(channel=channel, **{"class": item_class.value})
        for channel in self.config.run_at:
            metrics.RECON_LAST_SUCCESS.labels(channel=channel).set(started_at)

    async def sample_metrics(self) -> None:
        """The last successful run of each channel, from the database (any replica may have run it)."""
        for channel, at in (await self.store.last_success()).items():
            metrics.RECON_LAST_SUCCESS.labels(channel=channel).set(at.replace(tzinfo=UTC).timestamp())

    async def _stage(self, run: RunRow, statement: StatementFile, totals: dict[str, KindTotals]) -> int:
        """Parse and stage the whole file, adding its successes to ``totals`` by kind; returns the
        number of lines. Raises StatementFormatError."""
        parser = statement_format(statement.format).iter_lines
        batch_size = self.config.stage_batch
        count = 0
        stream: BinaryIO = await asyncio.to_thread(open, statement.path, "rb")
        lines = parser(stream, channel_id=statement.channel_id, day=statement.day)
        # parsing is CPU work in a worker thread, one batch at a time off the generator; the next batch
        # is parsed while the database stores up to stage_concurrency earlier ones, each on its connection
        parsing = asyncio.ensure_future(asyncio.to_thread(_take, lines, batch_size))
        storing: set[asyncio.Future[None]] = set()
        try:
            while batch := await parsing:
                parsing = asyncio.ensure_future(asyncio.to_thread(_take, lines, batch_size))
                if len(storing) >= self.config.stage_concurrency:
                    done, storing = await asyncio.wait(storing, return_when=asyncio.FIRST_COMPLETED)
                    for stored in done:
                        stored.result()  # a failed INSERT stops the staging
                storing.add(asyncio.ensure_future(self.store.stage_lines(run.id, batch)))
                count += len(batch)
                tally(totals, batch)
            await asyncio.gather(*storing)
        finally:
            # nothing may still be writing when the caller discards the staged lines of a failed file
            if not parsing.done():
                await asyncio.gather(parsing, return_exceptions=True)  # a thread is not cancelled: let it end
            await asyncio.gather(*storing, return_exceptions=True)
            await asyncio.to_thread(stream.close)
        return count

    async def _decide(
        self,
        channel: str,
        day: date,
        source: str,
        order_no: str,
        line: LineSide,
        local: LocalSide | None,
        schedule: FeeSchedule | None,
    ) -> Item:
        decision = classify(channel, line, local)
        if decision.item_class is not ItemClass.RESOLVED_BY_STATEMENT:
            return Item(decision.item_class, order_no, line, local)
        assert local is not None and decision.settle_to is not None
        reason = resolution_reason(channel, day, line, source)
        flow = await self.flows.by_id(local.flow_id)
        if flow is not None and await self.flows.resolve(flow, decision.settle_to, ACTOR, reason, line.channel_txn_id):
            return Item(ItemClass.RESOLVED_BY_STATEMENT, order_no, line, local, Resolution.RESOLVED, ACTOR, reason)
        # the flow ended meanwhile (a poll, a callback, an operator): judge the line against what it is now
        fresh = await self.store.local_side(order_no, schedule)
        again = classify(channel, line, fresh)
        if again.item_class is ItemClass.RESOLVED_BY_STATEMENT:  # still open yet refused: an operator's case
            return Item(ItemClass.STATUS_MISMATCH, order_no, line, fresh)
        return Item(again.item_class, order_no, line, fresh)

    # -- reading and marking ------------------------------------------------------------------

    async def runs(self, *, channel: str = "", day: date | None = None, limit: int = 100) -> list[RunRow]:
        return await self.store.runs(channel=channel, day=day, limit=limit)

    async def run(self, run_id: int) -> RunRow:
        found = await self.store.run(run_id)
        if found is None:
            raise NotFound(f"no reconciliation run {run_id}")
        return found

    async def discrepancies(
        self,
        *,
        run_id: int | None = None,
        day: date | None = None,
        channel: str = "",
        open_only: bool = False,
        after_id: int = 0,
        limit: int = 200,
    ) -> list[ItemRow]:
        """Recorded discrepancies (not the flows the statement settled), of current runs unless ``run_id``."""
        rows = await self.store.items(
            run_id=run_id, day=day, channel=channel, open_only=open_only, after_id=after_id, limit=limit
        )
        return [r for r in rows if r.item_class in DISCREPANCIES]

    async def settled(self, run_id: int) -> list[ItemRow]:
        """The flows a run settled from its statement."""
        rows = await self.store.items(run_id=run_id, limit=100_000)
        return [r for r in rows if r.item_class is ItemClass.RESOLVED_BY_STATEMENT]

    async def mark(self, item_id: int, resolution: Resolution, *, operator: str, reason: str) -> ItemRow:
        """Mark an open discrepancy EXPLAINED or RESOLVED (audited). Raises InvalidInput / NotFound /
        PreconditionFailed (already marked)."""
        if resolution is Resolution.OPEN:
            raise InvalidInput("resolution", "must be EXPLAINED or RESOLVED")
        if not reason.strip():
            raise InvalidInput("reason", "a reason is required")
        if len(reason) > 500:
            raise InvalidInput("reason", "at most 500 characters")
        found = await self.store.item(item_id)
        if found is None or found.item_class not in DISCREPANCIES:
            raise NotFound(f"no discrepancy {item_id}")
        # stored and shown to every operator: scrubbed as every operator's reason is (gateway/operations.py)
        marked = await self.store.mark(item_id, resolution, operator, scrub(reason.strip()))
        if marked is None:
            raise PreconditionFailed(f"discrepancy {item_id} is already {found.resolution.value}")
        return marked
