"""Caller and operator authentication, per-RPC metrics and log lines (one interceptor).

Calls carry ``authorization: Bearer <token>``. PaymentGateway methods accept
caller tokens; GatewayAdmin methods accept operator tokens only. Tokens are
compared in constant time. Health checks and reflection need no token.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from gateway import metrics
from gateway.api.status import to_status
from gateway.config import Secret

log = logging.getLogger("paygate.rpc")

GATEWAY_PREFIX = "/paygate.v1.PaymentGateway/"
ADMIN_PREFIX = "/paygate.v1.GatewayAdmin/"


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
        if handler is None or not method.startswith((GATEWAY_PREFIX, ADMIN_PREFIX)) or handler.unary_unary is None:
            return handler
        role = "operator" if method.startswith(ADMIN_PREFIX) else "caller"
        identity = self.tokens.lookup(_bearer(details.invocation_metadata))
        behaviour = handler.unary_unary
        short = method.rsplit("/", 1)[-1]

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
                code, message = to_status(exc)
                if code is grpc.StatusCode.INTERNAL:
                    log.exception("unhandled error in %s", short)
                await context.abort(code, message)
            finally:
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

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
