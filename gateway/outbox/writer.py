"""Builds the result events of flows (``paygate.v1.FlowEvent``) that go into the outbox.

The rows themselves are written by gateway/store/outbox.py inside the
transaction of the state change they report (invariant 6).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from gateway.domain import new_ulid, scrub
from paygate.v1 import events_pb2, gateway_pb2

EVENT_TYPE_NAMES = {
    events_pb2.FLOW_RESULT: "FLOW_RESULT",
    events_pb2.FLOW_NEEDS_REVIEW: "FLOW_NEEDS_REVIEW",
    events_pb2.DISCREPANCY: "DISCREPANCY",
    events_pb2.INSTALMENT_OUTCOME: "INSTALMENT_OUTCOME",  # written by gateway/store/plans.py
    events_pb2.RECON_DISCREPANCY: "RECON_DISCREPANCY",  # written by gateway/store/recon.py
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
    """Build the event for a flow row (a dict with the ``flows`` columns).

    Its free text (the failure message, the detail) is scrubbed here: events leave the process.
    """
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
        failure_message=scrub(str(flow.get("failure_message") or "")),
        payer_attributable=bool(flow.get("payer_attributable")),
        needs_review=bool(flow.get("needs_review")),
        original_flow_no=original_flow_no,
        detail=scrub(detail),
    )
    for funder_id, amount, refunded in flow.get("split") or ():  # type: ignore[attr-defined]
        event.split.parts.add(funder_id=funder_id, amount=amount, refunded=refunded)
    for name, value in (("created_at", flow.get("created_at")), ("finished_at", flow.get("finished_at"))):
        ts = _ts(value) if isinstance(value, datetime) else None
        if ts is not None:
            getattr(event, name).CopyFrom(ts)
    emitted = _ts(now or datetime.now(UTC))
    assert emitted is not None
    event.emitted_at.CopyFrom(emitted)
    return event


def recon_event(
    item: dict[str, object], flow: dict[str, object] | None, *, now: datetime | None = None
) -> events_pb2.FlowEvent:
    """The RECON_DISCREPANCY event of a critical reconciliation item (a ``recon_items`` row).

    ``flow`` (the ``flows`` columns) is the flow of our attempt when we have one; the event then
    names it like a flow event does (and its key is the flow number); for an order we never sent
    only the ``recon`` part is set.
    """
    if flow is not None:
        event = flow_event(flow, events_pb2.RECON_DISCREPANCY, now=now)
    else:
        event = events_pb2.FlowEvent(event_id=new_ulid(), event_type=events_pb2.RECON_DISCREPANCY)
        event.channel = str(item["channel"])
        emitted = _ts(now or datetime.now(UTC))
        assert emitted is not None
        event.emitted_at.CopyFrom(emitted)
    day = item["day"]
    event.recon.CopyFrom(
        events_pb2.ReconDiscrepancy(
            item_id=int(str(item["id"])),
            run_id=int(str(item["run_id"])),
            channel=str(item["channel"]),
            business_day=day.isoformat() if isinstance(day, datetime | date) else str(day),
            **{"class": str(item["class"])},
            channel_order_no=str(item["channel_order_no"]),
            local_status=str(item.get("local_status") or ""),
            local_amount=int(str(item.get("local_amount") or 0)),
            line_status=str(item.get("line_status") or ""),
            line_amount=int(str(item.get("line_amount") or 0)),
            line_txn_id=str(item.get("line_txn_id") or ""),
        )
    )
    event.detail = f"reconciliation {item['class']}: {item['channel_order_no']}"
    return event
