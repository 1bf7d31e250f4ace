"""Statement formats by name: the one lookup from a format name to its parser.

A channel's statement format is registered with its adapter, as the
``statement`` of its :data:`channels.registry.ADAPTERS` entry, under the
adapter's name (``sandbox``, ``alipay``, ``wechatpay``). Formats that belong
to no adapter are listed here: ``generic-csv``, ours, for banks that e-mail
their statements (docs/RECONCILIATION.md, "Statement formats").

The gateway parses a downloaded file (``StatementFile.format``) and an
operator-imported one through the same call::

    with open(path, "rb") as stream:
        for line in parser_for(fmt)(stream, channel_id="icbc-1", day=day):
            ...

Each format module is imported on first use, like the adapters.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date
from typing import BinaryIO

from channels.registry import ADAPTERS, load_target
from channels.statement import StatementFormat, StatementLine, StatementParser, UnknownStatementFormat

GENERIC_CSV = "generic-csv"

# format name -> "module:FORMAT" for the formats that belong to no adapter
_STANDALONE: dict[str, str] = {GENERIC_CSV: "channels.generic_csv:FORMAT"}


class _FormatMap(Mapping[str, str]):
    """Format name -> ``"module:FORMAT"``: the adapters' statement formats plus the standalone ones."""

    def __getitem__(self, name: str) -> str:
        if name in _STANDALONE:
            return _STANDALONE[name]
        entry = ADAPTERS.get(name)
        if entry is None or entry.statement is None:
            raise KeyError(name)
        return entry.statement

    def __iter__(self) -> Iterator[str]:
        yield from (name for name, entry in ADAPTERS.items() if entry.statement is not None)
        yield from _STANDALONE

    def __len__(self) -> int:
        return sum(1 for _ in self)


FORMATS: Mapping[str, str] = _FormatMap()


def statement_format(name: str) -> StatementFormat:
    """The format registered as ``name``; raises :class:`UnknownStatementFormat` naming the known ones."""
    target = FORMATS.get(name)
    if target is None:
        known = ", ".join(sorted(FORMATS))
        raise UnknownStatementFormat(f"unknown statement format {name!r} (known: {known})")
    found: StatementFormat = load_target(target)
    if found.name != name:
        raise RuntimeError(f"{target} is format {found.name!r}, registered as {name!r}")
    return found


def parser_for(name: str) -> StatementParser:
    """The parser of format ``name`` (see :class:`channels.statement.StatementParser`)."""
    return statement_format(name).iter_lines


def adapter_format(adapter: str) -> str | None:
    """The statement format of channels of this adapter, or None when it publishes none."""
    entry = ADAPTERS.get(adapter)
    return adapter if entry is not None and entry.statement is not None else None


def iter_statement(name: str, stream: BinaryIO, *, channel_id: str, day: date) -> Iterator[StatementLine]:
    """Parse ``stream`` as format ``name``: :func:`parser_for` then call it."""
    return parser_for(name)(stream, channel_id=channel_id, day=day)
