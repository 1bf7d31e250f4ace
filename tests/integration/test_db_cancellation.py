"""A unit of work cancelled at any point never leaks its connection (the pool still closes)."""

from __future__ import annotations

import asyncio

from gateway.store.db import Database, DatabaseConfig, migrate


async def test_cancellation_never_leaks_connections(db_config: DatabaseConfig) -> None:
    await migrate(db_config)
    db = Database(db_config)
    await db.start()

    async def busy() -> None:
        while True:
            async with db.transaction() as tx:
                await tx.fetchone("SELECT COUNT(*) AS n FROM flows")

    for delay in [i * 0.0003 for i in range(60)]:
        task = asyncio.create_task(busy())
        await asyncio.sleep(delay)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(db.pool._used) == 0
    await asyncio.wait_for(db.stop(), timeout=10)
