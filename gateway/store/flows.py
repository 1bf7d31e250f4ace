"""Flows and attempts in MySQL: idempotent creation and compare-and-set transitions.

Every status change is ``UPDATE ... WHERE id=? AND status IN (allowed)``;
terminal states never change. :meth:`FlowStore.apply_outcome` is the one
transition used by the synchronous response, the poller, callbacks and
operators, so they race safely: exactly one wins, the others are no-ops, and
a conflicting late result becomes a discrepancy row instead of an overwrite.
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from channels.contract import Outcome, OutcomeStatus
from gateway import metrics
from gateway.domain import ATTEMPT_FROM, AttemptStatus, FlowKind, FlowStatus, channel_order_no, new_ulid
from gateway.outbox.writer import enqueue, flow_event
from gateway.store.db import Database, DuplicateKey, Tx
from paygate.v1 import events_pb2

log = logging.getLogger(__name__)


def utcnow() -> datetime:
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
    attempts: list[AttemptRow] = field(default_factory=list)
    replayed: bool = False

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


@dataclass(frozen=True)
class NewAttempt:
    channel: str
    operation: str
    decision: dict[str, Any] | None = None
    reserve_position: bool = False  # payouts: reserve `amount` of the channel's float


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


class IdempotentHit(Exception):
    """The (caller, request_id) already has a flow."""

    def __init__(self, flow: FlowRow) -> None:
        super().__init__(flow.flow_no)
        self.flow = flow


class PositionShort(Exception):
    """The channel's available float is below the payout amount."""


class FlowClosed(Exception):
    """The flow is no longer PROCESSING (e.g. an operator resolved it): no new attempt."""


class RefundExceeds(Exception):
    """The refund would take the original's refunds above its amount."""


_FLOW_SELECT = "SELECT f.*, o.flow_no AS original_flow_no FROM flows f LEFT JOIN flows o ON o.id = f.original_flow_id"

# An attempt and its flow, both locked, in one round trip (attempt first, as everywhere):
# the flow's columns come back as ``f__<column>``.
_FLOW_COLUMNS = tuple(f.name for f in fields(FlowRow) if f.name not in {"original_flow_no", "attempts", "replayed"})
_ATTEMPT_WITH_FLOW = (
    "SELECT a.*, "
    + ", ".join(f"f.{name} AS f__{name}" for name in _FLOW_COLUMNS)
    + " FROM attempts a JOIN flows f ON f.id = a.flow_id WHERE a.id=%s FOR UPDATE"
)


def _flow_part(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[f"f__{name}"] for name in _FLOW_COLUMNS}


class FlowStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- reads ----------------------------------------------------------------------

    async def by_request_id(self, caller: str, request_id: str, *, with_attempts: bool = True) -> FlowRow | None:
        row = await self.db.fetchone(f"{_FLOW_SELECT} WHERE f.caller=%s AND f.request_id=%s", (caller, request_id))
        return await self._hydrate(row, with_attempts)

    async def by_flow_no(
        self, flow_no: str, *, caller: str | None = None, with_attempts: bool = True
    ) -> FlowRow | None:
        if caller is None:
            row = await self.db.fetchone(f"{_FLOW_SELECT} WHERE f.flow_no=%s", (flow_no,))
        else:
            row = await self.db.fetchone(f"{_FLOW_SELECT} WHERE f.flow_no=%s AND f.caller=%s", (flow_no, caller))
        return await self._hydrate(row, with_attempts)

    async def by_id(self, flow_id: int, *, with_attempts: bool = True) -> FlowRow | None:
        row = await self.db.fetchone(f"{_FLOW_SELECT} WHERE f.id=%s", (flow_id,))
        return await self._hydrate(row, with_attempts)

    async def _hydrate(self, row: dict[str, Any] | None, with_attempts: bool) -> FlowRow | None:
        if row is None:
            return None
        flow = FlowRow.from_row(row)
        if with_attempts:
            flow.attempts = await self.attempts_of(flow.id)
        return flow

    async def attempts_of(self, flow_id: int) -> list[AttemptRow]:
        rows = await self.db.fetchall("SELECT * FROM attempts WHERE flow_id=%s ORDER BY seq", (flow_id,))
        return [AttemptRow.from_row(r) for r in rows]

    async def refunded_order_no(self, refund_flow_id: int) -> str:
        """The channel order number of the succeeded attempt a refund flow refunds ('' if none)."""
        row = await self.db.fetchone(
            "SELECT a.channel_order_no FROM flows r JOIN attempts a ON a.flow_id = r.original_flow_id"
            " WHERE r.id=%s AND a.status='SUCCEEDED' ORDER BY a.seq LIMIT 1",
            (refund_flow_id,),
        )
        return str(row["channel_order_no"]) if row else ""

    async def attempt_by_order_no(self, order_no: str) -> AttemptRow | None:
        row = await self.db.fetchone("SELECT * FROM attempts WHERE channel_order_no=%s", (order_no,))
        return AttemptRow.from_row(row) if row else None

    async def attempt_by_id(self, attempt_id: int) -> AttemptRow | None:
        row = await self.db.fetchone("SELECT * FROM attempts WHERE id=%s", (attempt_id,))
        return AttemptRow.from_row(row) if row else None

    # --- creation ---------------------------------------------------------------------

    async def create(self, new: NewFlow, attempt: NewAttempt | None) -> FlowRow:
        """Insert the flow and its first attempt (SENDING) in one commit: record before call.

        Raises IdempotentHit if (caller, request_id) exists, PositionShort /
        RefundExceeds when a reservation does not fit. Nothing is written then.
        """
        now = utcnow()
        flow_no = new_ulid()
        try:
            async with self.db.transaction() as tx:
                flow_id = await tx.insert(
                    "INSERT INTO flows (flow_no, caller, request_id, kind, amount, currency, account_hash,"
                    " account_masked, bank_code, request_hash, status, description, original_flow_id,"
                    " created_at, updated_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,'PROCESSING',%s,%s,%s,%s)",
                    (
                        flow_no,
                        new.caller,
                        new.request_id,
                        new.kind.value,
                        new.amount,
                        new.currency,
                        new.account_hash,
                        new.account_masked,
                        new.bank_code,
                        new.request_hash,
                        new.description,
                        new.original_flow_id,
                        now,
                        now,
                    ),
                )
                if new.original_flow_id is not None:
                    reserved = await tx.execute(
                        "UPDATE flows SET refund_reserved = refund_reserved + %s, version = version + 1,"
                        " updated_at=%s WHERE id=%s AND status='SUCCEEDED' AND refund_reserved + %s <= amount",
                        (new.amount, now, new.original_flow_id, new.amount),
                    )
                    if reserved != 1:
                        raise RefundExceeds()
                flow = FlowRow(
                    id=flow_id,
                    flow_no=flow_no,
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
                )
                if attempt is not None:
                    flow.attempts.append(await self._insert_attempt(tx, flow, 1, attempt, now))
                await tx.commit()
        except DuplicateKey as exc:
            if exc.key != "uq_flows_caller_request":
                raise
            existing = await self.by_request_id(new.caller, new.request_id)
            if existing is None:  # pragma: no cover - the row that beat us cannot vanish
                raise
            raise IdempotentHit(existing) from None
        metrics.FLOWS_CREATED.labels(kind=new.kind.value).inc()
        return flow

    async def add_attempt(self, flow: FlowRow, attempt: NewAttempt) -> AttemptRow:
        """Record the next attempt of a flow (failover) before calling its channel."""
        now = utcnow()
        seq = (flow.attempts[-1].seq if flow.attempts else 0) + 1
        async with self.db.transaction() as tx:
            still = await tx.fetchone("SELECT status FROM flows WHERE id=%s FOR UPDATE", (flow.id,))
            if still is None or still["status"] != FlowStatus.PROCESSING.value:
                raise FlowClosed(flow.flow_no)
            row = await self._insert_attempt(tx, flow, seq, attempt, now)
            await tx.commit()
        flow.attempts.append(row)
        return row

    async def _insert_attempt(self, tx: Tx, flow: FlowRow, seq: int, attempt: NewAttempt, now: datetime) -> AttemptRow:
        reserved = 0
        if attempt.reserve_position:
            n = await tx.execute(
                "UPDATE positions SET reserved = reserved + %s, updated_at=%s"
                " WHERE channel=%s AND currency=%s AND balance - reserved >= %s",
                (flow.amount, now, attempt.channel, flow.currency, flow.amount),
            )
            if n != 1:
                raise PositionShort(attempt.channel)
            reserved = flow.amount
        order_no = channel_order_no(flow.flow_no, seq)
        attempt_id = await tx.insert(
            "INSERT INTO attempts (flow_id, seq, channel, operation, channel_order_no, status, amount, currency,"
            " account_hash, bank_code, decision, position_reserved, created_at, updated_at)"
            " VALUES (%s,%s,%s,%s,%s,'SENDING',%s,%s,%s,%s,%s,%s,%s,%s)",
            (
                flow.id,
                seq,
                attempt.channel,
                attempt.operation,
                order_no,
                flow.amount,
                flow.currency,
                flow.account_hash,
                flow.bank_code,
                json.dumps(attempt.decision) if attempt.decision is not None else None,
                reserved,
                now,
                now,
            ),
        )
        return AttemptRow(
            id=attempt_id,
            flow_id=flow.id,
            seq=seq,
            channel=attempt.channel,
            operation=attempt.operation,
            channel_order_no=order_no,
            status=AttemptStatus.SENDING,
            amount=flow.amount,
            currency=flow.currency,
            account_hash=flow.account_hash,
            bank_code=flow.bank_code,
            decision=attempt.decision,
            position_reserved=reserved,
            created_at=now,
        )

    # --- the transition -----------------------------------------------------------------

    async def apply_outcome(
        self,
        attempt_id: int,
        outcome: Outcome,
        source: Source,
        *,
        finish_flow_on_failure: bool = True,
        poll_due_in_s: float = 2.0,
    ) -> ApplyResult:
        """Record what a channel said about one attempt; exactly one writer wins.

        * PENDING: SENDING → PENDING and a poll-queue row (due in ``poll_due_in_s``).
        * SUCCEEDED / FAILED: the attempt becomes terminal; the flow too (unless
          ``finish_flow_on_failure`` is False, used when the caller will fail
          over), with its FLOW_RESULT outbox row in the same commit. Positions
          settle or release; refunds add up on the original.
        * A result that contradicts a recorded terminal one creates a
          discrepancy (and a DISCREPANCY event), never an overwrite.
        """
        target = {
            OutcomeStatus.SUCCEEDED: AttemptStatus.SUCCEEDED,
            OutcomeStatus.FAILED: AttemptStatus.FAILED,
            OutcomeStatus.PENDING: AttemptStatus.PENDING,
        }[outcome.status]
        now = utcnow()
        async with self.db.transaction() as tx:
            if target is AttemptStatus.PENDING:
                row = await tx.fetchone("SELECT * FROM attempts WHERE id=%s FOR UPDATE", (attempt_id,))
            else:  # a terminal result also updates the flow: lock it in the same statement
                row = await tx.fetchone(_ATTEMPT_WITH_FLOW, (attempt_id,))
            if row is None:
                return ApplyResult(Applied.UNKNOWN, None)
            attempt = AttemptRow.from_row(row)
            allowed = ATTEMPT_FROM[target]
            if attempt.status not in allowed:
                result = await self._not_allowed(tx, attempt, target, outcome, source, now)
                await tx.commit()
                return result
            await self._write_attempt(tx, attempt, target, outcome, now)
            attempt.status = target
            if target is AttemptStatus.PENDING:
                await tx.execute(
                    "INSERT IGNORE INTO poll_queue (attempt_id, channel, due_at, created_at) VALUES (%s, %s, %s, %s)",
                    (attempt.id, attempt.channel, now + timedelta(seconds=poll_due_in_s), now),
                )
                await tx.commit()
                return ApplyResult(Applied.TRANSITIONED, attempt)
            await tx.execute("DELETE FROM poll_queue WHERE attempt_id=%s", (attempt.id,))
            flow = FlowRow.from_row(_flow_part(row))
            await self._settle_position(tx, attempt, target, now)
            finished = False
            if target is AttemptStatus.SUCCEEDED or finish_flow_on_failure:
                finished = await self._finish_flow(tx, flow, attempt, outcome, now, source)
            await tx.commit()
        if finished:
            metrics.FLOWS_FINISHED.labels(kind=flow.kind.value, status=flow.status.value).inc()
        return ApplyResult(Applied.TRANSITIONED, attempt, flow, finished)

    async def _write_attempt(
        self, tx: Tx, attempt: AttemptRow, target: AttemptStatus, outcome: Outcome, now: datetime
    ) -> None:
        terminal = target is not AttemptStatus.PENDING
        n = await tx.execute(
            "UPDATE attempts SET status=%s, raw_code=%s, raw_message=%s, code=%s, payer_attributable=%s,"
            " safe_elsewhere=%s, channel_txn_id=%s, fee=%s, finished_at=%s, updated_at=%s, version=version+1"
            " WHERE id=%s AND status=%s",
            (
                target.value,
                outcome.raw_code[:64],
                outcome.raw_message[:255],
                outcome.code[:64],
                outcome.payer_attributable,
                outcome.safe_elsewhere,
                outcome.channel_txn_id[:128],
                outcome.fee,
                now if terminal else None,
                now,
                attempt.id,
                attempt.status.value,
            ),
        )
        if n != 1:  # pragma: no cover - guarded by the row lock above
            raise RuntimeError("attempt changed under its row lock")
        attempt.raw_code, attempt.code, attempt.raw_message = outcome.raw_code, outcome.code, outcome.raw_message
        attempt.payer_attributable, attempt.safe_elsewhere = outcome.payer_attributable, outcome.safe_elsewhere
        attempt.channel_txn_id, attempt.fee = outcome.channel_txn_id, outcome.fee
        attempt.finished_at = now if terminal else None

    async def _settle_position(self, tx: Tx, attempt: AttemptRow, target: AttemptStatus, now: datetime) -> None:
        if attempt.position_reserved <= 0:
            return
        if target is AttemptStatus.SUCCEEDED:
            sql = "UPDATE positions SET balance = balance - %s, reserved = reserved - %s, updated_at=%s"
            args: tuple[Any, ...] = (attempt.position_reserved, attempt.position_reserved, now)
        else:
            sql = "UPDATE positions SET reserved = reserved - %s, updated_at=%s"
            args = (attempt.position_reserved, now)
        await tx.execute(f"{sql} WHERE channel=%s AND currency=%s", (*args, attempt.channel, attempt.currency))

    async def _finish_flow(
        self, tx: Tx, flow: FlowRow, attempt: AttemptRow, outcome: Outcome, now: datetime, source: Source
    ) -> bool:
        target = FlowStatus.SUCCEEDED if attempt.status is AttemptStatus.SUCCEEDED else FlowStatus.FAILED
        if flow.status is not FlowStatus.PROCESSING:
            # e.g. an operator resolved it first; the channel now says otherwise
            if flow.status is not target:
                await self._discrepancy(tx, flow, attempt, flow.status.value, target.value, outcome.code, source, now)
            return False
        failure_code = "" if target is FlowStatus.SUCCEEDED else outcome.code
        failure_message = "" if target is FlowStatus.SUCCEEDED else (outcome.raw_message or outcome.code)[:255]
        n = await tx.execute(
            "UPDATE flows SET status=%s, channel=%s, channel_txn_id=%s, failure_code=%s, failure_message=%s,"
            " payer_attributable=%s, needs_review=0, finished_at=%s, updated_at=%s, version=version+1"
            " WHERE id=%s AND status='PROCESSING'",
            (
                target.value,
                attempt.channel,
                outcome.channel_txn_id[:128],
                failure_code[:64],
                failure_message,
                outcome.payer_attributable and target is FlowStatus.FAILED,
                now,
                now,
                flow.id,
            ),
        )
        if n != 1:  # pragma: no cover - guarded by the row lock
            return False
        flow.status, flow.channel, flow.channel_txn_id = target, attempt.channel, outcome.channel_txn_id
        flow.failure_code, flow.failure_message = failure_code, failure_message
        flow.payer_attributable = outcome.payer_attributable and target is FlowStatus.FAILED
        flow.needs_review, flow.finished_at, flow.updated_at = False, now, now
        flow.version += 1
        if flow.original_flow_id is not None:
            if target is FlowStatus.SUCCEEDED:
                sql = "UPDATE flows SET refunded_amount = refunded_amount + %s, updated_at=%s, version=version+1"
            else:
                sql = "UPDATE flows SET refund_reserved = refund_reserved - %s, updated_at=%s, version=version+1"
            await tx.execute(f"{sql} WHERE id=%s", (flow.amount, now, flow.original_flow_id))
        await self._emit(tx, flow, events_pb2.FLOW_RESULT)
        return True

    async def _emit(self, tx: Tx, flow: FlowRow, event_type: events_pb2.EventType.ValueType, detail: str = "") -> None:
        original = ""
        if flow.original_flow_id is not None:
            row = await tx.fetchone("SELECT flow_no FROM flows WHERE id=%s", (flow.original_flow_id,))
            original = row["flow_no"] if row else ""
        event = flow_event(flow.as_event_source(), event_type, original_flow_no=original, detail=detail)
        await enqueue(tx, event, flow_id=flow.id)

    async def _not_allowed(
        self, tx: Tx, attempt: AttemptRow, target: AttemptStatus, outcome: Outcome, source: Source, now: datetime
    ) -> ApplyResult:
        if target is AttemptStatus.PENDING:
            return ApplyResult(
                Applied.STILL_PENDING if attempt.status is AttemptStatus.PENDING else Applied.NOOP, attempt
            )
        if attempt.status is target:
            return ApplyResult(Applied.NOOP, attempt)
        # A terminal attempt told the opposite: record, alert, never overwrite.
        flow_row = await tx.fetchone("SELECT * FROM flows WHERE id=%s", (attempt.flow_id,))
        assert flow_row is not None
        flow = FlowRow.from_row(flow_row)
        await self._discrepancy(tx, flow, attempt, attempt.status.value, target.value, outcome.code, source, now)
        return ApplyResult(Applied.DISCREPANCY, attempt, flow)

    async def _discrepancy(
        self,
        tx: Tx,
        flow: FlowRow,
        attempt: AttemptRow,
        recorded: str,
        reported: str,
        code: str,
        source: Source,
        now: datetime,
    ) -> None:
        n = await tx.execute(
            "INSERT IGNORE INTO discrepancies (flow_id, attempt_id, recorded_status, reported_status, reported_code,"
            " source, created_at) VALUES (%s,%s,%s,%s,%s,%s,%s)",
            (flow.id, attempt.id, recorded, reported, code[:64], source.value, now),
        )
        if n == 1:
            metrics.DISCREPANCIES.labels(channel=attempt.channel, source=source.value).inc()
            log.error(
                "discrepancy: channel reported %s for an attempt recorded %s",
                reported,
                recorded,
                extra={
                    "flow_no": flow.flow_no,
                    "channel": attempt.channel,
                    "channel_order_no": attempt.channel_order_no,
                },
            )
            detail = f"attempt {attempt.channel_order_no}: recorded {recorded}, channel reported {reported} ({code})"
            await self._emit(tx, flow, events_pb2.DISCREPANCY, detail)

    async def finish_from_attempt(self, attempt_id: int) -> bool:
        """Finish a PROCESSING flow with the failure already recorded on ``attempt_id``.

        Used when a failover was planned but no further attempt could be made,
        and by recovery for a failover cut short (:meth:`stranded_failovers`).
        Does nothing unless ``attempt_id`` is the flow's last attempt and every
        attempt of the flow FAILED (checked under the flow's lock, which
        :meth:`add_attempt` takes too).
        """
        now = utcnow()
        async with self.db.transaction() as tx:
            row = await tx.fetchone("SELECT * FROM attempts WHERE id=%s FOR UPDATE", (attempt_id,))
            if row is None:
                return False
            attempt = AttemptRow.from_row(row)
            flow_row = await tx.fetchone("SELECT * FROM flows WHERE id=%s FOR UPDATE", (attempt.flow_id,))
            assert flow_row is not None
            flow = FlowRow.from_row(flow_row)
            if attempt.status is not AttemptStatus.FAILED or flow.status is not FlowStatus.PROCESSING:
                return False
            live = await tx.fetchone(
                "SELECT id FROM attempts WHERE flow_id=%s AND (status<>'FAILED' OR id>%s) LIMIT 1 FOR UPDATE",
                (flow.id, attempt.id),
            )
            if live is not None:
                return False
            outcome = Outcome(
                OutcomeStatus.FAILED,
                attempt.code,
                raw_code=attempt.raw_code,
                raw_message=attempt.raw_message,
                payer_attributable=attempt.payer_attributable,
                safe_elsewhere=attempt.safe_elsewhere,
            )
            finished = await self._finish_flow(tx, flow, attempt, outcome, now, Source.RESPONSE)
            await tx.commit()
        if finished:
            metrics.FLOWS_FINISHED.labels(kind=flow.kind.value, status=flow.status.value).inc()
        return finished

    async def stranded_failovers(self, cutoff: datetime, limit: int = 500) -> list[int]:
        """Last attempt ids of PROCESSING flows (not in review) whose every attempt FAILED before ``cutoff``.

        A crash or a database error between failing one attempt (safe
        elsewhere) and recording the next leaves such a flow with nothing in
        flight and nothing to poll: no money moved, nobody would ever finish it.
        """
        rows = await self.db.fetchall(
            "SELECT MAX(a.id) AS attempt_id FROM flows f JOIN attempts a ON a.flow_id = f.id"
            " WHERE f.status='PROCESSING' AND f.needs_review=0"
            " GROUP BY f.id HAVING SUM(a.status <> 'FAILED') = 0 AND MAX(a.updated_at) <= %s LIMIT %s",
            (cutoff, limit),
        )
        return [int(r["attempt_id"]) for r in rows]

    # --- review and operators ---------------------------------------------------------

    async def mark_needs_review(self, attempt: AttemptRow, detail: str) -> bool:
        """Polling ran out: the flow stays PROCESSING with needs_review (never auto-failed)."""
        now = utcnow()
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM poll_queue WHERE attempt_id=%s", (attempt.id,))
            n = await tx.execute(
                "UPDATE flows SET needs_review=1, updated_at=%s, version=version+1"
                " WHERE id=%s AND status='PROCESSING' AND needs_review=0",
                (now, attempt.flow_id),
            )
            if n == 1:
                row = await tx.fetchone("SELECT * FROM flows WHERE id=%s", (attempt.flow_id,))
                assert row is not None
                await self._emit(tx, FlowRow.from_row(row), events_pb2.FLOW_NEEDS_REVIEW, detail)
            await tx.commit()
        return n == 1

    async def resolve(self, flow: FlowRow, status: FlowStatus, operator: str, reason: str, channel_txn_id: str) -> bool:
        """An operator decides a PROCESSING flow. Pending attempts take the same result.

        Writes the audit record and the normal FLOW_RESULT event in one commit.
        """
        now = utcnow()
        code = "OK" if status is FlowStatus.SUCCEEDED else "MANUAL_FAILED"
        async with self.db.transaction() as tx:
            row = await tx.fetchone("SELECT * FROM flows WHERE id=%s FOR UPDATE", (flow.id,))
            assert row is not None
            current = FlowRow.from_row(row)
            if current.status is not FlowStatus.PROCESSING:
                return False
            open_attempts = [
                AttemptRow.from_row(r)
                for r in await tx.fetchall(
                    "SELECT * FROM attempts WHERE flow_id=%s AND status IN ('SENDING','PENDING')"
                    " ORDER BY seq FOR UPDATE",
                    (flow.id,),
                )
            ]
            outcome = Outcome(
                OutcomeStatus.SUCCEEDED if status is FlowStatus.SUCCEEDED else OutcomeStatus.FAILED,
                code,
                raw_code="MANUAL",
                raw_message=f"resolved by {operator}: {reason}"[:255],
                channel_txn_id=channel_txn_id,
            )
            target = AttemptStatus.SUCCEEDED if status is FlowStatus.SUCCEEDED else AttemptStatus.FAILED
            chosen = open_attempts[-1] if open_attempts else None
            for attempt in open_attempts:
                await self._write_attempt(tx, attempt, target, outcome, now)
                attempt.status = target
                await self._settle_position(tx, attempt, target, now)
                await tx.execute("DELETE FROM poll_queue WHERE attempt_id=%s", (attempt.id,))
            if chosen is None:
                chosen = AttemptRow(0, flow.id, 0, current.channel, "", "", target, flow.amount, flow.currency)
            await self._finish_flow(tx, current, chosen, outcome, now, Source.OPERATOR)
            await self.audit(tx, operator, "resolve_flow", current.flow_no, reason, {"status": status.value})
            await tx.commit()
        metrics.FLOWS_FINISHED.labels(kind=current.kind.value, status=status.value).inc()
        return True

    @staticmethod
    async def audit(tx: Tx, operator: str, action: str, target: str, reason: str, detail: dict[str, Any]) -> None:
        await tx.execute(
            "INSERT INTO audit_log (operator, action, target, reason, detail, created_at)"
            " VALUES (%s,%s,%s,%s,%s,UTC_TIMESTAMP(6))",
            (operator, action, target, reason[:512], json.dumps(detail)),
        )
