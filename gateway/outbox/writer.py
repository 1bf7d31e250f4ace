"""Writes outbox rows inside the caller's transaction (invariant 6).

The terminal transition of a flow and its FLOW_RESULT row commit together; the
``dedupe_key`` unique index makes a second result row for the same flow
impossible even if two code paths race.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from gateway.domain import new_ulid
from gateway.store.db import Tx
from paygate.v1 import events_pb2, gateway_pb2

EVENT_TYPE_NAMES = {
    events_pb2.FLOW_RESULT: "FLOW_RESULT",
    events_pb2.FLOW_NEEDS_REVIEW: "FLOW_NEEDS_REVIEW",
    events_pb2.DISCREPANCY: "DISCREPANCY",
    events_pb2.INSTALMENT_OUTCOME: "INSTALMENT_OUTCOME",  # written by gateway/store/plans.py
}


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value.replace(tzinfo=UTC) if value.tzinfo is None else value)
    return ts


def flow_event(
    flow: dict[str, object],
    event_type: events_pb2.EventType.ValueType,
    *,
    original_flow_no: str = "",
    detail: str = "",
    now: datetime | None = None,
) -> events_pb2.FlowEvent:
    """Build the event for a flow row (a dict with the ``flows`` columns)."""
    event = events_pb2.FlowEvent(
        event_id=new_ulid(),
        event_type=event_type,
        caller=str(flow["caller"]),
        request_id=str(flow["request_id"]),
        flow_no=str(flow["flow_no"]),
        kind=gateway_pb2.FlowKind.Value(str(flow["kind"])),
        status=gateway_pb2.FlowStatus.Value(str(flow["status"])),
        amount=gateway_pb2.Money(amount=int(str(flow["amount"])), currency=str(flow["currency"])),
        channel=str(flow.get("channel") or ""),
        channel_txn_id=str(flow.get("channel_txn_id") or ""),
        failure_code=str(flow.get("failure_code") or ""),
        failure_message=str(flow.get("failure_message") or ""),
        payer_attributable=bool(flow.get("payer_attributable")),
        needs_review=bool(flow.get("needs_review")),
        original_flow_no=original_flow_no,
        detail=detail,
    )
    for name, value in (("created_at", flow.get("created_at")), ("finished_at", flow.get("finished_at"))):
        ts = _ts(value) if isinstance(value, datetime) else None
        if ts is not None:
            getattr(event, name).CopyFrom(ts)
    emitted = _ts(now or datetime.now(UTC))
    assert emitted is not None
    event.emitted_at.CopyFrom(emitted)
    return event


_OUTBOX_INSERT = (
    "INSERT INTO outbox (event_id, event_type, flow_id, caller, msg_key, payload, created_at, dedupe_key) VALUES "
)
_OUTBOX_ROW = "(%s, %s, %s, %s, %s, %s, UTC_TIMESTAMP(6), %s)"


def outbox_insert(events: Sequence[tuple[events_pb2.FlowEvent, int]]) -> tuple[str, list[object]]:
    """One INSERT statement (sql, args) for ``(event, flow_id)`` pairs.

    FLOW_RESULT rows carry ``dedupe_key = result:<flow_id>``; a second one for
    the same flow fails with DuplicateKey (key ``uq_outbox_dedupe``).
    """
    args: list[object] = []
    for event, flow_id in events:
        dedupe_key = f"result:{flow_id}" if event.event_type == events_pb2.FLOW_RESULT else None
        event_type = EVENT_TYPE_NAMES[event.event_type]
        args += [
            event.event_id,
            event_type,
            flow_id,
            event.caller,
            event.flow_no,
            event.SerializeToString(),
            dedupe_key,
        ]
    return _OUTBOX_INSERT + ",".join([_OUTBOX_ROW] * len(events)), args


async def enqueue(tx: Tx, event: events_pb2.FlowEvent, *, flow_id: int) -> None:
    """Insert the event into the outbox within ``tx`` (see :func:`outbox_insert`)."""
    await tx.execute(*outbox_insert([(event, flow_id)]))
