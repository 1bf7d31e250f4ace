"""Payer-initiated orders (COLLECT), checked against every adapter that has a simulator.

Parametrized over ``channels.simkit.SIMULATORS`` and the three cashier kinds:
the adapter creates the order, the test plays the borrower on the simulator
(:class:`channels.simkit.Borrower`: open the cashier as the wallet would, pay,
pay again, pay another amount, walk away), and the adapter's notification
parsing, query and close must tell what really happened. Money is counted in
the simulator's ledger, never taken from the adapter's word.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from channels.contract import (
    AWAITING_PAYMENT,
    CashierKind,
    Channel,
    CollectOrder,
    Operation,
    OrderRef,
    OutcomeStatus,
    PayerHints,
    notice_matches,
)
from channels.registry import ChannelSpec, factory_for
from channels.simkit import SIMULATORS, Behaviour, Borrower, PaymentRefused, SimulatorHandle, create_simulator
from channels.statements import statement_format
from tests.conformance.receiver import Receiver, start_receiver

HINTS = PayerHints(openid="o-borrower-openid", client_ip="203.0.113.7", return_url="https://app.example/done")


@dataclass
class Rig:
    name: str
    sim: SimulatorHandle
    borrower: Borrower
    channel: Channel
    receiver: Receiver

    def order(self, no: str, kind: CashierKind, amount: int = 12_300, *, expires_in_s: float = 60.0) -> CollectOrder:
        expires_at = datetime.now(UTC) + timedelta(seconds=expires_in_s)
        return CollectOrder(no, amount, "CNY", kind, expires_at, description="repayment", payer=HINTS)

    def ref(self, order: CollectOrder) -> OrderRef:
        return OrderRef(order.channel_order_no, Operation.COLLECT, order.amount, "CNY", expires_at=order.expires_at)


@pytest.fixture(params=sorted(SIMULATORS))
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    receiver, server, notify_url = await start_receiver()
    sim = create_simulator(request.param, Behaviour(timeout_hold_s=2.0), notify_url=notify_url)
    await sim.start()
    settings: dict[str, Any] = {**sim.adapter_settings(), "timeout_s": 0.8, "connect_timeout_s": 0.3}
    channel = factory_for(request.param)(ChannelSpec(f"{request.param}-collect", request.param, settings))
    receiver.channel = channel
    await channel.start()
    assert isinstance(sim, Borrower)
    try:
        yield Rig(request.param, sim, sim, channel, receiver)
    finally:
        await channel.stop()
        await sim.stop()
        await server.stop()


KINDS = pytest.mark.parametrize("kind", list(CashierKind))


async def test_collect_is_offered_with_every_cashier(rig: Rig) -> None:
    assert Operation.COLLECT in rig.channel.operations
    assert rig.channel.cashier_kinds == frozenset(CashierKind)


@KINDS
async def test_paid_order_is_notified_queried_and_stays_paid_on_close(rig: Rig, kind: CashierKind) -> None:
    order = rig.order(f"CPAY{kind.name}", kind)
    started = await rig.channel.create_collect(order)
    assert (started.outcome.status, started.outcome.code) == (OutcomeStatus.PENDING, AWAITING_PAYMENT)
    assert started.cashier is not None and started.cashier.kind is kind
    waiting = await rig.channel.query(rig.ref(order))
    assert waiting.status is OutcomeStatus.PENDING  # waiting for the payer (Alipay: no trade yet)
    payment = rig.borrower.pay_cashier(started.cashier)
    notice = await rig.receiver.notice_for(order.channel_order_no)
    assert notice_matches(notice.operation, Operation.COLLECT)
    assert (notice.outcome.status, notice.amount) == (OutcomeStatus.SUCCEEDED, order.amount)
    assert notice.outcome.channel_txn_id == payment.txn_id
    paid = await rig.channel.query(rig.ref(order))
    assert (paid.status, paid.amount) == (OutcomeStatus.SUCCEEDED, order.amount)
    closed_late = await rig.channel.close_order(rig.ref(order))
    assert closed_late.status is OutcomeStatus.SUCCEEDED  # paid before the close arrived: it stays paid
    assert rig.sim.ledger.paid_total(order.channel_order_no) == order.amount
    assert rig.sim.ledger.debit_count(order.channel_order_no) == 1


@KINDS
async def test_abandoned_order_closes_and_refuses_a_late_payment(rig: Rig, kind: CashierKind) -> None:
    order = rig.order(f"CABN{kind.name}", kind)
    started = await rig.channel.create_collect(order)
    assert started.cashier is not None
    rig.borrower.abandon(rig.borrower.open_cashier(started.cashier))
    closed = await rig.channel.close_order(rig.ref(order))
    assert (closed.status, closed.code) == (OutcomeStatus.FAILED, "ORDER_CLOSED")
    with pytest.raises(PaymentRefused) as refused:
        rig.borrower.pay_cashier(started.cashier)
    assert refused.value.code == "ORDER_CLOSED"
    assert (await rig.channel.query(rig.ref(order))).status is OutcomeStatus.FAILED
    assert rig.sim.ledger.paid_total(order.channel_order_no) == 0


@KINDS
async def test_a_cashier_never_opened_is_closed_for_good_once_expired(rig: Rig, kind: CashierKind) -> None:
    order = rig.order(f"CEXP{kind.name}", kind, expires_in_s=0.6)
    started = await rig.channel.create_collect(order)
    assert started.cashier is not None
    await asyncio.sleep(1.3)  # past the expiry and the Alipay adapter's grace for the platform's clock
    with pytest.raises(PaymentRefused) as refused:
        rig.borrower.pay_cashier(started.cashier)
    assert refused.value.code == "ORDER_EXPIRED"
    closed = await rig.channel.close_order(rig.ref(order))
    assert (closed.status, closed.code) == (OutcomeStatus.FAILED, "ORDER_CLOSED")
    assert rig.sim.ledger.paid_total(order.channel_order_no) == 0


async def test_a_second_payment_is_a_second_notice_with_its_own_transaction(rig: Rig) -> None:
    order = rig.order("CTWICE", CashierKind.QR)
    started = await rig.channel.create_collect(order)
    assert started.cashier is not None
    first = rig.borrower.pay_cashier(started.cashier)
    second = rig.borrower.pay_again(order.channel_order_no)
    assert first.txn_id != second.txn_id
    async with asyncio.timeout(5):
        while len([n for n in rig.receiver.notices if n.channel_order_no == "CTWICE"]) < 2:
            await asyncio.sleep(0.02)
    txns = {n.outcome.channel_txn_id for n in rig.receiver.notices if n.channel_order_no == "CTWICE"}
    assert txns == {first.txn_id, second.txn_id}
    assert rig.sim.ledger.paid_total("CTWICE") == 2 * order.amount  # the borrower paid twice
    with pytest.raises(PaymentRefused):
        rig.borrower.pay("CTWICE")  # paying an order that is paid is refused; only pay_again forces it


async def test_another_amount_is_what_the_notice_and_query_report(rig: Rig) -> None:
    order = rig.order("CSHORT", CashierKind.H5)
    started = await rig.channel.create_collect(order)
    assert started.cashier is not None
    rig.borrower.pay_cashier(started.cashier, amount=order.amount - 100)
    notice = await rig.receiver.notice_for("CSHORT")
    assert notice.amount == order.amount - 100  # the gateway's cross-check must catch it
    assert (await rig.channel.query(rig.ref(order))).amount == order.amount - 100


async def test_a_repeated_create_is_the_same_order(rig: Rig) -> None:
    order = rig.order("CREPEAT", CashierKind.QR)
    first = await rig.channel.create_collect(order)
    again = await rig.channel.create_collect(order)
    assert first.cashier is not None and again.cashier == first.cashier
    rig.borrower.pay_cashier(again.cashier)
    assert rig.sim.ledger.debit_count("CREPEAT") == 1


async def test_a_lost_create_answer_is_pending_and_the_retry_opens_the_same_order(rig: Rig) -> None:
    order = rig.order("CLOST", CashierKind.QR, amount=12_307)  # magic 07: created, answer held past the timeout
    lost = await rig.channel.create_collect(order)
    assert lost.outcome.status is OutcomeStatus.PENDING and lost.cashier is None
    rig.sim.behaviour.update({"magic": False})
    retried = await rig.channel.create_collect(order)
    assert retried.outcome.code == AWAITING_PAYMENT and retried.cashier is not None
    rig.borrower.pay_cashier(retried.cashier)
    assert rig.sim.ledger.debit_count("CLOST") == 1


async def test_a_busy_refusal_is_safe_elsewhere(rig: Rig) -> None:
    refused = await rig.channel.create_collect(rig.order("CBUSY", CashierKind.QR, amount=12_303))
    assert refused.outcome.status is OutcomeStatus.FAILED and refused.outcome.safe_elsewhere
    assert refused.cashier is None


async def test_a_cashier_outside_the_channel_is_refused_before_sending() -> None:
    sim = create_simulator("sandbox", Behaviour())
    await sim.start()
    try:
        settings = {**sim.adapter_settings(), "cashier_kinds": ["qr"]}
        channel = factory_for("sandbox")(ChannelSpec("sbx-qr", "sandbox", settings))
        assert channel.cashier_kinds == frozenset({CashierKind.QR})
        expires_at = datetime.now(UTC) + timedelta(minutes=5)
        refused = await channel.create_collect(CollectOrder("CH5", 100, "CNY", CashierKind.H5, expires_at))
        assert (refused.outcome.code, refused.outcome.safe_elsewhere) == ("CASHIER_NOT_SUPPORTED", True)
        assert sim.ledger.get("CH5") is None
        no_collect = factory_for("sandbox")(
            ChannelSpec("sbx-none", "sandbox", {**sim.adapter_settings(), "operations": ["withhold"]})
        )
        assert Operation.COLLECT not in no_collect.operations and not no_collect.cashier_kinds
    finally:
        await sim.stop()


async def test_a_paid_collection_is_on_the_days_statement_as_a_trade(rig: Rig, tmp_path: Path) -> None:
    order = rig.order("CBILL", CashierKind.QR)
    started = await rig.channel.create_collect(order)
    assert started.cashier is not None
    payment = rig.borrower.pay_cashier(started.cashier)
    abandoned = await rig.channel.create_collect(rig.order("CBILL2", CashierKind.QR))
    assert abandoned.cashier is not None
    day = rig.sim.ledger.booking_day(rig.sim.ledger.now())
    fetched = await rig.channel.fetch_statement(day, str(tmp_path))
    with open(fetched.path, "rb") as stream:
        lines = list(statement_format(fetched.format).iter_lines(stream, channel_id=rig.channel.channel_id, day=day))
    [line] = [line for line in lines if line.channel_order_no.startswith("CBILL")]
    # a cashier payment is a trade into the merchant's account, billed as a withhold is, for what was paid
    assert (line.channel_order_no, line.operation, line.amount, line.channel_txn_id) == (
        "CBILL",
        Operation.WITHHOLD,
        order.amount,
        payment.txn_id,
    )
