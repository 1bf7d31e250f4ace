"""channels.http: what a failed exchange means for the money (DESIGN.md invariant 3), and the shared settings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from channels import settings
from channels.config import TABLE, ConfigError, Seconds, Secret
from channels.contract import OutcomeStatus
from channels.http import ChannelHttp, HttpChannel, Lost, Response, Unsent
from channels.registry import ChannelSpec
from devstack.processes import free_port

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Sig: s\r\nConnection: close\r\n\r\nok")
    await writer.drain()
    writer.close()


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)  # the request arrived: the channel may act on it
    writer.close()


async def _hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    await asyncio.sleep(5)
    writer.close()


@pytest.fixture
async def http() -> AsyncIterator[ChannelHttp]:
    client = ChannelHttp(connect_timeout_s=1.0, timeout_s=0.5)
    await client.start()
    yield client
    await client.stop()


async def _send_to(http: ChannelHttp, serve: Serve) -> Response | Unsent | Lost:
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await http.send("POST", f"http://127.0.0.1:{port}/x", data=b"{}", headers={"A": "b"})
    finally:
        server.close()


async def test_an_answer_is_a_response(http: ChannelHttp) -> None:
    result = await _send_to(http, _answer)
    assert isinstance(result, Response)
    assert (result.status, result.body, result.headers["x-sig"]) == (201, b"ok", "s")


async def test_refused_connection_is_unsent_and_safe_elsewhere(http: ChannelHttp) -> None:
    result = await http.send("POST", f"http://127.0.0.1:{free_port()}/x", data=b"{}")
    assert isinstance(result, Unsent)
    outcome = result.outcome()
    assert (outcome.status, outcome.code, outcome.safe_elsewhere) == (OutcomeStatus.FAILED, "CONNECTION_FAILED", True)


async def test_hang_up_after_the_request_arrived_is_pending(http: ChannelHttp) -> None:
    result = await _send_to(http, _hang_up)
    assert isinstance(result, Lost) and result.code == "CONNECTION_LOST"
    outcome = result.outcome()
    assert (outcome.status, outcome.safe_elsewhere) == (OutcomeStatus.PENDING, False)


async def test_no_answer_in_time_is_pending_timeout(http: ChannelHttp) -> None:
    result = await _send_to(http, _hold)
    assert isinstance(result, Lost) and result.code == "TIMEOUT"
    assert result.outcome().status is OutcomeStatus.PENDING


async def test_send_before_start_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError, match="before start"):
        await ChannelHttp(connect_timeout_s=1, timeout_s=2).send("GET", "http://127.0.0.1:9/")


async def test_http_channel_lifecycle_and_currency_refusal() -> None:
    channel = HttpChannel("c1", ChannelHttp(connect_timeout_s=1, timeout_s=2), currencies=frozenset({"CNY"}))
    async with channel:
        assert channel.channel_id == "c1" and channel.banks is None
        assert channel._unsupported_currency("CNY") is None
        refused = channel._unsupported_currency("USD")
        assert refused is not None and (refused.code, refused.safe_elsewhere) == ("CURRENCY_NOT_SUPPORTED", True)
    await channel.stop()  # idempotent


# --- channels.settings ---------------------------------------------------------------


@dataclass(frozen=True)
class _Probe:
    """An adapter-like settings table using every shared type."""

    __pydantic_config__ = TABLE

    app_id: settings.Text = "id"
    scene: settings.Text = "DEFAULT"
    secret: settings.SecretText = Secret("s")
    base_url: settings.HttpUrl = "http://h"
    connect_timeout_s: Seconds = 3.0
    timeout_s: Seconds = 15.0
    key: Secret | None = None
    key_path: str | None = None

    def check_config(self, key: str) -> None:
        settings.check_timeouts(key, self.connect_timeout_s, self.timeout_s)


def _read(**values: object) -> _Probe:
    return ChannelSpec("c1", "x", values, key="channels[0]").read(_Probe)


def _bad_key(**values: object) -> str:
    with pytest.raises(ConfigError) as caught:
        _read(**values)
    return caught.value.key


def test_text_strips_takes_numeric_ids_and_keeps_secrets_as_given() -> None:
    assert _read(app_id=1900000109).app_id == "1900000109"
    assert _read(app_id=" 2021 ").app_id == "2021"
    assert _read(secret=" s ").secret.reveal() == " s "
    assert _read().scene == "DEFAULT"
    for bad in ("", "  ", True, 1.5):
        assert _bad_key(app_id=bad) == "channels[0].app_id"
    assert _bad_key(secret=" ") == "channels[0].secret"


def test_seconds_and_their_order() -> None:
    assert _read(timeout_s=4).timeout_s == 4.0
    for bad in (0, -1, "2", True, float("inf"), float("nan")):
        assert _bad_key(timeout_s=bad) == "channels[0].timeout_s"
    assert (_read().connect_timeout_s, _read().timeout_s) == (3.0, 15.0)
    assert _bad_key(connect_timeout_s=20) == "channels[0].connect_timeout_s"


def test_http_url() -> None:
    assert _read(base_url="https://h/x/").base_url == "https://h/x/"
    for bad in ("ftp://h", "h.example", "http://"):
        assert _bad_key(base_url=bad) == "channels[0].base_url"


def test_key_material_inline_or_file(tmp_path) -> None:
    path = tmp_path / "k.pem"
    path.write_text("PEM")
    assert settings.key_material(_read(key="INLINE"), "key", "channels[0]") == ("key", "INLINE")
    assert settings.key_material(_read(key_path=str(path)), "key", "channels[0]") == ("key_path", "PEM")
    assert settings.optional_key_material(_read(), "key", "channels[0]") is None
    cases = [({}, "channels[0].key"), ({"key": "A", "key_path": str(path)}, "channels[0].key")]
    cases.append(({"key_path": str(tmp_path / "missing")}, "channels[0].key_path"))
    for values, key in cases:
        with pytest.raises(ConfigError) as caught:
            settings.key_material(_read(**values), "key", "channels[0]")
        assert caught.value.key == key


def test_an_unknown_setting_is_named() -> None:
    assert _bad_key(colour="blue") == "channels[0].colour"
