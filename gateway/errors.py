"""The gateway's error tree. Mapped to gRPC status codes in one place (gateway/api/status.py).

::

    GatewayError
    ├── InvalidInput           bad request field (INVALID_ARGUMENT); ``field`` names it
    ├── Unauthenticated        missing/bad credentials (UNAUTHENTICATED)
    ├── NotFound               unknown flow / agreement, or another caller's (NOT_FOUND)
    ├── IdempotencyConflict    request_id reused with other parameters (ALREADY_EXISTS)
    ├── PreconditionFailed     no usable agreement, refund over the original (FAILED_PRECONDITION)
    ├── NoRoute                no channel passes the filters / has capacity (RESOURCE_EXHAUSTED)
    └── Unavailable            database down or shutting down (UNAVAILABLE)

A decline is not an error: it is a FAILED flow returned normally.
"""

from __future__ import annotations


class GatewayError(Exception):
    reason = "INTERNAL"  # the stable ErrorInfo.reason a client branches on (docs/ERRORS.md)


class InvalidInput(GatewayError):
    reason = "FIELD_INVALID"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class Unauthenticated(GatewayError):
    reason = "UNAUTHENTICATED"


class NotFound(GatewayError):
    reason = "NOT_FOUND"


class IdempotencyConflict(GatewayError):
    reason = "IDEMPOTENCY_KEY_REUSED"


class PreconditionFailed(GatewayError):
    reason = "FAILED_PRECONDITION"


class NoActiveAgreement(PreconditionFailed):
    reason = "NO_ACTIVE_AGREEMENT"


class RefundExceedsOriginal(PreconditionFailed):
    reason = "REFUND_EXCEEDS_ORIGINAL"


class NoRoute(GatewayError):
    reason = "NO_ROUTE"

    def __init__(self, message: str, rejected: list[tuple[str, str, str]] | None = None) -> None:
        super().__init__(message)
        self.rejected = rejected or []


class Unavailable(GatewayError):
    reason = "UNAVAILABLE"
