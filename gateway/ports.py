"""Ports: what the use cases need from storage and routing, as ``typing.Protocol`` classes.

The use cases (gateway/flows.py, agreements.py, poller.py, callbacks.py) and
the admin servicer depend on these, never on a concrete store. The
composition root (gateway/app.py) hands them the MySQL implementations in
gateway/store/; the unit tests hand them the in-memory fakes in tests/fakes/.
They live here, beside the use cases, rather than in gateway/store/, because
the use cases own the contract: a use case module imports this module and the
plain row types (gateway/store/rows.py), and nothing else from the store.

The contracts every implementation keeps (the fakes too):

* creation is idempotent on (caller, request_id): ``create`` returns
  ``Existing(row)`` for a key that has a row and writes nothing;
* every status change is a compare-and-set on the current status: terminal
  states never change, a contradicting result is a discrepancy, and of two
  racing writers exactly one wins (``Applied.TRANSITIONED``, the other gets
  ``NOOP`` / ``STILL_PENDING`` / ``DISCREPANCY``);
* a guarded write that does not fit raises a ``WriteRefused`` child
  (``PositionShort``, ``RefundExceeds``, ``FlowClosed``) and writes nothing;
* a terminal flow transition writes exactly one FLOW_RESULT event with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Protocol

from channels.contract import CashierKind, Operation, Outcome
from gateway.domain import AgreementStatus, FlowStatus
from gateway.store.rows import (
    AgreementRow,
    ApplyResult,
    AttemptRow,
    AuditQuery,
    AuditRow,
    ChannelStateRow,
    Claim,
    CollectionRow,
    Creation,
    DiscrepancyRow,
    FinishedAttempt,
    FlowRow,
    NewAttempt,
    NewCollection,
    NewFlow,
    OpenAttempts,
    PositionRow,
    RecoveryScope,
    ReplicaRow,
    ResolutionRow,
    ResolutionStatus,
    Source,
)

if TYPE_CHECKING:  # gateway.planner depends on this module
    from gateway.planner import Plan


class FlowStore(Protocol):
    """Flows and their attempts (gateway/store/flows.py)."""

    async def by_request_id(self, caller: str, request_id: str, *, with_attempts: bool = True) -> FlowRow | None: ...

    async def by_flow_no(
        self, flow_no: str, *, caller: str | None = None, with_attempts: bool = True
    ) -> FlowRow | None: ...

    async def by_id(self, flow_id: int, *, with_attempts: bool = True) -> FlowRow | None: ...

    async def attempt_by_id(self, attempt_id: int) -> AttemptRow | None: ...

    async def attempt_by_order_no(self, order_no: str) -> AttemptRow | None: ...

    async def refunded_order_no(self, refund_flow_id: int) -> str:
        """The channel order number a refund flow refunds ('' if none)."""
        ...

    async def create(self, new: NewFlow, attempt: NewAttempt | None) -> Creation[FlowRow]:
        """The flow and its first attempt (SENDING) in one commit, before any channel call.

        ``Existing(flow)`` when (caller, request_id) has a flow; raises
        ``PositionShort`` / ``RefundExceeds`` when a reservation does not fit.
        """
        ...

    async def add_attempt(self, flow: FlowRow, attempt: NewAttempt) -> AttemptRow:
        """The next attempt (failover), appended to ``flow.attempts``; raises ``FlowClosed`` / ``PositionShort``."""
        ...

    async def apply_outcome(
        self,
        attempt_id: int,
        outcome: Outcome,
        source: Source,
        *,
        finish_flow_on_failure: bool = True,
        poll_due_in_s: float = 2.0,
        known: tuple[AttemptRow, FlowRow] | None = None,
    ) -> ApplyResult:
        """The compare-and-set transition shared by response, poller, callbacks (see MySQLFlowStore).

        ``known``: the attempt and flow as the request that created them holds them (a hint
        that may save a read; the store still checks them)."""
        ...

    async def finish_from_attempt(self, attempt_id: int) -> bool:
        """Finish a PROCESSING flow whose every attempt FAILED from its last failure ``attempt_id``."""
        ...

    async def stranded_failovers(
        self, cutoff: datetime, limit: int = 500, scope: RecoveryScope | None = None
    ) -> list[int]:
        """Last attempts of PROCESSING flows whose every attempt FAILED, when ``scope`` lets recovery take them.

        As for ``PollQueue.requeue_unresolved``: this process's own when the
        flow's last change is older than ``cutoff``, others' once their run is
        not alive (it may be recording the next attempt until then).
        """
        ...

    async def mark_needs_review(self, attempt: AttemptRow, detail: str) -> bool:
        """Polling ran out: needs_review on the PROCESSING flow, its poll row removed; never a result."""
        ...

    async def resolve(
        self, flow: FlowRow, status: FlowStatus, operator: str, reason: str, channel_txn_id: str
    ) -> bool: ...

    async def in_review(self, *, after_id: int, limit: int) -> list[FlowRow]: ...

    async def review_count(self) -> int: ...

    async def open_attempts(self) -> OpenAttempts: ...


class CollectionStore(Protocol):
    """The cashier side of COLLECT flows (gateway/store/collections.py); their statuses stay the FlowStore's."""

    async def create(self, new: NewFlow, attempt: NewAttempt, collection: NewCollection) -> Creation[FlowRow]:
        """The flow, its first attempt (SENDING) and its collection row in one commit; ``Existing`` on a replay."""
        ...

    async def by_flow(self, flow_id: int) -> CollectionRow | None: ...

    async def by_attempt(self, attempt_id: int) -> CollectionRow | None: ...

    async def record_cashier(self, flow_id: int, channel: str, cashier: str) -> bool:
        """Keep the channel's cashier unless one is kept already (the first one is what the caller got)."""
        ...

    async def request_close(self, flow_id: int, reason: str) -> bool:
        """Note once that a close was asked for (``CALLER`` / ``EXPIRED``); True when this call noted it."""
        ...


class AgreementStore(Protocol):
    """Withholding agreements (gateway/store/agreements.py)."""

    async def create(
        self,
        *,
        caller: str,
        request_id: str,
        request_hash: str,
        channel: str,
        account_hash: str,
        account_masked: str,
        holder_masked: str,
        bank_code: str,
    ) -> Creation[AgreementRow]: ...

    async def by_request_id(self, caller: str, request_id: str) -> AgreementRow | None: ...

    async def by_no(self, caller: str, agreement_no: str) -> AgreementRow | None: ...

    async def transition(
        self,
        row: AgreementRow,
        target: AgreementStatus,
        *,
        sign_ref: str | None = None,
        agreement_ref: str | None = None,
        failure_code: str | None = None,
    ) -> bool:
        """Compare-and-set on status; False if another writer moved it first."""
        ...

    async def set_sign_ref(self, row: AgreementRow, sign_ref: str) -> None: ...

    async def mark_confirm_sent(self, row: AgreementRow) -> None:
        """Record, before calling the channel, that a confirm of this AWAITING agreement is being sent."""
        ...

    async def clear_confirm_sent(self, row: AgreementRow) -> None:
        """The channel refused the confirm (a wrong code): nothing is pending at the channel any more."""
        ...

    async def unconfirmed_since(self, cutoff: datetime, *, limit: int = 500) -> list[AgreementRow]:
        """AWAITING agreements whose confirm was sent at or before ``cutoff``, not yet marked for review."""
        ...

    async def mark_needs_review(self, row: AgreementRow) -> bool:
        """Mark an AWAITING agreement for an operator; False if it moved on or was marked already."""
        ...

    async def active_refs(self, caller: str, account_hash: str, agreement_no: str = "") -> dict[str, str]:
        """channel -> the channel's agreement ref, for the ACTIVE agreements of this caller's account."""
        ...

    async def list(self, caller: str, *, account_hash: str | None, after_id: int, limit: int) -> list[AgreementRow]: ...


class PositionStore(Protocol):
    """Channel float (gateway/store/positions.py)."""

    async def available(self, currency: str) -> dict[str, int]: ...

    async def all(self) -> list[PositionRow]: ...

    async def get(self, channel: str) -> PositionRow | None: ...

    async def sync(
        self,
        channel: str,
        currency: str,
        balance: int,
        *,
        seen: PositionRow | None,
        operator: str = "",
        reason: str = "",
    ) -> PositionRow:
        """Write a balance the channel reported after ``seen`` was read (None: no position yet).

        Raises ``PositionMoved`` and writes nothing when the row is no longer ``seen``
        (a settlement or adjustment changed the balance since) or is kept in another currency.
        """
        ...

    async def adjust(self, channel: str, delta: int, operator: str, reason: str) -> PositionRow | None:
        """None when the channel has no position; raises ``BelowReserved`` for a cut below the reservations."""
        ...


class PollQueue(Protocol):
    """Attempts waiting for their next query (gateway/store/poll_queue.py)."""

    async def claim(
        self,
        *,
        owner: str,
        limit: int,
        lease_s: float,
        held: Mapping[str, int] | None = None,
        per_channel: int = 0,
        channels: Sequence[str] = (),
    ) -> list[Claim]:
        """Up to ``limit`` due rows, leased; with ``per_channel``, never more of a channel than that with ``held``.

        Once a channel is full, only the other ``channels`` are claimed (all others when none are named)."""
        ...

    async def requeue_unresolved(self, cutoff: datetime, scope: RecoveryScope | None = None) -> int:
        """Queue SENDING attempts ``scope`` lets us take, and PENDING ones created by ``cutoff`` without a row.

        With a scope: this process's own SENDING attempts created by
        ``cutoff``, and others' once their run is not alive; without one,
        every SENDING attempt created by ``cutoff``.
        """
        ...

    async def expedite(self, attempt_id: int, channel: str, *, min_interval_s: float) -> bool: ...

    async def reschedule(self, attempt_id: int, *, owner: str, tries: int, due_at: datetime) -> None: ...

    async def remove(self, attempt_id: int) -> None: ...

    async def due_count(self) -> int: ...


class ChannelStateStore(Protocol):
    """Operator-set channel states (gateway/store/channel_states.py)."""

    async def all(self) -> dict[str, str]: ...

    async def current(self) -> list[ChannelStateRow]:
        """Every channel's operator state with its version (bumped by every write)."""
        ...

    async def set(self, channel: str, state: str, *, operator: str, reason: str) -> ChannelStateRow:
        """Write the state (audited); the row as written, with its new version."""
        ...


class ReplicaStore(Protocol):
    """The runs of gateway processes and their heartbeats (gateway/store/replicas.py)."""

    async def register(self, incarnation: str, replica_id: str) -> int:
        """This run starts; earlier runs of ``replica_id`` count as stopped. Returns how many were running."""
        ...

    async def heartbeat(self, incarnation: str) -> bool:
        """Seen now; False when this run was stopped or replaced meanwhile."""
        ...

    async def stop(self, incarnation: str) -> None: ...

    async def alive(self, dead_after_s: float) -> list[ReplicaRow]: ...


class ObservationStore(Protocol):
    """What the router learns from recorded attempts (gateway/store/observations.py)."""

    async def finished_since(self, since: datetime, *, limit: int = 200_000) -> list[FinishedAttempt]: ...

    async def card_usage(self, account_hash: str, day: date) -> dict[str, tuple[int, int]]:
        """channel -> (attempts, amount) of the card on the business day ``day`` (channels with limits)."""
        ...


class AuditLog(Protocol):
    """The audit log (gateway/store/audit.py)."""

    async def record(self, operator: str, action: str, target: str, reason: str, detail: dict[str, Any]) -> None: ...

    async def entries(self, query: AuditQuery) -> list[AuditRow]:
        """Records matching ``query``, newest first (by id), at most ``query.limit``."""
        ...


class ResolutionStore(Protocol):
    """Manual resolutions waiting for a second operator (gateway/store/resolutions.py).

    Every change writes its audit record (target: the flow number) in the same commit.
    """

    async def propose(
        self, flow: FlowRow, target: FlowStatus, channel_txn_id: str, reason: str, operator: str
    ) -> Creation[ResolutionRow]:
        """A PENDING resolution of ``flow`` (audited ``propose_resolution``); ``Existing(row)`` when the flow
        already has one PENDING or APPROVED (one open resolution per flow), nothing written then."""
        ...

    async def get(self, resolution_id: int) -> ResolutionRow | None: ...

    async def decide(
        self,
        row: ResolutionRow,
        to: ResolutionStatus,
        operator: str,
        reason: str,
        *,
        action: str,
        detail: dict[str, Any],
    ) -> ResolutionRow | None:
        """Compare-and-set from ``row.status`` to ``to``, audited as ``action``; None when the row had moved."""
        ...

    async def list(
        self, *, statuses: frozenset[ResolutionStatus], flow_no: str, after_id: int, limit: int
    ) -> list[ResolutionRow]:
        """Rows in one of ``statuses`` (all when empty), of ``flow_no`` when given, oldest first from ``after_id``."""
        ...


class DiscrepancyLog(Protocol):
    """Recorded discrepancies (gateway/store/discrepancies.py)."""

    async def recent(self, limit: int) -> list[DiscrepancyRow]: ...


class QueryScheduler(Protocol):
    """Expedited queries of open attempts (gateway/poller.py's Poller): compensation, a drive that failed."""

    def first_query_after_s(self, channel: str) -> float:
        """When the channel's poll schedule first queries an attempt, seconds after it was recorded."""
        ...

    async def expedite(self, attempt_id: int, channel: str, *, min_interval_s: float = 5.0) -> bool:
        """Query the attempt now, at most once per ``min_interval_s``; False when rate-limited."""
        ...


class RoutePlanner(Protocol):
    """What the flow use cases ask of routing (gateway/planner.py's Planner)."""

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
        """The channels to try, best first, with none of ``exclude`` (collections: offering ``cashier_kind``)."""
        ...

    def chosen(self, channel: str, operation: Operation, plan: Plan | None, *, failover: bool) -> None: ...

    def observe(self, attempt: AttemptRow, outcome: Outcome) -> None:
        """A definite outcome of an attempt (delayed feedback included)."""
        ...

    def call_answered(self, channel_id: str, outcome: Outcome) -> None:
        """Every channel call's answer (orders, polls, closes): a credentials refusal holds the channel."""
        ...


class OutboxAdmin(Protocol):
    """Operators' changes to the outbox (gateway/store/outbox.py)."""

    async def release_parked(self, ids: Sequence[int], *, max_attempts: int, operator: str, reason: str) -> int:
        """Parked events among ``ids`` get another round of tries, each audited; how many were released."""
        ...
