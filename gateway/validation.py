"""Request validation: every field checked, errors name the field (INVALID_ARGUMENT).

Validation runs before anything is written, so bad input persists nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass

from gateway.domain import CURRENCIES, INT64_MAX
from gateway.errors import InvalidInput

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")
FLOW_NO = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
CARD_NO = re.compile(r"^\d{12,19}$")
ACCOUNT_NO = re.compile(r"^\d{8,32}$")
BANK_CODE = re.compile(r"^[A-Z][A-Z0-9]{1,15}$")
PHONE = re.compile(r"^1\d{10}$")
SMS_CODE = re.compile(r"^\d{4,8}$")
ID_NO = re.compile(r"^\d{17}[\dX]$")
CHANNEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def request_id(value: str, field: str = "request_id") -> str:
    if not value:
        raise InvalidInput(field, "is required")
    if not REQUEST_ID.match(value):
        raise InvalidInput(field, "must be 1-64 characters of A-Z a-z 0-9 . _ : -")
    return value


def money(amount: int, currency: str, *, field: str = "amount", present: bool = True) -> tuple[int, str]:
    if not present:
        raise InvalidInput(field, "is required")
    if amount <= 0:
        raise InvalidInput(f"{field}.amount", f"must be positive minor units, got {amount}")
    if amount > INT64_MAX:
        raise InvalidInput(f"{field}.amount", "overflows int64")
    if not currency:
        raise InvalidInput(f"{field}.currency", "is required")
    if currency not in CURRENCIES:
        raise InvalidInput(f"{field}.currency", f"unknown or unsupported currency {currency[:8]!r}")
    return amount, currency


def text(value: str, field: str, *, max_len: int, required: bool = False) -> str:
    if required and not value.strip():
        raise InvalidInput(field, "is required")
    if len(value) > max_len:
        raise InvalidInput(field, f"longer than {max_len} characters")
    if _CONTROL.search(value):
        raise InvalidInput(field, "contains control characters")
    return value


def pattern(value: str, field: str, regex: re.Pattern[str], what: str, *, required: bool = True) -> str:
    if not value:
        if required:
            raise InvalidInput(field, "is required")
        return value
    if not regex.match(value):
        # never echo the value: it may be a card or ID number
        raise InvalidInput(field, f"must be {what}")
    return value


def card_no(value: str, field: str = "account_no") -> str:
    value = pattern(value, field, CARD_NO, "12-19 digits")
    if not luhn_ok(value) and len(value) in (16, 19) and value.startswith(("4", "5", "62")):
        raise InvalidInput(field, "fails the card number check digit")
    return value


def luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def wait_ms(value: int, default: int, maximum: int, field: str = "wait_ms") -> int:
    if value < 0:
        raise InvalidInput(field, "must be >= 0")
    if value == 0:
        return default
    return min(value, maximum)


def canonical_hash(kind: str, fields: object) -> str:
    """A stable hash of the parameters that define a request (idempotency comparison)."""
    payload = json.dumps({"kind": kind, "fields": asdict(fields)}, sort_keys=True, separators=(",", ":"))  # type: ignore[call-overload]
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class WithholdParams:
    amount: int
    currency: str
    account_no: str
    bank_code: str
    agreement_no: str
    description: str


@dataclass(frozen=True)
class PayoutParams:
    amount: int
    currency: str
    account_no: str
    account_name: str
    bank_code: str
    description: str


@dataclass(frozen=True)
class RefundParams:
    original_flow_no: str
    amount: int
    currency: str
    reason: str
