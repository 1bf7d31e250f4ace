"""Instalment outcomes as FlowEvents: fields, sequence, dedupe key, and the reference consumer's line."""

from __future__ import annotations

from datetime import date, datetime

from gateway.outbox import codec
from gateway.plans.events import dedupe_key, instalment_event
from gateway.plans.model import InstalmentEvent, InstalmentRow, InstalmentStatus, OutcomeKind
from gateway.results import format_event
from paygate.v1 import events_pb2

ROW = InstalmentRow(
    id=41,
    plan_ref=7,
    caller="loans",
    plan_id="loan-7",
    instalment_id="loan-7-03",
    product="cash-loan",
    policy="default",
    due_date=date(2026, 12, 1),
    last_day=date(2026, 12, 4),
    amount=12345,
    original_amount=12345,
    currency="CNY",
    status=InstalmentStatus.SCHEDULED,
    attempts=1,
    event_seq=2,
)


def test_a_retry_event_names_the_next_time_point() -> None:
    item = InstalmentEvent(
        OutcomeKind.RETRY_SCHEDULED,
        ROW,
        code="INSUFFICIENT_FUNDS",
        next_attempt_at=datetime(2026, 12, 1, 10, 0),
        next_business_day=date(2026, 12, 1),
        next_time_point="18:00",
        business_day=date(2026, 12, 1),
        time_point="12:00",
        request_id="plan:20261201:1200:41",
        flow_no="01JF0000000000000000000000",
        flow_id=9,
    )
    event = instalment_event(item, sequence=2, now=datetime(2026, 12, 1, 4, 0, 3))
    assert event.event_type == events_pb2.INSTALMENT_OUTCOME
    outcome = event.instalment
    assert (outcome.plan_id, outcome.instalment_id, outcome.kind) == (
        "loan-7",
        "loan-7-03",
        events_pb2.OUTCOME_RETRY_SCHEDULED,
    )
    assert (outcome.failure_code, outcome.next_business_day, outcome.next_time_point) == (
        "INSUFFICIENT_FUNDS",
        "2026-12-01",
        "18:00",
    )
    assert outcome.sequence == 2 and outcome.amount.amount == 12345 and outcome.attempts == 1
    assert event.request_id == "plan:20261201:1200:41" and event.flow_no == "01JF0000000000000000000000"
    assert dedupe_key(41, 2) == "inst:41:2"
    value, content_type = codec.encode(event, "json")
    assert b'"amount":"12345"' in value  # int64 as a string: no consumer turns money into a float
    assert codec.decode(value, content_type) == event
    line = format_event(event)
    assert "INSTALMENT_OUTCOME" in line and "plan=loan-7 instalment=loan-7-03 outcome=RETRY_SCHEDULED" in line
    assert "at=2026-12-01T12:00 next=2026-12-01T18:00 seq=2" in line


def test_a_settle_event_carries_no_failure() -> None:
    event = instalment_event(InstalmentEvent(OutcomeKind.SETTLED, ROW, code="X"), sequence=3)
    assert event.instalment.kind == events_pb2.OUTCOME_SETTLED
    assert event.instalment.failure_code == "" and not event.instalment.HasField("next_attempt_at")
