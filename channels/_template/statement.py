"""<Name> statement format: the parser paygate imports the channel's daily file with, and the simulator's writer.

Replace this example format (a UTF-8 CSV with a header row and a ``# total:``
trailer) with the channel's own, byte for byte from its documentation, and
keep the rules every format follows (docs/ADDING_A_CHANNEL.md, "Statements"):

* ``iter_lines`` is a synchronous generator over a binary stream: it never
  reads the whole file into memory and yields :class:`StatementLine` values
  in file order, ``line_no`` the 1-based line of the file;
* columns are found by their header names, never by position;
* amounts go through :func:`channels.statement_parsing.yuan` (exact yuan →
  minor units), times become naive UTC;
* anything malformed (a row of the wrong width, a bad amount or time, a
  missing marker, a summary that disagrees with the rows, a truncated
  archive) raises :class:`StatementFormatError` naming line and column, even
  after lines were yielded: callers import nothing until the end;
* ``FORMAT.covers`` lists the operations the statement books.

Register ``FORMAT`` as the ``statement`` of the adapter's entry in
``channels.registry.ADAPTERS``; the format is then known by the adapter's name.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from datetime import date
from typing import BinaryIO

from channels.contract import Operation
from channels.statement import LineStatus, StatementFormat, StatementFormatError, StatementLine
from channels.statement_parsing import (
    OPERATION_NAMES,
    Columns,
    Tally,
    check_total,
    china_text,
    china_time,
    csv_rows,
    fen_text,
    text_of,
    yuan,
)

COLUMNS = ("order_no", "kind", "amount", "fee", "booked_at", "txn_id")
_TOTAL = re.compile(r"# total: lines=(\d+) amount=(\S+)")
_KIND_NAME = {operation: name for name, operation in OPERATION_NAMES.items()}


def write_statement(lines: Iterable[StatementLine], out: BinaryIO, *, day: date) -> None:
    """What the simulator serves for ``day`` (succeeded lines only, in this example)."""
    text = io.TextIOWrapper(out, encoding="utf-8", newline="")
    try:
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(COLUMNS)
        tally = Tally()
        for line in lines:
            if line.status is LineStatus.SUCCEEDED:
                at = china_text(line.booked_at)
                kind = _KIND_NAME[line.operation]
                writer.writerow(
                    (line.channel_order_no, kind, fen_text(line.amount), fen_text(line.fee), at, line.channel_txn_id)
                )
                tally.lines += 1
                tally.sum("amount", line.amount)
        text.write(f"# total: lines={tally.lines} amount={fen_text(tally.total('amount'))}\n")
        text.flush()
    finally:
        text.detach()


def iter_lines(stream: BinaryIO, *, channel_id: str, day: date) -> Iterator[StatementLine]:
    with text_of(stream, "utf-8") as text:
        rows = csv_rows(text, decoding="UTF-8")
        first = next(rows, None)
        if first is None:
            raise StatementFormatError(1, 0, "empty file")
        columns = Columns(first[1], first[0], required=COLUMNS)
        tally = Tally()
        last = first[0]
        for line_no, row in rows:
            last = line_no
            if row and row[0].startswith("#"):
                total = _TOTAL.fullmatch(",".join(row))
                if total is None:
                    raise StatementFormatError(line_no, 1, "expected '# total: lines=N amount=YUAN'")
                check_total(int(total.group(1)), tally.lines, "lines", line_no, 0, money=False)
                check_total(yuan(total.group(2), line_no, 0), tally.total("amount"), "amount", line_no, 0)
                return
            columns.check(row, line_no)
            index = columns.index
            operation = OPERATION_NAMES.get(row[index["kind"]])
            if operation is None:
                raise StatementFormatError(line_no, columns.column("kind"), f"unknown kind {row[index['kind']]!r}")
            line = StatementLine(
                line_no=line_no,
                channel_order_no=row[index["order_no"]],
                operation=operation,
                status=LineStatus.SUCCEEDED,
                amount=yuan(row[index["amount"]], line_no, columns.column("amount")),
                currency="CNY",
                fee=yuan(row[index["fee"]], line_no, columns.column("fee")),
                booked_at=china_time(row[index["booked_at"]], line_no, columns.column("booked_at")),
                channel_txn_id=row[index["txn_id"]],
            )
            tally.lines += 1
            tally.sum("amount", line.amount)
            yield line
        raise StatementFormatError(last + 1, 0, "no '# total:' trailer: the file is truncated")


FORMAT = StatementFormat(
    "template",
    iter_lines,
    covers=frozenset({Operation.WITHHOLD, Operation.PAYOUT, Operation.REFUND}),
    lists_failures=False,
    description="the channel template's example format",
)
