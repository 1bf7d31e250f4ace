"""Channel float (头寸) in MySQL: every statement that touches ``positions`` is in this module.

Read for routing, synced from the channels' balance queries and adjusted by
operators (:class:`MySQLPositionStore`). Reservations are made and settled
inside the flow transactions (:func:`reserve`, :func:`settle`, called by
gateway/store/flows.py) so a payout's float is taken in the same commit that
records its attempt.

``balance_version`` counts every change of ``balance`` (a payout settling, an
operator's adjustment, a sync). A sync takes the row *before* asking the
channel for its balance and writes only if the version is still the one it
read, so a payout that settles between the balance query and the write is
never undone (the use case asks again). A sync never changes a position's
currency: reservations and settlements match on it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from gateway import metrics
from gateway.domain import INT64_MAX
from gateway.errors import BalanceOverflow, BelowReserved, DuplicateKey, PositionMoved
from gateway.store import audit
from gateway.store.db import Database, Tx
from gateway.store.rows import AttemptRow, PositionRow, utcnow

log = logging.getLogger(__name__)

# What the gateway writes in the audit log for changes nobody asked for (a settlement below zero).
SYSTEM_OPERATOR = "paygate"


async def reserve(tx: Tx, *, channel: str, currency: str, amount: int, now: datetime) -> bool:
    """Reserve ``amount`` of the channel's float within ``tx``; False (nothing changed) when less is available."""
    n = await tx.execute(
        "UPDATE positions SET reserved = reserved + %s, updated_at=%s"
        " WHERE channel=%s AND currency=%s AND balance - reserved >= %s",
        (amount, now, channel, currency, amount),
    )
    return n == 1


async def settle(tx: Tx, attempt: AttemptRow, *, succeeded: bool, now: datetime) -> None:
    """Release an attempt's reservation within ``tx``: spent from the balance if it succeeded, else freed.

    A settlement that takes the balance below zero is still written (the channel paid), and
    never silently: an audit record in the same transaction, and after the commit a metric and
    an ERROR log line. That happens when a sync set the balance below what payouts in flight
    had reserved (their money was already gone at the channel, counted twice on purpose).
    """
    if attempt.position_reserved <= 0:
        return
    key = (attempt.channel, attempt.currency)
    if succeeded:
        sql = (
            "UPDATE positions SET balance = balance - %s, reserved = reserved - %s,"
            " balance_version = balance_version + 1, updated_at=%s"
        )
        args: tuple[Any, ...] = (attempt.position_reserved, attempt.position_reserved, now)
    else:
        sql = "UPDATE positions SET reserved = reserved - %s, updated_at=%s"
        args = (attempt.position_reserved, now)
    changed, after = await tx.script(
        [
            (f"{sql} WHERE channel=%s AND currency=%s", (*args, *key)),
            ("SELECT balance FROM positions WHERE channel=%s AND currency=%s", key),
        ]
    )
    if changed.count != 1:
        tx.on_commit(lambda: log.error("payout settled but no position matched", extra=_log_extra(attempt)))
        return
    balance = int(after.rows[0]["balance"])
    if balance >= 0:
        return
    detail = {"balance": balance, "amount": attempt.position_reserved, "channel_order_no": attempt.channel_order_no}
    await audit.record(tx, SYSTEM_OPERATOR, "position_below_zero", attempt.channel, "payout settled below zero", detail)

    def alert() -> None:
        metrics.POSITION_BELOW_ZERO.labels(channel=attempt.channel).inc()
        log.error(
            "payout settlement took the channel's float below zero (%d minor units); resync the position",
            balance,
            extra=_log_extra(attempt),
        )

    tx.on_commit(alert)


def _log_extra(attempt: AttemptRow) -> dict[str, Any]:
    return {"channel": attempt.channel, "channel_order_no": attempt.channel_order_no}


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
        return [PositionRow.from_row(r) for r in await self.db.fetchall("SELECT * FROM positions ORDER BY channel")]

    async def get(self, channel: str) -> PositionRow | None:
        r = await self.db.fetchone("SELECT * FROM positions WHERE channel=%s", (channel,))
        return PositionRow.from_row(r) if r is not None else None

    async def sync(
        self,
        channel: str,
        currency: str,
        balance: int,
        *,
        seen: PositionRow | None,
        operator: str = "",
        reason: str = "",
    ) -> PositionRow:
        """Set the balance from a balance query made after ``seen`` was read; reservations are kept.

        ``seen`` None: the channel had no position; one is created. Raises
        ``PositionMoved`` (nothing written) when the row is no longer the one
        ``seen`` describes: its balance changed (a settlement, an adjustment,
        another sync), it appeared, or its currency is not ``currency``.

        Payouts still pending keep their reservation, so the float they may
        already have consumed at the channel is counted twice rather than never:
        the safe side.
        """
        now = utcnow()
        try:
            async with self.db.transaction() as tx:
                if seen is None:
                    await tx.execute(
                        "INSERT INTO positions (channel, currency, balance, reserved, balance_version, synced_at,"
                        " updated_at) VALUES (%s,%s,%s,0,1,%s,%s)",
                        (channel, currency, balance, now, now),
                    )
                else:
                    n = await tx.execute(
                        "UPDATE positions SET balance=%s, balance_version = balance_version + 1, synced_at=%s,"
                        " updated_at=%s WHERE channel=%s AND currency=%s AND balance_version=%s",
                        (balance, now, now, channel, currency, seen.balance_version),
                    )
                    if n != 1:
                        raise PositionMoved(f"{channel}: the float changed since it was read")
                if operator:
                    await audit.record(tx, operator, "resync_position", channel, reason, {"balance": balance})
                await tx.commit()
        except DuplicateKey:
            raise PositionMoved(f"{channel}: a position was created meanwhile") from None
        row = await self.get(channel)
        assert row is not None
        return row

    async def adjust(self, channel: str, delta: int, operator: str, reason: str) -> PositionRow | None:
        """Add ``delta`` (minor units, signed) to the balance, audited; None when the channel has no position.

        Raises ``BelowReserved`` (nothing written) when a cut would take the balance
        below the float reserved by payouts in flight, ``BalanceOverflow`` when a raise
        would take it beyond int64 (the column's range).
        """
        now = utcnow()
        async with self.db.transaction() as tx:
            row = await tx.fetchone("SELECT * FROM positions WHERE channel=%s FOR UPDATE", (channel,))
            if row is None:
                return None
            current = PositionRow.from_row(row)
            if delta < 0 and current.balance + delta < current.reserved:
                raise BelowReserved(channel, balance=current.balance, delta=delta, reserved=current.reserved)
            if current.balance + delta > INT64_MAX:
                raise BalanceOverflow(channel, balance=current.balance, delta=delta)
            await tx.execute(
                "UPDATE positions SET balance = balance + %s, balance_version = balance_version + 1, updated_at=%s"
                " WHERE channel=%s",
                (delta, now, channel),
            )
            await audit.record(tx, operator, "adjust_position", channel, reason, {"delta": delta})
            await tx.commit()
        return await self.get(channel)
