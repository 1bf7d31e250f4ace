r"""Request validation: every field checked, errors name the field (INVALID_ARGUMENT).

Validation runs before anything is written, so bad input persists nothing.

Every pattern must match the *whole* string (``re.fullmatch``: ``$`` would let
a trailing newline through, and a 64-character key plus ``\n`` would then be
cut to 64 by the database and meet another caller key). Digits are ASCII
only (``[0-9]``: ``\d`` and ``str.isdigit`` accept Arabic-Indic and
full-width digits, which skip the card check and reach a channel).

Every number is bounded here, so the database never sees a value it would
have to refuse or cut (bounds in :data:`MAX_AMOUNT`, :data:`MAX_POSITION_DELTA`,
:data:`MAX_PAGE_SIZE`, and the ``wait_ms`` ceiling of the server config).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from gateway.domain import CURRENCIES, INT64_MAX, luhn_valid
from gateway.errors import InvalidInput
from gateway.splits.allocation import Shares

REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
FLOW_NO = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
CARD_NO = re.compile(r"[0-9]{12,19}")
ACCOUNT_NO = re.compile(r"[0-9]{8,32}")
BANK_CODE = re.compile(r"[A-Z][A-Z0-9]{1,15}")
PHONE = re.compile(r"1[0-9]{10}")
SMS_CODE = re.compile(r"[0-9]{4,8}")
ID_NO = re.compile(r"[0-9]{17}[0-9X]")
CHANNEL_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
PAGE_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,32}")  # unpadded urlsafe base64 of a row id
OPENID = re.compile(r"[A-Za-z0-9_-]{6,128}")  # a WeChat openid
RETURN_URL = re.compile(r"https?://[!-~]{1,500}")  # printable ASCII, no blanks
# C0/C1 controls, line and paragraph separators, and the bidi overrides that
# can make a log line or an operator screen read differently from its bytes.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

# The largest amount of one request, in minor units: 10^15 (10 trillion in a
# two-decimal currency). Far beyond any real payment, and far enough below
# int64 that sums of amounts (refunds against a withhold, a float plus its
# reservations) can never overflow a BIGINT column.
MAX_AMOUNT = 10**15
# The largest |delta| of one AdjustPosition, minor units (same reasoning).
MAX_POSITION_DELTA = 10**15
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50

# The bank codes a request may name when ``[banks] codes`` is not configured: the mainland
# banks payment channels commonly serve, in the short codes Chinese payment APIs use (some
# banks go by two). The gateway accepts these plus every bank a configured channel lists
# (gateway/app.py); an unknown code is refused naming ``bank_code``, so per-bank state (the
# router's evidence, metrics) stays bounded by configuration, not by what callers send.
MAINLAND_BANK_CODES = frozenset(
    {
        "ICBC",  # 工商银行
        "ABC",  # 农业银行
        "BOC",  # 中国银行
        "CCB",  # 建设银行
        "BOCOM",  # 交通银行
        "COMM",  # 交通银行
        "PSBC",  # 邮储银行
        "CMB",  # 招商银行
        "CITIC",  # 中信银行
        "CEB",  # 光大银行
        "HXB",  # 华夏银行
        "CMBC",  # 民生银行
        "SPDB",  # 浦发银行
        "CIB",  # 兴业银行
        "GDB",  # 广发银行
        "CGB",  # 广发银行
        "PAB",  # 平安银行
        "SPABANK",  # 平安银行
        "CZB",  # 浙商银行
        "HFB",  # 恒丰银行
        "CBHB",  # 渤海银行
        "BOB",  # 北京银行
        "BJBANK",  # 北京银行
        "BOS",  # 上海银行
        "SHBANK",  # 上海银行
        "JSBANK",  # 江苏银行
        "NBBANK",  # 宁波银行
        "NJCB",  # 南京银行
        "HZCB",  # 杭州银行
        "BRCB",  # 北京农商银行
        "SRCB",  # 上海农商银行
        "CQRCB",  # 重庆农商银行
        "GZRCB",  # 广州农商银行
    }
)


def request_id(value: str, field: str = "request_id") -> str:
    if not value:
        raise InvalidInput(field, "is required")
    if not REQUEST_ID.fullmatch(value):
        raise InvalidInput(field, "must be 1-64 characters of A-Z a-z 0-9 . _ : -")
    return value


def money(amount: int, currency: str, *, field: str = "amount", present: bool = True) -> tuple[int, str]:
    if not present:
        raise InvalidInput(field, "is required")
    if amount <= 0:
        raise InvalidInput(f"{field}.amount", f"must be positive minor units, got {amount}")
    if amount > MAX_AMOUNT:
        raise InvalidInput(f"{field}.amount", f"must be at most {MAX_AMOUNT} minor units")
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
    if not regex.fullmatch(value):
        # never echo the value: it may be a card or ID number
        raise InvalidInput(field, f"must be {what}")
    return value


def bank_code(value: str, accepted: frozenset[str], field: str = "bank_code") -> str:
    """An upper-case bank code that is one of ``accepted`` (the configured banks)."""
    value = pattern(value, field, BANK_CODE, "an upper-case bank code like ICBC")
    if value not in accepted:
        raise InvalidInput(field, "is not a bank this gateway serves (see [banks] codes in its configuration)")
    return value


def accepted_banks(configured: Iterable[str], channel_banks: Iterable[frozenset[str] | None]) -> frozenset[str]:
    """The bank codes requests may name: ``configured`` plus every bank a channel lists (None: any bank)."""
    out = set(configured)
    for banks in channel_banks:
        out |= banks or set()
    return frozenset(out)


def card_no(value: str, field: str = "account_no") -> str:
    value = pattern(value, field, CARD_NO, "12-19 digits")
    if not luhn_valid(value) and len(value) in (16, 19) and value.startswith(("4", "5", "62")):
        raise InvalidInput(field, "fails the card number check digit")
    return value


def client_ip(value: str, field: str = "payer.client_ip") -> str:
    """An IPv4 or IPv6 address ('' when not given); never echoed (it is the borrower's)."""
    if not value:
        return value
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidInput(field, "must be an IPv4 or IPv6 address") from None


def expiry_s(value: int, default: int, minimum: int, maximum: int, field: str = "expires_in_s") -> int:
    """A collection's life in seconds: 0 means ``default``; otherwise within [``minimum``, ``maximum``]."""
    if value == 0:
        return default
    if not minimum <= value <= maximum:
        raise InvalidInput(field, f"must be between {minimum} and {maximum} seconds (0: {default})")
    return value


def wait_ms(value: int, default: int, maximum: int, field: str = "wait_ms") -> int:
    """The wait budget in ms: 0 means the server default; anything above ``maximum`` is cut to it."""
    if value < 0:
        raise InvalidInput(field, "must be >= 0")
    if value == 0:
        return default
    return min(value, maximum)


def page_size(value: int, field: str = "page_size") -> int:
    """Rows per page: 0 means :data:`DEFAULT_PAGE_SIZE`; at most :data:`MAX_PAGE_SIZE`."""
    if value < 0 or value > MAX_PAGE_SIZE:
        raise InvalidInput(field, f"must be between 0 and {MAX_PAGE_SIZE}")
    return value or DEFAULT_PAGE_SIZE


def position_delta(value: int, field: str = "delta") -> int:
    """A signed change of a channel's float, minor units: non-zero, |delta| <= :data:`MAX_POSITION_DELTA`."""
    if value == 0:
        raise InvalidInput(field, "must not be zero")
    if abs(value) > MAX_POSITION_DELTA:
        raise InvalidInput(field, f"must be at most {MAX_POSITION_DELTA} minor units either way")
    return value


def page_token(token: str, field: str = "page_token") -> int:
    """The row id in a page token this server issued (0 for none); see :func:`next_page_token`."""
    if not token:
        return 0
    if not PAGE_TOKEN.fullmatch(token):
        raise InvalidInput(field, "is not a token this server issued")
    try:
        text = base64.urlsafe_b64decode(token.encode() + b"==").decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(field, "is not a token this server issued") from None
    # ids are BIGINT UNSIGNED; ours never pass int64
    if not re.fullmatch(r"[0-9]{1,19}", text) or int(text) > INT64_MAX:
        raise InvalidInput(field, "is not a token this server issued")
    return int(text)


def next_page_token(last_id: int) -> str:
    """The token of the page after the row ``last_id``."""
    return base64.urlsafe_b64encode(str(last_id).encode()).decode().rstrip("=")


# Parameters added after requests were first hashed: left out of the hash while unset (None), so a
# replay of a request made before they existed still has the hash it was recorded with.
_ADDED_LATER = frozenset({"shares"})


def canonical_hash(kind: str, fields: object) -> str:
    """A stable hash of the parameters that define a request (idempotency comparison)."""
    values = asdict(fields)  # type: ignore[call-overload]
    for name in _ADDED_LATER:
        if name in values and values[name] is None:
            del values[name]
    payload = json.dumps({"kind": kind, "fields": values}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class WithholdParams:
    amount: int
    currency: str
    account_no: str
    bank_code: str
    agreement_no: str
    description: str
    shares: Shares | None = None  # joint loans: the funders' shares (checked: gateway/splits)


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
