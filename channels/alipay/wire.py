"""Alipay Open Platform wire format: signing, amounts, response envelopes and the code tables.

Pure functions only (no I/O): the adapter and the simulator both use them, and
the SDK-compatibility tests check them against ``python-alipay-sdk``; the
test vectors in ``tests/unit/channels/test_alipay_vectors.py`` come from the
official SDKs and the published documentation, not from this module.

Signing and verification follow different rules, as Alipay's do (RSA2 =
SHA256withRSA, PKCS#1 v1.5, base64):

* a **request** is signed over every parameter except ``sign``, **empty values
  dropped**, sorted by key, joined as ``k=v`` with ``&``, values *not*
  URL-encoded; ``sign_type`` is part of the signed string
  (:func:`sign_content`, the Java SDK's ``getSignContent``);
* an **async notify** is checked over every parameter it carries except
  ``sign`` and ``sign_type``, **empty values kept** (``passback_params=``):
  "除去 sign、sign_type 两个参数外，凡是通知返回回来的参数皆是待验签的参数",
  and both official SDKs' verification (Java ``getSignCheckContentV1``,
  python-alipay-sdk ``verify``) keep ``key=`` for an empty value
  (:func:`notify_content`);
* a **synchronous response** ``{"<method>_response": {...}, "sign": "..."}`` is
  signed over the exact bytes of the ``<method>_response`` object as sent, so
  it must be verified on the raw text, never on a re-serialization. The
  gateway's own refusals of our credentials (invalid signature, unknown app
  id, no key uploaded) may come back unsigned: the gateway could not tell
  which key to answer with (:func:`unsigned_refusal`).

Amounts travel as yuan strings (``"12.34"``); paygate uses int fen. The
conversion is integer string arithmetic: no float ever sees money.

Client-side requests (``alipay.trade.wap.pay``, ``alipay.trade.app.pay``) are
not sent by us: they are signed like any request and handed to the payer's
browser or the Alipay app as an **order string** (:func:`order_string`:
the signed parameters sorted, values URL-encoded with ``+`` for a space, as
the official SDKs' ``sdkExecute`` / ``sign_data`` build it); Alipay creates
the trade when the payer opens it and refuses to after ``time_expire``
(:func:`china_time`, Alipay's clock, China time).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, quote_plus

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from channels.contract import CREDENTIALS_REJECTED, ErrorRule, ErrorTable, OutcomeStatus

SIGN_TYPE = "RSA2"
CHARSET = "utf-8"
VERSION = "1.0"
FORMAT = "JSON"
CHINA_TZ = timezone(timedelta(hours=8))

# --- amounts -----------------------------------------------------------------

_YUAN = re.compile(r"^(0|[1-9][0-9]*)(?:\.([0-9]{1,2}))?$")


def fen_to_yuan(fen: int) -> str:
    """``1234`` -> ``"12.34"``. Negative amounts never travel to Alipay."""
    if isinstance(fen, bool) or not isinstance(fen, int) or fen < 0:
        raise ValueError(f"amount must be a non-negative int of fen, got {fen!r}")
    return f"{fen // 100}.{fen % 100:02d}"


def yuan_to_fen(yuan: str) -> int:
    """``"12.34"`` -> ``1234``, ``"12.3"`` -> ``1230``, ``"12"`` -> ``1200``. Raises ValueError otherwise."""
    match = _YUAN.match(yuan.strip()) if isinstance(yuan, str) else None
    if match is None:
        raise ValueError(f"not a yuan amount: {yuan!r}")
    whole, frac = match.group(1), match.group(2) or ""
    return int(whole) * 100 + int(frac.ljust(2, "0"))


# --- keys and signatures -----------------------------------------------------


def _pem_body(text: str, kind: str) -> bytes:
    """Alipay's console hands out bare base64 keys; accept PEM or bare base64."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        return text.encode()
    wrapped = "\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    return f"-----BEGIN {kind}-----\n{wrapped}\n-----END {kind}-----\n".encode()


def load_private_key(text: str) -> rsa.RSAPrivateKey:
    """PKCS#8 or PKCS#1 PEM, or bare base64 PKCS#8/PKCS#1. Raises ValueError."""
    try:
        key = serialization.load_pem_private_key(_pem_body(text, "PRIVATE KEY"), password=None)
    except (ValueError, TypeError):
        key = serialization.load_pem_private_key(_pem_body(text, "RSA PRIVATE KEY"), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return key


def load_public_key(text: str) -> rsa.RSAPublicKey:
    """SubjectPublicKeyInfo PEM or bare base64. Raises ValueError."""
    key = serialization.load_pem_public_key(_pem_body(text, "PUBLIC KEY"))
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def sign_content(params: Mapping[str, str]) -> str:
    """The string a request is signed over: sorted ``k=v`` pairs, ``sign`` and empty values dropped."""
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "sign" and v != "")


NOTIFY_UNSIGNED = frozenset({"sign", "sign_type"})


def notify_content(params: Mapping[str, str]) -> str:
    """The string a notify is checked over: sorted ``k=v`` pairs of every field but sign/sign_type, empties kept."""
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in NOTIFY_UNSIGNED)


def rsa2_sign(key: rsa.RSAPrivateKey, content: str) -> str:
    return base64.b64encode(key.sign(content.encode(CHARSET), padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa2_verify(key: rsa.RSAPublicKey, content: str, signature: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, content.encode(CHARSET), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def sign_request(params: Mapping[str, str], key: rsa.RSAPrivateKey) -> dict[str, str]:
    """Return ``params`` plus ``sign`` (``sign_type`` must already be in ``params``)."""
    signed = {k: v for k, v in params.items() if v != ""}
    signed["sign"] = rsa2_sign(key, sign_content(signed))
    return signed


def verify_notify(params: Mapping[str, str], key: rsa.RSAPublicKey) -> bool:
    signature = params.get("sign", "")
    return bool(signature) and rsa2_verify(key, notify_content(params), signature)


def sign_notify(params: Mapping[str, str], key: rsa.RSAPrivateKey) -> dict[str, str]:
    """Server side (simulator): add ``sign_type`` and ``sign`` to a notify; empty fields are sent and signed."""
    signed = dict(params)
    signed["sign"] = rsa2_sign(key, notify_content(signed))
    signed["sign_type"] = SIGN_TYPE
    return signed


def order_string(params: Mapping[str, str], key: rsa.RSAPrivateKey) -> str:
    """A client-side request as the string the payer's browser (after ``gateway?``) or the Alipay app takes.

    Signed as any request (:func:`sign_request`: empties dropped), then every
    pair ``k=quote_plus(v)`` in key order with ``sign`` last.
    """
    signed = sign_request(params, key)
    signature = signed.pop("sign")
    pairs = [*sorted(signed.items()), ("sign", signature)]
    return "&".join(f"{k}={quote_plus(v, encoding=CHARSET)}" for k, v in pairs)


def parse_order_string(text: str) -> dict[str, str]:
    """Server side (simulator): the parameters of an order string. Raises ValueError for a repeated or bad pair."""
    pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, encoding=CHARSET)
    params = dict(pairs)
    if len(params) != len(pairs):
        raise ValueError("repeated parameter")
    return params


def verify_request(params: Mapping[str, str], key: rsa.RSAPublicKey) -> bool:
    """Server side (simulator): the merchant's signature over a request, by the request rule."""
    signature = params.get("sign", "")
    return bool(signature) and rsa2_verify(key, sign_content(params), signature)


def china_time(moment: datetime) -> str:
    """``yyyy-MM-dd HH:mm:ss`` in China time (``time_expire``, ``timestamp``). ``moment`` must be aware."""
    if moment.tzinfo is None:
        raise ValueError("an aware datetime is required")
    return moment.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")


def parse_china_time(text: str) -> datetime:
    """The aware moment of a ``yyyy-MM-dd HH:mm:ss`` China-time string. Raises ValueError."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA_TZ)


def common_params(app_id: str, method: str, biz_content: Mapping[str, Any], *, notify_url: str = "") -> dict[str, str]:
    """The common request parameters, ``biz_content`` as compact JSON."""
    return {
        "app_id": app_id,
        "method": method,
        "format": FORMAT,
        "charset": CHARSET,
        "sign_type": SIGN_TYPE,
        "timestamp": china_time(datetime.now(CHINA_TZ)),
        "version": VERSION,
        "notify_url": notify_url,
        "biz_content": json.dumps(biz_content, ensure_ascii=False, separators=(",", ":")),
    }


# --- synchronous response envelope -------------------------------------------


def response_key(method: str) -> str:
    return method.replace(".", "_") + "_response"


def _object_span(text: str, start: int) -> tuple[int, int] | None:
    """The [start, end) span of the JSON object opening at ``text[start] == '{'``, string-aware."""
    depth = 0
    in_string = False
    escaped = False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return start, i + 1
    return None


def signed_segment(raw: str, key: str) -> str | None:
    """The exact text of the object under ``"key":`` in ``raw`` (what Alipay signed)."""
    match = re.search(r'"' + re.escape(key) + r'"\s*:\s*\{', raw)
    if match is None:
        return None
    span = _object_span(raw, match.end() - 1)
    return raw[span[0] : span[1]] if span else None


class ResponseError(ValueError):
    """A synchronous response that is malformed or fails signature verification."""


def parse_response(raw: str, method: str, key: rsa.RSAPublicKey) -> dict[str, Any]:
    """Verify and decode a gateway response. Raises ResponseError.

    Both ``<method>_response`` and ``error_response`` must carry a valid
    signature: an unsigned answer could be anything in between, so it is
    never turned into a definite outcome.
    """
    try:
        envelope = json.loads(raw)
    except ValueError as exc:
        raise ResponseError("response is not JSON") from exc
    if not isinstance(envelope, dict):
        raise ResponseError("response is not a JSON object")
    name = response_key(method) if response_key(method) in envelope else "error_response"
    segment = signed_segment(raw, name)
    signature = envelope.get("sign")
    if segment is None or not isinstance(signature, str) or not signature:
        raise ResponseError(f"unsigned or missing {name}")
    if not rsa2_verify(key, segment, signature):
        raise ResponseError("response signature does not verify")
    body = json.loads(segment)
    if not isinstance(body, dict):
        raise ResponseError(f"{name} is not an object")
    return body


def unsigned_refusal(raw: str, method: str) -> dict[str, Any] | None:
    """The body of an unsigned answer that is the gateway's refusal of our credentials, else None.

    Only these may be read without a signature: the gateway checks the app id
    and the request signature before anything is processed, and when those
    fail it may not know which key to sign its answer with (python-alipay-sdk
    documents ``{"alipay_trade_query_response": {"code": "40002", "sub_code":
    "isv.invalid-app-id", ...}}`` with no ``sign``, and an ``error_response``
    with ``"sign": ""``). Any other unsigned answer stays unverified.
    """
    try:
        envelope = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(envelope, dict) or envelope.get("sign"):
        return None
    body = envelope.get(response_key(method)) or envelope.get("error_response")
    if not isinstance(body, dict) or str(body.get("code", "")) not in GATEWAY_REFUSAL_CODES:
        return None
    rule = CODES.rule(raw_code(body))
    return body if rule is not None and rule.credentials_rejected else None


def build_response(method: str, body: Mapping[str, Any], key: rsa.RSAPrivateKey | None, *, error: bool = False) -> str:
    """Server side (simulator): the response envelope as raw text, signed unless ``key`` is None."""
    name = "error_response" if error else response_key(method)
    segment = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    if key is None:
        return f'{{"{name}":{segment}}}'
    sign = rsa2_sign(key, segment)
    return f'{{"{name}":{segment},"sign":"{sign}"}}'


# --- code tables -------------------------------------------------------------

S, F, P = OutcomeStatus.SUCCEEDED, OutcomeStatus.FAILED, OutcomeStatus.PENDING
SUCCESS_CODE = "10000"

_BEFORE = ErrorRule(F, "REJECTED", safe_elsewhere=True)  # refused before any processing
# The gateway refused our credentials (signature, key, app id): nothing was processed, and nothing will be
# until the configuration is fixed. The gateway holds the channel out of routing (gateway/credentials.py).
_CREDENTIALS = ErrorRule(F, CREDENTIALS_REJECTED, safe_elsewhere=True, credentials_rejected=True)
#: ``code`` of the gateway's own (non-business) refusals: missing or invalid common parameters.
GATEWAY_REFUSAL_CODES = frozenset({"40001", "40002"})
_PAYER = {
    "INSUFFICIENT_FUNDS": ErrorRule(F, "INSUFFICIENT_FUNDS", payer_attributable=True),
    "ACCOUNT_FROZEN": ErrorRule(F, "ACCOUNT_FROZEN", payer_attributable=True),
    "PAYER_LIMIT": ErrorRule(F, "PAYER_LIMIT", payer_attributable=True),
    "AGREEMENT_INVALID": ErrorRule(F, "AGREEMENT_INVALID", payer_attributable=True),
    "ACCOUNT_INVALID": ErrorRule(F, "ACCOUNT_INVALID", payer_attributable=True),
    "NAME_MISMATCH": ErrorRule(F, "NAME_MISMATCH", payer_attributable=True),
}

#: ``sub_code`` (or ``code`` when there is none) -> outcome, for every order API.
#: ``10000`` is not here: success is read from the operation's status field.
CODES = ErrorTable(
    "alipay",
    {
        # gateway-level codes
        "10003": ErrorRule(P, "PROCESSING"),  # 业务处理中: wait for the notify or query
        "20000": ErrorRule(P, "CHANNEL_UNKNOWN"),  # 服务不可用: outcome unknown
        "isp.unknow-error": ErrorRule(P, "CHANNEL_UNKNOWN"),
        "aop.unknow-error": ErrorRule(P, "CHANNEL_UNKNOWN"),
        "20001": ErrorRule(F, "CHANNEL_AUTH", safe_elsewhere=True),
        "40001": _BEFORE,
        "40002": _BEFORE,
        "40006": ErrorRule(F, "CHANNEL_FORBIDDEN", safe_elsewhere=True),
        "isv.invalid-signature": _CREDENTIALS,  # 验签出错: our private key is not the app's uploaded one
        "isv.invalid-app-id": _CREDENTIALS,
        "isv.invalid-signature-type": _CREDENTIALS,  # the app has no key for RSA2
        "isv.missing-signature-key": _CREDENTIALS,  # 缺少签名配置: no public key uploaded for the app
        "isv.missing-signature": _BEFORE,
        "isv.invalid-timestamp": _BEFORE,
        "isv.invalid-parameter": _BEFORE,
        "isv.missing-method": _BEFORE,
        "isv.invalid-method": _BEFORE,
        "isv.app-call-limited": ErrorRule(F, "CHANNEL_BUSY", safe_elsewhere=True),  # rate limited, not processed
        "isv.insufficient-isv-permissions": ErrorRule(F, "CHANNEL_FORBIDDEN", safe_elsewhere=True),
        # trades (alipay.trade.pay / query / close / refund)
        "ACQ.SYSTEM_ERROR": ErrorRule(P, "SYSTEM_ERROR"),  # docs: retry with the same out_trade_no, or query
        "ACQ.INVALID_PARAMETER": _BEFORE,
        "ACQ.ACCESS_FORBIDDEN": ErrorRule(F, "CHANNEL_FORBIDDEN", safe_elsewhere=True),
        "ACQ.EXIST_FORBIDDEN_WORD": _BEFORE,
        "ACQ.PARTNER_ERROR": ErrorRule(F, "CHANNEL_AUTH", safe_elsewhere=True),
        "ACQ.SELLER_BEEN_BLOCKED": ErrorRule(F, "CHANNEL_FORBIDDEN", safe_elsewhere=True),
        "ACQ.BUYER_SELLER_EQUAL": _BEFORE,
        "ACQ.TOTAL_FEE_EXCEED": ErrorRule(F, "CHANNEL_LIMIT", safe_elsewhere=True),
        "ACQ.PRODUCT_AMOUNT_LIMIT_ERROR": ErrorRule(F, "CHANNEL_LIMIT", safe_elsewhere=True),
        "ACQ.TRADE_HAS_SUCCESS": ErrorRule(S, "OK"),  # a retried out_trade_no that already paid
        "ACQ.TRADE_HAS_CLOSE": ErrorRule(F, "ORDER_CLOSED"),
        "ACQ.TRADE_HAS_FINISHED": ErrorRule(S, "OK"),
        "ACQ.CONTEXT_INCONSISTENT": ErrorRule(P, "ORDER_CONFLICT"),  # same number, other params: look, never guess
        "ACQ.DISCORDANT_REPEAT_REQUEST": ErrorRule(P, "ORDER_CONFLICT"),
        "ACQ.TRADE_NOT_EXIST": ErrorRule(P, "NOT_FOUND"),
        "ACQ.TRADE_STATUS_ERROR": ErrorRule(P, "STATUS_ERROR"),
        "ACQ.BUYER_BALANCE_NOT_ENOUGH": _PAYER["INSUFFICIENT_FUNDS"],
        "ACQ.BUYER_BANKCARD_BALANCE_NOT_ENOUGH": _PAYER["INSUFFICIENT_FUNDS"],
        "ACQ.BUYER_ENABLE_STATUS_FORBID": _PAYER["ACCOUNT_FROZEN"],
        "ACQ.BUYER_PAYMENT_AMOUNT_DAY_LIMIT_ERROR": _PAYER["PAYER_LIMIT"],
        "ACQ.BUYER_PAYMENT_AMOUNT_MONTH_LIMIT_ERROR": _PAYER["PAYER_LIMIT"],
        "ACQ.PAYMENT_REQUEST_HAS_RISK": ErrorRule(F, "RISK_REJECTED", payer_attributable=True),
        "ACQ.AGREEMENT_NOT_EXIST": _PAYER["AGREEMENT_INVALID"],
        "ACQ.AGREEMENT_INVALID": _PAYER["AGREEMENT_INVALID"],
        "ACQ.AGREEMENT_STATUS_NOT_NORMAL": _PAYER["AGREEMENT_INVALID"],
        "ACQ.AGREEMENT_ERROR": _PAYER["AGREEMENT_INVALID"],
        "ACQ.PAYMENT_FAIL": ErrorRule(F, "PAYMENT_FAILED"),
        "ACQ.SELLER_BALANCE_NOT_ENOUGH": ErrorRule(F, "MERCHANT_BALANCE_INSUFFICIENT"),
        "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL": ErrorRule(F, "REFUND_AMOUNT_INVALID"),
        "ACQ.REFUND_FEE_ERROR": ErrorRule(F, "REFUND_AMOUNT_INVALID"),
        "ACQ.REASON_TRADE_BEEN_FREEZEN": ErrorRule(F, "ORDER_FROZEN"),
        # transfers (alipay.fund.trans.uni.transfer / common.query)
        "SYSTEM_ERROR": ErrorRule(P, "SYSTEM_ERROR"),
        "INVALID_PARAMETER": _BEFORE,
        "ORDER_NOT_EXIST": ErrorRule(P, "NOT_FOUND"),
        "PAYER_BALANCE_NOT_ENOUGH": ErrorRule(F, "POSITION_INSUFFICIENT", safe_elsewhere=True),
        "BALANCE_IS_NOT_ENOUGH": ErrorRule(F, "POSITION_INSUFFICIENT", safe_elsewhere=True),
        "EXCEED_LIMIT_SM_AMOUNT": ErrorRule(F, "CHANNEL_LIMIT", safe_elsewhere=True),
        "EXCEED_LIMIT_DM_AMOUNT": ErrorRule(F, "CHANNEL_LIMIT", safe_elsewhere=True),
        "PAYEE_NOT_EXIST": _PAYER["ACCOUNT_INVALID"],
        "PAYEE_CARD_INFO_ERROR": _PAYER["ACCOUNT_INVALID"],
        "CARD_BIN_ERROR": _PAYER["ACCOUNT_INVALID"],
        "PAYEE_USER_INFO_ERROR": _PAYER["NAME_MISMATCH"],
        "PAYEE_ACCOUNT_STATUS_ERROR": _PAYER["ACCOUNT_FROZEN"],
        "PAYEE_ACC_OCUPIED": _PAYER["ACCOUNT_FROZEN"],
        "ORDER_ALREADY_CLOSED": ErrorRule(F, "ORDER_CLOSED"),
    },
)

#: ``trade_status`` of alipay.trade.query and trade notifies.
TRADE_STATUS = ErrorTable(
    "alipay",
    {
        "TRADE_SUCCESS": ErrorRule(S, "OK"),
        "TRADE_FINISHED": ErrorRule(S, "OK"),
        "WAIT_BUYER_PAY": ErrorRule(P, "PROCESSING"),
        # Closed: never paid, or fully refunded. Not "safe elsewhere": which one it was is not said.
        "TRADE_CLOSED": ErrorRule(F, "ORDER_CLOSED"),
    },
)

#: ``product_code`` of the cashier methods (alipay.trade.precreate, .wap.pay, .app.pay). python-alipay-sdk
#: writes QUICK_WAP_PAY for WAP pay; the published API page (and the Java SDK's model) say QUICK_WAP_WAY.
PRECREATE_PRODUCT = "FACE_TO_FACE_PAYMENT"
WAP_PRODUCT = "QUICK_WAP_WAY"
APP_PRODUCT = "QUICK_MSECURITY_PAY"

#: ``status`` of alipay.fund.trans.uni.transfer / common.query and transfer notifies.
TRANSFER_STATUS = ErrorTable(
    "alipay",
    {
        "SUCCESS": ErrorRule(S, "OK"),
        "DEALING": ErrorRule(P, "PROCESSING"),
        "WAIT_PAY": ErrorRule(P, "PROCESSING"),
        "INIT": ErrorRule(P, "PROCESSING"),
        "FAIL": ErrorRule(F, "TRANSFER_FAILED"),
        "REFUND": ErrorRule(F, "TRANSFER_RETURNED"),  # the bank sent it back
        "CLOSED": ErrorRule(F, "ORDER_CLOSED"),
    },
)

#: ``refund_status`` of alipay.trade.fastpay.refund.query.
REFUND_STATUS = ErrorTable("alipay", {"REFUND_SUCCESS": ErrorRule(S, "OK")})

#: ``fund_change`` of an alipay.trade.refund answer that moved money. ``10000`` only says the call was
#: accepted; with ``fund_change = N`` (a refund still in progress, or a repeat of an earlier one) the
#: result is read from alipay.trade.fastpay.refund.query.
FUND_CHANGED = "Y"

# --- payees ----------------------------------------------------------------------

#: paygate bank code -> the institution name ``payee_info.bankcard_ext_info.inst_name`` carries
#: ("机构名称", e.g. 招商银行). Channel settings extend or override it with ``institution_names``.
INSTITUTION_NAMES: Mapping[str, str] = {
    "ICBC": "中国工商银行",
    "ABC": "中国农业银行",
    "BOC": "中国银行",
    "CCB": "中国建设银行",
    "COMM": "交通银行",
    "BOCOM": "交通银行",
    "PSBC": "中国邮政储蓄银行",
    "CMB": "招商银行",
    "CITIC": "中信银行",
    "CEB": "中国光大银行",
    "CIB": "兴业银行",
    "SPDB": "上海浦东发展银行",
    "CMBC": "中国民生银行",
    "HXBANK": "华夏银行",
    "GDB": "广发银行",
    "SPABANK": "平安银行",
    "BJBANK": "北京银行",
    "SHBANK": "上海银行",
}


def raw_code(body: Mapping[str, Any]) -> str:
    """The most specific code of a response: ``sub_code`` when present, else ``code``."""
    return str(body.get("sub_code") or body.get("code") or "")


def raw_message(body: Mapping[str, Any]) -> str:
    return str(body.get("sub_msg") or body.get("msg") or "")
