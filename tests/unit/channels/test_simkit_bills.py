"""A simulator's statement comes from its ledger, one day at a time, with the fault switches tests inject."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta

import aiohttp
import pytest

from channels.contract import Operation
from channels.simkit import (
    Behaviour,
    EntryKind,
    FaultError,
    Ledger,
    StatementBook,
    create_simulator,
)
from channels.statement import CHINA_TIME, LineStatus

DAY = date(2026, 3, 5)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, at: datetime) -> None:
        self.now = at.timestamp()


def china(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=CHINA_TIME)


def naive_utc(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(tzinfo=None)


def booked(
    ledger: Ledger,
    clock: Clock,
    order_no: str,
    amount: int,
    at: datetime,
    *,
    kind: EntryKind = EntryKind.WITHHOLD,
    fail: bool = False,
    original: str = "",
) -> None:
    clock.set(at)
    ledger.record(order_no, kind, amount, "CNY", "6222020000001234", {"n": order_no}, original_order_no=original)
    if fail:
        ledger.fail(order_no, "INSUFFICIENT_FUNDS")
    else:
        ledger.execute(order_no)


@pytest.fixture
def day_of_orders() -> tuple[Ledger, Clock]:
    """One order the evening before; five on the day (one failed, a payout, a refund); one pending."""
    clock = Clock(china(DAY, 0))
    ledger = Ledger(clock=clock, fee_bps=60)
    booked(ledger, clock, "W-EVE", 10_000, china(DAY - timedelta(days=1), 23, 59, 58))
    booked(ledger, clock, "W1", 10_000, china(DAY, 0, 0, 1))
    booked(ledger, clock, "W2", 20_000, china(DAY, 9))
    booked(ledger, clock, "W3", 30_001, china(DAY, 10), fail=True)
    booked(ledger, clock, "P1", 50_000, china(DAY, 11), kind=EntryKind.PAYOUT)
    booked(ledger, clock, "R1", 4_000, china(DAY, 23, 59, 59), kind=EntryKind.REFUND, original="W1")
    clock.set(china(DAY, 23, 59, 59))
    ledger.record("W-PENDING", EntryKind.WITHHOLD, 7_000, "CNY", "6222020000001234", {})
    clock.set(china(DAY + timedelta(days=1), 10, 30))
    return ledger, clock


def test_the_ledger_books_orders_on_the_day_they_ended(day_of_orders: tuple[Ledger, Clock]) -> None:
    ledger, _ = day_of_orders
    assert list(ledger.booked_on(DAY)) == ["W1", "W2", "W3", "P1", "R1"]
    assert list(ledger.booked_on(DAY - timedelta(days=1))) == ["W-EVE"]
    assert ledger.get("W2").fee == 120 and ledger.get("W3").fee == 0 and ledger.get("R1").fee == 0  # type: ignore[union-attr]


def test_lines_of_a_day_are_the_ledger(day_of_orders: tuple[Ledger, Clock]) -> None:
    ledger, _ = day_of_orders
    lines = list(StatementBook(ledger).lines(DAY))
    assert [(line.channel_order_no, line.operation, line.status, line.amount, line.fee) for line in lines] == [
        ("W1", Operation.WITHHOLD, LineStatus.SUCCEEDED, 10_000, 60),
        ("W2", Operation.WITHHOLD, LineStatus.SUCCEEDED, 20_000, 120),
        ("W3", Operation.WITHHOLD, LineStatus.FAILED, 30_001, 0),
        ("P1", Operation.PAYOUT, LineStatus.SUCCEEDED, 50_000, 300),
        ("R1", Operation.REFUND, LineStatus.SUCCEEDED, 4_000, 0),
    ]
    assert lines[0].booked_at == naive_utc(china(DAY, 0, 0, 1))
    assert lines[0].channel_txn_id == ledger.get("W1").txn_id  # type: ignore[union-attr]
    refund = lines[-1]
    assert (refund.original_channel_order_no, refund.original_channel_txn_id) == ("W1", ledger.get("W1").txn_id)  # type: ignore[union-attr]


def test_a_trade_bill_covers_what_its_format_books(day_of_orders: tuple[Ledger, Clock]) -> None:
    ledger, _ = day_of_orders
    book = StatementBook(ledger, covers=frozenset({EntryKind.WITHHOLD, EntryKind.REFUND}), lists_failures=False)
    assert [line.channel_order_no for line in book.lines(DAY)] == ["W1", "W2", "R1"]


def test_each_fault_switch(day_of_orders: tuple[Ledger, Clock]) -> None:
    ledger, _ = day_of_orders
    book = StatementBook(ledger)
    book.faults.drop("W2")
    book.faults.change_amount("W1", 10_001)
    book.faults.change_fee("P1", 301)
    book.faults.date_next_day("R1")
    book.faults.date_next_day("W-EVE")  # booked the evening before: shows up on DAY
    ghost = book.faults.add_line(DAY, "GHOST-1", 8_800, fee=5)
    shown = {line.channel_order_no: line for line in book.lines(DAY)}
    assert set(shown) == {"W1", "W3", "P1", "W-EVE", "GHOST-1"}
    assert shown["W1"].amount == 10_001 and shown["W1"].fee == 60
    assert shown["P1"].fee == 301 and shown["P1"].amount == 50_000
    assert shown["W-EVE"].booked_at == naive_utc(china(DAY, 0, 0, 1))
    assert shown["GHOST-1"] == ghost and ghost.status is LineStatus.SUCCEEDED
    following = [line.channel_order_no for line in book.lines(DAY + timedelta(days=1))]
    assert following == ["R1"]
    book.faults.clear()
    assert [line.channel_order_no for line in book.lines(DAY)] == ["W1", "W2", "W3", "P1", "R1"]


def test_publication(day_of_orders: tuple[Ledger, Clock]) -> None:
    ledger, _ = day_of_orders
    book = StatementBook(ledger)
    assert book.published(DAY) and book.published(DAY + timedelta(days=1))  # today's is the statement so far
    assert not book.published(DAY + timedelta(days=2))
    book.faults.unpublish(DAY)
    assert not book.published(DAY)
    book.faults.publish(DAY)
    assert book.published(DAY)


def test_random_faults_are_reproducible_and_each_order_gets_one(day_of_orders: tuple[Ledger, Clock]) -> None:
    ledger, _ = day_of_orders
    first = StatementBook(ledger).pick(DAY, seed=7, drop=1, amount=1, fee=1, next_day=1, extra=2)
    second = StatementBook(ledger).pick(DAY, seed=7, drop=1, amount=1, fee=1, next_day=1, extra=2)
    assert first == second
    chosen = [*first.drop, *first.amount, *first.fee, *first.next_day]
    assert len(set(chosen)) == 4 and set(chosen) <= {"W1", "W2", "P1", "R1"}  # orders that moved money
    assert len(first.extra) == 2 and first.orders >= set(first.extra)
    with pytest.raises(FaultError):
        StatementBook(ledger).pick(DAY, drop=5)


def test_faults_reject_nonsense(day_of_orders: tuple[Ledger, Clock]) -> None:
    ledger, _ = day_of_orders
    book = StatementBook(ledger)
    with pytest.raises(FaultError):
        book.faults.change_amount("W1", -1)
    with pytest.raises(FaultError):
        book.faults.apply_json({"drop": ["W1"], "amount": {"W2": "12"}})
    assert book.faults.dropped == set()  # all or nothing
    with pytest.raises(FaultError):
        book.faults.apply_json({"teleport": []})


async def test_rendered_files_and_short_lived_tokens(day_of_orders: tuple[Ledger, Clock]) -> None:
    ledger, _ = day_of_orders
    book = StatementBook(ledger)
    rendered = await book.render(
        DAY, lambda lines, out: out.write(",".join(line.channel_order_no for line in lines).encode())
    )
    with open(rendered.path, "rb") as f:
        assert f.read() == b"W1,W2,W3,P1,R1"
    token = book.issue(rendered, ttl_s=60)
    assert book.redeem(token) == rendered and book.redeem("nope") is None
    expired = book.issue(DAY, ttl_s=0)
    assert book.redeem(expired) is None
    directory = os.path.dirname(rendered.path)
    book.close()
    assert not os.path.exists(directory)


async def test_fault_switches_over_the_admin_routes() -> None:
    sim = create_simulator("sandbox", Behaviour())
    base = await sim.start()
    try:
        ledger = sim.ledger
        today = ledger.booking_day(ledger.now())
        for i in range(6):
            ledger.record(f"W{i}", EntryKind.WITHHOLD, 1000 + i, "CNY", "acct", {})
            ledger.execute(f"W{i}")
        async with aiohttp.ClientSession() as http:
            url = f"{base}/_admin/statement/faults"
            async with http.post(url, json={"drop": ["W0"], "amount": {"W1": 5}, "next_day": ["W2"]}) as answer:
                body = await answer.json()
                assert answer.status == 200 and body["drop"] == ["W0"] and body["amount"] == {"W1": 5}
            spec = {"random": {"day": today.isoformat(), "seed": 3, "fee": 1, "extra": 1}}
            async with http.post(url, json=spec) as answer:
                picked = (await answer.json())["picked"]
                assert answer.status == 200
                assert len(picked["fee"]) == 1 and set(picked["fee"]) <= {"W3", "W4", "W5"}
                assert len(picked["extra"]) == 1
            async with http.post(
                url, json={"drop": ["W5"], "random": {"day": today.isoformat(), "drop": 99}}
            ) as answer:
                assert answer.status == 400 and "faults asked for" in (await answer.json())["error"]
            async with http.get(url) as answer:
                assert (await answer.json())["drop"] == ["W0"]  # the failed request changed nothing
            async with http.post(url, json={"unpublished": ["2026-13-01"]}) as answer:
                assert answer.status == 400 and "unpublished" in (await answer.json())["error"]
            shown = {line.channel_order_no for line in sim.statements.lines(today)}
            assert "W0" not in shown and "W2" not in shown and picked["extra"][0] in shown
            async with http.delete(url) as answer:
                assert (await answer.json())["drop"] == []
        assert {line.channel_order_no for line in sim.statements.lines(today)} == {f"W{i}" for i in range(6)}
    finally:
        await sim.stop()


def test_what_the_gateway_could_not_know_is_on_the_day_it_happened(day_of_orders: tuple[Ledger, Clock]) -> None:
    """An order still pending at midnight that executes the next morning is on the next day's statement."""
    ledger, clock = day_of_orders
    book = StatementBook(ledger)
    assert "W-PENDING" not in {line.channel_order_no for line in book.lines(DAY)}
    clock.set(china(DAY + timedelta(days=1), 8, 30))
    ledger.execute("W-PENDING")  # e.g. long after the gateway's polling gave up and left the flow in review
    [late] = book.lines(DAY + timedelta(days=1))
    assert (late.channel_order_no, late.status, late.amount) == ("W-PENDING", LineStatus.SUCCEEDED, 7_000)
    assert late.booked_at == naive_utc(china(DAY + timedelta(days=1), 8, 30))


def test_fees_round_half_up_to_the_fen() -> None:
    ledger = Ledger(fee_bps=60)
    assert ledger.fee_for(EntryKind.WITHHOLD, 250) == 2  # 1.5 fen
    assert ledger.fee_for(EntryKind.PAYOUT, 249) == 1  # 1.494 fen
    assert ledger.fee_for(EntryKind.REFUND, 1_000_000) == 0
