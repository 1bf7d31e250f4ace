"""Payer-initiated orders on a simulated platform, and the borrower who pays them: :class:`CashierBook`.

A collect order (主动还款) is created by the merchant's request and paid by
the payer in the platform's cashier, later or never. The book keeps, per
order number, what the platform knows: the expiry, whether the payer has
opened the cashier yet (Alipay creates a trade only then), each payment.
Tests, the demo and the admin routes play the borrower through a simulator's
``open_cashier`` / ``pay`` / ``pay_again`` / ``abandon``; each payment moves
money in the :class:`~channels.simkit.ledger.Ledger` (so a test counts what
was taken from the borrower) and makes the simulator send its platform's
signed notification.

The platform's rules, as every real one keeps them:

* a payment after the expiry, or of a closed order, is refused: nothing moves;
* a close of an order paid before the close arrived leaves it paid (the
  simulator answers "already paid", as the platform does);
* an order number is paid once; :meth:`CashierBook.pay_again` is the one
  deliberate exception, a platform fault a test provokes to check that the
  gateway catches a second payment.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from channels.simkit.ledger import Entry, EntryKind, EntryStatus, InsufficientBalance, Ledger, LedgerError, Movement

#: The borrower's wallet when a test names none (funded with the ledger's default balance).
DEFAULT_PAYER = "borrower:wallet"


class PaymentRefused(LedgerError):
    """The platform refused the payer's payment; nothing moved. ``code`` says why.

    ``UNKNOWN_ORDER``, ``NOT_OPENED`` (the cashier was never opened),
    ``ORDER_CLOSED``, ``ORDER_EXPIRED``, ``ALREADY_PAID``, ``INSUFFICIENT_FUNDS``.
    """

    def __init__(self, order_no: str, code: str) -> None:
        super().__init__(f"{order_no}: payment refused ({code})")
        self.order_no = order_no
        self.code = code


@dataclass
class _Collect:
    expires_at: float
    cashier: str
    opened: bool
    abandoned: bool = False


@dataclass(frozen=True, slots=True)
class Payment:
    """One payment the payer made into a collect order."""

    order_no: str
    txn_id: str
    amount: int
    payer: str
    at: float

    @classmethod
    def of(cls, movement: Movement) -> Payment:
        return cls(movement.order_no, movement.txn_id, movement.amount, movement.debit_account, movement.at)


class CashierBook:
    """The collect orders of one simulated platform.

    ``on_paid(entry, payment)`` is called after each payment (the simulator
    sends its notification from it). Synchronous and atomic on the event loop,
    like the ledger: a payment and a close cannot interleave inside one call.
    """

    def __init__(
        self,
        ledger: Ledger,
        on_paid: Callable[[Entry, Payment], None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self._on_paid = on_paid
        self._clock = clock
        self._orders: dict[str, _Collect] = {}

    def create(
        self,
        order_no: str,
        amount: int,
        currency: str,
        expires_at: float,
        cashier: str,
        params: Mapping[str, Any],
        *,
        notify_url: str = "",
        opened: bool = True,
    ) -> tuple[Entry, bool]:
        """Record a collect order: ``(entry, True)`` when new, ``(existing, False)`` for an identical repeat.

        ``opened`` False: the platform knows the order but creates the trade
        only when the payer opens the cashier (Alipay). Raises the ledger's
        OrderNoConflict / OrderClosed.
        """
        entry, new = self.ledger.record(
            order_no, EntryKind.COLLECT, amount, currency, "", params, notify_url=notify_url
        )
        if new:
            self._orders[order_no] = _Collect(expires_at, cashier, opened)
        return entry, new

    def knows(self, order_no: str) -> bool:
        return order_no in self._orders

    def entry(self, order_no: str) -> Entry | None:
        return self.ledger.get(order_no) if order_no in self._orders else None

    def opened(self, order_no: str) -> bool:
        """Whether the payer has opened the cashier (the platform has a trade for it)."""
        order = self._orders.get(order_no)
        return order is not None and order.opened

    def expires_at(self, order_no: str) -> float:
        return self._orders[order_no].expires_at

    def expired(self, order_no: str) -> bool:
        order = self._orders.get(order_no)
        return order is not None and self._clock() >= order.expires_at

    def open(self, order_no: str) -> Entry:
        """The payer opens the cashier (scans the code, opens the page, the wallet SDK starts).

        Raises PaymentRefused ``UNKNOWN_ORDER`` / ``ORDER_CLOSED`` / ``ORDER_EXPIRED``.
        """
        entry = self._open_entry(order_no)
        self._orders[order_no].opened = True
        return entry

    def pay(self, order_no: str, *, amount: int | None = None, payer: str = DEFAULT_PAYER) -> Payment:
        """The payer pays the order, in full or (``amount``) another amount. Raises PaymentRefused."""
        entry = self._open_entry(order_no)
        if not self._orders[order_no].opened:
            raise PaymentRefused(order_no, "NOT_OPENED")
        if entry.status is EntryStatus.SUCCEEDED:
            raise PaymentRefused(order_no, "ALREADY_PAID")
        return self._take(entry, amount, payer)

    def pay_again(self, order_no: str, *, amount: int | None = None, payer: str = DEFAULT_PAYER) -> Payment:
        """A second payment of a paid order: the platform fault the gateway must catch. Raises PaymentRefused."""
        entry = self.entry(order_no)
        if entry is None:
            raise PaymentRefused(order_no, "UNKNOWN_ORDER")
        if entry.status is not EntryStatus.SUCCEEDED:
            raise PaymentRefused(order_no, "NOT_PAID")
        return self._take(entry, amount, payer)

    def abandon(self, order_no: str) -> None:
        """The payer opened the cashier and left without paying. Raises PaymentRefused ``UNKNOWN_ORDER``."""
        if order_no not in self._orders:
            raise PaymentRefused(order_no, "UNKNOWN_ORDER")
        self._orders[order_no].abandoned = True

    def close(self, order_no: str) -> Entry:
        """Close an unpaid order for good (FAILED ``ORDER_CLOSED``); a paid one stays paid and is returned as is."""
        entry = self.ledger.get(order_no)
        if entry is None or order_no not in self._orders:
            raise PaymentRefused(order_no, "UNKNOWN_ORDER")
        if entry.status is EntryStatus.PENDING:
            self.ledger.fail(order_no, "ORDER_CLOSED")
        return entry

    def payments(self, order_no: str) -> list[Payment]:
        return [Payment.of(m) for m in self.ledger.payments(order_no)]

    def state(self, order_no: str) -> dict[str, Any]:
        """A JSON-able view of one order (the admin route's answer)."""
        entry, order = self.ledger.get(order_no), self._orders.get(order_no)
        if entry is None or order is None:
            raise PaymentRefused(order_no, "UNKNOWN_ORDER")
        return {
            "order_no": order_no,
            "amount": entry.amount,
            "status": str(entry.status),
            "code": entry.code,
            "cashier": order.cashier,
            "opened": order.opened,
            "abandoned": order.abandoned,
            "expires_at": order.expires_at,
            "expired": self.expired(order_no),
            "payments": [{"txn_id": p.txn_id, "amount": p.amount, "at": p.at} for p in self.payments(order_no)],
        }

    def _open_entry(self, order_no: str) -> Entry:
        entry = self.entry(order_no)
        if entry is None:
            raise PaymentRefused(order_no, "UNKNOWN_ORDER")
        if entry.status is EntryStatus.FAILED:
            raise PaymentRefused(order_no, "ORDER_CLOSED")
        if entry.status is EntryStatus.PENDING and self.expired(order_no):
            raise PaymentRefused(order_no, "ORDER_EXPIRED")
        return entry

    def _take(self, entry: Entry, amount: int | None, payer: str) -> Payment:
        try:
            movement = self.ledger.receive(entry.order_no, payer, entry.amount if amount is None else amount)
        except InsufficientBalance:
            raise PaymentRefused(entry.order_no, "INSUFFICIENT_FUNDS") from None
        payment = Payment.of(movement)
        self._on_paid(entry, payment)
        return payment
