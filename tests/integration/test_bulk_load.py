"""Staging statement lines on real MariaDB: LOAD DATA LOCAL INFILE, and the INSERT fallback.

Both must store every text exactly (quotes, backslashes, tabs, newlines, 中文), refuse what
does not fit as a strict INSERT would (LOCAL implies IGNORE on the server: a value cut or a
duplicate key is only a warning there), and leave nothing of a refused batch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime

import pytest

from channels.contract import Operation
from channels.statement import LineStatus, StatementLine
from gateway.errors import DataRefused, DuplicateKey
from gateway.store.db import Database
from gateway.store.recon import MySQLReconStore

AWKWARD = ["O'Brien", "back\\slash", "tab\there", "new\nline", 'quote"d', "退款-订单", "\\N", "percent%s"]


def line(n: int, order_no: str, *, txn: str = "", currency: str = "CNY") -> StatementLine:
    return StatementLine(
        n,
        order_no,
        Operation.WITHHOLD,
        LineStatus.SUCCEEDED,
        1_000 + n,
        currency,
        n,
        datetime(2026, 3, 5, 1, 2, 3, 250_000 + n),
        txn or f"T{n}",
        "",
    )


@pytest.fixture(params=[True, False], ids=["load_data", "inserts"])
async def db(request: pytest.FixtureRequest, database: Database) -> AsyncIterator[Database]:
    """The test's database, staging with LOAD DATA, or with INSERTs (``[database] bulk_load = false``)."""
    if request.param:
        yield database
        return
    inserts = Database(replace(database.config, bulk_load=False))
    await inserts.start()
    try:
        yield inserts
    finally:
        await inserts.stop()


async def staged(db: Database, run_id: int) -> list[tuple[int, str, int, str, datetime]]:
    rows = await db.fetchall(
        "SELECT line_no, channel_order_no, amount, channel_txn_id, booked_at FROM recon_lines"
        " WHERE run_id=%s ORDER BY line_no",
        (run_id,),
    )
    return [(r["line_no"], r["channel_order_no"], r["amount"], r["channel_txn_id"], r["booked_at"]) for r in rows]


async def run_id(store: MySQLReconStore) -> int:
    run = await store.start_run(
        "bank-x", datetime(2026, 3, 5).date(), trigger="manual", operator="t", format="sandbox", source="f", sha256=""
    )
    return run.id


async def test_every_text_is_staged_exactly(db: Database) -> None:
    store = MySQLReconStore(db)
    rid = await run_id(store)
    lines = [line(i + 1, text, txn=text) for i, text in enumerate(AWKWARD)]
    await store.stage_lines(rid, lines)
    assert db.bulk_loads == (1 if db.config.bulk_load else 0)  # the way it was meant to be staged
    assert await staged(db, rid) == [
        (ln.line_no, ln.channel_order_no, ln.amount, ln.channel_txn_id, ln.booked_at) for ln in lines
    ]


async def test_a_batch_that_does_not_fit_is_refused_whole(db: Database) -> None:
    store = MySQLReconStore(db)
    rid = await run_id(store)
    with pytest.raises(DataRefused):  # an order number longer than the column: the server would cut it
        await store.stage_lines(rid, [line(1, "A1"), line(2, "X" * 65), line(3, "A3")])
    with pytest.raises(DuplicateKey):  # the same (order, line) twice: the server would skip one
        await store.stage_lines(rid, [line(4, "B4"), line(4, "B4")])
    assert await staged(db, rid) == []
    await store.stage_lines(rid, [line(5, "C5")])  # the connection is usable again
    assert [r[1] for r in await staged(db, rid)] == ["C5"]
