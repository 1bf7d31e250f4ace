"""Issue 6 acceptance: real Prometheus scrapes a gateway under demo traffic; rules and dashboard queries have data."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import grpc

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from devstack.kafka import KafkaBroker
from devstack.prometheus import start_prometheus
from gateway import metrics
from gateway.obs.dashboard import DEFAULT_DASHBOARD, check_queries, dashboard_queries
from gateway.store.db import DatabaseConfig
from paygate.v1 import admin_pb2
from paygate.v1 import gateway_pb2 as pb
from tests.support.harness import running_gateway

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "paygate.rules.yml"


COUNTER = itertools.count()


async def demo_traffic(h, rounds: int) -> None:
    card = luhn_card()
    await h.bind_card(card, ["steady", "busy"])
    for _ in range(rounds):
        for amount in (10_000, 20_000, 30_000, 10_001, 10_005):  # success, success, success, payer decline, pending
            n = next(COUNTER)
            request = pb.WithholdRequest(
                request_id=f"t-{n}", amount=pb.Money(amount=amount, currency="CNY"), account_no=card, bank_code="ICBC"
            )
            await h.stub.Withhold(request, metadata=h.md())
            if amount == 20_000:  # the lending system retries: an idempotent replay
                await h.stub.Withhold(request, metadata=h.md())
        n = next(COUNTER)
        await h.stub.Payout(
            pb.PayoutRequest(
                request_id=f"p-{n}",
                amount=pb.Money(amount=5_000, currency="CNY"),
                account_no="6222020200112233",
                account_name="李四",
                bank_code="ICBC",
            ),
            metadata=h.md(),
        )
        try:  # more than any float: no channel qualifies
            await h.stub.Payout(
                pb.PayoutRequest(
                    request_id=f"big-{n}",
                    amount=pb.Money(amount=10**12, currency="CNY"),
                    account_no="6222020200112233",
                    account_name="李四",
                    bank_code="ICBC",
                ),
                metadata=h.md(),
            )
        except grpc.aio.AioRpcError:
            pass


async def test_rules_and_every_dashboard_query_have_data(db_config: DatabaseConfig) -> None:
    broker = KafkaBroker()  # our own: this test stops it to produce real publish errors
    broker.start()
    try:
        await _run(db_config, broker)
    finally:
        broker.stop()


async def _run(db_config: DatabaseConfig, kafka_broker: KafkaBroker) -> None:
    behaviours = {
        "steady": Behaviour(p50_ms=5, p99_ms=20, settle_after_ms=(100, 200)),
        "busy": Behaviour(declines={"channel_busy": 0.5}, settle_after_ms=(100, 200)),
    }
    kafka = {"bootstrap_servers": kafka_broker.bootstrap, "enable_idempotence": False, "request_timeout_ms": 1500}
    async with running_gateway(db_config, behaviours, kafka=kafka, floats={"steady": 10**9, "busy": 10**9}) as h:
        target = f"127.0.0.1:{h.gateway.metrics_port}"
        prom = await asyncio.to_thread(start_prometheus, [target], [RULES])
        try:
            await demo_traffic(h, 3)
            # the broker goes away for a moment: the relay's publish errors are real
            kafka_broker.stop()
            await demo_traffic(h, 1)
            for _ in range(40):  # until the relay has counted a failed publish
                await asyncio.sleep(0.25)
                errors = [
                    s
                    for m in metrics.REGISTRY.collect()
                    if m.name == "paygate_outbox_publish_errors"
                    for s in m.samples
                ]
                if any(s.value > 0 for s in errors if s.name.endswith("_total")):  # declared at 0 from the start
                    break
            kafka_broker.start()
            await demo_traffic(h, 1)
            assert h.admin is not None
            await h.admin.ListChannels(admin_pb2.ListChannelsRequest(), metadata=h.op_md)
            await h.gateway.sample_metrics_once()
            deadline = time.monotonic() + 60
            queries = dashboard_queries(DEFAULT_DASHBOARD)
            assert len(queries) >= 20
            while True:
                await demo_traffic(h, 1)
                await h.gateway.sample_metrics_once()
                ratios = await asyncio.to_thread(prom.query, "paygate:channel_success_ratio:rate5m")
                results = await asyncio.to_thread(check_queries, prom.url, queries)
                missing = [r for r in results if not r.ok]
                channels = {r["metric"].get("channel") for r in ratios if r["metric"].get("operation") == "withhold"}
                if (not missing and {"steady", "busy"} <= channels) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1.0)
            assert {"steady", "busy"} <= channels, ratios
            assert not missing, "\n".join(f"{r.panel}: {r.expr} -> {r.error or 'no data'}" for r in missing)
        finally:
            await asyncio.to_thread(prom.stop)
