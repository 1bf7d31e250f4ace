"""A protocol-faithful WeChat Pay API v3 simulator (the platform side).

Verifies every request's ``WECHATPAY2-SHA256-RSA2048`` Authorization with the
merchant's public key (and the clock skew), signs every answer with its own
platform key (``Wechatpay-*`` headers, a ``PUB_KEY_ID_...`` serial), and sends
callbacks whose resource is AES-256-GCM encrypted with the APIv3 key; a
callback counts as acknowledged on HTTP 200 or 204. Fates come from simkit's
Behaviour (magic amounts included).

Like the platform: a request whose Authorization does not verify (wrong
key, wrong serial, a URL signed in one encoding and sent in another, a stale
timestamp) is answered 401 ``SIGN_ERROR`` **unsigned** and not executed ("对于
签名验证成功的请求" only are answers signed); a payout (a batch of one
transfer) is called back per batch, ``MCHTRANSFER.BATCH.FINISHED`` (or
``.CLOSED``) with ``out_batch_no``, ``batch_id``, ``batch_status``, counts
and amounts and an empty ``associated_data``, and never per transfer: the
merchant queries the transfer to learn how it ended.

Adaptations, on purpose: contract signing is ``pre-entrust-sign`` plus a
``/confirm`` with the SMS code (paygate's sign/confirm contract); closing an
unknown order closes its number for good (simkit tombstone); an outage
answers 429 FREQUENCY_LIMITED; the trade bill of any day that began can be
applied for (the current day's is the bill "so far"), not only from 10:00 the
next day, and a day without trades has an empty bill rather than
NO_STATEMENT_EXIST.

Bills: ``GET /v3/bill/tradebill`` (``bill_type`` ALL, ``tar_type`` GZIP or
none) renders the day from the ledger (:mod:`channels.wechatpay.statement`,
fault switches of ``self.statements`` applied) and answers its SHA-1 and a
``download_url`` (``/v3/billdownload/file?token=``, valid 5 minutes) whose
signed GET streams the file, unsigned, as WeChat Pay does. Payouts are not on
a trade bill.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, BinaryIO

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from yarl import URL

from channels.simkit import (
    Answer,
    Behaviour,
    Delivery,
    Entry,
    EntryKind,
    EntryStatus,
    Ledger,
    Rendered,
    SimulatorBase,
    adapter_timeouts,
    pem_public,
    stream_file,
)
from channels.simkit import pem_private as _pem_private  # the integration tests import this name
from channels.statement import StatementLine
from channels.wechatpay import statement, wire

DEFAULT_MCHID = "1900000001"
DEFAULT_APPID = "wxd678efh567hg6787"
UNMAPPED = "SIMULATED_UNMAPPED"
BILL_FILE_PATH = "/v3/billdownload/file"
BILL_URL_TTL_S = 300.0

# simkit-normalized code -> (HTTP status, WeChat error code)
_PAY_ERRORS = {
    "INSUFFICIENT_FUNDS": (403, "NOTENOUGH"),
    "ACCOUNT_FROZEN": (403, "ACCOUNT_ERROR"),
    "CHANNEL_BUSY": (429, "FREQUENCY_LIMITED"),
    "BANK_NOT_SUPPORTED": (403, "NO_AUTH"),
    "UNMAPPED": (403, UNMAPPED),
    "ORDER_CLOSED": (403, "ORDER_CLOSED"),
}
_TRANSFER_ERRORS = {
    **_PAY_ERRORS,
    "INSUFFICIENT_FUNDS": (403, "NOT_ENOUGH"),
    "MERCHANT_BALANCE_INSUFFICIENT": (403, "NOT_ENOUGH"),
}
_REFUSALS = {
    "ORDER_CLOSED": (403, "ORDER_CLOSED", "simulated"),
    "ORDER_NO_CONFLICT": (400, "INVALID_REQUEST", "out_trade_no exists with other parameters"),
}
_TRANSFER_FAIL_REASON = {"ACCOUNT_FROZEN": "ACCOUNT_FROZEN", "INSUFFICIENT_FUNDS": "MERCHANT_REJECT"}
_TRADE_STATE = {EntryStatus.SUCCEEDED: "SUCCESS", EntryStatus.PENDING: "ACCEPT", EntryStatus.FAILED: "PAYERROR"}
_DETAIL_STATUS = {EntryStatus.SUCCEEDED: "SUCCESS", EntryStatus.PENDING: "PROCESSING", EntryStatus.FAILED: "FAIL"}
_REFUND_STATUS = {EntryStatus.SUCCEEDED: "SUCCESS", EntryStatus.PENDING: "PROCESSING", EntryStatus.FAILED: "CLOSED"}


class _Error(Exception):
    def __init__(self, status: int, code: str, message: str = "simulated", *, signed: bool = True) -> None:
        super().__init__(code)
        self.status, self.code, self.message = status, code, message
        self.signed = signed  # False for requests the platform could not verify


def _sign_error(message: str) -> _Error:
    return _Error(401, "SIGN_ERROR", message, signed=False)


@dataclass
class _Signing:
    account: str
    sms_code: str
    contract_id: str = ""


Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse | dict[str, Any] | None]]


class WeChatPaySimulator(SimulatorBase):
    """WeChat Pay v3 as a :class:`channels.simkit.SimulatorHandle`."""

    def __init__(
        self,
        behaviour: Behaviour,
        *,
        notify_url: str | None = None,
        mchid: str = DEFAULT_MCHID,
        appid: str = DEFAULT_APPID,
        require_agreement: bool = True,
        ledger: Ledger | None = None,
        key_size: int = 2048,
    ) -> None:
        self.mchid, self.appid = mchid, appid
        self.require_agreement = require_agreement
        self.merchant_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        self.merchant_serial_no = secrets.token_hex(20).upper()
        self.platform_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        self.platform_serial = f"PUB_KEY_ID_{secrets.token_hex(16).upper()}"
        self.apiv3_key = secrets.token_hex(16)  # 32 characters
        self._signings: dict[str, _Signing] = {}
        self.contracts: dict[str, str] = {}  # contract_id -> payer account
        app = web.Application()
        routes: list[tuple[str, str, Handler]] = [
            ("POST", "/v3/papay/pay/transactions/apply", self._apply),
            ("GET", "/v3/pay/transactions/out-trade-no/{no}", self._trade_query),
            ("POST", "/v3/pay/transactions/out-trade-no/{no}/close", self._trade_close),
            ("POST", "/v3/refund/domestic/refunds", self._refund),
            ("GET", "/v3/refund/domestic/refunds/{no}", self._refund_query),
            ("POST", "/v3/transfer/batches", self._transfer),
            ("GET", "/v3/transfer/batches/out-batch-no/{batch}/details/out-detail-no/{no}", self._transfer_query),
            ("GET", "/v3/merchant/fund/balance/{account_type}", self._balance),
            ("POST", "/v3/papay/contracts/pre-entrust-sign", self._pre_sign),
            ("POST", "/v3/papay/contracts/pre-entrust-sign/{id}/confirm", self._confirm),
            ("POST", "/v3/papay/contracts/{contract_id}/terminate", self._terminate),
        ]
        routes += [("GET", "/v3/bill/tradebill", self._trade_bill), ("GET", BILL_FILE_PATH, self._bill_file)]
        for method, path, handler in routes:
            app.router.add_route(method, path, self._wrap(handler))
        super().__init__(
            behaviour,
            ledger or Ledger(txn_prefix="4200"),
            app,
            is_ack=lambda status, _body: status in (200, 204),
            notify_url=notify_url,
        )
        self.statements.covers = frozenset({EntryKind.WITHHOLD, EntryKind.REFUND})
        self.statements.lists_failures = False

    # --- SimulatorHandle ---------------------------------------------------------

    def adapter_settings(self) -> dict[str, Any]:
        return {
            "mchid": self.mchid,
            "appid": self.appid,
            "merchant_serial_no": self.merchant_serial_no,
            "private_key": _pem_private(self.merchant_key),
            "apiv3_key": self.apiv3_key,
            "platform_public_key": self.platform_public_key_pem(),
            "platform_public_key_id": self.platform_serial,
            "base_url": self.base_url,
            "notify_url": self.notify_url,
            "plan_id": "10001",
            **adapter_timeouts(self._behaviour),
        }

    def platform_public_key_pem(self) -> str:
        return pem_public(self.platform_key.public_key())

    def sms_code(self, sign_ref: str) -> str:
        return self._signings[sign_ref].sms_code

    # --- plumbing ------------------------------------------------------------------

    def _signed(self, status: int, payload: Mapping[str, Any] | None, *, signed: bool = True) -> web.Response:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")) if payload is not None else ""
        headers = wire.sign_message(body, key=self.platform_key, serial=self.platform_serial) if signed else {}
        if payload is None:
            return web.Response(status=status, headers=headers)
        return web.Response(status=status, text=body, content_type="application/json", headers=headers)

    def _wrap(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            text = await request.text()
            try:
                self._authenticate(request, text)
                payload = json.loads(text) if text else {}
                if not isinstance(payload, dict):
                    raise _Error(400, "PARAM_ERROR", "body is not an object")
                if self._behaviour.in_outage():
                    raise _Error(429, "FREQUENCY_LIMITED", "simulated outage")
                await self.desk.latency()
                result = await handler(request, payload)
            except _Error as error:
                return self._signed(error.status, {"code": error.code, "message": error.message}, signed=error.signed)
            except ValueError:
                return self._signed(400, {"code": "PARAM_ERROR", "message": "bad JSON"})
            if isinstance(result, web.StreamResponse):
                return result
            return self._signed(200 if result is not None else 204, result)

        return serve

    def _authenticate(self, request: web.Request, body: str) -> None:
        auth = wire.parse_authorization(request.headers.get("Authorization", ""))
        if auth is None or auth.mchid != self.mchid or auth.serial_no != self.merchant_serial_no:
            raise _sign_error("bad Authorization header")
        # over the request line as received: the bytes the client sent, not a re-encoding of them
        if not wire.verify_authorization(auth, request.method, request.raw_path, body, self.merchant_key.public_key()):
            raise _sign_error("signature does not verify")

    async def _deliver(self, request: web.Request, answer: Answer, payload: dict[str, Any]) -> web.StreamResponse:
        if answer.delivery is Delivery.TIMEOUT:
            await self._hold_then_drop(request)
        if answer.delivery is Delivery.ERROR_5XX:
            return self._signed(500, {"code": "SYSTEM_ERROR", "message": "simulated"})
        return self._signed(200, payload)

    def _refusal(self, code: str) -> Exception:
        return _Error(*_REFUSALS[code])

    @staticmethod
    def _decline(table: Mapping[str, tuple[int, str]], answer: Answer) -> None:
        code = answer.entry.code if answer.code == "REPEAT" else answer.code
        if answer.code == "REPEAT" and answer.entry.status is not EntryStatus.FAILED:
            return
        if code in table:
            status, wechat_code = table[code]
            raise _Error(status, wechat_code)

    # --- pay (papay) -----------------------------------------------------------------

    async def _apply(self, request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        out_trade_no = _required(payload, "out_trade_no")
        amount = _amount(payload.get("amount"), "total")
        contract_id = str(payload.get("contract_id", ""))
        account = self.contracts.get(contract_id)
        if account is None:
            if self.require_agreement:
                raise _Error(403, "CONTRACT_NOT_EXIST", "no such contract")
            account = f"contract:{contract_id}"
        answer = self.desk.submit(
            out_trade_no,
            EntryKind.WITHHOLD,
            amount,
            account,
            payload,
            notify_url=str(payload.get("transaction_notify_url", "")),
        )
        self._decline(_PAY_ERRORS, answer)
        return await self._deliver(
            request, answer, {"out_trade_no": out_trade_no, "amount": {"total": amount, "currency": "CNY"}}
        )

    async def _trade_query(self, request: web.Request, payload: dict[str, Any]) -> dict[str, Any]:
        no = request.match_info["no"]
        if request.query.get("mchid") != self.mchid:
            raise _Error(400, "PARAM_ERROR", "mchid")
        entry = self._ledger.get(no)
        if entry is None or entry.kind is not EntryKind.WITHHOLD:
            if self._ledger.is_closed(no):
                return {"mchid": self.mchid, "appid": self.appid, "out_trade_no": no, "trade_state": "CLOSED"}
            raise _Error(404, "ORDER_NOT_EXIST", "order does not exist")
        return self._transaction(entry)

    def _transaction(self, entry: Entry) -> dict[str, Any]:
        state = "CLOSED" if entry.code == "ORDER_CLOSED" else _TRADE_STATE[entry.status]
        return {
            "mchid": self.mchid,
            "appid": self.appid,
            "out_trade_no": entry.order_no,
            "transaction_id": entry.txn_id,
            "trade_type": "PAP",
            "trade_state": state,
            "trade_state_desc": entry.code,
            "success_time": _now() if entry.status is EntryStatus.SUCCEEDED else "",
            "amount": {"total": entry.amount, "payer_total": entry.amount, "currency": "CNY"},
        }

    async def _trade_close(self, request: web.Request, payload: dict[str, Any]) -> None:
        no = request.match_info["no"]
        entry = self._ledger.get(no)
        if entry is not None and entry.status is EntryStatus.SUCCEEDED:
            raise _Error(400, "ORDERPAID", "order paid")
        if entry is not None and entry.final:
            raise _Error(400, "TRADE_ERROR", "order ended")
        self.desk.close(no)
        return None

    # --- refunds ---------------------------------------------------------------------

    async def _refund(self, request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        refund_no = _required(payload, "out_refund_no")
        amount = _amount(payload.get("amount"), "refund")
        original = self._find_original(payload)
        if original is None:
            raise _Error(404, "RESOURCE_NOT_EXISTS", "original order does not exist")
        if original.status is not EntryStatus.SUCCEEDED:
            raise _Error(403, "TRADE_ERROR", "original order not paid")
        if (
            self._ledger.get(refund_no) is None
            and self._ledger.refunded_total(original.order_no) + amount > original.amount
        ):
            raise _Error(400, "INVALID_REQUEST", "refund exceeds the order")
        params = {"original": original.order_no, "refund": amount}
        answer = self.desk.submit_refund(
            refund_no, original, amount, params, notify_url=str(payload.get("notify_url", ""))
        )
        self._decline(_TRANSFER_ERRORS, answer)
        return await self._deliver(request, answer, self._refund_body(answer.entry))

    def _find_original(self, payload: Mapping[str, Any]) -> Entry | None:
        if payload.get("out_trade_no"):
            return self._ledger.get(str(payload["out_trade_no"]))
        entry = self._ledger.by_txn_id(str(payload.get("transaction_id", "")))
        return entry if entry is not None and entry.kind is EntryKind.WITHHOLD else None

    def _refund_body(self, entry: Entry) -> dict[str, Any]:
        original = self._ledger.get(entry.original_order_no)
        return {
            "refund_id": entry.txn_id,
            "out_refund_no": entry.order_no,
            "transaction_id": original.txn_id if original else "",
            "out_trade_no": entry.original_order_no,
            "status": _REFUND_STATUS[entry.status],
            "amount": {
                "refund": entry.amount,
                "total": original.amount if original else entry.amount,
                "currency": "CNY",
            },
        }

    async def _refund_query(self, request: web.Request, payload: dict[str, Any]) -> dict[str, Any]:
        entry = self._ledger.get(request.match_info["no"])
        if entry is None or entry.kind is not EntryKind.REFUND:
            raise _Error(404, "RESOURCE_NOT_EXISTS", "refund does not exist")
        return self._refund_body(entry)

    # --- transfers and balance -------------------------------------------------------

    async def _transfer(self, request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        out_batch_no = _required(payload, "out_batch_no")
        details = payload.get("transfer_detail_list")
        if not isinstance(details, list) or len(details) != 1 or not isinstance(details[0], dict):
            raise _Error(400, "PARAM_ERROR", "this simulator takes batches of exactly one detail")
        detail = details[0]
        amount = _amount(detail, "transfer_amount")
        if payload.get("total_amount") != amount or payload.get("total_num") != 1:
            raise _Error(400, "PARAM_ERROR", "totals do not match the details")
        if detail.get("user_name"):
            try:
                wire.decrypt_field(self.platform_key, str(detail["user_name"]))
            except ValueError:
                raise _Error(400, "PARAM_ERROR", "user_name is not encrypted with the platform key") from None
        answer = self.desk.submit(
            _required(detail, "out_detail_no"),
            EntryKind.PAYOUT,
            amount,
            _required(detail, "openid"),
            {"out_batch_no": out_batch_no, "amount": amount, "openid": detail.get("openid")},
            notify_url=str(payload.get("notify_url", "")),
        )
        if answer.code != "ACCOUNT_FROZEN":  # the detail fails later, the batch is accepted
            self._decline(_TRANSFER_ERRORS, answer)
        body = {
            "out_batch_no": out_batch_no,
            "batch_id": answer.entry.txn_id,
            "create_time": _now(),
            "batch_status": "ACCEPTED",
        }
        return await self._deliver(request, answer, body)

    def _detail(self, entry: Entry) -> dict[str, Any]:
        body: dict[str, Any] = {
            "mchid": self.mchid,
            "out_batch_no": entry.order_no,
            "out_detail_no": entry.order_no,
            "detail_id": entry.txn_id,
            "detail_status": _DETAIL_STATUS[entry.status],
            "transfer_amount": entry.amount,
        }
        if entry.status is EntryStatus.FAILED:
            body["fail_reason"] = _TRANSFER_FAIL_REASON.get(entry.code, "MERCHANT_REJECT")
        return body

    async def _transfer_query(self, request: web.Request, payload: dict[str, Any]) -> dict[str, Any]:
        entry = self._ledger.get(request.match_info["no"])
        if entry is None or entry.kind is not EntryKind.PAYOUT:
            raise _Error(404, "NOT_FOUND", "transfer detail does not exist")
        return self._detail(entry)

    async def _balance(self, request: web.Request, payload: dict[str, Any]) -> dict[str, Any]:
        return {"available_amount": self._ledger.merchant_balance, "pending_amount": 0}

    # --- contracts -------------------------------------------------------------------

    async def _pre_sign(self, request: web.Request, payload: dict[str, Any]) -> dict[str, Any]:
        user = payload.get("user_info")
        if not isinstance(user, dict):
            raise _Error(400, "PARAM_ERROR", "user_info")
        try:
            account = wire.decrypt_field(self.platform_key, str(user.get("bank_account", "")))
        except ValueError:
            raise _Error(400, "PARAM_ERROR", "bank_account is not encrypted with the platform key") from None
        sign_ref = f"PRE{secrets.token_hex(12).upper()}"
        signing = self._signings[sign_ref] = _Signing(account, f"{secrets.randbelow(1_000_000):06d}")
        phone = str(user.get("phone", ""))
        if phone:
            try:
                self.sms.send(wire.decrypt_field(self.platform_key, phone), signing.sms_code, sign_ref)
            except ValueError:
                raise _Error(400, "PARAM_ERROR", "phone is not encrypted with the platform key") from None
        return {"pre_entrustweb_id": sign_ref}

    async def _confirm(self, request: web.Request, payload: dict[str, Any]) -> dict[str, Any]:
        signing = self._signings.get(request.match_info["id"])
        if signing is None:
            raise _Error(404, "RESOURCE_NOT_EXISTS", "no such signing")
        if not secrets.compare_digest(str(payload.get("sms_code", "")), signing.sms_code):
            raise _Error(400, "PARAM_ERROR", "wrong sms_code")
        if not signing.contract_id:
            signing.contract_id = f"2026{len(self.contracts) + 1:014d}"
            self.contracts[signing.contract_id] = signing.account
        return {"contract_id": signing.contract_id, "contract_state": "SIGNED"}

    async def _terminate(self, request: web.Request, payload: dict[str, Any]) -> None:
        if self.contracts.pop(request.match_info["contract_id"], None) is None:
            raise _Error(404, "RESOURCE_NOT_EXISTS", "no such contract")
        return None

    # --- bills -----------------------------------------------------------------------

    async def _trade_bill(self, request: web.Request, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            day = date.fromisoformat(request.query.get("bill_date", ""))
        except ValueError:
            raise _Error(400, "PARAM_ERROR", "bill_date must be yyyy-MM-DD") from None
        if request.query.get("bill_type", "ALL") != "ALL":
            raise _Error(400, "PARAM_ERROR", "this simulator serves bill_type=ALL only")
        tar_type = request.query.get("tar_type", "")
        if tar_type not in ("", "GZIP"):
            raise _Error(400, "PARAM_ERROR", "tar_type must be GZIP or absent")
        if not self.statements.published(day):
            raise _Error(400, "NO_STATEMENT_EXIST", "the bill does not exist yet")

        def write(lines: Iterator[StatementLine], out: BinaryIO) -> None:
            statement.write_statement(
                lines, out, day=day, appid=self.appid, mchid=self.mchid, compress=tar_type == "GZIP"
            )

        rendered = await self.statements.render(day, write)
        token = self.statements.issue(rendered, BILL_URL_TTL_S)
        url = URL(self.base_url + BILL_FILE_PATH).with_query(token=token)
        return {"hash_type": "SHA1", "hash_value": rendered.sha1, "download_url": str(url)}

    async def _bill_file(self, request: web.Request, payload: dict[str, Any]) -> web.StreamResponse:
        rendered = self.statements.redeem(request.query.get("token", ""))
        if not isinstance(rendered, Rendered):
            raise _Error(400, "INVALID_REQUEST", "the download_url expired")
        return await stream_file(request, rendered, headers={"Content-Type": "application/octet-stream"}, remove=False)

    # --- callbacks -------------------------------------------------------------------

    def resource_of(self, entry: Entry) -> tuple[str, str, str, dict[str, Any]]:
        """(event_type, original_type, associated_data, plaintext resource) of a final entry; public for tests."""
        if entry.kind is EntryKind.REFUND:
            body = self._refund_body(entry)
            body["refund_status"] = body.pop("status")
            body["mchid"] = self.mchid
            return f"REFUND.{body['refund_status']}", "refund", "refund", body
        if entry.kind is EntryKind.PAYOUT:
            batch = self._batch(entry)  # the platform calls back per batch, with empty associated_data
            return f"MCHTRANSFER.BATCH.{batch['batch_status']}", "mch_payment", "", batch
        body = self._transaction(entry)
        event_type = f"TRANSACTION.{'SUCCESS' if entry.status is EntryStatus.SUCCEEDED else 'FAIL'}"
        return event_type, "transaction", "transaction", body

    def _batch(self, entry: Entry) -> dict[str, Any]:
        """The batch of one transfer, as the batch callback's resource describes it."""
        succeeded = entry.status is EntryStatus.SUCCEEDED
        body: dict[str, Any] = {
            "out_batch_no": entry.order_no,
            "batch_id": entry.txn_id,
            "batch_status": "CLOSED" if entry.code == "ORDER_CLOSED" else "FINISHED",
            "total_num": 1,
            "total_amount": entry.amount,
            "success_amount": entry.amount if succeeded else 0,
            "success_num": 1 if succeeded else 0,
            "fail_amount": 0 if succeeded else entry.amount,
            "fail_num": 0 if succeeded else 1,
            "mchid": self.mchid,
            "update_time": _now(),
        }
        if body["batch_status"] == "CLOSED":
            body["close_reason"] = "OVERDUE_CLOSE"
        return body

    def callback_body(self, entry: Entry) -> str:
        event_type, original_type, associated_data, resource = self.resource_of(entry)
        plaintext = json.dumps(resource, ensure_ascii=False, separators=(",", ":"))
        encrypted = wire.encrypt_resource(self.apiv3_key.encode(), plaintext, associated_data=associated_data)
        envelope = {
            "id": secrets.token_hex(16),
            "create_time": _now(),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "simulated",
            "resource": {**encrypted, "original_type": original_type},
        }
        return json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))

    def callback_headers(self, body: str) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            **wire.sign_message(body, key=self.platform_key, serial=self.platform_serial),
        }

    def _notify(self, entry: Entry) -> None:
        url = entry.notify_url or self.notify_url
        if not url:
            return
        body = self.callback_body(entry)
        self.callbacks.send(entry.order_no, url, body.encode(), lambda raw: self.callback_headers(raw.decode()))


def _required(payload: Mapping[str, Any], name: str) -> str:
    value = str(payload.get(name) or "")
    if not value:
        raise _Error(400, "PARAM_ERROR", f"missing {name}")
    return value


def _amount(container: object, name: str) -> int:
    value = container.get(name) if isinstance(container, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise _Error(400, "PARAM_ERROR", f"bad amount {name}")
    return value


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def create(behaviour: Behaviour, *, notify_url: str | None = None, **kw: Any) -> WeChatPaySimulator:
    """Build (not start) a WeChat Pay simulator.

    ``kw``: ``mchid``, ``appid``, ``require_agreement``, ``ledger``, ``key_size``.
    """
    return WeChatPaySimulator(behaviour, notify_url=notify_url, **kw)
