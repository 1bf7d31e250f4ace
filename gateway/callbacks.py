"""Channel callback endpoint (aiohttp): ``POST /callbacks/{channel_id}``.

For each request: read the raw body (size-capped), let the channel adapter
verify the signature in constant time and parse it, cross-check the order
number, operation and amount against our attempt, then apply the outcome
through the same compare-and-set transition the poller uses. The answer is
exactly the acknowledgement the channel expects (``callback_reply``).

* failed verification / mismatch (another channel's order, another operation,
  another amount, a success that does not say its amount): nothing changes, the channel's error reply,
  a metric, and an immediate query of the attempt when the order is known;
* replay (same result already recorded): acknowledged, nothing changes;
* verified but not a result (a batch of transfers ended, how each did is not
  said): acknowledged, and the attempt is queried at once;
* unknown order: acknowledged per the channel's convention and counted;
* anything unexpected on our side (database down), or a request that takes
  longer than ``timeout_s`` to arrive and be handled: 503 so the channel
  retries. Never a 500 with a stack trace.

What the endpoint says about itself is as little as it can be: an unknown
channel is the same bare ``404 not found`` as any unknown path, another
method the same bare ``405``, a body over ``max_body`` a bare ``413``, one whose
``Content-Encoding`` does not decode a bare ``400``; no
``Server`` header, no aiohttp error page, no versions. It can be served over
TLS (``[server.http_tls]``, gateway/security/tls.py) or behind a load
balancer that terminates TLS (then set ``public_callback_base`` to its
``https://`` address).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from channels.contract import CallbackRejected, Channel, HttpReply, Operation, OutcomeStatus, notice_matches
from channels.registry import ChannelRegistry
from gateway import metrics
from gateway.collections import CollectionService
from gateway.domain import AttemptStatus
from gateway.flows import FlowService
from gateway.store.rows import Applied, Source

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # what [server] http_max_body_bytes defaults to
REQUEST_TIMEOUT_S = 10.0  # ... and http_request_timeout_s
_OPERATIONS = frozenset(o.value for o in Operation)


def _bare(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text)


@web.middleware
async def _quiet_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own answers (unknown path, method, oversized body) as bare text, naming nothing."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status == 405:
            return web.Response(status=405, text="method not allowed", headers={hdrs.ALLOW: "POST"})
        return _bare(exc.status, {404: "not found", 413: "body too large"}.get(exc.status, "bad request"))


async def _no_server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.popall(hdrs.SERVER, None)


def _response(reply: HttpReply) -> web.Response:
    return web.Response(
        status=reply.status, body=reply.body, content_type=reply.content_type.split(";")[0], headers=dict(reply.headers)
    )


class CallbackHandler:
    def __init__(
        self,
        registry: ChannelRegistry,
        flows: FlowService,
        expedite: Callable[[int, str], Awaitable[object]],
        collections: CollectionService | None = None,
        *,
        max_body: int = MAX_BODY,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.registry = registry
        self.flows = flows
        self.expedite = expedite
        self.collections = collections
        self.max_body = max_body
        self.timeout_s = timeout_s

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body, middlewares=[_quiet_errors])
        app.on_response_prepare.append(_no_server_header)
        app.router.add_post("/callbacks/{channel_id}", self.handle)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def handle(self, request: web.Request) -> web.Response:
        channel_id = request.match_info["channel_id"]
        if channel_id not in self.registry:
            metrics.CALLBACKS.labels(channel="unknown", result="malformed").inc()
            return _bare(404, "not found")  # the same as any unknown path: which channels exist is not said
        channel = self.registry.get(channel_id)
        try:
            async with asyncio.timeout(self.timeout_s):
                if request.content_length is not None and request.content_length > self.max_body:
                    metrics.CALLBACKS.labels(channel=channel_id, result="malformed").inc()
                    return _bare(413, "body too large")
                try:
                    body = await request.read()
                except web.HTTPRequestEntityTooLarge:
                    metrics.CALLBACKS.labels(channel=channel_id, result="malformed").inc()
                    return _bare(413, "body too large")
                except web.RequestPayloadError:  # a Content-Encoding or chunking that does not decode: theirs
                    metrics.CALLBACKS.labels(channel=channel_id, result="malformed").inc()
                    log.warning("callback body could not be read", extra={"channel": channel_id})
                    return _bare(400, "bad request")
                return await self._process(channel_id, channel, request, body)
        except TimeoutError:
            # a slow sender, or we are slow: either way the channel retries, and a result applied
            # meanwhile is replayed idempotently
            metrics.CALLBACKS.labels(channel=channel_id, result="timeout").inc()
            log.warning(
                "callback took longer than %.1f s; asking the channel to retry",
                self.timeout_s,
                extra={"channel": channel_id},
            )
            return _bare(503, "temporarily unavailable")
        except Exception:
            log.exception("callback handling failed; asking the channel to retry", extra={"channel": channel_id})
            return _bare(503, "temporarily unavailable")

    async def _process(self, channel_id: str, channel: Channel, request: web.Request, body: bytes) -> web.Response:
        headers = {k: v for k, v in request.headers.items()}
        headers.setdefault("Content-Type", request.content_type)
        try:
            notice = channel.parse_callback(headers, body)
        except CallbackRejected as exc:
            result = "bad_signature" if exc.bad_signature else "malformed"
            metrics.CALLBACKS.labels(channel=channel_id, result=result).inc()
            log.warning("callback rejected: %s", exc.reason, extra={"channel": channel_id})
            if exc.channel_order_no:
                await self._expedite_order(exc.channel_order_no, channel_id)
            return _response(channel.callback_reply(False))
        except Exception:
            metrics.CALLBACKS.labels(channel=channel_id, result="malformed").inc()
            log.warning("callback could not be parsed", extra={"channel": channel_id})
            return _response(channel.callback_reply(False))

        attempt = await self.flows.store.attempt_by_order_no(notice.channel_order_no)
        if attempt is None:
            metrics.CALLBACKS.labels(channel=channel_id, result="unknown_order").inc()
            log.warning("callback for an unknown order", extra={"channel": channel_id})
            return _response(channel.callback_reply(True))
        mismatch = ""
        if attempt.channel != channel_id:
            mismatch = "order belongs to another channel"
        elif attempt.operation not in _OPERATIONS or not notice_matches(notice.operation, Operation(attempt.operation)):
            mismatch = "operation differs"
        elif notice.amount is None and notice.outcome.status is OutcomeStatus.SUCCEEDED:
            if attempt.status is AttemptStatus.SUCCEEDED:
                # the query already decided (amount checked there): the channel's retries are acknowledged,
                # nothing changes, or it would send the same notice for a day
                metrics.CALLBACKS.labels(channel=channel_id, result="replay").inc()
                return _response(channel.callback_reply(True))
            mismatch = "success without an amount"  # nothing to check it against: the query decides
        elif notice.amount is not None and notice.amount != attempt.amount:
            mismatch = "amount differs"
        if mismatch:
            metrics.CALLBACKS.labels(channel=channel_id, result="mismatch").inc()
            log.warning(
                "callback rejected: %s",
                mismatch,
                extra={"channel": channel_id, "channel_order_no": attempt.channel_order_no},
            )
            if attempt.channel in self.registry:
                # at most a query (invariant 7): the channel's answer to it, not this notice, decides;
                # a success for another amount there sends the flow to review (gateway/poller.py)
                await self.expedite(attempt.id, attempt.channel)
            return _response(channel.callback_reply(False))
        outcome = notice.outcome
        if self.collections is not None and attempt.operation == Operation.COLLECT.value:
            outcome = await self.collections.result_of(attempt, outcome)
        applied = await self.flows.apply(attempt.id, outcome, Source.CALLBACK)
        if not notice.outcome.definite:
            # a verified notice that does not say how the order ended (a WeChat Pay batch finished): ask now
            await self.expedite(attempt.id, attempt.channel)
        label = {
            Applied.TRANSITIONED: "verified",
            Applied.NOOP: "replay",
            Applied.STILL_PENDING: "replay",
            Applied.DISCREPANCY: "verified",
            Applied.UNKNOWN: "unknown_order",
        }[applied.applied]
        metrics.CALLBACKS.labels(channel=channel_id, result=label).inc()
        log.info(
            "callback %s",
            applied.applied.value,
            extra={"channel": channel_id, "channel_order_no": attempt.channel_order_no, "outcome": notice.outcome.code},
        )
        return _response(channel.callback_reply(True))

    async def _expedite_order(self, order_no: str, channel_id: str) -> None:
        attempt = await self.flows.store.attempt_by_order_no(order_no[:40])
        if attempt is not None and attempt.channel == channel_id:
            await self.expedite(attempt.id, attempt.channel)
