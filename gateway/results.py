"""Reading paygate's result events: the reference consumer (``paygate results tail``).

Lending-system teams: this module is meant to be copied. It shows the four
things every consumer of the result topic must get right:

1. **Decode by the ``content-type`` header**, not by guessing: the gateway
   publishes ``application/x-protobuf`` (``paygate.v1.FlowEvent``) or, when
   configured for consumers without protobuf, ``application/json`` (proto3
   JSON; int64 amounts arrive as strings, so money never passes through a
   float). Unknown fields are ignored, so newer gateways do not break you.
2. **Expect duplicates.** The gateway delivers every event *at least* once: if
   it crashes after Kafka acknowledged an event but before it recorded that,
   the event is sent again, with the same ``event_id``. Drop it by that id.
3. **Commit offsets after the work is done**, never before: a crash then
   replays a few events (which rule 2 absorbs) instead of losing them.
4. **Apply results idempotently in your own database.** The in-memory window
   below only catches duplicates that arrive close together (the normal case:
   a re-send follows the original within seconds or minutes). After a restart
   the window is empty, so the real guarantee must be a unique key in your
   store, e.g. on ``event_id``, or on ``flow_no`` for ``FLOW_RESULT`` (there is
   exactly one per flow), checked in the same transaction that applies it.

Events of one flow share the message key (the flow number), so they arrive in
order on one partition. See docs/EVENTS.md for the schema.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from google.protobuf import json_format

from gateway.domain import minor_to_text
from gateway.outbox.codec import (
    CONTENT_TYPE_PROTOBUF,
    HEADER_CONTENT_TYPE,
    HEADER_EVENT_ID,
    EventDecodeError,
    decode,
    header,
)
from paygate.v1.events_pb2 import EventType, FlowEvent, InstalmentOutcome, InstalmentOutcomeKind
from paygate.v1.gateway_pb2 import FlowKind, FlowStatus

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "paygate.flow-results"


class RecentIds:
    """The last ``capacity`` event ids seen, oldest evicted first (a bounded LRU set).

    Bounded because a consumer runs for months: an unbounded set is a slow
    memory leak. 100 000 ids cost roughly 10 MB and cover far more than the
    window in which the gateway re-sends (its relay retries within seconds to
    minutes of the first send). A hit refreshes the id, so an event that keeps
    coming back stays remembered.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def seen(self, event_id: str) -> bool:
        """True if ``event_id`` was seen before; remembers it either way."""
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return True
        self._ids[event_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._ids)


@dataclass
class ConsumerStats:
    received: int = 0  # messages read from Kafka
    delivered: int = 0  # unique events handed to the application
    duplicates: int = 0  # dropped because their event id was seen recently
    undecodable: int = 0  # skipped: unknown content type or malformed value


class ResultConsumer:
    """Async iterator over the unique result events of one or more topics.

    ::

        async with ResultConsumer("kafka:9092", ["paygate.flow-results"], group_id="loan-servicing") as results:
            async for event in results:
                await apply_result(event)   # idempotent, in your own transaction

    With a ``group_id`` the offset of an event is committed only after the
    loop asked for the next one, i.e. after your code finished with it (at
    least once). Without one nothing is committed (a read-only tail).
    ``idle_timeout_s`` ends the iteration after that long without a message
    (tests, scripts); by default it waits forever.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Sequence[str],
        *,
        group_id: str | None = None,
        from_beginning: bool = False,
        dedupe_capacity: int = 100_000,
        idle_timeout_s: float | None = None,
        commit_interval_s: float = 1.0,
        client_id: str = "paygate-results",
        **kafka_options: Any,
    ) -> None:
        self.topics = list(topics)
        self.group_id = group_id
        self.idle_timeout_s = idle_timeout_s
        self.commit_interval_s = commit_interval_s
        self.stats = ConsumerStats()
        self._recent = RecentIds(dedupe_capacity)
        self._consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            group_id=group_id,
            # Where to start when the group has no committed offset yet.
            auto_offset_reset="earliest" if from_beginning else "latest",
            # We commit ourselves, after processing; auto-commit may commit
            # events your code has not handled yet.
            enable_auto_commit=False,
            # Security (security_protocol, sasl_*, ssl_context) and tuning go straight to aiokafka.
            **kafka_options,
        )
        self._started = False
        # Offsets (next position) of events the application has finished with, per partition.
        self._done: dict[TopicPartition, int] = {}
        self._handed_out: ConsumerRecord[bytes, bytes] | None = None
        self._last_commit = time.monotonic()

    async def start(self) -> None:
        if not self._started:
            try:
                await self._consumer.start()
            except BaseException:
                await self._consumer.stop()  # a start that failed half-way (no broker) leaves nothing open
                raise
            self._started = True

    async def stop(self, *, last_processed: bool = True) -> None:
        """Commit what was processed and leave the group. Idempotent.

        ``last_processed=False`` leaves the event handed out last uncommitted
        (its processing failed), so the next run reads it again.
        """
        if not self._started:
            return
        self._started = False
        try:
            if last_processed:
                self._finished_with_handed_out()
            await self._commit()
        finally:
            await self._consumer.stop()

    async def __aenter__(self) -> ResultConsumer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        await self.stop(last_processed=exc_type is None)

    def __aiter__(self) -> AsyncIterator[FlowEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[FlowEvent]:
        await self.start()
        idle_since = time.monotonic()
        while True:
            # Asking for the next event means the application finished the previous one.
            self._finished_with_handed_out()
            await self._maybe_commit()
            wait_ms = 1000
            if self.idle_timeout_s is not None:
                left = self.idle_timeout_s - (time.monotonic() - idle_since)
                if left <= 0:
                    return
                wait_ms = max(1, min(wait_ms, int(left * 1000)))
            batches = await self._consumer.getmany(timeout_ms=wait_ms, max_records=100)
            for records in batches.values():
                for record in records:
                    idle_since = time.monotonic()
                    event = self._accept(record)
                    if event is None:
                        self._done[_tp(record)] = record.offset + 1  # nothing for the application to do
                        continue
                    self._handed_out = record
                    yield event
                    self._finished_with_handed_out()

    def _accept(self, record: ConsumerRecord[bytes, bytes]) -> FlowEvent | None:
        """The record's event, or None when it is undecodable or a duplicate."""
        self.stats.received += 1
        event = self._decode(record)
        if event is None:
            return None
        if self._recent.seen(event.event_id):
            self.stats.duplicates += 1
            log.info("duplicate event %s dropped", event.event_id)
            return None
        self.stats.delivered += 1
        return event

    def _decode(self, record: ConsumerRecord[bytes, bytes]) -> FlowEvent | None:
        # A message without a content-type header is protobuf (the gateway's default).
        content_type = header(record.headers, HEADER_CONTENT_TYPE) or CONTENT_TYPE_PROTOBUF
        try:
            event = decode(record.value or b"", content_type)
        except EventDecodeError as exc:
            # Skip rather than stop: one bad message must not block the partition.
            # A production consumer should keep it somewhere (dead-letter table) and alert.
            self.stats.undecodable += 1
            log.error(
                "skipping undecodable message at %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc
            )
            return None
        # The header carries the id too; use it if a payload ever lacks one.
        if not event.event_id:
            event.event_id = header(record.headers, HEADER_EVENT_ID) or ""
        if not event.event_id:  # not one of ours (every event has an id): never the "duplicate" of another
            self.stats.undecodable += 1
            log.error(
                "skipping message without an event id at %s[%d]@%d", record.topic, record.partition, record.offset
            )
            return None
        return event

    def _finished_with_handed_out(self) -> None:
        record, self._handed_out = self._handed_out, None
        if record is not None:
            self._done[_tp(record)] = record.offset + 1

    async def _maybe_commit(self) -> None:
        if time.monotonic() - self._last_commit >= self.commit_interval_s:
            await self._commit()

    async def _commit(self) -> None:
        # Commit only what the application finished with: a crash replays the
        # rest (duplicates, dropped by event id) instead of losing it.
        if self.group_id is not None and self._done:
            done, self._done = self._done, {}
            await self._consumer.commit(done)
        self._last_commit = time.monotonic()


def _tp(record: ConsumerRecord[bytes, bytes]) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


# --- printing ----------------------------------------------------------------------------


def format_amount(minor_units: int, currency: str) -> str:
    """``12345, "CNY"`` -> ``"123.45 CNY"``, with integer arithmetic only (no float for money)."""
    return f"{minor_to_text(minor_units, currency)} {currency}"


def format_event(event: FlowEvent) -> str:
    """One readable line per event."""
    when = event.finished_at if event.HasField("finished_at") else event.emitted_at
    parts = [
        when.ToJsonString() if when.seconds or when.nanos else "-",
        EventType.Name(event.event_type),
        FlowKind.Name(event.kind),
        FlowStatus.Name(event.status),
        f"flow={event.flow_no}",
        f"caller={event.caller}",
        f"request={event.request_id}",
        f"amount={format_amount(event.amount.amount, event.amount.currency)}",
    ]
    if event.channel:
        parts.append(f"channel={event.channel}")
    if event.channel_txn_id:
        parts.append(f"txn={event.channel_txn_id}")
    if event.failure_code:
        who = " (payer)" if event.payer_attributable else ""
        parts.append(f"failure={event.failure_code}{who}")
    if event.needs_review:
        parts.append("needs_review")
    if event.original_flow_no:
        parts.append(f"original={event.original_flow_no}")
    if event.detail:
        parts.append(f"detail={event.detail!r}")
    if event.HasField("instalment"):
        parts.append(_instalment_part(event.instalment))
    parts.append(f"event={event.event_id}")
    return " ".join(parts)


def _instalment_part(outcome: InstalmentOutcome) -> str:
    """``plan=... instalment=... outcome=RETRY_SCHEDULED next=2026-12-01T18:00 seq=2`` for an instalment event."""
    text = (
        f"plan={outcome.plan_id} instalment={outcome.instalment_id}"
        f" outcome={InstalmentOutcomeKind.Name(outcome.kind).removeprefix('OUTCOME_')}"
    )
    if outcome.time_point:
        text += f" at={outcome.business_day}T{outcome.time_point}"
    if outcome.stop_reason:
        text += f" stop={outcome.stop_reason}"
    if outcome.next_time_point:
        text += f" next={outcome.next_business_day}T{outcome.next_time_point}"
    return text + f" seq={outcome.sequence}"


# --- CLI ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="paygate results tail", description="Print paygate result events, one per line.")
    p.add_argument(
        "--bootstrap",
        default=os.environ.get("PAYGATE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        help="Kafka bootstrap servers (default: $PAYGATE_KAFKA__BOOTSTRAP_SERVERS or 127.0.0.1:9092)",
    )
    p.add_argument("--topic", action="append", help=f"topic to read; repeatable (default: {DEFAULT_TOPIC})")
    p.add_argument("--group", help="consumer group; offsets are committed after printing (default: none, read-only)")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest retained event")
    p.add_argument("--json", action="store_true", help="print each event as one line of proto3 JSON")
    p.add_argument("--max-messages", type=int, help="exit after printing this many events")
    p.add_argument("--idle-timeout", type=float, help="exit after this many seconds without a message")
    return p


async def _tail(args: argparse.Namespace) -> int:
    consumer = ResultConsumer(
        args.bootstrap,
        args.topic or [DEFAULT_TOPIC],
        group_id=args.group,
        from_beginning=args.from_beginning,
        idle_timeout_s=args.idle_timeout,
    )
    printed = 0
    async with consumer:
        async for event in consumer:
            if args.json:
                line = json_format.MessageToJson(event, preserving_proto_field_name=True, indent=None)
            else:
                line = format_event(event)
            print(line, flush=True)
            printed += 1
            if args.max_messages is not None and printed >= args.max_messages:
                break
    stats = consumer.stats
    print(
        f"# {stats.delivered} events, {stats.duplicates} duplicates dropped, {stats.undecodable} undecodable",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str]) -> int:
    """``paygate results tail [options]``; ``argv`` excludes the command words."""
    args = _parser().parse_args(argv)
    if args.max_messages is not None and args.max_messages < 1:
        print("--max-messages must be >= 1", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        try:
            return asyncio.run(_tail(args))
        except KafkaError as exc:  # the broker cannot be reached (or refused us): one line, not a traceback
            problem = f"Kafka at {args.bootstrap} unavailable / 消息队列不可用: {exc}"
            print(f"paygate results tail: {problem}", file=sys.stderr)
            return 1
    return 130


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
