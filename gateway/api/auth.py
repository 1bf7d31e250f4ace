"""Caller and operator authentication, per-RPC metrics and log lines (one interceptor).

Calls carry ``authorization: Bearer <token>`` (the scheme in any case). PaymentGateway and
WithholdingPlans methods accept caller tokens; GatewayAdmin and PlanAdmin methods accept
operator tokens only. Tokens are compared in constant time. Health checks and reflection need
no token. Streaming methods (``WithholdingPlans/ImportPlans``) are checked the same way,
before the first message is read.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from gateway import metrics
from gateway.api.rich_status import RichError, for_exception
from gateway.config import Secret
from gateway.domain import scrub
from gateway.logs import RPC_FLOW_NO

log = logging.getLogger("paygate.rpc")

GATEWAY_PREFIX = "/paygate.v1.PaymentGateway/"
ADMIN_PREFIX = "/paygate.v1.GatewayAdmin/"
PLANS_PREFIX = "/paygate.v1.WithholdingPlans/"
PLAN_ADMIN_PREFIX = "/paygate.v1.PlanAdmin/"
CALLER_PREFIXES = (GATEWAY_PREFIX, PLANS_PREFIX)
OPERATOR_PREFIXES = (ADMIN_PREFIX, PLAN_ADMIN_PREFIX)


@dataclass(frozen=True)
class Identity:
    name: str
    role: str  # "caller" or "operator"


IDENTITY: contextvars.ContextVar[Identity] = contextvars.ContextVar("paygate_identity")


def current_identity() -> Identity:
    return IDENTITY.get()


class TokenBook:
    def __init__(self, callers: Mapping[str, Secret], operators: Mapping[str, Secret]) -> None:
        self._entries = [(t.reveal().encode(), Identity(n, "caller")) for n, t in callers.items()]
        self._entries += [(t.reveal().encode(), Identity(n, "operator")) for n, t in operators.items()]

    def lookup(self, token: str) -> Identity | None:
        presented = token.encode()
        found: Identity | None = None
        for secret, identity in self._entries:  # no early exit: constant work per call
            if hmac.compare_digest(secret, presented):
                found = identity
        return found


def _bearer(metadata: Any) -> str:
    """The token of ``authorization: Bearer <token>``; the scheme is case-insensitive (RFC 7235 section 2.1)."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


class LogBudget:
    """At most ``per_minute`` log lines a minute for one kind of event; what was dropped is counted.

    :meth:`take` answers None when the line must be dropped, else how many
    were dropped since the last line written (to say so in it).
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._window = -60.0
        self._written = 0
        self._dropped = 0

    def take(self) -> int | None:
        now = self._clock()
        if now - self._window >= 60.0:
            self._window, self._written = now, 0
        if self._written >= self.per_minute:
            self._dropped += 1
            return None
        self._written += 1
        dropped, self._dropped = self._dropped, 0
        return dropped


UNDECODABLE = RichError(
    grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid protobuf message", "REQUEST_UNDECODABLE"
)


class GatewayInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticates, then decodes the request, runs the method, maps errors, logs and counts the real status.

    The request is decoded here, after the credentials check (the handler is
    registered with a pass-through deserializer): an anonymous client gets
    UNAUTHENTICATED whatever it sends, and bytes that are not a valid message
    get INVALID_ARGUMENT with at most :attr:`undecodable_log_per_minute`
    warning lines a minute, not an ERROR traceback per request.
    """

    undecodable_log_per_minute = 10

    def __init__(self, tokens: TokenBook) -> None:
        self.tokens = tokens
        self._undecodable_log = LogBudget(self.undecodable_log_per_minute)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or not method.startswith((*CALLER_PREFIXES, *OPERATOR_PREFIXES)):
            return handler
        role = "operator" if method.startswith(OPERATOR_PREFIXES) else "caller"
        identity = self.tokens.lookup(_bearer(details.invocation_metadata))
        short = method.rsplit("/", 1)[-1]
        if handler.stream_stream is not None:
            return _streaming(handler, identity, role, short)
        if handler.unary_unary is None:
            return handler
        behaviour = handler.unary_unary
        decode: Callable[[bytes], Any] | None = handler.request_deserializer

        async def wrapped(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            error_detail = ""
            request: Any = None
            response: Any = None
            flow_no = RPC_FLOW_NO.set("")
            try:
                if identity is None or identity.role != role:
                    code = grpc.StatusCode.UNAUTHENTICATED
                    await RichError(
                        code, f"missing or invalid {role} token (authorization: Bearer <token>)", "UNAUTHENTICATED"
                    ).abort(context)
                assert identity is not None
                try:
                    request = decode(raw) if decode is not None else raw
                except DecodeError as exc:
                    code = UNDECODABLE.code
                    self._log_undecodable(short, identity, exc)
                    await UNDECODABLE.abort(context)
                token = IDENTITY.set(identity)
                try:
                    response = await behaviour(request, context)  # type: ignore[arg-type]
                finally:
                    IDENTITY.reset(token)
                return response
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError:
                # the client went away or its deadline passed: grpc cancels this task, and no status
                # is sent from here, but the log line and the counter must say what the client saw
                remaining = context.time_remaining()
                code = (
                    grpc.StatusCode.DEADLINE_EXCEEDED
                    if remaining is not None and remaining <= 0
                    else grpc.StatusCode.CANCELLED
                )
                raise
            except Exception as exc:
                error = for_exception(exc, keep=(getattr(request, "request_id", ""),))
                code = error.code
                error_detail = scrub(str(exc))[:1000]  # operators read why (e.g. every channel's rejection)
                if code is grpc.StatusCode.INTERNAL:
                    log.exception("unhandled error in %s", short)
                await error.abort(context)
            finally:
                elapsed = time.perf_counter() - started
                code_name = code.name
                metrics.GRPC_REQUESTS.labels(method=short, code=code_name).inc()
                metrics.GRPC_LATENCY.labels(method=short).observe(elapsed)
                extra = {
                    "method": short,
                    "code": code_name,
                    "caller": identity.name if identity else "",
                    "request_id": str(getattr(request, "request_id", ""))[:64],
                    "flow_no": _flow_no_of(response) or RPC_FLOW_NO.get() or getattr(request, "flow_no", ""),
                    "channel": getattr(response, "channel", ""),
                    "duration_ms": round(elapsed * 1000, 2),
                }
                if error_detail:
                    extra["error"] = error_detail
                RPC_FLOW_NO.reset(flow_no)
                log.info("rpc %s %s", short, code_name, extra=extra)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=None,  # decoded in `wrapped`, after the credentials check
            response_serializer=handler.response_serializer,
        )

    def _log_undecodable(self, method: str, identity: Identity, exc: DecodeError) -> None:
        dropped = self._undecodable_log.take()
        if dropped is None:
            return
        log.warning(
            "undecodable request to %s: %s%s",
            method,
            exc,
            f" ({dropped} more not logged)" if dropped else "",
            extra={"method": method, "caller": identity.name},
        )


def _streaming(
    handler: grpc.RpcMethodHandler[Any, Any], identity: Identity | None, role: str, short: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """A streaming method: the token checked before any message is read, then as a unary one."""
    behaviour = handler.stream_stream

    async def wrapped(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if identity is None or identity.role != role:
                code = grpc.StatusCode.UNAUTHENTICATED
                await RichError(
                    code, f"missing or invalid {role} token (authorization: Bearer <token>)", "UNAUTHENTICATED"
                ).abort(context)
            assert identity is not None and behaviour is not None
            IDENTITY.set(identity)  # this task serves this one call
            async for response in behaviour(requests, context):  # type: ignore[arg-type,attr-defined]
                yield response
        except grpc.aio.AbortError:
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            error = for_exception(exc)
            code = error.code
            if code is grpc.StatusCode.INTERNAL:
                log.exception("unhandled error in %s", short)
            await error.abort(context)
        finally:
            elapsed = time.perf_counter() - started
            metrics.GRPC_REQUESTS.labels(method=short, code=code.name).inc()
            metrics.GRPC_LATENCY.labels(method=short).observe(elapsed)
            log.info(
                "rpc %s %s",
                short,
                code.name,
                extra={"method": short, "code": code.name, "caller": identity.name if identity else ""},
            )

    return grpc.stream_stream_rpc_method_handler(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _flow_no_of(response: Any) -> str:
    """The flow number of a response that is a Flow or holds one (RequeryFlowResponse)."""
    flow_no = getattr(response, "flow_no", "")
    if not flow_no and response is not None and hasattr(response, "flow"):
        flow_no = getattr(response.flow, "flow_no", "")
    return str(flow_no)
