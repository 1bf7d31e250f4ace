"""``Tx.script_commit_if``: writes and a COMMIT that happens only when every count is the expected one."""

from __future__ import annotations

import pytest

from gateway.errors import CountMismatch, DuplicateKey
from gateway.store.db import Database


async def _setup(db: Database) -> None:
    async with db.transaction() as tx:
        await tx.execute("CREATE TABLE IF NOT EXISTS checked (id INT PRIMARY KEY, v INT NOT NULL, note VARCHAR(40))")
        await tx.execute("INSERT INTO checked (id, v) VALUES (1, 0), (2, 0)")
        await tx.commit()


async def _rows(db: Database) -> list[tuple[int, int, str | None]]:
    """What another connection sees, i.e. what was committed."""
    async with db.transaction() as tx:
        rows = await tx.fetchall("SELECT id, v, note FROM checked ORDER BY id")
    return [(r["id"], r["v"], r["note"]) for r in rows]


async def test_commits_when_every_count_matches(database: Database) -> None:
    await _setup(database)
    async with database.transaction() as tx:
        counts = await tx.script_commit_if(
            [
                ("UPDATE checked SET v = v + 1 WHERE id IN (%s, %s)", [1, 2]),
                ("INSERT INTO checked (id, v, note) VALUES (%s, %s, %s)", [3, 7, "it's 100%; ok"]),
                ("DELETE FROM checked WHERE id = %s", [99]),
            ],
            [2, 1, None],
        )
        assert tx.committed
    assert counts == [2, 1, 0]
    assert await _rows(database) == [(1, 1, None), (2, 1, None), (3, 7, "it's 100%; ok")]


async def test_a_count_that_differs_rolls_everything_back(database: Database) -> None:
    await _setup(database)
    with pytest.raises(CountMismatch) as caught:
        async with database.transaction() as tx:
            await tx.execute("UPDATE checked SET note = 'before' WHERE id = 2")  # earlier in the same unit of work
            await tx.script_commit_if(
                [
                    ("UPDATE checked SET v = 5 WHERE id = %s", [1]),
                    ("UPDATE checked SET v = 6 WHERE id = %s AND v = %s", [2, 41]),  # matches no row
                ],
                [1, 1],
            )
    assert caught.value.counts == [1, 0]
    assert caught.value.expected == [1, 1]
    assert await _rows(database) == [(1, 0, None), (2, 0, None)]
    # the connection went back to the pool usable, with no transaction left open
    async with database.transaction() as tx:
        assert await tx.script_commit_if([("UPDATE checked SET v = 9 WHERE id = %s", [1])], [1]) == [1]
    assert await _rows(database) == [(1, 9, None), (2, 0, None)]


async def test_the_first_count_that_differs_stops_the_script(database: Database) -> None:
    """A guard that did not hold: the statements after it never run, so an insert behind it cannot collide."""
    await _setup(database)
    with pytest.raises(CountMismatch) as caught:
        async with database.transaction() as tx:
            await tx.script_commit_if(
                [
                    ("UPDATE checked SET v = 6 WHERE id = %s AND v = %s", [2, 41]),  # the guard: matches no row
                    ("INSERT INTO checked (id, v) VALUES (%s, %s)", [1, 0]),  # primary key taken: would raise
                ],
                [1, 1],
            )
    assert caught.value.counts == [0, -1]
    assert await _rows(database) == [(1, 0, None), (2, 0, None)]


async def test_a_failing_statement_raises_and_nothing_commits(database: Database) -> None:
    await _setup(database)
    with pytest.raises(DuplicateKey):
        async with database.transaction() as tx:
            await tx.script_commit_if(
                [
                    ("UPDATE checked SET v = 3 WHERE id = %s", [1]),
                    ("INSERT INTO checked (id, v) VALUES (%s, %s)", [2, 0]),  # primary key taken
                ],
                [1, 1],
            )
    assert await _rows(database) == [(1, 0, None), (2, 0, None)]


async def test_expected_counts_must_match_the_statements(database: Database) -> None:
    async with database.transaction() as tx:
        with pytest.raises(ValueError, match="one expected count per statement"):
            await tx.script_commit_if([("SELECT 1", [])], [1, 1])


async def test_no_statement_after_the_unit_of_work_ended(database: Database) -> None:
    """A statement after COMMIT would open a transaction nobody ends before the connection is pooled."""
    await _setup(database)
    async with database.transaction() as tx:
        await tx.script_commit_if([("UPDATE checked SET v = 1 WHERE id = %s", [1])], [1])
        with pytest.raises(RuntimeError, match="already ended"):
            await tx.execute("UPDATE checked SET v = 2 WHERE id = 2")
    async with database.transaction() as tx:
        await tx.read_only("SELECT v FROM checked WHERE id = %s", [1])
        with pytest.raises(RuntimeError, match="already ended"):
            await tx.execute("UPDATE checked SET v = 3 WHERE id = 2")
    async with database.transaction() as tx:
        await tx.execute("UPDATE checked SET v = 4 WHERE id = 2")
        await tx.commit()
        with pytest.raises(RuntimeError, match="already ended"):
            await tx.commit()
    assert await _rows(database) == [(1, 1, None), (2, 4, None)]
