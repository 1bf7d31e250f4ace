"""Channel float (头寸) in MySQL: every statement that touches ``positions`` is in this module.

Read for routing, synced from the channels' balance queries and adjusted by
operators (:class:`MySQLPositionStore`). Reservations are made and settled
inside the flow transactions (:func:`reserve`, :func:`settle`, called by
gateway/store/flows.py) so a payout's float is taken in the same commit that
records its attempt.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.store import audit
from gateway.store.db import Database, Tx
from gateway.store.rows import AttemptRow, PositionRow, utcnow


async def reserve(tx: Tx, *, channel: str, currency: str, amount: int, now: datetime) -> bool:
    """Reserve ``amount`` of the channel's float within ``tx``; False (nothing changed) when less is available."""
    n = await tx.execute(
        "UPDATE positions SET reserved = reserved + %s, updated_at=%s"
        " WHERE channel=%s AND currency=%s AND balance - reserved >= %s",
        (amount, now, channel, currency, amount),
    )
    return n == 1


async def settle(tx: Tx, attempt: AttemptRow, *, succeeded: bool, now: datetime) -> None:
    """Release an attempt's reservation within ``tx``: spent from the balance if it succeeded, else freed."""
    if attempt.position_reserved <= 0:
        return
    if succeeded:
        sql = "UPDATE positions SET balance = balance - %s, reserved = reserved - %s, updated_at=%s"
        args: tuple[Any, ...] = (attempt.position_reserved, attempt.position_reserved, now)
    else:
        sql = "UPDATE positions SET reserved = reserved - %s, updated_at=%s"
        args = (attempt.position_reserved, now)
    await tx.execute(f"{sql} WHERE channel=%s AND currency=%s", (*args, attempt.channel, attempt.currency))


class MySQLPositionStore:
    """Implements :class:`gateway.ports.PositionStore`."""

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
                await audit.record(tx, operator, "resync_position", channel, reason, {"balance": balance})
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
            await audit.record(tx, operator, "adjust_position", channel, reason, {"delta": delta})
            await tx.commit()
        return await self.get(channel)
