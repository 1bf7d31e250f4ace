"""The operators' use cases: what the admin API and the console both do when an operator acts.

Each method checks its input (raising :class:`~gateway.errors.InvalidInput` naming the field),
makes the change through the store ports with its audit record in the same commit, and tells the
live components (the router, the relay) about it. The operator's name and role were established
by the entrypoint (the gRPC interceptor, the console's session); the role was checked there too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from channels.registry import ChannelRegistry
from gateway import validation as v
from gateway.domain import AttemptStatus, FlowStatus, scrub
from gateway.errors import InvalidInput, NotFound, PreconditionFailed
from gateway.planner import Planner
from gateway.poller import Poller
from gateway.ports import AuditLog, ChannelStateStore, FlowStore, OutboxAdmin, PositionStore
from gateway.positions import PositionService
from gateway.resolutions import ManualResolutions, ResolveOutcome
from gateway.store.rows import FlowRow, PositionRow, ResolutionRow
from routing.engine import ChannelState


def reason_text(text: str) -> str:
    """An operator's reason: required, at most 512 characters, scrubbed (it is stored and may be published)."""
    return scrub(v.text(text, "reason", max_len=512, required=True))


@dataclass(frozen=True)
class Requeried:
    flow: FlowRow
    queued: int  # open attempts whose query was brought forward


class Operations:
    def __init__(
        self,
        *,
        registry: ChannelRegistry,
        planner: Planner,
        flows: FlowStore,
        positions: PositionStore,
        poller: Poller,
        channel_states: ChannelStateStore,
        audit: AuditLog,
        resolutions: ManualResolutions,
        outbox: OutboxAdmin | None = None,
        outbox_max_attempts: int = 10,
        on_outbox: Callable[[], None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.planner = planner
        self.flows = flows
        self.positions = positions
        self.position_service = PositionService(positions, registry)
        self.poller = poller
        self.channel_states = channel_states
        self.audit = audit
        self.resolutions = resolutions
        self.outbox = outbox
        self.outbox_max_attempts = outbox_max_attempts
        self.on_outbox = on_outbox  # an outbox row was written or released: wake the relay

    # --- lookups ----------------------------------------------------------------------------

    def channel(self, channel_id: str) -> str:
        v.pattern(channel_id, "channel", v.CHANNEL_ID, "a configured channel id")
        if channel_id not in self.registry:
            raise NotFound(f"channel: no channel {channel_id!r}")
        return channel_id

    async def flow(self, flow_no: str) -> FlowRow:
        flow_no = v.pattern(flow_no, "flow_no", v.FLOW_NO, "a 26-character flow_no")
        flow = await self.flows.by_flow_no(flow_no)
        if flow is None:
            raise NotFound(f"flow_no: no flow {flow_no}")
        return flow

    # --- channels ---------------------------------------------------------------------------

    async def set_channel_state(self, channel_id: str, state: ChannelState, operator: str, reason: str) -> None:
        """Record the state (audited) and apply it to this replica's router at once."""
        channel_id = self.channel(channel_id)
        reason = reason_text(reason)
        row = await self.channel_states.set(channel_id, state.value, operator=operator, reason=reason)
        # this replica at once; the others within [replicas] state_sync_s (gateway/replicas.py)
        self.planner.apply_operator_state(row, f"operator {operator} set {state.value}")
        self.planner.publish_metrics()

    async def adjust_position(self, channel_id: str, delta: int, operator: str, reason: str) -> PositionRow:
        channel_id = self.channel(channel_id)
        delta = v.position_delta(delta)
        reason = reason_text(reason)
        return await self.position_service.adjust(channel_id, delta, operator=operator, reason=reason)

    async def resync_position(self, channel_id: str, operator: str, reason: str) -> PositionRow:
        channel_id = self.channel(channel_id)
        reason = reason_text(reason)
        return await self.position_service.resync(channel_id, operator=operator, reason=reason)

    # --- flows ------------------------------------------------------------------------------

    async def resolve_flow(
        self, flow_no: str, status: FlowStatus, channel_txn_id: str, operator: str, reason: str
    ) -> ResolveOutcome:
        """Decide a PROCESSING flow by hand (maker-checker above ``[security] resolve_approval_above``).

        At most the threshold: resolved now, its FLOW_RESULT event and audit record in one commit.
        Above it: recorded as a pending resolution for an approver (``outcome.pending``).
        """
        flow = await self.flow(flow_no)
        if status not in (FlowStatus.SUCCEEDED, FlowStatus.FAILED):
            raise InvalidInput("status", "must be SUCCEEDED or FAILED")
        reason = reason_text(reason)
        txn = v.text(channel_txn_id, "channel_txn_id", max_len=128)
        return await self.resolutions.resolve(flow, status, txn, reason, operator)

    async def approve_resolution(self, resolution_id: int, approver: str, reason: str) -> tuple[ResolutionRow, FlowRow]:
        """Approve and apply another operator's resolution (never one's own)."""
        reason = scrub(v.text(reason, "reason", max_len=512))
        return await self.resolutions.approve(resolution_id, approver, reason)

    async def reject_resolution(self, resolution_id: int, approver: str, reason: str) -> ResolutionRow:
        return await self.resolutions.reject(resolution_id, approver, reason_text(reason))

    async def requery_flow(self, flow_no: str, operator: str) -> Requeried:
        """Bring forward the query of each open attempt (rate-limited by the poller); audited."""
        flow = await self.flow(flow_no)
        queued = 0
        for attempt in flow.attempts:
            if attempt.status in (AttemptStatus.SENDING, AttemptStatus.PENDING):
                await self.poller.expedite(attempt.id, attempt.channel)
                queued += 1
        await self.audit.record(operator, "requery_flow", flow.flow_no, "re-query", {"queued": queued})
        return Requeried(flow, queued)

    # --- the outbox -------------------------------------------------------------------------

    async def release_parked_events(self, ids: Sequence[int], operator: str, reason: str) -> int:
        """Parked events among ``ids`` go back to the relay for another round of tries (each audited)."""
        if self.outbox is None:
            raise PreconditionFailed("outbox: the relay is not running on this gateway")
        if not ids:
            raise InvalidInput("ids", "select at least one parked event")
        if len(ids) > 500:
            raise InvalidInput("ids", "at most 500 events at once")
        reason = reason_text(reason)
        released = await self.outbox.release_parked(
            ids, max_attempts=self.outbox_max_attempts, operator=operator, reason=reason
        )
        if released:
            self.on_outbox()
        return released
