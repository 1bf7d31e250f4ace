"""What the console's queries hand out (gateway/store/console_queries.py): plain rows, no I/O.

Amounts are minor units; times naive UTC, as everywhere in the store. Account numbers appear
only masked (``account_masked``): the console never reads the hash or anything whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from gateway.store.rows import AuditRow


@dataclass(frozen=True)
class KindStatusTotal:
    """Flows created in a window, by kind, status and currency: how many and how much."""

    kind: str
    status: str
    currency: str
    count: int
    amount: int


@dataclass(frozen=True)
class DayPoint:
    """One business day of the trend: flows created that day, by status."""

    day: int  # index into the days asked for
    status: str
    count: int
    amount: int


@dataclass(frozen=True)
class ChannelOutcomes:
    """Attempts of one channel and operation decided (or still open) in a window.

    ``channel_failed`` excludes payer-attributable failures (``payer_failed``), as the routing
    estimates and the success-rate alerts do.
    """

    channel: str
    operation: str
    succeeded: int
    channel_failed: int
    payer_failed: int
    open: int

    @property
    def success_rate(self) -> float | None:
        decided = self.succeeded + self.channel_failed
        return self.succeeded / decided if decided else None


@dataclass(frozen=True)
class FlowCursor:
    """Where a page of the flow search ends: the last row's creation time and id (newest first)."""

    created_at: datetime
    id: int


@dataclass(frozen=True)
class FlowQuery:
    """A flow search: every field set narrows it; ``created_from`` / ``created_to`` are naive UTC, [from, to)."""

    flow_no: str = ""
    request_id: str = ""
    caller: str = ""
    kind: str = ""
    status: str = ""
    channel: str = ""
    min_amount: int | None = None
    max_amount: int | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    needs_review: bool = False
    after: FlowCursor | None = None
    limit: int = 50


@dataclass(frozen=True)
class FlowListItem:
    id: int
    flow_no: str
    caller: str
    request_id: str
    kind: str
    amount: int
    currency: str
    account_masked: str
    bank_code: str
    status: str
    channel: str
    failure_code: str
    needs_review: bool
    description: str
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class PollState:
    """An attempt's row in the poll queue: scheduled queries made, when the next is due."""

    attempt_id: int
    tries: int
    due_at: datetime
    expedited_at: datetime | None
    lease_owner: str


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    event_id: str
    event_type: str
    flow_id: int
    flow_no: str
    caller: str
    payload: bytes
    created_at: datetime
    published_at: datetime | None
    attempts: int
    last_error: str


@dataclass(frozen=True)
class OutboxBacklog:
    waiting: int  # unpublished, still being tried
    parked: int  # unpublished, tried max_attempts times: only an operator's release sends them again
    oldest_age_s: float


@dataclass(frozen=True)
class DiscrepancyEntry:
    id: int
    attempt_id: int
    recorded_status: str
    reported_status: str
    reported_code: str
    source: str
    created_at: datetime


@dataclass
class FlowRecords:
    """Everything recorded about one flow besides the flow and its attempts (the timeline's other sources)."""

    polls: list[PollState] = field(default_factory=list)
    events: list[OutboxEntry] = field(default_factory=list)
    audit: list[AuditRow] = field(default_factory=list)  # read through the AuditLog port
    discrepancies: list[DiscrepancyEntry] = field(default_factory=list)
    refunds: list[FlowListItem] = field(default_factory=list)


# --- the plans screen (gateway/store/console_plans.py) ----------------------------------------


@dataclass(frozen=True)
class InstalmentCursor:
    """Where a page of the instalment search ends: the last row's due date and id (earliest due first)."""

    due_date: date
    id: int


@dataclass(frozen=True)
class InstalmentQuery:
    """An instalment search over every caller's plans: every field set narrows it; due dates inclusive."""

    plan_id: str = ""
    caller: str = ""
    status: str = ""
    due_from: date | None = None
    due_to: date | None = None
    after: InstalmentCursor | None = None
    limit: int = 50


@dataclass(frozen=True)
class InstalmentListItem:
    id: int
    caller: str
    plan_id: str
    instalment_id: str
    product: str
    policy: str
    due_date: date
    amount: int  # still to collect
    original_amount: int
    currency: str
    status: str
    paused: bool  # by itself or with its plan
    attempts: int
    last_code: str
    stop_reason: str
    next_attempt_at: datetime | None
    account_masked: str  # the plan's payer, masked
    bank_code: str
    flow_no: str  # the in-flight or last withhold's flow, "" when none
