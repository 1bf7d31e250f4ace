"""What the router learns from recorded attempts, read from MySQL.

Definite results of recent attempts (the router's warm start at start-up, and
what other replicas recorded since), read from ``attempts``, and one card's
usage on a business day (per-card limits), read from the counters of
gateway/store/card_usage.py.
"""

from __future__ import annotations

from datetime import date, datetime

from gateway.domain import AttemptStatus
from gateway.store import card_usage
from gateway.store.db import Database
from gateway.store.rows import FinishedAttempt


class MySQLObservations:
    """Implements :class:`gateway.ports.ObservationStore`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def finished_since(self, since: datetime, *, limit: int = 200_000) -> list[FinishedAttempt]:
        """SUCCEEDED / FAILED attempts finished at or after ``since``, oldest first; operator resolutions excluded.

        Serves the router's warm start and, every ``[replicas] evidence_sync_s``,
        each replica's folding in of what the others recorded (``ix_attempts_finished``).
        """
        rows = await self.db.fetchall(
            "SELECT channel_order_no, channel, operation, bank_code, status, payer_attributable, created_at,"
            " finished_at FROM attempts"
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
                channel_order_no=r["channel_order_no"],
                sent_at=r["created_at"],
            )
            for r in rows
        ]

    async def card_usage(self, account_hash: str, day: date) -> dict[str, tuple[int, int]]:
        """channel -> (attempts, amount) for this card on the business day ``day`` (channels with limits)."""
        return await card_usage.usage(self.db, account_hash, day)
