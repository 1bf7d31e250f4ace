from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from channels.config import collect_secrets
from devstack.kafka import KafkaBroker
from gateway.store.db import Database, DatabaseConfig
from tests.support.secret_watch import LogText, configured_secrets, find_leaks, process_logs
from tests.support.services import drop_db, migrated, new_db_config


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The whole run's log, in this process and in the gateway processes' log files, holds no configured
    secret (tests/support/secret_watch.py). Fails at the end of the run, naming where, not the secret."""
    root = logging.getLogger()
    level = root.level
    text = LogText()
    root.addHandler(text)
    root.setLevel(min(level or logging.WARNING, logging.INFO))  # the gateway logs at INFO in production
    with collect_secrets() as secrets:
        try:
            yield
        finally:
            root.removeHandler(text)
            root.setLevel(level)
            base = tmp_path_factory.getbasetemp()
            configured_secrets(base)
    leaks = find_leaks([*text.lines, *process_logs(base)], secrets)
    if leaks:
        pytest.fail("secrets in the log:\n" + "\n".join(str(leak) for leak in leaks[:20]), pytrace=False)


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
    await migrated(db_config)
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
