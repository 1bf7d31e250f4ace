"""Per-card daily usage in MySQL: every statement that touches ``card_usage`` is in this module.

One row per card (its keyed account hash), channel and business day: how many
attempts the card made on the channel that day and for how much. An attempt
on a channel with per-card daily limits counts itself in the commit that
records it (:func:`count`, called by gateway/store/flows.py) with a
conditional UPDATE on the row, so two concurrent withholds on one card are
serialized by the row lock (taken exclusive from the first statement, so they
queue rather than deadlock) and the second is refused when the first used up
the limit; the router's pre-filter reads the same rows (:func:`usage`).
The day is the lender's business day, decided by the caller
(:class:`gateway.businessday.BusinessCalendar`), never a UTC date. Rows of past
days only serve reports: :func:`prune` deletes those older than the retention
(gateway/retention.py), oldest first, in batches.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from gateway.store.db import Database, Tx
from gateway.store.rows import CardLimit


async def count(tx: Tx, account_hash: str, channel: str, limit: CardLimit, amount: int, now: datetime) -> bool:
    """Count one attempt of ``amount`` against the card's limits on ``channel`` for ``limit.day``, within ``tx``.

    False (nothing counted) when the card already made ``limit.max_attempts`` attempts that
    day, or ``amount`` does not fit in what is left of ``limit.max_amount``.
    """
    key = (account_hash, channel, limit.day)
    guards, args = [], []
    if limit.max_attempts is not None:
        guards.append(" AND attempts < %s")
        args.append(limit.max_attempts)
    if limit.max_amount is not None:
        guards.append(" AND amount <= %s - %s")  # never overflows: both sides are bounded amounts
        args += [limit.max_amount, amount]
    _, counted = await tx.script(
        [
            (
                # not INSERT IGNORE: on an existing row that takes a shared lock, and two withholds
                # holding it both wait to upgrade it for the UPDATE (a deadlock); ON DUPLICATE KEY
                # UPDATE takes the exclusive lock at once, so the withholds on one card queue instead
                "INSERT INTO card_usage (account_hash, channel, day, attempts, amount, updated_at)"
                " VALUES (%s,%s,%s,0,0,%s) ON DUPLICATE KEY UPDATE attempts = attempts",
                (*key, now),
            ),
            (
                "UPDATE card_usage SET attempts = attempts + 1, amount = amount + %s, updated_at=%s"
                " WHERE account_hash=%s AND channel=%s AND day=%s" + "".join(guards),
                (amount, now, *key, *args),
            ),
        ]
    )
    return counted.count == 1


async def usage(db: Database, account_hash: str, day: date) -> dict[str, tuple[int, int]]:
    """channel -> (attempts, amount) of the card on ``day``, on the channels that count it (those with limits)."""
    rows: list[dict[str, Any]] = await db.fetchall(
        "SELECT channel, attempts, amount FROM card_usage WHERE account_hash=%s AND day=%s", (account_hash, day)
    )
    return {r["channel"]: (int(r["attempts"]), int(r["amount"])) for r in rows}


async def prune(db: Database, before: date, limit: int) -> int:
    """Delete up to ``limit`` rows of business days before ``before``, oldest first; how many.

    One short transaction per call (``ix_card_usage_day``): the locks it takes cover only days
    before ``before``, never today's rows that withholds are counting in.
    """
    async with db.transaction() as tx:
        deleted = await tx.execute("DELETE FROM card_usage WHERE day < %s ORDER BY day LIMIT %s", (before, limit))
        await tx.commit()
    return deleted
