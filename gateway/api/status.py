"""Gateway errors → gRPC status codes, in one place (DESIGN.md "Outcomes and errors").

Each class of gateway/errors.py names its status (``grpc_status``) and, where
callers must see something else than its text, a ``public_message``. Anything
that is not a :class:`~gateway.errors.GatewayError` is a bug: INTERNAL.
"""

from __future__ import annotations

import grpc

from gateway.domain import scrub
from gateway.errors import GatewayError


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and a PII-free message for an exception (INTERNAL if not a gateway error)."""
    if not isinstance(exc, GatewayError):
        return grpc.StatusCode.INTERNAL, "internal error"
    code = grpc.StatusCode[exc.grpc_status]
    if code is grpc.StatusCode.INTERNAL:
        return code, "internal error"
    return code, scrub(exc.public_message or str(exc))[:1000]
