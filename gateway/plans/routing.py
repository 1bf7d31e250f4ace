"""Routing for plan withholds: the router's ranking, restricted to channels with a rate-limit token.

The executor withholds through its own :class:`gateway.flows.FlowService` (the same class, store,
agreements and registry as the RPCs, so routing, failover, polling, callbacks and events apply
unchanged) whose planner is a :class:`RateAwarePlanner`:

1. before it commits to an instalment's withhold, the executor routes it the ordinary way and
   takes a token (:meth:`gateway.plans.ratelimit.RateLimiter.acquire`) from the best-ranked
   channel that has one; that is the instalment's :class:`Reservation`, carried to the withhold
   in the :data:`RESERVED` context variable (the flow's task copies the context it starts in);
2. when the withhold asks for a route, the reserved channel goes first (reason ``rate_limit``
   when the router had ranked another first);
3. a failover asks again: it waits (briefly) for a token of the best remaining candidate, or
   finds no route, and the flow ends with the failure that made it fail over.

So a withhold is only ever sent on a channel for which a token was taken.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta

from channels.contract import CashierKind, Operation, Outcome
from gateway.planner import Plan
from gateway.plans.ratelimit import RateLimiter
from gateway.ports import RoutePlanner
from gateway.store.rows import AttemptRow

FAILOVER_TOKEN_WAIT_S = 5.0


@dataclass
class Reservation:
    """The channel a token was taken for, for one instalment's withhold."""

    channel: str
    used: bool = False


RESERVED: ContextVar[Reservation | None] = ContextVar("paygate_plan_reservation", default=None)


def first(plan: Plan, channel: str) -> Plan:
    """``plan`` with ``channel`` (one of its candidates) tried first."""
    if plan.candidates and plan.candidates[0] == channel:
        return plan
    rest = [c for c in plan.candidates if c != channel]
    return Plan([channel, *rest], plan.decision, "rate_limit", list(plan.rejected))


class RateAwarePlanner:
    """A :class:`gateway.ports.RoutePlanner`: the replica's planner, honouring rate-limit tokens.

    It holds no routing state of its own: every decision, every observation and every
    credentials refusal goes to ``inner`` (the replica's one planner and router).
    """

    def __init__(self, inner: RoutePlanner, limiter: RateLimiter) -> None:
        self.inner = inner
        self.limiter = limiter

    def chosen(self, channel: str, operation: Operation, plan: Plan | None, *, failover: bool) -> None:
        self.inner.chosen(channel, operation, plan, failover=failover)

    def observe(self, attempt: AttemptRow, outcome: Outcome) -> None:
        self.inner.observe(attempt, outcome)

    def call_answered(self, channel_id: str, outcome: Outcome) -> None:
        self.inner.call_answered(channel_id, outcome)

    async def plan(
        self,
        operation: Operation,
        amount: int,
        currency: str,
        bank_code: str,
        *,
        account_hash: str,
        agreement_channels: frozenset[str] | None,
        exclude: frozenset[str],
        cashier_kind: CashierKind | None = None,
    ) -> Plan:
        plan = await self.inner.plan(
            operation,
            amount,
            currency,
            bank_code,
            account_hash=account_hash,
            agreement_channels=agreement_channels,
            exclude=exclude,
            cashier_kind=cashier_kind,
        )
        if operation is not Operation.WITHHOLD or not plan.candidates:
            return plan
        reservation = RESERVED.get()
        if reservation is not None and not reservation.used:
            reservation.used = True
            if reservation.channel in plan.candidates:
                return first(plan, reservation.channel)
            self.limiter.give_back(reservation.channel)  # routing changed its mind: that token goes unused
        until = self.limiter.clock.now() + timedelta(seconds=FAILOVER_TOKEN_WAIT_S)
        channel = await self.limiter.acquire(plan.candidates, until=until)
        if channel is None:
            return Plan(
                [], plan.decision, "rate_limit", [*plan.rejected, *((c, "rate_limit", "") for c in plan.candidates)]
            )
        return first(plan, channel)
