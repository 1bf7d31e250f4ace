"""Queries refused by the channel (outage, connection refused) never fail the earlier order."""

from __future__ import annotations

import asyncio

import pytest

from channels.contract import Operation, OrderRef, PayoutOrder
from channels.registry import ChannelSpec, factory_for
from channels.simkit import Behaviour, create_simulator
from devstack.cards import luhn_card
from gateway.store.db import DatabaseConfig
from paygate.v1 import gateway_pb2 as pb
from tests.support.harness import running_gateway


async def test_query_during_outage_does_not_fail_a_pending_order(db_config: DatabaseConfig) -> None:
    slow = Behaviour(settle_after_ms=(3000, 3001))
    async with running_gateway(
        db_config,
        {"bank-c": slow},
        poller={"interval_s": 0.1, "first_delay_s": 0.3, "schedule": [[0.3, 40]]},
    ) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-c"])
        flow = await h.stub.Withhold(
            pb.WithholdRequest(
                request_id="q-1",
                amount=pb.Money(amount=10005, currency="CNY"),
                account_no=card,
                bank_code="ICBC",
                wait_ms=500,
            ),
            metadata=h.md(),
        )
        assert flow.status == pb.PROCESSING
        h.sims["bank-c"].behaviour.update({"outage": True})
        await asyncio.sleep(1.5)  # a few polls hit the outage
        h.sims["bank-c"].behaviour.update({"outage": False})
        await asyncio.sleep(3.0)  # the bank settles the order: money moves
        debits = h.debits()
        final = await h.stub.GetFlow(pb.GetFlowRequest(request_id="q-1"), metadata=h.md())
        assert sum(debits.values()) == 1
        assert final.status != pb.FAILED, "flow FAILED although the bank debited the payer"


async def test_query_during_outage_with_two_banks(db_config: DatabaseConfig) -> None:
    slow = Behaviour(settle_after_ms=(3000, 3001))
    async with running_gateway(
        db_config,
        {"bank-c": slow, "bank-a": slow},
        poller={"interval_s": 0.1, "first_delay_s": 0.3, "schedule": [[0.3, 40]]},
    ) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-c", "bank-a"])
        flow = await h.stub.Withhold(
            pb.WithholdRequest(
                request_id="q-1",
                amount=pb.Money(amount=10005, currency="CNY"),
                account_no=card,
                bank_code="ICBC",
                wait_ms=500,
            ),
            metadata=h.md(),
        )
        assert flow.status == pb.PROCESSING
        first = flow.attempts[0].channel
        h.sims[first].behaviour.update({"outage": True})
        await asyncio.sleep(1.5)  # a few polls hit the outage
        h.sims[first].behaviour.update({"outage": False})
        await asyncio.sleep(3.0)  # the bank settles the order: money moves
        debits = h.debits()
        final = await h.stub.GetFlow(pb.GetFlowRequest(request_id="q-1"), metadata=h.md())
        assert sum(debits.values()) == 1
        assert final.status != pb.FAILED, "flow FAILED although the bank debited the payer"


async def test_a_query_answer_about_the_order_is_kept(db_config: DatabaseConfig) -> None:
    """The bank's own answer "that order failed: busy" is a definite result, not a refused query."""
    async with running_gateway(db_config, {"bank-c": Behaviour()}) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-c"])
        flow = await h.stub.Withhold(
            pb.WithholdRequest(
                request_id="q-busy", amount=pb.Money(amount=10003, currency="CNY"), account_no=card, bank_code="ICBC"
            ),
            metadata=h.md(),
        )
        assert flow.status == pb.FAILED and flow.failure.code == "CHANNEL_BUSY"
        attempt = await h.gateway.flows.store.attempt_by_order_no(flow.attempts[0].channel_order_no)
        assert attempt is not None
        answer = await h.gateway.flows.query(attempt)  # as if the sync answer had been lost
        assert answer.status.value == "FAILED" and answer.code == "CHANNEL_BUSY"
        h.sims["bank-c"].behaviour.update({"outage": True})
        refused = await h.gateway.flows.query(attempt)
        assert refused.status.value == "PENDING", refused


@pytest.mark.parametrize("adapter", ["alipay", "wechatpay"])
async def test_refused_queries_are_pending_for_every_protocol(adapter: str) -> None:
    sim = create_simulator(adapter, Behaviour(), key_size=2048)
    await sim.start()
    channel = factory_for(adapter)(ChannelSpec("ch", adapter, sim.adapter_settings()))
    await channel.start()
    try:
        order = PayoutOrder("01PAYOUTREFUSEDQUERY000001", 12_300, "CNY", "6222020200112233", "李四", "ICBC")
        paid = await channel.payout(order)
        assert paid.status.value == "SUCCEEDED", paid
        sim.behaviour.update({"outage": True})  # the channel refuses every request now
        ref = OrderRef(order.channel_order_no, Operation.PAYOUT, order.amount, "CNY")
        for answer in (await channel.query(ref), await channel.close_order(ref)):
            assert answer.status.value == "PENDING", answer
    finally:
        await channel.stop()
        await sim.stop()
