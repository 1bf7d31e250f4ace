"""Reconciliation in MySQL, the reading side: recorded items and their marks, the daily report's
figures, the daily scheduler's claims. Part of :class:`gateway.store.recon.MySQLReconStore`."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from gateway.recon.model import DayFigure, ItemClass, ItemRow, Resolution
from gateway.store import audit
from gateway.store.db import Database
from gateway.store.rows import utcnow


def _item(row: dict[str, Any]) -> ItemRow:
    return ItemRow(
        id=int(row["id"]),
        run_id=int(row["run_id"]),
        channel=row["channel"],
        day=row["day"],
        item_class=ItemClass(row["class"]),
        channel_order_no=row["channel_order_no"],
        flow_no=row["flow_no"],
        operation=row["operation"],
        local_status=row["local_status"],
        local_amount=row["local_amount"],
        local_fee=row["local_fee"],
        line_no=row["line_no"],
        line_status=row["line_status"],
        line_amount=row["line_amount"],
        line_fee=row["line_fee"],
        line_txn_id=row["line_txn_id"],
        resolution=Resolution(row["resolution"]),
        resolved_by=row["resolved_by"],
        resolution_reason=row["resolution_reason"],
        resolved_at=row["resolved_at"],
        created_at=row["created_at"],
    )


class ReconQueries:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- items --------------------------------------------------------------------------------

    async def items(
        self,
        *,
        run_id: int | None = None,
        day: date | None = None,
        channel: str = "",
        open_only: bool = False,
        after_id: int = 0,
        limit: int = 200,
    ) -> list[ItemRow]:
        """Recorded items in id order; without ``run_id``, only those of current (not superseded) runs."""
        where: list[str] = ["i.id > %s"]
        args: list[Any] = [after_id]
        if run_id is not None:
            where.append("i.run_id = %s")
            args.append(run_id)
        else:
            where.append("r.superseded_by IS NULL")
        if day is not None:
            where.append("i.day = %s")
            args.append(day)
        if channel:
            where.append("i.channel = %s")
            args.append(channel)
        if open_only:
            where.append("i.resolution = 'OPEN'")
        rows = await self.db.fetchall(
            f"SELECT i.* FROM recon_items i JOIN recon_runs r ON r.id = i.run_id WHERE {' AND '.join(where)}"
            " ORDER BY i.id LIMIT %s",
            (*args, limit),
        )
        return [_item(r) for r in rows]

    async def item(self, item_id: int) -> ItemRow | None:
        row = await self.db.fetchone("SELECT * FROM recon_items WHERE id=%s", (item_id,))
        return _item(row) if row else None

    async def mark(self, item_id: int, resolution: Resolution, operator: str, reason: str) -> ItemRow | None:
        """Mark an OPEN item explained or resolved, audited, in one commit; None when it is not OPEN."""
        async with self.db.transaction() as tx:
            n = await tx.execute(
                "UPDATE recon_items SET resolution=%s, resolved_by=%s, resolution_reason=%s, resolved_at=%s"
                " WHERE id=%s AND resolution='OPEN'",
                (resolution.value, operator[:64], reason[:500], utcnow(), item_id),
            )
            if n != 1:
                return None
            await audit.record(tx, operator, "recon_mark", f"recon_item:{item_id}", reason, {"resolution": resolution})
            await tx.commit()
        return await self.item(item_id)

    # -- the daily report ---------------------------------------------------------------------

    async def repeated_line(self, run_id: int) -> tuple[str, int, int] | None:
        """The first order number the run's staged lines list twice: (order number, its first two lines)."""
        row = await self.db.fetchone(
            "SELECT channel_order_no, MIN(line_no) AS first FROM recon_lines WHERE run_id=%s"
            " GROUP BY channel_order_no HAVING COUNT(*) > 1 ORDER BY first LIMIT 1",
            (run_id,),
        )
        if row is None:
            return None
        again = await self.db.fetchone(
            "SELECT MIN(line_no) AS line_no FROM recon_lines WHERE run_id=%s AND channel_order_no=%s AND line_no > %s",
            (run_id, row["channel_order_no"], row["first"]),
        )
        assert again is not None
        return str(row["channel_order_no"]), int(row["first"]), int(again["line_no"])

    async def day_figures(self, bounds: tuple[datetime, datetime]) -> list[DayFigure]:
        """Attempts that ended within ``bounds`` by channel and kind: counts, success amount and fees."""
        rows = await self.db.fetchall(
            "SELECT channel, IF(operation='collect', 'withhold', operation) AS kind,"
            " SUM(status='SUCCEEDED') AS ok, SUM(status='FAILED') AS failed,"
            " SUM(IF(status='SUCCEEDED', amount, 0)) AS amount, SUM(IF(status='SUCCEEDED', COALESCE(fee, 0), 0)) AS fee"
            " FROM attempts WHERE finished_at >= %s AND finished_at < %s GROUP BY channel, kind ORDER BY channel, kind",
            bounds,
        )
        return [
            DayFigure(r["channel"], r["kind"], int(r["ok"]), int(r["failed"]), int(r["amount"]), int(r["fee"]))
            for r in rows
        ]

    async def day_discrepancies(self, day: date) -> dict[tuple[str, str], int]:
        """(channel, class) -> count of the discrepancies of ``day``'s current runs."""
        rows = await self.db.fetchall(
            "SELECT i.channel, i.class, COUNT(*) AS n FROM recon_items i JOIN recon_runs r ON r.id = i.run_id"
            " WHERE i.day = %s AND r.superseded_by IS NULL GROUP BY i.channel, i.class",
            (day,),
        )
        return {(r["channel"], r["class"]): int(r["n"]) for r in rows}

    # -- scheduling ---------------------------------------------------------------------------

    async def claim(self, channel: str, day: date, owner: str, *, lease_s: float) -> bool:
        """Claim the scheduled run of (channel, day): True for exactly one caller, whatever the replicas.

        A claim with no run recorded and older than ``lease_s`` (its replica died mid-run) is taken over.
        """
        now = utcnow()
        async with self.db.transaction() as tx:
            n = await tx.execute(
                "INSERT INTO recon_claims (channel, day, owner, claimed_at) VALUES (%s,%s,%s,%s)"
                " ON DUPLICATE KEY UPDATE channel=channel",  # no change (0 rows) when another claimed it
                (channel, day, owner[:64], now),
            )
            if n == 0:
                n = await tx.execute(
                    "UPDATE recon_claims SET owner=%s, claimed_at=%s"
                    " WHERE channel=%s AND day=%s AND run_id IS NULL AND claimed_at < %s",
                    (owner[:64], now, channel, day, now - timedelta(seconds=lease_s)),
                )
            await tx.commit()
        return n == 1

    async def release_claim(self, channel: str, day: date, owner: str) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                "DELETE FROM recon_claims WHERE channel=%s AND day=%s AND owner=%s AND run_id IS NULL",
                (channel, day, owner[:64]),
            )
            await tx.commit()

    async def record_claim_run(self, channel: str, day: date, run_id: int) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE recon_claims SET run_id=%s WHERE channel=%s AND day=%s", (run_id, channel, day))
            await tx.commit()
