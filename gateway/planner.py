"""Glue between the pure router (routing/) and the gateway's data.

The router decides from a :class:`routing.engine.RouteRequest`; this module
gathers what it needs from the store's ports (available float for payouts,
the card's usage on the business day for withholds), turns the decision into a :class:`Plan` the flow driver
walks, feeds outcomes back, and exports routing metrics.

Per-card daily limits are checked twice: here as a filter (so the router picks
a channel the card can still use) and in the commit that records the attempt
(the plan hands each candidate's :class:`~gateway.store.rows.CardLimit` to the
flow driver), which is the check that holds when withholds race.

Outcomes reach the router two ways, and each attempt counts once: this
replica's own (:meth:`Planner.observe`, as it applies them) and those any
replica recorded (:meth:`Planner.fold`: the warm start, and what the others
recorded, read every ``[replicas] evidence_sync_s`` by gateway/replicas.py).
Both go through one ledger of channel order numbers already counted.
Operator states reach it through :meth:`Planner.apply_operator_state`.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from channels.contract import CashierKind, Operation, Outcome, OutcomeStatus
from gateway import metrics
from gateway.businessday import BusinessCalendar
from gateway.credentials import CredentialsGuard
from gateway.domain import COLLECTION_CLOSE_CODES, AttemptStatus
from gateway.ports import ObservationStore, PositionStore
from gateway.store.rows import AttemptRow, CardLimit, ChannelStateRow, FinishedAttempt
from routing.engine import CardUsage, ChannelState, Decision, Observation, Router, RouteRequest

log = logging.getLogger(__name__)

# Channel order numbers of the outcomes counted, so that one read twice (an overlap of two folds, or a fold
# that sees this replica's own result) counts once. It must hold what a fold's overlap can show again: a few
# seconds of outcomes at peak rate.
COUNTED_MEMORY = 65_536


@dataclass
class Plan:
    """A ranked list of channels plus the explanation of how it was made."""

    candidates: list[str]
    decision: Decision | None = None
    reason: str = ""
    rejected: list[tuple[str, str, str]] = field(default_factory=list)
    card_limits: dict[str, CardLimit] = field(default_factory=dict)  # withholds: counted with the attempt

    @classmethod
    def explicit(cls, channel: str, reason: str) -> Plan:
        return cls([channel], None, reason)

    @classmethod
    def from_decision(cls, decision: Decision, card_limits: dict[str, CardLimit] | None = None) -> Plan:
        return cls(
            [s.channel_id for s in decision.ranked],
            decision,
            decision.reason,
            [(r.channel_id, r.filter, r.detail) for r in decision.rejected],
            card_limits or {},
        )

    def explain(self, chosen: str, reason: str | None = None) -> dict[str, Any]:
        """The JSON stored on the attempt: candidates, scores, rejections, why this one."""
        body: dict[str, Any] = self.decision.to_dict() if self.decision is not None else {}
        body["chosen"] = chosen
        first = self.candidates[0] if self.candidates else ""
        body["reason"] = reason or (self.reason if chosen == first else "next_ranked")
        body.setdefault("ranked", [{"channel_id": chosen}])
        body.setdefault("rejected", [])
        return body

    def preferring(self, preference: tuple[str, ...]) -> Plan:
        """The same plan with the candidates named in ``preference`` first, in that order (the rest as ranked)."""
        rank = {channel: i for i, channel in enumerate(preference)}
        ordered = sorted(self.candidates, key=lambda c: rank.get(c, len(rank)))
        if ordered == self.candidates:
            return self
        reason = "preference" if ordered[0] != self.candidates[0] else self.reason
        return Plan(ordered, self.decision, reason, list(self.rejected), dict(self.card_limits))

    def only(self, channel: str) -> Plan:
        """The plan restricted to ``channel`` (a caller asked for it); no candidate when the filters rejected it."""
        kept = [c for c in self.candidates if c == channel]
        rejected = [r for r in self.rejected if r[0] == channel]
        if not kept and not rejected:
            rejected = [(channel, "channel", "not a configured channel")]
        limits = {c: limit for c, limit in self.card_limits.items() if c in kept}
        return Plan(kept, self.decision, "requested" if kept else self.reason, rejected, limits)

    def rejected_tuples(self) -> list[tuple[str, str, str]]:
        return list(self.rejected)

    def no_route_message(self, operation: Operation) -> str:
        if not self.rejected:
            return f"no channel is configured for {operation.value}"
        parts = "; ".join(f"{c}: {f} ({d})" for c, f, d in self.rejected[:8])
        return f"no channel available for {operation.value}: {parts}"


def observation_for(outcome: Outcome) -> Observation | None:
    if outcome.status is OutcomeStatus.SUCCEEDED:
        return Observation.SUCCESS
    if outcome.status is OutcomeStatus.FAILED:
        return Observation.PAYER_FAILURE if outcome.payer_attributable else Observation.CHANNEL_FAILURE
    return None


class Planner:
    def __init__(
        self,
        router: Router,
        positions: PositionStore,
        observations: ObservationStore,
        *,
        needs_card_usage: bool = True,
        calendar: BusinessCalendar | None = None,
    ) -> None:
        self.router = router
        self.positions = positions
        self.observations = observations
        self.needs_card_usage = needs_card_usage
        self.calendar = calendar or BusinessCalendar.named()
        self.credentials = CredentialsGuard(router)  # holds channels that refuse our credentials
        self._counted: OrderedDict[str, None] = OrderedDict()
        self._routed = frozenset(router.channel_ids)
        self._applied: dict[str, int] = {}  # channel -> version of the operator state applied

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
        available = await self.positions.available(currency) if operation is Operation.PAYOUT else None
        usage: dict[str, CardUsage] = {}
        day = self.calendar.today()
        if self.needs_card_usage and account_hash and operation is Operation.WITHHOLD:
            usage = {
                ch: CardUsage(n, total)
                for ch, (n, total) in (await self.observations.card_usage(account_hash, day)).items()
            }
        request = RouteRequest(
            operation=operation,
            amount=amount,
            currency=currency,
            bank_code=bank_code,
            now=time.time(),
            agreement_channels=agreement_channels,
            available_position=available,
            card_usage=usage,
            exclude=exclude,
            cashier_kind=cashier_kind,
        )
        decision = self.router.decide(request)
        for rejection in decision.rejected:
            if rejection.channel_id not in exclude:
                metrics.ROUTING_REJECTIONS.labels(channel=rejection.channel_id, filter=rejection.filter).inc()
        if not decision.ranked:
            metrics.ROUTING_NO_CANDIDATE.labels(operation=operation.value).inc()
        limits: dict[str, CardLimit] = {}
        if operation is Operation.WITHHOLD and account_hash:
            for ranked in decision.ranked:
                profile = self.router.profile(ranked.channel_id)
                if profile.per_card_daily_attempts or profile.per_card_daily_amount:
                    limits[ranked.channel_id] = CardLimit(
                        day, profile.per_card_daily_attempts, profile.per_card_daily_amount
                    )
        return Plan.from_decision(decision, limits)

    def chosen(self, channel: str, operation: Operation, plan: Plan | None, *, failover: bool) -> None:
        reason = "failover" if failover else (plan.reason if plan and plan.reason else "explicit")
        metrics.ROUTING_DECISION_CHILDREN(channel, operation.value, reason).inc()

    def call_answered(self, channel_id: str, outcome: Outcome) -> None:
        self.credentials.observe(channel_id, outcome)

    def observe(self, attempt: AttemptRow, outcome: Outcome) -> None:
        """This replica applied a definite outcome of ``attempt`` (delayed feedback included)."""
        observation = observation_for(outcome)
        if observation is None or attempt.operation not in _OPERATIONS:
            return
        if not self._first_time(attempt.channel_order_no):
            return
        if outcome.code in COLLECTION_CLOSE_CODES:
            return  # a collection the borrower did not pay, or the caller closed: not the channel's doing
        # the router wants the time the attempt was sent: a late answer to an attempt sent
        # before an elimination must not count as fresh evidence
        sent = _epoch(attempt.created_at) if attempt.created_at else time.time()
        self._count(attempt.channel, attempt.operation, attempt.bank_code, observation, sent, attempt.channel_order_no)

    def fold(self, attempts: Iterable[FinishedAttempt]) -> int:
        """Count outcomes recorded by any replica (warm start, the others' results) not counted here yet.

        Oldest send time first; idempotent per channel order number. Returns how many were counted.
        """
        fresh = [
            a
            for a in attempts
            if a.operation in _OPERATIONS
            and self._first_time(a.channel_order_no)
            and a.code not in COLLECTION_CLOSE_CODES  # as in observe: not the channel's doing
        ]
        fresh.sort(key=lambda a: a.sent_at or a.finished_at)
        for attempt in fresh:
            if attempt.status is AttemptStatus.SUCCEEDED:
                observation = Observation.SUCCESS
            else:
                observation = Observation.PAYER_FAILURE if attempt.payer_attributable else Observation.CHANNEL_FAILURE
            # weighed by when the attempt was sent (late evidence counts as old evidence)
            sent = _epoch(attempt.sent_at or attempt.finished_at)
            order_no = attempt.channel_order_no
            self._count(attempt.channel, attempt.operation, attempt.bank_code, observation, sent, order_no)
        return len(fresh)

    def _count(
        self, channel: str, operation: str, bank_code: str, observation: Observation, sent: float, order_no: str
    ) -> None:
        """Feed one outcome to the router, weighed by its send time; the order number identifies probes."""
        self.router.observe(channel, Operation(operation), bank_code, observation, sent, attempt_id=order_no or None)

    def _first_time(self, channel_order_no: str) -> bool:
        if not channel_order_no:
            return True  # not identifiable (a row from before order numbers were read): count it
        if channel_order_no in self._counted:
            return False
        self._counted[channel_order_no] = None
        if len(self._counted) > COUNTED_MEMORY:
            self._counted.popitem(last=False)
        return True

    def apply_operator_state(self, row: ChannelStateRow, why: str) -> bool:
        """Apply a written operator state, unless this or a newer version of the channel's row was applied.

        The replica that took ``SetChannelState`` applies the row it wrote;
        every replica applies the rows it reads (gateway/replicas.py): versions
        make the order of the two irrelevant. The operator's state stands over
        a credentials hold, which ends here as on the replica that took the
        call; if the channel still refuses our credentials, its next call
        holds it again. Returns True when applied; unrouted channels are skipped.
        """
        if row.channel not in self._routed or self._applied.get(row.channel, 0) >= row.version:
            return False
        self._applied[row.channel] = row.version
        try:
            state = ChannelState(row.state.lower())
        except ValueError:  # not written by SetChannelState: say so once per version, keep the state in force
            log.error("unknown channel state %r in channel_states; ignored", row.state, extra={"channel": row.channel})
            return False
        self.credentials.release(row.channel, why, restore=False)
        self.router.set_state(row.channel, state)
        return True

    def publish_metrics(self) -> None:
        now = time.time()
        for status in self.router.snapshot(now):
            for estimate in getattr(status, "estimates", []):
                if getattr(estimate, "bank_code", "") in ("", None):
                    metrics.ROUTER_SUCCESS_ESTIMATE.labels(
                        channel=status.channel_id, operation=str(estimate.operation)
                    ).set(float(estimate.estimate))
            current = _state_label(status)
            for state in ("enabled", "draining", "disabled", "eliminated", "probing"):
                metrics.CHANNEL_STATE.labels(channel=status.channel_id, state=state).set(1 if state == current else 0)


def _state_label(status: Any) -> str:
    if getattr(status, "probing", False):
        return "probing"
    if getattr(status, "eliminated", False):
        return "eliminated"
    return str(getattr(status, "state", "enabled")).lower()


_OPERATIONS = frozenset(o.value for o in Operation)


def _epoch(at: datetime) -> float:
    """A naive UTC datetime (as the store keeps them) in epoch seconds."""
    return at.replace(tzinfo=UTC).timestamp()
