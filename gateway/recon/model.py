"""Reconciliation's decisions: which class a statement line and our attempt end in. No I/O.

For a (channel, day) every statement line is paired with our attempt of the
same channel order number (whatever day the attempt is of), and every success
we recorded for the day that no line names is a lone local side. Each pair or
lone side ends in exactly one :class:`ItemClass`; :func:`classify` is the one
place that decides it. The store counts the pairs that plainly agree
(:data:`ItemClass.MATCHED`, the overwhelming majority) in SQL and hands the
rest to :func:`classify`, so the rule for "agrees" is written twice: here and
as ``recon.MATCHED_SQL`` in :mod:`gateway.store.recon`; an integration test
checks that the two agree on every case.

The statement is evidence, not a command (DESIGN.md invariant 11): a flow
still PROCESSING whose attempt the statement settles is *resolved* through the
audited operator path; a terminal state is never changed, a conflict with one
is a discrepancy for an operator.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from channels.contract import Operation
from channels.statement import LineStatus
from gateway.domain import AttemptStatus, FlowStatus


class ItemClass(enum.StrEnum):
    """What one pair (statement line, our attempt) or lone side turned out to be."""

    MATCHED = "matched"  # status, amount and fee agree
    CHANNEL_ONLY = "channel_only"  # money moved on the statement that we have no success for (critical)
    LOCAL_ONLY = "local_only"  # a success we recorded that the statement does not have (critical)
    AMOUNT_MISMATCH = "amount_mismatch"
    STATUS_MISMATCH = "status_mismatch"  # e.g. the statement lists as failed what we recorded as a success
    FEE_MISMATCH = "fee_mismatch"  # the statement's fee against the fee we expected
    RESOLVED_BY_STATEMENT = "resolved_by_statement"  # a PROCESSING flow the statement settled
    IGNORED = "ignored"  # nothing to say: a failed line of an order we never sent, an open attempt off the statement


CRITICAL = frozenset({ItemClass.CHANNEL_ONLY, ItemClass.LOCAL_ONLY})
#: The classes that make a run inconsistent and that finance has to act on.
DISCREPANCIES = frozenset(
    {
        ItemClass.CHANNEL_ONLY,
        ItemClass.LOCAL_ONLY,
        ItemClass.AMOUNT_MISMATCH,
        ItemClass.STATUS_MISMATCH,
        ItemClass.FEE_MISMATCH,
    }
)


class Resolution(enum.StrEnum):
    """What finance did with a recorded item."""

    OPEN = "OPEN"
    EXPLAINED = "EXPLAINED"  # understood, nothing to correct (a bank's late booking, a known test order)
    RESOLVED = "RESOLVED"  # corrected (a refund sent, a ledger entry booked); flows settled by the statement


class RunStatus(enum.StrEnum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class Outcome(enum.StrEnum):
    CONSISTENT = "consistent"
    INCONSISTENT = "inconsistent"


class Trigger(enum.StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"  # an operator asked for a run: the channel's statement is downloaded
    IMPORT = "import"  # an operator imported a file


@dataclass(frozen=True, slots=True)
class LineSide:
    """The statement's side of a pair."""

    line_no: int
    operation: str
    status: LineStatus
    amount: int
    fee: int
    channel_txn_id: str = ""
    booked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class LocalSide:
    """Our side: the attempt with this channel order number and its flow.

    ``expected_fee`` is the fee we expect the channel to charge: what the
    channel told us on the result, else the channel's fee schedule; None when
    neither is known (the fee is then not checked).
    """

    attempt_id: int
    flow_id: int
    flow_no: str
    channel: str
    operation: str
    status: AttemptStatus
    amount: int
    expected_fee: int | None
    flow_status: FlowStatus
    needs_review: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """The class of a pair, and for RESOLVED_BY_STATEMENT the status the flow is resolved to."""

    item_class: ItemClass
    settle_to: FlowStatus | None = None


_OPEN = frozenset({AttemptStatus.SENDING, AttemptStatus.PENDING})


def same_operation(line_operation: str, attempt_operation: str) -> bool:
    """A statement books a cashier payment (collect) as the trade it is: a withhold's line."""
    if line_operation == attempt_operation:
        return True
    return line_operation == Operation.WITHHOLD and attempt_operation == Operation.COLLECT


def classify(channel: str, line: LineSide | None, local: LocalSide | None) -> Decision:
    """The class of one pair or lone side of ``channel``'s statement (see :class:`ItemClass`).

    A lone local side is only ever one the caller found among the day's
    successes, so it is LOCAL_ONLY (before carry-over decides whether to
    declare it now); any other lone local side is IGNORED.
    """
    if line is None:
        if local is not None and local.status is AttemptStatus.SUCCEEDED:
            return Decision(ItemClass.LOCAL_ONLY)
        return Decision(ItemClass.IGNORED)
    moved = line.status is LineStatus.SUCCEEDED
    if local is None or local.channel != channel:
        return Decision(ItemClass.CHANNEL_ONLY if moved else ItemClass.IGNORED)
    if not same_operation(line.operation, local.operation):
        return Decision(ItemClass.STATUS_MISMATCH)
    if local.status in _OPEN:
        if local.flow_status is not FlowStatus.PROCESSING:
            return Decision(ItemClass.STATUS_MISMATCH)  # a terminal flow with an open attempt: an operator's case
        if moved and line.amount != local.amount:
            return Decision(ItemClass.AMOUNT_MISMATCH)  # evidence that does not fit settles nothing
        return Decision(ItemClass.RESOLVED_BY_STATEMENT, FlowStatus.SUCCEEDED if moved else FlowStatus.FAILED)
    if local.status is AttemptStatus.FAILED:
        return Decision(ItemClass.CHANNEL_ONLY if moved else ItemClass.MATCHED)
    # our attempt succeeded
    if not moved:
        return Decision(ItemClass.STATUS_MISMATCH)
    if line.amount != local.amount:
        return Decision(ItemClass.AMOUNT_MISMATCH)
    if local.expected_fee is not None and line.fee != local.expected_fee:
        return Decision(ItemClass.FEE_MISMATCH)
    return Decision(ItemClass.MATCHED)


def declare_day(origin: date, carry_over_days: int) -> date:
    """The day whose run declares a local_only candidate of ``origin`` still missing from the statements."""
    return origin + timedelta(days=carry_over_days)


def resolution_reason(channel: str, day: date, line: LineSide, source: str) -> str:
    """The audit reason of a flow the statement settled: the line, as evidence."""
    return (
        f"statement {channel} {day.isoformat()} line {line.line_no}: {line.status.value}"
        f" amount={line.amount} fee={line.fee} txn={line.channel_txn_id or '-'} ({source})"
    )[:255]


@dataclass
class KindTotals:
    """One side's successes of one kind: count, amount and fee, minor units."""

    count: int = 0
    amount: int = 0
    fee: int = 0

    def add(self, other: KindTotals) -> None:
        self.count += other.count
        self.amount += other.amount
        self.fee += other.fee

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "amount": self.amount, "fee": self.fee}


@dataclass
class RunTotals:
    """Both sides' successes by kind (withhold, payout, refund)."""

    statement: dict[str, KindTotals]
    local: dict[str, KindTotals]

    def to_json(self) -> dict[str, dict[str, dict[str, int]]]:
        return {
            "statement": {k: v.to_json() for k, v in sorted(self.statement.items())},
            "local": {k: v.to_json() for k, v in sorted(self.local.items())},
        }


@dataclass(frozen=True)
class RunRow:
    """One reconciliation run of a (channel, day), as recorded."""

    id: int
    channel: str
    day: date
    seq: int
    trigger: str
    operator: str
    status: RunStatus
    outcome: str
    format: str
    source: str
    sha256: str
    lines: int
    matched: int
    discrepancies: int
    resolved: int
    carried: int
    totals: dict[str, Any]  # "statement" / "local": kind -> count, amount, fee; "classes": class -> count
    error: str
    superseded_by: int | None
    started_at: datetime
    finished_at: datetime | None
    published: int = 0  # critical discrepancies published by the finish that returned this row


@dataclass(frozen=True)
class Item:
    """A pair or lone side that did not simply match, with both sides' fields, to be recorded."""

    item_class: ItemClass
    channel_order_no: str
    line: LineSide | None
    local: LocalSide | None
    resolution: Resolution = Resolution.OPEN
    resolved_by: str = ""
    reason: str = ""


@dataclass(frozen=True)
class ItemRow:
    """A recorded item (a discrepancy, or a flow the statement settled), and what finance did with it."""

    id: int
    run_id: int
    channel: str
    day: date
    item_class: ItemClass
    channel_order_no: str
    flow_no: str
    operation: str
    local_status: str
    local_amount: int | None
    local_fee: int | None
    line_no: int | None
    line_status: str
    line_amount: int | None
    line_fee: int | None
    line_txn_id: str
    resolution: Resolution
    resolved_by: str
    resolution_reason: str
    resolved_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Carry:
    """A local_only candidate to keep looking for on later days' statements."""

    attempt_id: int
    channel_order_no: str
    declare_day: date


@dataclass(frozen=True)
class DayFigure:
    """One channel's attempts of one kind that ended on a business day (the daily report's row)."""

    channel: str
    kind: str
    succeeded: int
    failed: int
    amount: int  # of the successes, minor units
    fee: int  # of the successes, as the channel reported them, minor units

    @property
    def success_rate(self) -> float | None:
        ended = self.succeeded + self.failed
        return self.succeeded / ended if ended else None
