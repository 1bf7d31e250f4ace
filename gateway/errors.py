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
    ConfigError                bad configuration, ``key`` names it (channels/config.py); stops start-up

A decline is not an error: it is a FAILED flow returned normally.
"""

from __future__ import annotations

from channels.config import ConfigError as ConfigError  # every layer raises this one


class GatewayError(Exception):
    pass


class InvalidInput(GatewayError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class Unauthenticated(GatewayError):
    pass


class NotFound(GatewayError):
    pass


class IdempotencyConflict(GatewayError):
    pass


class PreconditionFailed(GatewayError):
    pass


class NoRoute(GatewayError):
    def __init__(self, message: str, rejected: list[tuple[str, str, str]] | None = None) -> None:
        super().__init__(message)
        self.rejected = rejected or []


class Unavailable(GatewayError):
    pass
