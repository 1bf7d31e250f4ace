"""<Name> adapter: paygate's Channel protocol over the channel's HTTP API.

Rules every adapter follows (DESIGN.md invariant 3):

* send every request through :class:`channels.http.ChannelHttp`: its ``Unsent``
  (nothing sent -> FAILED ``CONNECTION_FAILED``, ``safe_elsewhere=True``) and
  ``Lost`` (sent, no answer -> PENDING) carry their ``outcome()``;
* 5xx or an unverifiable answer after sending -> PENDING (``Lost(code, why).outcome()``);
* a raw code -> ``wire.CODES.outcome(raw)``; unknown codes become PENDING ``UNMAPPED``;
* credentials never in ``repr``, logs or error messages; card numbers masked;
* statements: stream the day's file with :class:`channels.http.StatementDownload`,
  check what the channel gives to check it with (a signed digest, a published
  hash), raise ``StatementUnavailable`` when it is not there yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from channels import settings as setting
from channels._template import statement, wire
from channels.config import TABLE, Seconds
from channels.contract import (
    AgreementConfirmed,
    Balance,
    CallbackNotice,
    CallbackRejected,
    HttpReply,
    Operation,
    OrderRef,
    Outcome,
    PayoutOrder,
    RefundOrder,
    SignRequest,
    SignStarted,
    WithholdOrder,
    pending,
)
from channels.http import ChannelHttp, HttpChannel, Lost, Response, StatementDownload, Unsent
from channels.registry import ChannelSpec
from channels.settings import HttpUrl, SecretText, Text
from channels.statement import StatementError, StatementFile, StatementUnavailable

STATEMENT_SIGNATURE = "X-Statement-Signature"  # the channel's HMAC over the file's SHA-256


@dataclass(frozen=True)
class TemplateSettings:
    """The ``[channels.settings]`` keys: type, bounds and the one default each (see :mod:`channels.config`)."""

    __pydantic_config__ = TABLE

    base_url: HttpUrl
    merchant_id: Text
    secret: SecretText  # a Secret: never in repr, logs or error messages
    connect_timeout_s: Seconds = 3.0
    timeout_s: Seconds = 10.0  # whole-call budget, longer than connect_timeout_s

    def check_config(self, key: str) -> None:
        setting.check_timeouts(key, self.connect_timeout_s, self.timeout_s)


class TemplateChannel(HttpChannel):
    """Replace the bodies; keep the signatures (they are channels.contract.Channel)."""

    def __init__(self, channel_id: str, settings: TemplateSettings) -> None:
        http = ChannelHttp(connect_timeout_s=settings.connect_timeout_s, timeout_s=settings.timeout_s)
        operations = frozenset({Operation.WITHHOLD, Operation.REFUND, Operation.STATEMENT})
        super().__init__(channel_id, http, operations=operations)
        self._settings = settings

    async def withhold(self, order: WithholdOrder) -> Outcome:
        # Sign the request, then ``await self._http.send(...)``: an Unsent or Lost is already its outcome().
        return pending("NOT_IMPLEMENTED")

    async def payout(self, order: PayoutOrder) -> Outcome:
        return pending("NOT_IMPLEMENTED")

    async def refund(self, order: RefundOrder) -> Outcome:
        return pending("NOT_IMPLEMENTED")

    async def query(self, ref: OrderRef) -> Outcome:
        return pending("NOT_IMPLEMENTED")

    async def close_order(self, ref: OrderRef) -> Outcome:
        return pending("NOT_IMPLEMENTED")

    async def sign_agreement(self, request: SignRequest) -> SignStarted:
        raise NotImplementedError

    async def confirm_agreement(self, sign_ref: str, sms_code: str) -> AgreementConfirmed:
        raise NotImplementedError

    async def revoke_agreement(self, agreement_ref: str) -> None:
        raise NotImplementedError

    async def balance(self) -> Balance:
        raise NotImplementedError

    async def fetch_statement(self, day: date, dest_dir: str) -> StatementFile:
        url = f"{self._settings.base_url}/statements/{day.isoformat()}"
        download = StatementDownload(
            self._http, self._channel_id, day, dest_dir, format=statement.FORMAT.name, suffix=".csv", timeout_s=300.0
        )
        async with download:
            answer = await download.fetch("GET", url)  # sign the request as the channel wants
            if isinstance(answer, Unsent | Lost):
                raise StatementUnavailable(f"{self._channel_id}: statement of {day}: {answer}")
            if isinstance(answer, Response):
                problem = f"{self._channel_id}: statement of {day}: HTTP {answer.status}"
                raise StatementUnavailable(problem) if answer.status in (404, 503) else StatementError(problem)
            signature = answer.headers.get(STATEMENT_SIGNATURE, "")
            if not wire.verify(self._settings.secret.reveal().encode(), answer.digests["sha256"], signature):
                raise StatementError(f"{self._channel_id}: statement of {day}: signature does not verify")
            return await download.keep(answer, source=url)

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackNotice:
        raise CallbackRejected(self._channel_id, "not implemented")

    def callback_reply(self, accepted: bool) -> HttpReply:
        return HttpReply(200, b"OK") if accepted else HttpReply(400, b"FAIL")


def build(spec: ChannelSpec) -> TemplateChannel:
    """Read ``spec.settings`` into :class:`TemplateSettings`; every error names ``f"{spec.key}.<setting>"``.

    Settings that need more than a type (key material inline or in a file, keys to load) are
    read from the table with the helpers in :mod:`channels.settings`, as the Alipay adapter does.
    """
    return TemplateChannel(spec.channel_id, spec.read(TemplateSettings))
