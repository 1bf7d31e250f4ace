"""Caller and operator authentication, per-RPC metrics and log lines (one interceptor).

Calls carry ``authorization: Bearer <token>``. PaymentGateway and
WithholdingPlans methods accept caller tokens; GatewayAdmin and PlanAdmin
methods accept operator tokens only. Tokens are compared in constant time.
Health checks and reflection need no token. Unary and streaming methods
(``WithholdingPlans/ImportPlans``) are checked the same way.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from gateway import metrics
from gateway.api.status import to_status
from gateway.config import Secret
from gateway.errors import GatewayError

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
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            if text.startswith("Bearer "):
                return text[len("Bearer ") :].strip()
            return ""
    return ""


class GatewayInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, tokens: TokenBook) -> None:
        self.tokens = tokens

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
            return self._stream(handler, identity, role, short)
        if handler.unary_unary is None:
            return handler
        behaviour = handler.unary_unary

        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            response = None
            try:
                if identity is None or identity.role != role:
                    code = grpc.StatusCode.UNAUTHENTICATED
                    await context.abort(code, f"missing or invalid {role} token (authorization: Bearer <token>)")
                assert identity is not None
                token = IDENTITY.set(identity)
                try:
                    response = await behaviour(request, context)  # type: ignore[arg-type]
                finally:
                    IDENTITY.reset(token)
                return response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                code, message = _status_of(exc, short)
                await context.abort(code, message)
            finally:
                _observe(short, code, started, identity, request, response)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    @staticmethod
    def _stream(
        handler: grpc.RpcMethodHandler[Any, Any], identity: Identity | None, role: str, short: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """A streaming method: the same token check, identity, status mapping and metrics as a unary one."""
        behaviour = handler.stream_stream

        async def wrapped(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                if identity is None or identity.role != role:
                    code = grpc.StatusCode.UNAUTHENTICATED
                    await context.abort(code, f"missing or invalid {role} token (authorization: Bearer <token>)")
                assert identity is not None and behaviour is not None
                IDENTITY.set(identity)  # this task serves this one call
                async for response in behaviour(requests, context):  # type: ignore[arg-type,attr-defined]
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                code, message = _status_of(exc, short)
                await context.abort(code, message)
            finally:
                _observe(short, code, started, identity, None, None)

        return grpc.stream_stream_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _status_of(exc: Exception, short: str) -> tuple[grpc.StatusCode, str]:
    """The status an RPC that raised ``exc`` ends with; a bug (INTERNAL, not ours) is logged with its stack."""
    code, message = to_status(exc)
    if code is grpc.StatusCode.INTERNAL and not isinstance(exc, GatewayError):
        log.exception("unhandled error in %s", short)
    return code, message


def _observe(short: str, code: Any, started: float, identity: Identity | None, request: Any, response: Any) -> None:
    """The metrics and the log line of one RPC."""
    elapsed = time.perf_counter() - started
    code_name = code.name if isinstance(code, grpc.StatusCode) else str(code)
    metrics.GRPC_REQUESTS.labels(method=short, code=code_name).inc()
    metrics.GRPC_LATENCY.labels(method=short).observe(elapsed)
    log.info(
        "rpc %s %s",
        short,
        code_name,
        extra={
            "method": short,
            "code": code_name,
            "caller": identity.name if identity else "",
            "request_id": getattr(request, "request_id", "")[:64],
            "flow_no": getattr(response, "flow_no", "") or getattr(request, "flow_no", ""),
            "channel": getattr(response, "channel", ""),
            "duration_ms": round(elapsed * 1000, 2),
        },
    )
