from gateway.store.db import Database, DatabaseConfig, migrate


async def test_migrate_is_idempotent(db_config: DatabaseConfig) -> None:
    first = await migrate(db_config)
    assert first, "the first run applies the migrations"
    assert await migrate(db_config) == []
    async with Database(db_config) as db:
        row = await db.fetchone("SELECT COUNT(*) AS n FROM schema_migrations")
        assert row is not None and row["n"] == len(first)
