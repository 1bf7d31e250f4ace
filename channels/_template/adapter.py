"""<Name> adapter: paygate's Channel protocol over the channel's HTTP API.

Rules every adapter follows (DESIGN.md invariant 3):

* send every request through :class:`channels.http.ChannelHttp`: its ``Unsent``
  (nothing sent -> FAILED ``CONNECTION_FAILED``, ``safe_elsewhere=True``) and
  ``Lost`` (sent, no answer -> PENDING) carry their ``outcome()``;
* 5xx or an unverifiable answer after sending -> PENDING (``Lost(code, why).outcome()``);
* a raw code -> ``wire.CODES.outcome(raw)``; unknown codes become PENDING ``UNMAPPED``;
* credentials never in ``repr``, logs or error messages; card numbers masked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from channels import settings as setting
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
from channels.http import ChannelHttp, HttpChannel
from channels.registry import ChannelSpec
from channels.settings import HttpUrl, SecretText, Text


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
        super().__init__(channel_id, http, operations=frozenset({Operation.WITHHOLD, Operation.REFUND}))
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
