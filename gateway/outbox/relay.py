"""The outbox relay: publishes committed outbox rows to Kafka, at least once.

One round (:meth:`OutboxRelay.run_once`), inside one database transaction:

1. claim up to ``batch_size`` unpublished rows in id order with
   ``SELECT ... FOR UPDATE SKIP LOCKED`` (not the rows of a flow whose earlier
   event is parked: they wait for it);
2. set aside rows whose flow has an earlier unpublished event held by another
   relay (they go in a later round, so a flow's events stay in order);
3. produce the rows (key = flow_no, acks=all) in waves: the first row of each
   flow, then, once those are acknowledged, the second of each flow whose first
   went, and so on; a flow whose row failed sends nothing more this round;
4. mark the acknowledged rows published and commit.

So the events of one flow reach Kafka in the order of its transitions (a
DISCREPANCY never before the FLOW_RESULT it contradicts, a FLOW_RESULT never
before the FLOW_NEEDS_REVIEW that preceded it), even across topics and
partitions and when an earlier row fails; usually every flow has one row in a
round and there is one wave.

Why the claiming transaction is held over produce + mark (instead of a lease):
the row locks *are* the claim. Other replicas skip locked rows, so in normal
operation no row is published twice; when a relay process dies, the database
drops its connection and releases the locks at once, so its rows come back
without waiting for a lease to expire and without lease columns, clocks or a
sweeper. The price is one pooled connection and at most ``batch_size`` row
locks held for one produce round trip (milliseconds; at most
``request_timeout_ms`` while the broker is failing). Nothing else ever waits for
those locks: writers only insert new rows, cleanup deletes published ones, and
under READ COMMITTED there are no gap locks to block inserts.

Delivery is at least once. If the process dies (or the commit fails) after the
broker acknowledged a batch but before the marks committed, the rows are
produced again in a later round with the same ``event_id``; consumers drop the
duplicate by it (see gateway/results.py and docs/EVENTS.md).

Errors. Anything whose ``retriable`` attribute is true (aiokafka errors, the
store's DatabaseUnavailable/Conflict), plus timeouts, makes the background loop
back off (exponential, jittered, up to ``backoff_max_s``) and retry; the rows
stay unpublished and nothing about them is rewritten. A non-retriable failure
of one row (malformed payload, message too large, topic refused) is recorded on
the row (``attempts``, ``last_error``) and does not slow down the other rows;
the row is tried again in the next rounds and, after ``max_attempts`` such
failures, *parked*: claims skip it and the later events of its flow (they
wait, in order), it stays in the backlog gauge, and an operator fixes the
cause and sets ``attempts = 0``. A non-retriable failure of a whole
round (bad credentials, broker without idempotent-producer support) is logged
and retried only every ``backoff_max_s``: a relay that quietly gave up would
strand every result, and the backlog alert is the signal.

Lifecycle: :meth:`start` spawns the publish loop, the cleanup loop and the
metrics sampler and returns at once; it never waits for Kafka, so the gRPC
server starts (and serves) while the broker is down. :meth:`stop` is
idempotent, lets the round in flight finish and flushes the producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from google.protobuf.message import DecodeError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential, wait_random

from gateway.errors import OutboxError, PublishIncomplete
from gateway.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE, OUTBOX_PUBLISH_ERRORS, OUTBOX_PUBLISHED
from gateway.outbox import codec
from gateway.outbox.config import RelayConfig
from gateway.store.db import Database
from gateway.store.outbox import MySQLOutbox, OutboxRound, OutboxRow, flows_held_elsewhere
from paygate.v1.events_pb2 import FlowEvent

log = logging.getLogger(__name__)

# aiokafka marks these non-retriable, but for a relay they only mean "the broker
# did not answer in time": the rows stay unpublished and the next round resends.
_TIMEOUTS = (KafkaTimeoutError, TimeoutError, ConnectionError)


def is_retriable(exc: BaseException) -> bool:
    """True when waiting and trying again can succeed (broker or database unreachable)."""
    return isinstance(exc, _TIMEOUTS) or bool(getattr(exc, "retriable", False))


@dataclass(frozen=True)
class OutboxStats:
    """What :meth:`OutboxRelay.sample_metrics` saw: unpublished rows and the oldest one's age."""

    backlog: int
    oldest_age_s: float


@dataclass
class _Delivery:
    row: OutboxRow
    topic: str = ""
    error: BaseException | None = None
    acked: bool = False


class OutboxRelay:
    """Publishes outbox rows to Kafka in the background.

    ``after_produce`` is a test seam for chaos tests: it is called (with the
    number of acknowledged rows) after the broker acknowledged a round and
    before the rows are marked; raising there, or ``os._exit``, reproduces a
    crash in the one window that causes a duplicate.
    """

    def __init__(
        self,
        db: Database,
        config: RelayConfig,
        *,
        after_produce: Callable[[int], Awaitable[None] | None] | None = None,
    ) -> None:
        self._outbox = MySQLOutbox(db)
        self.config = config
        self._after_produce = after_produce
        self._producer: AIOKafkaProducer | None = None
        self._topics_ready = False
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._round_lock = asyncio.Lock()  # one round at a time per relay, loop or test

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background loops; returns at once (Kafka may be down). Idempotent."""
        if self._tasks:
            return
        self._stopping.clear()
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="outbox-publish"),
            asyncio.create_task(self._cleanup_loop(), name="outbox-cleanup"),
            asyncio.create_task(self._metrics_loop(), name="outbox-metrics"),
        ]

    async def stop(self, timeout_s: float | None = None) -> None:
        """Stop the loops, flush and close the producer. Idempotent.

        The round in flight is allowed to finish (by default for as long as a
        produce may take, ``2 * request_timeout_ms`` + 5 s); after ``timeout_s``
        whatever still runs is cancelled, which is safe: unmarked rows are
        simply published again later.
        """
        self._stopping.set()
        self._wakeup.set()
        tasks, self._tasks = self._tasks, []
        if tasks:
            grace = timeout_s if timeout_s is not None else 2 * self.config.request_timeout_ms / 1000 + 5
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._close_producer()

    async def __aenter__(self) -> OutboxRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def notify(self) -> None:
        """Wake the publish loop now (call after committing an outbox row, on the event loop)."""
        self._wakeup.set()

    # --- one round ---------------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim, produce and mark one batch; returns how many events were published.

        Raises a retriable error (``is_retriable``) when the broker or the
        database is unreachable, and :class:`PublishIncomplete` when some rows of
        the batch failed (the others are marked).
        """
        async with self._round_lock:
            producer = await self._ensure_producer()
            failure: PublishIncomplete | None = None
            async with self._outbox.round() as outbox:
                claimed = await outbox.claim(max_attempts=self.config.max_attempts, limit=self.config.batch_size)
                if not claimed:
                    return 0
                ready = self._in_flow_order(claimed)
                deliveries = await self._produce_in_waves(producer, ready)
                acked = [d for d in deliveries if d.acked]
                failed = [d for d in deliveries if d.error is not None]
                if acked and self._after_produce is not None:
                    maybe = self._after_produce(len(acked))
                    if maybe is not None:
                        await maybe
                await self._record(outbox, acked, failed)
            for d in acked:
                OUTBOX_PUBLISHED.labels(topic=d.topic).inc()
            failure = self._failure_of(acked, failed)
        if failure is not None:
            if failure.retriable:
                self._topics_ready = False  # a restarted broker may have lost its topics
            raise failure
        return len(acked)

    @staticmethod
    def _failure_of(acked: Sequence[_Delivery], failed: Sequence[_Delivery]) -> PublishIncomplete | None:
        errors = [d.error for d in failed if d.error is not None]
        for d in failed:
            if d.error is not None:
                OUTBOX_PUBLISH_ERRORS.labels(error=type(d.error).__name__).inc()
                if not is_retriable(d.error):
                    log.error("outbox event %s not publishable: %s", d.row.event_id, _describe(d.error))
        if not errors:
            return None
        # Any broker trouble makes the round retriable (back off); rows failing for their own
        # reasons only were recorded on the row and must not slow down everyone else's events.
        retriable = [e for e in errors if is_retriable(e)]
        cause = (retriable or errors)[0]
        return PublishIncomplete(len(acked), len(errors), _describe(cause), retriable=is_retriable(cause))

    @staticmethod
    def _in_flow_order(rows: list[OutboxRow]) -> list[OutboxRow]:
        """Drop rows whose flow still has an earlier unpublished event outside this batch.

        Such an event is held by another relay right now (a parked one keeps them
        from being claimed at all); sending the later one first would reorder the
        flow's events.
        """
        held = flows_held_elsewhere(rows)
        if not held:
            return rows
        return [r for r in rows if r.flow_id not in held]

    async def _produce_in_waves(self, producer: AIOKafkaProducer, rows: Sequence[OutboxRow]) -> list[_Delivery]:
        """Produce ``rows`` so that no event of a flow is sent before its flow's earlier ones are acknowledged.

        Wave k holds the k-th row (in id order) of each flow. A flow whose row was not
        acknowledged sends nothing more this round (its later rows stay unpublished and are
        not counted as failures); broker trouble ends the round.
        """
        waves: list[list[OutboxRow]] = []
        depth: dict[int, int] = {}
        for row in rows:
            k = depth.get(row.flow_id, 0)
            depth[row.flow_id] = k + 1
            if k == len(waves):
                waves.append([])
            waves[k].append(row)
        deliveries: list[_Delivery] = []
        stopped: set[int] = set()
        for wave in waves:
            sendable = [row for row in wave if row.flow_id not in stopped]
            if not sendable:
                continue
            sent = await self._produce(producer, sendable)
            deliveries.extend(sent)
            stopped |= {d.row.flow_id for d in sent if not d.acked}
            if any(d.error is not None and is_retriable(d.error) for d in sent):
                break
        return deliveries

    async def _produce(self, producer: AIOKafkaProducer, rows: Sequence[OutboxRow]) -> list[_Delivery]:
        """Send every row, then wait for all acknowledgements; one _Delivery per row sent or refused."""
        deliveries: list[_Delivery] = []
        pending: list[tuple[_Delivery, asyncio.Future[Any]]] = []
        batch_error: BaseException | None = None
        for row in rows:
            delivery = _Delivery(row)
            try:
                event = self._event_of(row)
                value, content_type = codec.encode(event, self.config.encoding)
                delivery.topic = self.config.topic_for(row.caller, row.event_type)
                future = await producer.send(
                    delivery.topic,
                    value,
                    key=row.msg_key.encode(),
                    headers=codec.headers_for(event, content_type),
                )
            except (DecodeError, ValueError) as exc:
                delivery.error = exc  # this row is broken; the others still go
                deliveries.append(delivery)
                continue
            except KafkaError as exc:
                if is_retriable(exc):
                    batch_error = exc  # broker trouble: stop queueing, collect what was queued
                    break
                delivery.error = exc  # e.g. MessageSizeTooLargeError: this row only
                deliveries.append(delivery)
                continue
            deliveries.append(delivery)
            pending.append((delivery, future))
        if pending:
            # aiokafka fails each future after request_timeout_ms; the outer bound
            # only guards against a future that is never resolved.
            timeout = 2 * self.config.request_timeout_ms / 1000 + 5
            done, not_done = await asyncio.wait([f for _, f in pending], timeout=timeout)
            for future in not_done:
                future.cancel()
            for delivery, future in pending:
                if future in done and future.exception() is None:
                    delivery.acked = True
                elif future in done:
                    delivery.error = future.exception()
                else:
                    delivery.error = TimeoutError("no acknowledgement")
        if batch_error is not None:
            sent = {d.row.id for d in deliveries}
            deliveries.extend(_Delivery(r, error=batch_error) for r in rows if r.id not in sent)
        return deliveries

    @staticmethod
    def _event_of(row: OutboxRow) -> FlowEvent:
        event = FlowEvent.FromString(row.payload)
        if event.event_id != row.event_id:
            raise ValueError(f"payload event_id {event.event_id!r} differs from the row's {row.event_id!r}")
        return event

    async def _record(self, outbox: OutboxRound, acked: Sequence[_Delivery], failed: Sequence[_Delivery]) -> None:
        """Mark the acknowledged rows, count the failures, and commit the round, in one round trip."""
        # Only a row's own fault counts towards parking it; an outage is nobody's row's fault.
        own_fault = [(d.row.id, _describe(d.error)) for d in failed if d.error and not is_retriable(d.error)]
        await outbox.finish([d.row.id for d in acked], own_fault)

    # --- producer ----------------------------------------------------------------------

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(**self._client_settings(), **self._producer_settings())
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
            self._topics_ready = False
        if not self._topics_ready:
            if self.config.create_topics:
                await self.ensure_topics()
            self._topics_ready = True
        return self._producer

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()  # flushes whatever is still queued
            except Exception as exc:
                log.warning("outbox producer did not close cleanly: %s", _describe(exc))

    def _client_settings(self) -> dict[str, Any]:
        cfg = self.config
        settings: dict[str, Any] = {
            "bootstrap_servers": cfg.bootstrap_servers,
            "client_id": cfg.client_id,
            "request_timeout_ms": cfg.request_timeout_ms,
            "security_protocol": cfg.security_protocol,
        }
        if cfg.security_protocol in ("SSL", "SASL_SSL"):
            settings["ssl_context"] = create_ssl_context(cafile=cfg.ssl_cafile)
        if cfg.sasl_mechanism is not None:
            settings["sasl_mechanism"] = cfg.sasl_mechanism
            settings["sasl_plain_username"] = cfg.sasl_username
            settings["sasl_plain_password"] = cfg.sasl_password.reveal() if cfg.sasl_password else None
        return settings

    def _producer_settings(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "acks": cfg.acks,
            "enable_idempotence": cfg.enable_idempotence,
            "linger_ms": cfg.linger_ms,
            "compression_type": cfg.compression_type,
            "retry_backoff_ms": 100,
        }

    async def ensure_topics(self) -> None:
        """Create the configured topics that do not exist yet (``topic_partitions`` x ``topic_replication_factor``)."""
        admin = AIOKafkaAdminClient(**self._client_settings())
        await admin.start()
        try:
            topics = [
                NewTopic(name, self.config.topic_partitions, self.config.topic_replication_factor)
                for name in sorted(self.config.topics())
            ]
            response = await admin.create_topics(topics)
            for topic, code, message in _topic_errors(response):
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise OutboxError(f"cannot create topic {topic!r}: error {code} {message or ''}".strip())
        finally:
            await admin.close()

    # --- background loops --------------------------------------------------------------

    async def _publish_loop(self) -> None:
        cfg = self.config
        idle_wait = cfg.poll_interval_s
        while not self._stopping.is_set():
            published = 0
            try:
                published = await self._round_with_retry()
            except PublishIncomplete as exc:
                # Only rows at fault: they were recorded (and park after max_attempts); carry on.
                published = exc.published
            except Exception as exc:
                if self._stopping.is_set():
                    break
                log.exception("outbox relay round failed (not retriable); next try in %.0f s", cfg.backoff_max_s)
                OUTBOX_PUBLISH_ERRORS.labels(error=type(exc).__name__).inc()
                await self._pause(cfg.backoff_max_s)
                continue
            if published >= cfg.batch_size:
                continue  # a full batch: more rows are probably waiting
            # idle: wait longer after each empty round (see RelayConfig.idle_poll_max_s)
            longer = max(min(2 * idle_wait, cfg.idle_poll_max_s), cfg.poll_interval_s)
            idle_wait = longer if published == 0 else cfg.poll_interval_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(idle_wait):  # not wait_for: see _pause
                    await self._wakeup.wait()
                idle_wait = cfg.poll_interval_s  # notified: rows are coming
                if cfg.collect_ms > 0:  # let the results of concurrent requests join this round
                    await self._pause(cfg.collect_ms / 1000)
            self._wakeup.clear()

    async def _round_with_retry(self) -> int:
        cfg = self.config
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_retriable),
            # initial, 2x, 4x ... up to backoff_max_s, plus up to one initial step of jitter
            # so replicas that failed together do not retry in lockstep.
            wait=wait_exponential(multiplier=cfg.backoff_initial_s, max=cfg.backoff_max_s)
            + wait_random(0, cfg.backoff_initial_s),
            stop=lambda _state: self._stopping.is_set(),
            sleep=self._pause,
            before_sleep=self._on_retry,
            reraise=True,
        )
        published: int = await retrying(self._round_unless_stopping)
        return published

    async def _round_unless_stopping(self) -> int:
        # A stop() during a backoff pause must not start one more (possibly slow) round.
        return 0 if self._stopping.is_set() else await self.run_once()

    def _on_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is None:
            return
        if not isinstance(exc, PublishIncomplete):  # PublishIncomplete counted its rows already
            OUTBOX_PUBLISH_ERRORS.labels(error=type(exc).__name__).inc()
        log.warning(
            "outbox relay round failed, retrying in %.2f s (try %d): %s",
            state.upcoming_sleep,
            state.attempt_number,
            _describe(exc),
        )

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when the relay is stopping."""
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that arrives
        # just as the awaited thing completes
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _cleanup_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                deleted = await self.cleanup()
                if deleted:
                    log.info("outbox cleanup deleted %d published rows", deleted)
            except Exception as exc:
                log.warning("outbox cleanup failed: %s", _describe(exc))
            await self._pause(self.config.cleanup_interval_s)

    async def _metrics_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sample_metrics()
            except Exception as exc:
                log.warning("outbox metrics sampling failed: %s", _describe(exc))
            await self._pause(self.config.metrics_interval_s)

    # --- maintenance -------------------------------------------------------------------

    async def cleanup(self) -> int:
        """Delete rows published more than ``retention_s`` ago, in batches; returns how many.

        Each batch is its own short transaction, so cleanup never holds many
        locks and never touches unpublished rows.
        """
        cfg = self.config
        retention_us = int(cfg.retention_s * 1_000_000)
        total = 0
        while True:
            deleted = await self._outbox.delete_published(older_than_us=retention_us, limit=cfg.cleanup_batch_size)
            total += deleted
            if deleted < cfg.cleanup_batch_size or self._stopping.is_set():
                break
            await asyncio.sleep(0)  # let the request path in between batches
        return total

    async def sample_metrics(self) -> OutboxStats:
        """Refresh the backlog and oldest-age gauges from the database (its clock, not ours)."""
        backlog, age_s = await self._outbox.backlog()
        OUTBOX_BACKLOG.set(backlog)
        OUTBOX_OLDEST_AGE.set(age_s)
        return OutboxStats(backlog, age_s)


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    result = []
    for item in getattr(response, "topic_errors", []):
        topic, code = item[0], item[1]
        message = item[2] if len(item) > 2 else None
        result.append((str(topic), int(code), message))
    return result


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no error"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
