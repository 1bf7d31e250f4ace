from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from devstack.kafka import KafkaBroker
from gateway.store.db import Database, DatabaseConfig, migrate
from tests.support.services import drop_db, new_db_config


@pytest.fixture
def db_config() -> Iterator[DatabaseConfig]:
    """A fresh, empty MariaDB database for one test (dropped afterwards)."""
    config = new_db_config()
    try:
        yield config
    finally:
        drop_db(config)


@pytest.fixture
async def database(db_config: DatabaseConfig) -> AsyncIterator[Database]:
    """A migrated database with a started pool."""
    await migrate(db_config)
    db = Database(db_config)
    await db.start()
    try:
        yield db
    finally:
        await db.stop()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """One tansu broker for the test session (in-memory storage)."""
    broker = KafkaBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
