"""``generic-csv``: our statement format for banks that send their statements by e-mail.

An operator converts the bank's file into this shape (or the bank produces
it) and imports it for a channel and day. UTF-8 (a BOM is fine), one header
row naming the columns, one row per order, ``#`` lines for comments and two
optional directives::

    # timezone: +08:00
    channel_order_no,operation,status,amount,fee,currency,booked_at,channel_txn_id,original_channel_order_no
    W1,withhold,SUCCEEDED,100.00,0.60,CNY,2026-03-05 10:00:00,B0001,
    R1,refund,SUCCEEDED,30.00,0.00,CNY,2026-03-05 11:00:00,B0002,W1
    # total: lines=2 amount=130.00 fee=0.60

Columns, found by name, in any order (other columns are ignored):

==========================  ========  =====================================================
column                      required  meaning
==========================  ========  =====================================================
channel_order_no            yes       our order number as the bank booked it
operation                   yes       ``withhold`` / ``payout`` / ``refund`` (or 代扣 / 代付 / 退款)
amount                      yes       yuan, at most two decimals, not negative
booked_at                   yes       ``yyyy-mm-dd hh:mm:ss`` (or ISO 8601 with ``T``, fractions,
                                      an offset or ``Z``); without an offset, in the file's timezone
status                      no        ``SUCCEEDED`` (default) or ``FAILED`` (also SUCCESS / FAIL / 成功 / 失败)
fee                         no        yuan charged for the line (negative: given back); default 0
currency                    no        ISO 4217, default CNY
channel_txn_id              no        the bank's transaction id
original_channel_order_no   no        on refunds: the refunded order
original_channel_txn_id     no        on refunds: the bank's id of the refunded order
==========================  ========  =====================================================

``# timezone:`` (before the header) is an offset (``+08:00``) or an IANA name
(``Asia/Shanghai``); the default is China time. ``# total:`` states the
number of lines and the sums of ``amount`` and ``fee`` (yuan); when present
it must agree with the rows, so a file cut short is found.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import BinaryIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from channels.contract import Operation
from channels.statement import CHINA_TIME, LineStatus, StatementFormat, StatementFormatError, StatementLine
from channels.statement_parsing import Columns, Tally, check_total, csv_rows, iso_moment, text_of, yuan

REQUIRED = ("channel_order_no", "operation", "amount", "booked_at")
OPTIONAL = (
    "status",
    "fee",
    "currency",
    "channel_txn_id",
    "original_channel_order_no",
    "original_channel_txn_id",
)
_OPERATIONS = {
    "withhold": Operation.WITHHOLD,
    "代扣": Operation.WITHHOLD,
    "payout": Operation.PAYOUT,
    "代付": Operation.PAYOUT,
    "refund": Operation.REFUND,
    "退款": Operation.REFUND,
}
_STATUSES = {
    "succeeded": LineStatus.SUCCEEDED,
    "success": LineStatus.SUCCEEDED,
    "成功": LineStatus.SUCCEEDED,
    "failed": LineStatus.FAILED,
    "fail": LineStatus.FAILED,
    "失败": LineStatus.FAILED,
}
_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")
_TOTAL = re.compile(r"#\s*total:\s*lines=(\d+)\s+amount=(\S+)\s+fee=(\S+)\s*")
_DIRECTIVE = re.compile(r"#\s*(\w+):\s*(.*?)\s*")


def iter_lines(stream: BinaryIO, *, channel_id: str, day: date) -> Iterator[StatementLine]:
    """Parse a generic-csv statement (see the module docstring); raises StatementFormatError naming line and column."""
    zone: tzinfo = CHINA_TIME
    columns: Columns | None = None
    stated: tuple[int, int, int, int] | None = None  # lines, amount, fee, and the line stating them
    tally = Tally()
    last = 0
    with text_of(stream, "utf-8-sig") as text:
        for line_no, row in csv_rows(text, decoding="UTF-8"):
            last = line_no
            if not any(cell.strip() for cell in row):
                continue
            if row[0].lstrip().startswith("#"):
                comment = ",".join(row).strip()
                total = _TOTAL.fullmatch(comment)
                if total is not None:
                    stated = (
                        int(total.group(1)),
                        yuan(total.group(2), line_no, 0),
                        yuan(total.group(3), line_no, 0),
                        line_no,
                    )
                    continue
                directive = _DIRECTIVE.fullmatch(comment)
                if directive is not None and directive.group(1) == "timezone":
                    if columns is not None:
                        raise StatementFormatError(line_no, 1, "'# timezone:' must come before the header")
                    zone = _zone(directive.group(2), line_no)
                continue
            if columns is None:
                columns = Columns(row, line_no, required=REQUIRED, optional=OPTIONAL)
                continue
            line = _line(row, line_no, columns, zone)
            tally.lines += 1
            tally.sum("amount", line.amount)
            tally.sum("fee", line.fee)
            yield line
    if columns is None:
        raise StatementFormatError(last + 1, 0, "no header row")
    if stated is not None:
        lines, amount, fee, at = stated
        check_total(lines, tally.lines, "lines", at, 0, money=False)
        check_total(amount, tally.total("amount"), "amount", at, 0)
        check_total(fee, tally.total("fee"), "fee", at, 0)


def _line(row: list[str], line_no: int, columns: Columns, zone: tzinfo) -> StatementLine:
    columns.check(row, line_no)
    index = columns.index

    def cell(name: str, default: str = "") -> str:
        return row[index[name]].strip() if name in index else default

    order_no = cell("channel_order_no")
    if not order_no:
        raise StatementFormatError(line_no, columns.column("channel_order_no"), "empty channel_order_no")
    operation = _OPERATIONS.get(cell("operation").lower())
    if operation is None:
        raise StatementFormatError(line_no, columns.column("operation"), f"unknown operation {cell('operation')!r}")
    status = _STATUSES.get(cell("status", "succeeded").lower() or "succeeded")
    if status is None:
        raise StatementFormatError(line_no, columns.column("status"), f"unknown status {cell('status')!r}")
    amount = yuan(cell("amount"), line_no, columns.column("amount"))
    if amount < 0:
        raise StatementFormatError(line_no, columns.column("amount"), "amount must not be negative (use refund)")
    fee = yuan(cell("fee", "0") or "0", line_no, columns.column("fee") if "fee" in index else 0)
    currency = cell("currency", "CNY") or "CNY"
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise StatementFormatError(line_no, columns.column("currency"), f"not an ISO 4217 code: {currency!r}")
    return StatementLine(
        line_no=line_no,
        channel_order_no=order_no,
        operation=operation,
        status=status,
        amount=amount,
        currency=currency,
        fee=fee,
        booked_at=_booked_at(cell("booked_at"), zone, line_no, columns.column("booked_at")),
        channel_txn_id=cell("channel_txn_id"),
        original_channel_order_no=cell("original_channel_order_no"),
        original_channel_txn_id=cell("original_channel_txn_id"),
    )


def _booked_at(text: str, zone: tzinfo, line: int, column: int) -> datetime:
    at = iso_moment(text, line, column)
    if at.tzinfo is None:
        at = at.replace(tzinfo=zone)
    return at.astimezone(UTC).replace(tzinfo=None)


def _zone(text: str, line: int) -> tzinfo:
    offset = _OFFSET.fullmatch(text)
    if offset is not None:
        sign = -1 if offset.group(1) == "-" else 1
        return timezone(sign * timedelta(hours=int(offset.group(2)), minutes=int(offset.group(3))))
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise StatementFormatError(
            line, 0, f"unknown timezone {text!r} (an offset like +08:00 or an IANA name)"
        ) from None


FORMAT = StatementFormat(
    "generic-csv",
    iter_lines,
    covers=frozenset({Operation.WITHHOLD, Operation.PAYOUT, Operation.REFUND}),
    lists_failures=True,
    description="our CSV for statements banks send by e-mail",
)
