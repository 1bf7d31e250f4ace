"""The sandbox bank's wire protocol: request/response structs, raw codes, signing.

Shared by the adapter (client side) and the simulator (server side), so the
two cannot drift apart.

Signing
-------

Every request, response and callback carries four headers::

    X-Sandbox-Merchant   merchant id
    X-Sandbox-Timestamp  unix seconds
    X-Sandbox-Nonce      random hex, unique per request
    X-Sandbox-Signature  hex HMAC-SHA256(secret, canonical)

    canonical = method "\\n" path "\\n" timestamp "\\n" nonce "\\n" body

* requests: ``method`` is the HTTP method, ``path`` the URL path;
* responses: ``method`` is ``HTTP/<status>``, ``path`` the request's path and
  ``nonce`` the request's nonce (echoed back), which binds a response to its request;
* callbacks: ``method`` is ``POST`` and ``path`` is :data:`CALLBACK_PATH`
  whatever URL they are posted to (the receiver does not see its own URL);
* a statement (``GET /v1/statements/{yyyy-mm-dd}``, 200): the response
  canonical string has the file's SHA-256 (hex, also sent as
  :data:`HEADER_CONTENT_SHA256`) in the ``body`` slot, so the file can be
  streamed and checked once it is on disk.

A timestamp more than ``max_skew_s`` away from now is rejected.

Raw codes and their outcomes are :data:`ERROR_TABLE`; every answer body is a
JSON object with at least ``code`` and ``message``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar

from channels.contract import ErrorRule, ErrorTable, OutcomeStatus, constant_time_equal

HEADER_MERCHANT = "X-Sandbox-Merchant"
HEADER_TIMESTAMP = "X-Sandbox-Timestamp"
HEADER_NONCE = "X-Sandbox-Nonce"
HEADER_SIGNATURE = "X-Sandbox-Signature"
CALLBACK_PATH = "/callback"
MAX_SKEW_S = 300.0
CALLBACK_ACK = b"OK"
# A statement download is signed over this header (the file's SHA-256, hex) instead of over the body.
HEADER_CONTENT_SHA256 = "X-Sandbox-Content-SHA256"


# --- raw codes -----------------------------------------------------------------


class RawCode:
    """The sandbox bank's own answer codes."""

    SUCCESS = "0000"
    INSUFFICIENT_FUNDS = "1001"
    ACCOUNT_FROZEN = "1002"
    AGREEMENT_INVALID = "1003"
    OVER_PAYER_LIMIT = "1004"
    CHANNEL_BUSY = "2001"
    BANK_NOT_SUPPORTED = "2002"
    MAINTENANCE = "2003"
    MERCHANT_BALANCE_INSUFFICIENT = "2004"
    PROCESSING = "3001"
    SIGNATURE_INVALID = "4001"
    REQUEST_EXPIRED = "4002"
    INVALID_REQUEST = "4003"
    ORDER_NO_CONFLICT = "4004"
    ORDER_CLOSED = "4005"
    REFUND_EXCEEDS_ORIGINAL = "4006"
    ORIGINAL_NOT_REFUNDABLE = "4007"
    NOT_FOUND = "4040"
    SYSTEM_ERROR = "5000"
    SMS_CODE_INVALID = "6001"
    SMS_CODE_EXPIRED = "6002"
    SIGN_REF_UNKNOWN = "6003"
    AGREEMENT_NOT_FOUND = "6004"


_S, _F, _P = OutcomeStatus.SUCCEEDED, OutcomeStatus.FAILED, OutcomeStatus.PENDING

# Exhaustive: anything else is PENDING/UNMAPPED (ErrorTable does that).
ERROR_TABLE = ErrorTable(
    "sandbox",
    {
        RawCode.SUCCESS: ErrorRule(_S, "OK"),
        # The payer caused it: no failover, not the channel's fault.
        RawCode.INSUFFICIENT_FUNDS: ErrorRule(_F, "INSUFFICIENT_FUNDS", payer_attributable=True),
        RawCode.ACCOUNT_FROZEN: ErrorRule(_F, "ACCOUNT_FROZEN", payer_attributable=True),
        RawCode.AGREEMENT_INVALID: ErrorRule(_F, "AGREEMENT_INVALID", payer_attributable=True),
        RawCode.OVER_PAYER_LIMIT: ErrorRule(_F, "OVER_PAYER_LIMIT", payer_attributable=True),
        # Nothing was executed: another channel may try.
        RawCode.CHANNEL_BUSY: ErrorRule(_F, "CHANNEL_BUSY", safe_elsewhere=True),
        RawCode.BANK_NOT_SUPPORTED: ErrorRule(_F, "BANK_NOT_SUPPORTED", safe_elsewhere=True),
        RawCode.MAINTENANCE: ErrorRule(_F, "CHANNEL_MAINTENANCE", safe_elsewhere=True),
        RawCode.MERCHANT_BALANCE_INSUFFICIENT: ErrorRule(_F, "MERCHANT_BALANCE_INSUFFICIENT", safe_elsewhere=True),
        RawCode.SIGNATURE_INVALID: ErrorRule(_F, "SIGNATURE_INVALID", safe_elsewhere=True),
        RawCode.REQUEST_EXPIRED: ErrorRule(_F, "REQUEST_EXPIRED", safe_elsewhere=True),
        RawCode.INVALID_REQUEST: ErrorRule(_F, "INVALID_REQUEST", safe_elsewhere=True),
        # The bank will never execute a closed order number.
        RawCode.ORDER_CLOSED: ErrorRule(_F, "ORDER_CLOSED", safe_elsewhere=True),
        # Definite, but refunds stay on the original channel.
        RawCode.REFUND_EXCEEDS_ORIGINAL: ErrorRule(_F, "REFUND_EXCEEDS_ORIGINAL"),
        RawCode.ORIGINAL_NOT_REFUNDABLE: ErrorRule(_F, "ORIGINAL_NOT_REFUNDABLE"),
        # Unknown result: poll.
        RawCode.PROCESSING: ErrorRule(_P, "PROCESSING"),
        RawCode.ORDER_NO_CONFLICT: ErrorRule(_P, "ORDER_NO_CONFLICT"),
        RawCode.NOT_FOUND: ErrorRule(_P, "NOT_FOUND"),
        RawCode.SYSTEM_ERROR: ErrorRule(_P, "CHANNEL_ERROR"),
        # Agreement operations (raised as ChannelRejected, never an order outcome).
        RawCode.SMS_CODE_INVALID: ErrorRule(_F, "SMS_CODE_INVALID", payer_attributable=True),
        RawCode.SMS_CODE_EXPIRED: ErrorRule(_F, "SMS_CODE_EXPIRED", payer_attributable=True),
        RawCode.SIGN_REF_UNKNOWN: ErrorRule(_F, "SIGN_REF_UNKNOWN"),
        RawCode.AGREEMENT_NOT_FOUND: ErrorRule(_F, "AGREEMENT_NOT_FOUND"),
    },
)

_RAW_BY_CODE: dict[str, str] = {rule.code: raw for raw, rule in ERROR_TABLE}

MESSAGES: dict[str, str] = {
    RawCode.SUCCESS: "success",
    RawCode.INSUFFICIENT_FUNDS: "insufficient funds",
    RawCode.ACCOUNT_FROZEN: "account frozen",
    RawCode.AGREEMENT_INVALID: "no active agreement for this account",
    RawCode.OVER_PAYER_LIMIT: "amount over the payer's single-transaction limit",
    RawCode.CHANNEL_BUSY: "system busy, try later",
    RawCode.BANK_NOT_SUPPORTED: "bank not supported",
    RawCode.MAINTENANCE: "maintenance, request not processed",
    RawCode.MERCHANT_BALANCE_INSUFFICIENT: "merchant balance insufficient",
    RawCode.PROCESSING: "processing",
    RawCode.SIGNATURE_INVALID: "signature invalid",
    RawCode.REQUEST_EXPIRED: "timestamp out of window or nonce reused",
    RawCode.INVALID_REQUEST: "invalid request",
    RawCode.ORDER_NO_CONFLICT: "order number exists with different parameters",
    RawCode.ORDER_CLOSED: "order closed",
    RawCode.REFUND_EXCEEDS_ORIGINAL: "refund exceeds the original amount",
    RawCode.ORIGINAL_NOT_REFUNDABLE: "original order not found or not successful",
    RawCode.NOT_FOUND: "order not found",
    RawCode.SYSTEM_ERROR: "system error",
    RawCode.SMS_CODE_INVALID: "sms code invalid",
    RawCode.SMS_CODE_EXPIRED: "sms code expired",
    RawCode.SIGN_REF_UNKNOWN: "unknown sign_ref",
    RawCode.AGREEMENT_NOT_FOUND: "agreement not found",
}


def raw_code_for(code: str) -> str:
    """The raw code the sandbox bank answers for a normalized ``code`` (``OK`` → ``0000``)."""
    return _RAW_BY_CODE[code]


# --- signing -------------------------------------------------------------------


class SignatureInvalid(Exception):
    """A request, response or callback failed verification. ``raw_code`` says why."""

    def __init__(self, raw_code: str, reason: str) -> None:
        super().__init__(reason)
        self.raw_code = raw_code
        self.reason = reason


def canonical(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    return f"{method}\n{path}\n{timestamp}\n{nonce}\n".encode() + body


def signature(secret: str, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    return hmac.new(secret.encode(), canonical(method, path, timestamp, nonce, body), hashlib.sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_hex(16)


def sign_headers(
    merchant_id: str,
    secret: str,
    method: str,
    path: str,
    body: bytes,
    *,
    nonce: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The four signature headers (plus the JSON content type) for one message."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nc = new_nonce() if nonce is None else nonce
    return {
        HEADER_MERCHANT: merchant_id,
        HEADER_TIMESTAMP: ts,
        HEADER_NONCE: nc,
        HEADER_SIGNATURE: signature(secret, method, path, ts, nc, body),
        "Content-Type": "application/json",
    }


def header(headers: Mapping[str, str], name: str) -> str:
    """Case-insensitive header lookup ('' when absent)."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return ""


def verify_headers(
    secret: str,
    headers: Mapping[str, str],
    method: str,
    path: str,
    body: bytes,
    *,
    expected_nonce: str | None = None,
    max_skew_s: float = MAX_SKEW_S,
    now: float | None = None,
) -> str:
    """Check the signature headers of a message; returns its nonce.

    Raises SignatureInvalid (raw code 4001 for a bad or missing signature,
    4002 for a stale timestamp). The signature is compared in constant time.
    """
    ts, nonce, sig = header(headers, HEADER_TIMESTAMP), header(headers, HEADER_NONCE), header(headers, HEADER_SIGNATURE)
    if not (ts and nonce and sig):
        raise SignatureInvalid(RawCode.SIGNATURE_INVALID, "missing signature headers")
    if expected_nonce is not None and not constant_time_equal(nonce, expected_nonce):
        raise SignatureInvalid(RawCode.SIGNATURE_INVALID, "nonce does not match the request")
    if not constant_time_equal(sig, signature(secret, method, path, ts, nonce, body)):
        raise SignatureInvalid(RawCode.SIGNATURE_INVALID, "signature mismatch")
    try:
        sent_at = int(ts)
    except ValueError:
        raise SignatureInvalid(RawCode.REQUEST_EXPIRED, "timestamp is not an integer") from None
    if abs((time.time() if now is None else now) - sent_at) > max_skew_s:
        raise SignatureInvalid(RawCode.REQUEST_EXPIRED, "timestamp outside the allowed window")
    return nonce


def statement_path(day: date) -> str:
    """The URL path of the statement of ``day``."""
    return f"/v1/statements/{day.isoformat()}"


def response_method(status: int) -> str:
    """The ``method`` slot of a response's canonical string."""
    return f"HTTP/{status}"


# --- structs -------------------------------------------------------------------


class WireError(ValueError):
    """A message body is not what the protocol says; ``field`` names the culprit."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name


T = TypeVar("T")


def encode(message: object) -> bytes:
    """A wire struct as compact JSON bytes."""
    return json.dumps(dataclasses.asdict(message), separators=(",", ":"), ensure_ascii=False).encode()  # type: ignore[call-overload]


def decode(cls: type[T], payload: bytes | Mapping[str, Any]) -> T:
    """Parse and type-check a wire struct; raises WireError naming the bad field.

    Fields without a default are required; ``str`` fields must be strings and
    ``int`` fields integers (``int | None`` also accepts null).
    """
    if isinstance(payload, bytes | bytearray):
        try:
            data = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WireError("body", "not valid JSON") from exc
    else:
        data = payload
    if not isinstance(data, Mapping):
        raise WireError("body", "must be a JSON object")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            if f.default is dataclasses.MISSING:
                raise WireError(f.name, "missing")
            continue
        value = data[f.name]
        kind = str(f.type)
        if kind == "str" and not isinstance(value, str):
            raise WireError(f.name, "must be a string")
        if kind.startswith("int") and not (
            (isinstance(value, int) and not isinstance(value, bool)) or (value is None and "None" in kind)
        ):
            raise WireError(f.name, "must be an integer")
        values[f.name] = value
    return cls(**values)


@dataclass(frozen=True, slots=True)
class WithholdRequest:
    order_no: str
    amount: int
    currency: str
    agreement_ref: str
    account_no: str = field(repr=False)
    bank_code: str
    description: str = ""
    notify_url: str = ""


@dataclass(frozen=True, slots=True)
class PayoutRequest:
    order_no: str
    amount: int
    currency: str
    account_no: str = field(repr=False)
    account_name: str = field(repr=False)
    bank_code: str
    description: str = ""
    notify_url: str = ""


@dataclass(frozen=True, slots=True)
class RefundRequest:
    order_no: str
    original_order_no: str
    amount: int
    currency: str
    original_txn_id: str = ""
    reason: str = ""
    notify_url: str = ""


@dataclass(frozen=True, slots=True)
class OrderQuery:
    """Body of ``/v1/query`` and ``/v1/close``."""

    order_no: str
    kind: str = ""


@dataclass(frozen=True, slots=True)
class OrderReply:
    """The answer about one order (also the body of a callback, with ``kind``)."""

    code: str
    message: str
    order_no: str
    status: str = ""
    amount: int | None = None
    txn_id: str = ""
    fee: int | None = None
    kind: str = ""


@dataclass(frozen=True, slots=True)
class SignAgreementRequest:
    sign_order_no: str
    account_no: str = field(repr=False)
    holder_name: str = field(repr=False)
    id_no: str = field(repr=False)
    phone: str = field(repr=False)
    bank_code: str


@dataclass(frozen=True, slots=True)
class SignAgreementReply:
    code: str
    message: str
    sign_ref: str = ""


@dataclass(frozen=True, slots=True)
class ConfirmAgreementRequest:
    sign_ref: str
    sms_code: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ConfirmAgreementReply:
    code: str
    message: str
    agreement_ref: str = ""


@dataclass(frozen=True, slots=True)
class RevokeAgreementRequest:
    agreement_ref: str


@dataclass(frozen=True, slots=True)
class BalanceReply:
    code: str
    message: str
    available: int | None = None
    currency: str = ""


@dataclass(frozen=True, slots=True)
class PlainReply:
    """An answer with nothing but a code (errors, revoke)."""

    code: str
    message: str
