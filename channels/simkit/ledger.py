"""The simulated channel's books: accounts, the merchant float, one :class:`Entry` per channel order number.

Ledger guarantees
-----------------

* At most one debit per channel order number (see :meth:`Ledger.debits_by_order`).
* A repeated order number with identical parameters returns the existing
  entry; with different parameters it raises :class:`OrderNoConflict`.
* Closing an unknown order number leaves a tombstone: a later order with that
  number raises :class:`OrderClosed` and nothing executes.
* Every order that ends (succeeds or fails) is booked on the day it ended, in
  the ledger's ``statement_tz``: :meth:`Ledger.booked_on` lists a day's orders
  in booking order, so a statement is one pass over its day.
* Every per-order operation is O(1) however long the run: refund sums and
  debit counts are running totals kept as orders are recorded, executed and
  failed, never a scan of the ledger (only :meth:`Ledger.dump` and
  :meth:`Ledger.totals`, for inspection, walk it).
"""

from __future__ import annotations

import enum
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import Any

from channels.statement import CHINA_TIME


class EntryKind(enum.StrEnum):
    WITHHOLD = "withhold"
    PAYOUT = "payout"
    REFUND = "refund"


class EntryStatus(enum.StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class LedgerError(Exception):
    """Base of the ledger's refusals."""


class OrderNoConflict(LedgerError):
    """The order number exists with different parameters."""


class OrderClosed(LedgerError):
    """The order number was closed before it was ever received; it can never execute."""


class InsufficientBalance(LedgerError):
    """The source account cannot cover the amount; nothing moved."""


MERCHANT_FLOAT = "merchant:float"


@dataclass(slots=True)
class Entry:
    """One order as the simulated channel sees it.

    ``code`` is a simulator-neutral normalized code (``OK``, ``PROCESSING``,
    ``INSUFFICIENT_FUNDS`` ...); each simulator maps it to its raw codes.
    ``account`` is the payer (withhold, refund) or payee (payout) account.
    ``settled_at`` is when the order ended (its booking time); ``fee`` what the
    channel charged for it (minor units, set when the money moved).
    """

    order_no: str
    kind: EntryKind
    amount: int
    currency: str
    account: str
    params_hash: str
    txn_id: str
    created_at: float
    status: EntryStatus = EntryStatus.PENDING
    code: str = "PROCESSING"
    settled_at: float | None = None
    original_order_no: str = ""
    notify_url: str = ""
    fee: int = 0

    @property
    def final(self) -> bool:
        return self.status is not EntryStatus.PENDING


@dataclass(frozen=True, slots=True)
class Movement:
    """Money moved for one order: ``amount`` from ``debit_account`` to ``credit_account``."""

    order_no: str
    kind: EntryKind
    debit_account: str
    credit_account: str
    amount: int
    at: float


def mask_account(account: str) -> str:
    """Keep the last 4 characters of an account number."""
    if account == MERCHANT_FLOAT:
        return account
    return "*" * max(len(account) - 4, 0) + account[-4:]


def params_hash(params: Mapping[str, Any]) -> str:
    """Canonical hash of an order's parameters, for duplicate detection."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Ledger:
    """Accounts, the merchant float and one entry per channel order number.

    All methods are synchronous and never await, so each call is atomic on the
    event loop: concurrent duplicates cannot interleave inside one. Payer
    accounts are created on first use with ``default_balance`` (minor units).
    ``fee_bps`` is the fee charged on withholds and payouts that move money,
    in basis points of the amount, rounded half up to the fen as the wallets
    round (refunds are charged nothing; replace :meth:`fee_for` for another
    schedule);
    ``statement_tz`` is the timezone the channel's business days are cut in.
    """

    def __init__(
        self,
        *,
        default_balance: int = 10_000_000,
        merchant_float: int = 10_000_000_000,
        currency: str = "CNY",
        txn_prefix: str = "T",
        clock: Callable[[], float] = time.time,
        fee_bps: int = 0,
        statement_tz: tzinfo = CHINA_TIME,
    ) -> None:
        self.default_balance = default_balance
        self.currency = currency
        self.fee_bps = fee_bps
        self.statement_tz = statement_tz
        self._clock = clock
        self._txn_prefix = txn_prefix
        self._balances: dict[str, int] = {MERCHANT_FLOAT: merchant_float}
        self._frozen: set[str] = set()
        self._entries: dict[str, Entry] = {}
        self._closed: dict[str, float] = {}
        self._movements: list[Movement] = []
        self._booked: dict[date, list[str]] = {}
        self._debits: dict[str, int] = {}  # order number -> times money moved for it
        self._refunded: dict[str, int] = {}  # original order number -> its refunds not FAILED
        self._by_txn: dict[str, str] = {}  # the channel's transaction id -> order number
        self._seq = 0

    def now(self) -> float:
        """The ledger's clock (epoch seconds): what it stamps orders with."""
        return self._clock()

    # -- accounts --

    def balance(self, account: str) -> int:
        return self._balances.setdefault(account, self.default_balance)

    def set_balance(self, account: str, amount: int) -> None:
        self._balances[account] = amount

    @property
    def merchant_balance(self) -> int:
        """The merchant float: the payout source, reported by a balance query."""
        return self._balances[MERCHANT_FLOAT]

    def freeze(self, account: str) -> None:
        self._frozen.add(account)

    def unfreeze(self, account: str) -> None:
        self._frozen.discard(account)

    def is_frozen(self, account: str) -> bool:
        return account in self._frozen

    # -- orders --

    def record(
        self,
        order_no: str,
        kind: EntryKind,
        amount: int,
        currency: str,
        account: str,
        params: Mapping[str, Any],
        *,
        original_order_no: str = "",
        notify_url: str = "",
    ) -> tuple[Entry, bool]:
        """Receive an order: ``(entry, True)`` when new, ``(existing, False)`` for an identical repeat.

        Raises OrderNoConflict (same number, other parameters) or OrderClosed
        (the number was closed earlier). Nothing moves yet; see :meth:`execute`.
        """
        if order_no in self._closed:
            raise OrderClosed(order_no)
        digest = params_hash({"kind": str(kind), **params})
        existing = self._entries.get(order_no)
        if existing is not None:
            if existing.params_hash != digest:
                raise OrderNoConflict(order_no)
            return existing, False
        self._seq += 1
        entry = Entry(
            order_no=order_no,
            kind=kind,
            amount=amount,
            currency=currency,
            account=account,
            params_hash=digest,
            txn_id=f"{self._txn_prefix}{self._seq:012d}",
            created_at=self._clock(),
            original_order_no=original_order_no,
            notify_url=notify_url,
        )
        self._entries[order_no] = entry
        self._by_txn[entry.txn_id] = order_no
        if kind is EntryKind.REFUND:
            self._refunded[original_order_no] = self._refunded.get(original_order_no, 0) + amount
        return entry, True

    def get(self, order_no: str) -> Entry | None:
        return self._entries.get(order_no)

    def by_txn_id(self, txn_id: str) -> Entry | None:
        """The entry the channel gave transaction id ``txn_id``."""
        order_no = self._by_txn.get(txn_id)
        return self._entries.get(order_no) if order_no is not None else None

    def is_closed(self, order_no: str) -> bool:
        return order_no in self._closed

    def execute(self, order_no: str) -> Entry:
        """Move the money for a pending order, once; the order SUCCEEDS.

        Idempotent for an order that already succeeded. Raises
        InsufficientBalance (nothing moved, the order stays pending for the
        caller to fail) or LedgerError for a failed or unknown order.
        """
        entry = self._require(order_no)
        if entry.status is EntryStatus.SUCCEEDED:
            return entry
        if entry.status is EntryStatus.FAILED:
            raise LedgerError(f"{order_no}: cannot execute a failed order")
        source, target = self._route(entry)
        if self.balance(source) < entry.amount:
            raise InsufficientBalance(order_no)
        self._balances[source] -= entry.amount
        self._balances[target] = self.balance(target) + entry.amount
        self._movements.append(Movement(order_no, entry.kind, source, target, entry.amount, self._clock()))
        entry.fee = self.fee_for(entry.kind, entry.amount)
        self._debits[order_no] = self._debits.get(order_no, 0) + 1
        entry.status = EntryStatus.SUCCEEDED
        entry.code = "OK"
        entry.settled_at = self._clock()
        self._book(entry)
        return entry

    def fail(self, order_no: str, code: str) -> Entry:
        """End a pending order as FAILED with ``code``; nothing moves. A final order is returned unchanged."""
        entry = self._require(order_no)
        if entry.status is EntryStatus.PENDING:
            entry.status = EntryStatus.FAILED
            entry.code = code
            entry.settled_at = self._clock()
            self._book(entry)
            if entry.kind is EntryKind.REFUND:
                self._refunded[entry.original_order_no] -= entry.amount
        return entry

    def close(self, order_no: str) -> Entry | None:
        """Close an order number. Unknown: tombstone it and return None. Known: return the entry unchanged."""
        entry = self._entries.get(order_no)
        if entry is None:
            self._closed.setdefault(order_no, self._clock())
        return entry

    def refunded_total(self, original_order_no: str) -> int:
        """Sum of refunds against an order that succeeded or may still succeed (a running total: O(1))."""
        return self._refunded.get(original_order_no, 0)

    def fee_for(self, kind: EntryKind, amount: int) -> int:
        """What the channel charges for an order of ``kind`` that moves ``amount``."""
        return 0 if kind is EntryKind.REFUND else (amount * self.fee_bps + 5_000) // 10_000

    # -- the books of a day --

    def booking_day(self, at: float) -> date:
        """The business day (in ``statement_tz``) of the epoch time ``at``."""
        return datetime.fromtimestamp(at, self.statement_tz).date()

    def booked_on(self, day: date) -> Sequence[str]:
        """Order numbers of the orders that ended on ``day``, in booking order.

        The live, append-only list: read ``len()`` first and index up to it for
        a consistent cut (a statement may be rendered in a worker thread while
        orders keep ending).
        """
        return self._booked.get(day, ())

    def _book(self, entry: Entry) -> None:
        assert entry.settled_at is not None
        self._booked.setdefault(self.booking_day(entry.settled_at), []).append(entry.order_no)

    # -- inspection --

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def movements(self) -> list[Movement]:
        return list(self._movements)

    def debits_by_order(self) -> dict[str, int]:
        """How many times money moved per order number (the invariant: never above 1)."""
        return dict(self._debits)

    def debit_count(self, order_no: str) -> int:
        return self._debits.get(order_no, 0)

    def totals(self) -> dict[str, int]:
        """Money moved per kind (minor units) and the merchant float."""
        result = {f"{kind}_total": 0 for kind in EntryKind}
        for movement in self._movements:
            result[f"{movement.kind}_total"] += movement.amount
        result["merchant_float"] = self.merchant_balance
        result["orders"] = len(self._entries)
        result["debits"] = len(self._movements)
        return result

    def dump(self) -> dict[str, Any]:
        """JSON-able snapshot; account numbers are masked to their last 4."""
        return {
            "totals": self.totals(),
            "entries": [
                {
                    "order_no": e.order_no,
                    "kind": str(e.kind),
                    "amount": e.amount,
                    "currency": e.currency,
                    "account": mask_account(e.account),
                    "status": str(e.status),
                    "code": e.code,
                    "txn_id": e.txn_id,
                    "created_at": e.created_at,
                    "settled_at": e.settled_at,
                    "fee": e.fee,
                    "original_order_no": e.original_order_no,
                    "debits": self.debit_count(e.order_no),
                }
                for e in self._entries.values()
            ],
            "closed": sorted(self._closed),
            "debits_by_order": self.debits_by_order(),
        }

    def to_json(self) -> str:
        return json.dumps(self.dump(), sort_keys=True)

    def _require(self, order_no: str) -> Entry:
        entry = self._entries.get(order_no)
        if entry is None:
            raise LedgerError(f"{order_no}: no such order")
        return entry

    def _route(self, entry: Entry) -> tuple[str, str]:
        if entry.kind is EntryKind.WITHHOLD:
            return entry.account, MERCHANT_FLOAT
        return MERCHANT_FLOAT, entry.account
