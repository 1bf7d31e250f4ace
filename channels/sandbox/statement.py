"""The sandbox statement format: parser (and the simulator's writer). Work in progress: the interface first."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import BinaryIO

from channels.contract import Operation
from channels.statement import StatementFormat, StatementLine


def iter_lines(stream: BinaryIO, *, channel_id: str, day: date) -> Iterator[StatementLine]:
    raise NotImplementedError("sandbox statements: parser not written yet")
    yield  # a generator


FORMAT = StatementFormat(
    "sandbox",
    iter_lines,
    covers=frozenset({Operation.WITHHOLD, Operation.PAYOUT, Operation.REFUND}),
    lists_failures=True,
)
