"""Bulk loading with ``LOAD DATA LOCAL INFILE``: the cheapest way to put a million rows into MariaDB.

Reconciliation stages every line of a statement before matching it; through multi-row INSERTs
the server spends about twice the CPU per row that ``LOAD DATA`` does (it parses every value
of every statement), and the staging was most of a run's time.

``LOCAL INFILE`` has a well-known hazard: the protocol lets the *server* name the file the
client sends, so a client that honours any request hands a hostile or compromised server any
file it can read. Here that cannot happen:

* only the loader's own connections ask for the capability; the pool's never do, so nothing
  else in the gateway will answer such a request;
* a loader connection sends a file only while it runs its own ``LOAD DATA`` statement, and
  only the file that statement named: a request for any other name gets no data, the
  connection is closed and :class:`~gateway.errors.StoreError` says why.

``LOCAL`` also implies ``IGNORE``: the server turns a value too long, a malformed number or a
duplicate key into a warning and loads the row anyway, whatever the session's strict mode. A
load that leaves any warning is rolled back and refused (``DataRefused``, ``DuplicateKey``), as
an INSERT would be.

A server that refuses ``LOCAL INFILE`` (``local_infile=OFF``) is detected once; the caller is told
(``load`` returns None) and falls back to INSERTs.

This reaches into aiomysql's result reader (``MySQLResult._read_load_local_packet``, the one
place a file request arrives; checked against aiomysql 0.2 and 0.3, pinned below 0.4 in
pyproject.toml).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import aiomysql
from aiomysql.connection import MySQLResult

from gateway.errors import DataRefused, DuplicateKey, StoreError

log = logging.getLogger(__name__)

# local_infile=OFF on the server; LOAD DATA LOCAL disabled by the client or server capabilities
_REFUSED = {1148, 3948, 4166}
# One tab-separated row per line, backslash escapes: what :func:`field` writes.
_FORMAT = "CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def field(text: str) -> str:
    """``text`` as a field of the loader's format (its tab, newline and backslash escaped)."""
    return text.translate(_ESCAPES)


class _GuardedResult(MySQLResult):  # type: ignore[misc]
    async def _read_load_local_packet(self, first_packet: Any) -> None:
        conn = self.connection
        requested = bytes(first_packet.get_all_data()[1:])
        expected: str | None = getattr(conn, "paygate_infile", None)
        if expected is None or requested != expected.encode():
            conn.write_packet(b"")  # no data: the server ends the statement
            conn.close()
            raise StoreError(
                f"the database asked for a local file it was not given ({requested[:80]!r}); nothing was sent"
            )
        await super()._read_load_local_packet(first_packet)


class _LoaderConnection(aiomysql.Connection):  # type: ignore[misc]
    """A connection that answers a file request only for the file of its own statement."""

    paygate_infile: str | None = None
    paygate_warnings = 0  # the last statement's warning count

    async def _read_query_result(self, unbuffered: bool = False) -> None:
        if unbuffered:  # the loader never reads unbuffered; keep the library's path for it
            await super()._read_query_result(unbuffered=True)
            return
        self._result = None
        result = _GuardedResult(self)
        await result.read()
        self._result = result
        self._affected_rows = result.affected_rows
        self.paygate_warnings = int(result.warning_count or 0)
        if result.server_status is not None:
            self.server_status = result.server_status


class BulkLoader:
    """Loads tab-separated files into a table over a few dedicated connections (see the module docstring)."""

    def __init__(self, connect_kw: dict[str, Any], *, keep: int = 4, idle_s: float = 30.0) -> None:
        self._kw = connect_kw
        self._idle: list[tuple[float, _LoaderConnection]] = []  # (when it went idle, the connection)
        self._keep = keep
        self._idle_s = idle_s  # kept for the batches of one run, not from one day's run to the next
        self.refused = False

    async def _connection(self) -> _LoaderConnection:
        now = time.monotonic()
        while self._idle:
            since, conn = self._idle.pop()
            if now - since <= self._idle_s:
                return conn
            conn.close()  # the server may have dropped it meanwhile (wait_timeout)
        conn = _LoaderConnection(local_infile=True, **self._kw)
        await conn._connect()
        return conn

    async def load(self, path: str, table: str, columns: Sequence[str]) -> int | None:
        """Load ``path`` into ``table`` (``columns`` in the file's order) and commit; rows loaded.

        None: the server does not take LOCAL INFILE (nothing was loaded; use INSERTs).
        ``table`` and ``columns`` are the caller's identifiers, never input.
        """
        if self.refused:
            return None
        from gateway.store.db import translate  # db imports this module

        try:
            conn = await self._connection()
        except Exception as exc:
            raise translate(exc) from exc
        reusable = False
        try:
            conn.paygate_infile = path
            n: int = await conn.query(
                f"LOAD DATA LOCAL INFILE {conn.escape(path)} INTO TABLE {table} {_FORMAT} ({', '.join(columns)})"
            )
            # LOCAL implies IGNORE: a value cut, a bad number, a duplicate key are only warnings
            # here, whatever the session's strict mode. Any warning refuses the whole file.
            if conn.paygate_warnings:
                warnings = await conn.show_warnings() or [("Warning", 0, "a warning the server did not list")]
                await conn.rollback()
                code, message = int(warnings[0][1]), str(warnings[0][2])
                raise DuplicateKey("PRIMARY", message) if code == 1062 else DataRefused(code, message)
            await conn.commit()
            reusable = True
            return n
        except (asyncio.CancelledError, DuplicateKey, DataRefused):
            raise
        except Exception as exc:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
            if code in _REFUSED:
                self.refused = True
                log.warning("the database refuses LOAD DATA LOCAL INFILE; staging with INSERTs instead")
                return None
            raise translate(exc) from exc
        finally:
            conn.paygate_infile = None
            if reusable and len(self._idle) < self._keep:
                self._idle.append((time.monotonic(), conn))
            else:
                conn.close()

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, conn in idle:
            conn.close()
