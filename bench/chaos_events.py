"""Reads the result topic across broker incarnations and remembers every event it saw.

The chaos run's broker (tansu) keeps its log in memory: a restarted broker is
empty, so events acknowledged by the old incarnation but not yet read are gone
for good. Such a loss is the test broker's, not the gateway's, so the run
avoids it instead of guessing about it: before the broker is killed the
gateway is frozen (SIGSTOP, so its relay cannot get anything more
acknowledged), :meth:`EventRecorder.catch_up` reads until its position equals
the log end of every partition, and only then is the broker killed and the
gateway thawed. Whatever the relay sends after that goes to the next
incarnation, which a fresh consumer reads from its first offset. A catch-up
that does not finish is counted (``unverified_restarts``) and its events, if
any were lost, show up as lost events: nothing is excused.

Decoding and dedupe by ``event_id`` follow the reference consumer
(``gateway/results.py``); unlike it, this one keeps *every* id (a run is
bounded) and counts the duplicates per id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from gateway.outbox.codec import CONTENT_TYPE_PROTOBUF, HEADER_CONTENT_TYPE, EventDecodeError, decode, header
from paygate.v1.events_pb2 import EventType
from paygate.v1.gateway_pb2 import FlowStatus

log = logging.getLogger(__name__)

PARTITIONS = 3


@dataclass(frozen=True)
class SeenEvent:
    event_id: str
    event_type: str
    flow_no: str
    request_id: str
    status: str


@dataclass
class Incarnation:
    """One life of the broker: when it started (UTC) and what was read from it."""

    started: datetime
    ended: datetime | None = None
    read: int = 0
    end_offsets: dict[int, int] = field(default_factory=dict)  # at the catch-up before it was killed


@dataclass
class EventLog:
    """Every unique event read, by id, plus what was dropped."""

    events: dict[str, SeenEvent] = field(default_factory=dict)
    lives: list[Incarnation] = field(default_factory=list)
    received: int = 0
    duplicates: int = 0
    undecodable: int = 0
    incarnations: int = 0
    unverified_restarts: int = 0

    def results_by_flow(self) -> dict[str, list[SeenEvent]]:
        """FLOW_RESULT events per flow number (a correct gateway publishes exactly one per flow)."""
        out: dict[str, list[SeenEvent]] = {}
        for event in self.events.values():
            if event.event_type == "FLOW_RESULT":
                out.setdefault(event.flow_no, []).append(event)
        return out


async def create_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS, timeout_s: float = 20.0) -> None:
    """Create ``topic`` on a fresh broker (an existing one is fine: the relay may have made it first)."""
    deadline = time.monotonic() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            try:
                await admin.create_topics([NewTopic(topic, partitions, 1)])
            except TopicAlreadyExistsError:
                pass
            return
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)
        finally:
            await admin.close()


class EventRecorder:
    """One consumer per broker incarnation, all feeding the same :class:`EventLog`."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.log = EventLog()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._partitions: list[TopicPartition] = []
        self._last_record = time.monotonic()

    async def start(self) -> None:
        """Read the current broker incarnation from its first offset, in the background."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="paygate-chaos-checker",
            request_timeout_ms=5000,
        )
        await consumer.start()
        partitions = consumer.partitions_for_topic(self.topic)
        for _ in range(50):
            if partitions:
                break
            await consumer.topics()  # refreshes metadata
            partitions = consumer.partitions_for_topic(self.topic)
            await asyncio.sleep(0.1)
        if not partitions:
            await consumer.stop()
            raise RuntimeError(f"topic {self.topic} has no partitions")
        self._partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(self._partitions)
        # offset 0, not the broker's "earliest": tansu can name a later batch as a partition's earliest
        # after two producers wrote its first batches at once (tests/integration/test_outbox_relay.py)
        for tp in self._partitions:
            consumer.seek(tp, 0)
        self._consumer = consumer
        self.log.incarnations += 1
        self.log.lives.append(Incarnation(started=datetime.now(UTC).replace(tzinfo=None)))
        self._task = asyncio.create_task(self._read(consumer))

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
            except KafkaError as exc:
                log.info("checker consumer: %s", exc)
                await asyncio.sleep(0.2)
                continue
            for records in batches.values():
                for record in records:
                    self._last_record = time.monotonic()
                    self._accept(record.headers, record.value or b"")

    def _accept(self, headers: object, value: bytes) -> None:
        self.log.received += 1
        self.log.lives[-1].read += 1
        content_type = header(headers, HEADER_CONTENT_TYPE) or CONTENT_TYPE_PROTOBUF  # type: ignore[arg-type]
        try:
            event = decode(value, content_type)
        except EventDecodeError:
            self.log.undecodable += 1
            return
        if event.event_id in self.log.events:
            self.log.duplicates += 1
            return
        self.log.events[event.event_id] = SeenEvent(
            event_id=event.event_id,
            event_type=EventType.Name(event.event_type),
            flow_no=event.flow_no,
            request_id=event.request_id,
            status=FlowStatus.Name(event.status),
        )

    async def caught_up(self) -> bool:
        """True when this incarnation's log has been read to its end on every partition."""
        consumer = self._consumer
        if consumer is None:
            return False
        ends = await consumer.end_offsets(self._partitions)
        self.log.lives[-1].end_offsets = {tp.partition: ends[tp] for tp in self._partitions}
        for tp in self._partitions:
            if await consumer.position(tp) < ends[tp]:
                return False
        return True

    async def catch_up(self, timeout_s: float) -> bool:
        """Wait (bounded) until :meth:`caught_up` twice, 0.5 s apart, and nothing read for 1 s.

        The producers must be quiet meanwhile. The second look catches a
        produce request that was already on the wire when the producer was
        frozen; the quiet second does not trust the broker's end offsets alone.
        """
        deadline = time.monotonic() + timeout_s
        confirmed = 0
        while time.monotonic() < deadline and (confirmed < 2 or time.monotonic() - self._last_record < 1.0):
            done = False
            with contextlib.suppress(KafkaError, TimeoutError):
                done = await asyncio.wait_for(self.caught_up(), timeout=3)
            confirmed = confirmed + 1 if done else 0
            await asyncio.sleep(0.5 if done else 0.1)
        if self.log.lives:
            self.log.lives[-1].ended = datetime.now(UTC).replace(tzinfo=None)
        return confirmed >= 2 and time.monotonic() - self._last_record >= 1.0

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), timeout=5)
