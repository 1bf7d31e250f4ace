"""WeChat Pay API v3 adapter (direct merchant, ``WECHATPAY2-SHA256-RSA2048``).

Operations and the v3 APIs behind them:

=============  ==============================================================
withhold       entrusted deduction (papay): ``POST /v3/papay/pay/transactions/apply``
               with the ``contract_id``; the deduction is asynchronous, so an
               accepted apply is followed by one order query
payout         batch transfer with one detail: ``POST /v3/transfer/batches``
               (``out_batch_no`` = ``out_detail_no`` = our order number, the
               payee's name RSA-OAEP encrypted), then the detail is queried
refund         ``POST /v3/refund/domestic/refunds``
query          ``GET /v3/pay/transactions/out-trade-no/{no}?mchid=``,
               ``GET /v3/transfer/batches/out-batch-no/{no}/details/out-detail-no/{no}``,
               ``GET /v3/refund/domestic/refunds/{no}``
close_order    ``POST /v3/pay/transactions/out-trade-no/{no}/close``
agreements     ``POST /v3/papay/contracts/pre-entrust-sign`` and, adapted to
               paygate's SMS confirmation, ``.../pre-entrust-sign/{id}/confirm``;
               ``POST /v3/papay/contracts/{contract_id}/terminate`` revokes
balance        ``GET /v3/merchant/fund/balance/BASIC``
statement      ``GET /v3/bill/tradebill`` (ALL, GZIP) for the ``download_url`` and
               its SHA-1, then a signed GET of that URL streams the gzip to
               disk (:mod:`channels.wechatpay.statement`); payouts are not on
               that bill
=============  ==============================================================

Every response (2xx and error answers alike) must carry a valid platform
signature; one that does not is treated as unknown (PENDING). The one
exception is HTTP 401: v3 executes no request whose signature it cannot
verify ("没有携带签名或者签名验证不通过的请求,都不会被执行,并返回401
Unauthorized") and signs answers only to requests it could verify, so a 401,
signed or not, is FAILED ``CREDENTIALS_REJECTED``: safe elsewhere, and flagged
``credentials_rejected`` for the gateway, which stops routing to the channel.
A connection that fails before sending is FAILED ``CONNECTION_FAILED`` and
safe elsewhere; a timeout or a 5xx is PENDING; unmapped codes are PENDING
``UNMAPPED``.

The signature covers the request line exactly as it goes on the wire: the
URL is built once, percent-encoded (order numbers may hold ``*``, ``@``,
``|``), sent as is (``encoded=True``, so the HTTP client re-quotes nothing),
and its ``raw_path_qs`` is what is signed.

Callbacks: ``TRANSACTION.*`` and ``REFUND.*`` carry the order's result. A
payout is a batch, and WeChat Pay calls back per batch
(``MCHTRANSFER.BATCH.FINISHED`` / ``.CLOSED``: ``out_batch_no``, ``batch_id``,
``batch_status``, counts and amounts), never per transfer; such a notice is
PENDING (it says the batch ended, not how its transfer did), which makes the
gateway query the transfer at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from http import HTTPStatus
from typing import Annotated, Any
from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import AfterValidator
from yarl import URL

from channels import settings as setting
from channels.config import TABLE, ConfigError, Seconds, Secret
from channels.contract import (
    AgreementConfirmed,
    Balance,
    CallbackNotice,
    CallbackRejected,
    ChannelRejected,
    ChannelUnavailable,
    HttpReply,
    Operation,
    OrderRef,
    Outcome,
    OutcomeStatus,
    PayoutOrder,
    RefundOrder,
    SignRequest,
    SignStarted,
    WithholdOrder,
    constant_time_equal,
    pending,
    refused_request,
)
from channels.http import ChannelHttp, HttpChannel, Lost, NoAnswer, Response, StatementDownload, Unsent, without_query
from channels.registry import ChannelSpec
from channels.settings import BaseUrl, Text
from channels.statement import StatementError, StatementFile, StatementUnavailable
from channels.wechatpay import statement, wire

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.mch.weixin.qq.com"
CURRENCY = "CNY"
_NOT_FOUND = frozenset({"ORDER_NOT_EXIST", "ORDERNOTEXIST", "RESOURCE_NOT_EXISTS", "NOT_FOUND"})
# The bill is not generated yet (or the day has none), or WeChat Pay is busy: apply again later.
_BILL_NOT_READY = frozenset({"NO_STATEMENT_EXIST", "STATEMENT_CREATING", "FREQUENCY_LIMITED", "SYSTEM_ERROR"})


def _apiv3_key(key: Secret) -> Secret:
    if len(key.reveal().encode("utf-8")) != 32:
        raise ValueError("must be exactly 32 bytes")
    return key


@dataclass(frozen=True)
class WeChatPayTable:
    """The ``[channels.settings]`` of a WeChat Pay channel: its keys, types and defaults (:mod:`channels.config`)."""

    __pydantic_config__ = TABLE

    mchid: Text
    appid: Text
    merchant_serial_no: Text
    apiv3_key: Annotated[Secret, AfterValidator(_apiv3_key)]
    # the merchant's private key (apiclient_key.pem): inline, or in a file (exactly one)
    private_key: Secret | None = None
    private_key_path: str | None = None
    # the platform's verification key: a platform public key (inline or file) with its id, or a
    # platform certificate (inline or file)
    platform_public_key: str | None = None
    platform_public_key_path: str | None = None
    platform_public_key_id: Text | None = None
    platform_certificate: str | None = None
    platform_certificate_path: str | None = None
    base_url: BaseUrl = DEFAULT_BASE_URL
    notify_url: str = ""  # default notify URL; each order normally brings its own
    plan_id: str = ""  # the papay template
    connect_timeout_s: Seconds = 3.0
    timeout_s: Seconds = 10.0  # whole-call budget, longer than connect_timeout_s
    statement_timeout_s: Seconds = 300.0  # applying for and downloading one day's bill

    def check_config(self, key: str) -> None:
        setting.check_timeouts(key, self.connect_timeout_s, self.timeout_s)


@dataclass(frozen=True)
class WeChatPaySettings:
    """What the adapter runs with: a :class:`WeChatPayTable` with its keys loaded. Keys never appear in ``repr``."""

    mchid: str
    appid: str
    merchant_serial_no: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    apiv3_key: bytes = field(repr=False)
    platform_serial: str
    platform_key: rsa.RSAPublicKey | None = field(repr=False)
    base_url: str
    notify_url: str
    plan_id: str
    connect_timeout: float
    timeout: float
    statement_timeout: float


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def code(self) -> str:
        return str(self.body.get("code", ""))

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))


class WeChatPayChannel(HttpChannel):
    """One WeChat Pay merchant (``mchid``) as a paygate channel. See the module docstring."""

    def __init__(self, channel_id: str, settings: WeChatPaySettings) -> None:
        http = ChannelHttp(connect_timeout_s=settings.connect_timeout, timeout_s=settings.timeout)
        super().__init__(channel_id, http, currencies=frozenset({CURRENCY}))
        self._settings = settings
        self._platform_keys = {settings.platform_serial: settings.platform_key} if settings.platform_key else {}

    def __repr__(self) -> str:
        return f"WeChatPayChannel({self._channel_id!r}, mchid={self._settings.mchid!r})"

    # --- transport -------------------------------------------------------------

    async def _request(
        self, method: str, url: str, payload: Mapping[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> _Answer | NoAnswer:
        """One signed request; returns a verified answer, or why there is none.

        A 5xx or an answer that does not verify is :class:`~channels.http.Lost`: the result is unknown.
        ``timeout_s`` replaces the call budget (applying for a large bill takes longer than an order).
        """
        await self._http.start()
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")) if payload is not None else ""
        s = self._settings
        # ``url`` is already percent-encoded; sent as is, so the signed bytes are the bytes on the wire
        target = URL(s.base_url + url, encoded=True)
        headers = {
            "Authorization": wire.build_authorization(
                method, target.raw_path_qs, body, mchid=s.mchid, serial_no=s.merchant_serial_no, key=s.private_key
            ),
            "Accept": "application/json",
            "Content-Type": "application/json",
            "Wechatpay-Serial": s.platform_serial,
        }
        response = await self._http.send(
            method, target, data=body.encode("utf-8"), headers=headers, timeout_s=timeout_s
        )
        if not isinstance(response, Response):
            return response
        if response.status >= 500:
            return Lost("HTTP_5XX", f"HTTP {response.status}")
        text = response.body.decode("utf-8", errors="replace")
        if response.status == HTTPStatus.UNAUTHORIZED:
            # refused before processing, and answered unsigned: the platform could not verify us
            return _Answer(response.status, _json_object(text))
        problem = wire.verify_message(response.headers, text, self._platform_keys)
        if problem is not None:
            return Lost("UNVERIFIED_RESPONSE", problem)
        try:
            decoded = json.loads(text) if text else {}
        except ValueError:
            return Lost("UNVERIFIED_RESPONSE", "body is not JSON")
        if not isinstance(decoded, dict):
            return Lost("UNVERIFIED_RESPONSE", "body is not an object")
        return _Answer(response.status, decoded)

    async def _order_request(
        self, method: str, url: str, payload: Mapping[str, Any] | None = None
    ) -> _Answer | Outcome:
        """Like _request, but no answer becomes the Outcome invariant 3 demands (logged without bodies)."""
        answer = await self._request(method, url, payload)
        if isinstance(answer, Unsent | Lost):
            log.warning("wechatpay %s %s %s: %s", self._channel_id, method, url, answer)
            return answer.outcome()
        log.info("wechatpay %s %s %s -> %s %s", self._channel_id, method, url, answer.status, answer.code)
        return answer

    async def _admin_request(self, method: str, url: str, payload: Mapping[str, Any] | None = None) -> _Answer:
        answer = await self._request(method, url, payload)
        if isinstance(answer, Unsent | Lost):
            raise ChannelUnavailable(self._channel_id, f"{method} {url}: {answer}")
        if not answer.ok:
            outcome = self._failure(answer)
            raise ChannelRejected(
                self._channel_id,
                outcome.raw_code,
                answer.message,
                payer_attributable=outcome.payer_attributable,
                credentials_rejected=outcome.credentials_rejected,
            )
        return answer

    @staticmethod
    def _failure(answer: _Answer) -> Outcome:
        if answer.status == HTTPStatus.UNAUTHORIZED:
            return wire.credentials_refusal(answer.code or "HTTP_401", answer.message)
        if answer.code in _NOT_FOUND:
            return pending("NOT_FOUND", answer.code, answer.message, not_found=True)
        return wire.CODES.outcome(answer.code, answer.message)

    def _notify_url(self, order_notify_url: str) -> str:
        return order_notify_url or self._settings.notify_url

    def _encrypt(self, text: str) -> str:
        if self._settings.platform_key is None:
            raise ConfigError("platform_public_key", "needed to encrypt sensitive fields")
        return wire.encrypt_field(self._settings.platform_key, text)

    # --- orders ----------------------------------------------------------------

    async def withhold(self, order: WithholdOrder) -> Outcome:
        if (bad := self._unsupported_currency(order.currency)) is not None:
            return bad
        payload = {
            "appid": self._settings.appid,
            "out_trade_no": order.channel_order_no,
            "description": order.description or "repayment",
            "transaction_notify_url": self._notify_url(order.notify_url),
            "contract_id": order.agreement_ref,
            "amount": {"total": order.amount, "currency": CURRENCY},
        }
        answer = await self._order_request("POST", "/v3/papay/pay/transactions/apply", payload)
        if isinstance(answer, Outcome):
            return answer
        if not answer.ok:
            return self._failure(answer)
        # Accepted: the deduction runs asynchronously. One query tells whether it already ended.
        return await self._query_trade(order.channel_order_no, accepted=True)

    async def _query_trade(self, out_trade_no: str, *, accepted: bool = False) -> Outcome:
        url = f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}?mchid={self._settings.mchid}"
        answer = await self._order_request("GET", url)
        if isinstance(answer, Outcome):
            # After an accepted apply nothing about the deduction is "safe elsewhere".
            return pending("ACCEPTED", raw_message=answer.raw_message) if accepted else refused_request(answer)
        if not answer.ok:
            return (
                pending("ACCEPTED", answer.code, answer.message) if accepted else refused_request(self._failure(answer))
            )
        amount = answer.body.get("amount")
        total = amount.get("total") if isinstance(amount, dict) else None
        return wire.TRADE_STATE.outcome(
            str(answer.body.get("trade_state", "")),
            str(answer.body.get("trade_state_desc", "")),
            channel_txn_id=str(answer.body.get("transaction_id", "")),
            amount=total if isinstance(total, int) else None,
        )

    async def payout(self, order: PayoutOrder) -> Outcome:
        if (bad := self._unsupported_currency(order.currency)) is not None:
            return bad
        detail = {
            "out_detail_no": order.channel_order_no,
            "transfer_amount": order.amount,
            "transfer_remark": order.description or "disbursement",
            "openid": order.account_no,
            "user_name": self._encrypt(order.account_name),
        }
        payload = {
            "appid": self._settings.appid,
            "out_batch_no": order.channel_order_no,
            "batch_name": order.description or "disbursement",
            "batch_remark": order.description or "disbursement",
            "total_amount": order.amount,
            "total_num": 1,
            "transfer_detail_list": [detail],
            "notify_url": self._notify_url(order.notify_url),
        }
        answer = await self._order_request("POST", "/v3/transfer/batches", payload)
        if isinstance(answer, Outcome):
            return answer
        if not answer.ok:
            return self._failure(answer)
        outcome = await self._query_transfer(order.channel_order_no)
        return outcome if outcome.definite else pending("ACCEPTED", outcome.raw_code, outcome.raw_message)

    async def _query_transfer(self, order_no: str) -> Outcome:
        no = quote(order_no, safe="")
        answer = await self._order_request("GET", f"/v3/transfer/batches/out-batch-no/{no}/details/out-detail-no/{no}")
        # a refused query says nothing about the transfer (also right after sending one: never "safe elsewhere")
        if isinstance(answer, Outcome):
            return refused_request(answer)
        if not answer.ok:
            return refused_request(self._failure(answer))
        body = answer.body
        amount = body.get("transfer_amount")
        status, reason = str(body.get("detail_status", "")), str(body.get("fail_reason", ""))
        channel_txn_id = str(body.get("detail_id", ""))
        amount_fen = amount if isinstance(amount, int) else None
        if status == "FAIL" and reason in wire.TRANSFER_FAIL_REASONS:
            return wire.TRANSFER_FAIL_REASONS.outcome(reason, channel_txn_id=channel_txn_id, amount=amount_fen)
        return wire.TRANSFER_STATUS.outcome(status, reason, channel_txn_id=channel_txn_id, amount=amount_fen)

    async def refund(self, order: RefundOrder) -> Outcome:
        if (bad := self._unsupported_currency(order.currency)) is not None:
            return bad
        payload: dict[str, Any] = {
            "out_refund_no": order.channel_order_no,
            "reason": order.reason,
            "notify_url": self._notify_url(order.notify_url),
            "amount": {"refund": order.amount, "total": order.original_amount, "currency": CURRENCY},
        }
        if order.original_channel_txn_id:
            payload["transaction_id"] = order.original_channel_txn_id
        else:
            payload["out_trade_no"] = order.original_channel_order_no
        answer = await self._order_request("POST", "/v3/refund/domestic/refunds", payload)
        if isinstance(answer, Outcome):
            return answer
        if not answer.ok:
            return self._failure(answer)
        return self._refund_outcome(answer.body)

    @staticmethod
    def _refund_outcome(body: Mapping[str, Any]) -> Outcome:
        amount = body.get("amount")
        refund = amount.get("refund") if isinstance(amount, dict) else None
        return wire.REFUND_STATUS.outcome(
            str(body.get("status", "")),
            channel_txn_id=str(body.get("refund_id", "")),
            amount=refund if isinstance(refund, int) else None,
        )

    async def query(self, ref: OrderRef) -> Outcome:
        if ref.operation is Operation.WITHHOLD:
            return await self._query_trade(ref.channel_order_no)
        if ref.operation is Operation.PAYOUT:
            return await self._query_transfer(ref.channel_order_no)
        if ref.operation is Operation.REFUND:
            answer = await self._order_request(
                "GET", f"/v3/refund/domestic/refunds/{quote(ref.channel_order_no, safe='')}"
            )
            if isinstance(answer, Outcome):
                return refused_request(answer)
            return self._refund_outcome(answer.body) if answer.ok else refused_request(self._failure(answer))
        raise ValueError(f"{ref.operation} orders cannot be queried")

    async def close_order(self, ref: OrderRef) -> Outcome:
        if ref.operation is not Operation.WITHHOLD:
            return await self.query(ref)
        url = f"/v3/pay/transactions/out-trade-no/{quote(ref.channel_order_no, safe='')}/close"
        answer = await self._order_request("POST", url, {"mchid": self._settings.mchid})
        if isinstance(answer, Outcome):
            return refused_request(answer)
        if answer.ok:
            # Closed unpaid: nothing was charged, and nothing can be any more.
            return Outcome(OutcomeStatus.FAILED, "ORDER_CLOSED", raw_code=str(answer.status), safe_elsewhere=True)
        if answer.code in ("ORDERPAID", "TRADE_ERROR", "ORDER_CLOSED", "INVALID_REQUEST"):
            return await self._query_trade(ref.channel_order_no)  # it ended already: report how
        return refused_request(self._failure(answer))

    # --- agreements and balance -------------------------------------------------

    async def sign_agreement(self, request: SignRequest) -> SignStarted:
        payload = {
            "appid": self._settings.appid,
            "plan_id": self._settings.plan_id,
            "out_contract_code": request.sign_order_no,
            "contract_display_account": "*" * 3 + request.account_no[-4:],
            "notify_url": self._settings.notify_url,
            "user_info": {
                "name": self._encrypt(request.holder_name),
                "id_no": self._encrypt(request.id_no),
                "phone": self._encrypt(request.phone),
                "bank_account": self._encrypt(request.account_no),
                "bank_type": request.bank_code,
            },
        }
        answer = await self._admin_request("POST", "/v3/papay/contracts/pre-entrust-sign", payload)
        sign_ref = str(answer.body.get("pre_entrustweb_id", ""))
        if not sign_ref:
            raise ChannelRejected(self._channel_id, "NO_SIGN_REF", "pre-entrust-sign answered without an id")
        return SignStarted(sign_ref=sign_ref)

    async def confirm_agreement(self, sign_ref: str, sms_code: str) -> AgreementConfirmed:
        url = f"/v3/papay/contracts/pre-entrust-sign/{quote(sign_ref, safe='')}/confirm"
        answer = await self._admin_request("POST", url, {"appid": self._settings.appid, "sms_code": sms_code})
        contract_id = str(answer.body.get("contract_id", ""))
        if not contract_id or answer.body.get("contract_state") != "SIGNED":
            raise ChannelRejected(self._channel_id, "NOT_SIGNED", "confirm answered without a signed contract")
        return AgreementConfirmed(agreement_ref=contract_id)

    async def revoke_agreement(self, agreement_ref: str) -> None:
        url = f"/v3/papay/contracts/{quote(agreement_ref, safe='')}/terminate"
        payload = {
            "appid": self._settings.appid,
            "plan_id": self._settings.plan_id,
            "contract_termination_remark": "revoked",
        }
        await self._admin_request("POST", url, payload)

    async def balance(self) -> Balance:
        answer = await self._admin_request("GET", "/v3/merchant/fund/balance/BASIC")
        available = answer.body.get("available_amount")
        if not isinstance(available, int) or isinstance(available, bool):
            raise ChannelUnavailable(self._channel_id, "balance answer without an integer available_amount")
        return Balance(available=available, currency=CURRENCY)

    # --- statements ------------------------------------------------------------

    async def fetch_statement(self, day: date, dest_dir: str) -> StatementFile:
        """The ALL trade bill of ``day``: apply for it, stream the gzip, check its SHA-1 against the answer's."""
        apply = f"/v3/bill/tradebill?bill_date={day.isoformat()}&bill_type=ALL&tar_type=GZIP"
        answer = await self._request("GET", apply, timeout_s=self._settings.statement_timeout)
        what = f"{self._channel_id}: bill of {day}"
        if isinstance(answer, Unsent | Lost):
            raise StatementUnavailable(f"{what}: {answer}")
        if not answer.ok:
            problem = f"{what}: HTTP {answer.status} {answer.code} {answer.message}"
            raise StatementUnavailable(problem) if answer.code in _BILL_NOT_READY else StatementError(problem)
        hash_type, hash_value = str(answer.body.get("hash_type", "")), str(answer.body.get("hash_value", ""))
        download_url = URL(str(answer.body.get("download_url", "")), encoded=True)
        if hash_type.upper() != "SHA1" or not hash_value:
            raise StatementError(f"{what}: hash_type {hash_type!r} is not SHA1, or no hash_value")
        if download_url.origin() != URL(self._settings.base_url).origin():
            # The download is signed with our key: never send that anywhere but WeChat Pay.
            raise StatementError(f"{what}: download_url is not on {self._settings.base_url}")
        signed_url = download_url.raw_path_qs
        s = self._settings
        headers = {
            "Authorization": wire.build_authorization(
                "GET", signed_url, "", mchid=s.mchid, serial_no=s.merchant_serial_no, key=s.private_key
            ),
            "Accept": "application/json",
        }
        download = StatementDownload(
            self._http,
            self._channel_id,
            day,
            dest_dir,
            format=statement.FORMAT.name,
            suffix=".csv.gz",
            timeout_s=s.statement_timeout,
        )
        async with download:
            got = await download.fetch("GET", download_url, headers=headers, digests=("sha1",))
            if isinstance(got, Unsent | Lost):
                raise StatementUnavailable(f"{what}: download {got}")
            if isinstance(got, Response):
                # An expired URL or a busy server: applying again gives a new one.
                raise StatementUnavailable(f"{what}: download answered HTTP {got.status}")
            if not constant_time_equal(got.digests["sha1"], hash_value.lower()):
                raise StatementError(f"{what}: the file's SHA-1 does not match hash_value (tampered or truncated)")
            return await download.keep(got, source=without_query(download_url))

    # --- callbacks -------------------------------------------------------------

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackNotice:
        """Verify the platform signature, decrypt the resource with the APIv3 key, check ``mchid``.

        Raises CallbackRejected. The amount is returned for the gateway's cross-check.
        """
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CallbackRejected(self._channel_id, "format: not UTF-8") from exc
        problem = wire.verify_message(headers, text, self._platform_keys)
        if problem is not None:  # signature, serial or timestamp: authentication failed
            raise CallbackRejected(self._channel_id, problem, bad_signature=True)
        try:
            envelope = json.loads(text)
            encrypted = envelope["resource"]
            if envelope.get("resource_type") != "encrypt-resource" or encrypted.get("algorithm") != wire.AES_ALGORITHM:
                raise ValueError("not an AEAD_AES_256_GCM resource")
            plain = wire.decrypt_resource(
                self._settings.apiv3_key,
                str(encrypted["nonce"]),
                str(encrypted.get("associated_data", "")),
                str(encrypted["ciphertext"]),
            )
            resource = json.loads(plain)
            if not isinstance(resource, dict):
                raise ValueError("resource is not an object")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CallbackRejected(self._channel_id, f"format: {exc}") from exc
        order_no = str(
            resource.get("out_refund_no") or resource.get("out_batch_no") or resource.get("out_trade_no") or ""
        )
        if resource.get("mchid", self._settings.mchid) != self._settings.mchid:
            raise CallbackRejected(self._channel_id, "mchid mismatch", channel_order_no=order_no)
        if not order_no:
            raise CallbackRejected(self._channel_id, "format: no order number")
        try:
            return self._notice(order_no, resource)
        except (ValueError, KeyError, TypeError) as exc:
            raise CallbackRejected(self._channel_id, f"format: {exc}", channel_order_no=order_no) from exc

    @staticmethod
    def _notice(order_no: str, resource: Mapping[str, Any]) -> CallbackNotice:
        if "out_refund_no" in resource:
            amount = int(resource["amount"]["refund"])
            status = str(resource.get("refund_status") or resource.get("status") or "")
            outcome = wire.REFUND_STATUS.outcome(
                status, channel_txn_id=str(resource.get("refund_id", "")), amount=amount
            )
            return CallbackNotice(order_no, Operation.REFUND, outcome, amount)
        if "out_batch_no" in resource:
            # MCHTRANSFER.BATCH.FINISHED / CLOSED: the batch ended; how its transfer did, the detail query tells
            amount = int(resource["total_amount"])
            status = str(resource["batch_status"])
            batch = pending(f"BATCH_{status}", status, str(resource.get("close_reason", "")))
            return CallbackNotice(order_no, Operation.PAYOUT, batch, amount)
        amount = int(resource["amount"]["total"])
        outcome = wire.TRADE_STATE.outcome(
            str(resource["trade_state"]), channel_txn_id=str(resource.get("transaction_id", "")), amount=amount
        )
        return CallbackNotice(order_no, Operation.WITHHOLD, outcome, amount)

    def callback_reply(self, accepted: bool) -> HttpReply:
        """v3 protocol: 204 with no body to acknowledge; 4xx with ``{"code":"FAIL",...}`` to ask for a retry."""
        if accepted:
            return HttpReply(204, b"")
        body = json.dumps({"code": "FAIL", "message": "verification failed"}).encode()
        return HttpReply(400, body, content_type="application/json")


def _json_object(text: str) -> dict[str, Any]:
    """An answer body as a JSON object, or ``{}`` when it is not one (an unsigned 401 may be anything)."""
    try:
        decoded = json.loads(text) if text else {}
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


# --- configuration ---------------------------------------------------------------


def _platform(table: WeChatPayTable, key: str) -> tuple[str, rsa.RSAPublicKey]:
    """The platform verification key: a platform public key with its id, or a platform certificate."""
    cert = setting.optional_key_material(table, "platform_certificate", key)
    public = setting.optional_key_material(table, "platform_public_key", key)
    if bool(cert) == bool(public):
        raise ConfigError(
            f"{key}.platform_public_key", "give exactly one of platform_public_key(+_id) or platform_certificate"
        )
    if cert:
        try:
            return wire.load_certificate(cert[1])
        except (ValueError, TypeError):
            raise ConfigError(f"{key}.{cert[0]}", "not a PEM X.509 certificate with an RSA key") from None
    assert public is not None
    try:
        public_key = wire.load_public_key(public[1])
    except (ValueError, TypeError):
        raise ConfigError(f"{key}.{public[0]}", "not a PEM RSA public key") from None
    if table.platform_public_key_id is None:
        raise ConfigError(f"{key}.platform_public_key_id", "required, a non-empty string")
    return table.platform_public_key_id, public_key


def build(spec: ChannelSpec) -> WeChatPayChannel:
    """Build a WeChat Pay channel from ``spec.settings`` (:class:`WeChatPayTable`).

    Raises ConfigError naming the bad key.
    """
    table = spec.read(WeChatPayTable)
    used, text = setting.key_material(table, "private_key", spec.key)
    try:
        private_key = wire.load_private_key(text)
    except (ValueError, TypeError):
        raise ConfigError(f"{spec.key}.{used}", "not a PEM RSA private key") from None
    platform_serial, platform_key = _platform(table, spec.key)
    settings = WeChatPaySettings(
        mchid=table.mchid,
        appid=table.appid,
        merchant_serial_no=table.merchant_serial_no,
        private_key=private_key,
        apiv3_key=table.apiv3_key.reveal().encode("utf-8"),
        platform_serial=platform_serial,
        platform_key=platform_key,
        base_url=table.base_url,
        notify_url=table.notify_url,
        plan_id=table.plan_id,
        connect_timeout=table.connect_timeout_s,
        timeout=table.timeout_s,
        statement_timeout=table.statement_timeout_s,
    )
    return WeChatPayChannel(spec.channel_id, settings)
