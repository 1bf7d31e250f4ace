from __future__ import annotations

import asyncio

import grpc
import pytest

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.store.db import DatabaseConfig
from paygate.v1 import gateway_pb2
from tests.support.harness import running_gateway


def withhold(request_id: str, card: str, amount: int, wait_ms: int = 0) -> gateway_pb2.WithholdRequest:
    return gateway_pb2.WithholdRequest(
        request_id=request_id,
        amount=gateway_pb2.Money(amount=amount, currency="CNY"),
        account_no=card,
        bank_code="ICBC",
        wait_ms=wait_ms,
    )


async def test_withhold_succeeds_and_replays(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour()}) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        flow = await h.stub.Withhold(withhold("r-1", card, 10000), metadata=h.md())
        assert flow.status == gateway_pb2.SUCCEEDED, flow
        assert flow.channel == "bank-a"
        assert card not in str(flow)
        again = await h.stub.Withhold(withhold("r-1", card, 10000), metadata=h.md())
        assert again.flow_no == flow.flow_no and again.replayed
        assert sum(h.debits().values()) == 1
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.stub.Withhold(withhold("r-1", card, 10001), metadata=h.md())
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert sum(h.debits().values()) == 1


async def test_decline_is_failed_flow(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour()}) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        flow = await h.stub.Withhold(withhold("r-2", card, 10001), metadata=h.md())
        assert flow.status == gateway_pb2.FAILED
        assert flow.failure.code == "INSUFFICIENT_FUNDS" and flow.failure.payer_attributable


async def test_concurrent_duplicates_make_one_flow(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour(p50_ms=20, p99_ms=60)}) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        flows = await asyncio.gather(
            *[h.stub.Withhold(withhold("dup-1", card, 5000), metadata=h.md()) for _ in range(50)]
        )
        assert len({f.flow_no for f in flows}) == 1
        assert sum(h.debits().values()) <= 1
        rows = await h.gateway.db.fetchall("SELECT COUNT(*) AS n FROM flows")
        assert rows[0]["n"] == 1
