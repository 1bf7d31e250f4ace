"""Gateway errors → gRPC status codes, in one place (DESIGN.md "Outcomes and errors").

Each class of gateway/errors.py names its status (``grpc_status``), its stable
``reason`` (docs/ERRORS.md) and, where callers must see something else than
its text, a ``public_message`` (operators read the details in the log line).
Anything that is not a :class:`~gateway.errors.GatewayError` is a bug: INTERNAL.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from gateway.domain import scrub
from gateway.errors import GatewayError


def to_status(exc: BaseException, keep: Iterable[str] = ()) -> tuple[grpc.StatusCode, str]:
    """The status and a PII-free message for an exception (INTERNAL if not a gateway error).

    ``keep``: the caller's own identifiers (its request id), which come back as sent.
    """
    if not isinstance(exc, GatewayError):
        return grpc.StatusCode.INTERNAL, "internal error"
    code = grpc.StatusCode[exc.grpc_status]
    if code is grpc.StatusCode.INTERNAL:
        return code, "internal error"
    return code, exc.public_message or scrub(str(exc), keep)[:1000]


def reason_of(exc: BaseException) -> str:
    """The stable ErrorInfo reason of an exception (docs/ERRORS.md)."""
    return exc.reason if isinstance(exc, GatewayError) else "INTERNAL"
