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
import unicodedata
from collections.abc import Iterable, Sequence

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
    COLLECT = "COLLECT"  # payer-initiated (主动还款): the borrower pays in the channel's cashier


#: Flows whose succeeded result took the payer's money: what a refund may refund.
PAYMENT_KINDS = frozenset({FlowKind.WITHHOLD, FlowKind.COLLECT})

#: The failure codes of a collection closed unpaid, once the channel confirmed the close: at its expiry
#: (the borrower did not pay: payer-attributable) or early at the caller's request. Neither is the
#: channel's doing, so neither teaches the router anything about the channel.
COLLECTION_EXPIRED = "COLLECTION_EXPIRED"
COLLECTION_CLOSED = "COLLECTION_CLOSED"
COLLECTION_CLOSE_CODES = frozenset({COLLECTION_EXPIRED, COLLECTION_CLOSED})


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


def minor_to_text(minor_units: int, currency: str) -> str:
    """``12345, "CNY"`` -> ``"123.45"``: minor units as a decimal string, integer arithmetic only."""
    exponent = CURRENCIES.get(currency, 2)
    sign = "-" if minor_units < 0 else ""
    whole, fraction = divmod(abs(minor_units), 10**exponent)
    return f"{sign}{whole}.{fraction:0{exponent}d}" if exponent else f"{sign}{whole}"


# What starts a formula in a spreadsheet: = + - @ and their full-width forms (an IME's ＝ is read as =).
_FORMULA_START = "=+-@\uff1d\uff0b\uff0d\uff20"
# Leading blanks a spreadsheet skips before it looks for a formula (ASCII, no-break and ideographic space).
_LEADING_BLANKS = " \t\r\n\u00a0\u3000"


def spreadsheet_safe(value: object) -> str:
    """A CSV cell that a spreadsheet will not run: text starting with = + - @ (full-width too, after any
    leading blanks) or with a tab / CR / LF gets a quote mark."""
    text = "" if value is None else str(value)
    head = text.lstrip(_LEADING_BLANKS)[:1]
    if text[:1] in ("\t", "\r", "\n") or (head and head in _FORMULA_START):
        return "'" + text
    return text


# --- masking -------------------------------------------------------------------
#
# Two ways (DESIGN.md invariant 10):
#
# * by field, where we know what a value is (an account, card, id or phone
#   field): ``mask_account`` / ``mask_id`` / ``mask_phone``. At most 4 digits
#   stay visible, fewer for short values.
# * by shape, in free text (a channel's message, an operator's reason, an
#   exception): :func:`scrub`. It masks card numbers (Luhn-valid runs of 12-19
#   digits, grouped by spaces or dashes or not), national ids (18 characters
#   with a valid check character, 15 digits with a valid birth date), mainland
#   mobile numbers (``1[3-9]`` + 9 digits, with or without ``86``) and any
#   other run of at least :data:`LONG_DIGIT_RUN` digits.
#
# What scrub leaves alone: identifiers. A digit run glued to ASCII letters, or
# joined to them by ``-`` ``_`` ``.`` ``:`` inside one token, is part of an
# identifier (``repay-20261201192500``, a flow number, a channel order number),
# not PII by shape: a lender must be able to grep its own key. Only a whole
# card number from a card network (16-19 digits starting with 3-6, Luhn-valid)
# or a national id (valid birth date and check character) glued inside one is
# still masked (``s-bank-a-************3555``): invariant 10 comes first, and
# callers number requests with dates, epoch times and sequences, which these
# shapes leave alone. Other numbers glued to letters (``card6222…`` of 12-15
# digits, a mobile) are not found by shape; fields we know are masked by field.

LONG_DIGIT_RUN = 16
_ANY_DIGIT = re.compile(r"\d")
# A token that may be an identifier: ASCII letters, digits and the connectors.
_TOKEN = re.compile(r"[A-Za-z0-9_.:\-]+")
_CONNECTORS = "_.:-"
_ASCII_LETTER = re.compile(r"[A-Za-z]")
# A maximal digit run inside an identifier token, with the X an 18-character id may end in.
_RUN_IN_IDENTIFIER = re.compile(r"(?<![0-9])[0-9]+[Xx]?(?![0-9])")
# Digits (any script: a full-width card number is still one), optionally grouped by one space or dash.
_NUMBER = re.compile(r"\d(?:[ \-]?\d)*")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def _mask_tail(value: str) -> str:
    """All but the last characters masked: 4 visible from 8 characters on, half of a shorter value."""
    visible = min(4, len(value) // 2)
    return "*" * (len(value) - visible) + value[len(value) - visible :]


def mask_account(number: str) -> str:
    """A card or account number with only its last 4 digits: ``************1234`` (a 6-digit one: ``***456``)."""
    return _mask_tail(number)


def mask_id(number: str) -> str:
    """A national id number with only its last 4 characters: ``**************002X``."""
    return _mask_tail(number)


def mask_phone(number: str) -> str:
    """A phone number with only its last 4 digits: ``*******8000``."""
    return _mask_tail(number)


def mask_name(name: str) -> str:
    """张三丰 → 张**; single characters stay as they are."""
    if len(name) <= 1:
        return name
    return name[0] + "*" * (len(name) - 1)


def luhn_valid(digits: str) -> bool:
    """The card check digit (Luhn) of a string of ASCII digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def national_id_valid(value: str) -> bool:
    """The shape of a mainland national id: 18 characters with a valid birth date and ISO 7064 check character,
    or 15 digits (the old form) with a valid birth date."""
    if len(value) == 18 and value[:17].isascii() and value[:17].isdecimal():
        year, month, day = int(value[6:10]), int(value[10:12]), int(value[12:14])
        if not (1900 <= year <= 2099 and 1 <= month <= 12 and 1 <= day <= 31):
            return False
        total = sum(int(ch) * w for ch, w in zip(value[:17], _ID_WEIGHTS, strict=True))
        return value[17].upper() == _ID_CHECK[total % 11]
    if len(value) == 15 and value.isascii() and value.isdecimal():
        month, day = int(value[8:10]), int(value[10:12])
        return 1 <= month <= 12 and 1 <= day <= 31
    return False


def _is_mobile(digits: str) -> bool:
    if len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    return len(digits) == 11 and digits[0] == "1" and digits[1] in "3456789"


def _looks_like_pii(digits: str) -> bool:
    """Whether a standalone run of ASCII digits is a card, id, mobile or account number by its shape."""
    n = len(digits)
    return (
        n >= LONG_DIGIT_RUN or (12 <= n <= 19 and luhn_valid(digits)) or national_id_valid(digits) or _is_mobile(digits)
    )


def _mask_tail_digits(text: str) -> str:
    """Every digit but the last 4 characters masked (an id's final X counts); separators stay."""
    hide = sum(ch.isdecimal() or ch in "Xx" for ch in text) - 4
    out = []
    for ch in text:
        if hide > 0 and ch.isdecimal():
            out.append("*")
            hide -= 1
        else:
            out.append(ch)
    return "".join(out)


def _mask_number(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = "".join(str(unicodedata.decimal(ch)) for ch in text if ch not in " -")
    return _mask_tail_digits(text) if _looks_like_pii(digits) else text


def _mask_card_or_id_in_identifier(match: re.Match[str]) -> str:
    """A whole card or id number inside an identifier is still one (``s-bank-a-6222…``): mask it, and only it.

    Narrower than in free text, so that callers' keys survive: a card is a
    Luhn-valid run of 16-19 digits starting with 3-6 (card networks; dates
    and epoch times start with 1 or 2), an id has a valid birth date and
    check character.
    """
    run = match.group(0)
    digits = run.rstrip("Xx")
    is_id = len(run) == 18 and national_id_valid(run)
    is_card = len(run) == len(digits) and 16 <= len(digits) <= 19 and digits[0] in "3456" and luhn_valid(digits)
    return _mask_tail_digits(run) if is_id or is_card else run


def _protected(text: str, keep: Iterable[str]) -> list[tuple[int, int, str | None]]:
    """The spans scrub does not scan by shape, in order: kept strings and identifier tokens, each left as it is
    (None) or with the card or id numbers glued inside it masked."""
    kept: list[tuple[int, int]] = []
    # a kept string counts only as a whole token: a one-character key must not split every number apart
    whole = (f"(?<![A-Za-z0-9_.:-]){re.escape(k)}(?![A-Za-z0-9_.:-])" for k in keep if k)
    found = (m.span() for pattern in whole for m in re.finditer(pattern, text))
    for start, end in sorted(found):
        if kept and start <= kept[-1][1]:
            kept[-1] = (kept[-1][0], max(end, kept[-1][1]))
        else:
            kept.append((start, end))
    spans: list[tuple[int, int, str | None]] = [(start, end, None) for start, end in kept]
    for token in _TOKEN.finditer(text):
        core = token.group(0).strip(_CONNECTORS)
        start = token.start() + token.group(0).find(core)
        end = start + len(core)
        if not core or any(start < k_end and k_start < end for k_start, k_end in kept):
            continue
        if _ASCII_LETTER.search(core) or any(c in core for c in "_.:"):
            masked = _RUN_IN_IDENTIFIER.sub(_mask_card_or_id_in_identifier, core)
            spans.append((start, end, None if masked == core else masked))
    return sorted(spans)


def scrub(text: str, keep: Iterable[str] = ()) -> str:
    """Mask card, id, mobile and account numbers inside free text, by their shape (rules above).

    Identifier tokens are never touched; ``keep`` names further strings that
    must come out as they went in (e.g. the caller's own request id in a
    message sent back to that caller).
    """
    if not _ANY_DIGIT.search(text):
        return text
    out: list[str] = []
    at = 0
    for start, end, replacement in _protected(text, keep):
        out.append(_NUMBER.sub(_mask_number, text[at:start]))
        out.append(text[start:end] if replacement is None else replacement)
        at = end
    out.append(_NUMBER.sub(_mask_number, text[at:]))
    return "".join(out)


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
