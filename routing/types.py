"""The router's public value types: questions, answers, observations and status reports."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from channels.contract import CashierKind, Operation, Outcome, OutcomeStatus
from routing.config import ChannelState

__all__ = [
    "CardUsage",
    "ChannelStatus",
    "Decision",
    "EstimateStatus",
    "Observation",
    "Rejection",
    "RouteRequest",
    "Scored",
]


class Observation(enum.StrEnum):
    """What one resolved attempt says about its channel."""

    SUCCESS = "success"
    CHANNEL_FAILURE = "channel_failure"
    PAYER_FAILURE = "payer_failure"  # insufficient funds, frozen account...: not the channel's fault

    @classmethod
    def from_outcome(cls, outcome: Outcome) -> Observation | None:
        """The observation for a definite outcome; None while it is PENDING."""
        if outcome.status is OutcomeStatus.SUCCEEDED:
            return cls.SUCCESS
        if outcome.status is OutcomeStatus.FAILED:
            return cls.PAYER_FAILURE if outcome.payer_attributable else cls.CHANNEL_FAILURE
        return None


@dataclass(frozen=True, slots=True)
class CardUsage:
    """Today's use of one card on one channel: attempts made and amount attempted (minor units)."""

    attempts: int = 0
    amount: int = 0


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """One routing question.

    ``agreement_channels``: channels holding an active agreement for the payer's
    account; required for WITHHOLD (None there means none known, so every
    channel is filtered). ``available_position``: channel -> available float in
    minor units; required for PAYOUT (None or a missing channel filters it).
    ``card_usage``: channel -> today's usage of this card. ``exclude``: channels
    already tried in this flow. ``cashier_kind``: required for COLLECT, the
    cashier the channel must offer. ``attempt_id``: the id the caller will pass
    to :meth:`Router.observe` for this attempt, if known.
    """

    operation: Operation
    amount: int
    currency: str
    bank_code: str
    now: float
    agreement_channels: frozenset[str] | None = None
    available_position: Mapping[str, int] | None = None
    card_usage: Mapping[str, CardUsage] = field(default_factory=dict)
    exclude: frozenset[str] = frozenset()
    cashier_kind: CashierKind | None = None  # COLLECT: the cashier the borrower needs
    # the id the caller will give this attempt, when known: a probe handed to this request is then
    # recognised by id (Router.observe(..., attempt_id=...)); without it, by send time
    attempt_id: str | None = None


@dataclass(slots=True)  # not frozen: built 20 times per decision, and frozen construction is slow
class Scored:
    """A candidate that passed every filter.

    ``score`` = ``estimate * (1 - cost_weight * cost / amount)``; ``cost`` is the
    fee in minor units; ``sampled`` is the Thompson draw used for the first
    choice (None when not sampled); ``observations`` the effective evidence
    behind the estimate. ``reason``: probe, exploration, best_score,
    eliminated_fallback (first entry) or failover (the rest).
    """

    channel_id: str
    score: float
    estimate: float
    cost: int
    reason: str
    sampled: float | None = None
    observations: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel_id": self.channel_id,
            "score": round(self.score, 6),
            "estimate": round(self.estimate, 6),
            "cost": self.cost,
            "reason": self.reason,
            "sampled": None if self.sampled is None else round(self.sampled, 6),
            "observations": round(self.observations, 2),
        }


@dataclass(frozen=True, slots=True)
class Rejection:
    channel_id: str
    filter: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"channel_id": self.channel_id, "filter": self.filter, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Decision:
    """The full answer: ``ranked`` is the ordered failover list (may be empty), ``rejected`` every removal.

    ``reason`` explains the first choice: best_score, exploration, probe,
    eliminated_fallback, or no_candidate when ``ranked`` is empty.
    """

    ranked: list[Scored]
    rejected: list[Rejection]
    reason: str

    @property
    def chosen(self) -> Scored | None:
        return self.ranked[0] if self.ranked else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "ranked": [s.to_dict() for s in self.ranked],
            "rejected": [r.to_dict() for r in self.rejected],
        }


@dataclass(frozen=True, slots=True)
class EstimateStatus:
    """One estimate: ``estimate`` = expected success = ``reliability * (1 - payer_failure_rate)``."""

    operation: Operation
    bank_code: str  # "" for the (channel, operation) level
    estimate: float
    observations: float
    reliability: float = 1.0  # the channel does its part (success or a payer failure)
    payer_failure_rate: float = 0.0  # of the attempts the channel carried through

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation.value,
            "bank_code": self.bank_code,
            "estimate": round(self.estimate, 6),
            "observations": round(self.observations, 2),
            "reliability": round(self.reliability, 6),
            "payer_failure_rate": round(self.payer_failure_rate, 6),
        }


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    """What the router thinks of one channel right now (for the admin API and dashboards)."""

    channel_id: str
    state: ChannelState
    eliminated: bool
    probing: bool  # eliminated and a probe is due or in flight
    next_probe_at: float | None
    recent_failure_share: float
    estimates: tuple[EstimateStatus, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel_id": self.channel_id,
            "state": self.state.value,
            "eliminated": self.eliminated,
            "probing": self.probing,
            "next_probe_at": self.next_probe_at,
            "recent_failure_share": round(self.recent_failure_share, 4),
            "estimates": [e.to_dict() for e in self.estimates],
        }
