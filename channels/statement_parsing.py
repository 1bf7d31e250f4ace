"""Helpers the statement parsers share: text over a binary stream, columns by name, times, counted totals.

Every failure is a :class:`~channels.statement.StatementFormatError` naming
the 1-based line and column of the file (column 0 when it is about a whole
line or the whole file).
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import IO

from channels.contract import Operation
from channels.statement import CHINA_TIME, StatementFormatError, yuan_to_minor

_CHINA_OFFSET = timedelta(hours=8)
_LOCAL_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
# exactly yyyy-mm-dd hh:mm:ss: datetime.fromisoformat also reads ISO week dates ("2026-W50-1") as another day
_ISO_MOMENT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)


@contextmanager
def text_of(stream: IO[bytes], encoding: str) -> Iterator[io.TextIOWrapper]:
    """``stream`` decoded as ``encoding`` (newlines kept for :mod:`csv`); the caller's stream stays open."""
    text = io.TextIOWrapper(stream, encoding=encoding, errors="strict", newline="")
    try:
        yield text
    finally:
        text.detach()


def csv_rows(text: Iterable[str], *, decoding: str) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of each CSV record; a decoding failure names the line it happened on."""
    reader = csv.reader(text, strict=True)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            raise StatementFormatError(reader.line_num + 1, 0, f"not {decoding} text") from None
        except csv.Error as exc:
            raise StatementFormatError(reader.line_num, 0, f"not CSV: {exc}") from None
        yield reader.line_num, row


class Columns:
    """A header row: column positions by name, and what each row must look like.

    ``required`` names must all be present, ``optional`` may be; with
    ``others_allowed`` false any other name is an error. Names are compared
    after stripping blanks (and ``strip`` characters).
    """

    def __init__(
        self,
        header: Sequence[str],
        line: int,
        *,
        required: Iterable[str],
        optional: Iterable[str] = (),
        others_allowed: bool = True,
        strip: str | None = None,
    ) -> None:
        self.line = line
        self.width = len(header)
        self.index: dict[str, int] = {}
        known = {*required, *optional}
        for i, raw in enumerate(header):
            name = raw.strip().strip(strip) if strip else raw.strip()
            if name in self.index:
                raise StatementFormatError(line, i + 1, f"column {name!r} appears twice")
            if not others_allowed and name not in known:
                raise StatementFormatError(line, i + 1, f"unknown column {name!r}")
            self.index[name] = i
        for name in required:
            if name not in self.index:
                raise StatementFormatError(line, 0, f"missing column {name!r}")

    def __contains__(self, name: object) -> bool:
        return name in self.index

    def column(self, name: str) -> int:
        """The 1-based column of ``name``."""
        return self.index[name] + 1

    def check(self, row: Sequence[str], line: int) -> None:
        """A row must have as many cells as the header; the error names the first missing or extra column."""
        if len(row) != self.width:
            column = min(len(row), self.width) + 1
            raise StatementFormatError(
                line, column, f"{len(row)} columns, the header (line {self.line}) has {self.width}"
            )


def china_time(text: str, line: int, column: int) -> datetime:
    """``yyyy-MM-dd HH:mm:ss`` in China time (Alipay, WeChat Pay) as naive UTC."""
    if not _LOCAL_TIME.fullmatch(text):
        raise StatementFormatError(line, column, f"not a time (yyyy-MM-dd HH:mm:ss): {text[:32]!r}")
    try:
        return datetime.fromisoformat(text) - _CHINA_OFFSET
    except ValueError:
        raise StatementFormatError(line, column, f"not a time: {text!r}") from None


def iso_moment(text: str, line: int, column: int) -> datetime:
    """``yyyy-mm-ddThh:mm:ss[.ffffff][offset]`` (or a blank for the T) as written: naive, or aware with its offset."""
    if _ISO_MOMENT.fullmatch(text):
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    raise StatementFormatError(line, column, f"not a time (yyyy-mm-ddThh:mm:ss): {text[:40]!r}")


def china_text(at: datetime) -> str:
    """Naive UTC as the ``yyyy-MM-dd HH:mm:ss`` China time the trade bills print (seconds, rounded down)."""
    return (at + _CHINA_OFFSET).strftime("%Y-%m-%d %H:%M:%S")


def day_start_utc(day: date, zone: tzinfo = CHINA_TIME) -> datetime:
    """The first instant of ``day`` in ``zone``, as naive UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC).replace(tzinfo=None)


def yuan(text: str, line: int, column: int, *, zero_padded: bool = False) -> int:
    """:func:`~channels.statement.yuan_to_minor` naming the cell.

    Statements repeat the same few figures (``0.00`` in most columns of most
    rows), so conversions are memoized; a bad amount raises as
    ``yuan_to_minor`` does.
    """
    value = _minor_or_none(text, zero_padded)
    if value is None:
        return yuan_to_minor(text, line=line, column=column, zero_padded=zero_padded)  # raises, naming the cell
    return value


@functools.lru_cache(maxsize=16_384)
def _minor_or_none(text: str, zero_padded: bool) -> int | None:
    try:
        return yuan_to_minor(text, zero_padded=zero_padded)
    except StatementFormatError:
        return None


def fen_text(minor: int) -> str:
    """Minor units as a yuan string with two decimals (``-1230`` → ``"-12.30"``)."""
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(minor), 100)
    return f"{sign}{whole}.{cents:02d}"


class Tally:
    """Counts and sums of the lines a parser yielded, to check a statement's own summary against."""

    def __init__(self) -> None:
        self.lines = 0
        self.counts: dict[str, int] = {}
        self.sums: dict[str, int] = {}

    def add(self, key: str, amount: int = 0) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1
        self.sums[key] = self.sums.get(key, 0) + amount

    def sum(self, key: str, amount: int) -> None:
        self.sums[key] = self.sums.get(key, 0) + amount

    def count(self, key: str) -> int:
        return self.counts.get(key, 0)

    def total(self, key: str) -> int:
        return self.sums.get(key, 0)


def check_total(stated: int, counted: int, what: str, line: int, column: int, *, money: bool = True) -> None:
    """A summary figure must equal what the detail lines add up to."""
    if stated != counted:
        shown = (fen_text(stated), fen_text(counted)) if money else (str(stated), str(counted))
        raise StatementFormatError(line, column, f"summary {what} is {shown[0]}, the detail lines add up to {shown[1]}")


OPERATION_NAMES: Mapping[str, Operation] = {
    "withhold": Operation.WITHHOLD,
    "payout": Operation.PAYOUT,
    "refund": Operation.REFUND,
}
