"""WeChat Pay API v3 wire format: signatures, AES-GCM resources and the code tables.

Pure functions (no I/O), shared by the adapter and the simulator and checked
against the ``wechatpayv3`` SDK.

* Requests carry ``Authorization: WECHATPAY2-SHA256-RSA2048 mchid="..",
  nonce_str="..",signature="..",timestamp="..",serial_no=".."`` where the
  signature is SHA256withRSA (PKCS#1 v1.5) by the merchant key over
  ``METHOD\\nURL\\nTIMESTAMP\\nNONCE\\nBODY\\n`` (URL = path plus query,
  the exact bytes of the request line: the platform verifies what it
  received, so a URL encoded one way for signing and another for sending is
  refused with 401).
* Responses and callbacks carry ``Wechatpay-Timestamp/-Nonce/-Signature/
  -Serial/-Signature-Type``; the signature by the platform key covers
  ``TIMESTAMP\\nNONCE\\nBODY\\n``. ``Wechatpay-Serial`` names the platform key
  (a certificate serial or a ``PUB_KEY_ID_...``).
* Callback resources are AEAD_AES_256_GCM with the 32-byte APIv3 key,
  ``nonce`` and ``associated_data`` as UTF-8, ``ciphertext`` base64 (tag
  appended).
* Sensitive request fields (names, ID numbers) are RSA-OAEP(SHA-1)
  encrypted with the platform public key, ``Wechatpay-Serial`` set.

* JSAPI payments are opened in the WeChat client by ``wx.requestPayment``
  with ``appId``, ``timeStamp``, ``nonceStr``, ``package`` (``prepay_id=...``),
  ``signType`` ``RSA`` and ``paySign``: SHA256withRSA by the merchant key over
  ``appId\\ntimeStamp\\nnonceStr\\npackage\\n`` (:func:`jsapi_params`), which
  the platform checks against the merchant's key before it shows the payment.
* Times (``time_expire``) are RFC 3339 with an offset, e.g.
  ``2018-06-08T10:34:56+08:00`` (:func:`rfc3339`).

Amounts are int fen on this wire: no conversion needed.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509 import load_pem_x509_certificate

from channels.contract import CREDENTIALS_REJECTED, ErrorRule, ErrorTable, Outcome, OutcomeStatus

SCHEMA = "WECHATPAY2-SHA256-RSA2048"
AES_ALGORITHM = "AEAD_AES_256_GCM"
MAX_CLOCK_SKEW_S = 300
_AUTH_FIELD = re.compile(r'(\w+)="([^"]*)"')

# --- keys --------------------------------------------------------------------


def load_private_key(text: str) -> rsa.RSAPrivateKey:
    """The merchant API key (``apiclient_key.pem``, PKCS#8). Raises ValueError."""
    key = serialization.load_pem_private_key(text.strip().encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return key


def load_public_key(text: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(text.strip().encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def load_certificate(text: str) -> tuple[str, rsa.RSAPublicKey]:
    """A platform certificate -> (serial as WeChat writes it: upper-case hex, public key)."""
    cert = load_pem_x509_certificate(text.strip().encode())
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("certificate key is not RSA")
    return f"{cert.serial_number:X}", key


def _sign(key: rsa.RSAPrivateKey, message: str) -> str:
    return base64.b64encode(key.sign(message.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())).decode()


def _verify(key: rsa.RSAPublicKey, message: str, signature: str) -> bool:
    try:
        key.verify(
            base64.b64decode(signature, validate=True), message.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256()
        )
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def new_nonce() -> str:
    return secrets.token_hex(16).upper()


# --- request authorization -----------------------------------------------------


def request_message(method: str, url: str, timestamp: str, nonce: str, body: str) -> str:
    return f"{method}\n{url}\n{timestamp}\n{nonce}\n{body}\n"


def build_authorization(
    method: str,
    url: str,
    body: str,
    *,
    mchid: str,
    serial_no: str,
    key: rsa.RSAPrivateKey,
    timestamp: str | None = None,
    nonce: str | None = None,
) -> str:
    """The ``Authorization`` header for one request (``url`` = path plus query, as sent)."""
    ts = timestamp or str(int(time.time()))
    nonce_str = nonce or new_nonce()
    signature = _sign(key, request_message(method, url, ts, nonce_str, body))
    return (
        f'{SCHEMA} mchid="{mchid}",nonce_str="{nonce_str}",signature="{signature}",'
        f'timestamp="{ts}",serial_no="{serial_no}"'
    )


@dataclass(frozen=True, slots=True)
class Authorization:
    mchid: str
    nonce_str: str
    signature: str
    timestamp: str
    serial_no: str


def parse_authorization(header: str) -> Authorization | None:
    schema, _, rest = header.partition(" ")
    if schema != SCHEMA:
        return None
    fields = dict(_AUTH_FIELD.findall(rest))
    try:
        return Authorization(
            fields["mchid"], fields["nonce_str"], fields["signature"], fields["timestamp"], fields["serial_no"]
        )
    except KeyError:
        return None


def verify_authorization(
    auth: Authorization, method: str, url: str, body: str, key: rsa.RSAPublicKey, *, now: float | None = None
) -> bool:
    """Server side (simulator): the merchant's signature over this exact request, within the clock skew."""
    if not _fresh(auth.timestamp, now):
        return False
    return _verify(key, request_message(method, url, auth.timestamp, auth.nonce_str, body), auth.signature)


# --- response and callback signatures -----------------------------------------


def _fresh(timestamp: str, now: float | None) -> bool:
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    return abs((time.time() if now is None else now) - ts) <= MAX_CLOCK_SKEW_S


def sign_message(body: str, *, key: rsa.RSAPrivateKey, serial: str, timestamp: str | None = None) -> dict[str, str]:
    """Server side: the ``Wechatpay-*`` headers for a response or callback body."""
    ts = timestamp or str(int(time.time()))
    nonce = new_nonce()
    return {
        "Wechatpay-Timestamp": ts,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": _sign(key, f"{ts}\n{nonce}\n{body}\n"),
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature-Type": SCHEMA,
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    """Case-insensitive header lookup over a plain mapping."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return ""


def verify_message(
    headers: Mapping[str, str], body: str, keys: Mapping[str, rsa.RSAPublicKey], *, now: float | None = None
) -> str | None:
    """Check a response's or callback's platform signature. Returns None when it verifies, else the reason."""
    signature_type = _header(headers, "Wechatpay-Signature-Type")
    if signature_type and signature_type != SCHEMA:
        return f"signature type {signature_type!r}"
    key = keys.get(_header(headers, "Wechatpay-Serial"))
    if key is None:
        return "unknown Wechatpay-Serial"
    timestamp = _header(headers, "Wechatpay-Timestamp")
    if not _fresh(timestamp, now):
        return "stale or missing Wechatpay-Timestamp"
    message = f"{timestamp}\n{_header(headers, 'Wechatpay-Nonce')}\n{body}\n"
    if not _verify(key, message, _header(headers, "Wechatpay-Signature")):
        return "signature"
    return None


# --- JSAPI payment parameters and times -----------------------------------------

CHINA_TZ = timezone(timedelta(hours=8))
JSAPI_SIGN_TYPE = "RSA"


def jsapi_message(app_id: str, timestamp: str, nonce: str, package: str) -> str:
    return f"{app_id}\n{timestamp}\n{nonce}\n{package}\n"


def jsapi_params(
    app_id: str, prepay_id: str, key: rsa.RSAPrivateKey, *, timestamp: str | None = None, nonce: str | None = None
) -> dict[str, str]:
    """The parameters the app passes to ``wx.requestPayment`` for a JSAPI ``prepay_id``, signed by the merchant."""
    ts = timestamp or str(int(time.time()))
    nonce_str = nonce or new_nonce()
    package = f"prepay_id={prepay_id}"
    return {
        "appId": app_id,
        "timeStamp": ts,
        "nonceStr": nonce_str,
        "package": package,
        "signType": JSAPI_SIGN_TYPE,
        "paySign": _sign(key, jsapi_message(app_id, ts, nonce_str, package)),
    }


def verify_jsapi_params(params: Mapping[str, str], key: rsa.RSAPublicKey) -> bool:
    """Server side (simulator): the ``paySign`` of ``wx.requestPayment`` parameters, by the merchant key."""
    try:
        message = jsapi_message(params["appId"], params["timeStamp"], params["nonceStr"], params["package"])
    except KeyError:
        return False
    return params.get("signType") == JSAPI_SIGN_TYPE and _verify(key, message, params.get("paySign", ""))


def rfc3339(moment: datetime) -> str:
    """``2018-06-08T10:34:56+08:00`` (China time, whole seconds). ``moment`` must be aware."""
    if moment.tzinfo is None:
        raise ValueError("an aware datetime is required")
    return moment.astimezone(CHINA_TZ).isoformat(timespec="seconds")


def parse_rfc3339(text: str) -> datetime:
    """Raises ValueError for a time without an offset."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("an RFC 3339 time carries its offset")
    return moment


# --- AES-GCM resources and sensitive fields ------------------------------------


def decrypt_resource(apiv3_key: bytes, nonce: str, associated_data: str, ciphertext: str) -> str:
    """Raises ValueError when the tag does not verify (wrong key, tampered resource)."""
    try:
        plain = AESGCM(apiv3_key).decrypt(
            nonce.encode("utf-8"), base64.b64decode(ciphertext, validate=True), associated_data.encode("utf-8")
        )
    except (InvalidTag, binascii.Error) as exc:
        raise ValueError("resource does not decrypt") from exc
    return plain.decode("utf-8")


def encrypt_resource(
    apiv3_key: bytes, plaintext: str, *, associated_data: str, nonce: str | None = None
) -> dict[str, str]:
    """Server side: an ``encrypt-resource`` object (12-character nonce, as WeChat sends)."""
    nonce_str = nonce or secrets.token_hex(6)
    data = AESGCM(apiv3_key).encrypt(nonce_str.encode("utf-8"), plaintext.encode("utf-8"), associated_data.encode())
    return {
        "algorithm": AES_ALGORITHM,
        "ciphertext": base64.b64encode(data).decode(),
        "nonce": nonce_str,
        "associated_data": associated_data,
    }


def encrypt_field(key: rsa.RSAPublicKey, text: str) -> str:
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303 (protocol)
    return base64.b64encode(key.encrypt(text.encode("utf-8"), oaep)).decode()


def decrypt_field(key: rsa.RSAPrivateKey, ciphertext: str) -> str:
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303 (protocol)
    return key.decrypt(base64.b64decode(ciphertext), oaep).decode("utf-8")


# --- code tables ---------------------------------------------------------------

S, F, P = OutcomeStatus.SUCCEEDED, OutcomeStatus.FAILED, OutcomeStatus.PENDING
_REJECTED_SAFE = ErrorRule(F, "REJECTED", safe_elsewhere=True)
# Our credentials (request signature, merchant key, mchid/appid) were refused: nothing ran, nothing will until
# the configuration is fixed. The gateway holds the channel out of routing (gateway/credentials.py).
_CREDENTIALS = ErrorRule(F, CREDENTIALS_REJECTED, safe_elsewhere=True, credentials_rejected=True)

#: Error ``code`` of a 4xx/5xx answer ``{"code": ..., "message": ...}``.
#: A 5xx is PENDING whatever its code (the request was sent); see the adapter.
CODES = ErrorTable(
    "wechatpay",
    {
        "PARAM_ERROR": _REJECTED_SAFE,
        "SIGN_ERROR": _CREDENTIALS,  # HTTP 401; every 401 is read so (credentials_refusal)
        "INVALID_REQUEST": ErrorRule(F, "REJECTED"),  # also used for state conflicts: not safe elsewhere
        "MCH_NOT_EXISTS": _CREDENTIALS,
        "APPID_MCHID_NOT_MATCH": _CREDENTIALS,
        "NO_AUTH": ErrorRule(F, "CHANNEL_FORBIDDEN", safe_elsewhere=True),
        "FREQUENCY_LIMITED": ErrorRule(F, "CHANNEL_BUSY", safe_elsewhere=True),  # refused, not processed
        "QUOTA_EXCEED": ErrorRule(F, "CHANNEL_LIMIT", safe_elsewhere=True),
        "NOT_ENOUGH": ErrorRule(F, "POSITION_INSUFFICIENT", safe_elsewhere=True),  # merchant funds (transfers)
        "SYSTEM_ERROR": ErrorRule(P, "SYSTEM_ERROR"),
        "BANK_ERROR": ErrorRule(P, "SYSTEM_ERROR"),
        "USERPAYING": ErrorRule(P, "PROCESSING"),
        "ORDER_NOT_EXIST": ErrorRule(P, "NOT_FOUND"),
        "ORDERNOTEXIST": ErrorRule(P, "NOT_FOUND"),
        "RESOURCE_NOT_EXISTS": ErrorRule(P, "NOT_FOUND"),
        "NOT_FOUND": ErrorRule(P, "NOT_FOUND"),
        "ALREADY_EXISTS": ErrorRule(P, "ORDER_CONFLICT"),  # that number exists: look, never guess
        "OUT_TRADE_NO_USED": ErrorRule(P, "ORDER_CONFLICT"),  # 商户订单号重复: the number has another order
        "ORDERPAID": ErrorRule(S, "OK"),
        "ORDER_CLOSED": ErrorRule(F, "ORDER_CLOSED"),
        "TRADE_ERROR": ErrorRule(F, "PAYMENT_FAILED"),
        "NOTENOUGH": ErrorRule(F, "INSUFFICIENT_FUNDS", payer_attributable=True),
        "ACCOUNT_ERROR": ErrorRule(F, "ACCOUNT_FROZEN", payer_attributable=True),
        "RULE_LIMIT": ErrorRule(F, "PAYER_LIMIT", payer_attributable=True),
        "CONTRACT_NOT_EXIST": ErrorRule(F, "AGREEMENT_INVALID", payer_attributable=True),
        "CONTRACT_ERROR": ErrorRule(F, "AGREEMENT_INVALID", payer_attributable=True),
        "USER_ACCOUNT_ABNORMAL": ErrorRule(F, "ACCOUNT_FROZEN", payer_attributable=True),
    },
)


def credentials_refusal(raw_code: str, raw_message: str = "") -> Outcome:
    """The outcome of an HTTP 401, whatever its code: the request was not executed, our credentials were refused."""
    return replace(CODES.outcome("SIGN_ERROR", raw_message), raw_code=raw_code)


#: ``trade_state`` of a transaction (query answers and TRANSACTION.* callbacks).
TRADE_STATE = ErrorTable(
    "wechatpay",
    {
        "SUCCESS": ErrorRule(S, "OK"),
        "REFUND": ErrorRule(S, "OK"),  # paid, later (partly) refunded
        "ACCEPT": ErrorRule(P, "PROCESSING"),  # papay: accepted, deduction pending
        "USERPAYING": ErrorRule(P, "PROCESSING"),
        "NOTPAY": ErrorRule(P, "PROCESSING"),
        "PAYERROR": ErrorRule(F, "PAYMENT_FAILED"),
        "CLOSED": ErrorRule(F, "ORDER_CLOSED"),
        "REVOKED": ErrorRule(F, "ORDER_CLOSED"),
    },
)

#: ``status`` of a refund.
REFUND_STATUS = ErrorTable(
    "wechatpay",
    {
        "SUCCESS": ErrorRule(S, "OK"),
        "PROCESSING": ErrorRule(P, "PROCESSING"),
        "CLOSED": ErrorRule(F, "REFUND_CLOSED"),
        "ABNORMAL": ErrorRule(P, "REFUND_ABNORMAL"),  # needs an operator (refund to another account)
    },
)

#: ``detail_status`` of one transfer in a batch.
TRANSFER_STATUS = ErrorTable(
    "wechatpay",
    {
        "SUCCESS": ErrorRule(S, "OK"),
        "INIT": ErrorRule(P, "PROCESSING"),
        "WAIT_PAY": ErrorRule(P, "PROCESSING"),
        "PROCESSING": ErrorRule(P, "PROCESSING"),
        "FAIL": ErrorRule(F, "TRANSFER_FAILED"),
    },
)

#: ``fail_reason`` of a failed transfer detail (more specific than ``FAIL``).
TRANSFER_FAIL_REASONS = ErrorTable(
    "wechatpay",
    {
        "ACCOUNT_FROZEN": ErrorRule(F, "ACCOUNT_FROZEN", payer_attributable=True),
        "ACCOUNT_NOT_EXIST": ErrorRule(F, "ACCOUNT_INVALID", payer_attributable=True),
        "OPENID_INVALID": ErrorRule(F, "ACCOUNT_INVALID", payer_attributable=True),
        "NAME_NOT_CORRECT": ErrorRule(F, "NAME_MISMATCH", payer_attributable=True),
        "REAL_NAME_CHECK_FAIL": ErrorRule(F, "NAME_MISMATCH", payer_attributable=True),
        "TRANSFER_QUOTA_EXCEED": ErrorRule(F, "PAYER_LIMIT", payer_attributable=True),
        "DAY_RECEIVED_QUOTA_EXCEED": ErrorRule(F, "PAYER_LIMIT", payer_attributable=True),
        "MERCHANT_REJECT": ErrorRule(F, "TRANSFER_FAILED"),
        "TRANSFER_RISK": ErrorRule(F, "RISK_REJECTED"),
        "OVERDUE_CLOSE": ErrorRule(F, "ORDER_CLOSED"),
    },
)
