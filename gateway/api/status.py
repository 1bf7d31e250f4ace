"""Domain errors → gRPC status codes, in one place (DESIGN.md "Outcomes and errors")."""

from __future__ import annotations

import grpc

from gateway.domain import scrub
from gateway.errors import (
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


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and a PII-free message for an exception (INTERNAL if unknown)."""
    for cls, code in _MAP:
        if isinstance(exc, cls):
            message = str(exc)
            if isinstance(exc, DatabaseUnavailable):
                message = "database unavailable, retry with the same request_id"
            return code, scrub(message)[:1000]
    return grpc.StatusCode.INTERNAL, "internal error"
