"""The sandbox bank: a simulated channel for tests, the demo and the chaos run.

It speaks the protocol in :mod:`channels.sandbox.wire` (HMAC-signed JSON over
HTTP), keeps a :class:`channels.simkit.Ledger`, and behaves as its
:class:`channels.simkit.Behaviour` says, including the magic amounts listed in
:mod:`channels.simkit`.

Endpoints (all signed, all refused with 503/``2003`` during an outage)::

    POST /v1/withhold              debit a payer under an ACTIVE agreement
    POST /v1/payout                pay from the merchant float to a payee
    POST /v1/refund                return (part of) a successful withhold
    POST /v1/query                 the current result of an order
    POST /v1/close                 close an order number (tombstone if unknown); an unpaid collect closes
    POST /v1/collect               open a cashier (QR, H5 or in-app) for a payer-initiated order
    POST /v1/agreements/sign       start signing; "sends" an SMS code
    POST /v1/agreements/confirm    confirm with the SMS code -> agreement_ref
    POST /v1/agreements/revoke     revoke an agreement
    GET  /v1/balance               the merchant float
    GET  /v1/statements/{day}      the day's statement (channels.sandbox.statement), from the ledger:
                                   signed over its SHA-256; 404 ``4040`` until the day is published

Admin endpoints (unsigned, for tests; served during outages too):
``GET /_admin/ledger``, ``GET|POST /_admin/behaviour``, ``GET /_admin/sms/{sign_ref}``,
``GET|POST|DELETE /_admin/statement/faults`` (:mod:`channels.simkit.bills`),
``GET /_admin/sms?phone=<number>`` (the last SMS sent to a phone number),
and the borrower's ``/_admin/cashier/...`` (:func:`channels.simkit.borrower_routes`).

Collect orders wait for their payer (``3002``) until paid (``0000``, a
notification goes out) or closed (``4005``); the bank refuses a payment after
the order's ``expires_at`` but, unlike Alipay, does not close the order by
itself: the merchant closes it. A cashier is sealed with
:func:`channels.sandbox.wire.cashier_token`; opening one checks the seal.

Callbacks: when a pending order settles (and, with ``Behaviour.notify_final``,
when any order ends at once) a signed :class:`~channels.sandbox.wire.OrderReply`
with ``kind`` is POSTed to the order's ``notify_url`` (or the simulator's
default) until the receiver answers 200 ``OK``.

From code::

    sim = create(Behaviour(), notify_url="http://127.0.0.1:8080/callbacks/sandbox")
    base_url = await sim.start()               # 127.0.0.1, free port
    spec = ChannelSpec("sandbox-1", "sandbox", sim.adapter_settings())
    ...
    await sim.stop()

From the command line: ``python -m channels.sandbox.simulator --port 9100``
(``paygate sandbox`` runs the same :func:`main`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, quote

from aiohttp import web
from yarl import URL

from channels.contract import Cashier, CashierKind, constant_time_equal
from channels.registry import ChannelConfigError
from channels.sandbox import statement, wire
from channels.sandbox.wire import RawCode
from channels.simkit import (
    Behaviour,
    CallbackPolicy,
    Delivery,
    Entry,
    EntryKind,
    EntryStatus,
    Fate,
    Ledger,
    OrderClosed,
    OrderNoConflict,
    Payment,
    PaymentRefused,
    Precheck,
    SimulatorBase,
    behaviour_from_json,
    body_ack,
    cli_parser,
    params_hash,
    serve_until_signalled,
    stream_file,
)
from channels.statement import StatementLine

log = logging.getLogger(__name__)

# Answered for Fate.UNMAPPED_CODE: deliberately absent from wire.ERROR_TABLE.
UNMAPPED_SUCCESS_CODE = "0100"
SMS_MAX_ATTEMPTS = 5


class _Reject(Exception):
    """Answer at once with ``raw_code`` (nothing recorded)."""

    def __init__(self, raw_code: str, status: int = 200) -> None:
        super().__init__(raw_code)
        self.raw_code = raw_code
        self.status = status


@dataclass
class _Signing:
    sign_ref: str
    params_hash: str
    account_no: str
    bank_code: str
    sms_code: str
    expires_at: float
    attempts: int = 0
    agreement_ref: str = ""


@dataclass
class _Agreement:
    agreement_ref: str
    account_no: str
    bank_code: str
    active: bool = True


Handler = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


class SandboxSimulator(SimulatorBase):
    """One simulated sandbox bank (implements :class:`channels.simkit.SimulatorHandle`).

    ``banks``: bank codes served (None = all). ``payer_limit``: largest single
    withhold (None = no limit). ``fee_bps``: fee charged on withholds and
    payouts that succeed, in basis points of the amount (sets the ledger's;
    None keeps the ledger's, 0 by default); it is reported in answers and on
    the statement. ``sms_ttl_s``: life of an SMS code.
    """

    def __init__(
        self,
        behaviour: Behaviour,
        *,
        notify_url: str | None = None,
        merchant_id: str = "sandbox-merchant",
        secret: str = "sandbox-secret",  # noqa: S107 - a simulator's demo default, not a credential
        name: str = "sandbox",
        ledger: Ledger | None = None,
        banks: frozenset[str] | None = None,
        payer_limit: int | None = None,
        fee_bps: int | None = None,
        sms_ttl_s: float = 300.0,
        max_skew_s: float = wire.MAX_SKEW_S,
        callback_policy: CallbackPolicy | None = None,
    ) -> None:
        self.merchant_id = merchant_id
        self._secret = secret
        self.name = name
        self.banks = banks
        self.payer_limit = payer_limit
        self.sms_ttl_s = sms_ttl_s
        self.max_skew_s = max_skew_s
        self._signings: dict[str, _Signing] = {}
        self._signings_by_order: dict[str, str] = {}
        self._agreements: dict[str, _Agreement] = {}
        self._nonces: dict[str, float] = {}
        self._seq = 0
        super().__init__(
            behaviour,
            ledger if ledger is not None else Ledger(txn_prefix="SBX"),
            self._build_app(),
            is_ack=body_ack(wire.CALLBACK_ACK),
            notify_url=notify_url,
            callback_policy=callback_policy,
            close_pending=False,  # pending orders are not closable here: the bank may still execute them
        )
        if fee_bps is not None:
            self.ledger.fee_bps = fee_bps

    def __repr__(self) -> str:
        return f"SandboxSimulator(name={self.name!r}, base_url={self.base_url!r}, merchant_id={self.merchant_id!r})"

    # -- SimulatorHandle --

    def adapter_settings(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "merchant_id": self.merchant_id, "secret": self._secret}

    def sms_code(self, sign_ref: str) -> str:
        return self._signings[sign_ref].sms_code

    def agreement_active(self, agreement_ref: str) -> bool:
        agreement = self._agreements.get(agreement_ref)
        return agreement is not None and agreement.active

    # -- HTTP plumbing --

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        routes: dict[str, Handler] = {
            "/v1/withhold": self._withhold,
            "/v1/payout": self._payout,
            "/v1/refund": self._refund,
            "/v1/query": self._query,
            "/v1/close": self._close,
            "/v1/collect": self._collect,
            "/v1/agreements/sign": self._sign,
            "/v1/agreements/confirm": self._confirm,
            "/v1/agreements/revoke": self._revoke,
        }
        for path, handler in routes.items():
            app.router.add_post(path, self._signed(handler))
        app.router.add_get("/v1/balance", self._signed(self._balance))
        app.router.add_get("/v1/statements/{day}", self._signed(self._statement))
        app.router.add_get(wire.CASHIER_PATH + "{order_no}", self._cashier_page)
        return app

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # An outage refuses before anything is read or recorded; admin stays up to end it.
        if request.path.startswith("/v1/") and self.behaviour.in_outage():
            return self._plain(request, RawCode.MAINTENANCE, status=503)
        return await handler(request)

    def _signed(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def verified(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            if wire.header(request.headers, wire.HEADER_MERCHANT) != self.merchant_id:
                return self._plain(request, RawCode.SIGNATURE_INVALID, status=401)
            try:
                nonce = wire.verify_headers(
                    self._secret, request.headers, request.method, request.path, body, max_skew_s=self.max_skew_s
                )
            except wire.SignatureInvalid as exc:
                return self._plain(request, exc.raw_code, status=401)
            if not self._fresh_nonce(nonce):
                return self._plain(request, RawCode.REQUEST_EXPIRED, status=401)
            try:
                return await handler(request, body)
            except wire.WireError as exc:
                return self._plain(
                    request, RawCode.INVALID_REQUEST, status=400, message=f"invalid request: {exc.field}"
                )
            except _Reject as exc:
                return self._plain(request, exc.raw_code, status=exc.status)

        return verified

    def _fresh_nonce(self, nonce: str) -> bool:
        """False for a nonce seen within its validity window (a replayed request).

        Every nonce lives the same ``2 * max_skew_s``, so insertion order is
        expiry order: expired ones are dropped from the front, O(1) amortized
        per request (rebuilding the whole map once it was large cost O(n) per
        request under sustained load and made the simulator the bottleneck).
        """
        now = time.time()
        nonces = self._nonces
        while nonces:
            oldest = next(iter(nonces))
            if nonces[oldest] > now:
                break
            del nonces[oldest]
        if nonce in nonces:
            return False
        nonces[nonce] = now + 2 * self.max_skew_s
        return True

    def _respond(self, request: web.Request, message: object, status: int = 200) -> web.Response:
        body = wire.encode(message)
        headers = wire.sign_headers(
            self.merchant_id,
            self._secret,
            wire.response_method(status),
            request.path,
            body,
            nonce=wire.header(request.headers, wire.HEADER_NONCE) or wire.new_nonce(),
        )
        return web.Response(status=status, body=body, headers=headers)

    def _plain(self, request: web.Request, raw_code: str, *, status: int = 200, message: str = "") -> web.Response:
        return self._respond(request, wire.PlainReply(raw_code, message or wire.MESSAGES[raw_code]), status)

    def _reply(self, entry: Entry, *, raw_code: str | None = None) -> wire.OrderReply:
        code = raw_code if raw_code is not None else wire.raw_code_for(entry.code)
        fee = entry.fee if entry.status is EntryStatus.SUCCEEDED else None
        return wire.OrderReply(
            code=code,
            message=wire.MESSAGES.get(code, "success"),
            order_no=entry.order_no,
            status=str(entry.status),
            amount=entry.amount,
            txn_id=entry.txn_id,
            fee=fee,
            kind=str(entry.kind),
        )

    def _next_ref(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}{self._seq:010d}"

    # -- money orders --

    async def _withhold(self, request: web.Request, body: bytes) -> web.StreamResponse:
        order = wire.decode(wire.WithholdRequest, body)

        def precheck(entry: Entry) -> str | None:
            agreement = self._agreements.get(order.agreement_ref)
            if agreement is None or not agreement.active or agreement.account_no != order.account_no:
                return "AGREEMENT_INVALID"
            if not self._bank_served(order.bank_code):
                return "BANK_NOT_SUPPORTED"
            if self.payer_limit is not None and order.amount > self.payer_limit:
                return "OVER_PAYER_LIMIT"
            return None

        extra = {"agreement_ref": order.agreement_ref, "bank_code": order.bank_code}
        return await self._money_order(
            request, EntryKind.WITHHOLD, order, order.account_no, extra, order.notify_url, precheck
        )

    async def _payout(self, request: web.Request, body: bytes) -> web.StreamResponse:
        order = wire.decode(wire.PayoutRequest, body)

        def precheck(entry: Entry) -> str | None:
            return None if self._bank_served(order.bank_code) else "BANK_NOT_SUPPORTED"

        extra = {"account_name": order.account_name, "bank_code": order.bank_code}
        return await self._money_order(
            request, EntryKind.PAYOUT, order, order.account_no, extra, order.notify_url, precheck
        )

    async def _refund(self, request: web.Request, body: bytes) -> web.StreamResponse:
        order = wire.decode(wire.RefundRequest, body)
        original = self.ledger.get(order.original_order_no)
        if (
            original is None
            or original.kind not in (EntryKind.WITHHOLD, EntryKind.COLLECT)
            or original.status is not EntryStatus.SUCCEEDED
            or (order.original_txn_id and order.original_txn_id != original.txn_id)
        ):
            raise _Reject(RawCode.ORIGINAL_NOT_REFUNDABLE)

        def precheck(entry: Entry) -> str | None:
            # The new entry is already counted in refunded_total (it is pending).
            over = self.ledger.refunded_total(original.order_no) > original.amount
            return "REFUND_EXCEEDS_ORIGINAL" if over else None

        extra = {"original_order_no": order.original_order_no, "original_txn_id": order.original_txn_id}
        return await self._money_order(
            request, EntryKind.REFUND, order, original.account, extra, order.notify_url, precheck, original.order_no
        )

    def _bank_served(self, bank_code: str) -> bool:
        return self.banks is None or bank_code in self.banks

    async def _money_order(
        self,
        request: web.Request,
        kind: EntryKind,
        order: wire.WithholdRequest | wire.PayoutRequest | wire.RefundRequest,
        account: str,
        extra: Mapping[str, Any],
        notify_url: str,
        precheck: Precheck,
        original_order_no: str = "",
    ) -> web.StreamResponse:
        """Hand a verified money order to the desk and deliver its answer as the fate says.

        A repeat of a known order number gets the order's current result, never a new fate.
        """
        self._check_order(order)
        params = {"amount": order.amount, "currency": order.currency, "account": account, **extra}
        answer = self.desk.submit(
            order.order_no,
            kind,
            order.amount,
            account,
            params,
            currency=order.currency,
            original_order_no=original_order_no,
            notify_url=notify_url or self.notify_url,
            precheck=precheck,
        )
        await self.desk.latency()
        if answer.delivery is Delivery.TIMEOUT:
            await self._hold_then_drop(request)
        if answer.delivery is Delivery.ERROR_5XX:
            return web.Response(status=500, text="internal server error")
        if answer.code == "UNMAPPED":
            return self._respond(request, self._reply(answer.entry, raw_code=UNMAPPED_SUCCESS_CODE))
        return self._respond(request, self._reply(answer.entry))

    def _check_order(
        self, order: wire.WithholdRequest | wire.PayoutRequest | wire.RefundRequest | wire.CollectRequest
    ) -> None:
        """Raises WireError for an order without a number, a positive amount or the ledger's currency."""
        if not order.order_no:
            raise wire.WireError("order_no", "must not be empty")
        if order.amount <= 0:
            raise wire.WireError("amount", "must be > 0")
        if order.currency != self.ledger.currency:
            raise wire.WireError("currency", f"only {self.ledger.currency} is served")

    def _refusal(self, code: str) -> Exception:
        return _Reject(RawCode.ORDER_CLOSED if code == "ORDER_CLOSED" else RawCode.ORDER_NO_CONFLICT)

    def _notify(self, entry: Entry) -> None:
        if entry.notify_url:
            self._send_notice(entry.order_no, entry.notify_url, self._reply(entry))

    def _send_notice(self, key: str, url: str, notice: wire.OrderReply) -> None:
        def sign(payload: bytes) -> dict[str, str]:
            return wire.sign_headers(self.merchant_id, self._secret, "POST", wire.CALLBACK_PATH, payload)

        self.callbacks.send(key, url, wire.encode(notice), sign)

    # -- collect orders --

    async def _collect(self, request: web.Request, body: bytes) -> web.StreamResponse:
        order = wire.decode(wire.CollectRequest, body)
        self._check_order(order)
        try:
            CashierKind(order.cashier)
        except ValueError:
            raise wire.WireError("cashier", "must be qr, h5 or in_app") from None
        if order.expires_at_ms <= time.time() * 1000:
            raise wire.WireError("expires_at_ms", "must be in the future")
        fate = self._collect_fate(order.amount)
        if fate in (Fate.CHANNEL_BUSY, Fate.BANK_NOT_SUPPORTED):
            raise _Reject(RawCode.CHANNEL_BUSY)
        params = dataclasses.asdict(order)
        try:
            entry, _ = self.cashiers.create(
                order.order_no,
                order.amount,
                order.currency,
                order.expires_at_ms / 1000,
                order.cashier,
                params,
                notify_url=order.notify_url or self.notify_url,
            )
        except OrderClosed:
            raise _Reject(RawCode.ORDER_CLOSED) from None
        except OrderNoConflict:
            raise _Reject(RawCode.ORDER_NO_CONFLICT) from None
        await self.desk.latency()
        if fate is Fate.TIMEOUT:
            await self._hold_then_drop(request)
        if fate is Fate.ERROR_5XX:
            return web.Response(status=500, text="internal server error")
        return self._respond(request, self._collect_reply(entry))

    def _collect_reply(self, entry: Entry) -> wire.CollectReply:
        raw = {
            EntryStatus.PENDING: RawCode.AWAITING_PAYMENT,
            EntryStatus.SUCCEEDED: RawCode.SUCCESS,
            EntryStatus.FAILED: RawCode.ORDER_CLOSED,
        }[entry.status]
        state = self.cashiers.state(entry.order_no)
        kind, expires_at = state["cashier"], round(state["expires_at"] * 1000)
        token = wire.cashier_token(self._secret, entry.order_no, entry.amount, expires_at)
        page = f"{self.base_url}{wire.CASHIER_PATH}{quote(entry.order_no, safe='')}?token={token}"
        return wire.CollectReply(
            code=raw,
            message=wire.MESSAGES[raw],
            order_no=entry.order_no,
            status=str(entry.status),
            amount=entry.paid_amount if entry.paid_amount is not None else entry.amount,
            txn_id=entry.txn_id,
            fee=entry.fee if entry.status is EntryStatus.SUCCEEDED else None,
            kind=str(EntryKind.COLLECT),
            cashier=kind,
            qr_code=page if kind == CashierKind.QR else "",
            url=page if kind == CashierKind.H5 else "",
            order_string=wire.in_app_order_string(entry.order_no, entry.amount, expires_at, token)
            if kind == CashierKind.IN_APP
            else "",
        )

    def _order_no_of(self, cashier: Cashier) -> str:
        """The bank's cashier page or the in-app order string, its seal checked."""
        if cashier.order_string:
            fields = dict(parse_qsl(cashier.order_string))
            order_no, token = fields.get("order_no", ""), fields.get("token", "")
        else:
            link = URL(cashier.qr_code or cashier.url)
            if not link.path.startswith(wire.CASHIER_PATH):
                raise PaymentRefused("", "UNKNOWN_ORDER")
            order_no, token = link.path[len(wire.CASHIER_PATH) :], link.query.get("token", "")
        entry = self.cashiers.entry(order_no)
        if entry is None:
            raise PaymentRefused(order_no, "UNKNOWN_ORDER")
        expected = wire.cashier_token(
            self._secret, order_no, entry.amount, round(self.cashiers.expires_at(order_no) * 1000)
        )
        if not constant_time_equal(token, expected):
            raise PaymentRefused(order_no, "BAD_SEAL")
        return order_no

    async def _cashier_page(self, request: web.Request) -> web.Response:
        """The bank's cashier page (QR and H5 point at it): opening it is the borrower opening the cashier."""
        try:
            order_no = self.open_cashier(Cashier(CashierKind.H5, url=str(request.url)))
        except PaymentRefused as refused:
            return web.Response(status=404, text=f"订单无效 / no such order ({refused.code})")
        entry = self.cashiers.entry(order_no)
        assert entry is not None
        amount = f"{entry.amount // 100}.{entry.amount % 100:02d}"
        page = (
            "<html><body><h1>沙箱银行收银台 / sandbox bank cashier</h1>"
            f"<p>{html.escape(order_no)}: {amount} {entry.currency} ({entry.status})</p></body></html>"
        )
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    def _notify_payment(self, entry: Entry, payment: Payment) -> None:
        if not entry.notify_url:
            return
        notice = wire.OrderReply(
            code=RawCode.SUCCESS,
            message=wire.MESSAGES[RawCode.SUCCESS],
            order_no=entry.order_no,
            status=str(EntryStatus.SUCCEEDED),
            amount=payment.amount,
            txn_id=payment.txn_id,
            fee=entry.fee,
            kind=str(EntryKind.COLLECT),
        )
        self._send_notice(f"{entry.order_no}/{payment.txn_id}", entry.notify_url, notice)

    async def _query(self, request: web.Request, body: bytes) -> web.StreamResponse:
        query = wire.decode(wire.OrderQuery, body)
        if self.cashiers.knows(query.order_no):
            entry = self.cashiers.entry(query.order_no)
            assert entry is not None
            return self._respond(request, self._collect_reply(entry))
        entry = self.ledger.get(query.order_no)
        if entry is None:
            code = RawCode.ORDER_CLOSED if self.ledger.is_closed(query.order_no) else RawCode.NOT_FOUND
            return self._respond(request, wire.OrderReply(code, wire.MESSAGES[code], query.order_no))
        return self._respond(request, self._reply(entry))

    async def _close(self, request: web.Request, body: bytes) -> web.StreamResponse:
        # A known order keeps its real result (a pending one is not closable: it may still execute).
        query = wire.decode(wire.OrderQuery, body)
        if not query.order_no:
            raise wire.WireError("order_no", "must not be empty")
        if self.cashiers.knows(query.order_no):
            # an unpaid collect closes for good; one paid before this arrived stays paid
            return self._respond(request, self._collect_reply(self.cashiers.close(query.order_no)))
        entry = self.desk.close(query.order_no)
        if entry is None:
            code = RawCode.ORDER_CLOSED
            return self._respond(request, wire.OrderReply(code, wire.MESSAGES[code], query.order_no, status="CLOSED"))
        return self._respond(request, self._reply(entry))

    # -- agreements and balance --

    async def _sign(self, request: web.Request, body: bytes) -> web.StreamResponse:
        sign = wire.decode(wire.SignAgreementRequest, body)
        for name in ("sign_order_no", "account_no", "holder_name", "id_no", "phone", "bank_code"):
            if not getattr(sign, name):
                raise wire.WireError(name, "must not be empty")
        if not self._bank_served(sign.bank_code):
            raise _Reject(RawCode.BANK_NOT_SUPPORTED)
        digest = params_hash(dataclasses.asdict(sign))
        known = self._signings_by_order.get(sign.sign_order_no)
        if known is not None:
            signing = self._signings[known]
            if signing.params_hash != digest:
                raise _Reject(RawCode.ORDER_NO_CONFLICT)
        else:
            signing = _Signing(
                sign_ref=self._next_ref("S"),
                params_hash=digest,
                account_no=sign.account_no,
                bank_code=sign.bank_code,
                sms_code=f"{self.desk.rng.randrange(1_000_000):06d}",
                expires_at=time.time() + self.sms_ttl_s,
            )
            self._signings[signing.sign_ref] = signing
            self._signings_by_order[sign.sign_order_no] = signing.sign_ref
            self.sms.send(sign.phone, signing.sms_code, signing.sign_ref)
        ok = RawCode.SUCCESS
        return self._respond(request, wire.SignAgreementReply(ok, wire.MESSAGES[ok], signing.sign_ref))

    async def _confirm(self, request: web.Request, body: bytes) -> web.StreamResponse:
        confirm = wire.decode(wire.ConfirmAgreementRequest, body)
        signing = self._signings.get(confirm.sign_ref)
        if signing is None:
            raise _Reject(RawCode.SIGN_REF_UNKNOWN)
        if not signing.agreement_ref:
            if time.time() >= signing.expires_at or signing.attempts >= SMS_MAX_ATTEMPTS:
                raise _Reject(RawCode.SMS_CODE_EXPIRED)
            if confirm.sms_code != signing.sms_code:
                signing.attempts += 1
                raise _Reject(RawCode.SMS_CODE_INVALID)
            signing.agreement_ref = self._next_ref("A")
            self._agreements[signing.agreement_ref] = _Agreement(
                signing.agreement_ref, signing.account_no, signing.bank_code
            )
        ok = RawCode.SUCCESS
        return self._respond(request, wire.ConfirmAgreementReply(ok, wire.MESSAGES[ok], signing.agreement_ref))

    async def _revoke(self, request: web.Request, body: bytes) -> web.StreamResponse:
        revoke = wire.decode(wire.RevokeAgreementRequest, body)
        agreement = self._agreements.get(revoke.agreement_ref)
        if agreement is None:
            raise _Reject(RawCode.AGREEMENT_NOT_FOUND)
        agreement.active = False
        return self._plain(request, RawCode.SUCCESS)

    async def _balance(self, request: web.Request, body: bytes) -> web.StreamResponse:
        ok = RawCode.SUCCESS
        reply = wire.BalanceReply(ok, wire.MESSAGES[ok], self.ledger.merchant_balance, self.ledger.currency)
        return self._respond(request, reply)

    # -- statements --

    async def _statement(self, request: web.Request, body: bytes) -> web.StreamResponse:
        try:
            day = date.fromisoformat(request.match_info["day"])
        except ValueError:
            raise wire.WireError("day", "not a date (YYYY-MM-DD)") from None
        if not self.statements.published(day):
            return self._plain(request, RawCode.NOT_FOUND, status=404, message="statement not published yet")

        def write(lines: Iterator[StatementLine], out: BinaryIO) -> None:
            statement.write_statement(
                lines, out, day=day, merchant_id=self.merchant_id, timezone=self.ledger.statement_tz
            )

        rendered = await self.statements.render(day, write)
        headers = wire.sign_headers(
            self.merchant_id,
            self._secret,
            wire.response_method(200),
            request.path,
            rendered.sha256.encode(),
            nonce=wire.header(request.headers, wire.HEADER_NONCE),
        )
        headers[wire.HEADER_CONTENT_SHA256] = rendered.sha256
        headers["Content-Type"] = "text/csv; charset=utf-8"
        return await stream_file(request, rendered, headers=headers, remove=True)


def create(behaviour: Behaviour, *, notify_url: str | None = None, **kw: Any) -> SandboxSimulator:
    """Build (not start) a sandbox simulator; ``kw`` are :class:`SandboxSimulator` options."""
    return SandboxSimulator(behaviour, notify_url=notify_url, **kw)


async def run(argv: list[str]) -> int:
    """``paygate sandbox``: serve a sandbox bank until SIGTERM/SIGINT. Returns the exit code."""
    parser = cli_parser("paygate sandbox", "Run the sandbox bank simulator.")
    parser.add_argument("--merchant-id", default="sandbox-merchant")
    parser.add_argument("--secret", default="sandbox-secret", help="HMAC secret shared with the adapter")
    parser.add_argument("--name", default="sandbox")
    parser.add_argument("--banks", default="", help="comma-separated bank codes served (default: all)")
    args = parser.parse_args(argv)
    try:
        behaviour = behaviour_from_json(args.behaviour_json)
    except ChannelConfigError as exc:
        print(f"paygate sandbox: {exc}", file=sys.stderr)
        return 2
    banks = frozenset(b.strip() for b in args.banks.split(",") if b.strip()) or None
    simulator = create(
        behaviour,
        notify_url=args.notify_url,
        merchant_id=args.merchant_id,
        secret=args.secret,
        name=args.name,
        banks=banks,
    )

    def announce(url: str) -> None:
        print(f"sandbox simulator {args.name!r} listening on {url}", flush=True)

    return await serve_until_signalled(simulator, args.host, args.port, announce=announce)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
