"""The gateway's exceptions: one tree, with the flags that decide what happens to each.

::

    GatewayError                 grpc_status          retriable  raised when
    ├── InvalidInput             INVALID_ARGUMENT                a request field is bad; ``field`` names it
    ├── Unauthenticated          UNAUTHENTICATED                 credentials are missing or wrong
    ├── PermissionDenied         PERMISSION_DENIED               the operator's role does not allow the call
    │   └── SelfApproval         PERMISSION_DENIED               an operator approving their own resolution
    ├── NotFound                 NOT_FOUND                       no such flow / agreement / channel (or not yours)
    ├── IdempotencyConflict      ALREADY_EXISTS                  a request_id is reused with other parameters
    ├── PreconditionFailed       FAILED_PRECONDITION             the request cannot be served as things stand
    │   ├── NoActiveAgreement    FAILED_PRECONDITION             no ACTIVE withholding agreement for the account
    │   └── RefundExceedsOriginal FAILED_PRECONDITION            the refund is over what is left to refund
    ├── NoRoute                  RESOURCE_EXHAUSTED              no channel passes the filters or has the float
    ├── Unavailable              UNAVAILABLE          yes        a channel cannot be reached (agreements)
    ├── StoreError               INTERNAL                        gateway/store; base of the database layer's errors
    │   ├── DatabaseUnavailable  UNAVAILABLE          yes        the database cannot be reached or went away
    │   ├── Conflict             ABORTED              yes        deadlock / lock wait timeout; rolled back
    │   ├── DuplicateKey         INTERNAL                        a unique key refused a row; ``key`` names it
    │   ├── DataRefused          INTERNAL                        a value the database refuses (too long, out of range)
    │   ├── CountMismatch        INTERNAL                        a checked script changed other row counts
    │   ├── QueryTooBroad        RESOURCE_EXHAUSTED              a console search ran past its time limit
    │   └── WriteRefused         INTERNAL                        a guarded write did not fit; nothing written
    │       ├── PositionShort                                    the channel's float is below the payout
    │       ├── RefundExceeds                                    the refunds would exceed the original
    │       ├── FlowClosed                                       the flow is no longer PROCESSING
    │       ├── CardLimitReached                                 the card's daily attempts or amount on the channel
    │       ├── PositionMoved                                    the float changed since it was read (sync)
    │       ├── BelowReserved                                    an adjustment would cut the float below reservations
    │       └── BalanceOverflow                                  an adjustment would take the float beyond int64
    ├── OutboxError              INTERNAL                        the outbox relay (a topic cannot be created)
    │   └── PublishIncomplete                         per round  some rows of a round were not published
    └── EventDecodeError         INTERNAL                        a result event cannot be decoded (a ValueError)

Configuration errors are not in this tree's RPC path: ``ConfigError`` (``key`` names the
bad key; defined in channels/config.py so every layer raises the same one, re-exported here)
stops start-up before anything is served.

``reason`` is the stable ``google.rpc.ErrorInfo.reason`` a client branches on
(gateway/api/rich_status.py puts it in the ``grpc-status-details-bin``
trailer; docs/ERRORS.md lists every one).
``grpc_status`` is the name of the ``grpc.StatusCode`` an RPC ends with
(gateway/api/status.py reads it; nothing else maps exceptions to statuses).
``retriable`` says that trying the same thing again may succeed: the outbox
relay backs off and retries those, and counts any other failure of a row
against the row; RPC callers are told UNAVAILABLE / ABORTED and retry with the
same request_id. ``public_message`` replaces the exception's own text in
what a caller sees; an INTERNAL one never shows its text ("internal error").

Database exceptions (pymysql / aiomysql) never leave ``gateway/store``: the
unit of work translates them there, ``raise DatabaseUnavailable(...) from exc``.
The ``WriteRefused`` children are the store's answer to a compare-and-set
whose guard did not hold; the use cases turn each into a decision (try the
next channel, ``PreconditionFailed``, finish the flow from its last failure).

Not errors, by design:

* a decline: the RPC succeeds with the flow FAILED and its failure code;
* an idempotent replay: ``FlowStore.create`` / ``AgreementStore.create``
  return ``Existing(row)`` instead of ``Created(row)`` (gateway/store/rows.py);
* a lost race: ``apply_outcome`` returns ``Applied.NOOP`` / ``DISCREPANCY``.

Channel errors stay in the channel contract (channels never import gateway):
``channels/contract.py`` draws ``ChannelError`` → ``ChannelUnavailable``,
``ChannelRejected``, ``CallbackRejected``. The gateway translates them where
it meets them: gateway/agreements.py (``ChannelUnavailable`` → ``Unavailable``,
``ChannelRejected`` → ``PreconditionFailed`` or a SIGN_FAILED agreement),
gateway/callbacks.py (``CallbackRejected`` → the channel's error reply and at
most an expedited query), gateway/flows.py (any adapter exception → a PENDING
``ADAPTER_ERROR`` outcome, never a guess). Configuration errors stop start-up
before anything is served and are reported by the configuration reader.
"""

from __future__ import annotations

from typing import ClassVar

from channels.config import ConfigError as ConfigError  # every layer raises this one


class GatewayError(Exception):
    """Base of every exception the gateway raises on purpose."""

    grpc_status: ClassVar[str] = "INTERNAL"
    reason: ClassVar[str] = "INTERNAL"  # the stable ErrorInfo.reason (docs/ERRORS.md)
    retriable: bool = False
    public_message: ClassVar[str | None] = None  # None: the exception's own (scrubbed) message


class InvalidInput(GatewayError):
    grpc_status = "INVALID_ARGUMENT"
    reason = "FIELD_INVALID"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class Unauthenticated(GatewayError):
    grpc_status = "UNAUTHENTICATED"
    reason = "UNAUTHENTICATED"


class PermissionDenied(GatewayError):
    grpc_status = "PERMISSION_DENIED"
    reason = "PERMISSION_DENIED"


class SelfApproval(PermissionDenied):
    reason = "SELF_APPROVAL"


class NotFound(GatewayError):
    grpc_status = "NOT_FOUND"
    reason = "NOT_FOUND"


class IdempotencyConflict(GatewayError):
    grpc_status = "ALREADY_EXISTS"
    reason = "IDEMPOTENCY_KEY_REUSED"


class PreconditionFailed(GatewayError):
    grpc_status = "FAILED_PRECONDITION"
    reason = "FAILED_PRECONDITION"


class NoActiveAgreement(PreconditionFailed):
    reason = "NO_ACTIVE_AGREEMENT"


class RefundExceedsOriginal(PreconditionFailed):
    reason = "REFUND_EXCEEDS_ORIGINAL"


class NoRoute(GatewayError):
    grpc_status = "RESOURCE_EXHAUSTED"
    reason = "NO_ROUTE"
    public_message = "no channel can serve this request"  # the rejections name floats and limits: operators only

    def __init__(self, message: str, rejected: list[tuple[str, str, str]] | None = None) -> None:
        super().__init__(message)
        self.rejected = rejected or []


class Unavailable(GatewayError):
    grpc_status = "UNAVAILABLE"
    reason = "UNAVAILABLE"
    retriable = True


# --- the store ------------------------------------------------------------------------


class StoreError(GatewayError):
    """Base of the store's errors; anything unexpected from the database is INTERNAL to callers."""


class DatabaseUnavailable(StoreError):
    """The database cannot be reached (or went away mid-transaction)."""

    grpc_status = "UNAVAILABLE"
    reason = "DATABASE_UNAVAILABLE"
    retriable = True
    public_message = "database unavailable, retry with the same request_id"


class Conflict(StoreError):
    """A deadlock or lock wait timeout; the transaction was rolled back and may be retried."""

    grpc_status = "ABORTED"
    reason = "TRANSACTION_CONFLICT"
    retriable = True


class DuplicateKey(StoreError):
    """A unique key refused the row; ``key`` names the index."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class DataRefused(StoreError):
    """The database refused a value (too long for its column, out of range, a CHECK); nothing was written.

    Not retriable: the same request would be refused again. Validation bounds every field, so
    this is a gap in validation or a bug; ``code`` is the database's error number.
    """

    reason = "DATA_REFUSED"

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class CountMismatch(StoreError):
    """A checked script's statements did not change the rows expected; it rolled back."""

    def __init__(self, counts: list[int], expected: list[int | None]) -> None:
        super().__init__(f"statements changed {counts} rows, expected {expected}; rolled back")
        self.counts = counts
        self.expected = expected


class QueryTooBroad(StoreError):
    """A console search ran past ``[console] query_timeout_s`` and was stopped; narrow it (a date range)."""

    grpc_status = "RESOURCE_EXHAUSTED"
    reason = "QUERY_TOO_BROAD"


class WriteRefused(StoreError):
    """A guarded write whose guard did not hold; the transaction wrote nothing."""


class PositionShort(WriteRefused):
    """The channel's available float is below the payout amount."""


class RefundExceeds(WriteRefused):
    """The refund would take the original's refunds above its amount."""


class FlowClosed(WriteRefused):
    """The flow is no longer PROCESSING (e.g. an operator resolved it): no new attempt."""


class CardLimitReached(WriteRefused):
    """The card has used up its daily attempts or amount on the channel (counted in the attempt's commit)."""


class PositionMoved(WriteRefused):
    """A settlement or adjustment changed the float after it was read for a sync; nothing was written."""


class BelowReserved(WriteRefused):
    """An adjustment would take the balance below the float reserved by payouts in flight."""

    def __init__(self, channel: str, *, balance: int, delta: int, reserved: int) -> None:
        super().__init__(f"{channel}: balance {balance} + delta {delta} would be below the {reserved} reserved")
        self.balance = balance
        self.delta = delta
        self.reserved = reserved


class BalanceOverflow(WriteRefused):
    """An adjustment would take the balance beyond what a BIGINT holds (int64)."""

    def __init__(self, channel: str, *, balance: int, delta: int) -> None:
        super().__init__(f"{channel}: balance {balance} + delta {delta} would not fit int64")
        self.balance = balance
        self.delta = delta


# --- the outbox -----------------------------------------------------------------------


class OutboxError(GatewayError):
    """Base of the outbox relay's errors."""


class PublishIncomplete(OutboxError):
    """Some rows of a round were not published; the acknowledged ones were marked.

    ``retriable`` is true when broker trouble was among the causes (the loop
    backs off and retries); false when only the rows themselves were at fault
    (recorded on the rows; the loop carries on at its normal pace).
    """

    def __init__(self, published: int, failed: int, cause: str, *, retriable: bool) -> None:
        super().__init__(f"{failed} event(s) not published ({published} published): {cause}")
        self.published = published
        self.failed = failed
        self.retriable = retriable


class EventDecodeError(GatewayError, ValueError):
    """A message value could not be turned into a FlowEvent (bad bytes or unknown content type)."""
