"""The callback endpoint over a socket: body and time limits, and answers that say nothing about us."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway import metrics
from gateway.callbacks import CallbackHandler
from tests.fakes import FakeChannel, FakeGateway

MAX_BODY = 2048
TIMEOUT_S = 0.3


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    gw = FakeGateway(FakeChannel("bank-a"))
    handler = CallbackHandler(gw.registry, gw.flows, gw._expedite, max_body=MAX_BODY, timeout_s=TIMEOUT_S)
    srv = TestServer(handler.app(), host="127.0.0.1")
    await srv.start_server()
    try:
        yield srv
    finally:
        await srv.close()


async def fetch(srv: TestServer, method: str, path: str, body: bytes = b"") -> tuple[int, bytes, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.request(method, srv.make_url(path), data=body) as reply:
        return reply.status, await reply.read(), dict(reply.headers)


def _says_nothing(headers: dict[str, str], body: bytes) -> None:
    assert "Server" not in headers
    for word in (b"aiohttp", b"Python", b"<html", b"Traceback", b"bank-a"):
        assert word not in body, word


async def test_an_unknown_channel_looks_like_any_unknown_path(server: TestServer) -> None:
    status, body, headers = await fetch(server, "POST", "/callbacks/no-such-bank", b"{}")
    other = await fetch(server, "POST", "/no/such/path", b"{}")
    assert (status, body) == (404, b"not found") == other[:2]
    _says_nothing(headers, body)
    _says_nothing(other[2], other[1])


async def test_another_method_is_a_bare_405(server: TestServer) -> None:
    for method in ("GET", "PUT", "DELETE"):
        status, body, headers = await fetch(server, method, "/callbacks/bank-a")
        assert (status, body, headers.get("Allow")) == (405, b"method not allowed", "POST"), method
        _says_nothing(headers, body)


async def test_a_body_over_the_limit_is_refused(server: TestServer) -> None:
    before = metrics.CALLBACKS.labels(channel="bank-a", result="malformed")._value.get()
    status, body, headers = await fetch(server, "POST", "/callbacks/bank-a", b"x" * (MAX_BODY + 1))
    assert (status, body) == (413, b"body too large")
    _says_nothing(headers, body)
    assert metrics.CALLBACKS.labels(channel="bank-a", result="malformed")._value.get() == before + 1
    status, _, _ = await fetch(server, "POST", "/callbacks/bank-a", b"x" * 100)
    assert status != 413  # within the limit: read, and refused by the channel's verification instead


async def test_a_request_that_trickles_in_runs_out_of_time(server: TestServer) -> None:
    before = metrics.CALLBACKS.labels(channel="bank-a", result="timeout")._value.get()
    reader, writer = await asyncio.open_connection(server.host, server.port)
    started = asyncio.get_running_loop().time()
    writer.write(
        b"POST /callbacks/bank-a HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"order_no":'
    )
    await writer.drain()  # and never the rest
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    elapsed = asyncio.get_running_loop().time() - started
    writer.close()
    assert head.startswith(b"HTTP/1.1 503"), head
    assert b"Server:" not in head
    assert TIMEOUT_S * 0.8 <= elapsed < 5
    assert metrics.CALLBACKS.labels(channel="bank-a", result="timeout")._value.get() == before + 1
