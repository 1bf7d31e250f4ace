"""Flow use cases: withhold, payout, refund, and applying channel outcomes.

The request path of a withhold, in order:

1. validate (gateway/api), compute the canonical request hash;
2. same (caller, request_id) seen before → same hash: return that flow, no
   side effect; other hash: ``IdempotencyConflict`` (withholds learn it from
   the flow insert's unique key in step 3, not from a read before it);
3. route (filters + ranking), then **commit 1**: the flow and its first
   attempt (SENDING, with its unique channel order number) — before any byte
   goes to a channel;
4. call the channel; **commit 2**: the compare-and-set transition, and when
   terminal the FLOW_RESULT outbox row in the same transaction;
5. fail over only after a definite failure the channel's table marks
   ``safe_elsewhere``, within the attempt limit and the caller's wait budget.
   PENDING, timeouts and unknown codes are polled, never failed over.

Commits 1 and 2 of concurrent requests are shared (group commit in the store):
each request goes on only after the commit that holds its own rows.

Recording and the channel call run in a task the RPC waits for up to its
budget (and cannot cancel); when the budget runs out the RPC returns the flow
PROCESSING and the task finishes on its own (the result then arrives on Kafka
and via GetFlow). The budget is the caller's ``wait_ms``, cut to the RPC's own
deadline less ``FlowSettings.deadline_margin_s``, so a client with a short
deadline gets its flow PROCESSING rather than DEADLINE_EXCEEDED.

Once commit 1 holds the flow, the caller always gets the flow, never an error:
whatever goes wrong after it (the database lost during commit 2, a deadlock, a
bug) the channel may already have moved the money, and a caller that read an
error as "nothing happened" would retry with a new request_id and pay twice.
The drive then answers with the flow as recorded (PROCESSING when the outcome
could not be written) and asks for an immediate query of its open attempts
(:attr:`FlowService.queries`, the poller's rate-limited ``expedite``); if even
that write fails, the poller's periodic sweep (``requeue_unresolved``) finds
the attempt, and start-up recovery does after a crash.

A retry of a stuck flow (same key, same parameters, still PROCESSING, its open
attempt older than its channel's first scheduled query) is the caller asking
for compensation (补单): it is answered with the flow as it stands and its open
attempts are queried now, through the same rate-limited ``expedite``.

Each use case hands the driver two small objects: an **order builder**
(gateway/orders.py: the flow's parameters, turned into the channel order of
any attempt) and a :class:`Route` (where the attempts go: the current plan,
the channels tried, what to ask the router again on failover, until when).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from channels.contract import CashierKind, Operation, OrderRef, Outcome, OutcomeStatus, pending
from channels.registry import ChannelRegistry
from gateway import background, metrics
from gateway.domain import PAYMENT_KINDS, AttemptStatus, FlowKind, FlowStatus, account_hash, mask_account
from gateway.errors import (
    CardLimitReached,
    FlowClosed,
    IdempotencyConflict,
    NoActiveAgreement,
    NoRoute,
    NotFound,
    PositionShort,
    PreconditionFailed,
    RefundExceeds,
    RefundExceedsOriginal,
)
from gateway.logs import publish_flow_no
from gateway.orders import OrderBuilder, PayoutOrders, RefundOrders, WithholdOrders
from gateway.planner import Plan
from gateway.ports import AgreementStore, FlowStore, QueryScheduler, RoutePlanner
from gateway.splits.allocation import REFUND_MARKER, shares_json
from gateway.splits.funders import Funders
from gateway.store.rows import (
    Applied,
    ApplyResult,
    AttemptRow,
    Creation,
    Existing,
    FlowRow,
    NewAttempt,
    NewFlow,
    Source,
    utcnow,
)
from gateway.validation import PayoutParams, RefundParams, WithholdParams, canonical_hash

log = logging.getLogger(__name__)

_OPEN = frozenset({AttemptStatus.SENDING, AttemptStatus.PENDING})  # attempts without a definite result

# The code of a success the channel reported for another amount than the order's (held PENDING, for review).
AMOUNT_MISMATCH = "AMOUNT_MISMATCH"

# Records a new flow and its first attempt before any channel call (FlowStore.create, or a kind's own).
Creator = Callable[[NewFlow, NewAttempt], Awaitable[Creation[FlowRow]]]

OUTCOME_LABEL = {
    OutcomeStatus.SUCCEEDED: "succeeded",
    OutcomeStatus.PENDING: "pending",
}


def outcome_label(outcome: Outcome) -> str:
    if outcome.status is OutcomeStatus.FAILED:
        return "payer_failure" if outcome.payer_attributable else "channel_failure"
    if outcome.status is OutcomeStatus.PENDING and outcome.code in {"ADAPTER_ERROR", "CALL_GUARD_TIMEOUT"}:
        return "error"
    return OUTCOME_LABEL[outcome.status]


@dataclass(frozen=True)
class FlowSettings:
    callback_base: str  # e.g. http://127.0.0.1:8080 ; callbacks go to {base}/callbacks/{channel}
    account_hash_key: bytes
    max_attempts: int = 3
    call_guard_s: float = 60.0  # hard cap on one adapter call (adapters time out first)
    poll_first_delay_s: float = 2.0
    # the wait ends this long before the RPC's deadline, so the flow reaches the client in time
    deadline_margin_s: float = 0.1

    def budget_s(self, wait_s: float, deadline_s: float | None) -> float:
        """The wait budget: ``wait_s``, cut to the RPC's remaining ``deadline_s`` (None: none) less the margin."""
        if deadline_s is None:
            return max(wait_s, 0.0)
        return max(min(wait_s, deadline_s - self.deadline_margin_s), 0.0)


# --- the route: where the attempts of a flow go ------------------------------------------


@dataclass(frozen=True)
class RouteQuery:
    """What the router is asked for a flow (asked again, minus the channels tried, on failover)."""

    operation: Operation
    amount: int
    currency: str
    bank_code: str
    account_hash: str
    agreement_channels: frozenset[str] | None  # withholds: the channels the payer has an agreement with
    cashier_kind: CashierKind | None = None  # collections: the cashier the borrower needs
    preference: tuple[str, ...] = ()  # channels to rank first, in this order (collections: [cashier] preference)


@dataclass
class Route:
    """The channels of one flow: the plan its current attempt came from, the channels tried, how to go on.

    ``query`` None means one fixed channel and no failover (a refund goes
    back through the channel that took the money). Failover stops at
    ``deadline`` (monotonic; the end of the caller's wait budget).
    ``first_poll_at`` (naive UTC): when an attempt left PENDING by its channel's
    answer is first queried, when not ``poll_first_delay_s`` later (a collection
    waits for its payer until its expiry).
    """

    operation: Operation
    deadline: float
    query: RouteQuery | None = None
    plan: Plan | None = None
    tried: set[str] = field(default_factory=set)
    first_poll_at: datetime | None = None

    def first_poll_in_s(self) -> float | None:
        if self.first_poll_at is None:
            return None
        return max((self.first_poll_at - utcnow()).total_seconds(), 0.0)

    @classmethod
    def routed(cls, query: RouteQuery, wait_s: float) -> Route:
        return cls(query.operation, time.monotonic() + wait_s, query)

    @classmethod
    def fixed(cls, operation: Operation, channel: str, reason: str, wait_s: float) -> Route:
        return cls(operation, time.monotonic() + wait_s, None, Plan.explicit(channel, reason))


class FlowService:
    def __init__(
        self,
        *,
        store: FlowStore,
        agreements: AgreementStore,
        registry: ChannelRegistry,
        planner: RoutePlanner,
        settings: FlowSettings,
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.agreements = agreements
        self.registry = registry
        self.planner = planner
        self.settings = settings
        self.on_outbox = on_outbox or (lambda: None)
        # expedited queries (the poller); set by the composition root, None where nothing polls
        self.queries: QueryScheduler | None = None
        # joint-loan funders a withhold's shares may name ([funders]); set by the composition root
        self.funders = Funders({})
        self._tasks: set[asyncio.Task[FlowRow | None]] = set()

    # --- use cases ---------------------------------------------------------------------

    async def withhold(
        self, caller: str, request_id: str, params: WithholdParams, wait_s: float, *, deadline_s: float | None = None
    ) -> FlowRow:
        """Withhold ``params.amount`` from the payer's card under an ACTIVE agreement of ``caller``.

        Waits up to ``wait_s`` (cut to ``deadline_s``, the RPC's remaining time, less the
        margin) and returns the flow as it is then; once recorded, the flow is always returned.
        """
        budget = self.settings.budget_s(wait_s, deadline_s)
        if params.shares is not None:  # every funder named must be configured, in the withhold's currency
            self.funders.check(params.shares, params.currency)
        acct = account_hash(self.settings.account_hash_key, params.account_no)
        request_hash = canonical_hash("WITHHOLD", _hashable(params, acct))
        # No idempotency read up front: the flow insert's UNIQUE(caller, request_id) finds a
        # replay (Existing). A request that cannot go ahead looks for an earlier flow first.
        refs = await self.agreements.active_refs(caller, acct, params.agreement_no)
        if not refs:
            replay = await self._replay(caller, request_id, request_hash)
            if replay is not None:
                return replay
            what = (
                "agreement_no is not an ACTIVE agreement of this caller"
                if params.agreement_no
                else "no ACTIVE withholding agreement for this account; sign one first"
            )
            raise NoActiveAgreement(what)
        new = self._new_flow(FlowKind.WITHHOLD, caller, request_id, request_hash, acct, params)
        route = Route.routed(_route_query(Operation.WITHHOLD, new, frozenset(refs)), budget)
        return await self._start(new, WithholdOrders(params, refs), route)

    async def payout(
        self,
        caller: str,
        request_id: str,
        params: PayoutParams,
        wait_s: float,
        *,
        deadline_s: float | None = None,
        prefer: tuple[str, ...] = (),
    ) -> FlowRow:
        """Pay ``params.amount`` out to the payee's account from a channel's float (wait as for withholds).

        ``prefer``: channels ranked first, in this order, when they pass the filters (a funder's
        settlement prefers the channel account it is settled from); the rest still route.
        """
        budget = self.settings.budget_s(wait_s, deadline_s)
        acct = account_hash(self.settings.account_hash_key, params.account_no)
        request_hash = canonical_hash("PAYOUT", _hashable(params, acct))
        # as for withholds, the insert's unique key finds replays (and _create_first when nothing routes)
        new = self._new_flow(FlowKind.PAYOUT, caller, request_id, request_hash, acct, params)
        query = replace(_route_query(Operation.PAYOUT, new, None), preference=prefer)
        route = Route.routed(query, budget)
        return await self._start(new, PayoutOrders(params), route)

    @staticmethod
    def _new_flow(
        kind: FlowKind,
        caller: str,
        request_id: str,
        request_hash: str,
        acct: str,
        params: WithholdParams | PayoutParams,
    ) -> NewFlow:
        return NewFlow(
            caller=caller,
            request_id=request_id,
            kind=kind,
            amount=params.amount,
            currency=params.currency,
            request_hash=request_hash,
            account_hash=acct,
            account_masked=mask_account(params.account_no),
            bank_code=params.bank_code,
            description=params.description,
            split_shares=shares_json(params.shares) if isinstance(params, WithholdParams) and params.shares else None,
        )

    async def refund(
        self, caller: str, request_id: str, params: RefundParams, wait_s: float, *, deadline_s: float | None = None
    ) -> FlowRow:
        """Refund part or all of a SUCCEEDED withhold or collection through the channel that took it.

        Waits as for withholds.
        """
        budget = self.settings.budget_s(wait_s, deadline_s)
        request_hash = canonical_hash("REFUND", params)
        replay = await self._replay(caller, request_id, request_hash)
        if replay is not None:
            return replay
        original = await self.store.by_flow_no(params.original_flow_no, caller=caller)
        if original is None:
            raise NotFound(f"original_flow_no: no flow {params.original_flow_no}")
        if original.kind not in PAYMENT_KINDS:
            raise PreconditionFailed("original_flow_no: only withholds and collections can be refunded")
        if original.status is not FlowStatus.SUCCEEDED:
            raise PreconditionFailed(f"original_flow_no: the flow is {original.status.value}, not SUCCEEDED")
        if params.currency != original.currency:
            raise PreconditionFailed(f"amount.currency: must be {original.currency}, the original's currency")
        left = original.amount - original.refund_reserved
        if params.amount > left:
            raise RefundExceedsOriginal(
                f"amount: refund of {params.amount} exceeds the refundable {left} "
                f"(original {original.amount}, already refunded or in flight {original.refund_reserved})"
            )
        paid = next((a for a in original.attempts if a.status.value == "SUCCEEDED"), None)
        if paid is None:
            raise PreconditionFailed("original_flow_no: no succeeded attempt to refund")
        if paid.channel not in self.registry:
            raise PreconditionFailed(f"original_flow_no: channel {paid.channel} is no longer configured")
        new = NewFlow(
            caller=caller,
            request_id=request_id,
            kind=FlowKind.REFUND,
            amount=params.amount,
            currency=params.currency,
            request_hash=request_hash,
            account_hash=original.account_hash,
            account_masked=original.account_masked,
            bank_code=original.bank_code,
            description=params.reason,
            original_flow_id=original.id,
            # a refund of a split withhold is split too, in its terminal transaction (gateway/store/splits.py)
            split_shares=REFUND_MARKER if original.split_shares is not None else None,
        )
        # A refund goes back through the channel that took the money; never elsewhere.
        route = Route.fixed(Operation.REFUND, paid.channel, "refund goes to the original channel", budget)
        return await self._start(new, RefundOrders(params, original, paid), route)

    async def get(self, caller: str, *, flow_no: str = "", request_id: str = "") -> FlowRow:
        flow = (
            await self.store.by_flow_no(flow_no, caller=caller)
            if flow_no
            else await self.store.by_request_id(caller, request_id)
        )
        if flow is None:
            raise NotFound(f"flow_no: no flow {flow_no}" if flow_no else f"request_id: no flow for {request_id}")
        return flow

    # --- applying outcomes (shared by response, poller, callbacks) -------------------

    async def apply(
        self,
        attempt_id: int,
        outcome: Outcome,
        source: Source,
        *,
        finish_flow_on_failure: bool = True,
        poll_due_in_s: float | None = None,
        known: tuple[AttemptRow, FlowRow] | None = None,
    ) -> ApplyResult:
        """The store's compare-and-set transition; a PENDING attempt is queried ``poll_due_in_s`` later
        (default ``poll_first_delay_s``). Feeds definite outcomes back to the router.

        ``known``: the attempt and its flow as recorded by the caller that created them
        (the driver of the flow); the store may then skip reading them (it checks their versions)."""
        result = await self.store.apply_outcome(
            attempt_id,
            outcome,
            source,
            finish_flow_on_failure=finish_flow_on_failure,
            poll_due_in_s=self.settings.poll_first_delay_s if poll_due_in_s is None else poll_due_in_s,
            known=known,
        )
        if result.applied is Applied.TRANSITIONED and result.attempt is not None and outcome.definite:
            # delayed feedback included: a pending attempt resolving later still teaches the router
            self.planner.observe(result.attempt, outcome)
        if result.flow_finished or result.applied is Applied.DISCREPANCY:
            self.on_outbox()
        return result

    async def flag(self, attempt: AttemptRow, detail: str) -> bool:
        """Send the attempt's flow to review at once (a channel's verified word that cannot be taken as is).

        The flow stays PROCESSING with ``needs_review`` and a FLOW_NEEDS_REVIEW event; its polling stops.
        """
        marked = await self.store.mark_needs_review(attempt, detail)
        if marked:
            self.on_outbox()
        return marked

    # --- internals -------------------------------------------------------------------

    def notify_url(self, channel_id: str) -> str:
        """Where ``channel_id`` sends its notifications about the orders of this gateway."""
        return f"{self.settings.callback_base}/callbacks/{channel_id}"

    async def _replay(self, caller: str, request_id: str, request_hash: str) -> FlowRow | None:
        existing = await self.store.by_request_id(caller, request_id)
        if existing is None:
            return None
        replay = self._check_replay(existing, request_hash)
        await self._compensate(replay)
        return replay

    async def _compensate(self, flow: FlowRow) -> None:
        """A retry of a stuck flow (补单): query its open attempts now, rate-limited; the flow is answered as it is.

        Stuck: still PROCESSING, not waiting for an operator, and the open attempt older
        than its channel's first scheduled query (by then that query should have answered).
        The poller's ``expedite`` allows one expedited query per attempt per few seconds,
        so callers retrying in a loop cannot make us hammer the channel.
        """
        if self.queries is None or flow.status is not FlowStatus.PROCESSING or flow.needs_review:
            return
        now = utcnow()
        for attempt in flow.attempts:
            if attempt.status not in _OPEN or attempt.created_at is None:
                continue
            if (now - attempt.created_at).total_seconds() < self.queries.first_query_after_s(attempt.channel):
                continue
            try:
                queued = await self.queries.expedite(attempt.id, attempt.channel)
            except Exception as exc:  # the replay is answered all the same; the schedule goes on
                log.warning("compensation query not queued: %s", type(exc).__name__, extra={"flow_no": flow.flow_no})
                continue
            metrics.COMPENSATION_QUERIES.labels(
                channel=attempt.channel, result="queued" if queued else "rate_limited"
            ).inc()
            if queued:
                log.info(
                    "compensation: a retry of a stuck flow queued a query",
                    extra={"flow_no": flow.flow_no, "channel_order_no": attempt.channel_order_no},
                )

    @staticmethod
    def _check_replay(existing: FlowRow, request_hash: str) -> FlowRow:
        if existing.request_hash != request_hash:
            raise IdempotencyConflict(
                f"request_id {existing.request_id} was already used with different parameters "
                f"(flow {existing.flow_no}); use a new request_id for a new request"
            )
        existing.replayed = True
        metrics.FLOWS_REPLAYED.labels(kind=existing.kind.value).inc()
        return existing

    async def route(self, query: RouteQuery, exclude: frozenset[str] = frozenset()) -> Plan:
        """The router's plan for ``query`` (the channels in ``query.preference`` first, in that order)."""
        plan = await self.planner.plan(
            query.operation,
            query.amount,
            query.currency,
            query.bank_code,
            account_hash=query.account_hash,
            agreement_channels=query.agreement_channels,
            exclude=exclude,
            cashier_kind=query.cashier_kind,
        )
        return plan.preferring(query.preference) if query.preference else plan

    async def start(
        self, new: NewFlow, orders: OrderBuilder, route: Route, *, create: Creator | None = None
    ) -> FlowRow:
        """Record and drive a flow of a kind built beside this module (gateway/collections.py).

        ``create`` records the flow and its first attempt (default: the flow store's ``create``),
        so a kind with rows of its own writes them in the same commit. The wait ends at
        ``route.deadline``; once recorded, the flow is always returned (module docstring).
        """
        return await self._start(new, orders, route, create=create)

    async def _start(
        self, new: NewFlow, orders: OrderBuilder, route: Route, *, create: Creator | None = None
    ) -> FlowRow:
        """Record the flow, then drive it in a task the RPC waits for until ``route.deadline``.

        Recording and driving run in one task that the RPC cannot cancel: once
        the first attempt is committed (possibly in a commit shared with other
        requests), its channel call happens even if the caller has gone. Once
        the flow is recorded, this returns a flow, never raises (module doc).
        """
        loop = asyncio.get_running_loop()
        created: asyncio.Future[FlowRow] = loop.create_future()
        created.add_done_callback(_consume)  # a caller that has gone never reads it
        task = loop.create_task(
            self._create_and_drive(new, orders, route, created, create or self.store.create),
            name=f"flow-{new.request_id[:40]}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        flow = await asyncio.shield(created)
        publish_flow_no(flow.flow_no)
        if flow.replayed:
            await self._compensate(flow)
            return flow
        # asyncio.wait neither cancels the task at the timeout nor when the RPC is cancelled
        done, _ = await asyncio.wait((task,), timeout=max(route.deadline - time.monotonic(), 0.0))
        if not done:
            return flow  # PROCESSING; the task keeps going and records the result
        driven = task.result()
        assert driven is not None  # None only when recording failed, which `created` raised above
        return driven

    async def _create_and_drive(
        self, new: NewFlow, orders: OrderBuilder, route: Route, created: asyncio.Future[FlowRow], create: Creator
    ) -> FlowRow | None:
        try:
            flow = await self._create_first(new, route, create)
        except BaseException as exc:
            if not created.done():
                if isinstance(exc, asyncio.CancelledError):
                    created.cancel()
                else:
                    created.set_exception(exc)
            if isinstance(exc, Exception):
                return None  # the RPC raises it from `created`
            raise
        created.set_result(flow)
        if flow.replayed:
            return flow
        try:
            return await self._drive(flow, orders, route)
        except Exception as exc:  # a cancellation (shutdown drain) still ends the task: recovery queries it
            return await self._after_drive_error(flow, exc)

    async def _after_drive_error(self, flow: FlowRow, exc: Exception) -> FlowRow:
        """The flow is recorded but driving it failed: answer with it as recorded, query its open attempts now.

        The channel may have moved the money, so the caller must get the flow, not an error.
        A failover cut short (every attempt FAILED, nothing in flight) is finished from its
        last failure. Whatever cannot be done now (the database is gone) the poller's sweep
        and start-up recovery do later.
        """
        metrics.FLOW_DRIVE_ERRORS.labels(kind=flow.kind.value).inc()
        log.error(
            "flow recorded but its drive failed (%s); answering with the flow as recorded",
            type(exc).__name__,
            exc_info=exc,
            extra={"flow_no": flow.flow_no},
        )
        current = flow
        try:
            current = await self.store.by_id(flow.id) or flow
            attempts = current.attempts
            if (
                current.status is FlowStatus.PROCESSING
                and attempts
                and all(a.status is AttemptStatus.FAILED for a in attempts)
                and await self.store.finish_from_attempt(attempts[-1].id)
            ):
                self.on_outbox()
                current = await self.store.by_id(flow.id) or current
        except Exception as again:
            log.warning(
                "re-reading a flow after its drive failed: %s; the sweep finishes it",
                type(again).__name__,
                extra={"flow_no": flow.flow_no},
            )
        await self._query_now(current)
        return current

    async def _query_now(self, flow: FlowRow) -> int:
        """Ask for an immediate query of every open attempt of ``flow``; how many were queued."""
        queued = 0
        for attempt in flow.attempts:
            if attempt.status not in _OPEN:
                continue
            try:
                if self.queries is None:
                    raise LookupError("no poller in this process")
                queued += await self.queries.expedite(attempt.id, attempt.channel)
            except Exception as exc:
                # the periodic sweep (poller.recover) queues attempts without a definite result
                log.warning(
                    "could not queue an immediate query (%s); the poller's sweep will",
                    type(exc).__name__,
                    extra={"flow_no": flow.flow_no, "channel_order_no": attempt.channel_order_no},
                )
        return queued

    async def _create_first(self, new: NewFlow, route: Route, create: Creator) -> FlowRow:
        plan = route.plan
        if plan is None:
            assert route.query is not None
            plan = await self.route(route.query, frozenset())
        refused: list[tuple[str, str, str]] = []
        for choice in plan.candidates:
            attempt = NewAttempt(
                channel=choice,
                operation=route.operation.value,
                decision=plan.explain(choice),
                reserve_position=route.operation is Operation.PAYOUT,
                card_limit=plan.card_limits.get(choice),
            )
            try:
                creation = await create(new, attempt)
            except PositionShort:
                refused.append((choice, "position", "not enough float left (taken by concurrent payouts)"))
                continue  # another payout took the float since routing looked; try the next
            except CardLimitReached:
                refused.append((choice, "card_limit", "the card's daily limit used up by concurrent withholds"))
                continue
            except RefundExceeds:
                raise RefundExceedsOriginal("amount: the refunds of a flow can never exceed its amount") from None
            if isinstance(creation, Existing):
                return self._check_replay(creation.row, new.request_hash)
            self.planner.chosen(choice, route.operation, plan, failover=False)
            route.plan = plan
            route.tried.add(choice)
            return creation.row
        replay = await self._replay(new.caller, new.request_id, new.request_hash)
        if replay is not None:  # a replay is answered even when no channel would take it now
            return replay
        if refused:  # every candidate was taken by concurrent requests after routing looked
            why = "; ".join(sorted({detail for _, _, detail in refused}))
            raise NoRoute(
                f"no channel can take this {route.operation.value} any more: {why}", plan.rejected_tuples() + refused
            )
        raise NoRoute(plan.no_route_message(route.operation), plan.rejected_tuples())

    async def _drive(self, flow: FlowRow, orders: OrderBuilder, route: Route) -> FlowRow:
        attempt = flow.attempts[-1]
        while True:
            channel = self.registry.get(attempt.channel)
            call = orders.send(channel, attempt, self.notify_url(attempt.channel))
            outcome = await self.timed_call(channel.channel_id, orders.operation.value, call, attempt)
            next_attempt: NewAttempt | None = None
            if outcome.status is OutcomeStatus.FAILED and outcome.safe_elsewhere:
                next_attempt = await self._failover_target(flow, route)
            result = await self.apply(
                attempt.id,
                outcome,
                Source.RESPONSE,
                finish_flow_on_failure=next_attempt is None,
                poll_due_in_s=route.first_poll_in_s(),
                known=(attempt, flow),  # as this request recorded them: the store checks their versions
            )
            if result.applied is not Applied.TRANSITIONED or next_attempt is None:
                break
            metrics.FAILOVERS.labels(from_channel=attempt.channel, reason=outcome.code.lower()).inc()
            try:
                attempt = await self.store.add_attempt(flow, next_attempt)
            except (PositionShort, FlowClosed, CardLimitReached):
                # no next attempt: the flow ends with the failure just recorded (a no-op if it already ended)
                await self.store.finish_from_attempt(flow.attempts[-1].id)
                self.on_outbox()
                break
            self.planner.chosen(attempt.channel, route.operation, route.plan, failover=True)
            route.tried.add(attempt.channel)
        if result.flow_finished and result.flow is not None and result.attempt is not None:
            if len(flow.attempts) == 1 and result.flow.original_flow_id is None:
                # the terminal transaction read and updated both rows under their locks: no re-read
                result.flow.attempts = [result.attempt]
                return result.flow
        fresh = await self.store.by_id(flow.id)
        return fresh or flow

    async def _failover_target(self, flow: FlowRow, route: Route) -> NewAttempt | None:
        if route.query is None or len(flow.attempts) >= self.settings.max_attempts:
            return None
        if time.monotonic() >= route.deadline:
            return None
        try:
            plan = await self.route(route.query, frozenset(route.tried))
        except Exception:
            log.exception("re-routing for failover failed", extra={"flow_no": flow.flow_no})
            return None
        if not plan.candidates:
            return None
        route.plan = plan
        choice = plan.candidates[0]
        return NewAttempt(
            channel=choice,
            operation=route.operation.value,
            decision=plan.explain(choice, reason="failover"),
            reserve_position=route.operation is Operation.PAYOUT,
            card_limit=plan.card_limits.get(choice),
        )

    async def timed_call(
        self, channel_id: str, operation: str, call: Awaitable[Outcome], attempt: AttemptRow
    ) -> Outcome:
        """Run one adapter call with metrics, a hard guard, and 'unknown means PENDING'."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.settings.call_guard_s):  # no extra task, unlike wait_for
                outcome = await call
        except TimeoutError:
            outcome = pending("CALL_GUARD_TIMEOUT", raw_message="adapter did not return in time")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an adapter bug must not turn into a guess
            log.exception(
                "channel adapter raised", extra={"channel": channel_id, "channel_order_no": attempt.channel_order_no}
            )
            outcome = pending("ADAPTER_ERROR", raw_message=type(exc).__name__)
        elapsed = time.monotonic() - started
        if (
            outcome.amount is not None
            and outcome.status is OutcomeStatus.SUCCEEDED
            and outcome.amount != attempt.amount
        ):
            log.error(
                "channel reported a different amount; holding the attempt for review",
                extra={"channel": channel_id, "channel_order_no": attempt.channel_order_no},
            )
            outcome = pending(AMOUNT_MISMATCH, raw_code=outcome.raw_code, raw_message="amount differs from the order")
        if outcome.unmapped:
            metrics.CHANNEL_UNMAPPED_CODES.labels(channel=channel_id).inc()
        self.planner.call_answered(channel_id, outcome)
        metrics.CHANNEL_REQUEST_CHILDREN(channel_id, operation, outcome_label(outcome)).inc()
        metrics.CHANNEL_LATENCY_CHILDREN(channel_id, operation).observe(elapsed)
        log.info(
            "channel call %s",
            outcome.status.value,
            extra={
                "channel": channel_id,
                "operation": operation,
                "channel_order_no": attempt.channel_order_no,
                "outcome": outcome.code,
                "raw_code": outcome.raw_code,
                "duration_ms": round(elapsed * 1000, 2),
            },
        )
        return outcome

    async def order_ref(self, attempt: AttemptRow) -> OrderRef:
        original = ""
        if attempt.operation == Operation.REFUND.value:
            original = await self.store.refunded_order_no(attempt.flow_id)
        return OrderRef(
            attempt.channel_order_no,
            Operation(attempt.operation),
            attempt.amount,
            attempt.currency,
            original,
            bank_code=attempt.bank_code,
        )

    async def query(self, attempt: AttemptRow) -> Outcome:
        channel = self.registry.get(attempt.channel)
        ref = await self.order_ref(attempt)
        return await self.timed_call(attempt.channel, "query", channel.query(ref), attempt)

    async def close(self, attempt: AttemptRow) -> Outcome:
        channel = self.registry.get(attempt.channel)
        ref = await self.order_ref(attempt)
        return await self.timed_call(attempt.channel, "close", channel.close_order(ref), attempt)

    async def drain(self, grace_s: float) -> int:
        """Wait for in-flight channel calls; cancel what is left after ``grace_s``.

        A cancelled call leaves its attempt SENDING; start-up recovery queries it.
        Returns how many were cancelled.
        """
        return await background.drain(self._tasks, grace_s)


def _route_query(operation: Operation, new: NewFlow, agreement_channels: frozenset[str] | None) -> RouteQuery:
    return RouteQuery(operation, new.amount, new.currency, new.bank_code, new.account_hash, agreement_channels)


def _log_failure(task: asyncio.Task[Any]) -> None:
    """A flow task that ended with an error (its attempt is left to polling and recovery)."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.warning("flow task %s ended with %s: %s", task.get_name(), type(exc).__name__, exc)


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _hashable(params: WithholdParams | PayoutParams, acct: str) -> Any:
    """The request's parameters with the account number replaced by its keyed hash."""
    return replace(params, account_no=acct)
