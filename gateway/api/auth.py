"""Caller and operator authentication, role checks, per-RPC metrics and log lines (one interceptor).

Who a call is from is decided by :meth:`gateway.security.principals.Principals.authenticate`, from
the bearer token (``authorization: Bearer <token>``, the scheme in any case, compared in constant
time; a second ``authorization`` header makes it an invalid token) and the client certificate's
SANs that gRPC verified and reports in the call's auth context.
Which credentials a method wants, and which operator role, comes from :mod:`gateway.api.access`:
PaymentGateway and WithholdingPlans methods are for callers, GatewayAdmin and PlanAdmin methods for
operators with at least the role the table names; a paygate method no table lists is refused.
Health checks and reflection need no credentials (under mutual TLS the handshake already required a
certificate). A streaming method (``WithholdingPlans/ImportPlans``) is checked the same way before
its first message is read.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from gateway import metrics
from gateway.api import access
from gateway.api.rich_status import RichError, for_exception
from gateway.domain import scrub
from gateway.logs import RPC_FLOW_NO
from gateway.security.principals import Audience, Identity, Peer, Principals, Refused

log = logging.getLogger("paygate.rpc")

__all__ = ["IDENTITY", "GatewayInterceptor", "Identity", "LogBudget", "current_identity", "peer_of"]

IDENTITY: contextvars.ContextVar[Identity] = contextvars.ContextVar("paygate_identity")


def current_identity() -> Identity:
    return IDENTITY.get()


def peer_of(context: grpc.aio.ServicerContext[Any, Any]) -> Peer:
    """The client certificate's SANs as gRPC verified them (empty without a verified certificate)."""
    auth = context.auth_context() or {}

    def values(name: str) -> tuple[str, ...]:
        return tuple(v.decode("utf-8", "replace") for v in auth.get(name, ()))

    return Peer(uris=values("peer_uri"), dns=values("peer_dns"))


# what _bearer answers for more than one authorization header: shorter than any configured token (16), so
# it is refused as an invalid token, never resolved by which header came first (a proxy's, a smuggled one)
_AMBIGUOUS = "\x00"


def _bearer(metadata: Any) -> str:
    """The token of ``authorization: Bearer <token>``; the scheme is case-insensitive (RFC 7235 section 2.1)."""
    found = [value for key, value in metadata or () if key == "authorization"]
    if len(found) > 1:
        return _AMBIGUOUS
    for value in found:
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
    """Authenticates, checks the role, then decodes the request, runs the method, maps errors, logs and
    counts the real status.

    The request is decoded here, after the credentials check (the handler is
    registered with a pass-through deserializer): an anonymous client gets
    UNAUTHENTICATED whatever it sends, and bytes that are not a valid message
    get INVALID_ARGUMENT with at most :attr:`undecodable_log_per_minute`
    warning lines a minute, not an ERROR traceback per request.
    """

    undecodable_log_per_minute = 10

    def __init__(self, principals: Principals) -> None:
        self.principals = principals
        self._undecodable_log = LogBudget(self.undecodable_log_per_minute)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        method: str = details.method
        if handler is None:
            return handler
        try:
            audience = access.audience_of(method)
        except access.Unmapped as exc:
            return _refusing(
                handler, method, RichError(grpc.StatusCode.PERMISSION_DENIED, str(exc), "PERMISSION_DENIED")
            )
        if audience is None:
            return handler
        bearer = _bearer(details.invocation_metadata)
        if handler.stream_stream is not None:
            return self._streaming(handler, audience, bearer, method)
        if handler.unary_unary is None:  # no other streaming kind is checked: refuse rather than serve it
            error = RichError(grpc.StatusCode.UNIMPLEMENTED, "this streaming kind is not served", "UNIMPLEMENTED")
            return _refusing(handler, method, error)
        behaviour = handler.unary_unary
        decode: Callable[[bytes], Any] | None = handler.request_deserializer
        short = method.rsplit("/", 1)[-1]

        async def wrapped(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            error_detail = ""
            request: Any = None
            response: Any = None
            identity: Identity | None = None
            flow_no = RPC_FLOW_NO.set("")
            try:
                refusal = None
                try:
                    identity = self.principals.authenticate(audience, bearer, peer_of(context))
                except Refused as exc:
                    refusal = RichError(grpc.StatusCode.UNAUTHENTICATED, str(exc), "UNAUTHENTICATED")
                if identity is not None and audience is Audience.OPERATOR:
                    refusal = _role_refusal(method, short, identity)
                if refusal is not None:
                    code, error_detail = refusal.code, refusal.message
                    await refusal.abort(context)
                assert identity is not None
                try:
                    request = decode(raw) if decode is not None else raw
                except DecodeError as exc:
                    code = UNDECODABLE.code
                    self._log_undecodable(short, identity, exc)
                    await UNDECODABLE.abort(context)
                bound = IDENTITY.set(identity)
                try:
                    response = await behaviour(request, context)  # type: ignore[arg-type]
                finally:
                    IDENTITY.reset(bound)
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
                metrics.GRPC_REQUEST_CHILDREN(short, code_name).inc()
                metrics.GRPC_LATENCY_CHILDREN(short).observe(elapsed)
                extra = {
                    "method": short,
                    "code": code_name,
                    "caller": identity.name if identity else "",
                    "via": identity.via if identity else "",
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

    def _streaming(
        self, handler: grpc.RpcMethodHandler[Any, Any], audience: Audience, bearer: str, method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """A bidirectional stream: credentials and role checked before any message is read, then served."""
        behaviour: Any = handler.stream_stream
        short = method.rsplit("/", 1)[-1]

        async def wrapped(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            identity: Identity | None = None
            try:
                refusal = None
                try:
                    identity = self.principals.authenticate(audience, bearer, peer_of(context))
                except Refused as exc:
                    refusal = RichError(grpc.StatusCode.UNAUTHENTICATED, str(exc), "UNAUTHENTICATED")
                if identity is not None and audience is Audience.OPERATOR:
                    refusal = _role_refusal(method, short, identity)
                if refusal is not None:
                    code = refusal.code
                    await refusal.abort(context)
                assert identity is not None
                IDENTITY.set(identity)  # this task serves this one call
                async for response in behaviour(requests, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except DecodeError as exc:
                code = UNDECODABLE.code
                if identity is not None:
                    self._log_undecodable(short, identity, exc)
                await UNDECODABLE.abort(context)
            except Exception as exc:
                error = for_exception(exc)
                code = error.code
                if code is grpc.StatusCode.INTERNAL:
                    log.exception("unhandled error in %s", short)
                await error.abort(context)
            finally:
                metrics.GRPC_REQUESTS.labels(method=short, code=code.name).inc()
                metrics.GRPC_LATENCY.labels(method=short).observe(time.perf_counter() - started)
                extra = {"method": short, "code": code.name, "caller": identity.name if identity else ""}
                log.info("rpc %s %s", short, code.name, extra=extra)

        return grpc.stream_stream_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
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


def _role_refusal(method: str, short: str, identity: Identity) -> RichError | None:
    """PERMISSION_DENIED when the operator's role is below the method's (or the method is in no table)."""
    try:
        required = access.minimum_role(method)
    except access.Unmapped as exc:
        return RichError(grpc.StatusCode.PERMISSION_DENIED, str(exc), "PERMISSION_DENIED")
    if identity.role is not None and identity.role.allows(required):
        return None
    return RichError(
        grpc.StatusCode.PERMISSION_DENIED,
        f"{short} needs the {required} role; operator {identity.name} is {identity.role or 'without a role'}",
        "PERMISSION_DENIED",
    )


def _refusing(
    handler: grpc.RpcMethodHandler[Any, Any], method: str, error: RichError
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same kind as ``handler`` that answers ``error`` to every call, logged and counted."""
    short = method.rsplit("/", 1)[-1]

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        metrics.GRPC_REQUESTS.labels(method=short, code=error.code.name).inc()
        log.warning("rpc %s refused: %s", short, error.message, extra={"method": short, "code": error.code.name})
        await error.abort(context)

    kinds = {
        "unary_unary": grpc.unary_unary_rpc_method_handler,
        "unary_stream": grpc.unary_stream_rpc_method_handler,
        "stream_unary": grpc.stream_unary_rpc_method_handler,
        "stream_stream": grpc.stream_stream_rpc_method_handler,
    }
    kind = next(name for name in kinds if getattr(handler, name) is not None)
    make: Any = kinds[kind]
    return make(  # type: ignore[no-any-return]
        refuse,
        request_deserializer=None,
        response_serializer=handler.response_serializer,
    )


def _flow_no_of(response: Any) -> str:
    """The flow number of a response that is a Flow or holds one (RequeryFlowResponse)."""
    flow_no = getattr(response, "flow_no", "")
    if not flow_no and response is not None and hasattr(response, "flow"):
        flow_no = getattr(response.flow, "flow_no", "")
    return str(flow_no)
