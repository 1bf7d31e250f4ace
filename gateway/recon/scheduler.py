"""The daily reconciliation of each scheduled channel, safe with several replicas.

``[reconciliation.run_at]`` gives each channel a local time (business timezone): from then on the
previous business day is due. Every replica's scheduler looks every ``tick_s``; the first to claim
the (channel, day) in ``recon_claims`` (a primary key: exactly one wins) runs it. A claim whose
run never finished (its replica died) may be taken over after :data:`CLAIM_LEASE_S`; a statement
not yet published releases the claim so a later tick tries again. A run by hand is never blocked
by the schedule (it is a new run that supersedes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from gateway.businessday import BusinessCalendar
from gateway.errors import GatewayError
from gateway.recon.config import ReconConfig
from gateway.recon.model import RunRow, Trigger
from gateway.recon.service import Reconciler

log = logging.getLogger("paygate.recon.scheduler")

CLAIM_LEASE_S = 3600.0  # a claimed run not finished in an hour is taken over


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class ReconScheduler:
    """Runs each scheduled channel's previous business day once, whatever the number of replicas."""

    def __init__(
        self,
        recon: Reconciler,
        config: ReconConfig,
        calendar: BusinessCalendar,
        *,
        owner: str,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.recon = recon
        self.config = config
        self.calendar = calendar
        self.owner = owner
        self.now = now
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None and self.config.run_at:
            self._task = asyncio.create_task(self._loop(), name="recon-scheduler")

    async def stop(self) -> None:
        """Idempotent; a run in progress is cancelled (its claim is taken over after the lease)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> ReconScheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # the next tick tries again; one channel's failure must not stop the others
                log.exception("reconciliation scheduler tick failed")
            await asyncio.sleep(self.config.tick_s)

    async def tick(self) -> list[RunRow]:
        """Run what is due now and claimed by this replica; returns the runs it made."""
        now = self.now()
        today = self.calendar.day_of(now)
        day = today - timedelta(days=1)
        done = []
        store = self.recon.store
        for channel, at in sorted(self.config.run_at.items()):
            if now < self.calendar.at(today, at):
                continue
            if not await store.claim(channel, day, self.owner, lease_s=CLAIM_LEASE_S):
                continue
            try:
                run = await self.recon.reconcile(channel, day, trigger=Trigger.SCHEDULE, operator="scheduler")
            except GatewayError as exc:
                # not published yet, channel unreachable: let a later tick (of any replica) try again
                log.warning("scheduled reconciliation not run", extra={"channel": channel, "error": str(exc)})
                await store.release_claim(channel, day, self.owner)
                continue
            await store.record_claim_run(channel, day, run.id)
            done.append(run)
        return done
