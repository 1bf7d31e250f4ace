"""bench/bigtable.py: the seeded big tables keep the migrated schema, and an interrupted seed is finished."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pymysql
import pytest

from bench.bigtable import TABLES, drop_secondary, restore_secondary, seed, shape
from gateway.store.db import DatabaseConfig, migrate
from tests.support.services import drop_db, new_db_config


@pytest.fixture
def scratch() -> Iterator[tuple[DatabaseConfig, DatabaseConfig]]:
    """Two fresh databases: one to seed, one only migrated (the schema to compare with)."""
    seeded, reference = new_db_config("paygate_test_big"), new_db_config("paygate_test_ref")
    try:
        yield seeded, reference
    finally:
        drop_db(seeded)
        drop_db(reference)


def _cursor(database: str) -> pymysql.cursors.Cursor:
    return pymysql.connect(host="127.0.0.1", user="root", password="", db=database, autocommit=True).cursor()


def _rows(cur: pymysql.cursors.Cursor, sql: str) -> tuple[object, ...]:
    cur.execute(sql)
    row = cur.fetchone()
    assert row is not None
    return tuple(row)


async def test_seeded_tables_have_the_migrated_schema_and_resume(
    scratch: tuple[DatabaseConfig, DatabaseConfig],
) -> None:
    big, ref = scratch
    await migrate(ref)
    started = time.monotonic()
    assert await seed(big.database, 12_000, 60.0, say=lambda _: None, flush_wait_s=0) == 12_000
    assert (
        await seed(big.database, 20_000, 60.0, say=lambda _: None, flush_wait_s=0) == 20_000
    )  # resumes where it stopped
    assert time.monotonic() - started < 20
    cur, want = _cursor(big.database), _cursor(ref.database)
    for table in TABLES:
        assert shape(cur, table) == shape(want, table), table
    assert _rows(
        cur,
        "SELECT COUNT(*), COUNT(DISTINCT flow_no), MIN(flow_no) LIKE '00%', MAX(flow_no) LIKE '00%'"
        " FROM flows WHERE caller='seed'",
    ) == (20_000, 20_000, 1, 1)
    assert _rows(cur, "SELECT COUNT(*) FROM flows") == (20_000,)
    assert _rows(cur, "SELECT COUNT(*), SUM(status='FAILED') FROM flows") == (20_000, 2_000)
    # microseconds on both ends: the newest seeded row is created "now", within the current second
    one_year = "created_at BETWEEN UTC_TIMESTAMP(6) - INTERVAL 366 DAY AND UTC_TIMESTAMP(6)"
    assert _rows(cur, f"SELECT COUNT(*) FROM flows WHERE {one_year} AND finished_at = created_at") == (20_000,)
    assert _rows(cur, "SELECT DATEDIFF(MAX(created_at), MIN(created_at)) > 300 FROM flows") == (1,)
    # every flow has its attempt and its published result event, joined by id
    assert _rows(
        cur,
        "SELECT COUNT(*) FROM flows f JOIN attempts a ON a.flow_id = f.id AND a.seq = 1 AND a.status = f.status"
        " AND a.amount = f.amount AND a.account_hash = f.account_hash"
        " JOIN outbox o ON o.flow_id = f.id AND o.event_id = f.flow_no AND o.published_at IS NOT NULL",
    ) == (20_000,)
    assert _rows(cur, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL") == (0,)


async def test_a_seed_interrupted_without_its_indexes_is_finished(
    scratch: tuple[DatabaseConfig, DatabaseConfig],
) -> None:
    big, ref = scratch
    await migrate(ref)
    assert await seed(big.database, 5_000, 60.0, say=lambda _: None, flush_wait_s=0) == 5_000
    cur, want = _cursor(big.database), _cursor(ref.database)
    wanted = {t: shape(want, t) for t in TABLES}
    drop_secondary(cur, lambda _: None)  # as a seed killed while loading leaves it
    cur.execute("ALTER TABLE flows ADD KEY `ix_flows_amount` (`amount`)")  # ... or with some of them back
    cur.execute("ALTER TABLE outbox ADD KEY `ix_outbox_flow` (`flow_id`)")  # ... or one not as migrated
    for table in TABLES:
        assert shape(cur, table) != wanted[table], table
    assert await seed(big.database, 5_000, 60.0, say=lambda _: None, flush_wait_s=0) == 5_000
    for table in TABLES:
        assert shape(cur, table) == wanted[table], table


async def test_a_schema_it_cannot_restore_is_refused(scratch: tuple[DatabaseConfig, DatabaseConfig]) -> None:
    big, ref = scratch
    await migrate(ref)
    assert await seed(big.database, 1_000, 60.0, say=lambda _: None, flush_wait_s=0) == 1_000
    cur, want = _cursor(big.database), _cursor(ref.database)
    cur.execute("ALTER TABLE outbox MODIFY last_error VARCHAR(200) NOT NULL DEFAULT ''")  # not the indexes' to mend
    with pytest.raises(RuntimeError, match="outbox differ"):
        restore_secondary(cur, {t: shape(want, t) for t in TABLES}, lambda _: None)
    with pytest.raises(RuntimeError, match="outbox differ"):
        await seed(big.database, 1_000, 0.0, say=lambda _: None, flush_wait_s=0)
