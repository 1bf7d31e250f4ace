"""Glue between the pure router (routing/) and the gateway's data.

The router decides from a :class:`routing.engine.RouteRequest`; this module
gathers what it needs from the store's ports (available float for payouts,
today's card usage for withholds), turns the decision into a :class:`Plan` the flow driver
walks, feeds outcomes back, and exports routing metrics.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from channels.contract import Operation, Outcome, OutcomeStatus
from gateway import metrics
from gateway.credentials import CredentialsGuard
from gateway.domain import AttemptStatus
from gateway.ports import ObservationStore, PositionStore
from gateway.store.rows import AttemptRow
from routing.engine import CardUsage, Decision, Observation, Router, RouteRequest


@dataclass
class Plan:
    """A ranked list of channels plus the explanation of how it was made."""

    candidates: list[str]
    decision: Decision | None = None
    reason: str = ""
    rejected: list[tuple[str, str, str]] = field(default_factory=list)

    @classmethod
    def explicit(cls, channel: str, reason: str) -> Plan:
        return cls([channel], None, reason)

    @classmethod
    def from_decision(cls, decision: Decision) -> Plan:
        return cls(
            [s.channel_id for s in decision.ranked],
            decision,
            decision.reason,
            [(r.channel_id, r.filter, r.detail) for r in decision.rejected],
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
    ) -> None:
        self.router = router
        self.positions = positions
        self.observations = observations
        self.needs_card_usage = needs_card_usage
        self.credentials = CredentialsGuard(router)  # holds channels that refuse our credentials

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
    ) -> Plan:
        available = await self.positions.available(currency) if operation is Operation.PAYOUT else None
        usage: dict[str, CardUsage] = {}
        if self.needs_card_usage and account_hash and operation is Operation.WITHHOLD:
            usage = {
                ch: CardUsage(n, total)
                for ch, (n, total) in (await self.observations.card_usage_today(account_hash)).items()
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
        )
        decision = self.router.decide(request)
        for rejection in decision.rejected:
            if rejection.channel_id not in exclude:
                metrics.ROUTING_REJECTIONS.labels(channel=rejection.channel_id, filter=rejection.filter).inc()
        if not decision.ranked:
            metrics.ROUTING_NO_CANDIDATE.labels(operation=operation.value).inc()
        return Plan.from_decision(decision)

    def chosen(self, channel: str, operation: Operation, plan: Plan | None, *, failover: bool) -> None:
        reason = "failover" if failover else (plan.reason if plan and plan.reason else "explicit")
        metrics.ROUTING_DECISIONS.labels(channel=channel, operation=operation.value, reason=reason).inc()

    def call_answered(self, channel_id: str, outcome: Outcome) -> None:
        self.credentials.observe(channel_id, outcome)

    def observe(self, attempt: AttemptRow, outcome: Outcome) -> None:
        observation = observation_for(outcome)
        if observation is None or attempt.operation not in {o.value for o in Operation}:
            return
        # the router wants the time the attempt was sent: a late answer to an attempt sent
        # before an elimination must not count as fresh evidence
        sent = attempt.created_at.replace(tzinfo=UTC).timestamp() if attempt.created_at else time.time()
        self.router.observe(attempt.channel, Operation(attempt.operation), attempt.bank_code, observation, sent)

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


async def warm_observations(
    store: ObservationStore, window_s: float
) -> Iterable[tuple[str, Operation, str, Observation, float]]:
    """Definite attempt outcomes of the last ``window_s`` seconds, oldest first (router warm start)."""
    since = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=window_s)
    out: list[tuple[str, Operation, str, Observation, float]] = []
    valid = {o.value for o in Operation}
    for attempt in await store.finished_since(since):
        if attempt.operation not in valid:
            continue
        if attempt.status is AttemptStatus.SUCCEEDED:
            obs = Observation.SUCCESS
        else:
            obs = Observation.PAYER_FAILURE if attempt.payer_attributable else Observation.CHANNEL_FAILURE
        at = attempt.finished_at.replace(tzinfo=UTC).timestamp()
        out.append((attempt.channel, Operation(attempt.operation), attempt.bank_code, obs, at))
    return out
