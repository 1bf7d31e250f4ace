"""Order builders: a flow's parameters, turned into the channel order of any of its attempts.

The flow driver (gateway/flows.py) holds one builder per flow and asks it, for
each attempt, for the call of that attempt's order on its channel: the same
parameters every time, with the attempt's channel order number (unique per
attempt, reused on every retry of its call) and the channel's notify URL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol

from channels.contract import Channel, Operation, Outcome, PayoutOrder, RefundOrder, WithholdOrder
from gateway.store.rows import AttemptRow, FlowRow
from gateway.validation import PayoutParams, RefundParams, WithholdParams


class OrderBuilder(Protocol):
    """Turns a flow's parameters into the order of one of its attempts, and sends it."""

    operation: ClassVar[Operation]

    def send(self, channel: Channel, attempt: AttemptRow, notify_url: str) -> Awaitable[Outcome]:
        """The call of ``attempt``'s order on its channel (not yet awaited)."""
        ...


@dataclass(frozen=True)
class WithholdOrders:
    """A withhold: the payer's agreement with whichever channel the attempt goes to."""

    operation: ClassVar[Operation] = Operation.WITHHOLD
    params: WithholdParams
    agreement_refs: Mapping[str, str]  # channel id -> the channel's agreement ref for this payer

    def order(self, channel_id: str, channel_order_no: str, notify_url: str) -> WithholdOrder:
        return WithholdOrder(
            channel_order_no=channel_order_no,
            amount=self.params.amount,
            currency=self.params.currency,
            agreement_ref=self.agreement_refs[channel_id],
            account_no=self.params.account_no,
            bank_code=self.params.bank_code,
            description=self.params.description,
            notify_url=notify_url,
        )

    def send(self, channel: Channel, attempt: AttemptRow, notify_url: str) -> Awaitable[Outcome]:
        return channel.withhold(self.order(attempt.channel, attempt.channel_order_no, notify_url))


@dataclass(frozen=True)
class PayoutOrders:
    operation: ClassVar[Operation] = Operation.PAYOUT
    params: PayoutParams

    def order(self, channel_order_no: str, notify_url: str) -> PayoutOrder:
        return PayoutOrder(
            channel_order_no=channel_order_no,
            amount=self.params.amount,
            currency=self.params.currency,
            account_no=self.params.account_no,
            account_name=self.params.account_name,
            bank_code=self.params.bank_code,
            description=self.params.description,
            notify_url=notify_url,
        )

    def send(self, channel: Channel, attempt: AttemptRow, notify_url: str) -> Awaitable[Outcome]:
        return channel.payout(self.order(attempt.channel_order_no, notify_url))


@dataclass(frozen=True)
class RefundOrders:
    """A refund of the attempt ``paid`` of the withhold ``original``."""

    operation: ClassVar[Operation] = Operation.REFUND
    params: RefundParams
    original: FlowRow
    paid: AttemptRow

    def order(self, channel_order_no: str, notify_url: str) -> RefundOrder:
        return RefundOrder(
            channel_order_no=channel_order_no,
            original_channel_order_no=self.paid.channel_order_no,
            original_channel_txn_id=self.paid.channel_txn_id,
            amount=self.params.amount,
            original_amount=self.original.amount,
            currency=self.params.currency,
            reason=self.params.reason,
            notify_url=notify_url,
        )

    def send(self, channel: Channel, attempt: AttemptRow, notify_url: str) -> Awaitable[Outcome]:
        return channel.refund(self.order(attempt.channel_order_no, notify_url))
