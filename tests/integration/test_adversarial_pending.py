"""Adversarial probes: withholds whose result is not known yet.

A withhold that timed out after the channel took the money is never tried on another channel the card is
bound to; the poller resolves it with one debit and one result event. A channel that answers "not found"
for an order it has not seen (yet) does not make it FAILED before the not-found window; after it, the
order is closed at the channel first, and only the channel's word that it is closed fails it.
"""

from __future__ import annotations

import asyncio

import pytest

from channels.contract import Outcome, pending
from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.store.db import DatabaseConfig
from paygate.v1 import gateway_pb2 as pb
from tests.integration.test_adversarial_slow_bank import withhold
from tests.support.harness import Harness, running_gateway
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

POLLER = {"interval_s": 0.1, "first_delay_s": 0.2, "schedule": [[0.2, 40]]}


async def flow_of(h: Harness, flow_no: str) -> pb.Flow:
    return await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow_no), metadata=h.md())


async def results(h: Harness) -> int:
    row = await h.gateway.db.fetchone("SELECT COUNT(*) AS n FROM outbox WHERE event_type=%s", ("FLOW_RESULT",))
    assert row is not None
    return int(row["n"])


async def test_a_timed_out_withhold_is_never_tried_on_the_other_channel(db_config: DatabaseConfig) -> None:
    behaviours = {"late": Behaviour(timeout_hold_s=3.0), "other": Behaviour()}
    routing = {"exploration": 0}
    async with running_gateway(db_config, behaviours, routing=routing, poller=POLLER) as h:
        card = luhn_card()
        await h.bind_card(card, ["late", "other"])
        flows = await asyncio.gather(
            *[
                h.stub.Withhold(withhold(f"to-{i}", card, 1_007 + 100 * i, wait_ms=4000), metadata=h.md())
                for i in range(6)
            ]
        )
        late = [f for f in flows if f.attempts[0].channel == "late"]
        assert late, [f.attempts[0].channel for f in flows]
        for f in flows:
            assert len(f.attempts) == 1, f  # 07 on "late" is PENDING after sending: no failover
            assert f.status in (pb.PROCESSING, pb.SUCCEEDED), f

        async def settled() -> bool:
            got = [await flow_of(h, f.flow_no) for f in flows]
            return all(g.status == pb.SUCCEEDED for g in got)

        await eventually(settled, timeout_s=12, what="the poller resolves the timed-out withholds")
        assert sorted(h.debits().values()) == [1] * len(flows)
        rows = await h.gateway.db.fetchall("SELECT flow_id, COUNT(*) AS n FROM attempts GROUP BY flow_id")
        assert all(int(r["n"]) == 1 for r in rows)
        assert await results(h) == len(flows)


def lose_withholds(h: Harness, channel: str) -> list[str]:
    """The channel's withholds never arrive, but look sent (a lost connection after the headers)."""
    adapter = h.gateway.registry.get(channel)
    lost: list[str] = []

    async def never_arrives(order: object) -> Outcome:
        lost.append(getattr(order, "channel_order_no", ""))
        return pending("TIMEOUT", raw_message="connection lost after sending")

    adapter.withhold = never_arrives  # type: ignore[method-assign]
    return lost


@pytest.mark.parametrize("window_s", [120.0, 1.0])
async def test_not_found_is_no_failure_inside_the_window(db_config: DatabaseConfig, window_s: float) -> None:
    poller = {**POLLER, "not_found_close_after_s": window_s}
    async with running_gateway(db_config, {"only": Behaviour()}, poller=poller) as h:
        card = luhn_card()
        await h.bind_card(card, ["only"])
        lost = lose_withholds(h, "only")
        flow = await h.stub.Withhold(withhold("nf-1", card, 2_000), metadata=h.md())
        assert flow.status == pb.PROCESSING and lost
        if window_s > 10:
            await asyncio.sleep(2.5)  # about ten queries, each "not found"
            got = await flow_of(h, flow.flow_no)
            assert got.status == pb.PROCESSING, got
            assert got.attempts[0].status == pb.PENDING, got
            assert not h.sims["only"].ledger.is_closed(lost[0])
            assert await results(h) == 0
            return

        async def failed() -> bool:
            return (await flow_of(h, flow.flow_no)).status == pb.FAILED

        await eventually(failed, timeout_s=8, what="the order is closed after the window")
        assert h.sims["only"].ledger.is_closed(lost[0]), "failed without closing the order at the channel first"
        assert await results(h) == 1
