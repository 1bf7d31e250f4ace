"""What the router learns from recorded attempts, read from MySQL.

Definite results of recent attempts (the router's warm start at start-up) and
one card's attempts today (per-card limits). Both read ``attempts`` only.
"""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.domain import AttemptStatus
from gateway.store.db import Database
from gateway.store.rows import FinishedAttempt


class MySQLObservations:
    """Implements :class:`gateway.ports.ObservationStore`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def finished_since(self, since: datetime, *, limit: int = 200_000) -> list[FinishedAttempt]:
        """SUCCEEDED / FAILED attempts finished at or after ``since``, oldest first; operator resolutions excluded."""
        rows = await self.db.fetchall(
            "SELECT channel, operation, bank_code, status, payer_attributable, finished_at FROM attempts"
            " WHERE finished_at >= %s AND status IN ('SUCCEEDED','FAILED') AND raw_code <> 'MANUAL'"
            " ORDER BY finished_at LIMIT %s",
            (since, limit),
        )
        return [
            FinishedAttempt(
                channel=r["channel"],
                operation=r["operation"],
                bank_code=r["bank_code"],
                status=AttemptStatus(r["status"]),
                payer_attributable=bool(r["payer_attributable"]),
                finished_at=r["finished_at"],
            )
            for r in rows
        ]

    async def card_usage_today(self, account_hash: str) -> dict[str, tuple[int, int]]:
        """channel -> (attempts, amount) for this card since 00:00 UTC today."""
        start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        rows = await self.db.fetchall(
            "SELECT channel, COUNT(*) AS n, COALESCE(SUM(amount),0) AS total FROM attempts"
            " WHERE account_hash=%s AND created_at >= %s GROUP BY channel",
            (account_hash, start),
        )
        return {r["channel"]: (int(r["n"]), int(r["total"])) for r in rows}
