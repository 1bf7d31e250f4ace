"""Plan withholds leave for a rate-limited channel one every ``1/rate`` seconds, at the moment they are sent.

The shared token buckets (gateway/plans/ratelimit.py) bound how many plan withholds are released
per channel for all replicas together. Between its release and the HTTP request a withhold goes
through two commits; on a loaded machine a stall there lets several released withholds pile up
and leave together, and the bank sees more in one second than its limit. So the executor's
FlowService reaches its rate-limited channels through a :class:`PacedChannel`: each replica
spaces its withholds to one channel ``1/rate`` apart right before the call (a GCRA schedule, with
:data:`~gateway.plans.ratelimit.PACE_SLACK_S` of catch-up), after the attempt was recorded
(record before call holds; a replica that dies while waiting leaves the attempt SENDING, and the
poller finds the order never arrived and closes it: nothing charged, retried at the next time point).
Every other call passes straight through.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta

from channels.contract import (
    AgreementConfirmed,
    Balance,
    CallbackNotice,
    CashierKind,
    Channel,
    CollectOrder,
    CollectStarted,
    HttpReply,
    Operation,
    OrderRef,
    Outcome,
    PayoutOrder,
    RefundOrder,
    SignRequest,
    SignStarted,
    WithholdOrder,
)
from channels.registry import ChannelRegistry
from channels.statement import StatementFile
from gateway.plans.clock import Clock
from gateway.plans.ratelimit import PACE_SLACK_S


class SendPacer:
    """One replica's send schedule per channel: slots ``1/rate`` apart, handed out in call order."""

    def __init__(self, limits: Mapping[str, float], clock: Clock, *, slack_s: float = PACE_SLACK_S) -> None:
        self.limits = dict(limits)
        self.clock = clock
        self.slack = timedelta(seconds=slack_s)
        self._next: dict[str, datetime] = {}

    async def wait(self, channel: str) -> None:
        """Return when this replica may send its next withhold to ``channel``."""
        rate = self.limits.get(channel)
        if rate is None:
            return
        now = self.clock.now()
        slot = max(self._next.get(channel, now), now - self.slack)
        self._next[channel] = max(slot, now) + timedelta(seconds=1.0 / rate)
        if slot > now:
            await self.clock.sleep((slot - now).total_seconds())


class PacedChannel:
    """A :class:`channels.contract.Channel` whose withholds wait for their slot; everything else passes through."""

    def __init__(self, inner: Channel, pacer: SendPacer) -> None:
        self.inner = inner
        self.pacer = pacer

    @property
    def channel_id(self) -> str:
        return self.inner.channel_id

    @property
    def operations(self) -> frozenset[Operation]:
        return self.inner.operations

    @property
    def currencies(self) -> frozenset[str]:
        return self.inner.currencies

    @property
    def banks(self) -> frozenset[str] | None:
        return self.inner.banks

    @property
    def cashier_kinds(self) -> frozenset[CashierKind]:
        return self.inner.cashier_kinds

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def withhold(self, order: WithholdOrder) -> Outcome:
        await self.pacer.wait(self.inner.channel_id)
        return await self.inner.withhold(order)

    async def payout(self, order: PayoutOrder) -> Outcome:
        return await self.inner.payout(order)

    async def refund(self, order: RefundOrder) -> Outcome:
        return await self.inner.refund(order)

    async def create_collect(self, order: CollectOrder) -> CollectStarted:
        return await self.inner.create_collect(order)

    async def query(self, ref: OrderRef) -> Outcome:
        return await self.inner.query(ref)

    async def close_order(self, ref: OrderRef) -> Outcome:
        return await self.inner.close_order(ref)

    async def sign_agreement(self, request: SignRequest) -> SignStarted:
        return await self.inner.sign_agreement(request)

    async def confirm_agreement(self, sign_ref: str, sms_code: str) -> AgreementConfirmed:
        return await self.inner.confirm_agreement(sign_ref, sms_code)

    async def revoke_agreement(self, agreement_ref: str) -> None:
        await self.inner.revoke_agreement(agreement_ref)

    async def balance(self) -> Balance:
        return await self.inner.balance()

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackNotice:
        return self.inner.parse_callback(headers, body)

    def callback_reply(self, accepted: bool) -> HttpReply:
        return self.inner.callback_reply(accepted)

    async def fetch_statement(self, day: date, dest_dir: str) -> StatementFile:
        return await self.inner.fetch_statement(day, dest_dir)


def paced_registry(registry: ChannelRegistry, pacer: SendPacer) -> ChannelRegistry:
    """``registry``'s channels, the rate-limited ones paced (the same adapter objects underneath).

    Not to be started or stopped itself: the gateway's own registry does that.
    """
    return ChannelRegistry(
        {cid: PacedChannel(channel, pacer) if cid in pacer.limits else channel for cid, channel in registry.items()}
    )
