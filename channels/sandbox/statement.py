"""The sandbox bank's daily statement: our own format (docs/RECONCILIATION.md, "Statement formats").

A UTF-8 CSV file: a header block, one row per order that ended on the day
(succeeded or failed), and a trailer that counts them::

    # sandbox statement v1
    # merchant_id: sandbox-merchant
    # day: 2026-03-05
    # timezone: +08:00
    order_no,kind,status,amount,currency,fee,booked_at,txn_id,original_order_no,original_txn_id
    W1,withhold,SUCCEEDED,10000,CNY,30,2026-03-05T02:03:04.250000Z,SBX000000000001,,
    R1,refund,SUCCEEDED,3000,CNY,0,2026-03-05T03:00:00.000000Z,SBX000000000003,W1,SBX000000000001
    # end: lines=2 succeeded=2 withhold=10000 payout=0 refund=3000 fee=30

Amounts and fees are integer minor units (the sandbox wire's unit), times
UTC with microseconds. The trailer's sums are over SUCCEEDED lines; a file
without it (truncated) is rejected. Columns are found by name. The bank
serves it at ``GET /v1/statements/{yyyy-mm-dd}``, signed like its other
answers but over the file's SHA-256 (:data:`channels.sandbox.wire.HEADER_CONTENT_SHA256`).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import BinaryIO

from channels.contract import Operation
from channels.statement import (
    CHINA_TIME,
    LineStatus,
    StatementFormat,
    StatementFormatError,
    StatementLine,
)
from channels.statement_parsing import (
    OPERATION_NAMES,
    Columns,
    Tally,
    check_total,
    csv_rows,
    day_start_utc,
    iso_moment,
    text_of,
)

MAGIC = "# sandbox statement v1"
COLUMNS = (
    "order_no",
    "kind",
    "status",
    "amount",
    "currency",
    "fee",
    "booked_at",
    "txn_id",
    "original_order_no",
    "original_txn_id",
)
HEADER_KEYS = ("merchant_id", "day", "timezone")
_TRAILER = re.compile(r"# end: lines=(\d+) succeeded=(\d+) withhold=(\d+) payout=(\d+) refund=(\d+) fee=(-?\d+)")
_MINOR = re.compile(r"-?[0-9]{1,18}")
_OFFSET = re.compile(r"([+-])([01][0-9]|2[0-3]):([0-5][0-9])")
_KIND_NAME = {operation: name for name, operation in OPERATION_NAMES.items()}
_STATUS = {"SUCCEEDED": LineStatus.SUCCEEDED, "FAILED": LineStatus.FAILED}


def write_statement(
    lines: Iterable[StatementLine],
    out: BinaryIO,
    *,
    day: date,
    merchant_id: str,
    timezone: tzinfo = CHINA_TIME,
) -> None:
    """Write ``lines`` (``line_no`` is ignored) as the sandbox statement of ``day``, streaming."""
    text = io.TextIOWrapper(out, encoding="utf-8", newline="")
    try:
        offset = datetime(day.year, day.month, day.day, 12, tzinfo=timezone).strftime("%z")
        text.write(f"{MAGIC}\n# merchant_id: {merchant_id}\n# day: {day.isoformat()}\n")
        text.write(f"# timezone: {offset[:3]}:{offset[3:]}\n")
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(COLUMNS)
        tally = Tally()
        for line in lines:
            writer.writerow(
                (
                    line.channel_order_no,
                    _KIND_NAME[line.operation],
                    str(line.status),
                    line.amount,
                    line.currency,
                    line.fee,
                    line.booked_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    line.channel_txn_id,
                    line.original_channel_order_no,
                    line.original_channel_txn_id,
                )
            )
            _count(tally, line)
        text.write(_trailer(tally) + "\n")
        text.flush()
    finally:
        text.detach()


def iter_lines(stream: BinaryIO, *, channel_id: str, day: date) -> Iterator[StatementLine]:
    """Parse a sandbox statement (see the module docstring); raises StatementFormatError naming line and column."""
    with text_of(stream, "utf-8") as text:
        rows = csv_rows(text, decoding="UTF-8")
        header, zone = _read_header(rows, day)
        columns = Columns(header[1], header[0], required=COLUMNS, others_allowed=False)
        reader = _Reader(columns)
        # every line is booked on the statement's day, in its timezone: anything else is another day's
        start, end = day_start_utc(day, zone), day_start_utc(day + timedelta(days=1), zone)
        booked_column = columns.column("booked_at")
        tally = Tally()
        last = header[0]
        for line_no, row in rows:
            last = line_no
            if row and row[0].startswith("#"):
                _check_trailer(",".join(row), line_no, tally)
                _expect_end(rows)
                return
            if not row:
                raise StatementFormatError(line_no, 0, "empty line inside the statement")
            line = reader.line(row, line_no)
            if not start <= line.booked_at < end:
                raise StatementFormatError(
                    line_no, booked_column, f"booked at {line.booked_at.isoformat()}Z, not on {day} ({zone})"
                )
            _count(tally, line)
            yield line
        raise StatementFormatError(last + 1, 0, "no '# end:' trailer: the file is truncated")


def _read_header(rows: Iterator[tuple[int, list[str]]], day: date) -> tuple[tuple[int, list[str]], tzinfo]:
    """Check the magic line and the ``# key: value`` block; return the column header row and the day's timezone."""
    first = next(rows, None)
    if first is None or ",".join(first[1]) != MAGIC:
        raise StatementFormatError(1, 1, f"not a sandbox statement (the first line must be {MAGIC!r})")
    values: dict[str, str] = {}
    zone_line = 0
    for line_no, row in rows:
        text = ",".join(row)
        if not text.startswith("#"):
            missing = [key for key in HEADER_KEYS if key not in values]
            if missing:
                raise StatementFormatError(line_no, 0, f"header block lacks {', '.join(missing)}")
            return (line_no, row), _offset(values["timezone"], zone_line)
        key, sep, value = text[1:].partition(":")
        if not sep:
            raise StatementFormatError(line_no, 1, f"header line is not '# key: value': {text[:40]!r}")
        values[key.strip()] = value.strip()
        if key.strip() == "timezone":
            zone_line = line_no
        if key.strip() == "day" and value.strip() != day.isoformat():
            raise StatementFormatError(line_no, 0, f"this is the statement of {value.strip()}, not of {day}")
    raise StatementFormatError(1, 0, "no column header: the file is truncated")


def _offset(text: str, line: int) -> tzinfo:
    """``# timezone: +08:00`` as a fixed offset."""
    match = _OFFSET.fullmatch(text)
    if match is None:
        raise StatementFormatError(line, 0, f"timezone is not an offset like +08:00: {text[:20]!r}")
    sign = -1 if match.group(1) == "-" else 1
    return timezone(sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3))))


class _Reader:
    """Detail rows as lines, the columns' positions looked up once (a statement has millions of rows)."""

    def __init__(self, columns: Columns) -> None:
        self.columns = columns
        self.width = columns.width
        self.at = tuple(columns.index[name] for name in COLUMNS)

    def line(self, row: list[str], line_no: int) -> StatementLine:
        columns = self.columns
        if len(row) != self.width:
            columns.check(row, line_no)
        order_i, kind_i, status_i, amount_i, currency_i, fee_i, booked_i, txn_i, orig_i, orig_txn_i = self.at
        operation = OPERATION_NAMES.get(row[kind_i])
        if operation is None:
            raise StatementFormatError(line_no, kind_i + 1, f"unknown kind {row[kind_i]!r}")
        status = _STATUS.get(row[status_i])
        if status is None:
            raise StatementFormatError(line_no, status_i + 1, f"unknown status {row[status_i]!r}")
        order_no = row[order_i]
        if not order_no:
            raise StatementFormatError(line_no, order_i + 1, "empty order_no")
        return StatementLine(
            line_no,
            order_no,
            operation,
            status,
            _minor(row[amount_i], line_no, amount_i + 1, negative=False),
            row[currency_i],
            _minor(row[fee_i], line_no, fee_i + 1, negative=True),
            _utc(row[booked_i], line_no, booked_i + 1),
            row[txn_i],
            row[orig_i],
            row[orig_txn_i],
        )


def _minor(text: str, line: int, column: int, *, negative: bool) -> int:
    if len(text) <= 18 and text.isascii() and text.isdigit():  # the common case, without the regex
        return int(text)
    if not _MINOR.fullmatch(text) or (text.startswith("-") and not negative):
        raise StatementFormatError(line, column, f"not an amount in minor units: {text[:32]!r}")
    return int(text)


def _utc(text: str, line: int, column: int) -> datetime:
    if not text.endswith("Z"):
        raise StatementFormatError(line, column, f"not a UTC time (…Z): {text[:40]!r}")
    at = iso_moment(text[:-1], line, column)
    if at.tzinfo is not None:  # an offset and a Z: which one?
        raise StatementFormatError(line, column, f"not a UTC time (…Z): {text[:40]!r}")
    return at


def _count(tally: Tally, line: StatementLine) -> None:
    tally.lines += 1
    if line.status is LineStatus.SUCCEEDED:
        tally.add(str(line.operation), line.amount)
        tally.sum("fee", line.fee)


def _trailer(tally: Tally) -> str:
    succeeded = sum(tally.count(str(op)) for op in (Operation.WITHHOLD, Operation.PAYOUT, Operation.REFUND))
    return (
        f"# end: lines={tally.lines} succeeded={succeeded} withhold={tally.total('withhold')}"
        f" payout={tally.total('payout')} refund={tally.total('refund')} fee={tally.total('fee')}"
    )


def _check_trailer(text: str, line_no: int, tally: Tally) -> None:
    match = _TRAILER.fullmatch(text)
    if match is None:
        raise StatementFormatError(line_no, 1, f"not the '# end:' trailer: {text[:60]!r}")
    lines, succeeded, withhold, payout, refund, fee = (int(v) for v in match.groups())
    counted = sum(tally.count(str(op)) for op in (Operation.WITHHOLD, Operation.PAYOUT, Operation.REFUND))
    check_total(lines, tally.lines, "lines", line_no, 0, money=False)
    check_total(succeeded, counted, "succeeded", line_no, 0, money=False)
    check_total(withhold, tally.total("withhold"), "withhold", line_no, 0)
    check_total(payout, tally.total("payout"), "payout", line_no, 0)
    check_total(refund, tally.total("refund"), "refund", line_no, 0)
    check_total(fee, tally.total("fee"), "fee", line_no, 0)


def _expect_end(rows: Iterator[tuple[int, list[str]]]) -> None:
    for line_no, row in rows:
        if row:
            raise StatementFormatError(line_no, 0, "text after the '# end:' trailer")


FORMAT = StatementFormat(
    "sandbox",
    iter_lines,
    covers=frozenset({Operation.WITHHOLD, Operation.PAYOUT, Operation.REFUND}),
    lists_failures=True,
    description="the sandbox bank's signed CSV statement (ours)",
)
