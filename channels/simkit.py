"""Toolkit shared by the channel simulators (sandbox, Alipay, WeChat Pay).

A simulator is a small aiohttp server that behaves like a bank or wallet:
it keeps a :class:`Ledger` (accounts, the merchant float, one entry per
channel order number), decides each order's fate from a :class:`Behaviour`
(latency, declines, pending orders, timeouts, 5xx, outages) and sends signed
asynchronous callbacks with :class:`CallbackSender`. Each simulator subclasses
:class:`SimulatorBase` (all of that plus serving and the admin routes) and adds
its protocol. Tests, the demo and the chaos run drive simulators through
:class:`SimulatorHandle`; the
:data:`SIMULATORS` map and :func:`create_simulator` find one by adapter name.

Magic amounts
-------------

When ``Behaviour.magic`` is on (the default) the fate of a money order
(withhold, payout, refund) is fixed by ``amount % 100`` (minor units), before
any random mix is drawn. ``12301`` (123.01 CNY) is therefore always declined
for insufficient funds::

    amount % 100  fate                 what the simulator does
    ------------  -------------------  ------------------------------------------------
    01            INSUFFICIENT_FUNDS   declines, payer-attributable, nothing moved
    02            ACCOUNT_FROZEN       declines, payer-attributable, nothing moved
    03            CHANNEL_BUSY         declines, nothing executed, safe elsewhere
    04            BANK_NOT_SUPPORTED   declines, nothing executed, safe elsewhere
    05            PENDING_THEN_SUCCEED answers "processing"; after the settle delay the
                                       money moves, the order SUCCEEDS, a callback goes out
    06            PENDING_THEN_FAIL    answers "processing"; after the settle delay the
                                       order FAILS (insufficient funds), a callback goes out
    07            TIMEOUT              executes and moves the money, then holds the
                                       response past the client's timeout and drops it
    08            ERROR_5XX            executes and moves the money, then answers HTTP 500
    09            UNMAPPED_CODE        executes successfully but answers with a raw code
                                       that is in no error table (a query says success)
    anything else random mix           ``Behaviour`` ratios; by default every order succeeds

An outage (``Behaviour.outage`` or a current ``outage_windows`` entry) refuses
every order request before any processing: nothing is recorded or executed.

Ledger guarantees
-----------------

* At most one debit per channel order number (see :meth:`Ledger.debits_by_order`).
* A repeated order number with identical parameters returns the existing
  entry; with different parameters it raises :class:`OrderNoConflict`.
* Closing an unknown order number leaves a tombstone: a later order with that
  number raises :class:`OrderClosed` and nothing executes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import hashlib
import importlib
import json
import logging
import math
import numbers
import random
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NoReturn, Protocol, Self, runtime_checkable

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from channels.registry import ChannelConfigError

log = logging.getLogger(__name__)


# --- fates and behaviour -----------------------------------------------------


class Fate(enum.StrEnum):
    """What a simulator does with one new money order."""

    SUCCEED = "succeed"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    ACCOUNT_FROZEN = "account_frozen"
    CHANNEL_BUSY = "channel_busy"
    BANK_NOT_SUPPORTED = "bank_not_supported"
    PENDING_THEN_SUCCEED = "pending_then_succeed"
    PENDING_THEN_FAIL = "pending_then_fail"
    TIMEOUT = "timeout"
    ERROR_5XX = "error_5xx"
    UNMAPPED_CODE = "unmapped_code"


MAGIC: dict[int, Fate] = {
    1: Fate.INSUFFICIENT_FUNDS,
    2: Fate.ACCOUNT_FROZEN,
    3: Fate.CHANNEL_BUSY,
    4: Fate.BANK_NOT_SUPPORTED,
    5: Fate.PENDING_THEN_SUCCEED,
    6: Fate.PENDING_THEN_FAIL,
    7: Fate.TIMEOUT,
    8: Fate.ERROR_5XX,
    9: Fate.UNMAPPED_CODE,
}

# Outcomes the random decline mix may draw, keyed by their normalized name.
DECLINE_KINDS: tuple[str, ...] = ("insufficient_funds", "account_frozen", "channel_busy", "bank_not_supported")

_Z99 = 2.3263478740408408  # standard normal quantile at 0.99


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass
class Behaviour:
    """How a simulator behaves. Mutable at runtime (admin endpoint, tests); always valid.

    Ratios are probabilities in [0, 1] drawn per new order; their sum must not
    exceed 1 (the rest succeeds). Times: ``*_ms`` milliseconds, ``*_s``
    seconds, ``outage_windows`` are ``[start, end)`` epoch seconds.

    * ``p50_ms``/``p99_ms``: response latency, lognormal with these quantiles; 0 = none.
    * ``declines``: probability per kind in :data:`DECLINE_KINDS`.
    * ``pending_ratio``: answer "processing", settle after ``settle_after_ms``
      (uniform in the range); ``settle_success_ratio`` of those succeed.
    * ``timeout_ratio``: execute, hold the response ``timeout_hold_s``, drop it.
    * ``error_5xx_ratio``: execute, answer HTTP 500.
    * ``unmapped_ratio``: execute, answer with an unmapped raw code.
    * ``outage``/``outage_windows``: refuse requests before any processing.
    * ``notify_final``: also send a callback for orders that end at once (not
      only for pending ones that settle later).
    * ``magic``: the ``amount % 100`` table in the module docstring.
    """

    p50_ms: float = 0.0
    p99_ms: float = 0.0
    declines: dict[str, float] = field(default_factory=dict)
    pending_ratio: float = 0.0
    settle_after_ms: tuple[int, int] = (200, 500)
    settle_success_ratio: float = 1.0
    timeout_ratio: float = 0.0
    error_5xx_ratio: float = 0.0
    unmapped_ratio: float = 0.0
    timeout_hold_s: float = 15.0
    outage_windows: list[tuple[float, float]] = field(default_factory=list)
    outage: bool = False
    notify_final: bool = False
    magic: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        self.validate("behaviour")

    # -- construction and updates --

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], key: str = "behaviour") -> Behaviour:
        """Build from a config mapping; raises ChannelConfigError naming ``key.<field>``."""
        if not isinstance(settings, Mapping):
            raise ChannelConfigError(key, "must be a table of behaviour settings")
        known = {f.name for f in fields(cls)}
        for name in settings:
            if name not in known:
                raise ChannelConfigError(
                    f"{key}.{name}", f"unknown behaviour setting (known: {', '.join(sorted(known))})"
                )
        values = dict(settings)
        if "settle_after_ms" in values:
            values["settle_after_ms"] = _pair(values["settle_after_ms"], f"{key}.settle_after_ms")
        if "outage_windows" in values:
            raw = values["outage_windows"]
            if not isinstance(raw, list | tuple):
                raise ChannelConfigError(f"{key}.outage_windows", "must be a list of [start, end] pairs")
            values["outage_windows"] = [_pair(w, f"{key}.outage_windows[{i}]") for i, w in enumerate(raw)]
        if "declines" in values:
            raw = values["declines"]
            if not isinstance(raw, Mapping):
                raise ChannelConfigError(f"{key}.declines", "must be a table of kind = probability")
            values["declines"] = dict(raw)
        behaviour = cls.__new__(cls)
        for f in fields(cls):
            default: Any = f.default_factory() if callable(f.default_factory) else f.default
            setattr(behaviour, f.name, values.get(f.name, default))
        behaviour.validate(key)
        return behaviour

    def update(self, changes: Mapping[str, Any], key: str = "behaviour") -> None:
        """Apply ``changes`` in place, all or nothing (validated first)."""
        merged = {**self.to_settings(), **changes}
        fresh = Behaviour.from_settings(merged, key)
        for f in fields(self):
            setattr(self, f.name, getattr(fresh, f.name))

    def to_settings(self) -> dict[str, Any]:
        """A JSON-able mapping that :meth:`from_settings` accepts."""
        return {
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "declines": dict(self.declines),
            "pending_ratio": self.pending_ratio,
            "settle_after_ms": list(self.settle_after_ms),
            "settle_success_ratio": self.settle_success_ratio,
            "timeout_ratio": self.timeout_ratio,
            "error_5xx_ratio": self.error_5xx_ratio,
            "unmapped_ratio": self.unmapped_ratio,
            "timeout_hold_s": self.timeout_hold_s,
            "outage_windows": [list(w) for w in self.outage_windows],
            "outage": self.outage,
            "notify_final": self.notify_final,
            "magic": self.magic,
            "seed": self.seed,
        }

    def validate(self, key: str = "behaviour") -> None:
        """Raise ChannelConfigError naming ``key.<field>`` when a value is out of range."""
        for name in ("p50_ms", "p99_ms", "timeout_hold_s"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0 or not math.isfinite(value):
                raise ChannelConfigError(f"{key}.{name}", f"must be a finite number >= 0, got {value!r}")
        if self.p99_ms < self.p50_ms:
            raise ChannelConfigError(f"{key}.p99_ms", "must be >= p50_ms")
        if self.p50_ms == 0 and self.p99_ms > 0:
            raise ChannelConfigError(f"{key}.p50_ms", "must be > 0 when p99_ms is set")
        if not isinstance(self.declines, dict):
            raise ChannelConfigError(f"{key}.declines", "must be a table of kind = probability")
        for kind, ratio in self.declines.items():
            if kind not in DECLINE_KINDS:
                raise ChannelConfigError(
                    f"{key}.declines.{kind}", f"unknown decline kind (known: {', '.join(DECLINE_KINDS)})"
                )
            _check_ratio(ratio, f"{key}.declines.{kind}")
        for name in ("pending_ratio", "settle_success_ratio", "timeout_ratio", "error_5xx_ratio", "unmapped_ratio"):
            _check_ratio(getattr(self, name), f"{key}.{name}")
        total = sum(self.declines.values()) + self.pending_ratio + self.timeout_ratio
        total += self.error_5xx_ratio + self.unmapped_ratio
        if total > 1.0 + 1e-9:
            raise ChannelConfigError(key, f"declines and ratios add up to {total:.3f} > 1")
        low, high = _pair(self.settle_after_ms, f"{key}.settle_after_ms")
        if low < 0 or high < low:
            raise ChannelConfigError(f"{key}.settle_after_ms", "must be [low, high] with 0 <= low <= high")
        for i, window in enumerate(self.outage_windows):
            start, end = _pair(window, f"{key}.outage_windows[{i}]")
            if not start < end:
                raise ChannelConfigError(f"{key}.outage_windows[{i}]", "start must be before end")
        for name in ("outage", "notify_final", "magic"):
            if not isinstance(getattr(self, name), bool):
                raise ChannelConfigError(f"{key}.{name}", "must be true or false")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise ChannelConfigError(f"{key}.seed", "must be an integer")

    # -- decisions --

    def in_outage(self, now: float | None = None) -> bool:
        """True while requests must be refused before any processing."""
        if self.outage:
            return True
        at = time.time() if now is None else now
        return any(start <= at < end for start, end in self.outage_windows)

    def decide(self, amount: int, rng: random.Random) -> Fate:
        """The fate of a new money order: magic amount first, then the random mix."""
        if self.magic:
            magic = MAGIC.get(amount % 100)
            if magic is not None:
                return magic
        draw = rng.random()
        mix: list[tuple[float, Fate]] = [(self.declines.get(kind, 0.0), Fate(kind)) for kind in DECLINE_KINDS]
        mix += [
            (self.pending_ratio, Fate.PENDING_THEN_SUCCEED),
            (self.timeout_ratio, Fate.TIMEOUT),
            (self.error_5xx_ratio, Fate.ERROR_5XX),
            (self.unmapped_ratio, Fate.UNMAPPED_CODE),
        ]
        edge = 0.0
        for ratio, fate in mix:
            edge += ratio
            if draw < edge:
                if fate is Fate.PENDING_THEN_SUCCEED and rng.random() >= self.settle_success_ratio:
                    return Fate.PENDING_THEN_FAIL
                return fate
        return Fate.SUCCEED

    def latency_s(self, rng: random.Random) -> float:
        """One response latency sample in seconds (0 when latency is off)."""
        if self.p50_ms <= 0:
            return 0.0
        mu = math.log(self.p50_ms)
        sigma = (math.log(self.p99_ms) - mu) / _Z99 if self.p99_ms > self.p50_ms else 0.0
        return rng.lognormvariate(mu, sigma) / 1000.0

    def settle_delay_s(self, rng: random.Random) -> float:
        low, high = self.settle_after_ms
        return rng.uniform(low, high) / 1000.0


def _check_ratio(value: object, key: str) -> None:
    if not _is_number(value) or not 0.0 <= float(value) <= 1.0:  # type: ignore[arg-type]
        raise ChannelConfigError(key, f"must be a probability in [0, 1], got {value!r}")


def _pair(value: object, key: str) -> tuple[Any, Any]:
    if not isinstance(value, list | tuple) or len(value) != 2 or not all(_is_number(v) for v in value):
        raise ChannelConfigError(key, f"must be a [low, high] pair of numbers, got {value!r}")
    return value[0], value[1]


# --- ledger ------------------------------------------------------------------


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


@dataclass
class Entry:
    """One order as the simulated channel sees it.

    ``code`` is a simulator-neutral normalized code (``OK``, ``PROCESSING``,
    ``INSUFFICIENT_FUNDS`` ...); each simulator maps it to its raw codes.
    ``account`` is the payer (withhold, refund) or payee (payout) account.
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
    """

    def __init__(
        self,
        *,
        default_balance: int = 10_000_000,
        merchant_float: int = 10_000_000_000,
        currency: str = "CNY",
        txn_prefix: str = "T",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.default_balance = default_balance
        self.currency = currency
        self._clock = clock
        self._txn_prefix = txn_prefix
        self._balances: dict[str, int] = {MERCHANT_FLOAT: merchant_float}
        self._frozen: set[str] = set()
        self._entries: dict[str, Entry] = {}
        self._closed: dict[str, float] = {}
        self._movements: list[Movement] = []
        self._seq = 0

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
        return entry, True

    def get(self, order_no: str) -> Entry | None:
        return self._entries.get(order_no)

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
        entry.status = EntryStatus.SUCCEEDED
        entry.code = "OK"
        entry.settled_at = self._clock()
        return entry

    def fail(self, order_no: str, code: str) -> Entry:
        """End a pending order as FAILED with ``code``; nothing moves. A final order is returned unchanged."""
        entry = self._require(order_no)
        if entry.status is EntryStatus.PENDING:
            entry.status = EntryStatus.FAILED
            entry.code = code
            entry.settled_at = self._clock()
        return entry

    def close(self, order_no: str) -> Entry | None:
        """Close an order number. Unknown: tombstone it and return None. Known: return the entry unchanged."""
        entry = self._entries.get(order_no)
        if entry is None:
            self._closed.setdefault(order_no, self._clock())
        return entry

    def refunded_total(self, original_order_no: str) -> int:
        """Sum of refunds against an order that succeeded or may still succeed."""
        return sum(
            e.amount
            for e in self._entries.values()
            if e.kind is EntryKind.REFUND
            and e.original_order_no == original_order_no
            and e.status is not EntryStatus.FAILED
        )

    # -- inspection --

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def movements(self) -> list[Movement]:
        return list(self._movements)

    def debits_by_order(self) -> dict[str, int]:
        """How many times money moved per order number (the invariant: never above 1)."""
        counts: dict[str, int] = {}
        for movement in self._movements:
            counts[movement.order_no] = counts.get(movement.order_no, 0) + 1
        return counts

    def debit_count(self, order_no: str) -> int:
        return sum(1 for m in self._movements if m.order_no == order_no)

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


# --- background work and callbacks -------------------------------------------


class TaskSet:
    """Background tasks owned by a simulator; cancelled together on stop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("simulator background task failed", exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def join(self) -> None:
        """Wait until no task is left (new tasks spawned meanwhile are waited for too).

        Bound the wait with ``asyncio.timeout`` around the call.
        """
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()


AckCheck = Callable[[int, bytes], bool]
Signer = Callable[[bytes], Mapping[str, str]]


def body_ack(expected: bytes) -> AckCheck:
    """An ack check: HTTP 200 whose stripped body equals ``expected`` (case-insensitive)."""
    want = expected.strip().lower()

    def check(status: int, body: bytes) -> bool:
        return status == 200 and body.strip().lower() == want

    return check


@dataclass(frozen=True, slots=True)
class CallbackPolicy:
    """Retry schedule: try at once, then wait ``retry_delay_s`` × ``backoff``^n (capped)."""

    max_attempts: int = 8
    retry_delay_s: float = 0.2
    backoff: float = 2.0
    max_delay_s: float = 10.0
    timeout_s: float = 5.0

    def delay(self, attempt: int) -> float:
        """Wait before attempt number ``attempt`` (1-based; the first has none)."""
        if attempt <= 1:
            return 0.0
        return float(min(self.retry_delay_s * self.backoff ** (attempt - 2), self.max_delay_s))


@dataclass
class CallbackDelivery:
    """One notification and what became of it (for tests and the admin view)."""

    key: str
    url: str
    attempts: int = 0
    statuses: list[int | None] = field(default_factory=list)
    acked: bool = False
    done: bool = False


class CallbackSender:
    """POSTs signed notifications and retries until the receiver acknowledges.

    ``sign(body)`` returns the request headers for one attempt (a fresh
    timestamp and nonce each time). ``is_ack(status, body)`` says whether the
    receiver acknowledged; delivery stops after ``policy.max_attempts``.
    """

    def __init__(self, *, is_ack: AckCheck, policy: CallbackPolicy | None = None) -> None:
        self.is_ack = is_ack
        self.policy = policy or CallbackPolicy()
        self.deliveries: list[CallbackDelivery] = []
        self._session: aiohttp.ClientSession | None = None
        self._tasks = TaskSet()

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.policy.timeout_s))

    async def stop(self) -> None:
        await self._tasks.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def send(self, key: str, url: str, body: bytes, sign: Signer) -> CallbackDelivery:
        """Schedule delivery in the background; returns its record at once."""
        delivery = CallbackDelivery(key=key, url=url)
        self.deliveries.append(delivery)
        self._tasks.spawn(self._deliver(delivery, body, sign))
        return delivery

    async def join(self) -> None:
        """Wait until every scheduled delivery acked or gave up (bound it with ``asyncio.timeout``)."""
        await self._tasks.join()

    async def _deliver(self, delivery: CallbackDelivery, body: bytes, sign: Signer) -> None:
        try:
            for attempt in range(1, self.policy.max_attempts + 1):
                await asyncio.sleep(self.policy.delay(attempt))
                delivery.attempts = attempt
                status, reply = await self._post(delivery.url, body, sign(body))
                delivery.statuses.append(status)
                if status is not None and self.is_ack(status, reply):
                    delivery.acked = True
                    return
            log.warning("callback %s to %s not acknowledged after %d attempts", delivery.key, delivery.url, attempt)
        finally:
            delivery.done = True

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int | None, bytes]:
        if self._session is None:
            raise RuntimeError("CallbackSender used before start()")
        try:
            async with self._session.post(url, data=body, headers=dict(headers)) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("callback to %s failed: %s", url, type(exc).__name__)
            return None, b""


# --- the order desk --------------------------------------------------------------


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


async def hold_then_drop(request: web.Request, hold_s: float, released: asyncio.Event | None = None) -> NoReturn:
    """Deliver a TIMEOUT fate: keep the client waiting ``hold_s``, then close the connection unanswered.

    ``released`` (set when the simulator stops) ends the hold early. Never returns.
    """
    try:
        async with asyncio.timeout(hold_s):
            await (released.wait() if released is not None else asyncio.Event().wait())
    except TimeoutError:
        pass
    if request.transport is not None:
        request.transport.close()
    raise asyncio.CancelledError


# --- serving -----------------------------------------------------------------


def pem_private(key: rsa.RSAPrivateKey) -> str:
    """A simulator-generated merchant key as the PKCS#8 PEM an adapter's settings take."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def pem_public(key: rsa.RSAPublicKey) -> str:
    """A public key as SubjectPublicKeyInfo PEM."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class HttpServer:
    """An aiohttp application bound to one host/port, with explicit start/stop."""

    def __init__(self, app: web.Application, *, shutdown_timeout: float = 1.0) -> None:
        self.app = app
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._runner is not None:
            return self.base_url
        runner = web.AppRunner(self.app, shutdown_timeout=self._shutdown_timeout, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        self.base_url = f"http://{bound_host}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


@runtime_checkable
class SimulatorHandle(Protocol):
    """What tests, the demo and the chaos run need from any simulator."""

    @property
    def ledger(self) -> Ledger: ...

    @property
    def behaviour(self) -> Behaviour: ...

    @property
    def base_url(self) -> str:
        """``http://host:port`` once started, else empty."""
        ...

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving; returns the base URL. Port 0 picks a free port."""
        ...

    async def stop(self) -> None:
        """Stop serving and cancel background work; idempotent."""
        ...

    def adapter_settings(self) -> dict[str, Any]:
        """Settings for the matching adapter's ChannelSpec so it talks to this simulator."""
        ...

    def sms_code(self, sign_ref: str) -> str:
        """The SMS code "sent" for a signing; raises KeyError for an unknown ``sign_ref``."""
        ...


# adapter name -> "module:create"; imported lazily.
SIMULATORS: dict[str, str] = {
    "sandbox": "channels.sandbox.simulator:create",
    "alipay": "channels.alipay.simulator:create",
    "wechatpay": "channels.wechatpay.simulator:create",
}


def create_simulator(adapter: str, behaviour: Behaviour | None = None, **kw: Any) -> SimulatorHandle:
    """Build (not start) the simulator for ``adapter``; ``kw`` go to its ``create``."""
    target = SIMULATORS.get(adapter)
    if target is None:
        raise KeyError(f"no simulator for adapter {adapter!r} (known: {', '.join(sorted(SIMULATORS))})")
    module_name, _, attr = target.partition(":")
    create: Callable[..., SimulatorHandle] = getattr(importlib.import_module(module_name), attr)
    return create(behaviour if behaviour is not None else Behaviour(), **kw)


def admin_routes(handle: SimulatorHandle) -> list[web.RouteDef]:
    """Test/operator endpoints, served even during an outage.

    ``GET /_admin/ledger``, ``GET|POST /_admin/behaviour`` (POST applies a
    partial JSON update, 400 naming the bad field), ``GET /_admin/sms/{sign_ref}``.
    """

    async def ledger(request: web.Request) -> web.Response:
        return web.json_response(handle.ledger.dump())

    async def get_behaviour(request: web.Request) -> web.Response:
        return web.json_response(handle.behaviour.to_settings())

    async def set_behaviour(request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ChannelConfigError("behaviour", "must be a JSON object")
            handle.behaviour.update(changes)
        except (ValueError, ChannelConfigError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(handle.behaviour.to_settings())

    async def sms(request: web.Request) -> web.Response:
        try:
            code = handle.sms_code(request.match_info["sign_ref"])
        except KeyError:
            return web.json_response({"error": "unknown sign_ref"}, status=404)
        return web.json_response({"sms_code": code})

    return [
        web.get("/_admin/ledger", ledger),
        web.get("/_admin/behaviour", get_behaviour),
        web.post("/_admin/behaviour", set_behaviour),
        web.get("/_admin/sms/{sign_ref}", sms),
    ]


def adapter_timeouts(behaviour: Behaviour) -> dict[str, float]:
    """``timeout_s`` / ``connect_timeout_s`` adapter settings that run out before a TIMEOUT fate's held answer."""
    timeout = max(0.5, min(5.0, behaviour.timeout_hold_s / 2))
    return {"timeout_s": timeout, "connect_timeout_s": min(1.0, timeout / 2)}


class SimulatorBase:
    """What every simulator shares: most of :class:`SimulatorHandle`, the order desk, callbacks, serving.

    It owns the ledger, the behaviour, an :class:`OrderDesk` (``self.desk``)
    that reports final entries to :meth:`_notify`, a :class:`CallbackSender`
    (``self.callbacks``) and the :class:`HttpServer` for ``app`` (the admin
    routes are added to it). A simulator builds its aiohttp application,
    passes it here, and implements :meth:`_notify`, :meth:`_refusal`,
    :meth:`adapter_settings` and :meth:`sms_code`.

    ``stop()`` stops serving first (held TIMEOUT responses are released at
    once), then cancels settlements and callbacks; ``start()`` may follow
    again, on the same port, with the same ledger.
    """

    def __init__(
        self,
        behaviour: Behaviour,
        ledger: Ledger,
        app: web.Application,
        *,
        is_ack: AckCheck,
        notify_url: str | None = None,
        callback_policy: CallbackPolicy | None = None,
        close_pending: bool = True,
    ) -> None:
        self._behaviour = behaviour
        self._ledger = ledger
        self.notify_url = notify_url or ""
        self._tasks = TaskSet()
        self.callbacks = CallbackSender(is_ack=is_ack, policy=callback_policy)
        self.desk = OrderDesk(
            ledger, behaviour, self._tasks, self._notify, close_pending=close_pending, refusal=self._refusal
        )
        self._stopping = asyncio.Event()
        app.add_routes(admin_routes(self))
        self._server = HttpServer(app)

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    @property
    def behaviour(self) -> Behaviour:
        return self._behaviour

    @property
    def base_url(self) -> str:
        return self._server.base_url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._stopping.clear()
        await self.callbacks.start()
        return await self._server.start(host, port)

    async def stop(self) -> None:
        self._stopping.set()
        await self._server.stop()
        await self._tasks.close()
        await self.callbacks.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def settled(self) -> None:
        """Wait until pending orders settled and their callbacks were acked or gave up.

        Bound it with ``asyncio.timeout``.
        """
        await self._tasks.join()
        await self.callbacks.join()

    def adapter_settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def sms_code(self, sign_ref: str) -> str:
        raise NotImplementedError

    async def _hold_then_drop(self, request: web.Request) -> NoReturn:
        """Deliver a TIMEOUT fate (see :func:`hold_then_drop`); ``stop()`` ends the hold."""
        await hold_then_drop(request, self._behaviour.timeout_hold_s, self._stopping)

    def _refusal(self, code: str) -> Exception:
        """The protocol's rejection for ``ORDER_CLOSED`` or ``ORDER_NO_CONFLICT`` (``self.desk.submit`` raises it)."""
        raise NotImplementedError

    def _notify(self, entry: Entry) -> None:
        """Send the signed callback for an entry that just became final (through ``self.callbacks``)."""
        raise NotImplementedError


def cli_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """Arguments every simulator CLI takes; a simulator adds its credentials."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0 = any free port)")
    parser.add_argument("--notify-url", default=None, help="callback URL for orders that carry none")
    parser.add_argument("--behaviour-json", default="{}", help="Behaviour settings as a JSON object")
    return parser


def behaviour_from_json(text: str) -> Behaviour:
    """Parse ``--behaviour-json``; raises ChannelConfigError on bad JSON or values."""
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ChannelConfigError("behaviour", f"not valid JSON: {exc}") from exc
    return Behaviour.from_settings(settings, "behaviour")


async def serve_until_signalled(
    handle: SimulatorHandle,
    host: str,
    port: int,
    *,
    announce: Callable[[str], None] = print,
    stop_signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    stopped: Awaitable[Any] | None = None,
) -> int:
    """Start ``handle``, announce its URL, run until a stop signal (or ``stopped``), stop it."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in stop_signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, done.set)
            installed.append(sig)
    try:
        url = await handle.start(host, port)
        announce(url)
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(done.wait())]
        if stopped is not None:
            waiters.append(asyncio.ensure_future(stopped))
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        return 0
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await handle.stop()
