"""In-memory implementations of the store ports (gateway/ports.py), for unit tests of the use cases.

They keep the contracts of the MySQL stores, because the decisions under test
rest on them:

* one :class:`Tables` is one database: the flow store, poll queue, positions,
  audit log ... of a test share it, as the MySQL stores share tables, and a
  transition changes every table the real one changes (attempt, flow, poll
  queue row, position, refund sums, outbox event, discrepancy) together;
* creation is idempotent on (caller, request_id) and returns ``Existing``;
* every transition is a compare-and-set on the current status following the
  domain's forward-only tables (``ATTEMPT_FROM``, ``AGREEMENT_FROM``);
  terminal states never change, a contradiction becomes a discrepancy;
* a guarded write that does not fit raises and writes nothing;
* the outbox takes at most one FLOW_RESULT per flow (its unique key);
* rows handed out are copies: a use case mutating one changes nothing stored
  (as with rows read from MySQL).

``fail_next`` makes the next call of a named method raise (e.g. the database
going away) to test what a use case does then.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from channels.contract import Outcome, OutcomeStatus
from gateway.domain import (
    AGREEMENT_FROM,
    ATTEMPT_FROM,
    INT64_MAX,
    AgreementStatus,
    AttemptStatus,
    FlowStatus,
    new_ulid,
)
from gateway.errors import (
    BalanceOverflow,
    BelowReserved,
    CardLimitReached,
    DuplicateKey,
    FlowClosed,
    PositionMoved,
    PositionShort,
    RefundExceeds,
)
from gateway.store.rows import (
    ANOTHER_TRANSACTION,
    AgreementRow,
    Applied,
    ApplyResult,
    AttemptRow,
    AuditQuery,
    AuditRow,
    CardLimit,
    ChannelStateRow,
    Claim,
    CollectionRow,
    Created,
    Creation,
    DiscrepancyRow,
    Existing,
    FinishedAttempt,
    FlowRow,
    NewAttempt,
    NewCollection,
    NewFlow,
    OpenAttempts,
    PositionRow,
    RecoveryScope,
    ReplicaRow,
    Source,
    another_transaction,
    new_attempt_row,
    new_flow_row,
    utcnow,
)

_TARGET = {
    OutcomeStatus.SUCCEEDED: AttemptStatus.SUCCEEDED,
    OutcomeStatus.FAILED: AttemptStatus.FAILED,
    OutcomeStatus.PENDING: AttemptStatus.PENDING,
}


@dataclass
class QueueRow:
    attempt_id: int
    channel: str
    due_at: datetime
    tries: int = 0
    lease_owner: str = ""
    lease_until: datetime | None = None
    expedited: bool = False
    expedited_at: datetime | None = None


@dataclass(frozen=True)
class Event:
    """An outbox row: the event type (``FLOW_RESULT`` ...), its flow, the flow's status when written."""

    event_type: str
    flow_id: int
    status: FlowStatus
    detail: str = ""


@dataclass
class Position:
    currency: str
    balance: int
    reserved: int = 0
    synced_at: datetime | None = None
    balance_version: int = 0


@dataclass
class Tables:
    """The state of one in-memory database."""

    flows: dict[int, FlowRow] = field(default_factory=dict)
    attempts: dict[int, AttemptRow] = field(default_factory=dict)
    attempt_updated: dict[int, datetime] = field(default_factory=dict)
    poll_queue: dict[int, QueueRow] = field(default_factory=dict)
    outbox: list[Event] = field(default_factory=list)
    discrepancies: list[DiscrepancyRow] = field(default_factory=list)
    positions: dict[str, Position] = field(default_factory=dict)
    card_usage: dict[tuple[str, str, date], tuple[int, int]] = field(default_factory=dict)  # (attempts, amount)
    agreements: dict[int, AgreementRow] = field(default_factory=dict)
    channel_states: dict[str, ChannelStateRow] = field(default_factory=dict)
    replicas: dict[str, ReplicaRow] = field(default_factory=dict)  # incarnation -> row; times by utcnow()
    collections: dict[int, CollectionRow] = field(default_factory=dict)
    audit: list[tuple[str, str, str, str, dict[str, Any]]] = field(default_factory=list)
    audit_times: list[datetime] = field(default_factory=list)  # when each audit row was written
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def snapshot(self) -> dict[str, Any]:
        """Everything stored, for "nothing changed" assertions."""
        return copy.deepcopy({k: v for k, v in vars(self).items() if k != "ids"})

    def write_audit(self, operator: str, action: str, target: str, reason: str, detail: dict[str, Any]) -> None:
        """One audit row (as gateway.store.audit.record does inside the change's transaction)."""
        self.audit.append((operator, action, target, reason[:512], dict(detail)))
        self.audit_times.append(utcnow())

    def events(self, event_type: str | None = None) -> list[Event]:
        return [e for e in self.outbox if event_type is None or e.event_type == event_type]


class _Failing:
    """``fail_next("method", exc)``: the next call of that method raises ``exc`` (once)."""

    def __init__(self) -> None:
        self._failures: dict[str, list[BaseException]] = {}

    def fail_next(self, method: str, exc: BaseException) -> None:
        self._failures.setdefault(method, []).append(exc)

    def _maybe_fail(self, method: str) -> None:
        pending = self._failures.get(method)
        if pending:
            raise pending.pop(0)


def _takeable(
    t: Tables, incarnation: str, recorded_at: datetime, cutoff: datetime, scope: RecoveryScope | None
) -> bool:
    """gateway.store.replicas.takeable over the fake tables (utcnow is the database's clock)."""
    if scope is None or incarnation == scope.incarnation:
        return recorded_at <= cutoff
    row = t.replicas.get(incarnation)
    alive = (
        row is not None and row.stopped_at is None and row.last_seen >= utcnow() - timedelta(seconds=scope.dead_after_s)
    )
    return not alive


class FakeFlowStore(_Failing):
    """Implements :class:`gateway.ports.FlowStore` over :class:`Tables`; ``incarnation`` is stamped on attempts."""

    def __init__(self, tables: Tables | None = None, *, incarnation: str = "") -> None:
        super().__init__()
        self.t = tables if tables is not None else Tables()
        self.incarnation = incarnation
        self.creates = 0  # calls of create(), replays included

    # --- reads ----------------------------------------------------------------------

    def _flow_copy(self, flow: FlowRow, with_attempts: bool) -> FlowRow:
        out = copy.deepcopy(flow)
        out.attempts = (
            [copy.deepcopy(a) for a in sorted(self._attempts_of(flow.id), key=lambda a: a.seq)] if with_attempts else []
        )
        original = self.t.flows.get(flow.original_flow_id) if flow.original_flow_id is not None else None
        out.original_flow_no = original.flow_no if original else ""
        return out

    def _attempts_of(self, flow_id: int) -> list[AttemptRow]:
        return [a for a in self.t.attempts.values() if a.flow_id == flow_id]

    async def by_request_id(self, caller: str, request_id: str, *, with_attempts: bool = True) -> FlowRow | None:
        self._maybe_fail("by_request_id")
        for flow in self.t.flows.values():
            if flow.caller == caller and flow.request_id == request_id:
                return self._flow_copy(flow, with_attempts)
        return None

    async def by_flow_no(
        self, flow_no: str, *, caller: str | None = None, with_attempts: bool = True
    ) -> FlowRow | None:
        for flow in self.t.flows.values():
            if flow.flow_no == flow_no and (caller is None or flow.caller == caller):
                return self._flow_copy(flow, with_attempts)
        return None

    async def by_id(self, flow_id: int, *, with_attempts: bool = True) -> FlowRow | None:
        self._maybe_fail("by_id")
        flow = self.t.flows.get(flow_id)
        return self._flow_copy(flow, with_attempts) if flow else None

    async def attempt_by_id(self, attempt_id: int) -> AttemptRow | None:
        self._maybe_fail("attempt_by_id")
        attempt = self.t.attempts.get(attempt_id)
        return copy.deepcopy(attempt) if attempt else None

    async def attempt_by_order_no(self, order_no: str) -> AttemptRow | None:
        self._maybe_fail("attempt_by_order_no")
        for attempt in self.t.attempts.values():
            if attempt.channel_order_no == order_no:
                return copy.deepcopy(attempt)
        return None

    async def refunded_order_no(self, refund_flow_id: int) -> str:
        refund = self.t.flows.get(refund_flow_id)
        if refund is None or refund.original_flow_id is None:
            return ""
        paid = sorted(
            (a for a in self._attempts_of(refund.original_flow_id) if a.status is AttemptStatus.SUCCEEDED),
            key=lambda a: a.seq,
        )
        return paid[0].channel_order_no if paid else ""

    async def in_review(self, *, after_id: int, limit: int) -> list[FlowRow]:
        rows = sorted(
            (
                f
                for f in self.t.flows.values()
                if f.needs_review and f.status is FlowStatus.PROCESSING and f.id > after_id
            ),
            key=lambda f: f.id,
        )
        return [self._flow_copy(f, True) for f in rows[:limit]]

    async def review_count(self) -> int:
        return sum(1 for f in self.t.flows.values() if f.needs_review and f.status is FlowStatus.PROCESSING)

    async def open_attempts(self) -> OpenAttempts:
        open_ = [
            a
            for a in self.t.attempts.values()
            if a.status in (AttemptStatus.SENDING, AttemptStatus.PENDING) and not self.t.flows[a.flow_id].needs_review
        ]
        oldest = min((a.created_at for a in open_ if a.created_at), default=None)
        return OpenAttempts(len(open_), oldest)

    # --- creation ---------------------------------------------------------------------

    async def create(self, new: NewFlow, attempt: NewAttempt | None) -> Creation[FlowRow]:
        self._maybe_fail("create")
        self.creates += 1
        existing = await self.by_request_id(new.caller, new.request_id)
        if existing is not None:
            return Existing(existing)
        now = utcnow()
        # every guard first: a refused write writes nothing (the real one rolls back)
        original = self.t.flows.get(new.original_flow_id) if new.original_flow_id is not None else None
        if new.original_flow_id is not None:
            if (
                original is None
                or original.status is not FlowStatus.SUCCEEDED
                or original.refund_reserved + new.amount > original.amount
            ):
                raise RefundExceeds()
        if attempt is not None and attempt.reserve_position:
            self._check_float(attempt.channel, new.currency, new.amount)
        if attempt is not None and attempt.card_limit is not None:
            self._check_card(new.account_hash, attempt.channel, attempt.card_limit, new.amount)
        flow = new_flow_row(new, now)
        flow.id = next(self.t.ids)
        self.t.flows[flow.id] = flow
        if original is not None:
            original.refund_reserved += new.amount
            original.version += 1
        if attempt is not None:
            self._insert_attempt(flow, 1, attempt, now)
        return Created(self._flow_copy(flow, True))

    def _check_float(self, channel: str, currency: str, amount: int) -> None:
        position = self.t.positions.get(channel)
        if position is None or position.currency != currency or position.balance - position.reserved < amount:
            raise PositionShort(channel)

    def _check_card(self, account_hash: str, channel: str, limit: CardLimit, amount: int) -> None:
        attempts, total = self.t.card_usage.get((account_hash, channel, limit.day), (0, 0))
        if (limit.max_attempts is not None and attempts >= limit.max_attempts) or (
            limit.max_amount is not None and total + amount > limit.max_amount
        ):
            raise CardLimitReached(channel)

    def _insert_attempt(self, flow: FlowRow, seq: int, new: NewAttempt, now: datetime) -> AttemptRow:
        reserved = 0
        if new.card_limit is not None:
            self._check_card(flow.account_hash, new.channel, new.card_limit, flow.amount)
        if new.reserve_position:
            self._check_float(new.channel, flow.currency, flow.amount)
            self.t.positions[new.channel].reserved += flow.amount
            reserved = flow.amount
        if new.card_limit is not None:
            key = (flow.account_hash, new.channel, new.card_limit.day)
            attempts, total = self.t.card_usage.get(key, (0, 0))
            self.t.card_usage[key] = (attempts + 1, total + flow.amount)
        attempt = new_attempt_row(flow, seq, new, reserved, now, self.incarnation)
        if any(a.channel_order_no == attempt.channel_order_no for a in self.t.attempts.values()):
            raise DuplicateKey("uq_attempts_order", attempt.channel_order_no)
        attempt.id = next(self.t.ids)
        self.t.attempts[attempt.id] = attempt
        self.t.attempt_updated[attempt.id] = now
        return attempt

    async def add_attempt(self, flow: FlowRow, attempt: NewAttempt) -> AttemptRow:
        self._maybe_fail("add_attempt")
        stored = self.t.flows.get(flow.id)
        if stored is None or stored.status is not FlowStatus.PROCESSING:
            raise FlowClosed(flow.flow_no)
        seq = (flow.attempts[-1].seq if flow.attempts else 0) + 1
        row = copy.deepcopy(self._insert_attempt(stored, seq, attempt, utcnow()))
        flow.attempts.append(row)
        return row

    # --- the transition -----------------------------------------------------------------

    async def apply_outcome(
        self,
        attempt_id: int,
        outcome: Outcome,
        source: Source,
        *,
        finish_flow_on_failure: bool = True,
        poll_due_in_s: float = 2.0,
        known: tuple[AttemptRow, FlowRow] | None = None,  # a hint for MySQL; the fake reads its rows anyway
    ) -> ApplyResult:
        self._maybe_fail("apply_outcome")
        target = _TARGET[outcome.status]
        now = utcnow()
        attempt = self.t.attempts.get(attempt_id)
        if attempt is None:
            return ApplyResult(Applied.UNKNOWN, None)
        if attempt.status not in ATTEMPT_FROM[target]:
            if target is AttemptStatus.PENDING:
                same = Applied.STILL_PENDING if attempt.status is AttemptStatus.PENDING else Applied.NOOP
                return ApplyResult(same, copy.deepcopy(attempt))
            paid_again = another_transaction(attempt, outcome)
            if attempt.status is target and not paid_again:
                return ApplyResult(Applied.NOOP, copy.deepcopy(attempt))
            flow = self.t.flows[attempt.flow_id]
            code = ANOTHER_TRANSACTION if paid_again else outcome.code
            self._discrepancy(flow, attempt, attempt.status.value, target.value, code, source, now)
            return ApplyResult(Applied.DISCREPANCY, copy.deepcopy(attempt), self._flow_copy(flow, False))
        self._write_attempt(attempt, target, outcome, now)
        if target is AttemptStatus.PENDING:
            self.t.poll_queue.setdefault(
                attempt.id, QueueRow(attempt.id, attempt.channel, now + timedelta(seconds=poll_due_in_s))
            )
            return ApplyResult(Applied.TRANSITIONED, copy.deepcopy(attempt))
        self.t.poll_queue.pop(attempt.id, None)
        self._settle(attempt, succeeded=target is AttemptStatus.SUCCEEDED)
        flow = self.t.flows[attempt.flow_id]
        finished = False
        if target is AttemptStatus.SUCCEEDED or finish_flow_on_failure:
            finished = self._finish_flow(flow, attempt, outcome, now, source)
        return ApplyResult(Applied.TRANSITIONED, copy.deepcopy(attempt), self._flow_copy(flow, False), finished)

    def _write_attempt(self, attempt: AttemptRow, target: AttemptStatus, outcome: Outcome, now: datetime) -> None:
        attempt.status = target
        attempt.raw_code, attempt.raw_message, attempt.code = outcome.raw_code, outcome.raw_message, outcome.code
        attempt.payer_attributable, attempt.safe_elsewhere = outcome.payer_attributable, outcome.safe_elsewhere
        attempt.channel_txn_id, attempt.fee = outcome.channel_txn_id, outcome.fee
        attempt.finished_at = now if target is not AttemptStatus.PENDING else None
        self.t.attempt_updated[attempt.id] = now

    def _settle(self, attempt: AttemptRow, *, succeeded: bool) -> None:
        if attempt.position_reserved <= 0:
            return
        position = self.t.positions[attempt.channel]
        position.reserved -= attempt.position_reserved
        if succeeded:
            position.balance -= attempt.position_reserved
            position.balance_version += 1
            if position.balance < 0:  # recorded, never silently negative (as gateway/store/positions.py)
                detail = {"balance": position.balance, "channel_order_no": attempt.channel_order_no}
                self.t.audit.append(("paygate", "position_below_zero", attempt.channel, "payout settled", detail))

    def _finish_flow(self, flow: FlowRow, attempt: AttemptRow, outcome: Outcome, now: datetime, source: Source) -> bool:
        target = FlowStatus.SUCCEEDED if attempt.status is AttemptStatus.SUCCEEDED else FlowStatus.FAILED
        if flow.status is not FlowStatus.PROCESSING:
            if flow.status is not target:
                self._discrepancy(flow, attempt, flow.status.value, target.value, outcome.code, source, now)
            return False
        succeeded = target is FlowStatus.SUCCEEDED
        flow.status = target
        flow.channel = attempt.channel
        flow.channel_txn_id = outcome.channel_txn_id
        flow.failure_code = "" if succeeded else outcome.code
        flow.failure_message = "" if succeeded else (outcome.raw_message or outcome.code)
        flow.payer_attributable = outcome.payer_attributable and not succeeded
        flow.needs_review = False
        flow.finished_at = flow.updated_at = now
        flow.version += 1
        if flow.original_flow_id is not None:
            original = self.t.flows[flow.original_flow_id]
            if succeeded:
                original.refunded_amount += flow.amount
            else:
                original.refund_reserved -= flow.amount
        self._emit(flow, "FLOW_RESULT")
        return True

    def _emit(self, flow: FlowRow, event_type: str, detail: str = "") -> None:
        if event_type == "FLOW_RESULT" and any(
            e.event_type == "FLOW_RESULT" and e.flow_id == flow.id for e in self.t.outbox
        ):
            raise DuplicateKey("uq_outbox_dedupe", f"result:{flow.id}")
        self.t.outbox.append(Event(event_type, flow.id, flow.status, detail))

    def _discrepancy(
        self,
        flow: FlowRow,
        attempt: AttemptRow,
        recorded: str,
        reported: str,
        code: str,
        source: Source,
        now: datetime,
    ) -> None:
        # one per attempt, reported status and source (the real table's unique key; INSERT IGNORE)
        key = (attempt.channel_order_no, reported, source.value)
        if any((d.channel_order_no, d.reported_status, d.source) == key for d in self.t.discrepancies):
            return
        self.t.discrepancies.append(
            DiscrepancyRow(
                len(self.t.discrepancies) + 1,
                flow.flow_no,
                attempt.channel_order_no,
                recorded,
                reported,
                code,
                source.value,
                now,
            )
        )
        self._emit(flow, "DISCREPANCY", f"attempt {attempt.channel_order_no}: recorded {recorded}, reported {reported}")

    async def finish_from_attempt(self, attempt_id: int) -> bool:
        self._maybe_fail("finish_from_attempt")
        attempt = self.t.attempts.get(attempt_id)
        if attempt is None:
            return False
        flow = self.t.flows[attempt.flow_id]
        if attempt.status is not AttemptStatus.FAILED or flow.status is not FlowStatus.PROCESSING:
            return False
        if any(a.status is not AttemptStatus.FAILED or a.id > attempt.id for a in self._attempts_of(flow.id)):
            return False
        outcome = Outcome(
            OutcomeStatus.FAILED,
            attempt.code,
            raw_code=attempt.raw_code,
            raw_message=attempt.raw_message,
            payer_attributable=attempt.payer_attributable,
            safe_elsewhere=attempt.safe_elsewhere,
        )
        return self._finish_flow(flow, attempt, outcome, utcnow(), Source.RESPONSE)

    async def stranded_failovers(
        self, cutoff: datetime, limit: int = 500, scope: RecoveryScope | None = None
    ) -> list[int]:
        out = []
        for flow in self.t.flows.values():
            attempts = self._attempts_of(flow.id)
            if flow.status is not FlowStatus.PROCESSING or flow.needs_review or not attempts:
                continue
            last = max(attempts, key=lambda a: a.id)
            updated = max(self.t.attempt_updated[a.id] for a in attempts)
            if all(a.status is AttemptStatus.FAILED for a in attempts) and _takeable(
                self.t, last.incarnation, updated, cutoff, scope
            ):
                out.append(last.id)
        return out[:limit]

    # --- review and operators ---------------------------------------------------------

    async def mark_needs_review(self, attempt: AttemptRow, detail: str) -> bool:
        self.t.poll_queue.pop(attempt.id, None)
        flow = self.t.flows[attempt.flow_id]
        if flow.status is not FlowStatus.PROCESSING or flow.needs_review:
            return False
        flow.needs_review = True
        flow.version += 1
        self._emit(flow, "FLOW_NEEDS_REVIEW", detail)
        return True

    async def resolve(self, flow: FlowRow, status: FlowStatus, operator: str, reason: str, channel_txn_id: str) -> bool:
        current = self.t.flows[flow.id]
        if current.status is not FlowStatus.PROCESSING:
            return False
        succeeded = status is FlowStatus.SUCCEEDED
        outcome = Outcome(
            OutcomeStatus.SUCCEEDED if succeeded else OutcomeStatus.FAILED,
            "OK" if succeeded else "MANUAL_FAILED",
            raw_code="MANUAL",
            raw_message=f"resolved by {operator}: {reason}",
            channel_txn_id=channel_txn_id,
        )
        target = AttemptStatus.SUCCEEDED if succeeded else AttemptStatus.FAILED
        now = utcnow()
        open_attempts = sorted(
            (a for a in self._attempts_of(flow.id) if a.status in (AttemptStatus.SENDING, AttemptStatus.PENDING)),
            key=lambda a: a.seq,
        )
        for attempt in open_attempts:
            self._write_attempt(attempt, target, outcome, now)
            self._settle(attempt, succeeded=succeeded)
            self.t.poll_queue.pop(attempt.id, None)
        chosen = open_attempts[-1] if open_attempts else None
        if chosen is None:
            chosen = AttemptRow(0, flow.id, 0, current.channel, "", "", target, flow.amount, flow.currency)
        self._finish_flow(current, chosen, outcome, now, Source.OPERATOR)
        self.t.write_audit(operator, "resolve_flow", current.flow_no, reason, {"status": status.value})
        return True


class FakeCollectionStore(_Failing):
    """Implements :class:`gateway.ports.CollectionStore` over :class:`Tables`, beside a :class:`FakeFlowStore`."""

    def __init__(self, tables: Tables, flows: FakeFlowStore) -> None:
        super().__init__()
        self.t = tables
        self.flows = flows

    async def create(self, new: NewFlow, attempt: NewAttempt, collection: NewCollection) -> Creation[FlowRow]:
        creation = await self.flows.create(new, attempt)
        if isinstance(creation, Created):
            flow_id = creation.row.id
            self.t.collections[flow_id] = CollectionRow(flow_id, collection.cashier_kind, collection.expires_at)
        return creation

    async def by_flow(self, flow_id: int) -> CollectionRow | None:
        self._maybe_fail("by_flow")
        row = self.t.collections.get(flow_id)
        return copy.deepcopy(row) if row is not None else None

    async def by_attempt(self, attempt_id: int) -> CollectionRow | None:
        attempt = self.t.attempts.get(attempt_id)
        return await self.by_flow(attempt.flow_id) if attempt is not None else None

    async def record_cashier(self, flow_id: int, channel: str, cashier: str) -> bool:
        self._maybe_fail("record_cashier")
        row = self.t.collections.get(flow_id)
        if row is None or row.cashier:
            return False
        row.cashier, row.cashier_channel = cashier, channel
        return True

    async def request_close(self, flow_id: int, reason: str) -> bool:
        row = self.t.collections.get(flow_id)
        if row is None or row.close_requested_at is not None:
            return False
        row.close_requested_at, row.close_reason = utcnow(), reason
        return True


class FakePollQueue(_Failing):
    """Implements :class:`gateway.ports.PollQueue` over :class:`Tables` (leases as in MySQL)."""

    def __init__(self, tables: Tables) -> None:
        super().__init__()
        self.t = tables

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
        self._maybe_fail("claim")
        now = utcnow()
        counts = Counter(held or {})
        full = {channel for channel, n in counts.items() if per_channel and n >= per_channel}
        named = set(channels) if full and channels else None
        found = sorted(
            (
                r
                for r in self.t.poll_queue.values()
                if r.due_at <= now and r.channel not in full and (named is None or r.channel in named)
            ),
            key=lambda r: r.due_at,
        )[:limit]
        due = []
        for row in found:
            if per_channel and counts[row.channel] >= per_channel:
                continue
            counts[row.channel] += 1
            due.append(row)
        claims = [Claim(r.attempt_id, r.tries, r.expedited, r.channel) for r in due]
        for row in due:
            row.due_at = row.lease_until = now + timedelta(seconds=lease_s)
            row.lease_owner = owner
            row.expedited = False
        return claims

    async def requeue_unresolved(self, cutoff: datetime, scope: RecoveryScope | None = None) -> int:
        now = utcnow()
        added = 0
        for attempt in self.t.attempts.values():
            if attempt.id in self.t.poll_queue or attempt.created_at is None:
                continue
            sending = attempt.status is AttemptStatus.SENDING and _takeable(
                self.t, attempt.incarnation, attempt.created_at, cutoff, scope
            )
            lost = attempt.status is AttemptStatus.PENDING and attempt.created_at <= cutoff
            if (sending or lost) and not self.t.flows[attempt.flow_id].needs_review:
                self.t.poll_queue[attempt.id] = QueueRow(attempt.id, attempt.channel, now)
                added += 1
        return added

    async def expedite(self, attempt_id: int, channel: str, *, min_interval_s: float) -> bool:
        self._maybe_fail("expedite")
        now = utcnow()
        row = self.t.poll_queue.get(attempt_id)
        if row is None:
            self.t.poll_queue[attempt_id] = QueueRow(attempt_id, channel, now, expedited=True, expedited_at=now)
            return True
        if row.expedited_at is not None and row.expedited_at >= now - timedelta(seconds=min_interval_s):
            return False
        row.due_at, row.expedited, row.lease_owner, row.expedited_at = now, True, "", now
        return True

    async def reschedule(self, attempt_id: int, *, owner: str, tries: int, due_at: datetime) -> None:
        row = self.t.poll_queue.get(attempt_id)
        if row is not None and row.lease_owner == owner:
            row.tries, row.due_at, row.lease_owner, row.lease_until = tries, due_at, "", None

    async def remove(self, attempt_id: int) -> None:
        self.t.poll_queue.pop(attempt_id, None)

    async def due_count(self) -> int:
        now = utcnow()
        return sum(1 for r in self.t.poll_queue.values() if r.due_at <= now)

    def make_due(self, attempt_id: int) -> None:
        """Test helper: the row's next query is due now (as if its delay had passed)."""
        self.t.poll_queue[attempt_id].due_at = utcnow() - timedelta(microseconds=1)


class FakeAgreementStore(_Failing):
    """Implements :class:`gateway.ports.AgreementStore` over :class:`Tables`."""

    def __init__(self, tables: Tables) -> None:
        super().__init__()
        self.t = tables

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
    ) -> Creation[AgreementRow]:
        for row in self.t.agreements.values():
            if row.caller == caller and row.request_id == request_id:
                return Existing(copy.deepcopy(row))
        now = utcnow()
        row = AgreementRow(
            next(self.t.ids),
            new_ulid(),
            caller,
            request_id,
            request_hash,
            channel,
            account_hash,
            account_masked,
            holder_masked,
            bank_code,
            AgreementStatus.AWAITING_CONFIRMATION,
            "",
            "",
            "",
            now,
            now,
        )
        self.t.agreements[row.id] = row
        return Created(copy.deepcopy(row))

    def add_active(self, caller: str, channel: str, account_hash: str, agreement_ref: str) -> AgreementRow:
        """Test helper: an agreement already signed and confirmed."""
        now = utcnow()
        row = AgreementRow(
            next(self.t.ids),
            new_ulid(),
            caller,
            f"sign-{new_ulid()}",
            "hash",
            channel,
            account_hash,
            "6222****0000",
            "张*",
            "ICBC",
            AgreementStatus.ACTIVE,
            "sign-ref",
            agreement_ref,
            "",
            now,
            now,
        )
        self.t.agreements[row.id] = row
        return copy.deepcopy(row)

    async def by_request_id(self, caller: str, request_id: str) -> AgreementRow | None:
        for row in self.t.agreements.values():
            if row.caller == caller and row.request_id == request_id:
                return copy.deepcopy(row)
        return None

    async def by_no(self, caller: str, agreement_no: str) -> AgreementRow | None:
        for row in self.t.agreements.values():
            if row.caller == caller and row.agreement_no == agreement_no:
                return copy.deepcopy(row)
        return None

    async def transition(
        self,
        row: AgreementRow,
        target: AgreementStatus,
        *,
        sign_ref: str | None = None,
        agreement_ref: str | None = None,
        failure_code: str | None = None,
    ) -> bool:
        stored = self.t.agreements.get(row.id)
        if stored is None or stored.status not in AGREEMENT_FROM[target]:
            return False
        for name, value in (("sign_ref", sign_ref), ("agreement_ref", agreement_ref), ("failure_code", failure_code)):
            if value is not None:
                setattr(stored, name, value)
                setattr(row, name, value)
        stored.status = row.status = target
        stored.updated_at = row.updated_at = utcnow()
        stored.needs_review = row.needs_review = False
        return True

    async def set_sign_ref(self, row: AgreementRow, sign_ref: str) -> None:
        stored = self.t.agreements.get(row.id)
        if stored is not None and stored.status is AgreementStatus.AWAITING_CONFIRMATION:
            stored.sign_ref = sign_ref
        row.sign_ref = sign_ref

    async def mark_confirm_sent(self, row: AgreementRow) -> None:
        self._maybe_fail("mark_confirm_sent")
        now = utcnow()
        stored = self.t.agreements.get(row.id)
        if stored is not None and stored.status is AgreementStatus.AWAITING_CONFIRMATION:
            stored.confirm_sent_at = now
        row.confirm_sent_at = now

    async def clear_confirm_sent(self, row: AgreementRow) -> None:
        stored = self.t.agreements.get(row.id)
        if stored is not None and stored.status is AgreementStatus.AWAITING_CONFIRMATION:
            stored.confirm_sent_at = None
        row.confirm_sent_at = None

    async def unconfirmed_since(self, cutoff: datetime, *, limit: int = 500) -> list[AgreementRow]:
        rows = sorted(
            (
                r
                for r in self.t.agreements.values()
                if r.status is AgreementStatus.AWAITING_CONFIRMATION
                and r.confirm_sent_at is not None
                and r.confirm_sent_at <= cutoff
                and not r.needs_review
            ),
            key=lambda r: r.confirm_sent_at or cutoff,
        )
        return [copy.deepcopy(r) for r in rows[:limit]]

    async def mark_needs_review(self, row: AgreementRow) -> bool:
        stored = self.t.agreements.get(row.id)
        if stored is None or stored.status is not AgreementStatus.AWAITING_CONFIRMATION or stored.needs_review:
            return False
        stored.needs_review = row.needs_review = True
        return True

    async def active_refs(self, caller: str, account_hash: str, agreement_no: str = "") -> dict[str, str]:
        rows = sorted(self.t.agreements.values(), key=lambda r: r.id)
        return {
            r.channel: r.agreement_ref
            for r in rows
            if r.caller == caller
            and r.account_hash == account_hash
            and r.status is AgreementStatus.ACTIVE
            and (not agreement_no or r.agreement_no == agreement_no)
        }

    async def list(self, caller: str, *, account_hash: str | None, after_id: int, limit: int) -> list[AgreementRow]:
        rows = sorted(
            (
                r
                for r in self.t.agreements.values()
                if r.caller == caller and r.id > after_id and (account_hash is None or r.account_hash == account_hash)
            ),
            key=lambda r: r.id,
        )
        return [copy.deepcopy(r) for r in rows[:limit]]


class FakePositionStore(_Failing):
    """Implements :class:`gateway.ports.PositionStore` over :class:`Tables`."""

    def __init__(self, tables: Tables) -> None:
        super().__init__()
        self.t = tables

    def _row(self, channel: str) -> PositionRow:
        p = self.t.positions[channel]
        return PositionRow(channel, p.currency, p.balance, p.reserved, p.synced_at, p.balance_version)

    async def available(self, currency: str) -> dict[str, int]:
        return {c: p.balance - p.reserved for c, p in self.t.positions.items() if p.currency == currency}

    async def all(self) -> list[PositionRow]:
        return [self._row(c) for c in sorted(self.t.positions)]

    async def get(self, channel: str) -> PositionRow | None:
        return self._row(channel) if channel in self.t.positions else None

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
        self._maybe_fail("sync")
        position = self.t.positions.get(channel)
        if seen is None:
            if position is not None:
                raise PositionMoved(f"{channel}: created meanwhile")
            position = self.t.positions[channel] = Position(currency, balance)
        elif position is None or position.currency != currency or position.balance_version != seen.balance_version:
            raise PositionMoved(f"{channel}: moved")
        position.balance, position.synced_at = balance, utcnow()
        position.balance_version += 1
        if operator:
            self.t.write_audit(operator, "resync_position", channel, reason, {"balance": balance})
        return self._row(channel)

    async def adjust(self, channel: str, delta: int, operator: str, reason: str) -> PositionRow | None:
        position = self.t.positions.get(channel)
        if position is None:
            return None
        if delta < 0 and position.balance + delta < position.reserved:
            raise BelowReserved(channel, balance=position.balance, delta=delta, reserved=position.reserved)
        if position.balance + delta > INT64_MAX:
            raise BalanceOverflow(channel, balance=position.balance, delta=delta)
        position.balance += delta
        position.balance_version += 1
        self.t.write_audit(operator, "adjust_position", channel, reason, {"delta": delta})
        return self._row(channel)


class FakeChannelStates:
    """Implements :class:`gateway.ports.ChannelStateStore`."""

    def __init__(self, tables: Tables) -> None:
        self.t = tables

    async def all(self) -> dict[str, str]:
        return {channel: row.state for channel, row in self.t.channel_states.items()}

    async def current(self) -> list[ChannelStateRow]:
        return list(self.t.channel_states.values())

    async def set(self, channel: str, state: str, *, operator: str, reason: str) -> ChannelStateRow:
        before = self.t.channel_states.get(channel)
        row = ChannelStateRow(channel, state, (before.version if before else 0) + 1)
        self.t.channel_states[channel] = row
        self.t.write_audit(operator, "set_channel_state", channel, reason, {"state": state})
        return row


class FakeReplicas:
    """Implements :class:`gateway.ports.ReplicaStore`; ``utcnow()`` stands for the database's clock."""

    def __init__(self, tables: Tables) -> None:
        self.t = tables

    async def register(self, incarnation: str, replica_id: str) -> int:
        now = utcnow()
        superseded = 0
        for key, row in list(self.t.replicas.items()):
            if row.replica_id == replica_id and row.stopped_at is None:
                self.t.replicas[key] = dataclasses.replace(row, stopped_at=now)
                superseded += 1
        self.t.replicas[incarnation] = ReplicaRow(incarnation, replica_id, now, now, None)
        return superseded

    async def heartbeat(self, incarnation: str) -> bool:
        row = self.t.replicas.get(incarnation)
        if row is None or row.stopped_at is not None:
            return False
        self.t.replicas[incarnation] = dataclasses.replace(row, last_seen=utcnow())
        return True

    async def stop(self, incarnation: str) -> None:
        row = self.t.replicas.get(incarnation)
        if row is not None and row.stopped_at is None:
            self.t.replicas[incarnation] = dataclasses.replace(row, stopped_at=utcnow())

    async def alive(self, dead_after_s: float) -> list[ReplicaRow]:
        seen_after = utcnow() - timedelta(seconds=dead_after_s)
        rows = [r for r in self.t.replicas.values() if r.stopped_at is None and r.last_seen >= seen_after]
        return sorted(rows, key=lambda r: r.started_at)

    def silence(self, incarnation: str, seconds: float) -> None:
        """Test helper: the incarnation's last heartbeat was ``seconds`` ago (a crashed process)."""
        row = self.t.replicas[incarnation]
        self.t.replicas[incarnation] = dataclasses.replace(row, last_seen=utcnow() - timedelta(seconds=seconds))


class FakeObservations:
    """Implements :class:`gateway.ports.ObservationStore` from the attempts of :class:`Tables`."""

    def __init__(self, tables: Tables) -> None:
        self.t = tables

    async def finished_since(self, since: datetime, *, limit: int = 200_000) -> list[FinishedAttempt]:
        done = sorted(
            (
                a
                for a in self.t.attempts.values()
                if a.finished_at is not None
                and a.finished_at >= since
                and a.status in (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED)
                and a.raw_code != "MANUAL"
            ),
            key=lambda a: a.finished_at or since,
        )
        return [
            FinishedAttempt(
                a.channel,
                a.operation,
                a.bank_code,
                a.status,
                a.payer_attributable,
                a.finished_at,
                a.channel_order_no,
                a.created_at,
                a.code,
            )
            for a in done[:limit]
            if a.finished_at is not None
        ]

    async def card_usage(self, account_hash: str, day: date) -> dict[str, tuple[int, int]]:
        return {
            channel: usage
            for (acct, channel, at), usage in self.t.card_usage.items()
            if acct == account_hash and at == day
        }


class FakeAuditLog:
    """Implements :class:`gateway.ports.AuditLog` (a row's id is its position in ``Tables.audit``, from 1)."""

    def __init__(self, tables: Tables) -> None:
        self.t = tables

    async def record(self, operator: str, action: str, target: str, reason: str, detail: dict[str, Any]) -> None:
        self.t.write_audit(operator, action, target, reason, dict(detail))

    async def entries(self, query: AuditQuery) -> list[AuditRow]:
        rows = [
            AuditRow(i + 1, operator, action, target, reason, dict(detail), self.t.audit_times[i])
            for i, (operator, action, target, reason, detail) in enumerate(self.t.audit)
        ]
        keep = [
            row
            for row in reversed(rows)
            if (not query.target or row.target == query.target)
            and (not query.operator or row.operator == query.operator)
            and (query.since is None or row.created_at >= query.since)
            and (query.until is None or row.created_at < query.until)
            and (not query.before_id or row.id < query.before_id)
        ]
        return keep[: query.limit]


class FakeDiscrepancies:
    """Implements :class:`gateway.ports.DiscrepancyLog`."""

    def __init__(self, tables: Tables) -> None:
        self.t = tables

    async def recent(self, limit: int) -> list[DiscrepancyRow]:
        return list(reversed(self.t.discrepancies))[:limit]
