"""The interceptor logs and counts the real status of a withhold the caller abandoned, with its flow number."""

from __future__ import annotations

import asyncio
import logging

import pytest

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.metrics import REGISTRY
from gateway.store.db import DatabaseConfig
from paygate.v1 import gateway_pb2 as pb
from tests.support.harness import running_gateway


def _count(code: str) -> float:
    return REGISTRY.get_sample_value("paygate_grpc_server_requests_total", {"method": "Withhold", "code": code}) or 0


async def test_a_cancelled_withhold_is_logged_cancelled_with_its_flow(
    db_config: DatabaseConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="paygate.rpc")
    async with running_gateway(db_config, {"slow": Behaviour(p50_ms=1500, p99_ms=1800)}) as h:
        card = luhn_card()
        await h.bind_card(card, ["slow"])
        ok, cancelled = _count("OK"), _count("CANCELLED")
        request = pb.WithholdRequest(
            request_id="repay-20261201192500",
            amount=pb.Money(amount=1_000, currency="CNY"),
            account_no=card,
            bank_code="ICBC",
        )
        call = h.stub.Withhold(request, metadata=h.md())
        for _ in range(100):  # until the flow is recorded (the channel call then takes 1.5 s)
            await asyncio.sleep(0.05)
            row = await h.gateway.db.fetchone("SELECT flow_no FROM flows WHERE request_id=%s", (request.request_id,))
            if row is not None:
                break
        assert row is not None
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        for _ in range(100):
            lines = [r for r in caplog.records if r.name == "paygate.rpc" and getattr(r, "method", "") == "Withhold"]
            if lines:
                break
            await asyncio.sleep(0.05)
        (line,) = lines
        assert (line.code, line.flow_no, line.request_id) == ("CANCELLED", row["flow_no"], request.request_id)
        assert _count("CANCELLED") == cancelled + 1 and _count("OK") == ok
        # the flow goes on without its caller and ends with one debit
        flow = await h.stub.GetFlow(pb.GetFlowRequest(request_id=request.request_id), metadata=h.md())
        for _ in range(100):
            if flow.status != pb.PROCESSING:
                break
            await asyncio.sleep(0.1)
            flow = await h.stub.GetFlow(pb.GetFlowRequest(request_id=request.request_id), metadata=h.md())
        assert flow.status == pb.SUCCEEDED and flow.flow_no == row["flow_no"]
        assert sorted(h.debits().values()) == [1]
