"""`paygate results tail` and ResultConsumer against a real Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from gateway import results
from gateway.domain import new_ulid
from gateway.outbox import codec
from paygate.v1 import events_pb2, gateway_pb2

pytestmark = pytest.mark.integration


def event(amount: int) -> events_pb2.FlowEvent:
    return events_pb2.FlowEvent(
        event_id=new_ulid(),
        event_type=events_pb2.FLOW_RESULT,
        caller="loans",
        request_id=f"r-{amount}",
        flow_no=new_ulid(),
        kind=gateway_pb2.PAYOUT,
        status=gateway_pb2.SUCCEEDED,
        amount=gateway_pb2.Money(amount=amount, currency="CNY"),
        channel="sandbox",
    )


@pytest.fixture
async def topic_with_events(kafka_broker) -> tuple[str, list[events_pb2.FlowEvent]]:
    """One partition holding: e1, e1 again (a relay re-send), e2, garbage, e3 as JSON."""
    topic = f"test.tail.{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    e1, e2, e3 = event(100), event(250), event(99_999)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    await producer.start()
    try:
        for item, encoding in ((e1, "protobuf"), (e1, "protobuf"), (e2, "protobuf"), (None, "protobuf"), (e3, "json")):
            if item is None:
                await producer.send_and_wait(
                    topic, b"\x00garbage", headers=[("content-type", b"application/x-protobuf")]
                )
                continue
            value, content_type = codec.encode(item, encoding)
            await producer.send_and_wait(
                topic, value, key=item.flow_no.encode(), headers=codec.headers_for(item, content_type)
            )
    finally:
        await producer.stop()
    return topic, [e1, e2, e3]


async def tail(capsys, *argv: str) -> tuple[int, list[str], str]:
    code = await asyncio.to_thread(results.main, list(argv))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


async def test_tail_prints_each_unique_event_once(kafka_broker, topic_with_events, capsys) -> None:
    topic, (e1, e2, e3) = topic_with_events
    code, lines, err = await tail(
        capsys, "--bootstrap", kafka_broker.bootstrap, "--topic", topic, "--from-beginning", "--idle-timeout", "1.5"
    )
    assert code == 0
    assert [line.split("event=")[-1] for line in lines] == [e1.event_id, e2.event_id, e3.event_id]
    assert "FLOW_RESULT PAYOUT SUCCEEDED" in lines[0] and "amount=1.00 CNY" in lines[0]
    assert "amount=999.99 CNY" in lines[2]  # decoded from JSON by its content-type header
    assert "3 events, 1 duplicates dropped, 1 undecodable" in err


async def test_tail_json_output_and_max_messages(kafka_broker, topic_with_events, capsys) -> None:
    topic, (e1, e2, _) = topic_with_events
    code, lines, _ = await tail(
        capsys, "--bootstrap", kafka_broker.bootstrap, "--topic", topic, "--from-beginning",
        "--json", "--max-messages", "2", "--idle-timeout", "5",
    )  # fmt: skip
    assert code == 0
    assert [json.loads(line)["event_id"] for line in lines] == [e1.event_id, e2.event_id]
    assert json.loads(lines[0])["amount"] == {"amount": "100", "currency": "CNY"}


def group_consumer(bootstrap: str, topic: str, group: str) -> results.ResultConsumer:
    # tansu answers JoinGroup after half the session timeout: keep it short in tests.
    return results.ResultConsumer(
        bootstrap,
        [topic],
        group_id=group,
        from_beginning=True,
        idle_timeout_s=5,
        session_timeout_ms=1000,
        heartbeat_interval_ms=100,
    )


async def test_group_offsets_are_committed_after_processing(kafka_broker, topic_with_events) -> None:
    topic, (e1, e2, e3) = topic_with_events
    group = f"g-{uuid.uuid4().hex[:8]}"
    seen = []
    async with group_consumer(kafka_broker.bootstrap, topic, group) as first:
        async for item in first:
            seen.append(item.event_id)
            if len(seen) == 2:
                break  # leaving normally: both events count as processed
    assert seen == [e1.event_id, e2.event_id]
    assert first.stats.duplicates == 1
    async with group_consumer(kafka_broker.bootstrap, topic, group) as second:
        async for item in second:
            assert item.event_id == e3.event_id  # resumed after what was processed
            break
    assert second.stats.undecodable == 1


async def test_consumer_does_not_commit_an_event_whose_processing_failed(kafka_broker, topic_with_events) -> None:
    topic, (_, e2, _) = topic_with_events
    group = f"g-{uuid.uuid4().hex[:8]}"
    with pytest.raises(RuntimeError):
        async with group_consumer(kafka_broker.bootstrap, topic, group) as first:
            async for item in first:
                if item.event_id == e2.event_id:
                    raise RuntimeError("could not apply the result")
    async with group_consumer(kafka_broker.bootstrap, topic, group) as second:
        async for item in second:
            assert item.event_id == e2.event_id  # handed out again: it was never committed
            break


def test_bad_arguments_exit_with_2() -> None:
    assert results.main(["--max-messages", "0"]) == 2
