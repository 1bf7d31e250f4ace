"""The records the store hands out and takes in: plain dataclasses, no I/O.

Use cases, servicers, ports (gateway/ports.py) and the in-memory fakes of the
tests all speak these types; only gateway/store knows the tables behind them.
Timestamps are naive UTC, as the database session keeps them (``utcnow``).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Generic, TypeAlias, TypeVar

from channels.contract import Outcome, OutcomeStatus
from gateway.domain import AgreementStatus, AttemptStatus, FlowKind, FlowStatus, channel_order_no, new_ulid
from gateway.splits.allocation import Part


def utcnow() -> datetime:
    """Now, as the naive UTC datetime the store writes and reads."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class AttemptRow:
    id: int
    flow_id: int
    seq: int
    channel: str
    operation: str
    channel_order_no: str
    status: AttemptStatus
    amount: int
    currency: str
    account_hash: str = ""
    bank_code: str = ""
    raw_code: str = ""
    raw_message: str = ""
    code: str = ""
    payer_attributable: bool = False
    safe_elsewhere: bool = False
    channel_txn_id: str = ""
    fee: int | None = None
    decision: dict[str, Any] | None = None
    position_reserved: int = 0
    created_at: datetime | None = None
    finished_at: datetime | None = None
    incarnation: str = ""  # the gateway run that recorded it (replicas table); '' before replicas were recorded
    version: int = 0  # bumped by every write of the row (a new attempt: 0)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AttemptRow:
        decision = row.get("decision")
        if isinstance(decision, str | bytes):
            decision = json.loads(decision)
        return cls(
            id=int(row["id"]),
            flow_id=int(row["flow_id"]),
            seq=int(row["seq"]),
            channel=row["channel"],
            operation=row["operation"],
            channel_order_no=row["channel_order_no"],
            status=AttemptStatus(row["status"]),
            amount=int(row["amount"]),
            currency=row["currency"],
            account_hash=row.get("account_hash", ""),
            bank_code=row.get("bank_code", ""),
            raw_code=row.get("raw_code", ""),
            raw_message=row.get("raw_message", ""),
            code=row.get("code", ""),
            payer_attributable=bool(row.get("payer_attributable")),
            safe_elsewhere=bool(row.get("safe_elsewhere")),
            channel_txn_id=row.get("channel_txn_id", ""),
            fee=row.get("fee"),
            decision=decision,
            position_reserved=int(row.get("position_reserved") or 0),
            created_at=row.get("created_at"),
            finished_at=row.get("finished_at"),
            incarnation=row.get("incarnation", ""),
            version=int(row.get("version") or 0),
        )


@dataclass
class FlowRow:
    id: int
    flow_no: str
    caller: str
    request_id: str
    kind: FlowKind
    amount: int
    currency: str
    request_hash: str
    status: FlowStatus
    account_hash: str = ""
    account_masked: str = ""
    bank_code: str = ""
    channel: str = ""
    channel_txn_id: str = ""
    failure_code: str = ""
    failure_message: str = ""
    payer_attributable: bool = False
    needs_review: bool = False
    original_flow_id: int | None = None
    original_flow_no: str = ""
    refunded_amount: int = 0
    refund_reserved: int = 0
    description: str = ""
    version: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    split_shares: str | None = None  # joint loans: the shares as requested (JSON); a refund of one: its marker
    attempts: list[AttemptRow] = field(default_factory=list)
    replayed: bool = False
    split: list[Part] = field(default_factory=list)  # the funders' parts (withhold or refund), once written

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> FlowRow:
        return cls(
            id=int(row["id"]),
            flow_no=row["flow_no"],
            caller=row["caller"],
            request_id=row["request_id"],
            kind=FlowKind(row["kind"]),
            amount=int(row["amount"]),
            currency=row["currency"],
            request_hash=row["request_hash"],
            status=FlowStatus(row["status"]),
            account_hash=row.get("account_hash", ""),
            account_masked=row.get("account_masked", ""),
            bank_code=row.get("bank_code", ""),
            channel=row.get("channel", ""),
            channel_txn_id=row.get("channel_txn_id", ""),
            failure_code=row.get("failure_code", ""),
            failure_message=row.get("failure_message", ""),
            payer_attributable=bool(row.get("payer_attributable")),
            needs_review=bool(row.get("needs_review")),
            original_flow_id=row.get("original_flow_id"),
            original_flow_no=row.get("original_flow_no") or "",
            refunded_amount=int(row.get("refunded_amount") or 0),
            refund_reserved=int(row.get("refund_reserved") or 0),
            description=row.get("description", ""),
            version=int(row.get("version") or 0),
            created_at=row.get("created_at"),
            updated_at=row.get("updated_at"),
            finished_at=row.get("finished_at"),
            split_shares=row.get("split_shares"),
        )

    def as_event_source(self) -> dict[str, object]:
        return {
            "caller": self.caller,
            "request_id": self.request_id,
            "flow_no": self.flow_no,
            "kind": self.kind.value,
            "status": self.status.value,
            "amount": self.amount,
            "currency": self.currency,
            "channel": self.channel,
            "channel_txn_id": self.channel_txn_id,
            "failure_code": self.failure_code,
            "failure_message": self.failure_message,
            "payer_attributable": self.payer_attributable,
            "needs_review": self.needs_review,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "split": [(p.funder_id, p.amount, p.refunded) for p in self.split],
        }


@dataclass(frozen=True)
class NewFlow:
    caller: str
    request_id: str
    kind: FlowKind
    amount: int
    currency: str
    request_hash: str
    account_hash: str = ""
    account_masked: str = ""
    bank_code: str = ""
    description: str = ""
    original_flow_id: int | None = None
    split_shares: str | None = None  # joint loans (gateway/splits): the shares as requested, JSON


@dataclass(frozen=True)
class CardLimit:
    """A channel's per-card daily limits, counted in the business day ``day`` by the attempt's own commit.

    ``None`` means no limit of that kind. The attempt is refused (``CardLimitReached``) unless
    the card has made fewer than ``max_attempts`` attempts on the channel that day and its
    amount fits in what is left of ``max_amount``.
    """

    day: date
    max_attempts: int | None
    max_amount: int | None


@dataclass(frozen=True)
class NewAttempt:
    channel: str
    operation: str
    decision: dict[str, Any] | None = None
    reserve_position: bool = False  # payouts: reserve `amount` of the channel's float
    card_limit: CardLimit | None = None  # withholds on a channel with per-card daily limits


def another_transaction(attempt: AttemptRow, outcome: Outcome) -> bool:
    """A success reported for a succeeded attempt under another channel transaction: a second payment.

    A channel names the transaction that moved the money; a replay of the
    same success names the same one. Another one means the payer's money was
    taken again for this order (a cashier paid twice): a discrepancy, never a
    replay. Only when both transaction ids are known.
    """
    return (
        attempt.status is AttemptStatus.SUCCEEDED
        and outcome.status is OutcomeStatus.SUCCEEDED
        and bool(attempt.channel_txn_id)
        and bool(outcome.channel_txn_id)
        and outcome.channel_txn_id != attempt.channel_txn_id
    )


#: The reported code of the discrepancy :func:`another_transaction` records.
ANOTHER_TRANSACTION = "ANOTHER_TRANSACTION"


def new_flow_row(new: NewFlow, now: datetime) -> FlowRow:
    """The row a new flow gets (PROCESSING); ``id`` is set once inserted."""
    return FlowRow(
        id=0,
        flow_no=new_ulid(),
        caller=new.caller,
        request_id=new.request_id,
        kind=new.kind,
        amount=new.amount,
        currency=new.currency,
        request_hash=new.request_hash,
        status=FlowStatus.PROCESSING,
        account_hash=new.account_hash,
        account_masked=new.account_masked,
        bank_code=new.bank_code,
        description=new.description,
        original_flow_id=new.original_flow_id,
        created_at=now,
        updated_at=now,
        split_shares=new.split_shares,
    )


def new_attempt_row(
    flow: FlowRow, seq: int, attempt: NewAttempt, reserved: int, now: datetime, incarnation: str = ""
) -> AttemptRow:
    """The row a new attempt gets (SENDING, with its unique channel order number); ``id`` is set once inserted.

    ``incarnation``: the gateway run recording it (the one that sends it and fails it over).
    """
    return AttemptRow(
        id=0,
        flow_id=flow.id,
        seq=seq,
        channel=attempt.channel,
        operation=attempt.operation,
        channel_order_no=channel_order_no(flow.flow_no, seq),
        status=AttemptStatus.SENDING,
        amount=flow.amount,
        currency=flow.currency,
        account_hash=flow.account_hash,
        bank_code=flow.bank_code,
        decision=attempt.decision,
        position_reserved=reserved,
        created_at=now,
        incarnation=incarnation,
    )


class Source(enum.StrEnum):
    RESPONSE = "response"
    POLL = "poll"
    CALLBACK = "callback"
    OPERATOR = "operator"
    RECOVERY = "recovery"


class Applied(enum.StrEnum):
    """What apply_outcome did."""

    TRANSITIONED = "transitioned"  # the attempt changed state (and maybe the flow)
    NOOP = "noop"  # same result already recorded (replay, lost race)
    STILL_PENDING = "still_pending"  # PENDING reported for a PENDING attempt
    DISCREPANCY = "discrepancy"  # conflicting result recorded, nothing overwritten
    UNKNOWN = "unknown"  # no such attempt


@dataclass(frozen=True)
class ApplyResult:
    applied: Applied
    attempt: AttemptRow | None
    flow: FlowRow | None = None
    flow_finished: bool = False


@dataclass
class AgreementRow:
    id: int
    agreement_no: str
    caller: str
    request_id: str
    request_hash: str
    channel: str
    account_hash: str
    account_masked: str
    holder_masked: str
    bank_code: str
    status: AgreementStatus
    sign_ref: str
    agreement_ref: str
    failure_code: str
    created_at: datetime | None
    updated_at: datetime | None
    confirm_sent_at: datetime | None = None  # a confirm went to the channel (record before call)
    needs_review: bool = False  # left awaiting after a confirm was sent: an operator checks with the channel

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> AgreementRow:
        return cls(
            id=int(r["id"]),
            agreement_no=r["agreement_no"],
            caller=r["caller"],
            request_id=r["request_id"],
            request_hash=r["request_hash"],
            channel=r["channel"],
            account_hash=r["account_hash"],
            account_masked=r["account_masked"],
            holder_masked=r["holder_masked"],
            bank_code=r["bank_code"],
            status=AgreementStatus(r["status"]),
            sign_ref=r["sign_ref"],
            agreement_ref=r["agreement_ref"],
            failure_code=r["failure_code"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            confirm_sent_at=r.get("confirm_sent_at"),
            needs_review=bool(r.get("needs_review")),
        )


@dataclass(frozen=True)
class PositionRow:
    """A channel's float. ``balance_version`` counts every change of ``balance`` (settlements,
    adjustments, syncs): a sync writes only if it is still the one read before the balance query."""

    channel: str
    currency: str
    balance: int
    reserved: int
    synced_at: datetime | None
    balance_version: int = 0

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> PositionRow:
        return cls(
            r["channel"],
            r["currency"],
            int(r["balance"]),
            int(r["reserved"]),
            r["synced_at"],
            int(r.get("balance_version") or 0),
        )

    @property
    def available(self) -> int:
        return self.balance - self.reserved


@dataclass(frozen=True)
class NewCollection:
    """What a COLLECT flow records beside the flow: the cashier kind asked for, the order's expiry (naive UTC)."""

    cashier_kind: str
    expires_at: datetime


@dataclass
class CollectionRow:
    """A COLLECT flow's cashier side (the ``collections`` table).

    ``cashier`` is the channel's cashier as stored (``Cashier.to_json()``), ""
    until the channel gave it. ``close_requested_at`` is set once a close was
    asked for: by the caller (``close_reason`` CALLER) or at the expiry (EXPIRED).
    """

    flow_id: int
    cashier_kind: str
    expires_at: datetime
    cashier: str = ""
    cashier_channel: str = ""
    close_requested_at: datetime | None = None
    close_reason: str = ""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CollectionRow:
        cashier = row.get("cashier") or ""
        return cls(
            flow_id=int(row["flow_id"]),
            cashier_kind=row["cashier_kind"],
            expires_at=row["expires_at"],
            cashier=cashier.decode() if isinstance(cashier, bytes) else str(cashier),
            cashier_channel=row.get("cashier_channel", ""),
            close_requested_at=row.get("close_requested_at"),
            close_reason=row.get("close_reason", ""),
        )


# --- what a creation did -------------------------------------------------------------

RowT = TypeVar("RowT")


@dataclass(frozen=True)
class Created(Generic[RowT]):
    """The row was written and committed."""

    row: RowT


@dataclass(frozen=True)
class Existing(Generic[RowT]):
    """The idempotency key (caller, request_id) already had this row; nothing was written.

    Whether that is a replay (same parameters) or a conflict (other
    parameters) is the use case's decision: compare ``row.request_hash``.
    """

    row: RowT


Creation: TypeAlias = Created[RowT] | Existing[RowT]


# --- poll queue, discrepancies ---------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A poll-queue row claimed for one query: the attempt, the scheduled queries made so far."""

    attempt_id: int
    tries: int
    expedited: bool = False
    channel: str = ""


@dataclass(frozen=True)
class DiscrepancyRow:
    """A channel result that contradicted a recorded one (kept for an operator, never applied)."""

    id: int
    flow_no: str
    channel_order_no: str
    recorded_status: str
    reported_status: str
    reported_code: str
    source: str
    created_at: datetime | None


@dataclass(frozen=True)
class FinishedAttempt:
    """A definite attempt result, as the router learns from it (warm start, and what other replicas recorded).

    ``channel_order_no`` identifies the attempt across replicas (folding one twice counts it once);
    ``sent_at`` is when it was recorded and sent, ``finished_at`` when its result was recorded.
    """

    channel: str
    operation: str
    bank_code: str
    status: AttemptStatus  # SUCCEEDED or FAILED
    payer_attributable: bool
    finished_at: datetime
    channel_order_no: str = ""
    sent_at: datetime | None = None
    code: str = ""  # the normalized result code (a collection closed unpaid teaches the router nothing)


@dataclass(frozen=True)
class ChannelStateRow:
    """What an operator last set for one channel; ``version`` grows with every write to the row."""

    channel: str
    state: str  # a routing.config.ChannelState value: enabled / draining / disabled
    version: int


@dataclass(frozen=True)
class RecoveryScope:
    """Whose unfinished work recovery may take (several replicas share one database).

    Work recorded by an incarnation that is not alive: stopped, replaced by a
    restart of its replica, or without a heartbeat for ``dead_after_s``
    seconds (by the database's clock); work recorded before incarnations were
    (``''``); and this process's own (``incarnation``), by the cutoff alone.
    Recovery called without a scope takes everything by the cutoff (one
    process, tests).
    """

    incarnation: str
    dead_after_s: float


@dataclass(frozen=True)
class ReplicaRow:
    """One run of a gateway process, as the ``replicas`` table knows it."""

    incarnation: str
    replica_id: str
    started_at: datetime
    last_seen: datetime
    stopped_at: datetime | None


@dataclass(frozen=True)
class OpenAttempts:
    """Attempts still without a definite result outside review: how many, and since when."""

    count: int
    oldest_created_at: datetime | None


# --- maker-checker and the audit log ---------------------------------------------------


class ResolutionStatus(enum.StrEnum):
    """Where a manual resolution awaiting a second operator stands (gateway/resolutions.py draws the machine)."""

    PENDING = "PENDING"  # recorded by its maker; waits for an approver
    APPROVED = "APPROVED"  # approved; applied through FlowStore.resolve (or voided if the flow had finished)
    REJECTED = "REJECTED"  # an approver said no; nothing applied
    VOIDED = "VOIDED"  # the flow finished on its own first; nothing applied


@dataclass(frozen=True)
class ResolutionRow:
    """A manual resolution of a flow above the approval threshold, and its decision.

    ``flow_status`` is the flow's status when the row was read (so a reader sees a flow that has
    finished meanwhile).
    """

    id: int
    flow_id: int
    flow_no: str
    amount: int
    currency: str
    target: FlowStatus  # SUCCEEDED or FAILED: what the maker asked for
    channel_txn_id: str
    reason: str
    status: ResolutionStatus
    proposed_by: str
    proposed_at: datetime
    decided_by: str = ""
    decided_at: datetime | None = None
    decision_reason: str = ""
    flow_status: FlowStatus = FlowStatus.PROCESSING


@dataclass(frozen=True)
class AuditRow:
    """One audit record: who (``operator``) did what (``action``) to what (``target``: a flow number, a
    channel id) and why, with the action's details."""

    id: int
    operator: str
    action: str
    target: str
    reason: str
    detail: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class AuditQuery:
    """Which audit records to read, newest first: every filter is optional ("" / None); ``before_id`` pages."""

    target: str = ""
    operator: str = ""
    since: datetime | None = None  # created_at >= since
    until: datetime | None = None  # created_at < until
    before_id: int = 0  # 0: from the newest
    limit: int = 50
