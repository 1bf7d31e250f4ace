"""Both ``[database] driver`` values against the real server: same connections kept, same errors."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.errors import CountMismatch, DataRefused, DuplicateKey
from gateway.store.db import Database, DatabaseConfig, migrate

DRIVERS = pytest.mark.parametrize("driver", ["aiomysql", "asyncmy"])


@DRIVERS
async def test_units_of_work_ended_in_their_last_statement_keep_their_connection(
    db_config: DatabaseConfig, driver: str
) -> None:
    """asyncmy keeps the "in a transaction" flag of an earlier result after ``…; ROLLBACK`` (its pool then
    closes the connection on release): every way a unit of work ends in its last statement gives the one
    pooled connection back, so the server sees one connection throughout."""
    await migrate(db_config)
    db = Database(replace(db_config, driver=driver, pool_min=1, pool_max=1))  # type: ignore[arg-type]
    await db.start()
    try:
        # read_only: a SELECT of a table (which opens a transaction), then the ROLLBACK in the same round trip
        first = await db.fetchone("SELECT CONNECTION_ID() AS id, COUNT(*) AS n FROM flows")
        assert first is not None
        async with db.transaction() as tx:
            [read] = await tx.script([("SELECT CONNECTION_ID() AS id, COUNT(*) AS n FROM flows", [])], commit=True)
        assert read.rows == [first]
        async with db.transaction() as tx:
            assert await tx.script_commit_if([("UPDATE flows SET version=version+1 WHERE id=%s", [0])], [0]) == [0]
        with pytest.raises(CountMismatch):
            async with db.transaction() as tx:
                await tx.script_commit_if([("UPDATE flows SET version=version+1 WHERE id=%s", [0])], [1])
        assert await db.fetchone("SELECT CONNECTION_ID() AS id, COUNT(*) AS n FROM flows") == first
        assert db.pool.size == 1 and db.pool.freesize == 1
    finally:
        await db.stop()


@DRIVERS
async def test_server_errors_translate_the_same_way(db_config: DatabaseConfig, driver: str) -> None:
    await migrate(db_config)
    db = Database(replace(db_config, driver=driver))  # type: ignore[arg-type]
    await db.start()
    try:
        with pytest.raises(DuplicateKey) as duplicate:
            async with db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ('0001_core', UTC_TIMESTAMP(6))"
                )
        assert duplicate.value.key == "PRIMARY"
        with pytest.raises(DataRefused) as refused:
            async with db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, UTC_TIMESTAMP(6))", ("v" * 129,)
                )
        assert refused.value.code == 1406
        async with db.transaction() as tx:
            assert tx.quote("it's") == "'it\\'s'"
    finally:
        await db.stop()
