"""Instalment outcomes as result events: a ``paygate.v1.FlowEvent`` of type INSTALMENT_OUTCOME. Pure.

They travel the same outbox and relay as the flows' FLOW_RESULT events (written in the
transaction of the instalment's transition), keyed by ``plan_id`` so a loan's events share a
partition. ``instalment.sequence`` (1, 2, 3 ... per instalment, enforced by a unique key on the
outbox row) orders one instalment's events for consumers; ``event_id`` drops duplicates. The
flow fields (flow_no, request_id, channel ...) are those of the withhold the outcome comes from,
when there is one. See docs/EVENTS.md.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from gateway.domain import new_ulid
from gateway.plans.model import InstalmentEvent, OutcomeKind
from paygate.v1 import events_pb2, gateway_pb2

KIND = {
    OutcomeKind.SUCCEEDED: events_pb2.OUTCOME_SUCCEEDED,
    OutcomeKind.RETRY_SCHEDULED: events_pb2.OUTCOME_RETRY_SCHEDULED,
    OutcomeKind.STOPPED: events_pb2.OUTCOME_STOPPED,
    OutcomeKind.SETTLED: events_pb2.OUTCOME_SETTLED,
    OutcomeKind.CANCELLED: events_pb2.OUTCOME_CANCELLED,
}
EVENT_TYPE = "INSTALMENT_OUTCOME"


def _ts(value: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value.replace(tzinfo=UTC) if value.tzinfo is None else value)
    return out


def dedupe_key(instalment_ref: int, sequence: int) -> str:
    """The outbox's unique key for an instalment's n-th event: a second copy cannot be written."""
    return f"inst:{instalment_ref}:{sequence}"


def instalment_event(item: InstalmentEvent, *, sequence: int, now: datetime | None = None) -> events_pb2.FlowEvent:
    """The event for ``item``; ``sequence`` is the instalment's event number (its ``event_seq`` after this one)."""
    row = item.instalment
    outcome = events_pb2.InstalmentOutcome(
        plan_id=row.plan_id,
        instalment_id=row.instalment_id,
        kind=KIND[item.kind],
        amount=gateway_pb2.Money(amount=row.amount, currency=row.currency),
        failure_code=item.code if item.kind in (OutcomeKind.RETRY_SCHEDULED, OutcomeKind.STOPPED) else "",
        stop_reason=row.stop_reason if item.kind is OutcomeKind.STOPPED else "",
        business_day=item.business_day.isoformat() if item.business_day else "",
        time_point=item.time_point,
        next_time_point=item.next_time_point,
        attempts=row.attempts,
        sequence=sequence,
        product=row.product,
        due_date=row.due_date.isoformat(),
        closing=row.closing.value,
    )
    if item.next_attempt_at is not None:
        outcome.next_attempt_at.CopyFrom(_ts(item.next_attempt_at))
    if item.next_business_day is not None:
        outcome.next_business_day = item.next_business_day.isoformat()
    event = events_pb2.FlowEvent(
        event_id=new_ulid(),
        event_type=events_pb2.INSTALMENT_OUTCOME,
        caller=row.caller,
        request_id=item.request_id,
        flow_no=item.flow_no,
        kind=gateway_pb2.WITHHOLD,
        amount=gateway_pb2.Money(amount=row.amount, currency=row.currency),
        failure_code=outcome.failure_code,
        detail=f"instalment {OutcomeKind(item.kind).value.lower()}",
        instalment=outcome,
    )
    event.emitted_at.CopyFrom(_ts(now or datetime.now(UTC)))
    return event
