"""Operators by role, and maker-checker on manual resolutions, through the admin API over a real gateway.

Below the threshold one operator resolves; above it the resolution waits until a *different*
approver approves it; a viewer changes nothing; a pending resolution can be rejected, and is voided
when the flow finishes on its own; every step is in the audit log, read back through ListAuditLog.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.api.admin import PENDING_RESOLUTION_KEY
from gateway.store.db import DatabaseConfig
from paygate.v1 import admin_pb2
from paygate.v1 import gateway_pb2 as pb
from tests.integration.test_unconfirmed import SLOW_SETTLE, callback_body, pending_flow, post, signed
from tests.support.harness import Harness, running_gateway

THRESHOLD = 50_000
TOKENS = {
    "maker": "maker-token-0123456789",
    "checker": "checker-token-0123456789",
    "checker2": "checker2-token-0123456789",
    "viewer": "viewer-token-0123456789",
}
ROLES = {"maker": "operator", "checker": "approver", "checker2": "approver", "viewer": "viewer"}
NO_POLLS = {"interval_s": 0.1, "first_delay_s": 300, "schedule": [[300, 5]]}


def md(operator: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[operator]}"),)


@pytest.fixture
async def h(db_config: DatabaseConfig) -> AsyncIterator[Harness]:
    async with running_gateway(
        db_config,
        {"bank-a": SLOW_SETTLE},
        poller=NO_POLLS,
        operators={name: {"token": token, "role": ROLES[name]} for name, token in TOKENS.items()},
        security={"resolve_approval_above": THRESHOLD},
    ) as harness:
        yield harness


def resolve(flow_no: str, reason: str = "bank statement shows the debit") -> admin_pb2.ResolveFlowRequest:
    return admin_pb2.ResolveFlowRequest(flow_no=flow_no, status=pb.SUCCEEDED, channel_txn_id="B-1", reason=reason)


async def propose(h: Harness, flow_no: str, operator: str) -> int:
    """ResolveFlow above the threshold: the flow stays PROCESSING; the trailer names the pending resolution."""
    assert h.admin is not None
    call = h.admin.ResolveFlow(resolve(flow_no), metadata=md(operator))
    flow = await call
    assert flow.status == pb.PROCESSING
    trailer = dict(await call.trailing_metadata())
    return int(trailer[PENDING_RESOLUTION_KEY])


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    return err.value


def reason_of(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info.reason


async def test_below_the_threshold_one_operator_resolves(h: Harness) -> None:
    assert h.admin is not None
    flow = await pending_flow(h, "mc-small", amount=10005)
    call = h.admin.ResolveFlow(resolve(flow.flow_no), metadata=md("maker"))
    resolved = await call
    assert resolved.status == pb.SUCCEEDED
    assert PENDING_RESOLUTION_KEY not in dict(await call.trailing_metadata())
    listed = await h.admin.ListPendingResolutions(admin_pb2.ListPendingResolutionsRequest(), metadata=md("viewer"))
    assert list(listed.resolutions) == []


async def test_above_the_threshold_a_different_approver_applies_it(h: Harness) -> None:
    assert h.admin is not None
    flow = await pending_flow(h, "mc-big", amount=100005)
    started = datetime.now(UTC) - timedelta(seconds=1)
    resolution_id = await propose(h, flow.flow_no, "checker")

    pending = await h.admin.ListPendingResolutions(admin_pb2.ListPendingResolutionsRequest(), metadata=md("viewer"))
    [row] = pending.resolutions
    assert (row.id, row.flow_no, row.resolution_status, row.proposed_by) == (
        resolution_id,
        flow.flow_no,
        admin_pb2.RESOLUTION_PENDING,
        "checker",
    )
    assert (row.amount.amount, row.status, row.flow_status) == (100005, pb.SUCCEEDED, pb.PROCESSING)
    # a second resolution of the same flow waits for the first
    err = await refused(h.admin.ResolveFlow(resolve(flow.flow_no), metadata=md("maker")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and f"resolution {resolution_id}" in (err.details() or "")

    approve = admin_pb2.ApproveResolutionRequest(resolution_id=resolution_id, reason="statement checked")
    err = await refused(h.admin.ApproveResolution(approve, metadata=md("checker")))  # their own
    assert (err.code(), reason_of(err)) == (grpc.StatusCode.PERMISSION_DENIED, "SELF_APPROVAL")
    err = await refused(h.admin.ApproveResolution(approve, metadata=md("maker")))  # not an approver
    assert (err.code(), reason_of(err)) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    got = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())
    assert got.status == pb.PROCESSING, "nothing applied before the approval"

    approved = await h.admin.ApproveResolution(approve, metadata=md("checker2"))
    assert approved.flow.status == pb.SUCCEEDED and approved.flow.channel_txn_id == "B-1"
    assert (approved.resolution.resolution_status, approved.resolution.decided_by) == (
        admin_pb2.RESOLUTION_APPROVED,
        "checker2",
    )
    got = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())
    assert got.status == pb.SUCCEEDED
    events = await h.gateway.db.fetchall(
        "SELECT event_type FROM outbox WHERE flow_id=(SELECT id FROM flows WHERE flow_no=%s)", (flow.flow_no,)
    )
    assert [e["event_type"] for e in events] == ["FLOW_RESULT"]
    err = await refused(h.admin.ApproveResolution(approve, metadata=md("checker2")))  # once only
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION

    # every step, read back through the API (newest first), by flow, by actor, by time, page by page
    log = await h.admin.ListAuditLog(admin_pb2.ListAuditLogRequest(flow_no=flow.flow_no), metadata=md("viewer"))
    assert [(e.actor, e.action) for e in log.entries] == [
        ("checker2", "resolve_flow"),
        ("checker2", "approve_resolution"),
        ("checker", "propose_resolution"),
    ]
    assert all(e.target == flow.flow_no for e in log.entries)
    assert json.loads(log.entries[2].detail_json)["resolution_id"] == resolution_id
    assert "[proposed by checker]" in log.entries[0].reason
    by_actor = await h.admin.ListAuditLog(admin_pb2.ListAuditLogRequest(actor="checker"), metadata=md("viewer"))
    assert [e.action for e in by_actor.entries] == ["propose_resolution"]
    since, until = Timestamp(), Timestamp()
    since.FromDatetime(started)
    until.FromDatetime(started)
    assert not (await h.admin.ListAuditLog(admin_pb2.ListAuditLogRequest(until=until), metadata=md("viewer"))).entries
    recent = await h.admin.ListAuditLog(admin_pb2.ListAuditLogRequest(since=since), metadata=md("viewer"))
    assert len(recent.entries) == 3
    pages, token = [], ""
    while True:
        page = await h.admin.ListAuditLog(
            admin_pb2.ListAuditLogRequest(flow_no=flow.flow_no, page_size=1, page_token=token), metadata=md("viewer")
        )
        pages += [e.id for e in page.entries]
        token = page.next_page_token
        if not token:
            break
    assert pages == [e.id for e in log.entries]


async def test_a_pending_resolution_can_be_rejected(h: Harness) -> None:
    assert h.admin is not None
    flow = await pending_flow(h, "mc-reject", amount=100005)
    resolution_id = await propose(h, flow.flow_no, "maker")
    rejected = await h.admin.RejectResolution(
        admin_pb2.RejectResolutionRequest(resolution_id=resolution_id, reason="no debit on the statement"),
        metadata=md("checker"),
    )
    assert rejected.resolution_status == admin_pb2.RESOLUTION_REJECTED and rejected.decided_by == "checker"
    got = await h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())
    assert got.status == pb.PROCESSING
    err = await refused(
        h.admin.ApproveResolution(
            admin_pb2.ApproveResolutionRequest(resolution_id=resolution_id), metadata=md("checker2")
        )
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    # the flow is free for another proposal
    assert await propose(h, flow.flow_no, "maker") != resolution_id
    log = await h.admin.ListAuditLog(admin_pb2.ListAuditLogRequest(flow_no=flow.flow_no), metadata=md("viewer"))
    assert [e.action for e in log.entries] == ["propose_resolution", "reject_resolution", "propose_resolution"]


async def test_a_flow_that_finishes_on_its_own_voids_its_pending_resolution(h: Harness) -> None:
    assert h.admin is not None
    flow = await pending_flow(h, "mc-void", amount=100005)
    resolution_id = await propose(h, flow.flow_no, "maker")
    body = callback_body(flow.attempts[0].channel_order_no, 100005)
    assert await post(h, "bank-a", body, signed(body)) == (200, b"OK")

    listed = await h.admin.ListPendingResolutions(admin_pb2.ListPendingResolutionsRequest(), metadata=md("viewer"))
    assert list(listed.resolutions) == []
    everything = await h.admin.ListPendingResolutions(
        admin_pb2.ListPendingResolutionsRequest(include_decided=True, flow_no=flow.flow_no), metadata=md("viewer")
    )
    [row] = everything.resolutions
    assert (row.id, row.resolution_status, row.flow_status) == (
        resolution_id,
        admin_pb2.RESOLUTION_VOIDED,
        pb.SUCCEEDED,
    )
    err = await refused(
        h.admin.ApproveResolution(
            admin_pb2.ApproveResolutionRequest(resolution_id=resolution_id), metadata=md("checker")
        )
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    log = await h.admin.ListAuditLog(admin_pb2.ListAuditLogRequest(flow_no=flow.flow_no), metadata=md("viewer"))
    assert [(e.actor, e.action) for e in log.entries] == [
        ("(paygate)", "void_resolution"),
        ("maker", "propose_resolution"),
    ]


async def test_viewers_change_nothing(h: Harness) -> None:
    assert h.admin is not None
    flow = await pending_flow(h, "mc-viewer", amount=100005)
    resolution_id = await propose(h, flow.flow_no, "maker")
    before = await h.gateway.db.fetchall("SELECT * FROM audit_log ORDER BY id")
    changes = {
        "SetChannelState": admin_pb2.SetChannelStateRequest(channel="bank-a", state=admin_pb2.DISABLED, reason="x"),
        "AdjustPosition": admin_pb2.AdjustPositionRequest(channel="bank-a", delta=-1, reason="x"),
        "ResyncPosition": admin_pb2.ResyncPositionRequest(channel="bank-a", reason="x"),
        "RequeryFlow": admin_pb2.RequeryFlowRequest(flow_no=flow.flow_no),
        "ResolveFlow": resolve(flow.flow_no),
        "ApproveResolution": admin_pb2.ApproveResolutionRequest(resolution_id=resolution_id),
        "RejectResolution": admin_pb2.RejectResolutionRequest(resolution_id=resolution_id, reason="x"),
    }
    for method, request in changes.items():
        err = await refused(getattr(h.admin, method)(request, metadata=md("viewer")))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, method
        assert "viewer" in (err.details() or ""), method
    assert await h.gateway.db.fetchall("SELECT * FROM audit_log ORDER BY id") == before
    # what a viewer may do
    for method, request in {
        "ListChannels": admin_pb2.ListChannelsRequest(),
        "ListReviewFlows": admin_pb2.ListReviewFlowsRequest(),
        "ListDiscrepancies": admin_pb2.ListDiscrepanciesRequest(),
        "ListPendingResolutions": admin_pb2.ListPendingResolutionsRequest(),
        "ListAuditLog": admin_pb2.ListAuditLogRequest(),
    }.items():
        await getattr(h.admin, method)(request, metadata=md("viewer"))
