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
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from channels.contract import Outcome, OutcomeStatus
from gateway import metrics
from gateway.domain import ATTEMPT_FROM, AttemptStatus, FlowKind, FlowStatus, channel_order_no, new_ulid
from gateway.outbox.writer import enqueue, flow_event, outbox_insert
from gateway.store.batch import GroupCommitter, gather_each
from gateway.store.db import Conflict, Database, DuplicateKey, Tx
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


# Locks attempts and their flows for a batch of transitions, in attempt id order.
_ATTEMPTS_WITH_FLOWS = _ATTEMPT_WITH_FLOW.replace("WHERE a.id=%s", "WHERE a.id IN ({marks}) ORDER BY a.id")

_FLOW_COLUMNS_SQL = (
    "(flow_no, caller, request_id, kind, amount, currency, account_hash, account_masked, bank_code, request_hash,"
    " status, description, original_flow_id, created_at, updated_at)"
)
_FLOW_ROW_SQL = "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,'PROCESSING',%s,%s,%s,%s)"
_ATTEMPT_COLUMNS_SQL = (
    "(flow_id, seq, channel, operation, channel_order_no, status, amount, currency, account_hash, bank_code,"
    " decision, position_reserved, created_at, updated_at)"
)
_ATTEMPT_ROW_SQL = "(%s,%s,%s,%s,%s,'SENDING',%s,%s,%s,%s,%s,%s,%s,%s)"

# What a transition writes on the attempt, and on the flow it finishes (same order as the values below)
_ATTEMPT_CHANGE = (
    "status",
    "raw_code",
    "raw_message",
    "code",
    "payer_attributable",
    "safe_elsewhere",
    "channel_txn_id",
    "fee",
    "finished_at",
    "updated_at",
)
_FLOW_RESULT = (
    "status",
    "channel",
    "channel_txn_id",
    "failure_code",
    "failure_message",
    "payer_attributable",
    "finished_at",
    "updated_at",
)
_TARGET = {
    OutcomeStatus.SUCCEEDED: AttemptStatus.SUCCEEDED,
    OutcomeStatus.FAILED: AttemptStatus.FAILED,
    OutcomeStatus.PENDING: AttemptStatus.PENDING,
}


def _new_flow_row(new: NewFlow, now: datetime) -> FlowRow:
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
    )


def _flow_args(flow: FlowRow) -> tuple[Any, ...]:
    return (
        flow.flow_no,
        flow.caller,
        flow.request_id,
        flow.kind.value,
        flow.amount,
        flow.currency,
        flow.account_hash,
        flow.account_masked,
        flow.bank_code,
        flow.request_hash,
        flow.description,
        flow.original_flow_id,
        flow.created_at,
        flow.updated_at,
    )


def _new_attempt_row(flow: FlowRow, seq: int, attempt: NewAttempt, reserved: int, now: datetime) -> AttemptRow:
    """The row a new attempt gets (SENDING, with its unique channel order number); ``id`` is set once inserted."""
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
    )


def _attempt_args(row: AttemptRow, now: datetime) -> tuple[Any, ...]:
    return (
        row.flow_id,
        row.seq,
        row.channel,
        row.operation,
        row.channel_order_no,
        row.amount,
        row.currency,
        row.account_hash,
        row.bank_code,
        json.dumps(row.decision) if row.decision is not None else None,
        row.position_reserved,
        now,
        now,
    )


def _attempt_change(target: AttemptStatus, outcome: Outcome, now: datetime) -> tuple[Any, ...]:
    """The values of ``_ATTEMPT_CHANGE`` for one transition."""
    return (
        target.value,
        outcome.raw_code[:64],
        outcome.raw_message[:255],
        outcome.code[:64],
        outcome.payer_attributable,
        outcome.safe_elsewhere,
        outcome.channel_txn_id[:128],
        outcome.fee,
        now if target is not AttemptStatus.PENDING else None,
        now,
    )


def _record_attempt_change(attempt: AttemptRow, target: AttemptStatus, outcome: Outcome, now: datetime) -> None:
    attempt.status = target
    attempt.raw_code, attempt.code, attempt.raw_message = outcome.raw_code, outcome.code, outcome.raw_message
    attempt.payer_attributable, attempt.safe_elsewhere = outcome.payer_attributable, outcome.safe_elsewhere
    attempt.channel_txn_id, attempt.fee = outcome.channel_txn_id, outcome.fee
    attempt.finished_at = now if target is not AttemptStatus.PENDING else None


def _flow_result(attempt: AttemptRow, outcome: Outcome, now: datetime) -> tuple[Any, ...]:
    """The values of ``_FLOW_RESULT`` when ``attempt`` (terminal) finishes its flow."""
    succeeded = attempt.status is AttemptStatus.SUCCEEDED
    failure_code = "" if succeeded else outcome.code[:64]
    failure_message = "" if succeeded else (outcome.raw_message or outcome.code)[:255]
    return (
        FlowStatus.SUCCEEDED.value if succeeded else FlowStatus.FAILED.value,
        attempt.channel,
        outcome.channel_txn_id[:128],
        failure_code,
        failure_message,
        outcome.payer_attributable and not succeeded,
        now,
        now,
    )


def _record_flow_result(flow: FlowRow, values: tuple[Any, ...], outcome: Outcome) -> None:
    status, flow.channel, _, flow.failure_code, flow.failure_message, payer, flow.finished_at, flow.updated_at = values
    flow.status = FlowStatus(status)
    flow.channel_txn_id = outcome.channel_txn_id
    flow.payer_attributable = bool(payer)
    flow.needs_review = False
    flow.version += 1


def _values_table(columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> tuple[str, list[Any]]:
    """A derived table ``(SELECT %s AS c1, ... UNION ALL SELECT %s, ...)`` of per-row values for a batch UPDATE."""
    marks = ",".join(["%s"] * len(columns))
    first = "SELECT " + ", ".join(f"%s AS {c}" for c in columns)
    sql = " UNION ALL ".join([first] + [f"SELECT {marks}"] * (len(rows) - 1))
    return f"({sql})", [value for row in rows for value in row]


def _batch_update(
    table: str, keys: tuple[str, ...], columns: tuple[str, ...], rows: list[tuple[Any, ...]], on: str, extra: str = ""
) -> tuple[str, list[Any]]:
    """``UPDATE table t JOIN (per-row values) v ON <on> SET t.c = v.c, ...``: one statement for many rows."""
    derived, args = _values_table((*keys, *columns), rows)
    sets = ", ".join([*(f"t.{c} = v.{c}" for c in columns), *([extra] if extra else []), "t.version = t.version + 1"])
    return f"UPDATE {table} t JOIN {derived} v ON {on} SET {sets}", args


def _unchanged(attempt: AttemptRow, target: AttemptStatus) -> ApplyResult | None:
    """The answer to a report that needs no write (a replay, a lost race, still pending); None for a conflict."""
    if target is AttemptStatus.PENDING:
        return ApplyResult(Applied.STILL_PENDING if attempt.status is AttemptStatus.PENDING else Applied.NOOP, attempt)
    if attempt.status is target:
        return ApplyResult(Applied.NOOP, attempt)
    return None


@dataclass(frozen=True)
class _Apply:
    attempt_id: int
    outcome: Outcome
    source: Source
    finish_flow_on_failure: bool
    poll_due_in_s: float


class FlowStore:
    """``group_commit`` (default on): concurrent creations and transitions share statements and commits."""

    def __init__(self, db: Database, *, group_commit: bool = True, max_batch: int = 64, workers: int = 1) -> None:
        self.db = db
        self.group_commit = group_commit
        self._id_step: int | None = None  # see _read_id_step
        self._creates: GroupCommitter[tuple[NewFlow, NewAttempt], FlowRow] = GroupCommitter(
            "create", self._create_batch, max_batch=max_batch, workers=workers
        )
        self._applies: GroupCommitter[_Apply, ApplyResult] = GroupCommitter(
            "apply", self._apply_batch, max_batch=max_batch, workers=workers
        )

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
        Flows without a reservation share their commit with concurrent ones
        (group commit); each caller returns only after that commit.
        """
        if self.group_commit and attempt is not None and not attempt.reserve_position and new.original_flow_id is None:
            return await self._creates.submit((new, attempt))
        return await self._create_one(new, attempt)

    async def _create_one(self, new: NewFlow, attempt: NewAttempt | None) -> FlowRow:
        now = utcnow()
        flow = _new_flow_row(new, now)
        try:
            async with self.db.transaction() as tx:
                flow.id = await tx.insert(
                    f"INSERT INTO flows {_FLOW_COLUMNS_SQL} VALUES {_FLOW_ROW_SQL}", _flow_args(flow)
                )
                if new.original_flow_id is not None:
                    reserved = await tx.execute(
                        "UPDATE flows SET refund_reserved = refund_reserved + %s, version = version + 1,"
                        " updated_at=%s WHERE id=%s AND status='SUCCEEDED' AND refund_reserved + %s <= amount",
                        (new.amount, now, new.original_flow_id, new.amount),
                    )
                    if reserved != 1:
                        raise RefundExceeds()
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

    async def _create_batch(self, items: list[tuple[NewFlow, NewAttempt]]) -> list[FlowRow | BaseException]:
        try:
            return list(await self._create_together(items))
        except DuplicateKey:
            pass  # a replay (or one request_id twice) in the batch: nothing was written; each on its own
        return await gather_each([self._create_one(new, attempt) for new, attempt in items])

    async def _create_together(self, items: list[tuple[NewFlow, NewAttempt]]) -> list[FlowRow]:
        """Flows and their first attempts: one INSERT per table and the commit, in one round trip.

        Needs consecutive AUTO_INCREMENT ids for a multi-row INSERT
        (``innodb_autoinc_lock_mode`` 0 or 1, the default is 1): the attempts'
        ``flow_id`` is ``LAST_INSERT_ID() + k * auto_increment_increment``, which
        in the attempts' statement still names the flows' first id. Otherwise
        the ids are read back by their unique keys (two more round trips).
        """
        now = utcnow()
        flows = [_new_flow_row(new, now) for new, _ in items]
        attempts = [_new_attempt_row(flow, 1, attempt, 0, now) for flow, (_, attempt) in zip(flows, items, strict=True)]
        insert_flows = (
            f"INSERT INTO flows {_FLOW_COLUMNS_SQL} VALUES " + ",".join([_FLOW_ROW_SQL] * len(flows)),
            [arg for flow in flows for arg in _flow_args(flow)],
        )
        async with self.db.transaction() as tx:
            step = self._id_step if self._id_step is not None else await self._read_id_step(tx)
            if step:
                relative = _ATTEMPT_ROW_SQL.replace("(%s,", "(LAST_INSERT_ID() + %s,", 1)
                insert_attempts = (
                    f"INSERT INTO attempts {_ATTEMPT_COLUMNS_SQL} VALUES " + ",".join([relative] * len(attempts)),
                    [arg for k, a in enumerate(attempts) for arg in (k * step, *_attempt_args(a, now)[1:])],
                )
                (_, first_flow), (_, first_attempt) = await tx.script([insert_flows, insert_attempts], commit=True)
                flow_ids = [first_flow + k * step for k in range(len(flows))]
                attempt_ids = [first_attempt + k * step for k in range(len(attempts))]
            else:
                await tx.execute(*insert_flows)
                flow_ids = await self._ids_by_key(tx, "flows", "flow_no", [f.flow_no for f in flows])
                for attempt, flow_id in zip(attempts, flow_ids, strict=True):
                    attempt.flow_id = flow_id
                await tx.execute(
                    f"INSERT INTO attempts {_ATTEMPT_COLUMNS_SQL} VALUES "
                    + ",".join([_ATTEMPT_ROW_SQL] * len(attempts)),
                    [arg for attempt in attempts for arg in _attempt_args(attempt, now)],
                )
                orders = [a.channel_order_no for a in attempts]
                attempt_ids = await self._ids_by_key(tx, "attempts", "channel_order_no", orders)
                await tx.commit()
        for flow, attempt, flow_id, attempt_id in zip(flows, attempts, flow_ids, attempt_ids, strict=True):
            flow.id = attempt.flow_id = flow_id
            attempt.id = attempt_id
            flow.attempts.append(attempt)
            metrics.FLOWS_CREATED.labels(kind=flow.kind.value).inc()
        return flows

    async def _read_id_step(self, tx: Tx) -> int:
        """``auto_increment_increment`` when multi-row INSERTs get consecutive ids, else 0 (read once)."""
        row = await tx.fetchone("SELECT @@innodb_autoinc_lock_mode AS mode, @@auto_increment_increment AS step")
        assert row is not None
        self._id_step = int(row["step"]) if int(row["mode"]) in (0, 1) else 0
        return self._id_step

    @staticmethod
    async def _ids_by_key(tx: Tx, table: str, key: str, keys: list[str]) -> list[int]:
        marks = ",".join(["%s"] * len(keys))
        rows = await tx.fetchall(f"SELECT id, {key} AS k FROM {table} WHERE {key} IN ({marks})", keys)
        by_key = {str(r["k"]): int(r["id"]) for r in rows}
        return [by_key[k] for k in keys]

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
        row = _new_attempt_row(flow, seq, attempt, reserved, now)
        row.id = await tx.insert(
            f"INSERT INTO attempts {_ATTEMPT_COLUMNS_SQL} VALUES {_ATTEMPT_ROW_SQL}", _attempt_args(row, now)
        )
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
    ) -> ApplyResult:
        """Record what a channel said about one attempt; exactly one writer wins.

        * PENDING: SENDING → PENDING and a poll-queue row (due in ``poll_due_in_s``).
        * SUCCEEDED / FAILED: the attempt becomes terminal; the flow too (unless
          ``finish_flow_on_failure`` is False, used when the caller will fail
          over), with its FLOW_RESULT outbox row in the same commit. Positions
          settle or release; refunds add up on the original.
        * A result that contradicts a recorded terminal one creates a
          discrepancy (and a DISCREPANCY event), never an overwrite.

        Concurrent transitions share one commit (group commit); returns after it.
        """
        item = _Apply(attempt_id, outcome, source, finish_flow_on_failure, poll_due_in_s)
        if self.group_commit:
            return await self._applies.submit(item)
        return await self._apply_one(item)

    async def _apply_one(self, item: _Apply) -> ApplyResult:
        outcome, target = item.outcome, _TARGET[item.outcome.status]
        now = utcnow()
        async with self.db.transaction() as tx:
            if target is AttemptStatus.PENDING:
                row = await tx.fetchone("SELECT * FROM attempts WHERE id=%s FOR UPDATE", (item.attempt_id,))
            else:  # a terminal result also updates the flow: lock it in the same statement
                row = await tx.fetchone(_ATTEMPT_WITH_FLOW, (item.attempt_id,))
            if row is None:
                return ApplyResult(Applied.UNKNOWN, None)
            attempt = AttemptRow.from_row(row)
            allowed = ATTEMPT_FROM[target]
            if attempt.status not in allowed:
                result = await self._not_allowed(tx, attempt, target, outcome, item.source, now)
                await tx.commit()
                return result
            await self._write_attempt(tx, attempt, target, outcome, now)
            if target is AttemptStatus.PENDING:
                await tx.execute(
                    "INSERT IGNORE INTO poll_queue (attempt_id, channel, due_at, created_at) VALUES (%s, %s, %s, %s)",
                    (attempt.id, attempt.channel, now + timedelta(seconds=item.poll_due_in_s), now),
                )
                await tx.commit()
                return ApplyResult(Applied.TRANSITIONED, attempt)
            await tx.execute("DELETE FROM poll_queue WHERE attempt_id=%s", (attempt.id,))
            flow = FlowRow.from_row(_flow_part(row))
            await self._settle_position(tx, attempt, target, now)
            finished = False
            if target is AttemptStatus.SUCCEEDED or item.finish_flow_on_failure:
                finished = await self._finish_flow(tx, flow, attempt, outcome, now, item.source)
            await tx.commit()
        if finished:
            metrics.FLOWS_FINISHED.labels(kind=flow.kind.value, status=flow.status.value).inc()
        return ApplyResult(Applied.TRANSITIONED, attempt, flow, finished)

    async def _apply_batch(self, items: list[_Apply]) -> list[ApplyResult | BaseException]:
        results: list[ApplyResult | BaseException | None] = [None] * len(items)
        try:
            later = await self._apply_together(items, results)
        except Conflict:  # a deadlock with another writer rolled the batch back: each on its own
            results = [None] * len(items)
            later = list(range(len(items)))
        for i, result in zip(later, await gather_each([self._apply_one(items[i]) for i in later]), strict=True):
            results[i] = result
        done = [r for r in results if r is not None]
        assert len(done) == len(items)
        return done

    async def _apply_together(
        self, items: list[_Apply], results: list[ApplyResult | BaseException | None]
    ) -> list[int]:
        """The common transitions of a batch in one commit; returns the indexes left for :meth:`_apply_one`.

        Handled here: SENDING → PENDING, and → SUCCEEDED/FAILED of attempts
        without a float reservation or a refund, whose flow is PROCESSING; and
        reports that change nothing (replays, lost races, still pending).
        Everything else (discrepancies, positions, refunds, a second report on
        the same attempt) goes through the one-by-one path after this commit,
        and so sees what it wrote.
        """
        now = utcnow()
        first_of: dict[int, int] = {}
        later: list[int] = []
        for i, item in enumerate(items):
            if item.attempt_id in first_of:
                later.append(i)  # a second report on the same attempt: after this commit
            else:
                first_of[item.attempt_id] = i
        changes: list[tuple[int, AttemptRow, AttemptStatus]] = []
        finishing: list[tuple[int, FlowRow, tuple[Any, ...]]] = []
        transitions: list[tuple[int, FlowRow | None]] = []
        async with self.db.transaction() as tx:
            ids = sorted(first_of)
            rows = await tx.fetchall(_ATTEMPTS_WITH_FLOWS.format(marks=",".join(["%s"] * len(ids))), ids)
            by_id = {int(row["id"]): row for row in rows}
            for attempt_id, i in first_of.items():
                item, row = items[i], by_id.get(attempt_id)
                if row is None:
                    results[i] = ApplyResult(Applied.UNKNOWN, None)
                    continue
                attempt, target = AttemptRow.from_row(row), _TARGET[item.outcome.status]
                if attempt.status not in ATTEMPT_FROM[target]:
                    # replays and lost races are answered here; only a conflict (discrepancy) writes, later
                    unchanged = _unchanged(attempt, target)
                    if unchanged is None:
                        later.append(i)
                    else:
                        results[i] = unchanged
                    continue
                flow: FlowRow | None = None
                if target is not AttemptStatus.PENDING:
                    flow = FlowRow.from_row(_flow_part(row))
                    finish = target is AttemptStatus.SUCCEEDED or item.finish_flow_on_failure
                    if (
                        attempt.position_reserved > 0
                        or flow.original_flow_id is not None
                        or (finish and flow.status is not FlowStatus.PROCESSING)
                    ):
                        later.append(i)
                        continue
                changes.append((i, attempt, target))
                transitions.append((i, flow))
            flows = dict(transitions)
            if changes:
                await self._write_together(tx, items, changes, flows, finishing, now)
        finished = {i for i, _, _ in finishing}
        for i, attempt, _ in changes:
            flow = flows[i]
            results[i] = ApplyResult(Applied.TRANSITIONED, attempt, flow, i in finished)
            if flow is not None and i in finished:
                metrics.FLOWS_FINISHED.labels(kind=flow.kind.value, status=flow.status.value).inc()
        return sorted(later)

    async def _write_together(
        self,
        tx: Tx,
        items: list[_Apply],
        changes: list[tuple[int, AttemptRow, AttemptStatus]],
        flows: dict[int, FlowRow | None],
        finishing: list[tuple[int, FlowRow, tuple[Any, ...]]],
        now: datetime,
    ) -> None:
        """One round trip: every attempt update, poll-queue change, flow result and outbox row of a batch, and COMMIT.

        Fills ``finishing`` with the flows it finished. The row locks taken by
        the caller guard every statement; the COMMIT is conditional on every
        count being the one expected (``Tx.script_commit_if``), so a count that
        does not match (a bug) rolls the whole batch back and raises.
        """
        statements: list[tuple[str, Sequence[Any]]] = []
        expected: list[int | None] = [len(changes)]
        statements.append(
            _batch_update(
                "attempts",
                ("id", "prev"),
                _ATTEMPT_CHANGE,
                [(a.id, a.status.value, *_attempt_change(t, items[i].outcome, now)) for i, a, t in changes],
                "t.id = v.id AND t.status = v.prev",
            )
        )
        for i, attempt, target in changes:
            _record_attempt_change(attempt, target, items[i].outcome, now)
        pending = [(a, i) for i, a, _ in changes if a.status is AttemptStatus.PENDING]
        terminal = [(a, i) for i, a, _ in changes if a.status is not AttemptStatus.PENDING]
        if pending:
            rows = [(a.id, a.channel, now + timedelta(seconds=items[i].poll_due_in_s), now) for a, i in pending]
            statements.append(
                (
                    "INSERT IGNORE INTO poll_queue (attempt_id, channel, due_at, created_at) VALUES "
                    + ",".join(["(%s,%s,%s,%s)"] * len(rows)),
                    [v for row in rows for v in row],
                )
            )
            expected.append(None)  # a row may already be queued
        if terminal:
            marks = ",".join(["%s"] * len(terminal))
            statements.append((f"DELETE FROM poll_queue WHERE attempt_id IN ({marks})", [a.id for a, _ in terminal]))
            expected.append(None)  # SENDING attempts have none
        for attempt, i in terminal:
            flow = flows[i]
            assert flow is not None
            if attempt.status is AttemptStatus.SUCCEEDED or items[i].finish_flow_on_failure:
                finishing.append((i, flow, _flow_result(attempt, items[i].outcome, now)))
        if finishing:
            statements.append(
                _batch_update(
                    "flows",
                    ("id",),
                    _FLOW_RESULT,
                    [(f.id, *values) for _, f, values in finishing],
                    "t.id = v.id AND t.status = 'PROCESSING'",
                    "t.needs_review = 0",
                )
            )
            for i, flow, values in finishing:
                _record_flow_result(flow, values, items[i].outcome)
            statements.append(
                outbox_insert(
                    [(flow_event(f.as_event_source(), events_pb2.FLOW_RESULT), f.id) for _, f, _ in finishing]
                )
            )
            expected += [len(finishing), len(finishing)]
        # the COMMIT goes in the same round trip, on condition that every count is the one expected
        await tx.script_commit_if(statements, expected)

    async def _write_attempt(
        self, tx: Tx, attempt: AttemptRow, target: AttemptStatus, outcome: Outcome, now: datetime
    ) -> None:
        sets = ", ".join(f"{c}=%s" for c in _ATTEMPT_CHANGE)
        n = await tx.execute(
            f"UPDATE attempts SET {sets}, version=version+1 WHERE id=%s AND status=%s",
            (*_attempt_change(target, outcome, now), attempt.id, attempt.status.value),
        )
        if n != 1:  # pragma: no cover - guarded by the row lock above
            raise RuntimeError("attempt changed under its row lock")
        _record_attempt_change(attempt, target, outcome, now)

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
        values = _flow_result(attempt, outcome, now)
        sets = ", ".join(f"{c}=%s" for c in _FLOW_RESULT)
        n = await tx.execute(
            f"UPDATE flows SET {sets}, needs_review=0, version=version+1 WHERE id=%s AND status='PROCESSING'",
            (*values, flow.id),
        )
        if n != 1:  # pragma: no cover - guarded by the row lock
            return False
        _record_flow_result(flow, values, outcome)
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
        unchanged = _unchanged(attempt, target)
        if unchanged is not None:
            return unchanged
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
