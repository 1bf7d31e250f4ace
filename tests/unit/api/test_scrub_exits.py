"""Free text leaves the process scrubbed: gRPC responses, Kafka events, error messages, operator reasons."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from gateway.api.admin import GatewayAdminServicer
from gateway.api.auth import IDENTITY, Identity
from gateway.api.convert import flow_pb
from gateway.api.status import to_status
from gateway.domain import AttemptStatus, FlowKind, FlowStatus
from gateway.errors import IdempotencyConflict, NotFound
from gateway.outbox.writer import flow_event
from gateway.resolutions import ManualResolutions
from gateway.store.flows import AttemptRow, FlowRow
from paygate.v1 import admin_pb2, events_pb2, gateway_pb2

CARD = "6222020200112230"
MOBILE = "13800138000"
ID_NO = "11010519491231002X"
RAW = f"卡号{CARD}余额不足，请联系持卡人{MOBILE}（证件 {ID_NO}）"
FLOW_NO = "01JD3Z8X5Q7R2M4N6P8S0T1V3W"
REQUEST_ID = "repay-20261201192500"


def _no_pii(text: str) -> None:
    for secret in (CARD, MOBILE, ID_NO):
        assert secret not in text, text


def _flow() -> FlowRow:
    attempt = AttemptRow(
        id=1,
        flow_id=1,
        seq=1,
        channel="bank-a",
        operation="payout",
        channel_order_no=FLOW_NO + "01",
        status=AttemptStatus.FAILED,
        amount=100,
        currency="CNY",
        raw_code="E42",
        raw_message=RAW,
        code="INSUFFICIENT_FUNDS",
        decision={
            "reason": "best_score",
            "ranked": [{"channel_id": "bank-a", "score": 0.9}],
            "rejected": [{"channel_id": "bank-b", "filter": "position", "detail": "available 1200 < 5000"}],
        },
    )
    return FlowRow(
        id=1,
        flow_no=FLOW_NO,
        caller="loans",
        request_id=REQUEST_ID,
        kind=FlowKind.PAYOUT,
        amount=100,
        currency="CNY",
        request_hash="h",
        status=FlowStatus.FAILED,
        failure_code="INSUFFICIENT_FUNDS",
        failure_message=RAW,
        attempts=[attempt],
    )


def test_flow_response_scrubs_channel_text_and_hides_rejection_details_from_callers() -> None:
    out = flow_pb(_flow())
    _no_pii(out.failure.message)
    _no_pii(out.attempts[0].message)
    assert out.failure.message.startswith("卡号************2230余额不足")
    assert out.request_id == REQUEST_ID and out.attempts[0].channel_order_no == FLOW_NO + "01"
    (rejected,) = out.attempts[0].decision.rejected
    assert (rejected.channel, rejected.filter, rejected.detail) == ("bank-b", "position", "")
    operator_view = flow_pb(_flow(), operator=True)
    assert operator_view.attempts[0].decision.rejected[0].detail == "available 1200 < 5000"
    _no_pii(operator_view.failure.message)


def test_events_are_scrubbed_where_they_are_built() -> None:
    source = _flow().as_event_source()
    event = flow_event(source, events_pb2.DISCREPANCY, detail=f"channel says: {RAW}")
    _no_pii(event.failure_message)
    _no_pii(event.detail)
    _no_pii(event.SerializeToString().decode("utf-8", "replace"))
    assert event.request_id == REQUEST_ID and event.flow_no == FLOW_NO


def test_error_messages_keep_the_callers_key_and_scrub_the_rest() -> None:
    _, message = to_status(IdempotencyConflict(f"request_id {REQUEST_ID} was already used (flow {FLOW_NO})"))
    assert message == f"request_id {REQUEST_ID} was already used (flow {FLOW_NO})"
    # a key that is nothing but digits comes back as sent to its own caller
    key = "6222020200112230"
    _, message = to_status(NotFound(f"request_id: no flow for {key}; card {CARD[:-1]}8"), keep=[key])
    assert message == f"request_id: no flow for {key}; card ************2238"


class _Store:
    def __init__(self) -> None:
        self.resolved: list[str] = []

    async def by_flow_no(self, flow_no: str, **_: Any) -> Any:
        return SimpleNamespace(id=1, flow_no=flow_no, status=FlowStatus.PROCESSING, attempts=[], amount=100)

    async def resolve(self, flow: Any, status: Any, operator: str, reason: str, txn: str) -> bool:
        self.resolved.append(reason)
        raise RuntimeError("stop here")


def test_the_resolve_reason_is_scrubbed_before_it_is_stored_and_published() -> None:
    store = _Store()
    admin = GatewayAdminServicer(
        registry=None,  # type: ignore[arg-type]
        planner=None,  # type: ignore[arg-type]
        flows=SimpleNamespace(store=store),  # type: ignore[arg-type]
        positions=None,  # type: ignore[arg-type]
        poller=None,  # type: ignore[arg-type]
        channel_states=None,  # type: ignore[arg-type]
        audit=None,  # type: ignore[arg-type]
        discrepancies=None,  # type: ignore[arg-type]
        resolutions=ManualResolutions(store, None, approval_above=1000),  # type: ignore[arg-type]
    )
    request = admin_pb2.ResolveFlowRequest(flow_no=FLOW_NO, status=gateway_pb2.FAILED, reason=f"bank: {RAW}")

    async def resolve() -> None:
        token = IDENTITY.set(Identity("ops", "operator"))
        try:
            await admin.ResolveFlow(request, None)  # type: ignore[arg-type]
        except RuntimeError:
            pass
        finally:
            IDENTITY.reset(token)

    asyncio.run(resolve())
    (reason,) = store.resolved
    _no_pii(reason)
    assert reason.startswith("bank: 卡号************2230")
