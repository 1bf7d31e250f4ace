"""The gateway as a process: reflection with grpcurl, health, graceful SIGTERM shutdown."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from channels.sandbox.simulator import SandboxSimulator
from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.store.db import Database, migrate
from paygate.v1 import gateway_pb2 as pb
from paygate.v1 import gateway_pb2_grpc
from tests.e2e.test_crash_recovery import MD, bind
from tests.support.harness import CALLER_TOKENS
from tests.support.processes import GatewayProcess
from tests.support.services import drop_db, new_db_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def slow_gateway(tmp_path_factory: pytest.TempPathFactory):
    """One gateway process for the module: the reflection test only reads it, the SIGTERM test (last) stops it."""
    db_config = new_db_config()
    await migrate(db_config)
    sim = SandboxSimulator(Behaviour(p50_ms=700, p99_ms=900), name="bank-a", secret="bank-a-secret")
    await sim.start()
    gw = GatewayProcess(
        tmp_path_factory.mktemp("gateway"),
        db_config,
        [{"id": "bank-a", "adapter": "sandbox", "settings": sim.adapter_settings()}],
    )
    db = Database(db_config)
    await db.start()
    try:
        await gw.start_async()
        yield gw, sim, db
    finally:
        gw.kill()
        await db.stop()
        await sim.stop()
        drop_db(db_config)


async def test_grpcurl_lists_and_calls_through_reflection(slow_gateway) -> None:
    gw, _sim, _db = slow_gateway
    listed = subprocess.run([GRPCURL, "-plaintext", gw.address, "list"], capture_output=True, text=True, timeout=20)
    assert listed.returncode == 0, listed.stderr
    assert "paygate.v1.PaymentGateway" in listed.stdout and "paygate.v1.GatewayAdmin" in listed.stdout
    assert "grpc.health.v1.Health" in listed.stdout
    called = subprocess.run(
        [
            GRPCURL,
            "-plaintext",
            "-H",
            f"authorization: Bearer {CALLER_TOKENS['loans']}",
            "-d",
            json.dumps({"request_id": "nope"}),
            gw.address,
            "paygate.v1.PaymentGateway/GetFlow",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert "NotFound" in called.stderr and "request_id" in called.stderr, called.stderr
    unauth = subprocess.run(
        [GRPCURL, "-plaintext", "-d", "{}", gw.address, "paygate.v1.PaymentGateway/GetFlow"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert "Unauthenticated" in unauth.stderr


async def test_sigterm_drains_in_flight_calls(slow_gateway) -> None:
    gw, sim, db = slow_gateway
    card = luhn_card()
    async with grpc.aio.insecure_channel(gw.address) as channel:
        stub = gateway_pb2_grpc.PaymentGatewayStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING
        await bind(stub, {"bank-a": sim}, db, card)
        call = asyncio.ensure_future(
            stub.Withhold(
                pb.WithholdRequest(
                    request_id="drain-1",
                    amount=pb.Money(amount=5000, currency="CNY"),
                    account_no=card,
                    bank_code="ICBC",
                    wait_ms=10_000,
                ),
                metadata=MD,
            )
        )
        await asyncio.sleep(0.2)
        assert gw.proc is not None
        gw.proc.send_signal(15)
        flow = await call
        assert flow.status == pb.SUCCEEDED, "an in-flight call finishes within the grace period"
    code = await asyncio.to_thread(gw.proc.wait, 20)
    assert code == 0
    assert sum(sim.ledger.debits_by_order().values()) == 1
    log = gw.log_path.read_text()
    assert "paygate stopped" in log
    assert card not in log
