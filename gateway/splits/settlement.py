"""Funder settlement (联合贷结算): once per business day per funder, paid once or carried.

For a funder and a business day that has **ended** (business timezone):

    net = the day's succeeded split parts − the day's succeeded refund parts + carried in

where "carried in" is the previous settlement's carried out (never positive). A part
belongs to the day of its success (its terminal transition), so once the day has
ended nothing more can join it: a withhold left PROCESSING at midnight that succeeds
later belongs to the day it succeeded.

* A channel-settled funder (``settle_from`` a channel) with ``net > 0`` is paid ``net``
  through the normal payout path (routing, its channel preferred; polling; the
  payout's result event), under the request id :func:`settlement_request_id`
  derived from funder and day: a re-run, a crash and restart, or a second
  replica settling the same day replays that request and never pays twice.
* ``net <= 0`` pays nothing and carries ``net`` to the next day (never a negative payout).
* A report-only funder gets its row and statement (REPORTED), its negative net carried like
  anyone's (so its statements net off as a paid funder's would); finance settles it outside
  the gateway from the statement.

The settlement row (unique per funder and day) is written once, with the day's
totals, in one transaction: the first replica to write it wins, the others read it.
Days are settled in order (each needs the carry of the one before): a run settles
every unsettled day from ``lookback_days`` before the target day up to it.

The scheduler (:meth:`SettlementService.run`) does that every ``tick_s`` for
yesterday, once the local time is past ``settle_after``, on every replica with
``[settlement] enabled``; it also follows payouts still in flight to their result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from gateway import metrics
from gateway.businessday import BusinessCalendar
from gateway.domain import FlowStatus, scrub
from gateway.errors import GatewayError, InvalidInput, NotFound, PreconditionFailed
from gateway.splits.funders import Funder, Funders, SettlementConfig
from gateway.splits.ports import PayoutPath, SplitStore
from gateway.splits.statement import filename, render
from gateway.store.rows import FlowRow
from gateway.store.splits import SettlementRow
from gateway.validation import PayoutParams

log = logging.getLogger(__name__)

PAYING, PAID, PAYOUT_FAILED, REPORTED, CARRIED = "PAYING", "PAID", "PAYOUT_FAILED", "REPORTED", "CARRIED"
UNFINISHED = (PAYING, PAYOUT_FAILED)
SAMPLE_EVERY_S = 30.0  # the unfinished-settlement gauges: one small grouped read this often, not every 2 s
_PAYOUT_STATUS = {FlowStatus.SUCCEEDED: PAID, FlowStatus.FAILED: PAYOUT_FAILED, FlowStatus.PROCESSING: PAYING}


def settlement_request_id(funder_id: str, day: date, attempt: int = 0) -> str:
    """The payout request id of a funder's settlement of ``day``: the same for every run and replica.

    ``attempt`` n > 0 is the n-th re-send of a payout the bank refused (:meth:`SettlementService.resend`).
    """
    base = f"settle:{funder_id}:{day:%Y%m%d}"
    return f"{base}:r{attempt}" if attempt else base


@dataclass(frozen=True)
class Statement:
    filename: str
    csv: str
    settlement: SettlementRow


class SettlementService:
    """Settling funders' business days; the statement of one. ``now`` gives naive UTC (injected in tests)."""

    def __init__(
        self,
        *,
        store: SplitStore,
        payouts: PayoutPath,
        funders: Funders,
        calendar: BusinessCalendar,
        config: SettlementConfig,
        now: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.payouts = payouts
        self.funders = funders
        self.calendar = calendar
        self.config = config
        self.now = now
        self._task: asyncio.Task[None] | None = None
        self._sampled_at: float | None = None

    # --- use cases -------------------------------------------------------------------------

    def funder(self, funder_id: str, field: str = "funder_id") -> Funder:
        funder = self.funders.get(funder_id)
        if funder is None:
            raise InvalidInput(field, f"unknown funder {funder_id[:32]!r}")
        return funder

    async def settle_through(self, day: date, funder_id: str = "") -> list[SettlementRow]:
        """Settle ``day`` (and every unsettled day up to ``lookback_days`` before it) for one funder or all.

        Idempotent: a settled day is returned as it stands; a payout still in flight is followed up.
        Raises PreconditionFailed for a day that has not ended.
        """
        today = self.calendar.today(self.now())
        if day >= today:
            raise PreconditionFailed(f"business_day: {day} has not ended (today is {today} in {self.calendar.name})")
        funders = [self.funder(funder_id)] if funder_id else list(self.funders)
        out = []
        for funder in funders:
            first = day - timedelta(days=self.config.lookback_days)
            row = None
            for offset in range((day - first).days + 1):
                row = await self._settle(funder, first + timedelta(days=offset))
            assert row is not None
            out.append(row)
        return out

    async def _settle(self, funder: Funder, day: date) -> SettlementRow:
        row, written = await self.store.claim_settlement(
            funder.funder_id,
            day,
            self.calendar.bounds(day),
            funder.config.currency,
            pays=not funder.config.report_only,
            request_id=settlement_request_id(funder.funder_id, day),
        )
        if written:
            log.info(
                "settlement %s %s: net %d, paid %d, carried %d (%s)",
                funder.funder_id,
                day,
                row.net,
                row.paid,
                row.carried_out,
                row.status,
            )
        if row.status == PAYING:
            row = await self._pay(funder, row)
        return row

    async def _pay(self, funder: Funder, row: SettlementRow) -> SettlementRow:
        """The settlement's payout, sent or replayed (same request id): never a second payment."""
        cfg = funder.config
        params = PayoutParams(
            amount=row.paid,
            currency=row.currency,
            account_no=cfg.payout_account,
            account_name=cfg.account_name,
            bank_code=cfg.bank_code,
            description=f"联合贷结算 settlement {funder.funder_id} {row.business_day:%Y-%m-%d}",
        )
        flow: FlowRow = await self.payouts.payout(
            self.config.caller, row.payout_request_id, params, self.config.wait_s, prefer=(cfg.settle_from,)
        )
        status = _PAYOUT_STATUS[flow.status]
        if flow.flow_no != row.payout_flow_no or status != row.status:
            await self.store.record_payout(
                funder.funder_id, row.business_day, row.payout_request_id, flow.flow_no, status
            )
        again = await self.store.settlement(funder.funder_id, row.business_day)
        assert again is not None
        return again

    async def resend(self, funder_id: str, day: date, *, operator: str, reason: str) -> SettlementRow:
        """Re-send the payout of a PAYOUT_FAILED settlement under the next request id (``…:r<n>``), audited.

        Refused (PreconditionFailed, nothing changed) unless the settlement is PAYOUT_FAILED, its
        payout flow is FAILED (final) and nothing says that payout, or one an earlier re-send
        replaced, may have paid after all (an attempt not FAILED, a discrepancy, an open
        reconciliation item); of two racing re-sends exactly one wins (the
        store's conditional update on the attempt read here). The new payout then goes the way the
        first one did (:meth:`_pay`): PAID, or PAYOUT_FAILED again, or PAYING followed by the scheduler.
        """
        funder = self.funder(funder_id)
        row = await self.store.settlement(funder_id, day)
        if row is None:
            raise NotFound(f"business_day: {funder_id} has no settlement for {day}")
        if row.status != PAYOUT_FAILED:
            raise PreconditionFailed(f"settlement {funder_id} {day} is {row.status}: only PAYOUT_FAILED is re-sent")
        got = await self.store.begin_resend(
            funder_id,
            day,
            attempt=row.payout_attempt,
            flow_no=row.payout_flow_no,
            request_id=settlement_request_id(funder_id, day, row.payout_attempt + 1),
            operator=operator,
            reason=scrub(reason),  # stored and shown to every operator: scrubbed as gateway/operations.py does
        )
        if got.row is None:
            raise PreconditionFailed(f"settlement {funder_id} {day} not re-sent: {got.refused}")
        log.info("settlement %s %s: payout re-sent as %s by %s", funder_id, day, got.row.payout_request_id, operator)
        try:
            return await self._pay(funder, got.row)
        except GatewayError as exc:  # recorded PAYING under the new request id: the scheduler sends it
            log.warning("settlement %s %s: re-sent payout not sent yet: %s", funder_id, day, type(exc).__name__)
            return got.row

    async def follow_payouts(self) -> int:
        """Bring settlements whose payout was in flight up to date with their flows; how many moved on."""
        moved = 0
        for row in await self.store.paying():
            funder = self.funders.get(row.funder_id)
            if funder is None:
                continue  # removed from the configuration: its payout flow is still followed by the poller
            after = await self._pay(funder, row)
            moved += after.status != PAYING
        return moved

    async def settlements(self, *, day: date | None, funder_id: str, limit: int) -> list[SettlementRow]:
        if funder_id:
            self.funder(funder_id)
        return await self.store.settlements(day=day, funder_id=funder_id, limit=limit)

    async def statement(self, funder_id: str, day: date) -> Statement:
        """The statement CSV of a settled funder day (NotFound before it is settled)."""
        funder = self.funder(funder_id)
        row = await self.store.settlement(funder_id, day)
        if row is None:
            raise NotFound(f"business_day: {funder_id} has no settlement for {day}")
        lines = await self.store.statement_lines(funder_id, self.calendar.bounds(day))
        return Statement(filename(row), render(row, funder.config.name, lines, self.calendar), row)

    # --- metrics ---------------------------------------------------------------------------------

    @staticmethod
    def declare_series() -> None:
        """The alerts' series exist from the start, at zero (gateway/obs/series.py's rule)."""
        for status in UNFINISHED:
            metrics.SETTLEMENTS_UNFINISHED.labels(status=status).set(0)
            metrics.SETTLEMENT_OLDEST_AGE.labels(status=status).set(0)

    async def sample_metrics(self, *, force: bool = False) -> None:
        """How many settlements are PAYING / PAYOUT_FAILED and how long the oldest has been so, from the
        database (any replica, or a hand run, may have settled them); at most every ``SAMPLE_EVERY_S``."""
        at = time.monotonic()
        if not force and self._sampled_at is not None and at - self._sampled_at < SAMPLE_EVERY_S:
            return
        self._sampled_at = at
        found = await self.store.unfinished()
        now = self.now()
        for status in UNFINISHED:
            count, oldest = found.get(status, (0, now))
            metrics.SETTLEMENTS_UNFINISHED.labels(status=status).set(count)
            metrics.SETTLEMENT_OLDEST_AGE.labels(status=status).set(max((now - oldest).total_seconds(), 0.0))

    # --- the scheduler -------------------------------------------------------------------------

    def due_day(self, now: datetime) -> date | None:
        """The day a scheduler tick at ``now`` settles: yesterday, once past ``settle_after``; else None."""
        today = self.calendar.today(now)
        if now < self.calendar.at(today, self.config.settle_after):
            return None
        return today - timedelta(days=1)

    async def tick(self) -> None:
        """Settle yesterday (when due) funder by funder; one funder's trouble (no float yet) holds up no other."""
        day = self.due_day(self.now())
        for funder in self.funders if day is not None else ():
            assert day is not None
            try:
                await self.settle_through(day, funder.funder_id)
            except Exception as exc:  # retried at the next tick under the same request id
                log.warning("settlement of %s %s not finished: %s: %s", funder.funder_id, day, type(exc).__name__, exc)
        await self.follow_payouts()

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # retried at the next tick; the unique key keeps every run idempotent
                log.exception("settlement tick failed")
            await asyncio.sleep(self.config.tick_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="settlement-scheduler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
