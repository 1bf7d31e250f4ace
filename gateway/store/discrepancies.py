"""Discrepancies in MySQL: a channel result that contradicts a recorded one (invariant 4).

Recorded, alerted on and shown to operators; never applied over the recorded
result. :func:`record` writes inside the transition's transaction (at most one
row per attempt, reported status and source: ``INSERT IGNORE`` on its
unique key).
"""

from __future__ import annotations

from datetime import datetime

from gateway.store.db import Database, Tx
from gateway.store.rows import DiscrepancyRow


async def record(
    tx: Tx,
    *,
    flow_id: int,
    attempt_id: int,
    recorded: str,
    reported: str,
    code: str,
    source: str,
    now: datetime,
) -> bool:
    """Record one within ``tx``; False when the same one was already recorded."""
    n = await tx.execute(
        "INSERT IGNORE INTO discrepancies (flow_id, attempt_id, recorded_status, reported_status, reported_code,"
        " source, created_at) VALUES (%s,%s,%s,%s,%s,%s,%s)",
        (flow_id, attempt_id, recorded, reported, code[:64], source, now),
    )
    return n == 1


class MySQLDiscrepancies:
    """Implements :class:`gateway.ports.DiscrepancyLog`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def recent(self, limit: int) -> list[DiscrepancyRow]:
        """The latest ``limit`` discrepancies, newest first, with their flow and order numbers."""
        rows = await self.db.fetchall(
            "SELECT d.*, f.flow_no, a.channel_order_no FROM discrepancies d JOIN flows f ON f.id=d.flow_id"
            " JOIN attempts a ON a.id=d.attempt_id ORDER BY d.id DESC LIMIT %s",
            (limit,),
        )
        return [
            DiscrepancyRow(
                id=int(r["id"]),
                flow_no=r["flow_no"],
                channel_order_no=r["channel_order_no"],
                recorded_status=r["recorded_status"],
                reported_status=r["reported_status"],
                reported_code=r.get("reported_code") or "",
                source=r["source"],
                created_at=r["created_at"],
            )
            for r in rows
        ]
