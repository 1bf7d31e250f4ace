"""The statements and values of flow and attempt writes, shared by both write paths.

:mod:`gateway.store.flows` writes one flow at a time and
:mod:`gateway.store.flow_batch` writes the flows of concurrent requests
together; both build their rows, their column lists and what a transition
changes from the pieces here, so the two paths cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from channels.contract import Outcome, OutcomeStatus
from gateway.domain import AttemptStatus, FlowStatus
from gateway.store.rows import (
    ANOTHER_TRANSACTION,
    Applied,
    ApplyResult,
    AttemptRow,
    FlowRow,
    Source,
    another_transaction,
)

FLOW_SELECT = "SELECT f.*, o.flow_no AS original_flow_no FROM flows f LEFT JOIN flows o ON o.id = f.original_flow_id"

# An attempt and its flow, both locked, in one round trip (attempt first, as everywhere):
# the flow's columns come back as ``f__<column>``.
_NOT_COLUMNS = frozenset({"original_flow_no", "attempts", "replayed", "split"})
FLOW_COLUMNS = tuple(f.name for f in fields(FlowRow) if f.name not in _NOT_COLUMNS)
ATTEMPT_WITH_FLOW = (
    "SELECT a.*, "
    + ", ".join(f"f.{name} AS f__{name}" for name in FLOW_COLUMNS)
    + " FROM attempts a JOIN flows f ON f.id = a.flow_id WHERE a.id=%s FOR UPDATE"
)


def flow_part(row: dict[str, Any]) -> dict[str, Any]:
    """The flow's columns of an :data:`ATTEMPT_WITH_FLOW` row."""
    return {name: row[f"f__{name}"] for name in FLOW_COLUMNS}


INSERT_FLOW_COLUMNS = (
    "(flow_no, caller, request_id, kind, amount, currency, account_hash, account_masked, bank_code, request_hash,"
    " status, description, original_flow_id, created_at, updated_at, split_shares)"
)
INSERT_FLOW_ROW = "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,'PROCESSING',%s,%s,%s,%s,%s)"
INSERT_ATTEMPT_COLUMNS = (
    "(flow_id, seq, channel, operation, channel_order_no, status, amount, currency, account_hash, bank_code,"
    " decision, position_reserved, created_at, updated_at, incarnation)"
)
INSERT_ATTEMPT_ROW = "(%s,%s,%s,%s,%s,'SENDING',%s,%s,%s,%s,%s,%s,%s,%s,%s)"

# What a transition writes on the attempt, and on the flow it finishes (same order as the values below)
ATTEMPT_CHANGE = (
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
FLOW_RESULT = (
    "status",
    "channel",
    "channel_txn_id",
    "failure_code",
    "failure_message",
    "payer_attributable",
    "finished_at",
    "updated_at",
)
TARGET = {
    OutcomeStatus.SUCCEEDED: AttemptStatus.SUCCEEDED,
    OutcomeStatus.FAILED: AttemptStatus.FAILED,
    OutcomeStatus.PENDING: AttemptStatus.PENDING,
}


@dataclass(frozen=True)
class ApplyItem:
    """One ``apply_outcome`` call, as queued for a batch.

    ``known``: the attempt and its flow as the caller recorded them (copies the batch may
    change), when the caller is the request that created them; the batch then writes
    without reading them first, on condition that their versions are still the same.
    """

    attempt_id: int
    outcome: Outcome
    source: Source
    finish_flow_on_failure: bool
    poll_due_in_s: float
    known: tuple[AttemptRow, FlowRow] | None = None


def flow_args(flow: FlowRow) -> tuple[Any, ...]:
    """The values of :data:`INSERT_FLOW_ROW`."""
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
        flow.split_shares,
    )


def attempt_args(row: AttemptRow, now: datetime) -> tuple[Any, ...]:
    """The values of :data:`INSERT_ATTEMPT_ROW`."""
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
        row.incarnation,
    )


def attempt_change(target: AttemptStatus, outcome: Outcome, now: datetime) -> tuple[Any, ...]:
    """The values of :data:`ATTEMPT_CHANGE` for one transition."""
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


def record_attempt_change(attempt: AttemptRow, target: AttemptStatus, outcome: Outcome, now: datetime) -> None:
    """Make the in-memory row say what :func:`attempt_change` wrote."""
    attempt.status = target
    attempt.raw_code, attempt.code, attempt.raw_message = outcome.raw_code, outcome.code, outcome.raw_message
    attempt.payer_attributable, attempt.safe_elsewhere = outcome.payer_attributable, outcome.safe_elsewhere
    attempt.channel_txn_id, attempt.fee = outcome.channel_txn_id, outcome.fee
    attempt.finished_at = now if target is not AttemptStatus.PENDING else None
    attempt.version += 1


def flow_result(attempt: AttemptRow, outcome: Outcome, now: datetime) -> tuple[Any, ...]:
    """The values of :data:`FLOW_RESULT` when ``attempt`` (terminal) finishes its flow."""
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


def record_flow_result(flow: FlowRow, values: tuple[Any, ...], outcome: Outcome) -> None:
    """Make the in-memory row say what :func:`flow_result` wrote."""
    status, flow.channel, _, flow.failure_code, flow.failure_message, payer, flow.finished_at, flow.updated_at = values
    flow.status = FlowStatus(status)
    flow.channel_txn_id = outcome.channel_txn_id
    flow.payer_attributable = bool(payer)
    flow.needs_review = False
    flow.version += 1


def unchanged(attempt: AttemptRow, target: AttemptStatus, outcome: Outcome) -> ApplyResult | None:
    """The answer to a report that needs no write (a replay, a lost race, still pending); None for a conflict.

    A success under another transaction than the recorded one is a conflict (a second payment).
    """
    if target is AttemptStatus.PENDING:
        return ApplyResult(Applied.STILL_PENDING if attempt.status is AttemptStatus.PENDING else Applied.NOOP, attempt)
    if attempt.status is target and not another_transaction(attempt, outcome):
        return ApplyResult(Applied.NOOP, attempt)
    return None


def conflict_code(attempt: AttemptRow, outcome: Outcome) -> str:
    """The reported code a conflict's discrepancy records."""
    return ANOTHER_TRANSACTION if another_transaction(attempt, outcome) else outcome.code
