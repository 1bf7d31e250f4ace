"""A protocol-faithful Alipay Open Platform gateway simulator (the server side).

Serves ``/gateway.do`` (POST form or GET query, as the official SDKs send),
verifies each request's RSA2 signature with the merchant public key, answers
``{"<method>_response": {...}, "sign": "..."}`` signed with its own "Alipay"
key, and sends signed form-encoded notifies that must be acknowledged with
``success``. Fates come from simkit's Behaviour (magic amounts included).

Like the platform, and unlike a simulator sharing our mistakes:

* ``alipay.trade.refund`` answers ``10000`` with ``fund_change = N`` for a
  refund still in progress and for a repeat of an earlier refund; only the
  call that moves the money says ``Y``;
* ``alipay.fund.trans.common.query`` by ``out_biz_no`` refuses a query
  without ``product_code`` or ``biz_scene`` (40004 INVALID_PARAMETER), and a
  product code other than the transfer's finds no order;
* ``alipay.fund.account.query`` refuses a query without the merchant's
  ``alipay_user_id``;
* a bank-card transfer whose ``bankcard_ext_info.inst_name`` is not an
  institution name (a bank code, say) is refused;
* notifies carry a field with an empty value (``passback_params=``), signed
  with ``key=`` in the string, as the platform signs what it sends;
* the gateway's refusals of the caller's credentials (unknown app id,
  signature that does not verify, wrong sign type) come back unsigned, the
  shape python-alipay-sdk documents for ``isv.invalid-app-id``.

Deviations from production, all on purpose:

* ``alipay.user.agreement.page.sign`` answers JSON instead of a page, and
  ``alipay.user.agreement.sign.confirm`` (not an Alipay method) completes the
  signing with the SMS code, matching paygate's sign/confirm contract;
* ``alipay.trade.close`` of an unknown ``out_trade_no`` closes the number for
  good (simkit tombstone) instead of answering ACQ.TRADE_NOT_EXIST;
* an outage answers ``isv.app-call-limited`` (refused before processing);
* the trade bill of any day that began can be downloaded (the current day's
  is the bill "so far"), not only from 10:00 the next day; a day with no
  trades has an empty bill rather than ``isp.bill_not_exist``.

Bills: ``alipay.data.dataservice.bill.downloadurl.query`` (``bill_type``
``trade``) answers a ``bill_download_url`` on this server
(``/downloadBillFile.resource?...&token=``, valid 30 s) that serves the zip
:mod:`channels.alipay.statement` writes, from the ledger, with the fault
switches of ``self.statements`` applied. Payouts are not on a trade bill.

Keys are generated at start-up; :meth:`AlipaySimulator.adapter_settings`
hands the adapter the merchant private key and the simulator's public key.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, BinaryIO
from urllib.parse import quote_plus

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from yarl import URL

from channels.alipay import statement, wire
from channels.simkit import (
    Answer,
    Behaviour,
    Delivery,
    Entry,
    EntryKind,
    EntryStatus,
    Ledger,
    SimulatorBase,
    adapter_timeouts,
    body_ack,
    stream_file,
)
from channels.simkit import pem_private as _pem_private  # the integration tests import these names
from channels.simkit import pem_public as _pem_public
from channels.statement import StatementLine

DEFAULT_APP_ID = "2021000000000001"
DEFAULT_USER_ID = "2088000000000001"  # the merchant's own Alipay user id (its PID)
BILL_FILE_PATH = "/downloadBillFile.resource"
BILL_URL_TTL_S = 30.0
BUSY = "isv.app-call-limited"
UNMAPPED = "ACQ.SIMULATED_UNMAPPED"

# simkit-normalized code -> Alipay (code, sub_code), per kind of order.
_TRADE_ERRORS = {
    "INSUFFICIENT_FUNDS": ("40004", "ACQ.BUYER_BALANCE_NOT_ENOUGH"),
    "ACCOUNT_FROZEN": ("40004", "ACQ.BUYER_ENABLE_STATUS_FORBID"),
    "CHANNEL_BUSY": ("40004", BUSY),
    "BANK_NOT_SUPPORTED": ("40004", "ACQ.ACCESS_FORBIDDEN"),
    "UNMAPPED": ("40004", UNMAPPED),
    "PROCESSING": ("10003", ""),
    "ORDER_CLOSED": ("40004", "ACQ.TRADE_HAS_CLOSE"),
}
_REFUND_ERRORS = {
    **_TRADE_ERRORS,
    "INSUFFICIENT_FUNDS": ("40004", "ACQ.SELLER_BALANCE_NOT_ENOUGH"),
    "MERCHANT_BALANCE_INSUFFICIENT": ("40004", "ACQ.SELLER_BALANCE_NOT_ENOUGH"),
}
_TRANSFER_ERRORS = {
    "INSUFFICIENT_FUNDS": ("40004", "PAYER_BALANCE_NOT_ENOUGH"),
    "MERCHANT_BALANCE_INSUFFICIENT": ("40004", "PAYER_BALANCE_NOT_ENOUGH"),
    "ACCOUNT_FROZEN": ("40004", "PAYEE_ACCOUNT_STATUS_ERROR"),
    "CHANNEL_BUSY": ("40004", BUSY),
    "BANK_NOT_SUPPORTED": ("40004", "EXCEED_LIMIT_SM_AMOUNT"),
    "UNMAPPED": ("40004", UNMAPPED),
}
_REFUSALS = {"ORDER_CLOSED": "ACQ.TRADE_HAS_CLOSE", "ORDER_NO_CONFLICT": "ACQ.CONTEXT_INCONSISTENT"}
_SUB_MSG = "simulated"


class _Reject(Exception):
    def __init__(self, code: str, sub_code: str, msg: str = "Business Failed", *, signed: bool = True) -> None:
        super().__init__(sub_code)
        self.body = {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": _SUB_MSG}
        self.signed = signed  # False: the gateway could not tell whose key to answer with


def _credentials_refused(sub_code: str) -> _Reject:
    return _Reject("40002", sub_code, "Invalid Arguments", signed=False)


@dataclass
class _Signing:
    external_agreement_no: str
    account: str
    sms_code: str
    agreement_no: str = ""


class AlipaySimulator(SimulatorBase):
    """The Alipay gateway as a :class:`channels.simkit.SimulatorHandle`."""

    def __init__(
        self,
        behaviour: Behaviour,
        *,
        notify_url: str | None = None,
        app_id: str = DEFAULT_APP_ID,
        alipay_user_id: str = DEFAULT_USER_ID,
        require_agreement: bool = True,
        ledger: Ledger | None = None,
        key_size: int = 2048,
    ) -> None:
        app = web.Application()
        app.add_routes([web.post("/gateway.do", self._gateway), web.get("/gateway.do", self._gateway)])
        app.add_routes([web.get(BILL_FILE_PATH, self._bill_file)])
        super().__init__(
            behaviour,
            ledger or Ledger(txn_prefix="2026"),
            app,
            is_ack=body_ack(b"success"),
            notify_url=notify_url,
        )
        self.app_id = app_id
        self.alipay_user_id = alipay_user_id
        self.statements.covers = frozenset({EntryKind.WITHHOLD, EntryKind.REFUND})
        self.statements.lists_failures = False
        self.require_agreement = require_agreement
        self.merchant_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        self.alipay_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        self._signings: dict[str, _Signing] = {}
        self.agreements: dict[str, str] = {}  # agreement_no -> payer account
        self._transfer_products: dict[str, str] = {}  # out_biz_no -> product_code

    # --- SimulatorHandle ---------------------------------------------------------

    def adapter_settings(self) -> dict[str, Any]:
        return {
            "app_id": self.app_id,
            "alipay_user_id": self.alipay_user_id,
            "app_private_key": _pem_private(self.merchant_key),
            "alipay_public_key": _pem_public(self.alipay_key.public_key()),
            "gateway_url": f"{self.base_url}/gateway.do",
            "notify_url": self.notify_url,
            **adapter_timeouts(self._behaviour),
        }

    def sms_code(self, sign_ref: str) -> str:
        return self._signings[sign_ref].sms_code

    # --- the gateway -------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        params: dict[str, str] = dict(request.query)
        if request.method == "POST":
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        method = params.get("method", "")
        try:
            biz = self._verified_biz(params)
            if self._behaviour.in_outage():
                raise _Reject("40004", BUSY)
            await self.desk.latency()
            body_or_answer = self._dispatch(method, biz, params.get("notify_url", ""))
        except _Reject as rejected:
            if not rejected.signed:
                return self._respond(method, rejected.body, signed=False)
            return self._respond(method, rejected.body, error=rejected.body["code"] in ("40001", "40002"))
        if isinstance(body_or_answer, tuple):
            answer, body = body_or_answer
            if answer.delivery is Delivery.TIMEOUT:
                await self._hold_then_drop(request)
            if answer.delivery is Delivery.ERROR_5XX:
                return web.Response(status=500, text="Internal Server Error")
            return self._respond(method, body)
        return self._respond(method, body_or_answer)

    def _verified_biz(self, params: Mapping[str, str]) -> dict[str, Any]:
        if not params.get("sign"):
            raise _Reject("40001", "isv.missing-signature", "Missing Required Arguments")
        if params.get("app_id") != self.app_id:
            raise _credentials_refused("isv.invalid-app-id")
        if params.get("sign_type") != wire.SIGN_TYPE:
            raise _credentials_refused("isv.invalid-signature-type")
        if not wire.rsa2_verify(self.merchant_key.public_key(), wire.sign_content(params), params["sign"]):
            raise _credentials_refused("isv.invalid-signature")
        try:
            biz = json.loads(params.get("biz_content") or "{}")
        except ValueError:
            raise _Reject("40002", "isv.invalid-parameter", "Invalid Arguments") from None
        if not isinstance(biz, dict):
            raise _Reject("40002", "isv.invalid-parameter", "Invalid Arguments")
        return biz

    def _respond(
        self, method: str, body: Mapping[str, Any], *, error: bool = False, signed: bool = True
    ) -> web.Response:
        text = wire.build_response(method, body, self.alipay_key if signed else None, error=error)
        return web.Response(text=text, content_type="application/json", charset="utf-8")

    def _dispatch(
        self, method: str, biz: Mapping[str, Any], notify_url: str
    ) -> dict[str, Any] | tuple[Answer, dict[str, Any]]:
        handlers: dict[str, Callable[[], dict[str, Any] | tuple[Answer, dict[str, Any]]]] = {
            "alipay.trade.pay": lambda: self._trade_pay(biz, notify_url),
            "alipay.trade.query": lambda: self._trade_query(biz),
            "alipay.trade.close": lambda: self._trade_close(biz),
            "alipay.trade.refund": lambda: self._trade_refund(biz, notify_url),
            "alipay.trade.fastpay.refund.query": lambda: self._refund_query(biz),
            "alipay.fund.trans.uni.transfer": lambda: self._transfer(biz, notify_url),
            "alipay.fund.trans.common.query": lambda: self._transfer_query(biz),
            "alipay.fund.account.query": lambda: self._account_query(biz),
            "alipay.user.agreement.page.sign": lambda: self._agreement_sign(biz),
            "alipay.user.agreement.sign.confirm": lambda: self._agreement_confirm(biz),
            "alipay.user.agreement.unsign": lambda: self._agreement_unsign(biz),
            "alipay.data.dataservice.bill.downloadurl.query": lambda: self._bill_download_url(biz),
        }
        handler = handlers.get(method)
        if handler is None:
            raise _Reject("40002", "isv.invalid-method", "Invalid Arguments")
        return handler()

    # --- trades ------------------------------------------------------------------

    def _trade_pay(self, biz: Mapping[str, Any], notify_url: str) -> tuple[Answer, dict[str, Any]]:
        out_trade_no = _text(biz, "out_trade_no")
        amount = _amount(biz, "total_amount")
        agreement_no = str((biz.get("agreement_params") or {}).get("agreement_no", ""))
        account = self.agreements.get(agreement_no)
        if account is None:
            if self.require_agreement:
                raise _Reject("40004", "ACQ.AGREEMENT_NOT_EXIST")
            account = f"agreement:{agreement_no}"
        answer = self.desk.submit(out_trade_no, EntryKind.WITHHOLD, amount, account, biz, notify_url=notify_url)
        entry = answer.entry
        if answer.code == "REPEAT":
            if entry.status is EntryStatus.SUCCEEDED:
                raise _Reject("40004", "ACQ.TRADE_HAS_SUCCESS")
            code = "PROCESSING" if entry.status is EntryStatus.PENDING else entry.code
            return answer, self._trade_answer(entry, code)
        return answer, self._trade_answer(entry, answer.code)

    def _trade_answer(self, entry: Entry, code: str) -> dict[str, Any]:
        if code == "OK":
            return {
                "code": "10000",
                "msg": "Success",
                "trade_no": entry.txn_id,
                "out_trade_no": entry.order_no,
                "total_amount": wire.fen_to_yuan(entry.amount),
                "gmt_payment": _now(),
            }
        return _error_body(_TRADE_ERRORS, code, out_trade_no=entry.order_no)

    def _trade_query(self, biz: Mapping[str, Any]) -> dict[str, Any]:
        out_trade_no = _text(biz, "out_trade_no")
        entry = self._ledger.get(out_trade_no)
        if entry is None or entry.kind is not EntryKind.WITHHOLD:
            if self._ledger.is_closed(out_trade_no):
                return _ok(out_trade_no=out_trade_no, trade_status="TRADE_CLOSED", total_amount="0.00")
            raise _Reject("40004", "ACQ.TRADE_NOT_EXIST")
        return _ok(
            out_trade_no=out_trade_no,
            trade_no=entry.txn_id,
            trade_status=_TRADE_STATUS[entry.status],
            total_amount=wire.fen_to_yuan(entry.amount),
        )

    def _trade_close(self, biz: Mapping[str, Any]) -> dict[str, Any]:
        out_trade_no = _text(biz, "out_trade_no")
        entry = self._ledger.get(out_trade_no)
        if entry is not None and (entry.kind is not EntryKind.WITHHOLD or entry.final):
            raise _Reject("40004", "ACQ.TRADE_STATUS_ERROR")
        closed = self.desk.close(out_trade_no)
        return _ok(out_trade_no=out_trade_no, trade_no=closed.txn_id if closed else "")

    def _trade_refund(self, biz: Mapping[str, Any], notify_url: str) -> tuple[Answer, dict[str, Any]]:
        original_no = _text(biz, "out_trade_no")
        refund_no = _text(biz, "out_request_no")
        amount = _amount(biz, "refund_amount")
        original = self._ledger.get(original_no)
        if original is None or original.kind is not EntryKind.WITHHOLD:
            raise _Reject("40004", "ACQ.TRADE_NOT_EXIST")
        if original.status is not EntryStatus.SUCCEEDED:
            raise _Reject("40004", "ACQ.TRADE_STATUS_ERROR")
        existing = self._ledger.get(refund_no)
        if existing is None and self._ledger.refunded_total(original_no) + amount > original.amount:
            raise _Reject("40004", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL")
        params = {"out_trade_no": original_no, "refund_amount": amount}
        answer = self.desk.submit_refund(refund_no, original, amount, params, notify_url=notify_url)
        entry = answer.entry
        code = answer.code
        moved_now = code == "OK"
        if code == "REPEAT":
            code = "PROCESSING" if entry.status is EntryStatus.PENDING else entry.code
        if code in ("OK", "PROCESSING"):
            # 10000 only says the request was accepted; fund_change says whether this call moved money
            return answer, _ok(
                trade_no=original.txn_id,
                out_trade_no=original_no,
                refund_fee=wire.fen_to_yuan(self._ledger.refunded_total(original_no)),
                fund_change="Y" if moved_now else "N",
            )
        return answer, _error_body(_REFUND_ERRORS, code, out_trade_no=original_no)

    def _refund_query(self, biz: Mapping[str, Any]) -> dict[str, Any]:
        entry = self._ledger.get(_text(biz, "out_request_no"))
        if entry is None or entry.kind is not EntryKind.REFUND or entry.original_order_no != biz.get("out_trade_no"):
            return _ok(out_trade_no=str(biz.get("out_trade_no", "")))
        if entry.status is not EntryStatus.SUCCEEDED:
            return _ok(out_trade_no=entry.original_order_no, out_request_no=entry.order_no)
        return _ok(
            out_trade_no=entry.original_order_no,
            out_request_no=entry.order_no,
            refund_status="REFUND_SUCCESS",
            refund_amount=wire.fen_to_yuan(entry.amount),
        )

    # --- transfers and balance ---------------------------------------------------

    def _transfer(self, biz: Mapping[str, Any], notify_url: str) -> tuple[Answer, dict[str, Any]]:
        out_biz_no = _text(biz, "out_biz_no")
        amount = _amount(biz, "trans_amount")
        payee = biz.get("payee_info")
        if not isinstance(payee, dict) or not payee.get("identity"):
            raise _Reject("40004", "INVALID_PARAMETER")
        product_code = _text(biz, "product_code")
        if product_code == "TRANS_BANKCARD_NO_PWD":
            card = payee.get("bankcard_ext_info")
            if not isinstance(card, dict) or not _INSTITUTION_NAME.fullmatch(str(card.get("inst_name", ""))):
                raise _Reject("40004", "INVALID_PARAMETER", "inst_name must be the institution's name")
        self._transfer_products.setdefault(out_biz_no, product_code)
        answer = self.desk.submit(
            out_biz_no, EntryKind.PAYOUT, amount, str(payee["identity"]), biz, notify_url=notify_url
        )
        entry = answer.entry
        code = answer.code
        if code == "REPEAT":
            return answer, self._transfer_state(entry)
        if code in ("OK", "PROCESSING"):
            return answer, self._transfer_state(entry)
        return answer, _error_body(_TRANSFER_ERRORS, code, out_biz_no=out_biz_no)

    def _transfer_state(self, entry: Entry) -> dict[str, Any]:
        body = _ok(
            out_biz_no=entry.order_no,
            order_id=entry.txn_id,
            pay_fund_order_id=entry.txn_id,
            status=_TRANSFER_STATUS[entry.status],
            trans_amount=wire.fen_to_yuan(entry.amount),
            trans_date=_now(),
        )
        if entry.status is EntryStatus.FAILED:
            body["error_code"] = _TRANSFER_ERRORS.get(entry.code, ("", entry.code))[1]
            body["fail_reason"] = entry.code
        return body

    def _transfer_query(self, biz: Mapping[str, Any]) -> dict[str, Any]:
        out_biz_no = _text(biz, "out_biz_no")
        # "如果传递了out_biz_no则该字段为必传": both, when the transfer is named by our number
        product_code = _required_param(biz, "product_code")
        _required_param(biz, "biz_scene")
        entry = self._ledger.get(out_biz_no)
        if entry is None or entry.kind is not EntryKind.PAYOUT:
            raise _Reject("40004", "ORDER_NOT_EXIST")
        if self._transfer_products.get(out_biz_no) != product_code:
            raise _Reject("40004", "ORDER_NOT_EXIST")  # no such transfer under that product
        return self._transfer_state(entry)

    def _account_query(self, biz: Mapping[str, Any]) -> dict[str, Any]:
        if _required_param(biz, "alipay_user_id") != self.alipay_user_id:
            raise _Reject("40004", "INVALID_PARAMETER", "alipay_user_id is not the merchant's")
        balance = self._ledger.merchant_balance
        return _ok(available_amount=wire.fen_to_yuan(balance), freeze_amount="0.00")

    # --- agreements ----------------------------------------------------------------

    def _agreement_sign(self, biz: Mapping[str, Any]) -> dict[str, Any]:
        external_no = _text(biz, "external_agreement_no")
        identity = biz.get("identity_params") or {}
        account = str(identity.get("bankcard_no") or biz.get("external_logon_id") or external_no)
        signing = self._signings[external_no] = _Signing(external_no, account, f"{secrets.randbelow(1_000_000):06d}")
        if biz.get("external_logon_id"):  # the borrower's mobile number
            self.sms.send(str(biz["external_logon_id"]), signing.sms_code, external_no)
        return _ok(external_agreement_no=external_no)

    def _agreement_confirm(self, biz: Mapping[str, Any]) -> dict[str, Any]:
        signing = self._signings.get(_text(biz, "external_agreement_no"))
        if signing is None:
            raise _Reject("40004", "USER_AGREEMENT_NOT_EXIST")
        if not secrets.compare_digest(str(biz.get("verify_code", "")), signing.sms_code):
            raise _Reject("40004", "USER_AGREEMENT_VERIFY_FAIL")
        if not signing.agreement_no:
            signing.agreement_no = f"2026{len(self.agreements) + 1:016d}"
            self.agreements[signing.agreement_no] = signing.account
        return _ok(
            agreement_no=signing.agreement_no, status="NORMAL", external_agreement_no=signing.external_agreement_no
        )

    def _agreement_unsign(self, biz: Mapping[str, Any]) -> dict[str, Any]:
        if self.agreements.pop(_text(biz, "agreement_no"), None) is None:
            raise _Reject("40004", "USER_AGREEMENT_NOT_EXIST")
        return _ok()

    # --- bills ---------------------------------------------------------------------

    @property
    def bill_account(self) -> str:
        """The 账号 of a trade bill: the merchant's user id (its PID) followed by 0156, as Alipay writes it."""
        return f"{self.alipay_user_id}0156"

    def _bill_download_url(self, biz: Mapping[str, Any]) -> dict[str, Any]:
        if biz.get("bill_type") != "trade":
            raise _Reject("40004", "isv.invalid-bill-type", "Business Failed")
        try:
            day = date.fromisoformat(_text(biz, "bill_date"))
        except ValueError:
            raise _Reject("40004", "isv.invalid-bill-date", "Business Failed") from None  # monthly bills: not simulated
        if not self.statements.published(day):
            raise _Reject("40004", "isp.bill_not_exist")
        token = self.statements.issue(day, BILL_URL_TTL_S)
        name = statement.download_name(self.bill_account, day)
        url = URL(self.base_url + BILL_FILE_PATH).with_query(
            bizType="trade",
            userId=self.bill_account,
            fileType="csv.zip",
            bizDates=f"{day:%Y%m%d}",
            downloadFileName=name,
            fileId=name,
            timestamp=str(int(datetime.now().timestamp())),
            token=token,
        )
        return _ok(bill_download_url=str(url))

    async def _bill_file(self, request: web.Request) -> web.StreamResponse:
        if self._behaviour.in_outage():
            return web.Response(status=503, text="service unavailable")
        day = self.statements.redeem(request.query.get("token", ""))
        if not isinstance(day, date):
            return web.Response(status=403, text="下载超时,请重新下载")

        def write(lines: Iterator[StatementLine], out: BinaryIO) -> None:
            statement.write_statement(lines, out, day=day, account=self.bill_account)

        rendered = await self.statements.render(day, write)
        headers = {
            "Content-Type": "application/oct-stream",
            "Content-Disposition": f"attachment; filename={statement.download_name(self.bill_account, day)}",
        }
        return await stream_file(request, rendered, headers=headers, remove=True)

    # --- orders and notifies -------------------------------------------------------

    def _refusal(self, code: str) -> Exception:
        return _Reject("40004", _REFUSALS[code])

    def _notify(self, entry: Entry) -> None:
        url = entry.notify_url or self.notify_url
        if not url or (entry.kind is EntryKind.REFUND and entry.status is not EntryStatus.SUCCEEDED):
            return
        fields = self.notify_fields(entry)
        body = "&".join(f"{k}={_form_quote(v)}" for k, v in wire.sign_notify(fields, self.alipay_key).items())
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        self.callbacks.send(entry.order_no, url, body.encode(), lambda _body: headers)

    def notify_fields(self, entry: Entry) -> dict[str, str]:
        """The unsigned notify for a final entry (public so tests can forge variants)."""
        common = {
            "notify_time": _now(),
            "notify_id": secrets.token_hex(16),
            "app_id": self.app_id,
            "charset": wire.CHARSET,
            "version": wire.VERSION,
        }
        if entry.kind is EntryKind.PAYOUT:
            biz = {
                "out_biz_no": entry.order_no,
                "order_id": entry.txn_id,
                "status": _TRANSFER_STATUS[entry.status],
                "trans_amount": wire.fen_to_yuan(entry.amount),
                "fail_reason": "" if entry.status is EntryStatus.SUCCEEDED else entry.code,
            }
            return {
                **common,
                "msg_method": "alipay.fund.trans.order.changed",
                "utc_timestamp": str(int(datetime.now().timestamp() * 1000)),
                "biz_content": json.dumps(biz, ensure_ascii=False, separators=(",", ":")),
            }
        if entry.kind is EntryKind.REFUND:
            original = self._ledger.get(entry.original_order_no)
            return {
                **common,
                "notify_type": "trade_status_sync",
                "trade_no": original.txn_id if original else "",
                "out_trade_no": entry.original_order_no,
                "out_biz_no": entry.order_no,
                "refund_fee": wire.fen_to_yuan(self._ledger.refunded_total(entry.original_order_no)),
                "send_back_fee": wire.fen_to_yuan(entry.amount),
                "trade_status": "TRADE_SUCCESS",
                "total_amount": wire.fen_to_yuan(original.amount if original else entry.amount),
                "gmt_refund": _now(),
                "passback_params": "",
            }
        return {
            **common,
            "notify_type": "trade_status_sync",
            "trade_no": entry.txn_id,
            "out_trade_no": entry.order_no,
            "trade_status": _TRADE_STATUS[entry.status],
            "total_amount": wire.fen_to_yuan(entry.amount),
            "receipt_amount": wire.fen_to_yuan(entry.amount if entry.status is EntryStatus.SUCCEEDED else 0),
            "gmt_payment": _now(),
            "passback_params": "",  # empty fields are sent and signed (key= in the signed string)
        }


_TRADE_STATUS = {
    EntryStatus.SUCCEEDED: "TRADE_SUCCESS",
    EntryStatus.PENDING: "WAIT_BUYER_PAY",
    EntryStatus.FAILED: "TRADE_CLOSED",
}
_TRANSFER_STATUS = {EntryStatus.SUCCEEDED: "SUCCESS", EntryStatus.PENDING: "DEALING", EntryStatus.FAILED: "FAIL"}


def _ok(**fields: str) -> dict[str, Any]:
    return {"code": "10000", "msg": "Success", **fields}


def _error_body(table: Mapping[str, tuple[str, str]], code: str, **fields: str) -> dict[str, Any]:
    wire_code, sub_code = table.get(code, ("40004", UNMAPPED))
    if not sub_code:
        return {"code": wire_code, "msg": "order success pay inprocess", **fields}
    return {"code": wire_code, "msg": "Business Failed", "sub_code": sub_code, "sub_msg": _SUB_MSG, **fields}


def _text(biz: Mapping[str, Any], name: str, *, refusal: tuple[str, str] = ("40001", "isv.missing-parameter")) -> str:
    value = str(biz.get(name) or "")
    if not value:
        raise _Reject(*refusal, f"Missing {name}")
    return value


def _required_param(biz: Mapping[str, Any], name: str) -> str:
    """A business parameter the API requires: missing is 40004 INVALID_PARAMETER (a refused request)."""
    return _text(biz, name, refusal=("40004", "INVALID_PARAMETER"))


# an institution name as Alipay's bankcard_ext_info.inst_name wants it (招商银行), not a code (CMB)
_INSTITUTION_NAME = re.compile(r"[\u4e00-\u9fff（）()]{2,40}")


def _amount(biz: Mapping[str, Any], name: str) -> int:
    try:
        amount = wire.yuan_to_fen(str(biz.get(name, "")))
    except ValueError:
        raise _Reject("40004", "ACQ.INVALID_PARAMETER", f"bad {name}") from None
    if amount <= 0:
        raise _Reject("40004", "ACQ.INVALID_PARAMETER", f"bad {name}")
    return amount


def _now() -> str:
    return datetime.now(wire.CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")


def _form_quote(value: str) -> str:
    return quote_plus(value, encoding=wire.CHARSET)


def create(behaviour: Behaviour, *, notify_url: str | None = None, **kw: Any) -> AlipaySimulator:
    """Build (not start) an Alipay simulator.

    ``kw``: ``app_id``, ``alipay_user_id``, ``require_agreement``, ``ledger``, ``key_size``.
    """
    return AlipaySimulator(behaviour, notify_url=notify_url, **kw)
