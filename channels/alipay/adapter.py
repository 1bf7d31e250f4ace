"""Alipay Open Platform adapter (gateway ``gateway.do``, RSA2 signatures).

Operations and the Alipay methods behind them:

=============  ==============================================================
withhold       ``alipay.trade.pay`` with ``agreement_params.agreement_no``
               (``product_code`` GENERAL_WITHHOLDING): the signed agreement is
               the withholding authorization
payout         ``alipay.fund.trans.uni.transfer`` (to a bank card when
               ``bank_code`` names a bank, to an Alipay account when it is
               ``ALIPAY``)
refund         ``alipay.trade.refund`` (``out_request_no`` = our order number);
               money moved only when the answer says ``fund_change = Y``,
               otherwise the refund query tells
query          ``alipay.trade.query`` / ``alipay.fund.trans.common.query``
               (by ``out_biz_no``, with the transfer's ``product_code`` and
               ``biz_scene``, which the API requires then) /
               ``alipay.trade.fastpay.refund.query``
close_order    ``alipay.trade.close`` (withhold); transfers and refunds cannot
               be closed, so their real state is queried instead
agreements     ``alipay.user.agreement.page.sign`` adapted to sign/confirm:
               sign starts the signing, ``alipay.user.agreement.sign.confirm``
               (our adaptation, see docs/ADDING_A_CHANNEL.md) completes it with
               the SMS code; ``alipay.user.agreement.unsign`` revokes
balance        ``alipay.fund.account.query`` (needs the ``alipay_user_id``
               setting: the merchant's own 2088... user id)
statement      ``alipay.data.dataservice.bill.downloadurl.query`` (``bill_type``
               ``trade``) for the short-lived ``bill_download_url``, then the
               zip is streamed to disk (:mod:`channels.alipay.statement`);
               payouts are not on that bill
=============  ==============================================================

A bank-card payout names the bank by its institution name
(``bankcard_ext_info.inst_name``): :data:`channels.alipay.wire.INSTITUTION_NAMES`
maps paygate bank codes to names, extended or overridden by the
``institution_names`` setting; a bank with no name is refused before sending.

Error semantics (DESIGN.md invariant 3): a connection that fails before the
request is sent is FAILED ``CONNECTION_FAILED`` and safe elsewhere; a timeout,
an HTTP error or an answer whose signature does not verify is PENDING; codes
missing from :data:`channels.alipay.wire.CODES` are PENDING ``UNMAPPED``. The
gateway's refusals of our credentials (``isv.invalid-signature``,
``isv.invalid-app-id``, ...) are FAILED ``CREDENTIALS_REJECTED`` with
``credentials_rejected`` set, also when they come back unsigned.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import parse_qsl

from cryptography.hazmat.primitives.asymmetric import rsa
from yarl import URL

from channels import settings as setting
from channels.alipay import statement, wire
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
    pending,
    refused_request,
    succeeded,
)
from channels.http import ChannelHttp, HttpChannel, Lost, NoAnswer, Response, StatementDownload, Unsent, without_query
from channels.registry import ChannelSpec
from channels.settings import HttpUrl, Text
from channels.statement import StatementError, StatementFile, StatementUnavailable

log = logging.getLogger(__name__)

DEFAULT_GATEWAY = "https://openapi.alipay.com/gateway.do"
CURRENCY = "CNY"
ALIPAY_ACCOUNT_BANK = "ALIPAY"  # PayoutOrder.bank_code for a transfer to an Alipay account
TRANSFER_SCENE = "DIRECT_TRANSFER"
_NOT_FOUND = frozenset({"ACQ.TRADE_NOT_EXIST", "ORDER_NOT_EXIST"})
_REFUND_ORIGINS_KEPT = 10_000
BILL_METHOD = "alipay.data.dataservice.bill.downloadurl.query"
# The bill is not there yet (or this day has none): ask again later.
_BILL_NOT_READY = frozenset({"isp.bill_not_exist", "BILL_NOT_EXIST", "NO_BILL_DATA", "isv.app-call-limited"})


@dataclass(frozen=True)
class AlipayTable:
    """The ``[channels.settings]`` of an Alipay channel: its keys, types and defaults (:mod:`channels.config`)."""

    __pydantic_config__ = TABLE

    app_id: Text
    # merchant RSA2 private key, PEM or bare base64: inline, or in a file (exactly one)
    app_private_key: Secret | None = None
    app_private_key_path: str | None = None
    # Alipay's public key, PEM or bare base64: inline, or in a file (exactly one)
    alipay_public_key: str | None = None
    alipay_public_key_path: str | None = None
    gateway_url: HttpUrl = DEFAULT_GATEWAY
    notify_url: str = ""  # default notify URL; each order normally brings its own
    connect_timeout_s: Seconds = 3.0
    timeout_s: Seconds = 15.0  # whole-call budget, longer than connect_timeout_s
    statement_timeout_s: Seconds = 300.0  # downloading one day's bill
    withhold_product_code: Text = "GENERAL_WITHHOLDING"
    personal_product_code: Text = "GENERAL_WITHHOLDING_P"
    sign_scene: Text = "DEFAULT|DEFAULT"
    alipay_user_id: str = ""
    # bank code -> the institution's name Alipay expects in bankcard_ext_info.inst_name, over the built-in table
    institution_names: Mapping[str, str] = field(default_factory=dict)

    def check_config(self, key: str) -> None:
        setting.check_timeouts(key, self.connect_timeout_s, self.timeout_s)
        if not all(code and name.strip() for code, name in self.institution_names.items()):
            raise ConfigError(f"{key}.institution_names", "must map bank codes to institution names")


@dataclass(frozen=True)
class AlipaySettings:
    """What the adapter runs with: an :class:`AlipayTable` with its keys loaded. Keys never appear in ``repr``."""

    app_id: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    alipay_public_key: rsa.RSAPublicKey = field(repr=False)
    gateway_url: str
    notify_url: str
    connect_timeout: float
    timeout: float
    withhold_product_code: str
    personal_product_code: str
    sign_scene: str
    alipay_user_id: str
    statement_timeout: float
    institution_names: Mapping[str, str] = field(default_factory=lambda: dict(wire.INSTITUTION_NAMES))


class AlipayChannel(HttpChannel):
    """One Alipay app (``app_id``) as a paygate channel. See the module docstring."""

    def __init__(self, channel_id: str, settings: AlipaySettings) -> None:
        http = ChannelHttp(connect_timeout_s=settings.connect_timeout, timeout_s=settings.timeout)
        super().__init__(channel_id, http, currencies=frozenset({CURRENCY}))
        self._settings = settings
        # refund number -> original out_trade_no: Alipay's refund query needs both, OrderRef has one.
        self._refund_origins: OrderedDict[str, str] = OrderedDict()

    def __repr__(self) -> str:
        return f"AlipayChannel({self._channel_id!r}, app_id={self._settings.app_id!r})"

    # --- transport -------------------------------------------------------------

    async def _call(self, method: str, biz: Mapping[str, Any], *, notify_url: str = "") -> dict[str, Any] | NoAnswer:
        """Send one signed request; return the verified ``<method>_response`` object, or why there is none.

        An HTTP error or an answer that does not verify is :class:`~channels.http.Lost`: the result is unknown.
        """
        await self._http.start()
        params = wire.common_params(self._settings.app_id, method, biz, notify_url=notify_url)
        signed = wire.sign_request(params, self._settings.private_key)
        response = await self._http.send("POST", self._settings.gateway_url, data=signed)
        if not isinstance(response, Response):
            return response
        if response.status >= 400:
            return Lost(f"HTTP_{response.status // 100}XX", f"HTTP {response.status}")
        text = response.body.decode(wire.CHARSET, errors="replace")
        try:
            return wire.parse_response(text, method, self._settings.alipay_public_key)
        except wire.ResponseError as exc:
            refusal = wire.unsigned_refusal(text, method)
            return refusal if refusal is not None else Lost("UNVERIFIED_RESPONSE", str(exc))

    async def _order_call(
        self, method: str, biz: Mapping[str, Any], *, notify_url: str = ""
    ) -> dict[str, Any] | Outcome:
        """Like _call, but no answer becomes the Outcome invariant 3 demands.

        Logs the method, our order number and the channel's raw code (never biz_content: it holds card numbers).
        """
        order_no = str(biz.get("out_trade_no") or biz.get("out_biz_no") or "")
        body = await self._call(method, biz, notify_url=notify_url)
        if isinstance(body, Unsent | Lost):
            log.warning("alipay %s %s order=%s: %s", self._channel_id, method, order_no, body)
            return body.outcome()
        log.info("alipay %s %s order=%s -> %s", self._channel_id, method, order_no, wire.raw_code(body))
        return body

    async def _success_call(
        self, method: str, biz: Mapping[str, Any], *, notify_url: str = ""
    ) -> dict[str, Any] | Outcome:
        """Like _order_call, but any answer other than ``10000`` is already mapped to its Outcome."""
        body = await self._order_call(method, biz, notify_url=notify_url)
        if isinstance(body, Outcome) or body.get("code") == wire.SUCCESS_CODE:
            return body
        return self._failure(body)

    async def _admin_call(self, method: str, biz: Mapping[str, Any]) -> dict[str, Any]:
        """For non-order calls: raise ChannelUnavailable / ChannelRejected instead of an Outcome."""
        body = await self._call(method, biz)
        if isinstance(body, Unsent | Lost):
            raise ChannelUnavailable(self._channel_id, f"{method}: {body}")
        if body.get("code") != wire.SUCCESS_CODE:
            rule = wire.CODES.rule(wire.raw_code(body))
            raise ChannelRejected(
                self._channel_id,
                wire.raw_code(body),
                wire.raw_message(body),
                payer_attributable=bool(rule and rule.payer_attributable),
                credentials_rejected=bool(rule and rule.credentials_rejected),
            )
        return body

    def _notify_url(self, order_notify_url: str) -> str:
        return order_notify_url or self._settings.notify_url

    @staticmethod
    def _failure(body: Mapping[str, Any]) -> Outcome:
        code = wire.raw_code(body)
        if code in _NOT_FOUND:
            return pending("NOT_FOUND", code, wire.raw_message(body), not_found=True)
        return wire.CODES.outcome(code, wire.raw_message(body))

    # --- orders ----------------------------------------------------------------

    async def withhold(self, order: WithholdOrder) -> Outcome:
        if (bad := self._unsupported_currency(order.currency)) is not None:
            return bad
        biz = {
            "out_trade_no": order.channel_order_no,
            "total_amount": wire.fen_to_yuan(order.amount),
            "subject": order.description or "repayment",
            "product_code": self._settings.withhold_product_code,
            "agreement_params": {"agreement_no": order.agreement_ref},
        }
        body = await self._success_call("alipay.trade.pay", biz, notify_url=self._notify_url(order.notify_url))
        if isinstance(body, Outcome):
            return body
        # 10000 on trade.pay means paid; trade_status is only in query answers and notifies.
        return succeeded(
            wire.SUCCESS_CODE,
            channel_txn_id=str(body.get("trade_no", "")),
            amount=_fen_or_none(body.get("total_amount")),
        )

    async def payout(self, order: PayoutOrder) -> Outcome:
        if (bad := self._unsupported_currency(order.currency)) is not None:
            return bad
        to_account = order.bank_code.upper() == ALIPAY_ACCOUNT_BANK
        payee: dict[str, Any] = {
            "identity": order.account_no,
            "identity_type": "ALIPAY_LOGON_ID" if to_account else "BANKCARD_ACCOUNT",
            "name": order.account_name,
        }
        if not to_account:
            inst_name = self._settings.institution_names.get(order.bank_code.upper())
            if not inst_name:
                # nothing sent: another channel may know the bank
                return Outcome(
                    OutcomeStatus.FAILED,
                    "BANK_NOT_SUPPORTED",
                    raw_message=f"no institution name for bank {order.bank_code!r} (setting institution_names)",
                    safe_elsewhere=True,
                )
            payee["bankcard_ext_info"] = {"account_type": "2", "inst_name": inst_name}
        biz = {
            "out_biz_no": order.channel_order_no,
            "trans_amount": wire.fen_to_yuan(order.amount),
            "product_code": _transfer_product(order.bank_code),
            "biz_scene": TRANSFER_SCENE,
            "order_title": order.description or "disbursement",
            "payee_info": payee,
        }
        body = await self._success_call(
            "alipay.fund.trans.uni.transfer", biz, notify_url=self._notify_url(order.notify_url)
        )
        if isinstance(body, Outcome):
            return body
        return self._transfer_outcome(body, amount=order.amount)

    async def refund(self, order: RefundOrder) -> Outcome:
        if (bad := self._unsupported_currency(order.currency)) is not None:
            return bad
        self._remember_refund(order.channel_order_no, order.original_channel_order_no)
        biz: dict[str, Any] = {
            "out_trade_no": order.original_channel_order_no,
            "refund_amount": wire.fen_to_yuan(order.amount),
            "out_request_no": order.channel_order_no,
            "refund_reason": order.reason,
        }
        if order.original_channel_txn_id:
            biz["trade_no"] = order.original_channel_txn_id
        body = await self._success_call("alipay.trade.refund", biz, notify_url=self._notify_url(order.notify_url))
        if isinstance(body, Outcome):
            return body
        if body.get("fund_change") != wire.FUND_CHANGED:
            # Accepted, but this call moved no money (in progress, or a repeat): the refund query decides.
            return pending("REFUND_ACCEPTED", wire.SUCCESS_CODE, f"fund_change={body.get('fund_change', '')}")
        return succeeded(wire.SUCCESS_CODE, channel_txn_id=str(body.get("trade_no", "")), amount=order.amount)

    async def query(self, ref: OrderRef) -> Outcome:
        if ref.operation is Operation.WITHHOLD:
            body = await self._success_call("alipay.trade.query", {"out_trade_no": ref.channel_order_no})
            if isinstance(body, Outcome):
                return refused_request(body)
            return wire.TRADE_STATUS.outcome(
                str(body.get("trade_status", "")),
                channel_txn_id=str(body.get("trade_no", "")),
                amount=_fen_or_none(body.get("total_amount")),
            )
        if ref.operation is Operation.PAYOUT:
            # by out_biz_no the API requires the transfer's product_code and biz_scene
            biz = {
                "out_biz_no": ref.channel_order_no,
                "product_code": _transfer_product(ref.bank_code),
                "biz_scene": TRANSFER_SCENE,
            }
            body = await self._success_call("alipay.fund.trans.common.query", biz)
            if isinstance(body, Outcome):
                return refused_request(body)
            return self._transfer_outcome(body, amount=_fen_or_none(body.get("trans_amount")))
        if ref.operation is Operation.REFUND:
            return await self._query_refund(ref)
        raise ValueError(f"{ref.operation} orders cannot be queried")

    async def _query_refund(self, ref: OrderRef) -> Outcome:
        origin = self._refund_origins.get(ref.channel_order_no) or ref.original_channel_order_no or None
        if origin is None:
            # Alipay finds a refund only by (out_trade_no, out_request_no).
            return pending("QUERY_NEEDS_ORIGINAL_ORDER", raw_message="original out_trade_no unknown to this process")
        biz = {"out_trade_no": origin, "out_request_no": ref.channel_order_no}
        body = await self._success_call("alipay.trade.fastpay.refund.query", biz)
        if isinstance(body, Outcome):
            return refused_request(body)
        status = str(body.get("refund_status", ""))
        if not status:
            # An empty 10000 answer is Alipay's "no such refund (yet)".
            return pending("NOT_FOUND", wire.SUCCESS_CODE, "no refund_status", not_found=True)
        return wire.REFUND_STATUS.outcome(status, amount=_fen_or_none(body.get("refund_amount")))

    async def close_order(self, ref: OrderRef) -> Outcome:
        if ref.operation is not Operation.WITHHOLD:
            return await self.query(ref)
        body = await self._order_call("alipay.trade.close", {"out_trade_no": ref.channel_order_no})
        if isinstance(body, Outcome):
            return refused_request(body)
        if body.get("code") == wire.SUCCESS_CODE:
            # Closed before it was ever paid: nothing was charged, and nothing can be any more.
            return Outcome(
                OutcomeStatus.FAILED,
                "ORDER_CLOSED",
                raw_code=wire.SUCCESS_CODE,
                channel_txn_id=str(body.get("trade_no", "")),
                safe_elsewhere=True,
            )
        if wire.raw_code(body) == "ACQ.TRADE_STATUS_ERROR":
            # Already paid or already closed: report what it really is.
            return await self.query(ref)
        return self._failure(body)

    def _transfer_outcome(self, body: Mapping[str, Any], *, amount: int | None) -> Outcome:
        status = str(body.get("status", ""))
        error_code = str(body.get("error_code") or body.get("sub_code") or "")
        rule = wire.CODES.rule(error_code) if error_code else None
        if status == "FAIL" and rule is not None and rule.status is OutcomeStatus.FAILED:
            return wire.CODES.outcome(error_code, str(body.get("fail_reason", "")), amount=amount)
        return wire.TRANSFER_STATUS.outcome(
            status,
            str(body.get("fail_reason", "")),
            channel_txn_id=str(body.get("order_id", "")),
            amount=amount,
        )

    def _remember_refund(self, refund_no: str, original_no: str) -> None:
        self._refund_origins[refund_no] = original_no
        self._refund_origins.move_to_end(refund_no)
        while len(self._refund_origins) > _REFUND_ORIGINS_KEPT:
            self._refund_origins.popitem(last=False)

    # --- agreements and balance -------------------------------------------------

    async def sign_agreement(self, request: SignRequest) -> SignStarted:
        biz = {
            "personal_product_code": self._settings.personal_product_code,
            "sign_scene": self._settings.sign_scene,
            "external_agreement_no": request.sign_order_no,
            "external_logon_id": request.phone,
            "access_params": {"channel": "ALIPAYAPP"},
            "identity_params": {
                "user_name": request.holder_name,
                "cert_no": request.id_no,
                "identity_type": "CERT_INFO",
                "bankcard_no": request.account_no,
            },
        }
        body = await self._admin_call("alipay.user.agreement.page.sign", biz)
        return SignStarted(sign_ref=str(body.get("external_agreement_no") or request.sign_order_no))

    async def confirm_agreement(self, sign_ref: str, sms_code: str) -> AgreementConfirmed:
        biz = {
            "personal_product_code": self._settings.personal_product_code,
            "external_agreement_no": sign_ref,
            "verify_code": sms_code,
        }
        body = await self._admin_call("alipay.user.agreement.sign.confirm", biz)
        agreement_no = str(body.get("agreement_no", ""))
        if not agreement_no:
            raise ChannelRejected(self._channel_id, "NO_AGREEMENT_NO", "confirm answered without agreement_no")
        return AgreementConfirmed(agreement_ref=agreement_no)

    async def revoke_agreement(self, agreement_ref: str) -> None:
        biz = {"personal_product_code": self._settings.personal_product_code, "agreement_no": agreement_ref}
        await self._admin_call("alipay.user.agreement.unsign", biz)

    async def balance(self) -> Balance:
        """Raises ConfigError (nothing sent) when the ``alipay_user_id`` setting is missing."""
        if not self._settings.alipay_user_id:
            raise ConfigError(
                f"channels.{self._channel_id}.alipay_user_id", "alipay.fund.account.query needs the merchant's user id"
            )
        biz = {"alipay_user_id": self._settings.alipay_user_id, "account_type": "ACCTRANS_ACCOUNT"}
        body = await self._admin_call("alipay.fund.account.query", biz)
        try:
            return Balance(available=wire.yuan_to_fen(str(body.get("available_amount", ""))), currency=CURRENCY)
        except ValueError as exc:
            raise ChannelUnavailable(self._channel_id, "balance answer without a valid available_amount") from exc

    # --- statements ------------------------------------------------------------

    async def fetch_statement(self, day: date, dest_dir: str) -> StatementFile:
        """The trade bill of ``day``: ask for its download URL, stream the zip, check it is one.

        The bill has no digest; the archive's CRCs are checked when it is parsed.
        """
        biz = {"bill_type": "trade", "bill_date": day.isoformat()}
        body = await self._call(BILL_METHOD, biz)
        if isinstance(body, Unsent | Lost):
            raise StatementUnavailable(f"{self._channel_id}: bill of {day}: {body}")
        if body.get("code") != wire.SUCCESS_CODE:
            code, message = wire.raw_code(body), wire.raw_message(body)
            problem = f"{self._channel_id}: bill of {day}: {code} {message}"
            if code in _BILL_NOT_READY or body.get("code") == "20000":  # 20000: service unavailable
                raise StatementUnavailable(problem)
            raise StatementError(problem)
        url = str(body.get("bill_download_url") or "")
        if not url.startswith(("https://", "http://")):
            raise StatementError(f"{self._channel_id}: bill of {day}: answer without a bill_download_url")
        download = StatementDownload(
            self._http,
            self._channel_id,
            day,
            dest_dir,
            format=statement.FORMAT.name,
            suffix=".csv.zip",
            timeout_s=self._settings.statement_timeout,
        )
        async with download:
            answer = await download.fetch("GET", URL(url, encoded=True))
            if isinstance(answer, Unsent | Lost):
                raise StatementUnavailable(f"{self._channel_id}: bill of {day}: download {answer}")
            if isinstance(answer, Response):
                # An expired link (403) or a busy CDN: a new URL may work.
                raise StatementUnavailable(f"{self._channel_id}: bill of {day}: download answered HTTP {answer.status}")
            if not await asyncio.to_thread(zipfile.is_zipfile, answer.path):
                raise StatementUnavailable(f"{self._channel_id}: bill of {day}: the download is not a zip archive")
            return await download.keep(answer, source=without_query(url))

    # --- callbacks -------------------------------------------------------------

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackNotice:
        """Verify an async notify (form-encoded, RSA2 over all fields but sign/sign_type).

        Checks the signature with the Alipay public key and that ``app_id`` is
        ours; the amount is returned for the gateway to cross-check with the
        attempt. Raises CallbackRejected.
        """
        params = self._notify_params(body)
        if params.get("sign_type", wire.SIGN_TYPE) != wire.SIGN_TYPE:
            raise CallbackRejected(self._channel_id, f"sign_type {params.get('sign_type')!r}", bad_signature=True)
        if not wire.verify_notify(params, self._settings.alipay_public_key):
            raise CallbackRejected(
                self._channel_id, "signature", channel_order_no=_order_no_of(params), bad_signature=True
            )
        if params.get("app_id") != self._settings.app_id:
            raise CallbackRejected(self._channel_id, "app_id mismatch", channel_order_no=_order_no_of(params))
        try:
            if params.get("msg_method") == "alipay.fund.trans.order.changed":
                return self._transfer_notice(params)
            if params.get("out_biz_no") and params.get("refund_fee"):
                return self._refund_notice(params)
            return self._trade_notice(params)
        except (KeyError, ValueError) as exc:
            raise CallbackRejected(self._channel_id, f"format: {exc}", channel_order_no=_order_no_of(params)) from exc

    def _notify_params(self, body: bytes) -> dict[str, str]:
        try:
            pairs = parse_qsl(body.decode(wire.CHARSET), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError) as exc:
            raise CallbackRejected(self._channel_id, "format: not a form body") from exc
        params = dict(pairs)
        if len(params) != len(pairs):
            raise CallbackRejected(self._channel_id, "format: repeated field")
        return params

    @staticmethod
    def _trade_notice(params: Mapping[str, str]) -> CallbackNotice:
        amount = wire.yuan_to_fen(params["total_amount"])
        outcome = wire.TRADE_STATUS.outcome(
            params["trade_status"], channel_txn_id=params.get("trade_no", ""), amount=amount
        )
        return CallbackNotice(_required(params, "out_trade_no"), Operation.WITHHOLD, outcome, amount)

    @staticmethod
    def _refund_notice(params: Mapping[str, str]) -> CallbackNotice:
        amount = wire.yuan_to_fen(params["send_back_fee"]) if params.get("send_back_fee") else None
        outcome = Outcome(
            OutcomeStatus.SUCCEEDED, "OK", raw_code="REFUND", channel_txn_id=params.get("trade_no", ""), amount=amount
        )
        return CallbackNotice(_required(params, "out_biz_no"), Operation.REFUND, outcome, amount)

    @staticmethod
    def _transfer_notice(params: Mapping[str, str]) -> CallbackNotice:
        biz = json.loads(params["biz_content"])
        if not isinstance(biz, dict):
            raise ValueError("biz_content is not an object")
        amount = wire.yuan_to_fen(str(biz["trans_amount"]))
        outcome = wire.TRANSFER_STATUS.outcome(
            str(biz["status"]),
            str(biz.get("fail_reason", "")),
            channel_txn_id=str(biz.get("order_id", "")),
            amount=amount,
        )
        return CallbackNotice(_required(biz, "out_biz_no"), Operation.PAYOUT, outcome, amount)

    def callback_reply(self, accepted: bool) -> HttpReply:
        """Alipay stops retrying only on the exact body ``success``."""
        return HttpReply(200, b"success" if accepted else b"fail")


def _required(fields: Mapping[str, Any], name: str) -> str:
    value = str(fields.get(name) or "")
    if not value:
        raise ValueError(f"missing {name}")
    return value


def _order_no_of(params: Mapping[str, str]) -> str:
    return params.get("out_trade_no") or params.get("out_biz_no") or ""


def _transfer_product(bank_code: str) -> str:
    """The transfer's product code: to an Alipay account, or to a bank card (also when the bank is not known)."""
    return "TRANS_ACCOUNT_NO_PWD" if bank_code.upper() == ALIPAY_ACCOUNT_BANK else "TRANS_BANKCARD_NO_PWD"


def _fen_or_none(value: object) -> int | None:
    try:
        return wire.yuan_to_fen(str(value)) if value not in (None, "") else None
    except ValueError:
        return None


# --- configuration ---------------------------------------------------------------


def build(spec: ChannelSpec) -> AlipayChannel:
    """Build an Alipay channel from ``spec.settings`` (:class:`AlipayTable`); raises ConfigError naming the bad key.

    ``institution_names`` (bank code -> institution name) extends :data:`channels.alipay.wire.INSTITUTION_NAMES`.
    """
    table = spec.read(AlipayTable)
    used, text = setting.key_material(table, "app_private_key", spec.key)
    try:
        private_key = wire.load_private_key(text)
    except (ValueError, TypeError):
        raise ConfigError(f"{spec.key}.{used}", "not an RSA private key") from None
    used, text = setting.key_material(table, "alipay_public_key", spec.key)
    try:
        public_key = wire.load_public_key(text)
    except (ValueError, TypeError):
        raise ConfigError(f"{spec.key}.{used}", "not an RSA public key") from None
    settings = AlipaySettings(
        app_id=table.app_id,
        private_key=private_key,
        alipay_public_key=public_key,
        gateway_url=table.gateway_url,
        notify_url=table.notify_url,
        connect_timeout=table.connect_timeout_s,
        timeout=table.timeout_s,
        withhold_product_code=table.withhold_product_code,
        personal_product_code=table.personal_product_code,
        sign_scene=table.sign_scene,
        alipay_user_id=table.alipay_user_id,
        statement_timeout=table.statement_timeout_s,
        institution_names={
            **wire.INSTITUTION_NAMES,
            **{c.upper(): v.strip() for c, v in table.institution_names.items()},
        },
    )
    return AlipayChannel(spec.channel_id, settings)
