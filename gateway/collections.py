"""Payer-initiated collections (主动还款): the borrower repays in the channel's own cashier.

A collection is a flow of kind COLLECT with one live attempt (operation
``collect``): a channel order the borrower pays, or not, in the Alipay /
WeChat Pay / sandbox cashier the lending app opens with what the gateway hands
it (:class:`channels.contract.Cashier`). Its life, and which component moves it:

::

    CreateCollection          record flow + attempt (SENDING) + collection row: one commit, before any call
        │                     create_collect on the routed channel (CollectOrders):
        │                       refused, safe elsewhere  -> next channel (no cashier was ever handed out)
        │                       refused otherwise        -> FAILED
        │                       answer lost              -> asked again, same order number; else PENDING,
        │                                                   no cashier yet (a replay of the create asks again)
        │                       cashier                  -> kept (the first one; every replay hands it out),
        ▼                                                   attempt PENDING, first poll at the expiry
    awaiting the borrower     no failover from here on: the borrower has the cashier in hand
        │ notification        verified (signature, order number, amount) -> SUCCEEDED, one result event
        │ another amount      verified, but not the order's amount -> review (needs_review), never taken
        │ the expiry, or      query: paid -> SUCCEEDED; else close at the channel (at_poll):
        │ CloseCollection       closed (the channel confirmed) -> FAILED COLLECTION_EXPIRED / _CLOSED
        │                       already paid                   -> SUCCEEDED (the payment won the race)
        │                       no answer / not confirmed      -> polled again (poll schedule), never FAILED
        ▼
    SUCCEEDED / FAILED        a later success report for a FAILED one, or a second payment under another
                              transaction for a SUCCEEDED one, is a discrepancy: never overwritten

Every transition is the flow store's compare-and-set, shared by the RPC path,
the poller (which calls :meth:`CollectionService.at_poll` for collect
attempts) and callbacks (:meth:`CollectionService.result_of`), so a payment
racing the close can only end one way. A collection closed unpaid fails with
a payer-attributable ``COLLECTION_EXPIRED`` (the borrower did not pay in
time) or ``COLLECTION_CLOSED`` (the caller closed it); neither teaches the
router anything about the channel. See docs/CASHIER.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, ClassVar

from pydantic import Field

from channels.config import TABLE, ConfigError, join
from channels.contract import (
    ORDER_CLOSED,
    Cashier,
    CashierKind,
    Channel,
    CollectOrder,
    Operation,
    OrderRef,
    Outcome,
    OutcomeStatus,
    PayerHints,
    pending,
)
from gateway.domain import COLLECTION_CLOSED, COLLECTION_EXPIRED, AttemptStatus, FlowKind, FlowStatus
from gateway.errors import InvalidInput, PreconditionFailed
from gateway.flows import AMOUNT_MISMATCH, FlowService, Route, RouteQuery
from gateway.ports import CollectionStore
from gateway.store.rows import AttemptRow, CollectionRow, Creation, FlowRow, NewAttempt, NewCollection, NewFlow, Source
from gateway.store.rows import utcnow as _utcnow
from gateway.validation import canonical_hash

log = logging.getLogger(__name__)

CLOSE_BY_CALLER = "CALLER"
CLOSE_AT_EXPIRY = "EXPIRED"


@dataclass(frozen=True)
class CashierConfig:
    """``[cashier]``: payer-initiated collections (主动还款)."""

    __pydantic_config__ = TABLE

    default_expiry_s: Annotated[int, Field(ge=1)] = 900  # when a CreateCollection names none: 15 minutes
    min_expiry_s: Annotated[int, Field(ge=1)] = 60
    # WeChat Pay's prepay_id (JSAPI) and Alipay's precreate QR code live two hours
    max_expiry_s: Annotated[int, Field(ge=1, le=15 * 86400)] = 7200
    # channel ids ranked first for collections, in this order (then the router's ranking)
    preference: tuple[str, ...] = ()
    # a create whose answer was lost is asked again this many times (same order number: the same cashier)
    create_retries: Annotated[int, Field(ge=0, le=5)] = 2

    def check_config(self, key: str) -> None:
        if not self.min_expiry_s <= self.default_expiry_s <= self.max_expiry_s:
            raise ConfigError(join(key, "default_expiry_s"), "must be within [min_expiry_s, max_expiry_s]")


@dataclass(frozen=True)
class CollectParams:
    """A CreateCollection, validated (gateway/api). Plain values: they are the canonical request hash.

    ``expires_in_s`` 0 means the configured default; ``channel`` "" lets routing pick.
    The payer hints are hashed with the rest, never stored.
    """

    amount: int
    currency: str
    cashier: str  # a CashierKind value
    expires_in_s: int
    channel: str
    description: str
    openid: str = field(default="", repr=False)
    client_ip: str = field(default="", repr=False)
    return_url: str = ""

    @property
    def kind(self) -> CashierKind:
        return CashierKind(self.cashier)

    @property
    def hints(self) -> PayerHints:
        return PayerHints(openid=self.openid, client_ip=self.client_ip, return_url=self.return_url)


@dataclass(frozen=True)
class Collection:
    """A COLLECT flow and its cashier side: what CreateCollection, CloseCollection and GetFlow answer."""

    flow: FlowRow
    row: CollectionRow | None

    @property
    def cashier(self) -> Cashier | None:
        return Cashier.from_json(self.row.cashier) if self.row is not None and self.row.cashier else None


@dataclass(frozen=True)
class PollStep:
    """What the poller does with a collect attempt it queried: apply ``outcome``, or wait until ``wait_until``."""

    outcome: Outcome
    wait_until: datetime | None = None  # naive UTC: nothing to do before the expiry (the try is not counted)


def aware(moment: datetime) -> datetime:
    """A naive UTC time of the store as an aware one (what channels are given)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@dataclass(frozen=True)
class CollectOrders:
    """The order builder of a collection (see gateway/orders.py): create the order, keep its cashier.

    The cashier is kept before the attempt's PENDING transition is applied, so a
    replay racing the first call finds it. A lost answer is asked again (same
    order number: channels answer a repeat with the same cashier); an error
    answer to such a repeat says nothing about the order the first call may
    have created, so it is PENDING, never a failure to fail over from.
    """

    operation: ClassVar[Operation] = Operation.COLLECT
    params: CollectParams
    expires_at: datetime  # naive UTC
    store: CollectionStore
    retries: int = 2
    retry_delay_s: float = 0.3

    def order(self, channel_order_no: str, notify_url: str) -> CollectOrder:
        return CollectOrder(
            channel_order_no=channel_order_no,
            amount=self.params.amount,
            currency=self.params.currency,
            cashier=self.params.kind,
            expires_at=aware(self.expires_at),
            description=self.params.description,
            notify_url=notify_url,
            payer=self.params.hints,
        )

    def send(self, channel: Channel, attempt: AttemptRow, notify_url: str) -> Awaitable[Outcome]:
        return self._create(channel, attempt, notify_url, retries=self.retries)

    def ask_again(self, channel: Channel, attempt: AttemptRow, notify_url: str) -> Awaitable[Outcome]:
        """A repeat of a create made before (a replay of the request): its error answers are PENDING."""
        return self._create(channel, attempt, notify_url, retries=0, repeat=True)

    async def _create(
        self, channel: Channel, attempt: AttemptRow, notify_url: str, *, retries: int, repeat: bool = False
    ) -> Outcome:
        order = self.order(attempt.channel_order_no, notify_url)
        for call in range(retries + 1):
            started = await channel.create_collect(order)
            if started.cashier is not None:
                await self.store.record_cashier(attempt.flow_id, attempt.channel, started.cashier.to_json())
                return started.outcome
            outcome = started.outcome
            if outcome.status is OutcomeStatus.SUCCEEDED:
                return outcome  # paid already (a repeat after the borrower paid)
            if outcome.status is OutcomeStatus.FAILED:
                if repeat or call > 0:
                    return pending("CREATE_UNCONFIRMED", outcome.raw_code, f"a repeated create answered {outcome.code}")
                return outcome
            if call < retries:
                await asyncio.sleep(self.retry_delay_s * (call + 1))
        return outcome


class CollectionService:
    """The collection use cases (module docstring); built in gateway/app.py over the flow service."""

    def __init__(
        self,
        flows: FlowService,
        store: CollectionStore,
        config: CashierConfig,
        *,
        expedite: Callable[[int, str], Awaitable[object]] | None = None,
    ) -> None:
        self.flows = flows
        self.store = store
        self.config = config
        self.expedite = expedite

    # --- use cases ---------------------------------------------------------------------

    async def create(
        self, caller: str, request_id: str, params: CollectParams, wait_s: float, *, deadline_s: float | None = None
    ) -> Collection:
        """Record the collection and ask the channel for its cashier, waiting up to ``wait_s``
        (cut to ``deadline_s``, the RPC's remaining time, less the margin, as for every flow).

        Idempotent on (caller, request_id): the same parameters return the same
        flow and cashier (asking the channel again, same order number, when the
        first call left none); others raise IdempotencyConflict. Raises NoRoute
        when no channel offers the cashier (or the named channel does not), InvalidInput
        naming ``channel`` when it names no configured channel.
        Once the flow is recorded it is always returned, without its cashier
        when that cannot be read now (GetFlow and a replay hand it out later).
        """
        if params.channel and params.channel not in self.flows.registry:  # as SignAgreement: bad input, not NO_ROUTE
            raise InvalidInput("channel", f"unknown channel {params.channel!r}")
        budget = self.flows.settings.budget_s(wait_s, deadline_s)
        request_hash = canonical_hash("COLLECT", params)
        expires_at = _utcnow() + timedelta(seconds=params.expires_in_s or self.config.default_expiry_s)
        new = NewFlow(
            caller=caller,
            request_id=request_id,
            kind=FlowKind.COLLECT,
            amount=params.amount,
            currency=params.currency,
            request_hash=request_hash,
            description=params.description,
        )
        query = RouteQuery(
            Operation.COLLECT,
            params.amount,
            params.currency,
            "",
            "",
            None,
            cashier_kind=params.kind,
            preference=self.config.preference,
        )
        if params.channel:
            # the caller's channel or none: no failover to another wallet the borrower did not choose
            plan = (await self.flows.route(query)).only(params.channel)
            route = Route(Operation.COLLECT, time.monotonic() + budget, None, plan)
        else:
            route = Route.routed(query, budget)
        route.first_poll_at = expires_at
        orders = self._orders(params, expires_at)

        async def record(new: NewFlow, attempt: NewAttempt) -> Creation[FlowRow]:
            return await self.store.create(new, attempt, NewCollection(params.cashier, expires_at))

        flow = await self.flows.start(new, orders, route, create=record)
        try:
            if flow.replayed:
                return await self._replayed(flow, params)
            return await self.collection(flow)
        except Exception as exc:
            # recorded: the caller gets the flow, never an error (gateway/flows.py); the poller goes on with it
            log.error(
                "collection recorded but reading or renewing its cashier failed (%s); answering with the flow",
                type(exc).__name__,
                exc_info=exc,
                extra={"flow_no": flow.flow_no},
            )
            return Collection(flow, None)

    async def close(self, caller: str, flow_no: str) -> Collection:
        """Close an unpaid collection early (the caller's CloseCollection).

        FAILED ``COLLECTION_CLOSED`` only once the channel confirmed the close; a
        payment that came first makes it SUCCEEDED; without a confirmation it
        stays PROCESSING and the close is tried again (at the latest at the
        expiry). A finished one is returned as it is. Raises NotFound /
        PreconditionFailed (not a collection).
        """
        flow = await self.flows.get(caller, flow_no=flow_no)
        if flow.kind is not FlowKind.COLLECT:
            raise PreconditionFailed(f"flow_no: {flow_no} is a {flow.kind.value.lower()}, not a collection")
        if flow.status is not FlowStatus.PROCESSING:
            return await self.collection(flow)
        await self.store.request_close(flow.id, CLOSE_BY_CALLER)
        attempt = flow.attempts[-1]
        if attempt.status in (AttemptStatus.SENDING, AttemptStatus.PENDING) and attempt.channel in self.flows.registry:
            step = await self.at_poll(attempt, await self.flows.query(attempt))
            if step.outcome.definite:
                await self.flows.apply(attempt.id, step.outcome, Source.RESPONSE)
            elif self.expedite is not None:
                await self.expedite(attempt.id, attempt.channel)  # not confirmed: the poller tries again soon
        return await self.collection(await self.flows.get(caller, flow_no=flow_no))

    async def collection(self, flow: FlowRow) -> Collection:
        """The flow with its cashier side (None for a flow that is not a collection)."""
        row = await self.store.by_flow(flow.id) if flow.kind is FlowKind.COLLECT else None
        return Collection(flow, row)

    # --- the lifecycle, for the poller and callbacks ------------------------------------

    async def at_poll(self, attempt: AttemptRow, queried: Outcome) -> PollStep:
        """What a query of a collect attempt leads to (see the module docstring).

        Before the expiry and without a close asked for, nothing: wait for the
        expiry. Then (or once asked) a result the query gave stands; otherwise
        the order is closed at the channel, and only its confirmed close fails
        the collection.
        """
        row = await self.store.by_attempt(attempt.id)
        if row is None or queried.code == AMOUNT_MISMATCH:
            return PollStep(queried)  # paid, another amount: never closed, the poller sends it to review
        if queried.definite:
            return PollStep(self._result(queried, row))
        if row.close_requested_at is None:
            if _utcnow() < row.expires_at:
                return PollStep(queried, wait_until=row.expires_at)
            await self.store.request_close(row.flow_id, CLOSE_AT_EXPIRY)
            row.close_reason = CLOSE_AT_EXPIRY
        channel = self.flows.registry.get(attempt.channel)
        ref = OrderRef(
            attempt.channel_order_no,
            Operation.COLLECT,
            attempt.amount,
            attempt.currency,
            expires_at=aware(row.expires_at),
        )
        closed = await self.flows.timed_call(attempt.channel, "close", channel.close_order(ref), attempt)
        log.info(
            "collection close: %s",
            closed.status.value,
            extra={"channel": attempt.channel, "channel_order_no": attempt.channel_order_no, "outcome": closed.code},
        )
        return PollStep(self._result(closed, row))

    async def result_of(self, attempt: AttemptRow, outcome: Outcome) -> Outcome:
        """A channel's word about a collect attempt (a notification) as the collection's result."""
        row = await self.store.by_attempt(attempt.id)
        return self._result(outcome, row) if row is not None else outcome

    @staticmethod
    def _result(outcome: Outcome, row: CollectionRow) -> Outcome:
        """The channel's confirmed close as the collection's failure; anything else as it is."""
        if outcome.status is not OutcomeStatus.FAILED or outcome.code != ORDER_CLOSED:
            return outcome
        by_caller = row.close_reason == CLOSE_BY_CALLER
        return Outcome(
            OutcomeStatus.FAILED,
            COLLECTION_CLOSED if by_caller else COLLECTION_EXPIRED,
            raw_code=outcome.raw_code,
            raw_message=outcome.raw_message or "closed unpaid at the channel",
            payer_attributable=not by_caller,  # the borrower did not pay in time
            safe_elsewhere=True,  # nothing was taken, and nothing can be any more
            channel_txn_id=outcome.channel_txn_id,
        )

    # --- internals -------------------------------------------------------------------

    def _orders(self, params: CollectParams, expires_at: datetime) -> CollectOrders:
        return CollectOrders(params, expires_at, self.store, retries=self.config.create_retries)

    async def _replayed(self, flow: FlowRow, params: CollectParams) -> Collection:
        """A replay: the same flow and cashier; when the first call left no cashier, the channel is asked again."""
        collection = await self.collection(flow)
        row = collection.row
        attempt = flow.attempts[-1] if flow.attempts else None
        if (
            row is None
            or row.cashier
            or attempt is None
            or flow.status is not FlowStatus.PROCESSING
            or row.close_requested_at is not None
            or _utcnow() >= row.expires_at
            or attempt.status not in (AttemptStatus.SENDING, AttemptStatus.PENDING)
            or attempt.channel not in self.flows.registry
        ):
            return collection
        channel = self.flows.registry.get(attempt.channel)
        orders = self._orders(params, row.expires_at)
        call = orders.ask_again(channel, attempt, self.flows.notify_url(attempt.channel))
        outcome = await self.flows.timed_call(attempt.channel, Operation.COLLECT.value, call, attempt)
        if outcome.definite or attempt.status is AttemptStatus.SENDING:
            due_in = max((row.expires_at - _utcnow()).total_seconds(), 0.0)
            await self.flows.apply(attempt.id, outcome, Source.RESPONSE, poll_due_in_s=due_in)
        fresh = await self.flows.store.by_id(flow.id)
        if fresh is None:  # pragma: no cover - a flow is never deleted
            return collection
        fresh.replayed = True
        return await self.collection(fresh)


def check_preference(config: CashierConfig, channels: frozenset[str], key: str = "cashier") -> None:
    """Every channel named in ``preference`` is configured; raises ConfigError naming the entry."""
    for i, channel_id in enumerate(config.preference):
        if channel_id not in channels:
            raise ConfigError(join(join(key, "preference"), i), f"unknown channel id {channel_id!r}")
