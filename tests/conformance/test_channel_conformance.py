"""The channel contract, checked against every adapter that has a simulator.

Parametrized over ``channels.simkit.SIMULATORS``: each case starts the
simulator on 127.0.0.1, builds the adapter through the registry from
``simulator.adapter_settings()``, signs an agreement, and drives the contract
with simkit's magic amounts (``amount % 100``). A callback receiver (an
aiohttp server calling ``parse_callback``/``callback_reply``) collects the
simulator's notifies. Every channel that offers ``Operation.STATEMENT``
fetches the day's statement from its simulator, and its lines must be the
simulator's ledger of that day.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
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
from channels.registry import ADAPTERS, ChannelSpec, factory_for
from channels.simkit import SIMULATORS, Behaviour, EntryKind, EntryStatus, SimulatorHandle, create_simulator
from channels.statement import LineStatus, StatementFormat, StatementLine, StatementUnavailable
from channels.statements import statement_format
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
    # A pending order settles 0.4-0.6 s later: long enough that the adapter's query right after an accepted
    # apply (WeChat Pay) still finds it processing on a loaded CI machine, short enough for the callbacks.
    sim = create_simulator(
        request.param, Behaviour(timeout_hold_s=2.0, settle_after_ms=(400, 600)), notify_url=notify_url
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
    assert (Operation.STATEMENT in rig.channel.operations) == (ADAPTERS[rig.name].statement is not None)


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


# --- statements --------------------------------------------------------------------------------

_OPERATIONS = {
    EntryKind.WITHHOLD: Operation.WITHHOLD,
    EntryKind.PAYOUT: Operation.PAYOUT,
    EntryKind.REFUND: Operation.REFUND,
}


def _today(rig: Rig) -> date:
    return rig.sim.ledger.booking_day(rig.sim.ledger.now())


async def _fetch(rig: Rig, day: date, directory: Path) -> tuple[StatementFormat, list[StatementLine]]:
    fetched = await rig.channel.fetch_statement(day, str(directory))
    assert (fetched.channel_id, fetched.day) == (rig.channel.channel_id, day)
    assert os.listdir(directory) == [os.path.basename(fetched.path)]  # nothing half-downloaded left behind
    assert fetched.sha256 == hashlib.sha256(Path(fetched.path).read_bytes()).hexdigest()
    assert "token" not in fetched.source
    assert fetched.format == rig.name  # a channel's format is registered under its adapter's name
    fmt = statement_format(fetched.format)
    with open(fetched.path, "rb") as stream:
        return fmt, list(fmt.iter_lines(stream, channel_id=fetched.channel_id, day=day))


async def test_statement_lines_are_the_ledger_of_the_day(rig: Rig, tmp_path: Path) -> None:
    if Operation.STATEMENT not in rig.channel.operations:
        pytest.skip(f"{rig.name} publishes no statement")
    rig.sim.ledger.fee_bps = 60
    outcomes = {
        "SW1": await rig.channel.withhold(rig.withhold("SW1", 90_000)),
        "SW2": await rig.channel.withhold(rig.withhold("SW2", 90_001)),  # declined
        "SW3": await rig.channel.withhold(rig.withhold("SW3", 90_005)),  # pending, settles later
        "SP1": await rig.channel.payout(PayoutOrder("SP1", 40_000, "CNY", "6222020000005678", "Li Si", "ICBC")),
    }
    refund = RefundOrder("SR1", "SW1", outcomes["SW1"].channel_txn_id, 20_000, 90_000, "CNY", reason="overpaid")
    outcomes["SR1"] = await rig.channel.refund(refund)
    await rig.receiver.notice_for("SW3")
    day = _today(rig)
    fmt, lines = await _fetch(rig, day, tmp_path)

    expected = {}
    for entry in rig.sim.ledger.entries():
        if not entry.final or entry.settled_at is None or rig.sim.ledger.booking_day(entry.settled_at) != day:
            continue
        operation = _OPERATIONS[entry.kind]
        if operation not in fmt.covers or (entry.status is EntryStatus.FAILED and not fmt.lists_failures):
            continue
        status = LineStatus.SUCCEEDED if entry.status is EntryStatus.SUCCEEDED else LineStatus.FAILED
        at = datetime.fromtimestamp(int(entry.settled_at), UTC).replace(tzinfo=None)
        expected[entry.order_no] = (operation, status, entry.amount, entry.fee, entry.original_order_no, at)
    shown = {
        line.channel_order_no: (
            line.operation,
            line.status,
            line.amount,
            line.fee,
            line.original_channel_order_no,
            line.booked_at.replace(microsecond=0),
        )
        for line in lines
    }
    assert len(shown) == len(lines)  # one line per order
    assert shown == expected
    assert {"SW1", "SW3", "SR1"} <= set(shown)
    for line in lines:  # the channel's transaction id on the statement is the one the adapter reported
        outcome = outcomes.get(line.channel_order_no)
        if outcome is not None and outcome.status is OutcomeStatus.SUCCEEDED:
            assert line.channel_txn_id == outcome.channel_txn_id, line


async def test_statement_faults_and_unavailable_days(rig: Rig, tmp_path: Path) -> None:
    if Operation.STATEMENT not in rig.channel.operations:
        pytest.skip(f"{rig.name} publishes no statement")
    for i in range(4):
        await rig.channel.withhold(rig.withhold(f"FW{i}", 91_000 + i * 100))
    day = _today(rig)
    faults = rig.sim.statements.faults
    faults.drop("FW0")
    faults.change_amount("FW1", 91_111)
    faults.change_fee("FW2", 77)
    faults.date_next_day("FW3")
    faults.add_line(day, "NEVER-SENT", 12_300)
    shown = {line.channel_order_no: line for line in (await _fetch(rig, day, tmp_path / "d"))[1]}
    assert "FW0" not in shown and "FW3" not in shown
    assert shown["FW1"].amount == 91_111 and shown["FW2"].fee == 77 and shown["NEVER-SENT"].amount == 12_300
    tomorrow = day + timedelta(days=1)
    with pytest.raises(StatementUnavailable):
        await rig.channel.fetch_statement(tomorrow, str(tmp_path / "t"))
    assert _empty(tmp_path / "t")
    faults.unpublish(day)
    with pytest.raises(StatementUnavailable):
        await rig.channel.fetch_statement(day, str(tmp_path / "u"))
    faults.publish(day)
    rig.sim.behaviour.outage = True
    try:
        with pytest.raises(StatementUnavailable):
            await rig.channel.fetch_statement(day, str(tmp_path / "o"))
    finally:
        rig.sim.behaviour.outage = False
    assert _empty(tmp_path / "u") and _empty(tmp_path / "o")


def _empty(directory: Path) -> bool:
    return not directory.exists() or not any(directory.iterdir())
