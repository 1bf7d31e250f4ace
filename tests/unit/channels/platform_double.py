"""A stand-in for a payment platform that answers what a test tells it and records what it received.

It shares no code with ``channels/*/wire.py`` or the simulators: the test
builds every answer from the official SDKs' code paths or the published
documentation, so a shape our wire module gets wrong is not wrong here too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass(frozen=True)
class Received:
    """One request as it arrived: the raw request target, the headers, the body and (for forms) its fields."""

    method: str
    raw_path: str
    headers: Mapping[str, str]
    body: bytes
    form: Mapping[str, str]


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


Answer = Callable[[Received], Reply]


@dataclass
class Platform:
    url: str
    received: list[Received]


@asynccontextmanager
async def platform(answer: Answer) -> AsyncIterator[Platform]:
    """Serve ``answer`` for every request on 127.0.0.1; yields the base URL and the requests received."""
    received: list[Received] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        form: dict[str, str] = {}
        if request.content_type == "application/x-www-form-urlencoded":
            form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        seen = Received(request.method, request.raw_path, dict(request.headers), body, form)
        received.append(seen)
        reply = answer(seen)
        return web.Response(
            status=reply.status, text=reply.body, headers=dict(reply.headers), content_type=reply.content_type
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield Platform(str(server.make_url("")).rstrip("/"), received)
    finally:
        await server.close()
