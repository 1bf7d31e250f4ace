"""The bulk loader's guards, without a server: it sends a local file only when its own statement
asked for exactly that file, and it notices a server that takes no LOCAL INFILE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pymysql
import pytest

from gateway.errors import DatabaseUnavailable, StoreError
from gateway.store import bulk


class Packet:
    def __init__(self, filename: bytes) -> None:
        self._data = b"\xfb" + filename

    def get_all_data(self) -> bytes:
        return self._data


class Conn:
    """What the result reader touches of a connection."""

    def __init__(self, expected: str | None) -> None:
        self.paygate_infile = expected
        self.sent: list[bytes] = []
        self.closed = False

    def write_packet(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        self.closed = True


def result_on(conn: Conn) -> Any:
    result = bulk._GuardedResult.__new__(bulk._GuardedResult)
    result.connection = conn
    return result


@pytest.mark.parametrize("expected", [None, "/tmp/paygate-recon-1.tsv"])
async def test_a_request_for_another_file_gets_nothing(
    expected: str | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE")
    opened: list[str] = []

    async def library(self: Any, packet: Packet) -> None:
        opened.append("library")

    monkeypatch.setattr(bulk.MySQLResult, "_read_load_local_packet", library)
    conn = Conn(expected)
    with pytest.raises(StoreError, match="not given"):
        await result_on(conn)._read_load_local_packet(Packet(str(secret).encode()))
    assert opened == [] and conn.sent == [b""] and conn.closed


async def test_the_file_of_its_own_statement_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[bytes] = []

    async def library(self: Any, packet: Packet) -> None:
        sent.append(packet.get_all_data()[1:])

    monkeypatch.setattr(bulk.MySQLResult, "_read_load_local_packet", library)
    conn = Conn("/tmp/paygate-recon-2.tsv")
    await result_on(conn)._read_load_local_packet(Packet(b"/tmp/paygate-recon-2.tsv"))
    assert sent == [b"/tmp/paygate-recon-2.tsv"] and not conn.closed


class Refusing:
    paygate_infile: str | None = None
    paygate_warnings = 0
    closed = False

    def escape(self, text: str) -> str:
        return f"'{text}'"

    async def query(self, sql: str) -> int:
        raise pymysql.err.OperationalError(1148, "The used command is not allowed with this MariaDB version")

    def close(self) -> None:
        self.closed = True


async def test_a_server_without_local_infile_is_noticed_once() -> None:
    loader = bulk.BulkLoader({})
    conns = [Refusing()]

    async def connection() -> Any:
        return conns.pop()

    loader._connection = connection  # type: ignore[method-assign]
    assert await loader.load("/tmp/x.tsv", "recon_lines", ["run_id"]) is None
    assert loader.refused
    assert await loader.load("/tmp/x.tsv", "recon_lines", ["run_id"]) is None  # no second connection asked for


def test_fields_escape_what_the_format_reads() -> None:
    assert bulk.field("a\tb\nc\\d\re\0f") == "a\\tb\\nc\\\\d\\re\\0f"
    assert bulk.field("退款 O'Brien") == "退款 O'Brien"


class Loading(Refusing):
    async def query(self, sql: str) -> int:
        return 1

    async def commit(self) -> None:
        pass


async def test_a_connection_idle_too_long_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    loader = bulk.BulkLoader({}, idle_s=30.0)
    made: list[Loading] = []

    async def connect(self: Any) -> None:
        made.append(self)

    monkeypatch.setattr(bulk, "_LoaderConnection", lambda **kw: Loading())
    monkeypatch.setattr(Loading, "_connect", connect, raising=False)
    clock = [1000.0]
    monkeypatch.setattr(bulk.time, "monotonic", lambda: clock[0])
    await loader.load("/tmp/a.tsv", "recon_lines", ["run_id"])
    await loader.load("/tmp/b.tsv", "recon_lines", ["run_id"])  # within a run: the same connection
    assert len(made) == 1
    clock[0] += 31  # the next day's run, say: the server may have dropped it
    await loader.load("/tmp/c.tsv", "recon_lines", ["run_id"])
    assert len(made) == 2 and made[0].closed


async def test_a_database_that_cannot_be_reached_is_the_stores_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Unreachable(Refusing):
        async def _connect(self) -> None:
            raise pymysql.err.OperationalError(2003, "Can't connect to MySQL server")

    monkeypatch.setattr(bulk, "_LoaderConnection", lambda **kw: Unreachable())
    with pytest.raises(DatabaseUnavailable):
        await bulk.BulkLoader({}).load("/tmp/a.tsv", "recon_lines", ["run_id"])
