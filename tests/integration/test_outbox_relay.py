"""The outbox relay against real MariaDB and a real Kafka-protocol broker (tansu)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from devstack.kafka import KafkaBroker
from gateway.domain import new_ulid
from gateway.errors import PublishIncomplete
from gateway.metrics import REGISTRY
from gateway.outbox import codec
from gateway.outbox.config import RelayConfig
from gateway.outbox.relay import OutboxRelay, is_retriable
from gateway.results import ResultConsumer
from gateway.store.db import Database
from paygate.v1 import events_pb2, gateway_pb2

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def relay_config(bootstrap: str, **overrides: object) -> RelayConfig:
    settings: dict[str, object] = {
        "bootstrap_servers": bootstrap,
        "default_topic": f"test.results.{uuid.uuid4().hex[:10]}",
        "enable_idempotence": False,  # tansu has no InitProducerId
        "create_topics": True,
        "topic_partitions": 3,
        "topic_replication_factor": 1,
        "request_timeout_ms": 1500,
        "poll_interval_s": 0.05,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.5,
        "metrics_interval_s": 0.1,
    }
    settings.update(overrides)
    return RelayConfig(**settings)  # type: ignore[arg-type]


def flow_result(flow_no: str, *, event_type: int = events_pb2.FLOW_RESULT, amount: int = 12345) -> events_pb2.FlowEvent:
    event = events_pb2.FlowEvent(
        event_id=new_ulid(),
        event_type=event_type,
        caller="loan-servicing",
        request_id=f"req-{flow_no[-6:]}",
        flow_no=flow_no,
        kind=gateway_pb2.WITHHOLD,
        status=gateway_pb2.SUCCEEDED if event_type == events_pb2.FLOW_RESULT else gateway_pb2.PROCESSING,
        amount=gateway_pb2.Money(amount=amount, currency="CNY"),
        channel="sandbox",
        channel_txn_id=f"T{flow_no[-8:]}",
        needs_review=event_type == events_pb2.FLOW_NEEDS_REVIEW,
    )
    event.emitted_at.GetCurrentTime()
    return event


async def insert_event(
    db: Database, event: events_pb2.FlowEvent, flow_id: int, *, payload: bytes | None = None
) -> None:
    """What gateway/store/outbox.py does inside the terminal transition (here on its own)."""
    event_type = events_pb2.EventType.Name(event.event_type)
    dedupe_key = f"result:{flow_id}" if event.event_type == events_pb2.FLOW_RESULT else None
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO outbox (event_id, event_type, flow_id, caller, msg_key, payload, created_at, dedupe_key)"
            " VALUES (%s, %s, %s, %s, %s, %s, UTC_TIMESTAMP(6), %s)",
            (
                event.event_id,
                event_type,
                flow_id,
                event.caller,
                event.flow_no,
                event.SerializeToString() if payload is None else payload,
                dedupe_key,
            ),
        )
        await tx.commit()


async def insert_results(db: Database, count: int, *, first_flow_id: int = 1) -> list[events_pb2.FlowEvent]:
    events = []
    for flow_id in range(first_flow_id, first_flow_id + count):
        event = flow_result(new_ulid())
        await insert_event(db, event, flow_id)
        events.append(event)
    return events


async def drain(relay: OutboxRelay) -> int:
    total = 0
    while (n := await relay.run_once()) > 0:
        total += n
    return total


async def raw_messages(
    bootstrap: str, topic: str, *, idle_s: float = 1.0, expect: int | None = None, timeout_s: float = 30.0
) -> list:
    """Every message of ``topic`` as the broker stores it (no group, no dedupe), read from offset 0.

    Reads until a fetch comes back empty and, when ``expect`` is given, at least
    that many messages were read (an idle fetch of the test broker can come back
    empty while a partition still has data; its end offsets are not reliable
    either), or until ``timeout_s``. A broker that really lost messages still
    fails the caller's count.

    Each partition is read from offset 0, not from the broker's "earliest" offset:
    when two producers write the first batches of a fresh partition at the same
    moment, tansu (memory storage) acknowledges and stores them all but then names
    the second batch's offset as the partition's earliest, so a consumer starting
    at "earliest" skips the first batch (seen as 284-290 of 300 in the two-relay
    test; reading from 0 returns all of them). The test topics are never truncated.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    records = []
    deadline = time.monotonic() + timeout_s
    try:
        while not (partitions := await _partitions(consumer, topic)):
            if expect is None or time.monotonic() > deadline:
                return records
            await asyncio.sleep(idle_s)
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, 0)
        while True:
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000))
            for part in batch.values():
                records.extend(part)
            if batch:
                continue
            if expect is None or len(records) >= expect or time.monotonic() > deadline:
                return records
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    await consumer.topics()  # a metadata request: the topic's partitions as the broker has them now
    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]


async def unique_events(bootstrap: str, topic: str) -> tuple[list[events_pb2.FlowEvent], ResultConsumer]:
    consumer = ResultConsumer(bootstrap, [topic], from_beginning=True, idle_timeout_s=1.5)
    async with consumer:
        events = [event async for event in consumer]
    return events, consumer


async def wait_until(predicate, timeout: float, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


async def unpublished(db: Database) -> int:
    row = await db.fetchone("SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL")
    return int(row["n"])


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- tests ---------------------------------------------------------------------------------


async def test_relay_publishes_every_row_once_and_marks_it(database, kafka_broker) -> None:
    config = relay_config(kafka_broker.bootstrap, batch_size=10)
    events = await insert_results(database, 25)
    before = metric("paygate_outbox_published_total", topic=config.default_topic)
    relay = OutboxRelay(database, config)
    try:
        assert await drain(relay) == 25
        stats = await relay.sample_metrics()
    finally:
        await relay.stop()

    rows = await database.fetchall("SELECT event_id, published_at, attempts, last_error FROM outbox ORDER BY id")
    assert all(r["published_at"] is not None and r["attempts"] == 1 and r["last_error"] == "" for r in rows)
    assert stats.backlog == 0 and metric("paygate_outbox_backlog") == 0
    assert metric("paygate_outbox_published_total", topic=config.default_topic) - before == 25

    records = await raw_messages(kafka_broker.bootstrap, config.default_topic, expect=25)
    assert len(records) == 25
    by_id = {e.event_id: e for e in events}
    for record in records:
        headers = dict(record.headers)
        event = codec.decode(record.value, headers["content-type"].decode())
        assert event == by_id[event.event_id]
        assert record.key == event.flow_no.encode()
        assert headers["event_id"] == event.event_id.encode()
        assert headers["event_type"] == b"FLOW_RESULT"
        assert headers["content-type"] == b"application/x-protobuf"


async def test_kcat_reads_the_same_messages(database, kafka_broker) -> None:
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.fail("kcat is not installed: run `apt-get install -y kcat` (scripts/ensure_services.sh does it)")
    config = relay_config(kafka_broker.bootstrap)
    await insert_results(database, 3)
    async with OutboxRelay(database, config) as relay:
        assert await drain(relay) == 3
    records = await raw_messages(kafka_broker.bootstrap, config.default_topic, expect=3)
    assert len(records) == 3

    def kcat_read(record, fmt: str) -> bytes:
        # librdkafka 2.0 (Debian's kcat) misparses the tagged fields of tansu's
        # ApiVersions v3 answer, so kcat skips the version query and speaks the
        # fixed legacy protocol; it still decodes v2 record batches, headers
        # included. Explicit offsets avoid ListOffsets, which that mode cannot parse.
        command = [
            kcat, "-X", "api.version.request=false", "-X", "broker.version.fallback=0.9.0",
            "-b", kafka_broker.bootstrap, "-C", "-t", config.default_topic,
            "-p", str(record.partition), "-o", str(record.offset), "-c", "1", "-q", "-f", fmt,
        ]  # fmt: skip
        return subprocess.run(command, check=True, capture_output=True, timeout=20).stdout

    for record in records:
        key, headers, size = kcat_read(record, "%k\n%h\n%S").decode().split("\n")
        assert key.encode() == record.key
        assert int(size) == len(record.value)
        assert dict(item.split("=", 1) for item in headers.split(",")) == {
            name: value.decode() for name, value in record.headers
        }
        assert kcat_read(record, "%s") == record.value  # the payload, byte for byte
        assert codec.decode(kcat_read(record, "%s"), "application/x-protobuf").flow_no == key


async def test_json_encoding_for_consumers_without_protobuf(database, kafka_broker) -> None:
    config = relay_config(kafka_broker.bootstrap, encoding="json")
    events = await insert_results(database, 4)
    async with OutboxRelay(database, config) as relay:
        assert await drain(relay) == 4
    records = await raw_messages(kafka_broker.bootstrap, config.default_topic, expect=4)
    for record in records:
        assert dict(record.headers)["content-type"] == b"application/json"
        document = json.loads(record.value)
        assert document["amount"] == {"amount": "12345", "currency": "CNY"}  # int64 as a string: no float money
        assert document["event_type"] == "FLOW_RESULT" and document["payer_attributable"] is False
    received, _ = await unique_events(kafka_broker.bootstrap, config.default_topic)
    assert sorted(e.event_id for e in received) == sorted(e.event_id for e in events)
    assert {e.event_id: e for e in received} == {e.event_id: e for e in events}


async def test_topics_follow_caller_and_event_type(database, kafka_broker) -> None:
    suffix = uuid.uuid4().hex[:8]
    config = relay_config(
        kafka_broker.bootstrap,
        caller_topics={"loan-servicing": f"loans.{suffix}"},
        event_topics={"FLOW_NEEDS_REVIEW": f"ops.{suffix}"},
    )
    result = flow_result(new_ulid())
    review = flow_result(new_ulid(), event_type=events_pb2.FLOW_NEEDS_REVIEW)
    await insert_event(database, result, 1)
    await insert_event(database, review, 2)
    async with OutboxRelay(database, config) as relay:
        assert await drain(relay) == 2
    loans = await raw_messages(kafka_broker.bootstrap, f"loans.{suffix}", idle_s=0.5)
    ops = await raw_messages(kafka_broker.bootstrap, f"ops.{suffix}", idle_s=0.5)
    assert [dict(r.headers)["event_id"].decode() for r in loans] == [result.event_id]
    assert [dict(r.headers)["event_id"].decode() for r in ops] == [review.event_id]


async def test_two_relays_publish_no_row_twice_and_keep_flow_order(db_config, database, kafka_broker) -> None:
    config = relay_config(kafka_broker.bootstrap, batch_size=25)
    # 150 flows, each with a review event followed by its result: 300 rows, interleaved by id.
    flows = [new_ulid() for _ in range(150)]
    order: dict[str, list[str]] = {}
    for flow_id, flow_no in enumerate(flows, start=1):
        review = flow_result(flow_no, event_type=events_pb2.FLOW_NEEDS_REVIEW)
        await insert_event(database, review, flow_id)
        order[flow_no] = [review.event_id]
    for flow_id, flow_no in enumerate(flows, start=1):
        result = flow_result(flow_no)
        await insert_event(database, result, flow_id)
        order[flow_no].append(result.event_id)

    # Two replicas: their own pools, their own producers.
    second_db = Database(db_config)
    await second_db.start()
    counts = Counter()
    try:
        relays = [OutboxRelay(database, config), OutboxRelay(second_db, config)]

        async def run(index: int) -> None:
            while (n := await relays[index].run_once()) > 0 or await unpublished(database) > 0:
                counts[index] += n
                if n == 0:
                    await asyncio.sleep(0.01)  # the other replica holds the rest

        await asyncio.wait_for(asyncio.gather(run(0), run(1)), 30)
        for relay in relays:
            await relay.stop()
    finally:
        await second_db.stop()

    assert counts[0] + counts[1] == 300
    assert counts[0] > 0 and counts[1] > 0, "both replicas should have published part of the backlog"
    records = await raw_messages(kafka_broker.bootstrap, config.default_topic, expect=300)
    ids = [dict(r.headers)["event_id"].decode() for r in records]
    assert len(set(ids)) == 300, "a row was not published"
    assert len(ids) == 300, "a row was published twice"
    # Within a partition, each flow's review precedes its result.
    seen: dict[str, list[str]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        seen.setdefault(record.key.decode(), []).append(dict(record.headers)["event_id"].decode())
    assert seen == order


async def test_later_event_of_a_flow_waits_while_another_relay_holds_the_earlier_one(database, kafka_broker) -> None:
    config = relay_config(kafka_broker.bootstrap)
    flow_no = new_ulid()
    review = flow_result(flow_no, event_type=events_pb2.FLOW_NEEDS_REVIEW)
    result = flow_result(flow_no)
    other = flow_result(new_ulid())
    await insert_event(database, review, 1)
    await insert_event(database, result, 1)
    await insert_event(database, other, 2)
    relay = OutboxRelay(database, config)
    try:
        # Another replica has claimed the review and is still producing it.
        async with database.transaction() as other_replica:
            await other_replica.fetchall(
                "SELECT id FROM outbox WHERE event_id=%s FOR UPDATE SKIP LOCKED", (review.event_id,)
            )
            assert await relay.run_once() == 1  # the unrelated flow only; the result waits
        assert await drain(relay) == 2
    finally:
        await relay.stop()
    records = await raw_messages(kafka_broker.bootstrap, config.default_topic)
    flow_records = sorted((r for r in records if r.key == flow_no.encode()), key=lambda r: r.offset)
    assert [dict(r.headers)["event_id"].decode() for r in flow_records] == [review.event_id, result.event_id]


async def test_a_later_event_of_a_flow_never_overtakes_an_earlier_one_that_failed(database, kafka_broker) -> None:
    """A DISCREPANCY must not reach Kafka before the FLOW_RESULT it contradicts, even when that one fails."""
    config = relay_config(kafka_broker.bootstrap, max_attempts=2)
    flow_no = new_ulid()
    result = flow_result(flow_no)
    discrepancy = flow_result(flow_no, event_type=events_pb2.DISCREPANCY)
    other = flow_result(new_ulid())
    await insert_event(database, result, 1, payload=b"\xff\xff not yet publishable")
    await insert_event(database, discrepancy, 1)
    await insert_event(database, other, 2)
    relay = OutboxRelay(database, config)
    try:
        for _ in range(2):  # the result fails for its own reason, twice: parked
            with pytest.raises(PublishIncomplete):
                await relay.run_once()
        assert await relay.run_once() == 0  # the discrepancy waits behind the parked result
        published = await database.fetchall("SELECT event_id FROM outbox WHERE published_at IS NOT NULL")
        assert [r["event_id"] for r in published] == [other.event_id]
        # an operator fixes the parked row
        async with database.transaction() as tx:
            await tx.execute(
                "UPDATE outbox SET payload=%s, attempts=0 WHERE event_id=%s",
                (result.SerializeToString(), result.event_id),
            )
            await tx.commit()
        assert await drain(relay) == 2
    finally:
        await relay.stop()
    records = await raw_messages(kafka_broker.bootstrap, config.default_topic, expect=3)
    flow_records = sorted((r for r in records if r.key == flow_no.encode()), key=lambda r: r.offset)
    assert [dict(r.headers)["event_id"].decode() for r in flow_records] == [result.event_id, discrepancy.event_id]


async def test_in_one_round_a_flow_sends_its_next_event_only_after_the_earlier_one_is_acknowledged(
    database, kafka_broker
) -> None:
    topic = f"test.discrepancies.{uuid.uuid4().hex[:8]}"
    config = relay_config(kafka_broker.bootstrap, event_topics={"DISCREPANCY": topic})
    flows = [new_ulid() for _ in range(5)]
    for i, flow_no in enumerate(flows, start=1):
        await insert_event(database, flow_result(flow_no), i)
        await insert_event(database, flow_result(flow_no, event_type=events_pb2.DISCREPANCY), i)
    relay = OutboxRelay(database, config)
    sent: list[str] = []
    real_produce = relay._produce

    async def watched(producer, rows):  # type: ignore[no-untyped-def]
        sent.append(",".join(sorted({r.event_type for r in rows})))
        return await real_produce(producer, rows)

    relay._produce = watched  # type: ignore[method-assign]
    try:
        assert await relay.run_once() == 10  # one round
    finally:
        await relay.stop()
    assert sent == ["FLOW_RESULT", "DISCREPANCY"]  # two waves: every result acknowledged before any discrepancy


CRASHING_RELAY = """
import asyncio, os, sys, json
from gateway.outbox.config import RelayConfig
from gateway.outbox.relay import OutboxRelay
from gateway.store.db import Database, DatabaseConfig

async def main():
    db = Database(DatabaseConfig(**json.loads(sys.argv[1])))
    await db.start()
    relay = OutboxRelay(db, RelayConfig(**json.loads(sys.argv[2])), after_produce=lambda n: os._exit(17))
    await relay.run_once()

asyncio.run(main())
"""


async def test_relay_killed_between_produce_and_mark_resends_and_consumer_dedupes(
    db_config, database, kafka_broker
) -> None:
    config = relay_config(kafka_broker.bootstrap)
    events = await insert_results(database, 5)
    child_config = {
        f.name: getattr(config, f.name) for f in dataclasses.fields(config) if not f.name.endswith("_topics")
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_RELAY,
        json.dumps({k: v for k, v in dataclasses.asdict(db_config).items() if k != "password"}),  # a Secret
        json.dumps(child_config),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert await asyncio.wait_for(child.wait(), 30) == 17, "the child should have died in the fault hook"

    # The broker has all five, the database still says unpublished: the crash window.
    assert len(await raw_messages(kafka_broker.bootstrap, config.default_topic, expect=5)) == 5
    assert await unpublished(database) == 5

    async with OutboxRelay(database, config):
        await wait_until(lambda: _none_unpublished(database), timeout=10)
    assert len(await raw_messages(kafka_broker.bootstrap, config.default_topic, expect=10)) == 10  # sent again

    received, consumer = await unique_events(kafka_broker.bootstrap, config.default_topic)
    assert sorted(e.event_id for e in received) == sorted(e.event_id for e in events)
    assert consumer.stats.duplicates == 5


async def _none_unpublished(db: Database) -> bool:
    return await unpublished(db) == 0


async def test_failing_round_in_process_leaves_rows_for_the_next_one(database, kafka_broker) -> None:
    async def crash(_: int) -> None:
        raise RuntimeError("crash after produce")

    config = relay_config(kafka_broker.bootstrap)
    await insert_results(database, 3)
    crashing = OutboxRelay(database, config, after_produce=crash)
    try:
        with pytest.raises(RuntimeError):
            await crashing.run_once()
    finally:
        await crashing.stop()
    assert await unpublished(database) == 3
    async with OutboxRelay(database, config) as relay:
        assert await drain(relay) == 3


async def test_broker_outage_relay_retries_backlog_grows_then_everything_arrives(database) -> None:
    broker = KafkaBroker()  # our own: stopping the session broker would disturb other tests
    broker.start()
    try:
        config = relay_config(broker.bootstrap)
        errors_before = sum(
            s.value
            for m in REGISTRY.collect()
            if m.name == "paygate_outbox_publish_errors"
            for s in m.samples
            if s.name.endswith("_total")
        )
        async with OutboxRelay(database, config) as relay:
            await insert_results(database, 5, first_flow_id=1)
            relay.notify()
            await wait_until(lambda: _none_unpublished(database), timeout=10)

            broker.stop()
            during = await insert_results(database, 20, first_flow_id=100)
            relay.notify()
            await asyncio.sleep(3.0)  # several failed rounds with backoff
            stats = await relay.sample_metrics()
            assert stats.backlog == 20, "nothing can be published while the broker is down"
            assert stats.oldest_age_s >= 2.5
            assert metric("paygate_outbox_backlog") == 20
            errors_now = sum(
                s.value
                for m in REGISTRY.collect()
                if m.name == "paygate_outbox_publish_errors"
                for s in m.samples
                if s.name.endswith("_total")
            )
            assert errors_now > errors_before
            more = await insert_results(database, 10, first_flow_id=200)
            assert (await relay.sample_metrics()).backlog == 30

            # tansu keeps its log in memory: the restarted broker is empty, and the
            # relay recreates the topic; every event written since the outage arrives.
            broker.start()
            await wait_until(lambda: _none_unpublished(database), timeout=30)
            after = await insert_results(database, 5, first_flow_id=300)
            relay.notify()
            await wait_until(lambda: _none_unpublished(database), timeout=10)
            await asyncio.sleep(0.3)
            assert (await relay.sample_metrics()).backlog == 0

        received, _ = await unique_events(broker.bootstrap, config.default_topic)
        assert {e.event_id for e in received} == {e.event_id for e in during + more + after}
    finally:
        broker.stop()


async def test_row_failing_for_its_own_reason_is_parked_not_retried_forever(database, kafka_broker) -> None:
    config = relay_config(kafka_broker.bootstrap, max_attempts=2)
    good = await insert_results(database, 2)
    broken = flow_result(new_ulid())
    await insert_event(database, broken, 99, payload=b"\xff\xff not protobuf")
    relay = OutboxRelay(database, config)
    try:
        with pytest.raises(PublishIncomplete) as failure:
            await relay.run_once()
        assert failure.value.published == 2 and not is_retriable(failure.value)
        with pytest.raises(PublishIncomplete):
            await relay.run_once()
        assert await relay.run_once() == 0  # parked: no longer claimed
        stats = await relay.sample_metrics()
    finally:
        await relay.stop()
    row = await database.fetchone(
        "SELECT attempts, last_error, published_at FROM outbox WHERE event_id=%s", (broken.event_id,)
    )
    assert row["attempts"] == 2 and row["published_at"] is None and "DecodeError" in row["last_error"]
    assert stats.backlog == 1  # still visible to the backlog alert
    received, _ = await unique_events(kafka_broker.bootstrap, config.default_topic)
    assert {e.event_id for e in received} == {e.event_id for e in good}


async def test_cleanup_deletes_only_published_rows_older_than_retention(database, kafka_broker) -> None:
    config = relay_config(kafka_broker.bootstrap, retention_s=3600, cleanup_batch_size=2)
    events = await insert_results(database, 9)
    ids = [e.event_id for e in events]
    old_published, recent_published, old_unpublished = ids[:5], ids[5:7], ids[7:]
    async with database.transaction() as tx:
        for event_id in old_published:
            await tx.execute(
                "UPDATE outbox SET published_at = UTC_TIMESTAMP(6) - INTERVAL 2 HOUR,"
                " created_at = UTC_TIMESTAMP(6) - INTERVAL 3 HOUR WHERE event_id=%s",
                (event_id,),
            )
        for event_id in recent_published:
            await tx.execute(
                "UPDATE outbox SET published_at = UTC_TIMESTAMP(6) - INTERVAL 50 MINUTE WHERE event_id=%s", (event_id,)
            )
        for event_id in old_unpublished:
            await tx.execute(
                "UPDATE outbox SET created_at = UTC_TIMESTAMP(6) - INTERVAL 5 HOUR WHERE event_id=%s", (event_id,)
            )
        await tx.commit()
    relay = OutboxRelay(database, config)
    assert await relay.cleanup() == 5
    assert await relay.cleanup() == 0
    left = {r["event_id"] for r in await database.fetchall("SELECT event_id FROM outbox")}
    assert left == set(recent_published + old_unpublished)
    stats = await relay.sample_metrics()
    assert stats.backlog == 2 and stats.oldest_age_s >= 5 * 3600 - 5


async def test_notify_wakes_the_relay_before_its_poll_interval(database, kafka_broker) -> None:
    config = relay_config(kafka_broker.bootstrap, poll_interval_s=30.0)
    await insert_results(database, 1)
    async with OutboxRelay(database, config) as relay:
        await wait_until(lambda: _none_unpublished(database), timeout=5)  # the first round runs at start
        await insert_results(database, 1, first_flow_id=2)
        started = time.monotonic()
        relay.notify()
        await wait_until(lambda: _none_unpublished(database), timeout=5)
        assert time.monotonic() - started < 2.0
        await relay.stop()
        await relay.stop()  # idempotent
