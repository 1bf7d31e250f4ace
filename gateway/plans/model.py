"""The records of withholding plans and their statuses. Plain data, no I/O.

An instalment moves forward only::

    SCHEDULED ──claim──▶ CLAIMED ──go──▶ IN_FLIGHT ──result──▶ SUCCEEDED
        ▲                   │                 │      └───────▶ SCHEDULED (retry at a named time point)
        └──lease ends───────┘                 │      └───────▶ STOPPED (stop code, attempts or days used up)
    SCHEDULED / CLAIMED / STOPPED ──settle / cancel──▶ SETTLED / CANCELLED
    IN_FLIGHT ──settle / cancel──▶ (closing recorded; applied when the withhold's result is known)

* ``CLAIMED``: a replica holds it for one time point's run (a lease); nothing has been sent.
  When the lease ends (the replica died) it can be claimed again; the old holder's "go" then
  fails its compare-and-set, so it never sends.
* ``IN_FLIGHT``: the withhold of one time point is committed to (the attempt row exists,
  ``UNIQUE(instalment, business day, time point)``); its request id is fixed. It is never
  claimed again until the withhold's flow has a final status (DESIGN.md invariant 12).
* ``SUCCEEDED``, ``SETTLED``, ``CANCELLED`` are final; ``STOPPED`` is final for withholds but
  can still be settled or cancelled (the lender closes its books).

Pausing is a flag beside the status (``paused`` for the instalment, ``plan_paused`` for its
plan): a paused instalment is not due; an instalment already in flight finishes its withhold.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime


class InstalmentStatus(enum.StrEnum):
    SCHEDULED = "SCHEDULED"
    CLAIMED = "CLAIMED"
    IN_FLIGHT = "IN_FLIGHT"
    SUCCEEDED = "SUCCEEDED"
    STOPPED = "STOPPED"
    SETTLED = "SETTLED"
    CANCELLED = "CANCELLED"


# No more withholds, ever.
FINAL = frozenset(
    {InstalmentStatus.SUCCEEDED, InstalmentStatus.STOPPED, InstalmentStatus.SETTLED, InstalmentStatus.CANCELLED}
)
# Closed by the caller or by a success: nothing changes them any more.
CLOSED = frozenset({InstalmentStatus.SUCCEEDED, InstalmentStatus.SETTLED, InstalmentStatus.CANCELLED})


class PlanStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    SETTLED = "SETTLED"
    CANCELLED = "CANCELLED"


class Closing(enum.StrEnum):
    """What a caller asked for while a withhold was in flight; applied once its result is known."""

    NONE = ""
    SETTLE = "SETTLE"
    CANCEL = "CANCEL"


class AttemptStatus(enum.StrEnum):
    IN_FLIGHT = "IN_FLIGHT"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class OutcomeKind(enum.StrEnum):
    """What an instalment event reports (``paygate.v1.InstalmentOutcome.Kind``)."""

    SUCCEEDED = "SUCCEEDED"
    RETRY_SCHEDULED = "RETRY_SCHEDULED"
    STOPPED = "STOPPED"
    SETTLED = "SETTLED"
    CANCELLED = "CANCELLED"


class RunStatus(enum.StrEnum):
    RUNNING = "RUNNING"  # replicas claim and withhold its due instalments
    PAUSED = "PAUSED"  # an operator paused it: nothing new is claimed; in-flight withholds finish
    FINISHED = "FINISHED"  # nothing due was left to attempt inside the window
    BEHIND = "BEHIND"  # the window closed with due instalments left; they wait for the next time point


OPEN_RUN = frozenset({RunStatus.RUNNING, RunStatus.PAUSED})


# Codes the executor itself reports (never a channel's).
NO_AGREEMENT = "NO_AGREEMENT"  # no ACTIVE agreement for the payer when the time point came
NO_ROUTE = "NO_ROUTE"  # no channel passed routing's filters
WINDOW_PASSED = "WINDOW_PASSED"  # the days after the due date to keep trying are over
ATTEMPTS_EXHAUSTED = "ATTEMPTS_EXHAUSTED"  # the policy's attempts are used up
REQUEST_ID_CONFLICT = "REQUEST_ID_CONFLICT"  # the derived request id was used by the caller with other parameters
ACCOUNT_UNREADABLE = "ACCOUNT_UNREADABLE"  # the plan's sealed card number does not open (key changed)


@dataclass(frozen=True)
class Payer:
    """Whom a plan withholds from. ``account_no`` is whole only inside the process (sealed at rest)."""

    account_no: str
    bank_code: str
    agreement_no: str = ""


@dataclass
class PlanRow:
    id: int
    caller: str
    plan_id: str
    product: str
    policy: str
    status: PlanStatus
    paused: bool
    account_masked: str
    bank_code: str
    agreement_no: str
    description: str
    created_at: datetime | None = None
    updated_at: datetime | None = None
    instalments: list[InstalmentRow] = field(default_factory=list)


@dataclass
class AttemptRow:
    """One withhold of an instalment at one time point (``UNIQUE(instalment, business_day, time_point)``)."""

    id: int
    instalment_ref: int
    business_day: date
    time_point: str
    request_id: str
    amount: int
    currency: str
    status: AttemptStatus
    code: str = ""
    flow_id: int | None = None
    flow_no: str = ""
    channel: str = ""
    run_id: int | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass
class InstalmentRow:
    id: int
    plan_ref: int
    caller: str
    plan_id: str
    instalment_id: str
    product: str
    policy: str
    due_date: date
    last_day: date  # due date + the policy's retry days: no attempt after this business day
    amount: int  # what is still to be collected (amended down by AmendInstalment)
    original_amount: int
    currency: str
    status: InstalmentStatus
    paused: bool = False
    plan_paused: bool = False
    closing: Closing = Closing.NONE
    next_attempt_at: datetime | None = None  # naive UTC moment of the time point it is next due at
    attempts: int = 0
    attempts_day: date | None = None  # the business day ``attempts_on_day`` counts
    attempts_on_day: int = 0
    last_code: str = ""
    stop_reason: str = ""
    run_id: int | None = None
    claim_owner: str = ""
    claim_token: str = ""
    lease_until: datetime | None = None
    attempt_request_id: str = ""  # the withhold's request id while CLAIMED / IN_FLIGHT
    attempt_day: date | None = None
    attempt_time_point: str = ""
    flow_id: int | None = None  # the in-flight or last withhold's flow
    event_seq: int = 0  # instalment events written so far (the next one gets event_seq + 1)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    split_shares: str | None = None  # joint loans: its withholds' shares (gateway.splits.allocation.shares_json)
    attempt_rows: list[AttemptRow] = field(default_factory=list)

    @property
    def held(self) -> bool:
        """Paused by itself or with its plan."""
        return self.paused or self.plan_paused


@dataclass(frozen=True)
class RunKey:
    """A time point's run: one per (policy, business day, time point)."""

    policy: str
    business_day: date
    time_point: str  # "HH:MM"

    def label(self) -> str:
        return f"{self.policy}/{self.business_day.isoformat()}/{self.time_point}"


@dataclass
class RunRow:
    id: int
    policy: str
    business_day: date
    time_point: str
    scheduled_at: datetime  # naive UTC moment of the time point
    deadline: datetime  # the run claims nothing after this (next time point or quiet window)
    status: RunStatus
    started_by: str  # "schedule" or the operator's name
    due_by_product: dict[str, int] = field(default_factory=dict)  # instalments due when the run started
    started_at: datetime | None = None
    finished_at: datetime | None = None
    lag_s: float = 0.0  # how far behind its window the run is (projected while running)
    missed: int = 0  # due instalments not attempted when the window closed

    @property
    def key(self) -> RunKey:
        return RunKey(self.policy, self.business_day, self.time_point)

    @property
    def due(self) -> int:
        return sum(self.due_by_product.values())


@dataclass
class RunProgress:
    """What a run has done so far, counted from the attempts and the instalments still due."""

    run: RunRow
    attempted: int = 0
    succeeded: int = 0
    succeeded_amounts: dict[str, int] = field(default_factory=dict)  # currency -> minor units
    failed: dict[str, int] = field(default_factory=dict)  # failure code -> count
    in_flight: int = 0
    remaining: int = 0  # still due and not yet attempted (claimable or claimed)


@dataclass(frozen=True)
class InstalmentEvent:
    """An instalment outcome to publish (becomes a ``paygate.v1.FlowEvent`` with ``instalment`` set)."""

    kind: OutcomeKind
    instalment: InstalmentRow
    code: str = ""  # failure code (retry, stop) or the stop reason
    next_attempt_at: datetime | None = None
    next_business_day: date | None = None
    next_time_point: str = ""
    business_day: date | None = None  # of the attempt this event reports, if any
    time_point: str = ""
    request_id: str = ""
    flow_no: str = ""
    flow_id: int = 0


def withhold_request_id(instalment_ref: int, business_day: date, time_point: str) -> str:
    """The request id of an instalment's withhold at one time point (DESIGN.md invariant 12).

    Derived from the instalment and the time point only, so whoever sends it (a replica, a
    second replica, the same one after a crash) sends the same request: ``FlowService.withhold``
    answers a repeat with the existing flow, never a second debit. Request ids beginning
    ``plan:`` are the executor's.
    """
    return f"plan:{business_day:%Y%m%d}:{time_point.replace(':', '')}:{instalment_ref}"
