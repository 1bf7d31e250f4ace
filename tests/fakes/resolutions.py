"""An in-memory :class:`gateway.ports.ResolutionStore` over the fakes' :class:`~tests.fakes.stores.Tables`.

It keeps the MySQL store's contract: one open (PENDING or APPROVED) resolution per flow
(``propose`` answers ``Existing``), decisions are compare-and-set on the status, every write has its
audit row (target: the flow number) in ``Tables.audit``.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from gateway.domain import FlowStatus
from gateway.store.rows import Created, Creation, Existing, FlowRow, ResolutionRow, ResolutionStatus, utcnow
from tests.fakes.stores import Tables

_OPEN = {ResolutionStatus.PENDING, ResolutionStatus.APPROVED}


class FakeResolutions:
    """Implements :class:`gateway.ports.ResolutionStore`."""

    def __init__(self, tables: Tables) -> None:
        self.t = tables
        self.rows: dict[int, ResolutionRow] = {}
        self._ids = itertools.count(1)

    def _current(self, row: ResolutionRow) -> ResolutionRow:
        flow = self.t.flows[row.flow_id]
        return dataclasses.replace(row, flow_status=flow.status)

    def _detail(self, row: ResolutionRow, **more: Any) -> dict[str, Any]:
        return {"resolution_id": row.id, "status": row.target.value, "proposed_by": row.proposed_by, **more}

    async def propose(
        self, flow: FlowRow, target: FlowStatus, channel_txn_id: str, reason: str, operator: str
    ) -> Creation[ResolutionRow]:
        for row in self.rows.values():
            if row.flow_id == flow.id and row.status in _OPEN:
                return Existing(self._current(row))
        stored = self.t.flows[flow.id]
        row = ResolutionRow(
            id=next(self._ids),
            flow_id=flow.id,
            flow_no=stored.flow_no,
            amount=stored.amount,
            currency=stored.currency,
            target=target,
            channel_txn_id=channel_txn_id,
            reason=reason[:512],
            status=ResolutionStatus.PENDING,
            proposed_by=operator,
            proposed_at=utcnow(),
        )
        self.rows[row.id] = row
        self.t.write_audit(operator, "propose_resolution", row.flow_no, reason, self._detail(row))
        return Created(self._current(row))

    async def get(self, resolution_id: int) -> ResolutionRow | None:
        row = self.rows.get(resolution_id)
        return self._current(row) if row is not None else None

    async def decide(
        self,
        row: ResolutionRow,
        to: ResolutionStatus,
        operator: str,
        reason: str,
        *,
        action: str,
        detail: dict[str, Any],
    ) -> ResolutionRow | None:
        stored = self.rows.get(row.id)
        if stored is None or stored.status is not row.status:
            return None
        decided = dataclasses.replace(
            stored, status=to, decided_by=operator, decided_at=utcnow(), decision_reason=reason[:512]
        )
        self.rows[row.id] = decided
        self.t.write_audit(operator, action, row.flow_no, reason, self._detail(decided, **detail))
        return self._current(decided)

    async def list(
        self, *, statuses: frozenset[ResolutionStatus], flow_no: str, after_id: int, limit: int
    ) -> list[ResolutionRow]:
        rows = [
            self._current(r)
            for r in sorted(self.rows.values(), key=lambda r: r.id)
            if r.id > after_id and (not statuses or r.status in statuses) and (not flow_no or r.flow_no == flow_no)
        ]
        return rows[:limit]
