"""Domain errors → gRPC status codes, in one place (DESIGN.md "Outcomes and errors")."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from gateway.domain import scrub
from gateway.errors import (
    GatewayError,
    IdempotencyConflict,
    InvalidInput,
    NoRoute,
    NotFound,
    PreconditionFailed,
    Unauthenticated,
    Unavailable,
)
from gateway.store.db import Conflict, DatabaseUnavailable

_MAP: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (IdempotencyConflict, grpc.StatusCode.ALREADY_EXISTS),
    (PreconditionFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (NoRoute, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (DatabaseUnavailable, grpc.StatusCode.UNAVAILABLE),
    (Conflict, grpc.StatusCode.ABORTED),
]


# What a caller is told instead of the exception's text: operators read the details in the log line.
_CALLER_MESSAGES: list[tuple[type[BaseException], str]] = [
    (DatabaseUnavailable, "database unavailable, retry with the same request_id"),
    (NoRoute, "no channel can serve this request"),  # the rejections name floats and limits
]
# Reasons of the store's errors (gateway/errors.py classes carry their own ``reason``).
_STORE_REASONS: list[tuple[type[BaseException], str]] = [
    (DatabaseUnavailable, "DATABASE_UNAVAILABLE"),
    (Conflict, "TRANSACTION_CONFLICT"),
]


def to_status(exc: BaseException, keep: Iterable[str] = ()) -> tuple[grpc.StatusCode, str]:
    """The status and a PII-free message for an exception (INTERNAL if unknown).

    ``keep``: the caller's own identifiers (its request id), which come back as sent.
    """
    for cls, code in _MAP:
        if isinstance(exc, cls):
            message = next((text for kind, text in _CALLER_MESSAGES if isinstance(exc, kind)), None)
            return code, message or scrub(str(exc), keep)[:1000]
    return grpc.StatusCode.INTERNAL, "internal error"


def reason_of(exc: BaseException) -> str:
    """The stable ErrorInfo reason of an exception (docs/ERRORS.md)."""
    if isinstance(exc, GatewayError):
        return exc.reason
    return next((reason for kind, reason in _STORE_REASONS if isinstance(exc, kind)), "INTERNAL")
