"""GatewayAdmin servicer: channel state, positions, review queue, discrepancies, maker-checker, audit log.

Operator-only: the interceptor authenticates operators and checks each method's minimum role
(gateway/api/access.py). Every change writes an audit record with the operator and the reason.
Manual resolutions go through gateway/resolutions.py (maker-checker above the threshold). It reads
and writes through the store ports (gateway/ports.py), never through SQL.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from channels.registry import ChannelRegistry
from gateway import validation as v
from gateway.api.auth import current_identity
from gateway.api.convert import flow_pb, ts
from gateway.api.servicer import _next_token, _page_token
from gateway.domain import FlowStatus, scrub
from gateway.errors import InvalidInput
from gateway.flows import FlowService
from gateway.operations import Operations, reason_text
from gateway.planner import Planner
from gateway.poller import Poller
from gateway.ports import AuditLog, ChannelStateStore, DiscrepancyLog, FlowStore, PositionStore
from gateway.positions import PositionService
from gateway.resolutions import SYSTEM, ManualResolutions
from gateway.store.rows import AuditQuery, PositionRow, ResolutionRow, ResolutionStatus
from paygate.v1 import admin_pb2, admin_pb2_grpc, gateway_pb2
from routing.engine import ChannelState

_STATE_TO_PB = {
    ChannelState.ENABLED: admin_pb2.ENABLED,
    ChannelState.DRAINING: admin_pb2.DRAINING,
    ChannelState.DISABLED: admin_pb2.DISABLED,
}
_PB_TO_STATE = {pb: state for state, pb in _STATE_TO_PB.items()}

_RESOLUTION_TO_PB = {
    ResolutionStatus.PENDING: admin_pb2.RESOLUTION_PENDING,
    ResolutionStatus.APPROVED: admin_pb2.RESOLUTION_APPROVED,
    ResolutionStatus.REJECTED: admin_pb2.RESOLUTION_REJECTED,
    ResolutionStatus.VOIDED: admin_pb2.RESOLUTION_VOIDED,
}
_FLOW_STATUS_TO_PB = {
    FlowStatus.PROCESSING: gateway_pb2.PROCESSING,
    FlowStatus.SUCCEEDED: gateway_pb2.SUCCEEDED,
    FlowStatus.FAILED: gateway_pb2.FAILED,
}
# ResolveFlow's trailing metadata when it recorded a resolution for approval instead of applying it
PENDING_RESOLUTION_KEY = "paygate-pending-resolution"

Ctx = grpc.aio.ServicerContext[Any, Any]


def _reason(text: str) -> str:
    return reason_text(text)


def _set_ts(message: Any, name: str, value: Any) -> None:
    stamp = ts(value)
    if stamp is not None:
        getattr(message, name).CopyFrom(stamp)


def resolution_pb(row: ResolutionRow) -> admin_pb2.PendingResolution:
    out = admin_pb2.PendingResolution(
        id=row.id,
        flow_no=row.flow_no,
        amount=gateway_pb2.Money(amount=row.amount, currency=row.currency),
        status=_FLOW_STATUS_TO_PB[row.target],
        channel_txn_id=row.channel_txn_id,
        reason=scrub(row.reason),
        proposed_by=row.proposed_by,
        resolution_status=_RESOLUTION_TO_PB[row.status],
        decided_by=row.decided_by,
        decision_reason=scrub(row.decision_reason),
        flow_status=_FLOW_STATUS_TO_PB[row.flow_status],
    )
    _set_ts(out, "proposed_at", row.proposed_at)
    _set_ts(out, "decided_at", row.decided_at)
    return out


def _resolution_id(value: int) -> int:
    if value <= 0:
        raise InvalidInput("resolution_id", "must be a resolution id (> 0)")
    return value


def _time(request: Any, name: str) -> Any:
    if not request.HasField(name):
        return None
    stamp: Timestamp = getattr(request, name)
    if stamp.seconds < 0 or stamp.seconds > 253402300799 or not 0 <= stamp.nanos < 10**9:  # 9999-12-31
        raise InvalidInput(name, "must be a timestamp between 1970 and 9999")
    return stamp.ToDatetime()  # naive UTC, as the store keeps times


def position_pb(row: PositionRow) -> admin_pb2.Position:
    out = admin_pb2.Position(
        channel=row.channel,
        balance=gateway_pb2.Money(amount=row.balance, currency=row.currency),
        reserved=gateway_pb2.Money(amount=row.reserved, currency=row.currency),
        available=gateway_pb2.Money(amount=row.available, currency=row.currency),
    )
    stamp = ts(row.synced_at)
    if stamp is not None:
        out.synced_at.CopyFrom(stamp)
    return out


class GatewayAdminServicer(admin_pb2_grpc.GatewayAdminServicer):
    def __init__(
        self,
        *,
        registry: ChannelRegistry,
        planner: Planner,
        flows: FlowService,
        positions: PositionStore,
        poller: Poller,
        channel_states: ChannelStateStore,
        audit: AuditLog,
        discrepancies: DiscrepancyLog,
        resolutions: ManualResolutions,
        operations: Operations | None = None,
    ) -> None:
        self.registry = registry
        self.planner = planner
        self.flows = flows
        self.store: FlowStore = flows.store
        self.positions = positions
        self.position_service = PositionService(positions, registry)
        self.poller = poller
        self.channel_states = channel_states
        self.audit = audit
        self.discrepancies = discrepancies
        self.resolutions = resolutions
        # the use cases the console shares (gateway/operations.py); built from the parts when not given
        self.operations = operations or Operations(
            registry=registry,
            planner=planner,
            flows=self.store,
            positions=positions,
            poller=poller,
            channel_states=channel_states,
            audit=audit,
            resolutions=resolutions,
        )

    def _channel(self, channel_id: str) -> str:
        return self.operations.channel(channel_id)

    async def _info(self, channel_id: str) -> admin_pb2.ChannelInfo:
        import time

        channel = self.registry.get(channel_id)
        status = next((s for s in self.planner.router.snapshot(time.time()) if s.channel_id == channel_id), None)
        profile = self.planner.router.profile(channel_id)
        out = admin_pb2.ChannelInfo(
            channel=channel_id,
            adapter=type(channel).__module__.split(".")[1] if "." in type(channel).__module__ else "",
            operations=sorted(op.value for op in channel.operations),
        )
        if status is not None:
            out.state = _STATE_TO_PB.get(ChannelState(str(status.state).lower()), admin_pb2.ENABLED)
            out.eliminated = bool(getattr(status, "eliminated", False))
            for est in getattr(status, "estimates", []):
                out.estimates.add(
                    operation=str(est.operation),
                    bank_code=str(getattr(est, "bank_code", "") or ""),
                    estimate=float(est.estimate),
                    observations=int(getattr(est, "observations", 0)),
                )
        if profile is not None:
            out.limits.CopyFrom(
                admin_pb2.ChannelLimits(
                    min_amount=profile.min_amount,
                    max_amount=profile.max_amount or 0,
                    per_card_daily_attempts=profile.per_card_daily_attempts or 0,
                    per_card_daily_amount=profile.per_card_daily_amount or 0,
                )
            )
        row = await self.positions.get(channel_id)
        if row is not None:
            out.position.CopyFrom(position_pb(row))
        return out

    async def ListChannels(
        self, request: admin_pb2.ListChannelsRequest, context: Ctx
    ) -> admin_pb2.ListChannelsResponse:
        return admin_pb2.ListChannelsResponse(channels=[await self._info(c) for c in self.registry])

    async def SetChannelState(self, request: admin_pb2.SetChannelStateRequest, context: Ctx) -> admin_pb2.ChannelInfo:
        channel_id = self._channel(request.channel)
        if request.state not in _PB_TO_STATE:
            raise InvalidInput("state", "must be ENABLED, DRAINING or DISABLED")
        await self.operations.set_channel_state(
            channel_id, _PB_TO_STATE[request.state], current_identity().name, request.reason
        )
        return await self._info(channel_id)

    async def AdjustPosition(self, request: admin_pb2.AdjustPositionRequest, context: Ctx) -> admin_pb2.Position:
        row = await self.operations.adjust_position(
            request.channel, request.delta, current_identity().name, request.reason
        )
        return position_pb(row)

    async def ResyncPosition(self, request: admin_pb2.ResyncPositionRequest, context: Ctx) -> admin_pb2.Position:
        row = await self.operations.resync_position(request.channel, current_identity().name, request.reason)
        return position_pb(row)

    async def ListReviewFlows(
        self, request: admin_pb2.ListReviewFlowsRequest, context: Ctx
    ) -> admin_pb2.ListReviewFlowsResponse:
        limit = v.page_size(request.page_size)
        after = _page_token(request.page_token)
        flows = await self.store.in_review(after_id=after, limit=limit + 1)
        out = admin_pb2.ListReviewFlowsResponse()
        for flow in flows[:limit]:
            out.flows.add(caller=flow.caller, flow=flow_pb(flow, operator=True))
        if len(flows) > limit:
            out.next_page_token = _next_token(flows[limit - 1].id)
        return out

    async def ResolveFlow(self, request: admin_pb2.ResolveFlowRequest, context: Ctx) -> gateway_pb2.Flow:
        if request.status not in (gateway_pb2.SUCCEEDED, gateway_pb2.FAILED):
            await self.operations.flow(request.flow_no)  # an unknown flow is NOT_FOUND whatever the status
            raise InvalidInput("status", "must be SUCCEEDED or FAILED")
        status = FlowStatus.SUCCEEDED if request.status == gateway_pb2.SUCCEEDED else FlowStatus.FAILED
        outcome = await self.operations.resolve_flow(
            request.flow_no, status, request.channel_txn_id, current_identity().name, request.reason
        )
        if outcome.pending is not None and context is not None:
            context.set_trailing_metadata(((PENDING_RESOLUTION_KEY, str(outcome.pending.id)),))
        return flow_pb(outcome.flow, operator=True)

    async def ApproveResolution(
        self, request: admin_pb2.ApproveResolutionRequest, context: Ctx
    ) -> admin_pb2.ApproveResolutionResponse:
        resolution_id = _resolution_id(request.resolution_id)
        row, flow = await self.operations.approve_resolution(resolution_id, current_identity().name, request.reason)
        return admin_pb2.ApproveResolutionResponse(resolution=resolution_pb(row), flow=flow_pb(flow, operator=True))

    async def RejectResolution(
        self, request: admin_pb2.RejectResolutionRequest, context: Ctx
    ) -> admin_pb2.PendingResolution:
        resolution_id = _resolution_id(request.resolution_id)
        row = await self.operations.reject_resolution(resolution_id, current_identity().name, request.reason)
        return resolution_pb(row)

    async def ListPendingResolutions(
        self, request: admin_pb2.ListPendingResolutionsRequest, context: Ctx
    ) -> admin_pb2.ListPendingResolutionsResponse:
        flow_no = v.pattern(request.flow_no, "flow_no", v.FLOW_NO, "a 26-character flow_no", required=False)
        limit = v.page_size(request.page_size)
        after = _page_token(request.page_token)
        rows, next_after = await self.resolutions.pending(
            flow_no=flow_no, include_decided=request.include_decided, after_id=after, limit=limit
        )
        out = admin_pb2.ListPendingResolutionsResponse(resolutions=[resolution_pb(r) for r in rows])
        if next_after is not None:
            out.next_page_token = _next_token(next_after)
        return out

    async def ListAuditLog(
        self, request: admin_pb2.ListAuditLogRequest, context: Ctx
    ) -> admin_pb2.ListAuditLogResponse:
        flow_no = v.pattern(request.flow_no, "flow_no", v.FLOW_NO, "a 26-character flow_no", required=False)
        channel = v.pattern(request.channel, "channel", v.CHANNEL_ID, "a channel id", required=False)
        if flow_no and channel:
            raise InvalidInput("channel", "give flow_no or channel, not both")
        actor = request.actor
        if actor != SYSTEM:
            actor = v.pattern(actor, "actor", v.CHANNEL_ID, f"an operator name (or {SYSTEM})", required=False)
        since, until = _time(request, "since"), _time(request, "until")
        if since is not None and until is not None and until <= since:
            raise InvalidInput("until", "must be later than since")
        limit = v.page_size(request.page_size)
        before = _page_token(request.page_token)
        query = AuditQuery(
            target=flow_no or channel, operator=actor, since=since, until=until, before_id=before, limit=limit + 1
        )
        rows = await self.audit.entries(query)
        out = admin_pb2.ListAuditLogResponse()
        for row in rows[:limit]:
            entry = out.entries.add(
                id=row.id,
                actor=row.operator,
                action=row.action,
                target=row.target,
                reason=scrub(row.reason),
                detail_json=scrub(json.dumps(row.detail, ensure_ascii=False, sort_keys=True, default=str)),
            )
            _set_ts(entry, "created_at", row.created_at)
        if len(rows) > limit:
            out.next_page_token = _next_token(rows[limit - 1].id)
        return out

    async def RequeryFlow(self, request: admin_pb2.RequeryFlowRequest, context: Ctx) -> admin_pb2.RequeryFlowResponse:
        done = await self.operations.requery_flow(request.flow_no, current_identity().name)
        return admin_pb2.RequeryFlowResponse(flow=flow_pb(done.flow, operator=True), queued_attempts=done.queued)

    async def ListDiscrepancies(
        self, request: admin_pb2.ListDiscrepanciesRequest, context: Ctx
    ) -> admin_pb2.ListDiscrepanciesResponse:
        limit = v.page_size(request.page_size)
        out = admin_pb2.ListDiscrepanciesResponse()
        for row in await self.discrepancies.recent(limit):
            item = out.discrepancies.add(
                id=row.id,
                flow_no=row.flow_no,
                channel_order_no=row.channel_order_no,
                recorded_status=row.recorded_status,
                reported_status=row.reported_status,
                source=row.source,
            )
            stamp = ts(row.created_at)
            if stamp is not None:
                item.created_at.CopyFrom(stamp)
        return out
