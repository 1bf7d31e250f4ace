"""A unit of work cancelled at any point never leaks its connection, and the cancellation is never lost."""

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

    # Cancellations land everywhere: acquiring (including opening a new connection, where
    # Python 3.11's wait_for inside aiomysql used to swallow them), querying, rolling back.
    for _ in range(5):
        for delay in [i * 0.0003 for i in range(60)]:
            task = asyncio.create_task(busy())
            await asyncio.sleep(delay)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=5)
            assert done, f"a cancellation {delay * 1000:.1f} ms into the loop was lost: the task kept running"
            assert task.cancelled()
    assert len(db.pool._used) == 0
    await asyncio.wait_for(db.stop(), timeout=10)
