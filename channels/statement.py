"""The statement part of the channel contract: what a channel's daily bill says, line by line.

A statement (对账单) is the channel's own record of one channel account's
business day. Reconciliation compares it with what paygate recorded; it is
evidence, never a command (DESIGN.md invariant 11).

Each channel package parses its own format into :class:`StatementLine`
values (``channels/<name>/statement.py``), streaming: a statement can hold
millions of lines, so parsers are generators over a binary stream and never
read the whole file into memory. Amounts are converted from the channel's
yuan strings to minor units exactly (:func:`yuan_to_minor`), never through a
float. A malformed file raises :class:`StatementFormatError` naming the line
and column; callers import nothing from a file that fails (they parse to the
end before committing).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import BinaryIO, Protocol

from channels.contract import Operation

# China Standard Time, the day of Alipay's and WeChat Pay's bills (no daylight saving since 1991).
CHINA_TIME = timezone(timedelta(hours=8), "CST")


class LineStatus(enum.StrEnum):
    """What the channel booked for one line."""

    SUCCEEDED = "SUCCEEDED"  # money moved
    FAILED = "FAILED"  # the channel lists the order as failed / closed (no money moved)


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One line of a channel statement, normalized.

    ``channel_order_no`` is *our* order number as the channel booked it
    (out_trade_no / out_refund_no / out_biz_no / the sandbox's order_no);
    ``original_channel_order_no`` is set on refund lines (the refunded order),
    with ``original_channel_txn_id`` where the statement shows the channel's
    id of the refunded order.
    ``operation`` is what the line moved: WITHHOLD for money collected from a
    payer (withholds, and payer-initiated payments), PAYOUT, REFUND.
    ``amount`` and ``fee`` are minor units; ``fee`` is what the channel charged
    for the line (0 when the statement shows none). ``booked_at`` is naive UTC.
    ``line_no`` is the 1-based line of the source file, kept as evidence.
    """

    line_no: int
    channel_order_no: str
    operation: Operation
    status: LineStatus
    amount: int
    currency: str
    fee: int
    booked_at: datetime
    channel_txn_id: str = ""
    original_channel_order_no: str = ""
    original_channel_txn_id: str = ""


@dataclass(frozen=True, slots=True)
class StatementFile:
    """A downloaded statement on local disk, before parsing.

    ``format`` names the parser (``sandbox``, ``alipay``, ``wechatpay``, …);
    ``sha256`` is the hex digest of the file as stored (what a run records);
    ``source`` says where it came from (a URL without credentials, or
    ``import:<file name>`` for a file an operator imported by hand).
    """

    channel_id: str
    day: date
    path: str
    format: str
    sha256: str
    source: str


class StatementParser(Protocol):
    """A format's parser: a synchronous generator over a binary stream.

    It yields every line of the file in order and raises
    :class:`StatementFormatError` (line, column) at the first thing it cannot
    read, which may be after it yielded lines: a summary that disagrees with
    the detail is found only at the end, so a caller commits nothing before
    the generator is exhausted. The stream is a file opened in binary mode;
    formats that are archives (Alipay's zip) seek in it. ``channel_id`` is
    only used in messages; ``day`` is the statement's business day (checked
    against the file where the format states its day).
    """

    def __call__(self, stream: BinaryIO, *, channel_id: str, day: date) -> Iterator[StatementLine]: ...


@dataclass(frozen=True)
class StatementFormat:
    """One statement file format, as :mod:`channels.statements` finds it by ``name``.

    ``covers`` are the operations the format books: an attempt of another
    operation is never on this statement (Alipay's and WeChat Pay's trade
    bills hold trades and refunds; their payouts are booked elsewhere).
    ``lists_failures`` says whether the format has lines for failed or closed
    orders (status FAILED) or only for money that moved.
    """

    name: str
    iter_lines: StatementParser
    covers: frozenset[Operation]
    lists_failures: bool = False
    description: str = ""


class StatementError(Exception):
    """A statement could not be obtained or read."""


class StatementUnavailable(StatementError):
    """The channel has not published the statement yet, or could not be reached (retry later)."""

    retriable = True


class UnknownStatementFormat(StatementError):
    """No parser is registered under this format name (the message lists the known ones)."""


class StatementFormatError(StatementError):
    """The file is malformed; ``line`` and ``column`` (1-based, 0 when unknown) say where."""

    def __init__(self, line: int, column: int, problem: str) -> None:
        where = f"line {line}" + (f", column {column}" if column else "")
        super().__init__(f"{where}: {problem}")
        self.line = line
        self.column = column
        self.problem = problem


_YUAN = re.compile(r"(-?)([0-9]{1,16})(?:\.([0-9]{1,2}))?")
_YUAN_ZERO_PADDED = re.compile(r"(-?)([0-9]{1,16})(?:\.([0-9]{1,2})0*)?")


def yuan_to_minor(text: str, *, line: int = 0, column: int = 0, zero_padded: bool = False) -> int:
    """``"12.30"`` → ``1230`` exactly; at most two decimals, ASCII digits only, no float involved.

    ``zero_padded`` also accepts zeros past the fen (``"0.06000"``, as WeChat
    Pay prints fees); any other digit there is still an error. Raises
    :class:`StatementFormatError` (with ``line``/``column``) for anything else.
    """
    match = (_YUAN_ZERO_PADDED if zero_padded else _YUAN).fullmatch(text.strip())
    if match is None:
        raise StatementFormatError(line, column, f"not an amount in yuan: {text[:32]!r}")
    sign, whole, frac = match.groups()
    value = int(whole) * 100 + int((frac or "").ljust(2, "0"))
    return -value if sign else value
