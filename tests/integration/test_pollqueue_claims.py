"""Poll-queue claiming: concurrent claimers never claim a row twice; leases bring rows back."""

from __future__ import annotations

import asyncio

from gateway.store.db import Database
from gateway.store.poll_queue import claim_due


async def test_concurrent_claimers_partition_the_due_rows(database: Database) -> None:
    async with database.transaction() as tx:
        await tx.execute(
            "INSERT INTO poll_queue (attempt_id, channel, due_at, created_at)"
            " SELECT seq, 'c', UTC_TIMESTAMP(6) - INTERVAL 1 SECOND, UTC_TIMESTAMP(6) FROM seq_1_to_500"
        )
        await tx.execute(
            "INSERT INTO poll_queue (attempt_id, channel, due_at, created_at)"
            " SELECT seq + 1000, 'c', UTC_TIMESTAMP(6) + INTERVAL 1 HOUR, UTC_TIMESTAMP(6) FROM seq_1_to_500"
        )
        await tx.commit()

    async def claimer(name: str) -> list[int]:
        mine: list[int] = []
        while batch := await claim_due(database, owner=name, limit=17, lease_s=60):
            mine += [c.attempt_id for c in batch]
        return mine

    results = await asyncio.gather(*[claimer(f"r{i}") for i in range(5)])
    claimed = [i for r in results for i in r]
    assert sorted(claimed) == list(range(1, 501)), "every due row claimed exactly once, none of the future ones"


async def test_expired_lease_brings_rows_back(database: Database) -> None:
    async with database.transaction() as tx:
        await tx.execute(
            "INSERT INTO poll_queue (attempt_id, channel, due_at, created_at)"
            " VALUES (1, 'c', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))"
        )
        await tx.commit()
    first = await claim_due(database, owner="crashed", limit=10, lease_s=0.3)
    assert [c.attempt_id for c in first] == [1]
    assert await claim_due(database, owner="other", limit=10, lease_s=60) == []
    await asyncio.sleep(0.4)
    again = await claim_due(database, owner="other", limit=10, lease_s=60)
    assert [c.attempt_id for c in again] == [1]


async def test_claim_uses_the_due_index(database: Database) -> None:
    row = await database.fetchone(
        "EXPLAIN SELECT attempt_id FROM poll_queue WHERE due_at <= UTC_TIMESTAMP(6) ORDER BY due_at LIMIT 50"
    )
    assert row is not None and row["key"] == "ix_poll_due", row
