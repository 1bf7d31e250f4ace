"""The delayed poll queue: keep asking channels about attempts without a definite result.

Claiming goes through the poll queue port (gateway/ports.py ``PollQueue``;
the MySQL one in gateway/store/poll_queue.py claims with ``FOR UPDATE SKIP
LOCKED`` and a lease): replicas never claim the same row twice while a lease
runs, and a crashed poller's rows become due again when its lease ends.

Bulkheads: a poller holds at most ``batch`` rows, runs ``concurrency`` queries
at a time and holds at most ``per_channel`` rows of one channel (by default
half of ``concurrency``; all of it when only one channel is configured); it
claims again once a quarter of its batch has ended, not when the slowest poll
of a batch has. A bank whose queries are slow or time out therefore delays
only its own results, never the other banks'.

Schedule per channel: first delay, then (interval, count) steps. When it runs
out the flow stays PROCESSING with ``needs_review`` (invariant 9); a metric and
a log line say so. Never auto-failed.

Orders the channel says it never received are closed through the channel
(``close_order``) once they are older than ``not_found_close_after_s``, so a
late copy cannot execute; only the channel's "closed" answer fails them.

A collection's attempt (operation ``collect``) is first polled at its expiry;
what a query of it leads to is the collection's own rule
(:meth:`gateway.collections.CollectionService.at_poll`: wait for the expiry,
then close it at the channel, FAILED only on the channel's confirmed close).
A success for another amount than the order's sends the flow to review at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from channels.contract import Operation, OutcomeStatus
from gateway import metrics
from gateway.collections import CollectionService
from gateway.config import PollerConfig
from gateway.domain import TERMINAL_ATTEMPT, AttemptStatus
from gateway.flows import AMOUNT_MISMATCH, FlowService
from gateway.ports import FlowStore, PollQueue
from gateway.store.rows import Applied, AttemptRow, Claim, RecoveryScope, Source, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """Delays between polls, flattened: delays[k] is the wait after the (k+1)-th poll."""

    first_delay_s: float
    delays: tuple[float, ...]

    @classmethod
    def from_steps(cls, first_delay_s: float, steps: Sequence[tuple[float, int]]) -> Schedule:
        flat: list[float] = []
        for interval, count in steps:
            flat.extend([float(interval)] * count)
        return cls(first_delay_s, tuple(flat))

    def next_delay(self, polls_done: int) -> float | None:
        """The wait after ``polls_done`` scheduled polls, or None when the schedule is exhausted."""
        index = polls_done - 1
        if index < 0:
            return self.first_delay_s
        if index >= len(self.delays):
            return None
        return self.delays[index]

    @property
    def total_s(self) -> float:
        return self.first_delay_s + sum(self.delays)


def default_owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"[:64]


class Poller:
    """Queries the attempts of ``queue`` through ``flows`` (module doc); ``start()``/``stop()`` or ``async with``."""

    def __init__(
        self,
        queue: PollQueue,
        flows: FlowService,
        config: PollerConfig,
        schedules: Mapping[str, Schedule],
        *,
        owner: str = "",
        sending_grace_s: float = 90.0,
        collections: CollectionService | None = None,
        scope: RecoveryScope | None = None,
    ) -> None:
        self.queue = queue
        self.collections = collections
        self.flows = flows
        self.store: FlowStore = flows.store
        self.config = config
        self.default_schedule = Schedule.from_steps(config.first_delay_s, config.schedule)
        self.schedules = dict(schedules)
        self.owner = owner or default_owner()
        self.sending_grace_s = sending_grace_s
        self.scope = scope
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._held: Counter[str] = Counter()  # channel -> rows claimed and not yet polled
        self._gate = asyncio.Semaphore(config.concurrency)
        self._channels = tuple(flows.registry)  # a full channel's backlog is passed over channel by channel
        # one channel's queries take at most their share: a slow bank never holds up the others' results;
        # with one channel there is nobody to keep a share for, and it may take every query slot
        half = max(1, config.concurrency // 2) if len(self._channels) > 1 else config.concurrency
        self.per_channel = config.per_channel or half
        # the loop claims again once this many rows have ended (a quarter of the batch, at most the rows that
        # wait past the query slots), not after every poll: claims stay batched, and a row claimed later would
        # have waited for a query slot anyway
        self._refill = max(1, min(config.batch // 4, config.batch - config.concurrency))
        self._last_sweep = 0.0

    def schedule_for(self, channel: str) -> Schedule:
        return self.schedules.get(channel, self.default_schedule)

    def first_query_after_s(self, channel: str) -> float:
        """The channel's first scheduled query, seconds after an attempt is recorded (compensation waits as long)."""
        return self.schedule_for(channel).first_delay_s

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        await self.recover()
        self._task = asyncio.create_task(self._run(), name="poller")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for polling in self._inflight:  # a query cut short: its lease brings the row back
            polling.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    async def __aenter__(self) -> Poller:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def wake(self) -> None:
        self._wake.set()

    # --- recovery -------------------------------------------------------------------

    async def recover(self, *, older_than_s: float = 0.0) -> int:
        """Queue for an immediate query every attempt left SENDING (a crash between record and answer).

        Also re-queues PENDING attempts that lost their queue row, unless their
        flow already waits for review, and finishes flows whose failover was cut
        short (every attempt FAILED, none in flight) from their last failure.

        Only what no live replica is working on (``scope``, from
        gateway/replicas.py): this process's own work older than
        ``older_than_s`` (at start-up: everything its earlier run left), and
        other replicas' once they are dead, stopped or restarted. Without a
        scope (one process, tests) everything older than ``older_than_s``.
        """
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        n = await self.queue.requeue_unresolved(cutoff, self.scope)
        if n:
            log.warning("recovery queued %d attempts without a definite outcome", n)
            self._wake.set()
        finished = 0
        for attempt_id in await self.store.stranded_failovers(cutoff, scope=self.scope):
            finished += await self.store.finish_from_attempt(attempt_id)
        if finished:
            log.warning("recovery finished %d flows whose failover was cut short", finished)
            self.flows.on_outbox()
        return n + finished

    async def expedite(self, attempt_id: int, channel: str, *, min_interval_s: float = 5.0) -> bool:
        """Query this attempt now (a failed callback verification, an operator's re-query).

        An expedited query does not use up the attempt's poll schedule, and at
        most one is made per ``min_interval_s``: forged callbacks can neither
        push a flow into review nor make us hammer the channel. Returns False
        when rate-limited.
        """
        queued = await self.queue.expedite(attempt_id, channel, min_interval_s=min_interval_s)
        if queued:
            self._wake.set()
        return queued

    # --- the loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            try:
                if time.monotonic() - self._last_sweep > 30:
                    self._last_sweep = time.monotonic()
                    await self.recover(older_than_s=self.sending_grace_s)
                claimed = await self.run_once(wait=False)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("poller iteration failed; retrying")
                claimed = 0
                await asyncio.sleep(1.0)
            if claimed == 0:
                self._wake.clear()
                try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                    async with asyncio.timeout(self.config.interval_s):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def claim(self, limit: int) -> list[Claim]:
        return await self.queue.claim(
            owner=self.owner,
            limit=limit,
            lease_s=self.config.lease_s,
            held=self._held,
            per_channel=self.per_channel,
            channels=self._channels,
        )

    async def run_once(self, *, wait: bool = True) -> int:
        """Claim due rows and poll them; ``wait``: return when those polls have ended. Returns the number claimed.

        Bulkheads: this poller holds at most ``batch`` rows and runs ``concurrency`` queries at a
        time, and holds at most :attr:`per_channel` rows of one channel, so a bank whose queries
        are slow (or time out) takes only its share. The loop (``wait=False``) claims again once
        :attr:`_refill` rows have ended, not when the slowest of a batch has.
        """
        room = self.config.batch - len(self._inflight)
        if room <= 0 or (not wait and self._inflight and room < self._refill):
            return 0  # a claim per finished poll would double the commits; rows past the gate wait anyway
        claims = await self.claim(room)
        tasks = []
        for claim in claims:
            task = asyncio.create_task(self._one(claim))
            self._inflight.add(task)
            self._held[claim.channel] += 1
            task.add_done_callback(functools.partial(self._done, claim.channel))
            tasks.append(task)
        if wait and tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return len(claims)

    async def _one(self, claim: Claim) -> None:
        async with self._gate:
            try:
                await self.poll(claim)
            except asyncio.CancelledError:
                raise
            except Exception:
                # the lease expires and the row comes back; nothing is lost
                log.exception("poll failed", extra={"attempt": claim.attempt_id})

    def _done(self, channel: str, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._held[channel] -= 1
        if self._held[channel] <= 0:
            del self._held[channel]
        self._wake.set()  # room for the next claim

    async def poll(self, claim: Claim) -> None:
        attempt = await self.store.attempt_by_id(claim.attempt_id)
        if attempt is None or attempt.status in TERMINAL_ATTEMPT:
            await self.queue.remove(claim.attempt_id)
            return
        # an expedited query is extra: it does not use up the schedule
        tries = claim.tries if claim.expedited else claim.tries + 1
        if attempt.channel not in self.flows.registry:
            log.error("attempt on an unconfigured channel; leaving it for review", extra={"channel": attempt.channel})
            await self._reschedule(attempt, tries)
            return
        outcome = await self.flows.query(attempt)
        if self.collections is not None and attempt.operation == Operation.COLLECT.value:
            step = await self.collections.at_poll(attempt, outcome)
            outcome = step.outcome
            if step.wait_until is not None and not outcome.definite:
                # before the collection's expiry there is nothing to do: this query does not use up the schedule
                await self.queue.reschedule(attempt.id, owner=self.owner, tries=claim.tries, due_at=step.wait_until)
                return
        elif outcome.not_found and self._age_s(attempt) >= self.config.not_found_close_after_s:
            outcome = await self.flows.close(attempt)
        if outcome.code == AMOUNT_MISMATCH:
            # the channel's verified word that it took another amount: a person decides, now
            metrics.POLLS.labels(channel=attempt.channel, result="review").inc()
            await self.flows.flag(attempt, f"channel {attempt.channel} reports another amount than the order's")
            return
        if outcome.definite:
            result = await self.flows.apply(attempt.id, outcome, Source.POLL)
            metrics.POLLS.labels(channel=attempt.channel, result="resolved").inc()
            log.info(
                "poll resolved attempt: %s",
                outcome.status.value,
                extra={
                    "channel": attempt.channel,
                    "channel_order_no": attempt.channel_order_no,
                    "outcome": outcome.code,
                },
            )
            if result.applied in (Applied.NOOP, Applied.DISCREPANCY, Applied.UNKNOWN):
                await self.queue.remove(attempt.id)
            return
        metrics.POLLS.labels(channel=attempt.channel, result="pending").inc()
        if (
            attempt.status is AttemptStatus.SENDING
            and outcome.status is OutcomeStatus.PENDING
            and not outcome.not_found
        ):
            # the channel has the order: it is PENDING from now on
            await self.flows.apply(attempt.id, outcome, Source.POLL)
        await self._reschedule(attempt, tries)

    def _age_s(self, attempt: AttemptRow) -> float:
        created = attempt.created_at or utcnow()
        return (utcnow() - created).total_seconds()

    async def _reschedule(self, attempt: AttemptRow, tries: int) -> None:
        delay = self.schedule_for(attempt.channel).next_delay(tries)
        if delay is None:
            metrics.POLL_EXHAUSTED.labels(channel=attempt.channel).inc()
            metrics.POLLS.labels(channel=attempt.channel, result="exhausted").inc()
            marked = await self.store.mark_needs_review(
                attempt, f"poll schedule exhausted after {tries} queries; channel {attempt.channel} still has no result"
            )
            log.error(
                "poll schedule exhausted; flow needs review (never auto-failed)",
                extra={"channel": attempt.channel, "channel_order_no": attempt.channel_order_no, "marked": marked},
            )
            self.flows.on_outbox()
            return
        due = utcnow() + timedelta(seconds=delay)
        await self.queue.reschedule(attempt.id, owner=self.owner, tries=tries, due_at=due)

    async def sample_metrics(self) -> None:
        # flows waiting for review are counted by NEEDS_REVIEW, not as "pending too old"
        open_attempts = await self.store.open_attempts()
        metrics.PENDING_ATTEMPTS.set(open_attempts.count)
        oldest = open_attempts.oldest_created_at
        age = (datetime.now(UTC).replace(tzinfo=None) - oldest).total_seconds() if oldest else 0.0
        metrics.OLDEST_PENDING_AGE.set(max(age, 0.0))
        metrics.POLL_QUEUE_DUE.set(await self.queue.due_count())
        metrics.NEEDS_REVIEW.set(await self.store.review_count())
