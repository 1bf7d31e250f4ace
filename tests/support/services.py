"""Real services for tests: a throwaway MariaDB database (the tansu broker is :class:`devstack.kafka.KafkaBroker`)."""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass, replace
from typing import Literal

import pymysql

from gateway.store.db import DatabaseConfig, migrate

__all__ = ["drop_db", "migrated", "new_db_config", "with_database"]

MYSQL_HOST = os.environ.get("PAYGATE_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("PAYGATE_TEST_MYSQL_PORT", "3306"))
# the pool's client library for the tests' databases (``[database] driver``): aiomysql or asyncmy
DB_DRIVER: Literal["aiomysql", "asyncmy"] = (
    "asyncmy" if os.environ.get("PAYGATE_TEST_DB_DRIVER") == "asyncmy" else "aiomysql"
)


def new_db_config(prefix: str = "pgtest") -> DatabaseConfig:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    conn.close()
    return DatabaseConfig(host=MYSQL_HOST, port=MYSQL_PORT, database=name, pool_min=1, pool_max=30, driver=DB_DRIVER)


def drop_db(config: DatabaseConfig) -> None:
    conn = pymysql.connect(host=config.host, port=config.port, user="root", password="", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{config.database}`")
    conn.close()


def with_database(config: DatabaseConfig, name: str) -> DatabaseConfig:
    return replace(config, database=name)


@dataclass(frozen=True)
class _Schema:
    tables: list[str]  # SHOW CREATE TABLE of each table of a database the real migrations built
    versions: list[tuple[str, object]]  # its schema_migrations rows


_schema: _Schema | None = None


async def migrated(config: DatabaseConfig) -> None:
    """``config``'s database with every migration applied, as :func:`migrate` leaves it.

    Running the migrations for each test costs a second or two (dozens of ALTERs); the first call
    of a run migrates a throwaway database for real and keeps its tables' ``SHOW CREATE TABLE``,
    later calls create the same tables in an empty database. A database that has tables already
    is migrated the ordinary way.
    """
    global _schema
    if await asyncio.to_thread(_table_count, config) > 0:
        await migrate(config)
        return
    if _schema is None:
        template = new_db_config("pgtpl")
        try:
            await migrate(template)
            _schema = await asyncio.to_thread(_read_schema, template)
        finally:
            drop_db(template)
    await asyncio.to_thread(_create_schema, config, _schema)


def _connect(config: DatabaseConfig) -> pymysql.Connection:  # type: ignore[type-arg]
    return pymysql.connect(
        host=config.host, port=config.port, user="root", password="", database=config.database, autocommit=True
    )


def _table_count(config: DatabaseConfig) -> int:
    conn = _connect(config)
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema=%s", (config.database,))
        (count,) = cur.fetchone()
    conn.close()
    return int(count)


def _read_schema(config: DatabaseConfig) -> _Schema:
    conn = _connect(config)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema=%s ORDER BY table_name",
            (config.database,),
        )
        found = cur.fetchall()
        if any(kind != "BASE TABLE" for _, kind in found):
            raise RuntimeError(f"the migrations made more than tables: {found}; teach tests/support/services.py")
        tables = []
        for name, _ in found:
            cur.execute(f"SHOW CREATE TABLE `{name}`")
            tables.append(str(cur.fetchone()[1]))
        cur.execute("SELECT version, applied_at FROM schema_migrations ORDER BY version")
        versions = [(str(version), applied_at) for version, applied_at in cur.fetchall()]
    conn.close()
    return _Schema(tables, versions)


def _create_schema(config: DatabaseConfig, schema: _Schema) -> None:
    conn = _connect(config)
    with conn.cursor() as cur:
        for statement in schema.tables:
            cur.execute(statement)
        cur.executemany("INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)", schema.versions)
    conn.close()
