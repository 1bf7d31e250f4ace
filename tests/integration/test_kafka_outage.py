"""Issue 5: with the broker down the gateway keeps serving; the backlog drains when it returns."""

from __future__ import annotations

import asyncio

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from devstack.kafka import KafkaBroker
from gateway import metrics
from gateway.results import ResultConsumer
from gateway.store.db import DatabaseConfig
from paygate.v1 import events_pb2
from paygate.v1 import gateway_pb2 as pb
from tests.support.harness import running_gateway

TOPIC = "paygate.flow-results"


async def backlog(h) -> int:
    row = await h.gateway.db.fetchone("SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL")
    return int(row["n"])


async def test_broker_outage_never_fails_an_rpc(db_config: DatabaseConfig) -> None:
    broker = KafkaBroker()
    broker.start()
    kafka = {
        "bootstrap_servers": broker.bootstrap,
        "enable_idempotence": False,
        "request_timeout_ms": 1500,
        "create_topics": True,
        "topic_partitions": 1,
        "topic_replication_factor": 1,
    }
    try:
        async with running_gateway(db_config, {"bank-a": Behaviour()}, kafka=kafka) as h:
            card = luhn_card()
            await h.bind_card(card, ["bank-a"])
            broker.stop()
            flows = []
            for i in range(30):  # every RPC succeeds although Kafka is gone
                flows.append(
                    await h.stub.Withhold(
                        pb.WithholdRequest(
                            request_id=f"o-{i}",
                            amount=pb.Money(amount=1000 + i * 100, currency="CNY"),
                            account_no=card,
                            bank_code="ICBC",
                        ),
                        metadata=h.md(),
                    )
                )
                if i == 10:
                    await h.gateway.sample_metrics_once()
                    first = await backlog(h)
            assert all(f.status == pb.SUCCEEDED for f in flows)
            assert await backlog(h) == 30 and first >= 11, "the backlog grows while the broker is down"
            await h.gateway.sample_metrics_once()
            assert metrics.OUTBOX_BACKLOG._value.get() == 30
            broker.start()
            if h.gateway.relay is not None:
                await h.gateway.relay.ensure_topics()
                h.gateway.relay.notify()
            for _ in range(200):
                if await backlog(h) == 0:
                    break
                await asyncio.sleep(0.1)
            assert await backlog(h) == 0
            seen: dict[str, events_pb2.FlowEvent] = {}
            consumer = ResultConsumer(
                broker.bootstrap,
                [TOPIC],
                group_id="outage-check",
                from_beginning=True,
                idle_timeout_s=5.0,
                session_timeout_ms=1000,
                heartbeat_interval_ms=100,
            )
            async with consumer:
                async for event in consumer:
                    seen[event.flow_no] = event
                    if len(seen) == 30:
                        break
            assert set(seen) == {f.flow_no for f in flows}
            assert all(e.event_type == events_pb2.FLOW_RESULT and e.status == pb.SUCCEEDED for e in seen.values())
    finally:
        broker.stop()
