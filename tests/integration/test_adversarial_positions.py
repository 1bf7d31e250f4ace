"""Adversarial probes: a channel's float (头寸) under concurrent payouts of every fate.

Whatever mix of payouts arrives at once (declines, pending that succeed or fail, timeouts after the
money moved, failovers), the float reserved never exceeds the balance, the simulated merchant float is
never asked for more than it holds, each reservation is released or spent exactly once, and when every
payout has ended the position is the channel's balance with nothing reserved. Edges of int64 too.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from channels.simkit import Behaviour
from gateway.store.db import DatabaseConfig
from paygate.v1 import admin_pb2
from paygate.v1 import gateway_pb2 as pb
from tests.integration.test_routing_flows import payout
from tests.support.harness import Harness, running_gateway
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

INT64_MAX = 2**63 - 1


async def position(h: Harness, channel: str) -> tuple[int, int]:
    row = await h.gateway.db.fetchone("SELECT balance, reserved FROM positions WHERE channel=%s", (channel,))
    assert row is not None
    return int(row["balance"]), int(row["reserved"])


async def open_reservations(h: Harness, channel: str) -> int:
    row = await h.gateway.db.fetchone(
        "SELECT COALESCE(SUM(position_reserved), 0) AS n FROM attempts"
        " WHERE channel=%s AND status IN ('SENDING','PENDING')",
        (channel,),
    )
    assert row is not None
    return int(row["n"])


async def all_final(h: Harness) -> bool:
    row = await h.gateway.db.fetchone("SELECT COUNT(*) AS n FROM flows WHERE status='PROCESSING'")
    assert row is not None
    return int(row["n"]) == 0


def paid_out(h: Harness, channel: str) -> int:
    return sum(
        e.amount for e in h.sims[channel].ledger.entries() if e.kind.value == "payout" and e.status.value == "SUCCEEDED"
    )


async def gather_payouts(h: Harness, requests: list[pb.PayoutRequest]) -> list[Any]:
    return await asyncio.gather(*[h.stub.Payout(r, metadata=h.md()) for r in requests], return_exceptions=True)


async def test_a_mix_of_fates_beyond_the_float_never_overdraws_it(db_config: DatabaseConfig) -> None:
    """Pending-then-succeed (05), pending-then-fail (06), timeout after paying (07), 5xx after paying (08),
    declines (01, 03) and plain successes, 3x the float between them, on one channel."""
    behaviour = Behaviour(p50_ms=40, p99_ms=120, settle_after_ms=(300, 600), timeout_hold_s=3.0)
    start = 50_000
    async with running_gateway(db_config, {"only": behaviour}, floats={"only": start}) as h:
        fates = [0, 5, 6, 7, 8, 1, 3, 0, 5, 6]
        requests = [payout(f"mix-{i}", 5_000 + i * 100 + fates[i % len(fates)], wait_ms=500) for i in range(30)]
        sampled: list[tuple[int, int]] = []
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                sampled.append(await position(h, "only"))
                assert h.sims["only"].ledger.merchant_balance >= 0
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        try:
            results = await gather_payouts(h, requests)
            await eventually(lambda: all_final(h), timeout_s=15, what="every payout final")
        finally:
            stop.set()
            await sampler
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert all(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for e in refused), [e.details() for e in refused]
        assert refused, "3x the float cannot all have been taken"
        assert all(reserved <= balance for balance, reserved in sampled), [s for s in sampled if s[1] > s[0]]
        assert all(reserved >= 0 for _, reserved in sampled)
        paid = paid_out(h, "only")
        assert await position(h, "only") == (start - paid, 0)
        assert h.sims["only"].ledger.merchant_balance == start - paid
        assert await open_reservations(h, "only") == 0
        rows = await h.gateway.db.fetchall("SELECT status, SUM(amount) AS s FROM flows GROUP BY status")
        assert {r["status"]: int(r["s"]) for r in rows}.get("SUCCEEDED", 0) == paid


async def test_a_failover_moves_the_reservation_and_never_double_reserves(db_config: DatabaseConfig) -> None:
    """A payout declined "busy" (safe elsewhere) on one channel releases its float there and takes it on the next."""
    behaviours = {"busy": Behaviour(declines={"channel_busy": 1.0}, magic=False), "fine": Behaviour(magic=False)}
    floats = {"busy": 20_000, "fine": 20_000}
    routing = {"elimination_consecutive": 1000, "exploration": 0}
    async with running_gateway(db_config, behaviours, floats=floats, routing=routing) as h:
        results = await gather_payouts(h, [payout(f"fo-{i}", 3_000, wait_ms=3000) for i in range(12)])
        flows = [r for r in results if isinstance(r, pb.Flow)]
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert all(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for e in refused), [e.details() for e in refused]
        assert all(f.status in (pb.SUCCEEDED, pb.FAILED) for f in flows), flows
        assert await position(h, "busy") == (20_000, 0)
        assert await position(h, "fine") == (20_000 - paid_out(h, "fine"), 0)
        assert paid_out(h, "fine") == 3_000 * sum(1 for f in flows if f.status == pb.SUCCEEDED)
        assert paid_out(h, "fine") <= 20_000


async def test_a_pending_payout_holds_its_float_against_others_until_final(db_config: DatabaseConfig) -> None:
    """While a payout is pending, the float it reserved is not lent to another; when it fails, it is freed once."""
    behaviour = Behaviour(settle_after_ms=(1500, 1600))
    async with running_gateway(db_config, {"only": behaviour}, floats={"only": 10_000}) as h:
        first = await h.stub.Payout(payout("hold-1", 8_006), metadata=h.md())  # 06: pending, then fails
        assert first.status == pb.PROCESSING
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.stub.Payout(payout("hold-2", 5_000), metadata=h.md())
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await position(h, "only") == (10_000, 8_006)

        async def failed() -> bool:
            got = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=first.flow_no), metadata=h.md())
            return got.status == pb.FAILED

        await eventually(failed, timeout_s=10, what="the pending payout fails")
        # a late callback and the poll both reported the failure: the float came back once
        assert await position(h, "only") == (10_000, 0)
        second = await h.stub.Payout(payout("hold-3", 10_000), metadata=h.md())
        assert second.status == pb.SUCCEEDED
        assert await position(h, "only") == (0, 0)


async def test_adjusting_a_float_near_int64_is_refused_naming_delta(db_config: DatabaseConfig) -> None:
    """A float near the top of int64 plus an allowed delta would not fit a BIGINT: refused, not INTERNAL."""
    async with running_gateway(db_config, {"only": Behaviour()}, floats={"only": INT64_MAX - 10}) as h:
        assert h.admin is not None
        assert await position(h, "only") == (INT64_MAX - 10, 0)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.admin.AdjustPosition(
                admin_pb2.AdjustPositionRequest(channel="only", delta=10**15, reason="top up"), metadata=h.op_md
            )
        assert err.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
        assert "delta" in err.value.details(), err.value.details()
        assert await position(h, "only") == (INT64_MAX - 10, 0)
        flow = await h.stub.Payout(payout("big", 10**15), metadata=h.md())
        assert flow.status == pb.SUCCEEDED
        assert await position(h, "only") == (INT64_MAX - 10 - 10**15, 0)


@pytest.mark.parametrize("resolved_as", [pb.SUCCEEDED, pb.FAILED])
async def test_operators_and_the_poller_ending_one_pending_payout_settle_its_float_once(
    db_config: DatabaseConfig, resolved_as: int
) -> None:
    """Resolutions and a poll answer racing for one pending payout: the reservation is spent or freed once."""
    behaviour = Behaviour(magic=False, pending_ratio=1.0, settle_after_ms=(60_000, 60_001))
    poller = {"interval_s": 0.05, "first_delay_s": 0.0, "schedule": [[0.05, 100]]}
    async with running_gateway(db_config, {"only": behaviour}, floats={"only": 10_000}, poller=poller) as h:
        assert h.admin is not None
        flow = await h.stub.Payout(payout("rp-1", 4_000), metadata=h.md())
        assert flow.status == pb.PROCESSING and await position(h, "only") == (10_000, 4_000)
        order_no = flow.attempts[0].channel_order_no
        ledger = h.sims["only"].ledger
        requests = [
            admin_pb2.ResolveFlowRequest(flow_no=flow.flow_no, status=resolved_as, reason=f"statement {i}")
            for i in range(6)
        ]
        resolving = asyncio.gather(
            *(h.admin.ResolveFlow(r, metadata=h.op_md) for r in requests), return_exceptions=True
        )
        ledger.execute(order_no)  # meanwhile the bank pays it: the poller's next query says SUCCEEDED
        results = await resolving
        assert any(isinstance(r, pb.Flow) for r in results), results

        async def final() -> bool:
            return (await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())).status in (
                pb.SUCCEEDED,
                pb.FAILED,
            )

        await eventually(final, timeout_s=5, what="the payout ended")
        await asyncio.sleep(0.5)  # polls still racing, if any
        got = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())
        balance, reserved = await position(h, "only")
        assert reserved == 0 and await open_reservations(h, "only") == 0
        if got.status == pb.SUCCEEDED:
            assert balance == 10_000 - 4_000
        else:  # an operator said FAILED first; the bank's payment is reconciliation's to find (and a resync's)
            assert balance == 10_000
        events = await h.gateway.db.fetchall("SELECT id FROM outbox WHERE event_type='FLOW_RESULT'")
        assert len(events) == 1


async def test_a_balance_beyond_int64_from_the_channel_is_refused_naming_the_channel(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"only": Behaviour()}, floats={"only": INT64_MAX + 1}) as h:
        assert h.admin is not None
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.admin.ResyncPosition(
                admin_pb2.ResyncPositionRequest(channel="only", reason="daily"), metadata=h.op_md
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, (err.value.code(), err.value.details())
        assert "channel" in err.value.details()
        assert await h.gateway.db.fetchall("SELECT channel FROM positions") == []
