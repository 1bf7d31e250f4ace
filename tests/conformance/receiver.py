"""A callback receiver for tests: an aiohttp endpoint that does what the gateway's does.

It calls ``parse_callback`` on the channel and answers with ``callback_reply``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from channels.contract import CallbackNotice, CallbackRejected, Channel
from channels.simkit import HttpServer


@dataclass
class Receiver:
    """Receives callbacks the way the gateway's endpoint does."""

    channel: Channel | None = None
    notices: list[CallbackNotice] = field(default_factory=list)
    raw: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    rejected: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        assert self.channel is not None
        body = await request.read()
        headers = dict(request.headers)
        try:
            notice = self.channel.parse_callback(headers, body)
        except CallbackRejected:
            self.rejected += 1
            reply = self.channel.callback_reply(False)
        else:
            self.notices.append(notice)
            self.raw.append((headers, body))
            reply = self.channel.callback_reply(True)
        return web.Response(status=reply.status, body=reply.body, headers={"Content-Type": reply.content_type})

    async def notice_for(self, order_no: str, timeout: float = 5.0) -> CallbackNotice:
        async with asyncio.timeout(timeout):
            while True:
                for notice in self.notices:
                    if notice.channel_order_no == order_no:
                        return notice
                await asyncio.sleep(0.02)


async def start_receiver() -> tuple[Receiver, HttpServer, str]:
    """Start a receiver on 127.0.0.1; returns it, its server (stop it) and the notify URL."""
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/notify", receiver.handle)
    server = HttpServer(app)
    base = await server.start()
    return receiver, server, f"{base}/notify"
