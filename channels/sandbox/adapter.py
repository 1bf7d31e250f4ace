"""The sandbox channel adapter: paygate orders over the sandbox bank's HTTP protocol.

Settings (``[channels.settings]`` of an entry with ``adapter = "sandbox"``): the fields of
:class:`SandboxSettings`, with their types and defaults.

How answers become outcomes (DESIGN.md invariant 3):

* connection refused, DNS failure, connect timeout: nothing was sent ->
  FAILED ``CONNECTION_FAILED``, ``safe_elsewhere``;
* timeout after the request was sent -> PENDING ``TIMEOUT``; connection lost
  after sending -> PENDING ``CONNECTION_LOST``;
* a verified 503 with the bank's maintenance code -> FAILED
  ``CHANNEL_MAINTENANCE``, ``safe_elsewhere`` (nothing executed);
* any other 5xx -> PENDING ``CHANNEL_5XX``;
* a response whose signature does not verify -> PENDING ``RESPONSE_SIGNATURE_INVALID``;
  an unparseable body or one about another order -> PENDING ``BAD_RESPONSE``;
* otherwise the raw code through :data:`channels.sandbox.wire.ERROR_TABLE`
  (unmapped -> PENDING ``UNMAPPED``); a query for an unknown order -> PENDING
  ``NOT_FOUND`` with ``not_found=True``.

Statements: ``GET /v1/statements/{day}`` streams the day's file
(:mod:`channels.sandbox.statement`) to disk; the answer is signed over the
file's SHA-256, which must match what arrived. Not published (404), no
answer, 5xx or maintenance -> StatementUnavailable; a bad signature or
digest -> StatementError.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Annotated, TypeVar

from pydantic import AfterValidator
from yarl import URL

from channels.config import TABLE, Names, Operations, Seconds
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
    PayoutOrder,
    RefundOrder,
    SignRequest,
    SignStarted,
    WithholdOrder,
    constant_time_equal,
    pending,
    refused_request,
)
from channels.http import ChannelHttp, HttpChannel, Lost, Response, StatementDownload, Unsent
from channels.registry import ChannelSpec
from channels.sandbox import statement, wire
from channels.sandbox.wire import RawCode
from channels.settings import BaseUrl, SecretText, Text
from channels.statement import StatementError, StatementFile, StatementUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

_KINDS: dict[str, Operation] = {
    "withhold": Operation.WITHHOLD,
    "payout": Operation.PAYOUT,
    "refund": Operation.REFUND,
}


def _at_least_one(currencies: frozenset[str]) -> frozenset[str]:
    if not currencies:
        raise ValueError("must name at least one currency")
    return currencies


@dataclass(frozen=True)
class SandboxSettings:
    """The ``[channels.settings]`` of a sandbox channel (see the module docstring and :mod:`channels.config`)."""

    __pydantic_config__ = TABLE

    base_url: BaseUrl  # e.g. "http://127.0.0.1:9100"
    merchant_id: Text
    secret: SecretText  # the HMAC key: never logged or shown in repr
    timeout_s: Seconds = 10.0  # whole-call budget once connected
    connect_timeout_s: Seconds = 2.0  # connecting (nothing sent yet)
    operations: Operations = frozenset(Operation)  # of withhold, payout, refund, agreement, balance, statement
    currencies: Annotated[Names, AfterValidator(_at_least_one)] = frozenset({"CNY"})
    banks: Names | None = None  # bank codes served; None: any bank
    callback_max_skew_s: Seconds = wire.MAX_SKEW_S  # accepted callback timestamp skew
    statement_timeout_s: Seconds = 300.0  # downloading one day's statement

    @classmethod
    def from_spec(cls, spec: ChannelSpec) -> SandboxSettings:
        """Raises ConfigError naming ``<spec.key>.<setting>``."""
        return spec.read(cls)


# --- one HTTP exchange -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Answered:
    status: int
    body: bytes
    verified: bool


# The names this module's unit tests build exchanges with.
_Unsent, _Lost = Unsent, Lost
_Exchange = Unsent | Lost | _Answered


class SandboxChannel(HttpChannel):
    """One sandbox bank connection (implements :class:`channels.contract.Channel`)."""

    def __init__(self, channel_id: str, settings: SandboxSettings) -> None:
        # Whole call: connecting, then up to timeout_s for the answer (and between its bytes).
        http = ChannelHttp(
            connect_timeout_s=settings.connect_timeout_s,
            timeout_s=settings.connect_timeout_s + settings.timeout_s,
            read_timeout_s=settings.timeout_s,
        )
        super().__init__(
            channel_id,
            http,
            operations=settings.operations,
            currencies=settings.currencies,
            banks=settings.banks,
        )
        self.settings = settings

    def __repr__(self) -> str:
        s = self.settings
        return f"SandboxChannel(id={self._channel_id!r}, base_url={s.base_url!r}, merchant_id={s.merchant_id!r})"

    # -- money orders --

    async def withhold(self, order: WithholdOrder) -> Outcome:
        request = wire.WithholdRequest(
            order_no=order.channel_order_no,
            amount=order.amount,
            currency=order.currency,
            agreement_ref=order.agreement_ref,
            account_no=order.account_no,
            bank_code=order.bank_code,
            description=order.description,
            notify_url=order.notify_url,
        )
        return await self._order("/v1/withhold", request, order.channel_order_no)

    async def payout(self, order: PayoutOrder) -> Outcome:
        request = wire.PayoutRequest(
            order_no=order.channel_order_no,
            amount=order.amount,
            currency=order.currency,
            account_no=order.account_no,
            account_name=order.account_name,
            bank_code=order.bank_code,
            description=order.description,
            notify_url=order.notify_url,
        )
        return await self._order("/v1/payout", request, order.channel_order_no)

    async def refund(self, order: RefundOrder) -> Outcome:
        request = wire.RefundRequest(
            order_no=order.channel_order_no,
            original_order_no=order.original_channel_order_no,
            amount=order.amount,
            currency=order.currency,
            original_txn_id=order.original_channel_txn_id,
            reason=order.reason,
            notify_url=order.notify_url,
        )
        return await self._order("/v1/refund", request, order.channel_order_no)

    async def query(self, ref: OrderRef) -> Outcome:
        query = wire.OrderQuery(ref.channel_order_no, str(ref.operation))
        return await self._order("/v1/query", query, ref.channel_order_no, asking=True)

    async def close_order(self, ref: OrderRef) -> Outcome:
        query = wire.OrderQuery(ref.channel_order_no, str(ref.operation))
        return await self._order("/v1/close", query, ref.channel_order_no, asking=True)

    async def _order(self, path: str, request: object, order_no: str, *, asking: bool = False) -> Outcome:
        """Send an order (or, ``asking``, a query or close about an earlier one); map the answer.

        A refusal that names no order (not sent, maintenance, a rejected
        request) means "nothing executed" for a new order, but says nothing
        about an earlier one: for a query or close it is PENDING, never FAILED.
        """
        exchange = await self._exchange("POST", path, wire.encode(request))
        outcome = self._order_outcome(exchange, order_no)
        if asking and not _names_order(exchange, order_no):
            outcome = refused_request(outcome)
        log.debug(  # the gateway logs every channel call at INFO ("channel call", with the raw code)
            "sandbox %s %s order=%s -> %s %s raw=%s",
            self._channel_id,
            path,
            order_no,
            outcome.status,
            outcome.code,
            outcome.raw_code,
        )
        return outcome

    def _order_outcome(self, exchange: _Exchange, order_no: str) -> Outcome:
        if isinstance(exchange, Unsent | Lost):
            return exchange.outcome()
        if exchange.status == 503 and exchange.verified:
            # The bank's own, signed "maintenance, not processed": nothing executed.
            refusal = _parse(wire.PlainReply, exchange.body)
            if refusal is not None and refusal.code == RawCode.MAINTENANCE:
                return wire.ERROR_TABLE.outcome(refusal.code, refusal.message)
        if exchange.status >= 500:
            return pending("CHANNEL_5XX", raw_code=str(exchange.status))
        if not exchange.verified:
            return pending("RESPONSE_SIGNATURE_INVALID", raw_code=str(exchange.status))
        reply = _parse(wire.OrderReply, exchange.body)
        if reply is None:
            # A verified rejection before any order existed (bad request, closed order no) names no order.
            plain = _parse(wire.PlainReply, exchange.body)
            if plain is None:
                return pending("BAD_RESPONSE", raw_code=str(exchange.status))
            return wire.ERROR_TABLE.outcome(plain.code, plain.message)
        if reply.order_no != order_no:
            return pending("BAD_RESPONSE", raw_code=reply.code, raw_message="answer is about another order")
        if reply.code == RawCode.NOT_FOUND:
            return pending("NOT_FOUND", raw_code=reply.code, raw_message=reply.message, not_found=True)
        return wire.ERROR_TABLE.outcome(
            reply.code, reply.message, channel_txn_id=reply.txn_id, fee=reply.fee, amount=reply.amount
        )

    # -- agreements and balance --

    async def sign_agreement(self, request: SignRequest) -> SignStarted:
        body = wire.SignAgreementRequest(
            sign_order_no=request.sign_order_no,
            account_no=request.account_no,
            holder_name=request.holder_name,
            id_no=request.id_no,
            phone=request.phone,
            bank_code=request.bank_code,
        )
        reply = await self._call_ok("/v1/agreements/sign", body, wire.SignAgreementReply)
        return SignStarted(sign_ref=reply.sign_ref)

    async def confirm_agreement(self, sign_ref: str, sms_code: str) -> AgreementConfirmed:
        body = wire.ConfirmAgreementRequest(sign_ref=sign_ref, sms_code=sms_code)
        reply = await self._call_ok("/v1/agreements/confirm", body, wire.ConfirmAgreementReply)
        return AgreementConfirmed(agreement_ref=reply.agreement_ref)

    async def revoke_agreement(self, agreement_ref: str) -> None:
        await self._call_ok("/v1/agreements/revoke", wire.RevokeAgreementRequest(agreement_ref), wire.PlainReply)

    async def balance(self) -> Balance:
        reply = await self._call_ok("/v1/balance", None, wire.BalanceReply)
        if reply.available is None or not reply.currency:
            raise ChannelUnavailable(self._channel_id, "balance answer without amount or currency")
        return Balance(available=reply.available, currency=reply.currency)

    async def _call_ok(self, path: str, request: object | None, reply_type: type[T]) -> T:
        """A non-order call that must answer ``0000``.

        Raises ChannelUnavailable (no trustworthy answer) or ChannelRejected
        (the bank said no; ``code`` is the normalized code).
        """
        method, body = ("GET", b"") if request is None else ("POST", wire.encode(request))
        exchange = await self._exchange(method, path, body)
        if isinstance(exchange, Unsent | Lost):
            raise ChannelUnavailable(self._channel_id, f"{path}: {exchange}")
        if exchange.status >= 500 or not exchange.verified:
            raise ChannelUnavailable(self._channel_id, f"{path}: HTTP {exchange.status}, verified={exchange.verified}")
        plain = _parse(wire.PlainReply, exchange.body)
        if plain is None:
            raise ChannelUnavailable(self._channel_id, f"{path}: unparseable answer")
        if plain.code != RawCode.SUCCESS:
            rule = wire.ERROR_TABLE.rule(plain.code)
            code = rule.code if rule is not None else "UNMAPPED"
            payer = rule.payer_attributable if rule is not None else False
            raise ChannelRejected(self._channel_id, code, f"{plain.code} {plain.message}", payer_attributable=payer)
        reply = _parse(reply_type, exchange.body)
        if reply is None:
            raise ChannelUnavailable(self._channel_id, f"{path}: unparseable answer")
        return reply

    # -- statements --

    async def fetch_statement(self, day: date, dest_dir: str) -> StatementFile:
        if Operation.STATEMENT not in self.operations:
            raise StatementUnavailable(f"{self._channel_id}: statements are not enabled for this channel")
        url = URL(self.settings.base_url + wire.statement_path(day))
        headers = wire.sign_headers(self.settings.merchant_id, self.settings.secret.reveal(), "GET", url.path, b"")
        download = StatementDownload(
            self._http,
            self._channel_id,
            day,
            dest_dir,
            format=statement.FORMAT.name,
            suffix=".csv",
            timeout_s=self.settings.statement_timeout_s,
        )
        async with download:
            answer = await download.fetch("GET", url, headers=headers)
            if isinstance(answer, Unsent | Lost):
                raise StatementUnavailable(f"{self._channel_id}: statement of {day}: {answer}")
            if isinstance(answer, Response):
                raise self._statement_refusal(day, url, headers[wire.HEADER_NONCE], answer)
            digest = wire.header(answer.headers, wire.HEADER_CONTENT_SHA256)
            try:
                wire.verify_headers(
                    self.settings.secret.reveal(),
                    answer.headers,
                    wire.response_method(200),
                    url.path,
                    digest.encode(),
                    expected_nonce=headers[wire.HEADER_NONCE],
                    max_skew_s=self.settings.callback_max_skew_s,
                )
            except wire.SignatureInvalid as exc:
                raise StatementError(f"{self._channel_id}: statement of {day}: {exc.reason}") from None
            if not constant_time_equal(digest, answer.digests["sha256"]):
                raise StatementError(
                    f"{self._channel_id}: statement of {day}: the file does not match its signed digest"
                )
            return await download.keep(answer, source=str(url))

    def _statement_refusal(self, day: date, url: URL, nonce: str, answer: Response) -> StatementError:
        """Why the bank did not send the statement: unavailable (retry later) or an error."""
        try:
            wire.verify_headers(
                self.settings.secret.reveal(),
                answer.headers,
                wire.response_method(answer.status),
                url.path,
                answer.body,
                expected_nonce=nonce,
                max_skew_s=self.settings.callback_max_skew_s,
            )
            verified = True
        except wire.SignatureInvalid:
            verified = False
        plain = _parse(wire.PlainReply, answer.body) if verified else None
        what = f"{self._channel_id}: statement of {day}: HTTP {answer.status}"
        if plain is not None:
            what += f" {plain.code} {plain.message}"
        if answer.status >= 500 or (plain is not None and plain.code == RawCode.NOT_FOUND):
            return StatementUnavailable(what)
        return StatementError(what if verified else f"{what} (answer not signed by the bank)")

    # -- HTTP --

    async def _exchange(self, method: str, path: str, body: bytes) -> _Exchange:
        url = URL(self.settings.base_url + path)
        headers = wire.sign_headers(self.settings.merchant_id, self.settings.secret.reveal(), method, url.path, body)
        nonce = headers[wire.HEADER_NONCE]
        response = await self._http.send(method, url, data=body or None, headers=headers)
        if not isinstance(response, Response):
            return response
        status, payload = response.status, response.body
        try:
            wire.verify_headers(
                self.settings.secret.reveal(),
                response.headers,
                wire.response_method(status),
                url.path,
                payload,
                expected_nonce=nonce,
                max_skew_s=self.settings.callback_max_skew_s,
            )
            verified = True
        except wire.SignatureInvalid as exc:
            if status < 500:
                log.warning("sandbox %s %s: response rejected: %s", self._channel_id, path, exc.reason)
            verified = False
        return _Answered(status, payload, verified)

    # -- callbacks --

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackNotice:
        try:
            wire.verify_headers(
                self.settings.secret.reveal(),
                headers,
                "POST",
                wire.CALLBACK_PATH,
                body,
                max_skew_s=self.settings.callback_max_skew_s,
            )
        except wire.SignatureInvalid as exc:
            # The unverified order number is only used to ask the channel directly, never to change state.
            peek = _parse(wire.OrderReply, body)
            raise CallbackRejected(
                self._channel_id,
                f"signature: {exc.reason}",
                channel_order_no=peek.order_no if peek else "",
                bad_signature=True,
            ) from None
        if wire.header(headers, wire.HEADER_MERCHANT) != self.settings.merchant_id:
            raise CallbackRejected(self._channel_id, "merchant id does not match")
        try:
            notice = wire.decode(wire.OrderReply, body)
        except wire.WireError as exc:
            raise CallbackRejected(self._channel_id, f"format: {exc}") from None
        operation = _KINDS.get(notice.kind)
        if operation is None or not notice.order_no:
            raise CallbackRejected(self._channel_id, "format: kind or order_no", channel_order_no=notice.order_no)
        outcome = wire.ERROR_TABLE.outcome(
            notice.code, notice.message, channel_txn_id=notice.txn_id, fee=notice.fee, amount=notice.amount
        )
        return CallbackNotice(
            channel_order_no=notice.order_no, operation=operation, outcome=outcome, amount=notice.amount
        )

    def callback_reply(self, accepted: bool) -> HttpReply:
        if accepted:
            return HttpReply(200, wire.CALLBACK_ACK)
        return HttpReply(400, b"FAIL")


def _names_order(exchange: _Exchange, order_no: str) -> bool:
    """True when the exchange is a verified answer about ``order_no`` itself."""
    if not isinstance(exchange, _Answered) or not exchange.verified:
        return False
    reply = _parse(wire.OrderReply, exchange.body)
    return reply is not None and reply.order_no == order_no


def _parse(cls: type[T], body: bytes) -> T | None:
    try:
        return wire.decode(cls, body)
    except wire.WireError:
        return None


def build(spec: ChannelSpec) -> SandboxChannel:
    """Registry factory (``adapter = "sandbox"``). Raises ConfigError naming the bad setting."""
    return SandboxChannel(spec.channel_id, SandboxSettings.from_spec(spec))
