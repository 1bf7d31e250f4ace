"""Ports: what the plan use cases need from storage, from agreements and from the withhold path.

The composition root (gateway/app.py) hands the executor and the service the MySQL store
(gateway/store/plans.py), the agreement store and a :class:`gateway.flows.FlowService`; unit
tests hand them the in-memory fake of ``tests/fakes/plans.py``.

Contracts every :class:`PlanStore` keeps (the fake too):

* ``submit`` is idempotent per (caller, plan_id) and (caller, instalment_id), comparing the
  canonical request hashes: a replay writes nothing, another hash is refused, never overwritten;
* ``claim`` hands a due instalment to one claimer only (``SKIP LOCKED`` in MySQL), with a lease
  and a fresh claim token;
* ``go`` is the one step after which a withhold may be sent: a compare-and-set from CLAIMED (with
  the claim's token, not paused, not closing, its run RUNNING or FINISHED and before its deadline)
  to IN_FLIGHT, with the attempt row (``UNIQUE(instalment, business day, time point)``) in the
  same commit;
* ``save`` writes every :class:`Write` of a call in one transaction, each a compare-and-set on its
  ``before`` row's guard (status, event_seq, claim_token, attempt_request_id, closing), with its
  attempt row and its event in the outbox; if any guard fails nothing is written and it returns False.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from gateway.domain import FlowStatus
from gateway.plans.events import dedupe_key, instalment_event
from gateway.plans.model import (
    AttemptRow,
    InstalmentRow,
    InstalmentStatus,
    PlanRow,
    RunKey,
    RunProgress,
    RunRow,
    RunStatus,
)
from gateway.plans.ratelimit import TokenStore
from gateway.plans.spec import NewPlan, Rejection
from gateway.plans.transitions import Step
from gateway.store.rows import FlowRow
from gateway.validation import WithholdParams
from paygate.v1 import events_pb2


@dataclass(frozen=True)
class Submitted:
    plans_accepted: int = 0
    instalments_accepted: int = 0
    instalments_replayed: int = 0
    rejected: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True)
class Claimed:
    """A claimed instalment with what its withhold needs from its plan."""

    instalment: InstalmentRow
    account_sealed: bytes
    account_hash: str
    bank_code: str
    agreement_no: str
    description: str


@dataclass(frozen=True)
class FlowResult:
    """Where an in-flight instalment's withhold stands (from its flow)."""

    flow_id: int
    flow_no: str
    status: FlowStatus
    failure_code: str = ""
    channel: str = ""


@dataclass(frozen=True)
class OutboxEvent:
    event: events_pb2.FlowEvent
    flow_id: int  # the withhold's flow (orders the event after its FLOW_RESULT); 0 when none
    msg_key: str  # the plan id: one loan's events share a partition
    dedupe_key: str


@dataclass(frozen=True)
class Write:
    """One compare-and-set of an instalment: its row before (the guard), after, attempt row, event."""

    before: InstalmentRow
    after: InstalmentRow
    attempt: AttemptRow | None = None
    new_attempt: bool = False  # insert ``attempt`` (else update the one with its request id)
    event: OutboxEvent | None = None


def write(before: InstalmentRow, step: Step, *, attempt: AttemptRow | None = None, new_attempt: bool = False) -> Write:
    """The :class:`Write` of a transition step, its event built (sequence = the row's event_seq after)."""
    event = None
    if step.event is not None:
        after = step.after
        event = OutboxEvent(
            instalment_event(step.event, sequence=after.event_seq),
            step.event.flow_id,
            after.plan_id,
            dedupe_key(after.id, after.event_seq),
        )
    return Write(before, step.after, attempt, new_attempt, event)


@dataclass(frozen=True)
class DayFigures:
    """Plan withholds of one business day, per caller, product and time point (the daily withhold report)."""

    caller: str
    product: str
    policy: str
    time_point: str
    currency: str
    attempted: int
    succeeded: int
    succeeded_amount: int
    failed: int
    in_flight: int
    failed_by_code: dict[str, int]


class PlanStore(TokenStore, Protocol):
    """Plans, instalments, attempts, runs and the shared rate-limit buckets (gateway/store/plans.py)."""

    async def submit(self, caller: str, plans: Sequence[NewPlan], *, now: datetime) -> Submitted: ...

    async def plan(self, caller: str, plan_id: str, *, with_attempts: bool = False) -> PlanRow | None: ...

    async def instalment(self, row_id: int) -> InstalmentRow | None: ...

    async def list_instalments(
        self,
        caller: str,
        *,
        due_from: date | None,
        due_to: date | None,
        statuses: frozenset[InstalmentStatus],
        plan_id: str,
        after: tuple[date, int] | None,
        limit: int,
    ) -> list[InstalmentRow]: ...

    async def set_paused(self, caller: str, plan_id: str, instalment_id: str, paused: bool, *, now: datetime) -> bool:
        """Pause or resume a plan (``instalment_id`` empty) or one instalment; False if there is no such thing."""
        ...

    async def set_plan_status(self, plan_ref: int, status: str, *, now: datetime) -> None: ...

    async def save(self, writes: Sequence[Write]) -> bool: ...

    # --- runs ---------------------------------------------------------------------------

    async def open_run(
        self,
        key: RunKey,
        *,
        scheduled_at: datetime,
        deadline: datetime,
        started_by: str,
        now: datetime,
        due: dict[str, int],
    ) -> tuple[RunRow, bool]:
        """The run of ``key``, created RUNNING if there was none (True) or as it is (False)."""
        ...

    async def restart_run(self, run_id: int, *, deadline: datetime, started_by: str, now: datetime) -> RunRow: ...

    async def set_run_status(
        self,
        run_id: int,
        status: RunStatus,
        *,
        expect: frozenset[RunStatus],
        now: datetime,
        missed: int = 0,
        lag_s: float = 0.0,
    ) -> bool: ...

    async def set_run_lag(self, run_id: int, lag_s: float) -> None: ...

    async def run(self, key: RunKey) -> RunRow | None: ...

    async def open_runs(self, now: datetime) -> list[RunRow]:
        """Runs RUNNING or PAUSED, and runs FINISHED whose deadline is after ``now`` (they may get work again)."""
        ...

    async def runs(
        self, *, statuses: frozenset[RunStatus] | None = None, day: date | None = None, policy: str = ""
    ) -> list[RunRow]: ...

    async def due_by_product(self, policy: str, moment: datetime) -> dict[str, int]: ...

    async def run_progress(self, run: RunRow) -> RunProgress: ...

    async def remaining_by_product(self, run: RunRow) -> dict[str, int]: ...

    # --- the executor ---------------------------------------------------------------------

    async def claim(
        self, run: RunRow, *, owner: str, limit: int, now: datetime, lease_until: datetime
    ) -> list[Claimed]: ...

    async def go(self, claimed: Claimed, after: InstalmentRow, attempt: AttemptRow, *, now: datetime) -> bool: ...

    async def resolvable(self, limit: int) -> list[tuple[InstalmentRow, FlowResult]]:
        """IN_FLIGHT instalments whose withhold's flow has a final status."""
        ...

    async def claim_orphans(self, *, owner: str, now: datetime, lease_until: datetime, limit: int) -> list[Claimed]:
        """IN_FLIGHT instalments with no flow recorded whose lease ended (their replica died), leased to ``owner``."""
        ...

    async def release_expired_claims(self, now: datetime) -> int: ...

    async def release_owner(self, owner: str, *, now: datetime) -> int:
        """At start-up: end the leases this replica held in a previous life (claims back to SCHEDULED)."""
        ...

    async def daily_figures(self, day: date) -> list[DayFigures]: ...


class AuditLog(Protocol):
    """The audit log of operator actions."""

    async def record(self, operator: str, action: str, target: str, reason: str, detail: dict[str, Any]) -> None: ...


class Withholder(Protocol):
    """The withhold use case (gateway.flows.FlowService)."""

    async def withhold(self, caller: str, request_id: str, params: WithholdParams, wait_s: float) -> FlowRow: ...


class AgreementLookup(Protocol):
    """Agreements (gateway.store.agreements.AgreementStore)."""

    async def active_refs(self, caller: str, account_hash: str, agreement_no: str = "") -> dict[str, str]: ...
