"""A channel of our own for unit tests: implements ``channels.contract.Channel`` with scripted answers.

Every order, query and close it receives is kept (``calls``) so a test can
count debits; ``before_call`` runs before an order is answered, e.g. to check
that its attempt was recorded first. Callbacks are JSON signed with an HMAC
(:meth:`FakeChannel.callback`), verified in constant time like a real adapter.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from channels.contract import (
    AgreementConfirmed,
    Balance,
    CallbackNotice,
    CallbackRejected,
    ChannelRejected,
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
    succeeded,
)
from channels.statement import StatementFile, StatementUnavailable

SIGNATURE_HEADER = "X-Fake-Signature"


@dataclass(frozen=True)
class Hang:
    """A scripted answer: the adapter takes ``seconds`` before answering ``then``."""

    seconds: float
    then: Outcome = field(default_factory=lambda: succeeded("00"))


Answer = Outcome | BaseException | Hang


def ok(txn: str = "T1", **kw: Any) -> Outcome:
    return succeeded("00", channel_txn_id=txn, **kw)


def busy() -> Outcome:
    """A definite failure the error table marks safe elsewhere (nothing was charged)."""
    return Outcome(OutcomeStatus.FAILED, "CHANNEL_BUSY", raw_code="96", safe_elsewhere=True)


def insufficient_funds() -> Outcome:
    """A definite failure the payer caused: never a reason to fail over."""
    return Outcome(OutcomeStatus.FAILED, "INSUFFICIENT_FUNDS", raw_code="51", payer_attributable=True)


def declined() -> Outcome:
    """A definite failure that is not safe elsewhere (the channel may have processed it)."""
    return Outcome(OutcomeStatus.FAILED, "DO_NOT_HONOUR", raw_code="05")


def processing() -> Outcome:
    return pending("PROCESSING", raw_code="P1")


def timeout() -> Outcome:
    return pending("TIMEOUT", raw_message="no answer after sending")


def unmapped(raw_code: str = "ZZ99") -> Outcome:
    return Outcome(OutcomeStatus.PENDING, "UNMAPPED", raw_code=raw_code, unmapped=True)


def not_found() -> Outcome:
    return pending("ORDER_NOT_FOUND", raw_code="NF", not_found=True)


def closed() -> Outcome:
    return Outcome(OutcomeStatus.FAILED, "ORDER_CLOSED", raw_code="CLOSED")


class FakeChannel:
    """Implements :class:`channels.contract.Channel`; answers come from per-kind scripts (default: success)."""

    def __init__(
        self,
        channel_id: str,
        *,
        operations: frozenset[Operation] | None = None,
        banks: frozenset[str] | None = None,
        secret: bytes = b"fake-secret",
    ) -> None:
        self._id = channel_id
        self._operations = operations or frozenset(Operation) - {Operation.STATEMENT}  # it publishes none
        self._banks = banks
        self.secret = secret
        self.scripts: dict[str, list[Answer]] = {"order": [], "query": [], "close": []}
        self.calls: list[tuple[str, Any]] = []  # (kind, order or ref), in arrival order
        self.before_call: Callable[[str, str], None] | None = None  # (operation, channel_order_no)
        self.sign_error: BaseException | None = None
        self.revoke_error: BaseException | None = None
        self.sms_code = "123456"
        self.confirm_delay_s = 0.0  # the channel takes this long to answer a confirm
        self.balance_available = 0
        self.balance_currency = "CNY"
        self.before_balance: Callable[[], None] | None = None  # runs as the balance query is answered

    # --- scripting --------------------------------------------------------------------

    def answer(self, *answers: Answer) -> FakeChannel:
        """The next order calls (withhold / payout / refund) answer these, in order."""
        self.scripts["order"].extend(answers)
        return self

    def answer_queries(self, *answers: Answer) -> FakeChannel:
        self.scripts["query"].extend(answers)
        return self

    def answer_closes(self, *answers: Answer) -> FakeChannel:
        self.scripts["close"].extend(answers)
        return self

    def orders(self, operation: str | None = None) -> list[Any]:
        """The orders received (what could have moved money), optionally of one operation."""
        return [o for kind, o in self.calls if kind in ("withhold", "payout", "refund") and kind == (operation or kind)]

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]

    async def _answer(self, script: str, default: Outcome) -> Outcome:
        queue = self.scripts[script]
        item: Answer = queue.pop(0) if queue else default
        if isinstance(item, Hang):
            await asyncio.sleep(item.seconds)
            return item.then
        if isinstance(item, BaseException):
            raise item
        await asyncio.sleep(0)  # an adapter always yields to the loop at least once
        return item

    async def _order(self, operation: str, order: WithholdOrder | PayoutOrder | RefundOrder) -> Outcome:
        self.calls.append((operation, order))
        if self.before_call is not None:
            self.before_call(operation, order.channel_order_no)
        return await self._answer("order", ok(f"T-{order.channel_order_no}"))

    # --- the contract -----------------------------------------------------------------

    @property
    def channel_id(self) -> str:
        return self._id

    @property
    def operations(self) -> frozenset[Operation]:
        return self._operations

    @property
    def currencies(self) -> frozenset[str]:
        return frozenset({"CNY"})

    @property
    def banks(self) -> frozenset[str] | None:
        return self._banks

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def withhold(self, order: WithholdOrder) -> Outcome:
        return await self._order("withhold", order)

    async def payout(self, order: PayoutOrder) -> Outcome:
        return await self._order("payout", order)

    async def refund(self, order: RefundOrder) -> Outcome:
        return await self._order("refund", order)

    async def query(self, ref: OrderRef) -> Outcome:
        self.calls.append(("query", ref))
        return await self._answer("query", processing())

    async def close_order(self, ref: OrderRef) -> Outcome:
        self.calls.append(("close", ref))
        return await self._answer("close", closed())

    async def sign_agreement(self, request: SignRequest) -> SignStarted:
        self.calls.append(("sign", request))
        if self.sign_error is not None:
            raise self.sign_error
        return SignStarted(f"sign-{request.sign_order_no}")

    async def confirm_agreement(self, sign_ref: str, sms_code: str) -> AgreementConfirmed:
        self.calls.append(("confirm", sign_ref))
        await asyncio.sleep(self.confirm_delay_s)
        if sms_code != self.sms_code:
            raise ChannelRejected(self._id, "SMS_CODE_INVALID", "wrong code")
        return AgreementConfirmed(f"agr-{sign_ref}")

    async def revoke_agreement(self, agreement_ref: str) -> None:
        self.calls.append(("revoke", agreement_ref))
        if self.revoke_error is not None:
            raise self.revoke_error

    async def balance(self) -> Balance:
        self.calls.append(("balance", None))
        if self.before_balance is not None:
            self.before_balance()
        return Balance(self.balance_available, self.balance_currency)

    async def fetch_statement(self, day: date, dest_dir: str) -> StatementFile:
        raise StatementUnavailable(f"{self._id}: the fake channel publishes no statements")

    def callback(
        self,
        order_no: str,
        outcome: Outcome,
        *,
        operation: Operation = Operation.WITHHOLD,
        amount: int | None = None,
        secret: bytes | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """Headers and body of a callback this channel would send (``secret`` to forge one)."""
        body = json.dumps(
            {
                "order": order_no,
                "operation": operation.value,
                "status": outcome.status.value,
                "code": outcome.code,
                "raw_code": outcome.raw_code,
                "txn": outcome.channel_txn_id,
                "amount": amount,
            }
        ).encode()
        signature = hmac.new(secret or self.secret, body, hashlib.sha256).hexdigest()
        return {SIGNATURE_HEADER: signature, "Content-Type": "application/json"}, body

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackNotice:
        try:
            doc = json.loads(body)
            order_no = str(doc["order"])
        except (ValueError, KeyError, TypeError):
            raise CallbackRejected(self._id, "malformed body") from None
        expected = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if not constant_time_equal(headers.get(SIGNATURE_HEADER, ""), expected):
            raise CallbackRejected(self._id, "bad signature", channel_order_no=order_no, bad_signature=True)
        outcome = Outcome(
            OutcomeStatus(doc["status"]), doc["code"], raw_code=doc["raw_code"], channel_txn_id=doc["txn"] or ""
        )
        return CallbackNotice(order_no, Operation(doc["operation"]), outcome, doc["amount"])

    def callback_reply(self, accepted: bool) -> HttpReply:
        return HttpReply(200, b"OK") if accepted else HttpReply(400, b"FAIL")
