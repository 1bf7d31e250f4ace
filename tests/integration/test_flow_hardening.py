"""Through gRPC on MariaDB: the deadline bounds the wait, per-card limits hold under a race, bank codes are known."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.businessday import BusinessCalendar
from gateway.store.db import DatabaseConfig
from paygate.v1 import gateway_pb2 as pb
from tests.support.harness import running_gateway

pytestmark = pytest.mark.integration


def withhold(request_id: str, card: str, *, amount: int = 1_000, bank: str = "ICBC", wait_ms: int = 0):  # type: ignore[no-untyped-def]
    return pb.WithholdRequest(
        request_id=request_id,
        amount=pb.Money(amount=amount, currency="CNY"),
        account_no=card,
        bank_code=bank,
        wait_ms=wait_ms,
    )


async def test_a_deadline_shorter_than_the_wait_budget_gets_the_flow_processing_in_time(
    db_config: DatabaseConfig,
) -> None:
    async with running_gateway(db_config, {"slow": Behaviour(p50_ms=1500, p99_ms=1800)}) as h:
        card = luhn_card()
        await h.bind_card(card, ["slow"])
        started = time.monotonic()
        flow = await h.stub.Withhold(withhold("dl-1", card, wait_ms=8000), metadata=h.md(), timeout=0.8)
        assert time.monotonic() - started < 0.8
        assert flow.status == pb.PROCESSING and flow.flow_no  # not DEADLINE_EXCEEDED: the caller has its flow
        for _ in range(100):
            flow = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())
            if flow.status != pb.PROCESSING:
                break
            await asyncio.sleep(0.1)
        assert flow.status == pb.SUCCEEDED and sorted(h.debits().values()) == [1]


async def test_concurrent_withholds_on_one_card_cannot_pass_its_daily_limit_together(
    db_config: DatabaseConfig,
) -> None:
    async with running_gateway(
        db_config, {"bank-a": Behaviour()}, channel_routing={"bank-a": {"per_card_daily_attempts": 2}}
    ) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        results = await asyncio.gather(
            *[h.stub.Withhold(withhold(f"lim-{i}", card), metadata=h.md()) for i in range(8)],
            return_exceptions=True,
        )
        passed = [r for r in results if isinstance(r, pb.Flow)]
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(passed) == 2 and all(f.status == pb.SUCCEEDED for f in passed)
        assert len(refused) == 6 and {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert sum(h.debits().values()) == 2
        [usage] = await h.gateway.db.fetchall("SELECT channel, day, attempts FROM card_usage")
        # counted in the lender's business day (Asia/Shanghai by default), not the UTC date
        assert (usage["channel"], usage["attempts"]) == ("bank-a", 2)
        assert usage["day"] == BusinessCalendar.named("Asia/Shanghai").today()


async def test_a_bank_code_must_be_one_the_gateway_serves(db_config: DatabaseConfig) -> None:
    async with running_gateway(
        db_config,
        {"bank-a": Behaviour()},
        channel_routing={"bank-a": {"banks": ["ICBC", "XYZB"]}},
        banks={"codes": ["ICBC"]},
    ) as h:
        card = luhn_card()
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await h.stub.Withhold(withhold("b-1", card, bank="CCB"), metadata=h.md())
        assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert unknown.value.details().startswith("bank_code:")
        # a bank the channel lists is served although [banks] does not name it: validation lets it through
        with pytest.raises(grpc.aio.AioRpcError) as known:
            await h.stub.Withhold(withhold("b-2", card, bank="XYZB"), metadata=h.md())
        assert known.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # no agreement yet
        assert (await h.gateway.db.fetchone("SELECT COUNT(*) AS n FROM flows"))["n"] == 0  # type: ignore[index]
