"""GatewayAdmin servicer: channel state, positions, review queue, discrepancies.

Operator-only (the interceptor checks operator tokens). Every change writes an
audit record with the operator and the reason. It reads and writes through the
store ports (gateway/ports.py), never through SQL.
"""

from __future__ import annotations

from typing import Any

import grpc

from channels.contract import Operation
from channels.registry import ChannelRegistry
from gateway import validation as v
from gateway.api.auth import current_identity
from gateway.api.convert import flow_pb, ts
from gateway.api.servicer import _next_token, _page_token
from gateway.domain import FlowStatus, scrub
from gateway.errors import InvalidInput, NotFound, PreconditionFailed
from gateway.flows import FlowService
from gateway.planner import Planner
from gateway.poller import Poller
from gateway.ports import AuditLog, ChannelStateStore, DiscrepancyLog, FlowStore, PositionStore
from gateway.store.rows import FlowRow, PositionRow
from paygate.v1 import admin_pb2, admin_pb2_grpc, gateway_pb2
from routing.engine import ChannelState

_STATE_TO_PB = {
    ChannelState.ENABLED: admin_pb2.ENABLED,
    ChannelState.DRAINING: admin_pb2.DRAINING,
    ChannelState.DISABLED: admin_pb2.DISABLED,
}
_PB_TO_STATE = {pb: state for state, pb in _STATE_TO_PB.items()}

Ctx = grpc.aio.ServicerContext[Any, Any]


def _reason(text: str) -> str:
    # stored in the audit log and, for ResolveFlow, published as the flow's failure message: scrubbed first
    return scrub(v.text(text, "reason", max_len=512, required=True))


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
    ) -> None:
        self.registry = registry
        self.planner = planner
        self.flows = flows
        self.store: FlowStore = flows.store
        self.positions = positions
        self.poller = poller
        self.channel_states = channel_states
        self.audit = audit
        self.discrepancies = discrepancies

    def _channel(self, channel_id: str) -> str:
        v.pattern(channel_id, "channel", v.CHANNEL_ID, "a configured channel id")
        if channel_id not in self.registry:
            raise NotFound(f"channel: no channel {channel_id!r}")
        return channel_id

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
        reason = _reason(request.reason)
        state = _PB_TO_STATE[request.state]
        operator = current_identity().name
        await self.channel_states.set(channel_id, state.value, operator=operator, reason=reason)
        self.planner.credentials.release(channel_id, f"operator {operator} set {state.value}", restore=False)
        self.planner.router.set_state(channel_id, state)
        self.planner.publish_metrics()
        return await self._info(channel_id)

    async def AdjustPosition(self, request: admin_pb2.AdjustPositionRequest, context: Ctx) -> admin_pb2.Position:
        channel_id = self._channel(request.channel)
        delta = v.position_delta(request.delta)
        reason = _reason(request.reason)
        if await self.positions.get(channel_id) is None:
            raise PreconditionFailed("channel: has no position; resync it first")
        row = await self.positions.adjust(channel_id, delta, current_identity().name, reason)
        if row is None:
            raise PreconditionFailed("delta: the balance cannot go below zero")
        return position_pb(row)

    async def ResyncPosition(self, request: admin_pb2.ResyncPositionRequest, context: Ctx) -> admin_pb2.Position:
        channel_id = self._channel(request.channel)
        reason = _reason(request.reason)
        channel = self.registry.get(channel_id)
        if Operation.BALANCE not in channel.operations:
            raise PreconditionFailed(f"channel: {channel_id} has no balance query")
        balance = await channel.balance()
        row = await self.positions.sync(
            channel_id, balance.currency, balance.available, operator=current_identity().name, reason=reason
        )
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

    async def _flow(self, flow_no: str) -> FlowRow:
        flow_no = v.pattern(flow_no, "flow_no", v.FLOW_NO, "a 26-character flow_no")
        flow = await self.store.by_flow_no(flow_no)
        if flow is None:
            raise NotFound(f"flow_no: no flow {flow_no}")
        return flow

    async def ResolveFlow(self, request: admin_pb2.ResolveFlowRequest, context: Ctx) -> gateway_pb2.Flow:
        flow = await self._flow(request.flow_no)
        if request.status not in (gateway_pb2.SUCCEEDED, gateway_pb2.FAILED):
            raise InvalidInput("status", "must be SUCCEEDED or FAILED")
        reason = _reason(request.reason)
        txn = v.text(request.channel_txn_id, "channel_txn_id", max_len=128)
        status = FlowStatus.SUCCEEDED if request.status == gateway_pb2.SUCCEEDED else FlowStatus.FAILED
        if flow.status is not FlowStatus.PROCESSING:
            raise PreconditionFailed(f"flow_no: the flow is already {flow.status.value}")
        if not await self.store.resolve(flow, status, current_identity().name, reason, txn):
            raise PreconditionFailed("flow_no: the flow was resolved concurrently")
        self.flows.on_outbox()
        fresh = await self.store.by_id(flow.id)
        assert fresh is not None
        return flow_pb(fresh, operator=True)

    async def RequeryFlow(self, request: admin_pb2.RequeryFlowRequest, context: Ctx) -> admin_pb2.RequeryFlowResponse:
        flow = await self._flow(request.flow_no)
        queued = 0
        for attempt in flow.attempts:
            if attempt.status.value in ("SENDING", "PENDING"):
                await self.poller.expedite(attempt.id, attempt.channel)
                queued += 1
        await self.audit.record(current_identity().name, "requery_flow", flow.flow_no, "re-query", {"queued": queued})
        return admin_pb2.RequeryFlowResponse(flow=flow_pb(flow, operator=True), queued_attempts=queued)

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
