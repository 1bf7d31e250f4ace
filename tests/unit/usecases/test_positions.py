"""Position use cases over in-memory stores: a sync never undoes a settlement, never changes currency;
an adjustment never cuts below what payouts in flight reserved."""

from __future__ import annotations

import pytest

from gateway.errors import Conflict, PreconditionFailed
from gateway.positions import PositionService
from gateway.validation import PayoutParams
from tests.fakes import CALLER, FakeChannel, FakeGateway
from tests.fakes.channel import Hang, ok


@pytest.fixture
def gw() -> FakeGateway:
    return FakeGateway(FakeChannel("pay-a"))


def service(gw: FakeGateway) -> PositionService:
    return PositionService(gw.positions, gw.registry)


def payout(amount: int) -> PayoutParams:
    return PayoutParams(amount, "CNY", "6222000011112222", "张三", "ICBC", "")


async def test_a_payout_settling_during_the_balance_query_is_not_undone(gw: FakeGateway) -> None:
    gw.fund("pay-a", 100_000)
    gw.tables.positions["pay-a"].reserved = 30_000  # a payout in flight
    channel = gw.channels["pay-a"]
    answers = iter([100_000, 70_000])

    def settles_meanwhile() -> None:
        # the first balance query answers 100 000 (the payout not yet debited at the channel)
        # while, here, the payout settles: writing 100 000 would undo its 30 000
        channel.balance_available = next(answers)
        position = gw.tables.positions["pay-a"]
        if position.reserved:
            position.balance, position.reserved = position.balance - 30_000, 0
            position.balance_version += 1

    channel.before_balance = settles_meanwhile
    row = await service(gw).resync("pay-a", operator="ops", reason="daily sync")
    assert (row.balance, row.reserved) == (70_000, 0)  # asked again, after the settlement
    assert channel.kinds() == ["balance", "balance"]
    assert gw.tables.audit[-1][1:3] == ("resync_position", "pay-a")


async def test_a_sync_that_keeps_moving_gives_up_with_aborted(gw: FakeGateway) -> None:
    gw.fund("pay-a", 100_000)

    def always_moves() -> None:
        gw.tables.positions["pay-a"].balance_version += 1

    gw.channels["pay-a"].before_balance = always_moves
    with pytest.raises(Conflict, match="try again"):
        await service(gw).resync("pay-a", operator="ops", reason="sync")
    assert gw.tables.positions["pay-a"].balance == 100_000


async def test_a_sync_never_changes_the_currency(gw: FakeGateway) -> None:
    gw.fund("pay-a", 100_000)
    gw.channels["pay-a"].balance_currency = "USD"
    gw.channels["pay-a"].balance_available = 5_000
    with pytest.raises(PreconditionFailed, match=r"USD.*CNY"):
        await service(gw).resync("pay-a", operator="ops", reason="sync")
    position = gw.tables.positions["pay-a"]
    assert (position.currency, position.balance) == ("CNY", 100_000)


async def test_the_first_sync_creates_the_position(gw: FakeGateway) -> None:
    gw.channels["pay-a"].balance_available = 42_000
    await service(gw).sync_missing()
    assert (gw.tables.positions["pay-a"].currency, gw.tables.positions["pay-a"].balance) == ("CNY", 42_000)


async def test_an_adjustment_below_the_reserved_float_is_refused_naming_both_figures(gw: FakeGateway) -> None:
    gw.fund("pay-a", 100_000)
    gw.channels["pay-a"].answer(Hang(1.0, ok()))
    await gw.flows.payout(CALLER, "p-1", payout(60_000), wait_s=0)  # 60 000 reserved
    with pytest.raises(PreconditionFailed) as refused:
        await service(gw).adjust("pay-a", -50_000, operator="ops", reason="cut")
    assert "50000" in str(refused.value) and "60000" in str(refused.value)
    assert gw.tables.positions["pay-a"].balance == 100_000
    row = await service(gw).adjust("pay-a", -40_000, operator="ops", reason="cut")
    assert (row.balance, row.reserved) == (60_000, 60_000)
    raised = await service(gw).adjust("pay-a", 5_000, operator="ops", reason="top up")
    assert raised.balance == 65_000
    await gw.flows.drain(5.0)
    assert gw.tables.positions["pay-a"].balance >= 0  # every settlement fits: never negative


async def test_adjusting_a_channel_without_a_position_is_a_precondition(gw: FakeGateway) -> None:
    with pytest.raises(PreconditionFailed, match="resync it first"):
        await service(gw).adjust("pay-a", 5, operator="ops", reason="x")
