"""Paced channels: a replica's plan withholds leave a rate-limited channel 1/rate apart; nothing else waits."""

from __future__ import annotations

import asyncio
from datetime import datetime

from channels.contract import Channel, Operation, WithholdOrder
from channels.registry import ChannelRegistry
from gateway.plans.pacing import PacedChannel, SendPacer, paced_registry
from tests.fakes.channel import FakeChannel
from tests.fakes.clock import FakeClock

T0 = datetime(2026, 12, 1, 4, 0)


def order(n: int) -> WithholdOrder:
    return WithholdOrder(
        channel_order_no=f"O{n}",
        amount=100,
        currency="CNY",
        agreement_ref="a",
        account_no="6222020200112233445",
        bank_code="ICBC",
    )


async def test_withholds_leave_one_every_interval_and_other_calls_pass() -> None:
    clock = FakeClock(T0)
    inner = FakeChannel("bank-a")
    registry = paced_registry(
        ChannelRegistry({"bank-a": inner, "bank-b": FakeChannel("bank-b")}),
        SendPacer({"bank-a": 10.0}, clock, slack_s=0.0),
    )
    paced = registry.get("bank-a")
    assert isinstance(paced, PacedChannel) and isinstance(paced, Channel)
    assert not isinstance(registry.get("bank-b"), PacedChannel)  # no limit: not wrapped
    assert paced.operations == inner.operations and Operation.WITHHOLD in paced.operations
    sent: list[datetime] = []

    async def send(n: int) -> None:
        await paced.withhold(order(n))
        sent.append(clock.now())

    tasks = [asyncio.create_task(send(n)) for n in range(4)]
    for _ in range(10):
        for _ in range(5):
            await asyncio.sleep(0)
        clock.advance(0.05)
    await asyncio.gather(*tasks)
    assert [round((t - T0).total_seconds(), 2) for t in sent] == [0.0, 0.1, 0.2, 0.3]
