"""Pure domain rules: money, statuses, transitions, masking, identifiers.

No I/O here; everything is unit tested without services.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import re
import time
from collections.abc import Sequence

INT64_MAX = 2**63 - 1

# ISO-4217 codes we accept, with their minor-unit exponent. A currency outside
# this table is rejected as "unknown currency" rather than guessed.
CURRENCIES: dict[str, int] = {
    "CNY": 2,
    "HKD": 2,
    "USD": 2,
    "EUR": 2,
    "SGD": 2,
    "JPY": 0,
}


class FlowKind(enum.StrEnum):
    WITHHOLD = "WITHHOLD"
    PAYOUT = "PAYOUT"
    REFUND = "REFUND"


class FlowStatus(enum.StrEnum):
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class AttemptStatus(enum.StrEnum):
    SENDING = "SENDING"
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class AgreementStatus(enum.StrEnum):
    AWAITING_CONFIRMATION = "AWAITING_CONFIRMATION"
    ACTIVE = "ACTIVE"
    REVOKED = "REVOKED"
    SIGN_FAILED = "SIGN_FAILED"


# Forward-only state machines: target -> the statuses it may come from.
ATTEMPT_FROM: dict[AttemptStatus, tuple[AttemptStatus, ...]] = {
    AttemptStatus.PENDING: (AttemptStatus.SENDING,),
    AttemptStatus.SUCCEEDED: (AttemptStatus.SENDING, AttemptStatus.PENDING),
    AttemptStatus.FAILED: (AttemptStatus.SENDING, AttemptStatus.PENDING),
}
FLOW_FROM: dict[FlowStatus, tuple[FlowStatus, ...]] = {
    FlowStatus.SUCCEEDED: (FlowStatus.PROCESSING,),
    FlowStatus.FAILED: (FlowStatus.PROCESSING,),
}
AGREEMENT_FROM: dict[AgreementStatus, tuple[AgreementStatus, ...]] = {
    AgreementStatus.ACTIVE: (AgreementStatus.AWAITING_CONFIRMATION,),
    AgreementStatus.SIGN_FAILED: (AgreementStatus.AWAITING_CONFIRMATION,),
    AgreementStatus.REVOKED: (AgreementStatus.ACTIVE, AgreementStatus.AWAITING_CONFIRMATION),
}

TERMINAL_ATTEMPT = frozenset({AttemptStatus.SUCCEEDED, AttemptStatus.FAILED})


def can_transition_attempt(current: AttemptStatus, target: AttemptStatus) -> bool:
    return current in ATTEMPT_FROM.get(target, ())


# --- money ---------------------------------------------------------------------


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` minor units by integer ``weights`` (largest remainder).

    The parts always sum to ``total`` exactly: the one-cent problem cannot
    happen. Ties in the remainder go to the earlier part.
    """
    if not weights:
        raise ValueError("weights: at least one weight is required")
    if any(w < 0 for w in weights):
        raise ValueError("weights: must be non-negative")
    weight_sum = sum(weights)
    if weight_sum == 0:
        raise ValueError("weights: must not all be zero")
    sign = -1 if total < 0 else 1
    magnitude = abs(total)
    floors = [magnitude * w // weight_sum for w in weights]
    remainders = [magnitude * w % weight_sum for w in weights]
    short = magnitude - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[:short]:
        floors[i] += 1
    return [sign * part for part in floors]


# --- masking -------------------------------------------------------------------

_DIGITS = re.compile(r"\d")
# 12-32 digits, possibly grouped by spaces or dashes (cards, accounts: "6222 0202 0011 2233"),
# or an 18-char national ID ending in X; also when glued to letters ("card6222...").
_PII = re.compile(r"(?<!\d)(?:\d{17}[Xx]|\d(?:[ -]?\d){11,31})(?!\d)")


def mask_account(number: str) -> str:
    """Keep the first 4 and last 4 digits: ``6222********1234``."""
    if len(number) <= 8:
        return "*" * max(len(number) - 4, 0) + number[-4:]
    return number[:4] + "*" * (len(number) - 8) + number[-4:]


def mask_id(number: str) -> str:
    """National id numbers keep only the last 4."""
    return "*" * max(len(number) - 4, 0) + number[-4:]


def mask_name(name: str) -> str:
    """张三丰 → 张**; single characters stay as they are."""
    if len(name) <= 1:
        return name
    return name[0] + "*" * (len(name) - 1)


def scrub(text: str) -> str:
    """Mask anything that looks like a card, account or ID number inside free text."""
    return _PII.sub(lambda m: mask_id(re.sub(r"[ -]", "", m.group(0))), text)


def account_hash(secret: bytes, account_no: str) -> str:
    """Keyed hash that identifies an account without storing it (limits, agreements)."""
    return hmac.new(secret, account_no.encode(), hashlib.sha256).hexdigest()


# --- identifiers ----------------------------------------------------------------

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_ulid(now_ms: int | None = None) -> str:
    """A 26-char ULID: sortable by creation time, 80 random bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def channel_order_no(flow_no: str, seq: int) -> str:
    """The channel order number of attempt ``seq`` of a flow: unique, <= 32 chars, [A-Z0-9]."""
    return f"{flow_no}{seq:02d}"
