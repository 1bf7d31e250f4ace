"""The channel contract, checked against every adapter that has a simulator.

Parametrized over ``channels.simkit.SIMULATORS``: each case starts the
simulator on 127.0.0.1, builds the adapter through the registry from
``simulator.adapter_settings()``, signs an agreement, and drives the contract
with simkit's magic amounts (``amount % 100``). A callback receiver (an
aiohttp server calling ``parse_callback``/``callback_reply``) collects the
simulator's notifies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from channels.contract import (
    CallbackRejected,
    Channel,
    Operation,
    OrderRef,
    OutcomeStatus,
    PayoutOrder,
    RefundOrder,
    SignRequest,
    WithholdOrder,
)
from channels.registry import ChannelSpec, factory_for
from channels.simkit import SIMULATORS, Behaviour, SimulatorHandle, create_simulator
from tests.conformance.receiver import Receiver, start_receiver

CARD = "6222020000001234"


@dataclass
class Rig:
    name: str
    sim: SimulatorHandle
    channel: Channel
    receiver: Receiver
    agreement_ref: str = ""

    def withhold(self, order_no: str, amount: int) -> WithholdOrder:
        return WithholdOrder(order_no, amount, "CNY", self.agreement_ref, CARD, "ICBC", description="repayment")


@pytest.fixture(params=sorted(SIMULATORS))
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    receiver, server, notify_url = await start_receiver()
    sim = create_simulator(
        request.param, Behaviour(timeout_hold_s=2.0, settle_after_ms=(50, 150)), notify_url=notify_url
    )
    await sim.start()
    settings: dict[str, Any] = {**sim.adapter_settings(), "timeout_s": 0.8, "connect_timeout_s": 0.3}
    channel = factory_for(request.param)(ChannelSpec(f"{request.param}-conf", request.param, settings))
    receiver.channel = channel
    await channel.start()
    rig = Rig(request.param, sim, channel, receiver)
    started = await channel.sign_agreement(
        SignRequest("SIGN1", CARD, "Zhang San", "110101199001011234", "13800000000", "ICBC")
    )
    rig.agreement_ref = (
        await channel.confirm_agreement(started.sign_ref, sim.sms_code(started.sign_ref))
    ).agreement_ref
    try:
        yield rig
    finally:
        await channel.stop()
        await sim.stop()
        await server.stop()


async def test_the_sms_of_a_signing_is_read_by_the_phone_number(rig: Rig) -> None:
    """Tests and demos play the borrower: they read the code by the phone it went to, not by a channel reference."""
    started = await rig.channel.sign_agreement(
        SignRequest("SIGN2", CARD, "Li Si", "110101199001011234", "13900000001", "ICBC")
    )
    sms = rig.sim.last_sms("13900000001")
    assert sms.phone == "13900000001" and sms.code == rig.sim.sms_code(started.sign_ref)
    assert (await rig.channel.confirm_agreement(started.sign_ref, sms.code)).agreement_ref
    status, body = await _admin_get(rig.sim.base_url, "/_admin/sms?phone=13900000001")
    assert status == 200 and body["sms_code"] == sms.code
    assert (await _admin_get(rig.sim.base_url, "/_admin/sms?phone=13700000000"))[0] == 404


async def _admin_get(base_url: str, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(base_url + path) as response:
        return response.status, await response.json()


async def test_capabilities_declared(rig: Rig) -> None:
    assert isinstance(rig.channel, Channel)
    assert rig.channel.channel_id == f"{rig.name}-conf"
    assert {Operation.WITHHOLD, Operation.PAYOUT, Operation.REFUND} <= rig.channel.operations
    assert "CNY" in rig.channel.currencies
    assert "PRIVATE KEY" not in repr(rig.channel)


@pytest.mark.parametrize(
    ("amount", "status", "payer", "safe"),
    [
        (10_000, OutcomeStatus.SUCCEEDED, False, False),
        (10_001, OutcomeStatus.FAILED, True, False),  # insufficient funds
        (10_002, OutcomeStatus.FAILED, True, False),  # frozen
        (10_003, OutcomeStatus.FAILED, False, True),  # busy: safe elsewhere
        (10_005, OutcomeStatus.PENDING, False, False),  # processing
        (10_009, OutcomeStatus.PENDING, False, False),  # unmapped code
    ],
)
async def test_withhold_outcome_kinds(rig: Rig, amount: int, status: OutcomeStatus, payer: bool, safe: bool) -> None:
    outcome = await rig.channel.withhold(rig.withhold(f"W{amount}", amount))
    assert (outcome.status, outcome.payer_attributable, outcome.safe_elsewhere) == (status, payer, safe)
    if amount == 10_009:
        assert outcome.unmapped
    moved = rig.sim.ledger.debit_count(f"W{amount}")
    assert moved == (1 if status is OutcomeStatus.SUCCEEDED else 0) or amount in (10_005, 10_009)


async def test_timeout_is_pending_and_query_resolves_without_second_debit(rig: Rig) -> None:
    order = rig.withhold("WTIMEOUT", 20_007)
    outcome = await rig.channel.withhold(order)
    assert outcome.status is OutcomeStatus.PENDING
    assert outcome.code == "TIMEOUT"
    resolved = await rig.channel.query(OrderRef("WTIMEOUT", Operation.WITHHOLD, 20_007, "CNY"))
    assert resolved.status is OutcomeStatus.SUCCEEDED
    assert resolved.amount in (None, 20_007)
    retried = await rig.channel.withhold(order)  # the same channel_order_no again
    assert retried.status is not OutcomeStatus.FAILED or not retried.safe_elsewhere
    assert rig.sim.ledger.debit_count("WTIMEOUT") == 1


async def test_repeated_order_number_never_debits_twice(rig: Rig) -> None:
    first = await rig.channel.withhold(rig.withhold("WDUP", 30_000))
    second = await rig.channel.withhold(rig.withhold("WDUP", 30_000))
    assert first.status is OutcomeStatus.SUCCEEDED
    assert second.status is OutcomeStatus.SUCCEEDED
    assert rig.sim.ledger.debit_count("WDUP") == 1
    assert max(rig.sim.ledger.debits_by_order().values()) == 1


async def test_pending_settles_by_callback_and_by_query(rig: Rig) -> None:
    outcome = await rig.channel.withhold(rig.withhold("WPEND", 40_005))
    assert outcome.status is OutcomeStatus.PENDING
    notice = await rig.receiver.notice_for("WPEND")
    assert notice.operation is Operation.WITHHOLD
    assert notice.outcome.status is OutcomeStatus.SUCCEEDED
    assert notice.amount == 40_005
    queried = await rig.channel.query(OrderRef("WPEND", Operation.WITHHOLD, 40_005, "CNY"))
    assert queried.status is OutcomeStatus.SUCCEEDED


async def test_pending_then_fail_is_a_definite_failure(rig: Rig) -> None:
    await rig.channel.withhold(rig.withhold("WPFAIL", 40_006))
    notice = await rig.receiver.notice_for("WPFAIL")
    assert notice.outcome.status is OutcomeStatus.FAILED
    assert not notice.outcome.safe_elsewhere
    assert rig.sim.ledger.debit_count("WPFAIL") == 0


async def test_close_unknown_order_blocks_a_late_copy(rig: Rig) -> None:
    ref = OrderRef("WGHOST", Operation.WITHHOLD, 50_000, "CNY")
    closed = await rig.channel.close_order(ref)
    assert closed.status is OutcomeStatus.FAILED
    assert closed.code == "ORDER_CLOSED"
    late = await rig.channel.withhold(rig.withhold("WGHOST", 50_000))
    assert late.status is not OutcomeStatus.SUCCEEDED
    assert rig.sim.ledger.debit_count("WGHOST") == 0


async def test_query_unknown_order_is_pending_not_found(rig: Rig) -> None:
    outcome = await rig.channel.query(OrderRef("WNEVER", Operation.WITHHOLD, 100, "CNY"))
    assert outcome.status is OutcomeStatus.PENDING
    assert outcome.not_found


async def test_callbacks_verify_and_tampering_is_rejected(rig: Rig) -> None:
    await rig.channel.withhold(rig.withhold("WCB", 60_005))
    await rig.receiver.notice_for("WCB")
    headers, body = rig.receiver.raw[-1]
    assert rig.channel.parse_callback(headers, body).channel_order_no == "WCB"
    middle = len(body) // 2
    tampered = body[:middle] + bytes([body[middle] ^ 0x01]) + body[middle + 1 :]
    with pytest.raises(CallbackRejected):
        rig.channel.parse_callback(headers, tampered)
    with pytest.raises(CallbackRejected):
        rig.channel.parse_callback(headers, body[:-3])


async def test_callback_replies(rig: Rig) -> None:
    yes, no = rig.channel.callback_reply(True), rig.channel.callback_reply(False)
    assert yes.status in (200, 204)
    assert (yes.status, yes.body) != (no.status, no.body)


async def test_balance_is_the_merchant_float(rig: Rig) -> None:
    balance = await rig.channel.balance()
    assert balance.currency == "CNY"
    assert balance.available == rig.sim.ledger.merchant_balance


async def test_payout_and_refund(rig: Rig) -> None:
    paid = await rig.channel.payout(PayoutOrder("P1", 70_000, "CNY", "6222020000005678", "Li Si", "ICBC"))
    assert paid.status is OutcomeStatus.SUCCEEDED
    assert (await rig.channel.query(OrderRef("P1", Operation.PAYOUT, 70_000, "CNY"))).status is OutcomeStatus.SUCCEEDED
    taken = await rig.channel.withhold(rig.withhold("WREF", 80_000))
    refund = RefundOrder("R1", "WREF", taken.channel_txn_id, 30_000, 80_000, "CNY", reason="overpaid")
    refunded = await rig.channel.refund(refund)
    assert refunded.status is OutcomeStatus.SUCCEEDED
    assert (await rig.channel.query(OrderRef("R1", Operation.REFUND, 30_000, "CNY"))).status is OutcomeStatus.SUCCEEDED
    assert rig.sim.ledger.debit_count("R1") == 1
