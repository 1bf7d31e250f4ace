"""The collect (payer-initiated order) pieces of the channel contract and of the simulator toolkit."""

from __future__ import annotations

from datetime import datetime

import pytest

from channels.contract import (
    AWAITING_PAYMENT,
    Cashier,
    CashierKind,
    CollectOrder,
    CollectStarted,
    Operation,
    OutcomeStatus,
    awaiting_payment,
    notice_matches,
    pending,
    succeeded,
)
from channels.http import ChannelHttp, HttpChannel
from channels.simkit import CashierBook, EntryStatus, Ledger, Payment, PaymentRefused

JSAPI = {"appId": "wx1", "timeStamp": "1", "nonceStr": "n", "package": "prepay_id=p", "signType": "RSA", "paySign": "s"}


@pytest.mark.parametrize(
    "cashier",
    [
        Cashier(CashierKind.QR, qr_code="weixin://wxpay/bizpayurl?pr=p4lpSuKzz"),
        Cashier(CashierKind.H5, url="https://openapi.alipay.com/gateway.do?app_id=1&sign=x%2By"),
        Cashier(CashierKind.IN_APP, order_string="app_id=1&biz_content=%7B%7D&sign=a"),
        Cashier(CashierKind.IN_APP, sdk_params=JSAPI),
    ],
)
def test_a_cashier_survives_storage_as_it_was(cashier: Cashier) -> None:
    assert Cashier.from_json(cashier.to_json()) == cashier


def test_a_cashier_carries_exactly_one_payload() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Cashier(CashierKind.QR)
    with pytest.raises(ValueError, match="exactly one"):
        Cashier(CashierKind.IN_APP, order_string="a=1", sdk_params=JSAPI)
    with pytest.raises(ValueError):
        Cashier.from_json('{"kind": "qr", "qr_code": "x", "sdk_params": {"a": 1}}')


def test_a_collect_order_expires_at_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CollectOrder("C1", 100, "CNY", CashierKind.QR, datetime(2026, 1, 1))


def test_a_cashier_comes_only_with_an_order_awaiting_its_payer() -> None:
    started = awaiting_payment(Cashier(CashierKind.QR, qr_code="q"), "10000")
    assert (started.outcome.status, started.outcome.code) == (OutcomeStatus.PENDING, AWAITING_PAYMENT)
    with pytest.raises(ValueError):
        CollectStarted(succeeded(), Cashier(CashierKind.QR, qr_code="q"))
    assert CollectStarted(pending("TIMEOUT")).cashier is None


def test_payment_notices_match_either_payment_operation() -> None:
    assert notice_matches(Operation.WITHHOLD, Operation.COLLECT)  # an Alipay trade notify for a cashier order
    assert notice_matches(Operation.COLLECT, Operation.COLLECT)
    assert not notice_matches(Operation.REFUND, Operation.COLLECT)
    assert not notice_matches(Operation.COLLECT, Operation.PAYOUT)


def test_collect_is_offered_only_with_a_cashier() -> None:
    http = ChannelHttp(connect_timeout_s=1, timeout_s=2)
    assert Operation.COLLECT not in HttpChannel("a", http).operations
    with_qr = HttpChannel("b", http, cashier_kinds=frozenset({CashierKind.QR}))
    assert Operation.COLLECT in with_qr.operations and with_qr.cashier_kinds == {CashierKind.QR}
    without = HttpChannel("c", http, operations=frozenset({Operation.WITHHOLD}), cashier_kinds=frozenset(CashierKind))
    assert not without.cashier_kinds


# --- the simulator's book of collect orders ----------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _book(clock: Clock) -> tuple[CashierBook, list[Payment]]:
    paid: list[Payment] = []
    ledger = Ledger(clock=clock, default_balance=50_000)
    book = CashierBook(ledger, lambda entry, payment: paid.append(payment), clock=clock)
    return book, paid


def test_a_payment_moves_the_payers_money_once_and_is_announced() -> None:
    clock = Clock()
    book, paid = _book(clock)
    book.create("C1", 10_000, "CNY", clock.now + 60, "qr", {"a": 1})
    payment = book.pay("C1", payer="wallet:1")
    assert paid == [payment] and payment.amount == 10_000
    entry = book.ledger.get("C1")
    assert entry is not None and entry.status is EntryStatus.SUCCEEDED
    assert book.ledger.balance("wallet:1") == 40_000
    with pytest.raises(PaymentRefused, match="ALREADY_PAID"):
        book.pay("C1", payer="wallet:1")
    assert book.close("C1").status is EntryStatus.SUCCEEDED  # a paid order stays paid


def test_pay_again_is_a_second_movement_with_its_own_transaction() -> None:
    clock = Clock()
    book, paid = _book(clock)
    book.create("C2", 10_000, "CNY", clock.now + 60, "h5", {})
    first, second = book.pay("C2"), book.pay_again("C2")
    assert first.txn_id != second.txn_id and len(paid) == 2
    assert book.ledger.paid_total("C2") == 20_000 and book.ledger.debit_count("C2") == 2


def test_refusals_move_nothing() -> None:
    clock = Clock()
    book, paid = _book(clock)
    book.create("LATE", 100, "CNY", clock.now + 5, "qr", {})
    book.create("SHUT", 100, "CNY", clock.now + 60, "qr", {})
    book.create("HIDDEN", 100, "CNY", clock.now + 60, "qr", {}, opened=False)
    book.create("DEAR", 90_000, "CNY", clock.now + 60, "qr", {})
    book.close("SHUT")
    clock.now += 10
    for order_no, code in [
        ("LATE", "ORDER_EXPIRED"),
        ("SHUT", "ORDER_CLOSED"),
        ("HIDDEN", "NOT_OPENED"),
        ("DEAR", "INSUFFICIENT_FUNDS"),
        ("NONE", "UNKNOWN_ORDER"),
    ]:
        with pytest.raises(PaymentRefused) as refused:
            book.pay(order_no)
        assert refused.value.code == code
    assert paid == [] and book.ledger.movements() == []
    with pytest.raises(PaymentRefused, match="NOT_PAID"):
        book.pay_again("LATE")


def test_another_amount_is_recorded_as_paid() -> None:
    clock = Clock()
    book, _ = _book(clock)
    entry, new = book.create("C3", 10_000, "CNY", clock.now + 60, "in_app", {"x": 1})
    assert new and book.create("C3", 10_000, "CNY", clock.now + 60, "in_app", {"x": 1}) == (entry, False)
    book.pay("C3", amount=9_900)
    assert (entry.amount, entry.paid_amount) == (10_000, 9_900)
    assert book.state("C3")["payments"][0]["amount"] == 9_900
    assert book.expires_at("C3") == pytest.approx(clock.now + 60)
