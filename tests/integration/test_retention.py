"""Retention on MariaDB: old business days of card_usage go, today's counting is untouched."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from functools import partial

import pytest

from gateway.businessday import BusinessCalendar
from gateway.retention import Retention, RetentionConfig
from gateway.store import card_usage
from gateway.store.db import Database
from gateway.store.rows import CardLimit

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 2, 16, 30)  # 3 December in Beijing
TODAY = date(2026, 12, 3)


async def seed(db: Database, days: dict[date, int]) -> None:
    rows = [(f"{i:064d}", "bank-a", day, 1, 100, NOW) for day, n in days.items() for i in range(n)]
    async with db.transaction() as tx:
        await tx.executemany(
            "INSERT INTO card_usage (account_hash, channel, day, attempts, amount, updated_at)"
            " VALUES (%s,%s,%s,%s,%s,%s)",
            rows,
        )
        await tx.commit()


async def per_day(db: Database) -> dict[date, int]:
    rows = await db.fetchall("SELECT day, COUNT(*) AS n FROM card_usage GROUP BY day ORDER BY day")
    return {r["day"]: int(r["n"]) for r in rows}


async def test_days_before_the_retention_are_deleted_in_batches(database: Database) -> None:
    await seed(database, {date(2026, 9, 30): 7, date(2026, 11, 1): 5, date(2026, 11, 2): 3, TODAY: 4})
    calendar = BusinessCalendar.named("Asia/Shanghai")
    retention = Retention(
        RetentionConfig(batch_size=3), calendar, partial(card_usage.prune, database), clock=lambda: NOW
    )
    assert await retention.run_once() == 12
    assert await per_day(database) == {date(2026, 11, 2): 3, TODAY: 4}  # the 31st day back is kept
    assert await retention.run_once() == 0


async def test_the_day_index_serves_the_delete(database: Database) -> None:
    indexes = await database.fetchall("SHOW INDEX FROM card_usage WHERE Key_name = 'ix_card_usage_day'")
    assert [r["Column_name"] for r in indexes] == ["day"]
    await seed(database, {date(2026, 1, d): 50 for d in range(1, 29)})
    await database.fetchall("ANALYZE TABLE card_usage")
    [plan] = await database.fetchall(
        "EXPLAIN SELECT * FROM card_usage WHERE day < %s ORDER BY day LIMIT 10", (date(2026, 1, 3),)
    )
    assert plan["key"] == "ix_card_usage_day", plan


async def test_pruning_while_withholds_count_today(database: Database) -> None:
    """Old days are deleted while concurrent attempts count today's limits: none lost, none refused."""
    await seed(database, {TODAY - timedelta(days=40 + d): 400 for d in range(5)})
    limit = CardLimit(TODAY, max_attempts=1000, max_amount=None)

    async def count(i: int) -> bool:
        async with database.transaction() as tx:
            counted = await card_usage.count(tx, f"{i % 7:064d}", "bank-a", limit, 10, NOW)
            await tx.commit()
        return counted

    async def prune() -> int:
        total = 0
        while deleted := await card_usage.prune(database, TODAY - timedelta(days=31), 50):
            total += deleted
        return total

    pruned, *counted = await asyncio.gather(prune(), *(count(i) for i in range(70)))
    assert pruned == 2000 and all(counted)
    assert await per_day(database) == {TODAY: 7}
    total = await database.fetchone("SELECT SUM(attempts) AS n, SUM(amount) AS a FROM card_usage")
    assert total is not None and (int(total["n"]), int(total["a"])) == (70, 700)
