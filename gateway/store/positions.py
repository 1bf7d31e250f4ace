"""Channel float (头寸) and per-card usage, read for routing and changed by operators.

Reservations themselves are made and settled inside the flow transactions
(gateway/store/flows.py) so a payout's float is taken in the same commit that
records its attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.store.db import Database
from gateway.store.flows import FlowStore, utcnow


@dataclass(frozen=True)
class PositionRow:
    channel: str
    currency: str
    balance: int
    reserved: int
    synced_at: datetime | None

    @property
    def available(self) -> int:
        return self.balance - self.reserved


class PositionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def available(self, currency: str) -> dict[str, int]:
        rows = await self.db.fetchall(
            "SELECT channel, balance - reserved AS available FROM positions WHERE currency=%s", (currency,)
        )
        return {r["channel"]: int(r["available"]) for r in rows}

    async def all(self) -> list[PositionRow]:
        rows = await self.db.fetchall("SELECT * FROM positions ORDER BY channel")
        return [
            PositionRow(r["channel"], r["currency"], int(r["balance"]), int(r["reserved"]), r["synced_at"])
            for r in rows
        ]

    async def get(self, channel: str) -> PositionRow | None:
        r = await self.db.fetchone("SELECT * FROM positions WHERE channel=%s", (channel,))
        if r is None:
            return None
        return PositionRow(r["channel"], r["currency"], int(r["balance"]), int(r["reserved"]), r["synced_at"])

    async def sync(
        self, channel: str, currency: str, balance: int, *, operator: str = "", reason: str = ""
    ) -> PositionRow:
        """Set the balance from the channel's balance query; reservations are kept.

        Payouts still pending keep their reservation, so the float they may
        already have consumed at the channel is counted twice rather than never:
        the safe side.
        """
        now = utcnow()
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO positions (channel, currency, balance, reserved, synced_at, updated_at)"
                " VALUES (%s,%s,%s,0,%s,%s) ON DUPLICATE KEY UPDATE balance=VALUES(balance),"
                " currency=VALUES(currency), synced_at=VALUES(synced_at), updated_at=VALUES(updated_at)",
                (channel, currency, balance, now, now),
            )
            if operator:
                await FlowStore.audit(tx, operator, "resync_position", channel, reason, {"balance": balance})
            await tx.commit()
        row = await self.get(channel)
        assert row is not None
        return row

    async def adjust(self, channel: str, delta: int, operator: str, reason: str) -> PositionRow | None:
        now = utcnow()
        async with self.db.transaction() as tx:
            n = await tx.execute(
                "UPDATE positions SET balance = balance + %s, updated_at=%s WHERE channel=%s AND balance + %s >= 0",
                (delta, now, channel, delta),
            )
            if n != 1:
                return None
            await FlowStore.audit(tx, operator, "adjust_position", channel, reason, {"delta": delta})
            await tx.commit()
        return await self.get(channel)

    async def card_usage_today(self, account_hash: str) -> dict[str, tuple[int, int]]:
        """channel -> (attempts, amount) for this card since 00:00 UTC today."""
        start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        rows: list[dict[str, Any]] = await self.db.fetchall(
            "SELECT channel, COUNT(*) AS n, COALESCE(SUM(amount),0) AS total FROM attempts"
            " WHERE account_hash=%s AND created_at >= %s GROUP BY channel",
            (account_hash, start),
        )
        return {r["channel"]: (int(r["n"]), int(r["total"])) for r in rows}
