"""The protocol-neutral order engine: :class:`OrderDesk` records, decides, moves money once, settles later."""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from channels.simkit.behaviour import Behaviour, Fate
from channels.simkit.ledger import (
    Entry,
    EntryKind,
    EntryStatus,
    InsufficientBalance,
    Ledger,
    OrderClosed,
    OrderNoConflict,
)
from channels.simkit.tasks import TaskSet


class Delivery(enum.Enum):
    """How a simulator must deliver its answer about a new order."""

    ANSWER = "answer"  # answer with the entry's state (or the Answer's code)
    TIMEOUT = "timeout"  # executed: hold past the client's timeout, then drop the connection
    ERROR_5XX = "5xx"  # executed: answer HTTP 500


@dataclass(frozen=True, slots=True)
class Answer:
    """What to tell the client about one order.

    ``code`` is the simkit-normalized code to answer now: ``OK``,
    ``PROCESSING``, a decline (``INSUFFICIENT_FUNDS`` ...), ``UNMAPPED``
    (executed; answer with a code no error table knows) or ``REPEAT`` (an
    identical order seen before: answer with the entry's current state).
    """

    entry: Entry
    code: str
    delivery: Delivery = Delivery.ANSWER


_DECLINES: dict[Fate, str] = {
    Fate.INSUFFICIENT_FUNDS: "INSUFFICIENT_FUNDS",
    Fate.ACCOUNT_FROZEN: "ACCOUNT_FROZEN",
    Fate.CHANNEL_BUSY: "CHANNEL_BUSY",
    Fate.BANK_NOT_SUPPORTED: "BANK_NOT_SUPPORTED",
}

Precheck = Callable[[Entry], str | None]


class OrderDesk:
    """The protocol-neutral half of a simulator: receives money orders, moves money at most once.

    A simulator parses and verifies a request, then calls :meth:`submit`,
    which records the order in the ledger, draws its fate from the behaviour
    (magic amounts first), executes or declines it, and schedules the
    settlement of pending orders. ``on_final(entry)`` is called when a pending
    order settles and, with ``Behaviour.notify_final``, when an order ends at
    once: that is when a simulator sends its signed callback.

    Everything between recording and deciding is synchronous, so concurrent
    duplicates cannot both execute. A source account that cannot cover the
    amount fails the order with ``INSUFFICIENT_FUNDS`` (payer, withhold) or
    ``MERCHANT_BALANCE_INSUFFICIENT`` (merchant float, payout and refund); a
    frozen payer account fails a withhold with ``ACCOUNT_FROZEN``. A pending
    order that settles FAILED ends with ``INSUFFICIENT_FUNDS``.

    ``refusal(code)``, when given, builds the protocol's own exception for a
    closed (``ORDER_CLOSED``) or reused (``ORDER_NO_CONFLICT``) order number;
    :meth:`submit` raises it instead of OrderClosed / OrderNoConflict.
    """

    def __init__(
        self,
        ledger: Ledger,
        behaviour: Behaviour,
        tasks: TaskSet,
        on_final: Callable[[Entry], None],
        *,
        close_pending: bool = True,
        refusal: Callable[[str], Exception] | None = None,
    ) -> None:
        self.ledger = ledger
        self.behaviour = behaviour
        self.close_pending = close_pending
        self._tasks = tasks
        self._on_final = on_final
        self._refusal = refusal
        self.rng = random.Random(behaviour.seed)

    async def latency(self) -> None:
        """Sleep one latency sample."""
        delay = self.behaviour.latency_s(self.rng)
        if delay > 0:
            await asyncio.sleep(delay)

    def submit(
        self,
        order_no: str,
        kind: EntryKind,
        amount: int,
        account: str,
        params: Mapping[str, Any],
        *,
        currency: str = "CNY",
        original_order_no: str = "",
        notify_url: str = "",
        precheck: Precheck | None = None,
    ) -> Answer:
        """Receive one order. Raises OrderClosed / OrderNoConflict, or what ``refusal`` builds for them.

        ``precheck(entry)`` runs once for a new order before its fate is
        drawn; a code it returns fails the order with that code (no agreement,
        bank not served, refund over the original ...).
        """
        try:
            entry, new = self.ledger.record(
                order_no,
                kind,
                amount,
                currency,
                account,
                params,
                original_order_no=original_order_no,
                notify_url=notify_url,
            )
        except (OrderClosed, OrderNoConflict) as exc:
            if self._refusal is None:
                raise
            raise self._refusal("ORDER_CLOSED" if isinstance(exc, OrderClosed) else "ORDER_NO_CONFLICT") from None
        if not new:
            return Answer(entry, "REPEAT")
        refusal = precheck(entry) if precheck is not None else None
        if refusal is not None:
            self.ledger.fail(order_no, refusal)
            return self._final(entry, entry.code)
        fate = self.behaviour.decide(amount, self.rng)
        if fate in _DECLINES:
            self.ledger.fail(order_no, _DECLINES[fate])
            return self._final(entry, entry.code)
        if fate in (Fate.PENDING_THEN_SUCCEED, Fate.PENDING_THEN_FAIL):
            self._tasks.spawn(self._settle_later(order_no, succeed=fate is Fate.PENDING_THEN_SUCCEED))
            return Answer(entry, "PROCESSING")
        self._execute(entry)
        if fate is Fate.TIMEOUT:
            return Answer(entry, entry.code, Delivery.TIMEOUT)
        if fate is Fate.ERROR_5XX:
            return Answer(entry, entry.code, Delivery.ERROR_5XX)
        if fate is Fate.UNMAPPED_CODE and entry.status is EntryStatus.SUCCEEDED:
            return self._final(entry, "UNMAPPED")
        return self._final(entry, entry.code)

    def submit_refund(
        self, refund_no: str, original: Entry, amount: int, params: Mapping[str, Any], *, notify_url: str = ""
    ) -> Answer:
        """:meth:`submit` a refund of ``original``, back to the account it was taken from."""
        return self.submit(
            refund_no,
            EntryKind.REFUND,
            amount,
            original.account,
            params,
            currency=original.currency,
            original_order_no=original.order_no,
            notify_url=notify_url,
        )

    def close(self, order_no: str) -> Entry | None:
        """Close an order number.

        Unknown: tombstone it, return None. Pending: with ``close_pending`` it
        fails with ``ORDER_CLOSED`` (it will never execute), otherwise it stays
        pending. Final: unchanged.
        """
        entry = self.ledger.close(order_no)
        if entry is not None and entry.status is EntryStatus.PENDING and self.close_pending:
            self.ledger.fail(order_no, "ORDER_CLOSED")
        return entry

    def _execute(self, entry: Entry) -> None:
        if entry.kind is EntryKind.WITHHOLD and self.ledger.is_frozen(entry.account):
            self.ledger.fail(entry.order_no, "ACCOUNT_FROZEN")
            return
        try:
            self.ledger.execute(entry.order_no)
        except InsufficientBalance:
            short = "INSUFFICIENT_FUNDS" if entry.kind is EntryKind.WITHHOLD else "MERCHANT_BALANCE_INSUFFICIENT"
            self.ledger.fail(entry.order_no, short)

    def _final(self, entry: Entry, code: str) -> Answer:
        if self.behaviour.notify_final:
            self._on_final(entry)
        return Answer(entry, code)

    async def _settle_later(self, order_no: str, *, succeed: bool) -> None:
        await asyncio.sleep(self.behaviour.settle_delay_s(self.rng))
        entry = self.ledger.get(order_no)
        if entry is None or entry.final:
            return  # closed meanwhile
        if succeed:
            self._execute(entry)
        else:
            self.ledger.fail(order_no, "INSUFFICIENT_FUNDS")
        self._on_final(entry)
