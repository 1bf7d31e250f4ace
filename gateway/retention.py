"""Retention: rows that only serve reports once their business day is over are deleted after a while.

Today that is ``card_usage`` (per-card daily counters of the per-card limits,
gateway/store/card_usage.py): a withhold reads and counts only the card's row
of *today's* business day, so a row of a past day is read by nobody but an
operator looking back. Without a limit the table grows by a row per card,
channel and day, for ever: a year of a few million borrowers is a billion rows
in the table every limited withhold writes to.

Every ``interval_s`` the job deletes the rows of business days more than
``card_usage_days`` before today (the lender's timezone, ``[business]
timezone``), oldest first, ``batch_size`` rows per short transaction and at
most ``max_batches`` per run, so a first run on a large backlog never holds
locks or a connection for long (the next run goes on). Several replicas may
run it at once: deleting an old row twice deletes it once. Flows, attempts,
the audit log, statements and settlements are money records and are never
touched here.

``[retention]``: ``enabled`` (true), ``card_usage_days`` (31), ``interval_s``
(3600), ``batch_size`` (5000), ``max_batches`` (100).
``paygate_retention_deleted_total{table}`` counts the rows deleted,
``paygate_retention_errors_total{table}`` the runs that failed (retried at the
next interval).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated

from pydantic import Field

from channels.config import TABLE
from gateway import metrics
from gateway.businessday import BusinessCalendar
from gateway.store.rows import utcnow

log = logging.getLogger(__name__)

Prune = Callable[[date, int], Awaitable[int]]  # (delete days before, at most this many rows) -> rows deleted


@dataclass(frozen=True)
class RetentionConfig:
    """``[retention]``: how long rows that only serve reports are kept (see the module doc)."""

    __pydantic_config__ = TABLE

    enabled: bool = True
    # Business days kept before today: with 31, on 2026-12-03 the rows of 2026-11-02 and later stay.
    card_usage_days: Annotated[int, Field(ge=1, le=3660)] = 31
    interval_s: Annotated[float, Field(gt=0, le=86_400)] = 3600.0
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5000
    max_batches: Annotated[int, Field(ge=1, le=10_000)] = 100


class Retention:
    """The retention job: ``start()`` / ``stop()``, or ``run_once()`` (tests, the CLI)."""

    def __init__(
        self,
        config: RetentionConfig,
        calendar: BusinessCalendar,
        prune_card_usage: Prune,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.calendar = calendar
        self.prune_card_usage = prune_card_usage
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def card_usage_cutoff(self, now: datetime | None = None) -> date:
        """The first business day kept: rows of days before it are deleted."""
        return self.calendar.today(now or self.clock()) - timedelta(days=self.config.card_usage_days)

    async def run_once(self) -> int:
        """Delete what is past its retention, up to ``max_batches`` batches; returns the rows deleted."""
        cfg = self.config
        before = self.card_usage_cutoff()
        total = 0
        for _ in range(cfg.max_batches):
            deleted = await self.prune_card_usage(before, cfg.batch_size)
            total += deleted
            if deleted < cfg.batch_size:
                break
            await asyncio.sleep(0)  # let requests in between batches
        if total:
            metrics.RETENTION_DELETED.labels(table="card_usage").inc(total)
            log.info("retention: %d card_usage rows of days before %s deleted", total, before.isoformat())
        return total

    def start(self) -> None:
        if self.config.enabled and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away: the next interval tries again
                metrics.RETENTION_ERRORS.labels(table="card_usage").inc()
                if not self._failing:
                    self._failing = True
                    every = self.config.interval_s
                    log.warning("retention of card_usage failed: %s; retrying every %.0f s", type(exc).__name__, every)
            else:
                if self._failing:
                    self._failing = False
                    log.warning("retention of card_usage works again")
            await asyncio.sleep(self.config.interval_s)
