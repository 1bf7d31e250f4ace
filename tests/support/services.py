"""Real services for tests: a throwaway MariaDB database (the tansu broker is :class:`devstack.kafka.KafkaBroker`)."""

from __future__ import annotations

import os
import uuid
from dataclasses import replace

import pymysql

from gateway.store.db import DatabaseConfig

__all__ = ["drop_db", "new_db_config", "with_database"]

MYSQL_HOST = os.environ.get("PAYGATE_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("PAYGATE_TEST_MYSQL_PORT", "3306"))


def new_db_config(prefix: str = "pgtest") -> DatabaseConfig:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    conn.close()
    return DatabaseConfig(host=MYSQL_HOST, port=MYSQL_PORT, database=name, pool_min=1, pool_max=30)


def drop_db(config: DatabaseConfig) -> None:
    conn = pymysql.connect(host=config.host, port=config.port, user="root", password="", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{config.database}`")
    conn.close()


def with_database(config: DatabaseConfig, name: str) -> DatabaseConfig:
    return replace(config, database=name)
