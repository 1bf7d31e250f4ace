"""What a simulated channel publishes as its daily statement, and the faults tests inject into it.

A :class:`StatementBook` turns the ledger's books of one day
(:meth:`~channels.simkit.ledger.Ledger.booked_on`) into
:class:`~channels.statement.StatementLine` values, in one pass, so the
statement tells what the simulated channel really did, including what the
gateway could not know: a debit that executed after the gateway gave up on
the order, a refund that settled the next day, an order closed before it
executed (a FAILED line, in formats that list failures). Each simulator's
format module renders those lines (``channels/<name>/statement.py``
``write_statement``); :meth:`StatementBook.render` does it in a worker thread
into a temporary file, which :func:`stream_file` serves and removes.

Fault switches (:class:`StatementFaults`), each naming the order it applies
to, or drawn at random with a seed by :meth:`StatementBook.pick` (which says
which orders it chose)::

    drop       the order's line is missing
    amount     the line shows another amount (minor units)
    fee        the line shows another fee (minor units)
    next_day   the line is dated on the day after the one it was booked on
    extra      a line for an order the gateway never sent (a day, an order number, ...)
    unpublished  a day whose statement is not published yet (fetching it is "unavailable")

From Python: ``sim.statements.faults.drop("W1")``; over HTTP (served during
outages too): ``GET|POST|DELETE /_admin/statement/faults`` (see :func:`faults_routes`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from typing import Any, BinaryIO

from aiohttp import web

from channels.contract import Operation
from channels.simkit.ledger import Entry, EntryKind, EntryStatus, Ledger
from channels.statement import LineStatus, StatementLine

_OPERATION = {
    EntryKind.WITHHOLD: Operation.WITHHOLD,
    EntryKind.PAYOUT: Operation.PAYOUT,
    EntryKind.REFUND: Operation.REFUND,
}
_STATUS = {EntryStatus.SUCCEEDED: LineStatus.SUCCEEDED, EntryStatus.FAILED: LineStatus.FAILED}
ALL_KINDS = frozenset(EntryKind)

# A writer renders lines into a binary file (the format module's write_statement, with its options bound).
Writer = Callable[[Iterator[StatementLine], BinaryIO], None]


class FaultError(ValueError):
    """A fault switch names something that cannot be (unknown order, bad day, bad amount)."""


@dataclass
class StatementFaults:
    """The switches that make a simulator's statement lie. Mutable; :meth:`snapshot` for a consistent read."""

    dropped: set[str] = field(default_factory=set)
    amounts: dict[str, int] = field(default_factory=dict)
    fees: dict[str, int] = field(default_factory=dict)
    next_day: set[str] = field(default_factory=set)
    extra: dict[date, list[StatementLine]] = field(default_factory=dict)
    unpublished: set[date] = field(default_factory=set)

    def drop(self, order_no: str) -> None:
        self.dropped.add(order_no)

    def change_amount(self, order_no: str, amount: int) -> None:
        self.amounts[order_no] = _minor(amount, "amount")

    def change_fee(self, order_no: str, fee: int) -> None:
        self.fees[order_no] = _minor(fee, "fee")

    def date_next_day(self, order_no: str) -> None:
        self.next_day.add(order_no)

    def add_line(
        self,
        day: date,
        order_no: str,
        amount: int,
        *,
        operation: Operation = Operation.WITHHOLD,
        fee: int = 0,
        at: datetime | None = None,
        txn_id: str = "",
        original_order_no: str = "",
        currency: str = "CNY",
    ) -> StatementLine:
        """A line for an order the gateway never sent, booked on ``day`` (``at``: naive UTC, default noon UTC)."""
        if not order_no:
            raise FaultError("extra line: order_no must not be empty")
        line = StatementLine(
            line_no=0,
            channel_order_no=order_no,
            operation=operation,
            status=LineStatus.SUCCEEDED,
            amount=_minor(amount, "amount"),
            currency=currency,
            fee=_minor(fee, "fee"),
            booked_at=at if at is not None else datetime.combine(day, clock_time(12)),
            channel_txn_id=txn_id or f"X{secrets.token_hex(8).upper()}",
            original_channel_order_no=original_order_no,
        )
        self.extra.setdefault(day, []).append(line)
        return line

    def unpublish(self, day: date) -> None:
        self.unpublished.add(day)

    def publish(self, day: date) -> None:
        self.unpublished.discard(day)

    def clear(self) -> None:
        for switch in (self.dropped, self.amounts, self.fees, self.next_day, self.extra, self.unpublished):
            switch.clear()

    def snapshot(self) -> StatementFaults:
        return StatementFaults(
            set(self.dropped),
            dict(self.amounts),
            dict(self.fees),
            set(self.next_day),
            {day: list(lines) for day, lines in self.extra.items()},
            set(self.unpublished),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "drop": sorted(self.dropped),
            "amount": dict(sorted(self.amounts.items())),
            "fee": dict(sorted(self.fees.items())),
            "next_day": sorted(self.next_day),
            "extra": [
                {
                    "day": day.isoformat(),
                    "order_no": line.channel_order_no,
                    "operation": str(line.operation),
                    "amount": line.amount,
                    "fee": line.fee,
                    "at": line.booked_at.isoformat(),
                }
                for day, lines in sorted(self.extra.items())
                for line in lines
            ],
            "unpublished": sorted(day.isoformat() for day in self.unpublished),
        }

    def apply_json(self, changes: Mapping[str, Any]) -> None:
        """Add the switches of an admin request (keys as :meth:`to_json` writes them); all or nothing."""
        known = {"drop", "amount", "fee", "next_day", "extra", "unpublished", "random"}
        for key in changes:
            if key not in known:
                raise FaultError(f"{key}: unknown fault switch (known: {', '.join(sorted(known))})")
        staged = self.snapshot()
        for order_no in _names(changes.get("drop", []), "drop"):
            staged.drop(order_no)
        for order_no, amount in _table(changes.get("amount", {}), "amount").items():
            staged.change_amount(order_no, amount)
        for order_no, fee in _table(changes.get("fee", {}), "fee").items():
            staged.change_fee(order_no, fee)
        for order_no in _names(changes.get("next_day", []), "next_day"):
            staged.date_next_day(order_no)
        extras = changes.get("extra", [])
        if not isinstance(extras, list):
            raise FaultError("extra: must be a list of lines")
        for i, spec in enumerate(extras):
            if not isinstance(spec, Mapping):
                raise FaultError(f"extra[{i}]: must be an object")
            try:
                at = spec.get("at")
                staged.add_line(
                    _day(spec.get("day"), f"extra[{i}].day"),
                    str(spec.get("order_no", "")),
                    spec.get("amount"),  # type: ignore[arg-type]  # checked by add_line
                    operation=Operation(spec.get("operation", "withhold")),
                    fee=spec.get("fee", 0),
                    at=_naive_utc(at, f"extra[{i}].at") if at else None,
                    original_order_no=str(spec.get("original_order_no", "")),
                )
            except ValueError as exc:
                raise FaultError(f"extra[{i}]: {exc}") from None
        for text in _names(changes.get("unpublished", []), "unpublished"):
            staged.unpublish(_day(text, "unpublished"))
        self.restore(staged)

    def restore(self, snapshot: StatementFaults) -> None:
        """Set every switch as ``snapshot`` has it."""
        self.dropped, self.amounts, self.fees = snapshot.dropped, snapshot.amounts, snapshot.fees
        self.next_day, self.extra, self.unpublished = snapshot.next_day, snapshot.extra, snapshot.unpublished


@dataclass(frozen=True, slots=True)
class Picked:
    """The orders :meth:`StatementBook.pick` chose for each switch (the extra lines' new order numbers)."""

    day: date
    seed: int
    drop: list[str] = field(default_factory=list)
    amount: dict[str, int] = field(default_factory=dict)
    fee: dict[str, int] = field(default_factory=dict)
    next_day: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def orders(self) -> set[str]:
        """Every order number a fault was injected for."""
        return {*self.drop, *self.amount, *self.fee, *self.next_day, *self.extra}

    def to_json(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "seed": self.seed,
            "drop": self.drop,
            "amount": self.amount,
            "fee": self.fee,
            "next_day": self.next_day,
            "extra": self.extra,
        }


@dataclass(frozen=True, slots=True)
class Rendered:
    """A statement rendered to a temporary file: its path, size and digests (hex)."""

    path: str
    size: int
    sha256: str
    sha1: str


class StatementBook:
    """The statement of each day, from the ledger, with the fault switches applied.

    ``covers`` are the order kinds the channel's format books (Alipay's and
    WeChat Pay's trade bills hold no payouts); ``lists_failures`` whether
    failed orders get a FAILED line. A day is published once it began (in the
    ledger's timezone; the current day's statement is "so far") unless a
    fault says otherwise.
    """

    def __init__(self, ledger: Ledger, *, covers: frozenset[EntryKind] = ALL_KINDS, lists_failures: bool = True):
        self.ledger = ledger
        self.covers = covers
        self.lists_failures = lists_failures
        self.faults = StatementFaults()
        self._dir: str | None = None
        self._issued: dict[str, tuple[Rendered | date, float]] = {}

    # -- what the statement says --

    def published(self, day: date) -> bool:
        today = self.ledger.booking_day(self.ledger.now())
        return day <= today and day not in self.faults.unpublished

    def lines(self, day: date) -> Iterator[StatementLine]:
        """The day's lines, in booking order, then lines moved here from the day before, then extra lines.

        The faults are read now (a snapshot); the ledger up to the orders that
        ended so far. Safe to consume in a worker thread.
        """
        faults = self.faults.snapshot()
        booked = self.ledger.booked_on(day)
        count = len(booked)
        previous_day = day - timedelta(days=1)
        start_of_day = datetime.combine(day, clock_time(), self.ledger.statement_tz).astimezone(UTC)
        moved_in = sorted(faults.next_day)

        def generate() -> Iterator[StatementLine]:
            for i in range(count):
                entry = self.ledger.get(booked[i])
                if entry is None or entry.order_no in faults.next_day:
                    continue
                line = self._line(entry, faults)
                if line is not None:
                    yield line
            for order_no in moved_in:
                entry = self.ledger.get(order_no)
                if (
                    entry is None
                    or entry.settled_at is None
                    or self.ledger.booking_day(entry.settled_at) != previous_day
                ):
                    continue
                line = self._line(entry, faults)
                if line is not None:
                    yield replace(line, booked_at=start_of_day.replace(tzinfo=None) + timedelta(seconds=1))
            yield from faults.extra.get(day, ())

        return generate()

    def _line(self, entry: Entry, faults: StatementFaults) -> StatementLine | None:
        if entry.kind not in self.covers or entry.order_no in faults.dropped or entry.settled_at is None:
            return None
        if entry.status is EntryStatus.FAILED and not self.lists_failures:
            return None
        original = self.ledger.get(entry.original_order_no) if entry.original_order_no else None
        return StatementLine(
            line_no=0,
            channel_order_no=entry.order_no,
            operation=_OPERATION[entry.kind],
            status=_STATUS[entry.status],
            amount=faults.amounts.get(entry.order_no, entry.amount),
            currency=entry.currency,
            fee=faults.fees.get(entry.order_no, entry.fee),
            booked_at=datetime.fromtimestamp(entry.settled_at, UTC).replace(tzinfo=None),
            channel_txn_id=entry.txn_id,
            original_channel_order_no=entry.original_order_no,
            original_channel_txn_id=original.txn_id if original is not None else "",
        )

    def pick(
        self,
        day: date,
        *,
        seed: int = 0,
        drop: int = 0,
        amount: int = 0,
        fee: int = 0,
        next_day: int = 0,
        extra: int = 0,
    ) -> Picked:
        """Inject each fault into that many different orders that moved money on ``day``, chosen with ``seed``.

        Every chosen order gets exactly one fault. Raises FaultError when the
        day has fewer such orders than asked for.
        """
        rng = random.Random(seed)
        wanted = drop + amount + fee + next_day
        faulted = self.faults.dropped | self.faults.amounts.keys() | self.faults.fees.keys() | self.faults.next_day
        candidates = [
            line
            for line in self.lines(day)
            if line.status is LineStatus.SUCCEEDED and line.channel_order_no not in faulted
        ]
        if wanted > len(candidates):
            raise FaultError(f"{day}: {wanted} faults asked for, {len(candidates)} lines to put them on")
        chosen = rng.sample(candidates, wanted)
        picked = Picked(day, seed)
        for line in chosen[:drop]:
            self.faults.drop(line.channel_order_no)
            picked.drop.append(line.channel_order_no)
        for line in chosen[drop : drop + amount]:
            changed = line.amount + rng.randint(1, 99)
            self.faults.change_amount(line.channel_order_no, changed)
            picked.amount[line.channel_order_no] = changed
        for line in chosen[drop + amount : drop + amount + fee]:
            changed = line.fee + rng.randint(1, 99)
            self.faults.change_fee(line.channel_order_no, changed)
            picked.fee[line.channel_order_no] = changed
        for line in chosen[drop + amount + fee :]:
            self.faults.date_next_day(line.channel_order_no)
            picked.next_day.append(line.channel_order_no)
        start = datetime.combine(day, clock_time(), self.ledger.statement_tz).astimezone(UTC).replace(tzinfo=None)
        for i in range(extra):
            order_no = f"GHOST{seed}X{i}{rng.randrange(10**6):06d}"
            at = start + timedelta(seconds=rng.randrange(86_400))
            self.faults.add_line(day, order_no, rng.randint(1, 5_000) * 100, at=at)
            picked.extra.append(order_no)
        return picked

    # -- files --

    async def render(self, day: date, write: Writer) -> Rendered:
        """Render the day's statement with ``write`` into a new temporary file, in a worker thread."""
        lines = self.lines(day)
        directory = self._directory()

        def run() -> Rendered:
            fd, path = tempfile.mkstemp(prefix=f"{day:%Y%m%d}-", dir=directory)
            try:
                with os.fdopen(fd, "w+b") as out:
                    write(lines, out)
                    out.flush()
                    out.seek(0)
                    sha256, sha1 = hashlib.sha256(), hashlib.sha1()  # noqa: S324 - WeChat Pay publishes SHA-1
                    size = 0
                    while chunk := out.read(1 << 20):
                        sha256.update(chunk)
                        sha1.update(chunk)
                        size += len(chunk)
            except BaseException:
                os.unlink(path)
                raise
            return Rendered(path, size, sha256.hexdigest(), sha1.hexdigest())

        return await asyncio.to_thread(run)

    def issue(self, item: Rendered | date, ttl_s: float) -> str:
        """A new token for a short-lived download URL: of a rendered file, or of a day rendered when fetched.

        A rendered file is removed when its token expires (or the simulator stops).
        """
        self._expire()
        token = secrets.token_urlsafe(24)
        self._issued[token] = (item, time.monotonic() + ttl_s)
        return token

    def redeem(self, token: str) -> Rendered | date | None:
        """What was issued under ``token`` while it is valid, else None."""
        self._expire()
        issued = self._issued.get(token)
        return issued[0] if issued is not None else None

    def discard(self, rendered: Rendered) -> None:
        try:
            os.unlink(rendered.path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Remove every rendered file (the simulator stops)."""
        self._issued.clear()
        directory, self._dir = self._dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def _expire(self) -> None:
        now = time.monotonic()
        for token in [t for t, (_, until) in self._issued.items() if until <= now]:
            item = self._issued.pop(token)[0]
            if isinstance(item, Rendered):
                self.discard(item)

    def _directory(self) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="simkit-statements-")
        return self._dir


async def stream_file(
    request: web.Request,
    rendered: Rendered,
    *,
    headers: Mapping[str, str],
    remove: bool,
    chunk_size: int = 1 << 18,
) -> web.StreamResponse:
    """Send a rendered file as a 200 answer, read in a worker thread chunk by chunk; ``remove`` deletes it after."""
    response = web.StreamResponse(status=200, headers={**headers, "Content-Length": str(rendered.size)})
    try:
        await response.prepare(request)
        with open(rendered.path, "rb") as source:  # noqa: ASYNC230 - reads go to a thread below
            while chunk := await asyncio.to_thread(source.read, chunk_size):
                await response.write(chunk)
        await response.write_eof()
    finally:
        if remove:
            os.unlink(rendered.path)
    return response


def faults_routes(book: StatementBook) -> list[web.RouteDef]:
    """``GET|POST|DELETE /_admin/statement/faults``.

    POST adds switches (JSON, as ``StatementFaults.to_json`` writes them) and,
    with ``"random": {"day": "2026-03-05", "seed": 7, "drop": 1, "amount": 1,
    "fee": 1, "next_day": 1, "extra": 1}``, injects faults into orders chosen
    at random; it answers the switches now set and, under ``picked``, the
    orders chosen. A bad request is 400 naming the switch. DELETE clears all.
    """

    async def get_faults(request: web.Request) -> web.Response:
        return web.json_response(book.faults.to_json())

    async def set_faults(request: web.Request) -> web.Response:
        before = book.faults.snapshot()
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise FaultError("must be a JSON object")
            book.faults.apply_json(changes)
            answer: dict[str, Any] = {}
            chosen = changes.get("random")
            if chosen is not None:
                answer["picked"] = _pick(book, chosen).to_json()
        except ValueError as exc:
            book.faults.restore(before)  # all or nothing
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({**book.faults.to_json(), **answer})

    async def clear_faults(request: web.Request) -> web.Response:
        book.faults.clear()
        return web.json_response(book.faults.to_json())

    return [
        web.get("/_admin/statement/faults", get_faults),
        web.post("/_admin/statement/faults", set_faults),
        web.delete("/_admin/statement/faults", clear_faults),
    ]


def _pick(book: StatementBook, spec: object) -> Picked:
    if not isinstance(spec, Mapping):
        raise FaultError("random: must be an object")
    counts: dict[str, int] = {}
    for name in ("drop", "amount", "fee", "next_day", "extra"):
        value = spec.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise FaultError(f"random.{name}: must be a count >= 0")
        counts[name] = value
    seed = spec.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise FaultError("random.seed: must be an integer")
    return book.pick(_day(spec.get("day"), "random.day"), seed=seed, **counts)


def _minor(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FaultError(f"{name}: must be minor units, an integer >= 0, got {value!r}")
    return value


def _names(value: object, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise FaultError(f"{name}: must be a list of non-empty strings")
    return list(value)


def _table(value: object, name: str) -> dict[str, int]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and k for k in value):
        raise FaultError(f"{name}: must be an object of order number -> minor units")
    return {str(k): _minor(v, f"{name}.{k}") for k, v in value.items()}


def _day(value: object, name: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise FaultError(f"{name}: not a date (YYYY-MM-DD): {value!r}") from None


def _naive_utc(value: object, name: str) -> datetime:
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        raise FaultError(f"{name}: not an ISO 8601 time: {value!r}") from None
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo is not None else at
