"""Manual resolutions waiting for a second operator, in MySQL (``pending_resolutions``).

Every write commits with its audit record (target: the flow number, detail: the resolution's id
and what it asks for). One open (PENDING or APPROVED) resolution per flow, held by the unique key
on ``open_flow_id``; a decision is a compare-and-set on ``status``. Applying an approved resolution
is not done here: the use case (gateway/resolutions.py) goes through ``FlowStore.resolve``, the one
audited path that resolves a flow by hand.
"""

from __future__ import annotations

from typing import Any

from gateway.domain import FlowStatus
from gateway.errors import DuplicateKey
from gateway.store import audit
from gateway.store.db import Database
from gateway.store.rows import Created, Creation, Existing, FlowRow, ResolutionRow, ResolutionStatus, utcnow

_SELECT = (
    "SELECT r.*, f.flow_no, f.amount, f.currency, f.status AS flow_status"
    " FROM pending_resolutions r JOIN flows f ON f.id = r.flow_id"
)
# rejected and voided resolutions free their flow for another proposal
_CLOSES = {ResolutionStatus.REJECTED, ResolutionStatus.VOIDED}


def _row(r: dict[str, Any]) -> ResolutionRow:
    return ResolutionRow(
        id=int(r["id"]),
        flow_id=int(r["flow_id"]),
        flow_no=r["flow_no"],
        amount=int(r["amount"]),
        currency=r["currency"],
        target=FlowStatus(r["target_status"]),
        channel_txn_id=r["channel_txn_id"],
        reason=r["reason"],
        status=ResolutionStatus(r["status"]),
        proposed_by=r["proposed_by"],
        proposed_at=r["proposed_at"],
        decided_by=r["decided_by"],
        decided_at=r["decided_at"],
        decision_reason=r["decision_reason"],
        flow_status=FlowStatus(r["flow_status"]),
    )


def _detail(row: ResolutionRow, **more: Any) -> dict[str, Any]:
    return {
        "resolution_id": row.id,
        "status": row.target.value,
        "amount": row.amount,
        "currency": row.currency,
        "proposed_by": row.proposed_by,
        **more,
    }


class MySQLResolutions:
    """Implements :class:`gateway.ports.ResolutionStore`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def propose(
        self, flow: FlowRow, target: FlowStatus, channel_txn_id: str, reason: str, operator: str
    ) -> Creation[ResolutionRow]:
        now = utcnow()
        try:
            async with self.db.transaction() as tx:
                new_id = await tx.insert(
                    "INSERT INTO pending_resolutions (flow_id, target_status, channel_txn_id, reason, status,"
                    " proposed_by, proposed_at, open_flow_id) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                    (flow.id, target.value, channel_txn_id, reason[:512], "PENDING", operator, now, flow.id),
                )
                row = await tx.fetchone(f"{_SELECT} WHERE r.id=%s", (new_id,))
                assert row is not None
                created = _row(row)
                await audit.record(tx, operator, "propose_resolution", flow.flow_no, reason, _detail(created))
                await tx.commit()
        except DuplicateKey as exc:
            if exc.key != "uq_pending_open":
                raise
            existing = await self.db.fetchone(
                f"{_SELECT} WHERE r.open_flow_id=%s",
                (flow.id,),
            )
            if existing is None:  # decided in between: the caller may simply try again
                raise
            return Existing(_row(existing))
        return Created(created)

    async def get(self, resolution_id: int) -> ResolutionRow | None:
        row = await self.db.fetchone(f"{_SELECT} WHERE r.id=%s", (resolution_id,))
        return _row(row) if row is not None else None

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
        now = utcnow()
        async with self.db.transaction() as tx:
            n = await tx.execute(
                "UPDATE pending_resolutions SET status=%s, decided_by=%s, decided_at=%s, decision_reason=%s"
                f"{', open_flow_id=NULL' if to in _CLOSES else ''} WHERE id=%s AND status=%s",
                (to.value, operator, now, reason[:512], row.id, row.status.value),
            )
            if n != 1:
                return None
            await audit.record(tx, operator, action, row.flow_no, reason, _detail(row, **detail))
            fresh = await tx.fetchone(f"{_SELECT} WHERE r.id=%s", (row.id,))
            await tx.commit()
        assert fresh is not None
        return _row(fresh)

    async def list(
        self, *, statuses: frozenset[ResolutionStatus], flow_no: str, after_id: int, limit: int
    ) -> list[ResolutionRow]:
        where: list[str] = ["r.id > %s"]
        args: list[Any] = [after_id]
        if statuses:
            where.append(f"r.status IN ({', '.join(['%s'] * len(statuses))})")
            args += sorted(s.value for s in statuses)
        if flow_no:
            where.append("f.flow_no = %s")
            args.append(flow_no)
        rows = await self.db.fetchall(f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY r.id LIMIT %s", (*args, limit))
        return [_row(r) for r in rows]
