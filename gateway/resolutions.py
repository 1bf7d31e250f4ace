"""Resolving flows by hand, with maker-checker above a configured amount.

An operator decides a flow left PROCESSING (in review, or one the channel will not settle). Up to
``[security] resolve_approval_above`` (minor units) that operator's call resolves it. Above it the
call only records a *pending resolution*; a second operator with the approver role applies it::

    ResolveFlow (maker, role >= operator)
        │ amount <= threshold: FlowStore.resolve at once (audited resolve_flow)
        ▼ amount >  threshold: propose (audited propose_resolution)
     PENDING ──RejectResolution (approver)───────────────▶ REJECTED   (audited reject_resolution)
        │ └──the flow finished on its own, seen at approve,
        │    reject or list ──────────────────────────────▶ VOIDED     (audited void_resolution)
        │ ApproveResolution (approver, not the maker): audited approve_resolution
        ▼
     APPROVED ──FlowStore.resolve (audited resolve_flow by the approver, the maker's reason)
        └──the flow had finished in between: nothing applied ──▶ VOIDED (audited void_resolution)

One person cannot approve their own resolution (``SelfApproval``, PERMISSION_DENIED); a flow has at
most one open (PENDING or APPROVED) resolution. Every step writes its audit record in the commit
that makes it, with the flow number as target, so ``ListAuditLog(flow_no=...)`` shows the whole
story. The approval and the resolution are two commits (the resolution goes through the one
audited path, ``FlowStore.resolve``): if the process dies between them, the row stays APPROVED with
the flow PROCESSING, and approving it again applies it.

Roles are checked by the interceptor (gateway/api/access.py); this module checks what depends on
the data: the amount, the maker, the states.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.domain import FlowStatus
from gateway.errors import NotFound, PreconditionFailed, SelfApproval
from gateway.ports import FlowStore, ResolutionStore
from gateway.store.rows import Existing, FlowRow, ResolutionRow, ResolutionStatus

# The actor of what the gateway does by itself (voiding): not a valid operator name, so never one.
SYSTEM = "(paygate)"

OPEN = frozenset({ResolutionStatus.PENDING, ResolutionStatus.APPROVED})


@dataclass(frozen=True)
class ResolveOutcome:
    """What ResolveFlow did: the flow as it is now, and the resolution waiting for approval, if one was recorded."""

    flow: FlowRow
    pending: ResolutionRow | None = None


class ManualResolutions:
    """The maker-checker use cases over the flow store and the resolution store."""

    def __init__(
        self,
        flows: FlowStore,
        resolutions: ResolutionStore,
        *,
        approval_above: int,
        on_resolved: Callable[[], None] = lambda: None,
    ) -> None:
        self.flows = flows
        self.resolutions = resolutions
        self.approval_above = approval_above
        self.on_resolved = on_resolved  # a resolution wrote an outbox row: wake the relay

    def needs_approval(self, flow: FlowRow) -> bool:
        return flow.amount > self.approval_above

    async def resolve(
        self, flow: FlowRow, status: FlowStatus, channel_txn_id: str, reason: str, operator: str
    ) -> ResolveOutcome:
        """Resolve ``flow`` as ``operator`` decided, or record it for approval when the amount needs it."""
        _processing(flow)
        if self.needs_approval(flow):
            created = await self.resolutions.propose(flow, status, channel_txn_id, reason, operator)
            if isinstance(created, Existing):
                open_row = created.row
                raise PreconditionFailed(
                    f"flow_no: resolution {open_row.id} by {open_row.proposed_by} is already"
                    f" {open_row.status.value.lower()}; approve or reject it first"
                )
            return ResolveOutcome(flow, created.row)
        if not await self.flows.resolve(flow, status, operator, reason, channel_txn_id):
            raise PreconditionFailed("flow_no: the flow was resolved concurrently")
        self.on_resolved()
        return ResolveOutcome(await self._fresh(flow.id))

    async def approve(self, resolution_id: int, approver: str, reason: str) -> tuple[ResolutionRow, FlowRow]:
        """Approve and apply another operator's resolution; the resolution and the flow as they are now."""
        row = await self._get(resolution_id)
        if row.proposed_by == approver:
            raise SelfApproval(
                f"resolution_id: {approver} proposed resolution {row.id}; another approver must approve it"
            )
        flow = await self._fresh(row.flow_id)
        if row.status is ResolutionStatus.PENDING:
            if flow.status is not FlowStatus.PROCESSING:
                await self._void(row, flow.status)
                raise PreconditionFailed(
                    f"resolution_id: the flow is already {flow.status.value}; resolution {row.id} was voided"
                )
            decided = await self.resolutions.decide(
                row, ResolutionStatus.APPROVED, approver, reason, action="approve_resolution", detail={}
            )
            if decided is None:
                raise PreconditionFailed(f"resolution_id: resolution {row.id} was decided concurrently")
            row = decided
        elif row.status is not ResolutionStatus.APPROVED or flow.status is not FlowStatus.PROCESSING:
            raise PreconditionFailed(f"resolution_id: resolution {row.id} is already {row.status.value}")
        # APPROVED and the flow still PROCESSING: apply it (also when an earlier approval was cut short)
        applied = await self.flows.resolve(
            flow, row.target, approver, f"{row.reason} [proposed by {row.proposed_by}]", row.channel_txn_id
        )
        if not applied:
            now = await self._fresh(row.flow_id)
            await self._void(row, now.status)
            raise PreconditionFailed(
                f"resolution_id: the flow finished ({now.status.value}) before resolution {row.id} applied; voided"
            )
        self.on_resolved()
        return row, await self._fresh(row.flow_id)

    async def reject(self, resolution_id: int, approver: str, reason: str) -> ResolutionRow:
        """Turn a pending resolution down (nothing applied); one whose flow has finished is voided instead."""
        row = await self._get(resolution_id)
        if row.status is not ResolutionStatus.PENDING:
            raise PreconditionFailed(f"resolution_id: resolution {row.id} is already {row.status.value}")
        if row.flow_status is not FlowStatus.PROCESSING:
            return await self._void(row, row.flow_status)
        decided = await self.resolutions.decide(
            row, ResolutionStatus.REJECTED, approver, reason, action="reject_resolution", detail={}
        )
        if decided is None:
            raise PreconditionFailed(f"resolution_id: resolution {row.id} was decided concurrently")
        return decided

    async def pending(
        self, *, flow_no: str = "", include_decided: bool = False, after_id: int = 0, limit: int = 50
    ) -> tuple[list[ResolutionRow], int | None]:
        """A page of resolutions, oldest first: the open ones (or all), and the id to continue after (None:
        no more). A PENDING one whose flow finished is voided first (and then shown only with the decided)."""
        rows = await self.resolutions.list(
            statuses=frozenset() if include_decided else OPEN, flow_no=flow_no, after_id=after_id, limit=limit + 1
        )
        more = len(rows) > limit
        rows = rows[:limit]
        out = []
        for row in rows:
            if row.status is ResolutionStatus.PENDING and row.flow_status is not FlowStatus.PROCESSING:
                row = await self._void(row, row.flow_status)
                if not include_decided:
                    continue
            out.append(row)
        return out, (rows[-1].id if more else None)

    async def _void(self, row: ResolutionRow, flow_status: FlowStatus) -> ResolutionRow:
        voided = await self.resolutions.decide(
            row,
            ResolutionStatus.VOIDED,
            SYSTEM,
            f"the flow finished as {flow_status.value} before the resolution was applied",
            action="void_resolution",
            detail={"flow_status": flow_status.value},
        )
        if voided is None:  # someone decided it meanwhile: theirs stands
            return await self._get(row.id)
        return voided

    async def _get(self, resolution_id: int) -> ResolutionRow:
        row = await self.resolutions.get(resolution_id)
        if row is None:
            raise NotFound(f"resolution_id: no resolution {resolution_id}")
        return row

    async def _fresh(self, flow_id: int) -> FlowRow:
        flow = await self.flows.by_id(flow_id)
        assert flow is not None  # flows are never deleted
        return flow


def _processing(flow: FlowRow) -> None:
    if flow.status is not FlowStatus.PROCESSING:
        raise PreconditionFailed(f"flow_no: the flow is already {flow.status.value}")
