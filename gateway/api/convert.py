"""Store rows → protobuf messages. Only masked account data ever leaves.

Free text that came from outside (a channel's message, an operator's reason)
is scrubbed here, on its way out (gateway.domain.scrub). Callers see which
channels a routing decision rejected and by which filter, not the details
(floats, limits, maintenance windows): those are for operators
(``operator=True``, the admin API).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from channels.contract import Cashier, CashierKind
from gateway.domain import PAYMENT_KINDS, AgreementStatus, FlowStatus, scrub
from gateway.store.rows import AgreementRow, AttemptRow, CollectionRow, FlowRow
from paygate.v1 import gateway_pb2

_ATTEMPT_STATUS = {
    "SENDING": gateway_pb2.SENDING,
    "PENDING": gateway_pb2.PENDING,
    "SUCCEEDED": gateway_pb2.ATTEMPT_SUCCEEDED,
    "FAILED": gateway_pb2.ATTEMPT_FAILED,
}


def ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    out = Timestamp()
    out.FromDatetime(value.replace(tzinfo=UTC) if value.tzinfo is None else value)
    return out


def _set_ts(message: Any, name: str, value: datetime | None) -> None:
    stamp = ts(value)
    if stamp is not None:
        getattr(message, name).CopyFrom(stamp)


def decision_pb(decision: dict[str, Any] | None, *, operator: bool = False) -> gateway_pb2.RouteDecision | None:
    if not decision:
        return None
    out = gateway_pb2.RouteDecision(reason=str(decision.get("reason", "")))
    for item in decision.get("ranked", []):
        out.candidates.add(
            channel=str(item.get("channel_id", "")),
            score=float(item.get("score", 0.0) or 0.0),
            success_estimate=float(item.get("estimate", 0.0) or 0.0),
            cost=int(item.get("cost", 0) or 0),
        )
    for item in decision.get("rejected", []):
        out.rejected.add(
            channel=str(item.get("channel_id", "")),
            filter=str(item.get("filter", "")),
            detail=scrub(str(item.get("detail", ""))) if operator else "",
        )
    return out


def attempt_pb(a: AttemptRow, *, operator: bool = False) -> gateway_pb2.Attempt:
    out = gateway_pb2.Attempt(
        seq=a.seq,
        channel=a.channel,
        channel_order_no=a.channel_order_no,
        status=_ATTEMPT_STATUS[a.status.value],
        raw_code=a.raw_code,
        code=a.code,
        message=scrub(a.raw_message),
        safe_elsewhere=a.safe_elsewhere,
        fee=a.fee or 0,
    )
    decision = decision_pb(a.decision, operator=operator)
    if decision is not None:
        out.decision.CopyFrom(decision)
    _set_ts(out, "created_at", a.created_at)
    _set_ts(out, "finished_at", a.finished_at)
    return out


def flow_pb(f: FlowRow, *, operator: bool = False) -> gateway_pb2.Flow:
    out = gateway_pb2.Flow(
        flow_no=f.flow_no,
        request_id=f.request_id,
        kind=gateway_pb2.FlowKind.Value(f.kind.value),
        status=gateway_pb2.FlowStatus.Value(f.status.value),
        amount=gateway_pb2.Money(amount=f.amount, currency=f.currency),
        channel=f.channel or (f.attempts[-1].channel if f.attempts else ""),
        channel_txn_id=f.channel_txn_id,
        needs_review=f.needs_review,
        account_masked=f.account_masked,
        original_flow_no=f.original_flow_no,
        replayed=f.replayed,
    )
    if f.status is FlowStatus.FAILED:
        out.failure.CopyFrom(
            gateway_pb2.Failure(
                code=f.failure_code, message=scrub(f.failure_message), payer_attributable=f.payer_attributable
            )
        )
    if f.kind in PAYMENT_KINDS:
        out.refunded.CopyFrom(gateway_pb2.Money(amount=f.refunded_amount, currency=f.currency))
    out.attempts.extend(attempt_pb(a, operator=operator) for a in f.attempts)
    for part in f.split:
        out.split.parts.add(funder_id=part.funder_id, amount=part.amount, refunded=part.refunded)
    _set_ts(out, "created_at", f.created_at)
    _set_ts(out, "updated_at", f.updated_at)
    _set_ts(out, "finished_at", f.finished_at)
    return out


_CASHIER_KIND = {
    CashierKind.QR: gateway_pb2.CASHIER_QR,
    CashierKind.H5: gateway_pb2.CASHIER_H5,
    CashierKind.IN_APP: gateway_pb2.CASHIER_IN_APP,
}
CASHIER_KIND_OF_PB = {pb: kind for kind, pb in _CASHIER_KIND.items()}


def collection_pb(flow: FlowRow, row: CollectionRow | None, cashier: Cashier | None) -> gateway_pb2.Flow:
    """A collection's flow with its cashier: the payload once the channel gave it, the expiry and kind always."""
    out = flow_pb(flow)
    if row is None:
        return out
    pb = gateway_pb2.Cashier(
        kind=_CASHIER_KIND[CashierKind(row.cashier_kind)], closing=row.close_requested_at is not None
    )
    _set_ts(pb, "expires_at", row.expires_at)
    if cashier is not None:
        pb.qr_code, pb.url, pb.order_string = cashier.qr_code, cashier.url, cashier.order_string
        pb.sdk_params.update(cashier.sdk_params)
    out.cashier.CopyFrom(pb)
    return out


def agreement_pb(a: AgreementRow) -> gateway_pb2.Agreement:
    out = gateway_pb2.Agreement(
        agreement_no=a.agreement_no,
        channel=a.channel,
        status=gateway_pb2.AgreementStatus.Value(AgreementStatus(a.status).value),
        account_masked=a.account_masked,
        bank_code=a.bank_code,
        holder_name_masked=a.holder_masked,
        failure_code=a.failure_code,
    )
    _set_ts(out, "created_at", a.created_at)
    _set_ts(out, "updated_at", a.updated_at)
    return out


def to_json(message: Any) -> str:
    return json_format.MessageToJson(message, preserving_proto_field_name=True)
