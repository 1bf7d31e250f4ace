"""A route planner for unit tests: implements ``gateway.ports.RoutePlanner`` without a router.

It offers the configured channels in order, minus the excluded ones (the
channels tried) and, for withholds, only those the payer has an agreement
with; it remembers every question, choice and observation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from channels.contract import Operation, Outcome, OutcomeStatus
from gateway.planner import Plan
from gateway.store.rows import AttemptRow


@dataclass(frozen=True)
class Asked:
    operation: Operation
    amount: int
    exclude: frozenset[str]
    agreement_channels: frozenset[str] | None


@dataclass
class FakePlanner:
    channels: list[str]
    asked: list[Asked] = field(default_factory=list)
    chosen_channels: list[tuple[str, bool]] = field(default_factory=list)  # (channel, failover)
    observed: list[tuple[str, OutcomeStatus]] = field(default_factory=list)
    fail_next: BaseException | None = None
    answered: list[tuple[str, str]] = field(default_factory=list)  # (channel, outcome code) of every call

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
        self.asked.append(Asked(operation, amount, exclude, agreement_channels))
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        candidates = [
            c for c in self.channels if c not in exclude and (agreement_channels is None or c in agreement_channels)
        ]
        rejected = [(c, "agreement", "no active agreement") for c in self.channels if c not in candidates]
        return Plan(candidates, None, "best_estimate", rejected)

    def call_answered(self, channel_id: str, outcome: Outcome) -> None:
        self.answered.append((channel_id, outcome.code))

    def chosen(self, channel: str, operation: Operation, plan: Plan | None, *, failover: bool) -> None:
        self.chosen_channels.append((channel, failover))

    def observe(self, attempt: AttemptRow, outcome: Outcome) -> None:
        self.observed.append((attempt.channel, outcome.status))
