"""The plans screen's instalment search uses an index for every shape, and never sorts (EXPLAIN on MariaDB).

The data is bench/console.py's book of plans (the loader the 1,000,000-instalment measurement uses), smaller.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pymysql
import pytest

from bench.console import _connect, explain, instalment_shapes, load_plans
from gateway.store.console_plans import instalment_search_sql
from gateway.store.console_rows import InstalmentQuery
from gateway.store.db import DatabaseConfig, migrate

TODAY = date(2026, 12, 1)
# shape -> the index that must serve it (the first table of the join: the instalments)
EXPECTED = {
    "first visit (due from today)": "ix_instalments_due_date",
    "no filter": "ix_instalments_due_date",
    "plan id": "ix_instalments_plan_due",
    "caller + due from today": "ix_instalments_caller_due",
    "status STOPPED": "ix_instalments_status_due",
    "status IN_FLIGHT": "ix_instalments_status_due",
    "one due day, a month ahead": "ix_instalments_due_date",
    "deep cursor (150 days ahead)": "ix_instalments_due_date",
}


@pytest.fixture(scope="module")
def loaded() -> Iterator[DatabaseConfig]:
    import asyncio

    from tests.support.services import drop_db, new_db_config

    config = new_db_config()
    try:
        asyncio.run(migrate(config))
        load_plans(config, 40_000, TODAY)
        yield config
    finally:
        drop_db(config)


def _plan(config: DatabaseConfig, query: InstalmentQuery) -> list[dict[str, Any]]:
    sql, args = instalment_search_sql(query)
    conn = _connect(config)
    try:
        with conn.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute("EXPLAIN " + sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


@pytest.mark.parametrize("shape", sorted(EXPECTED))
def test_each_instalment_search_uses_its_index_and_no_sort(loaded: DatabaseConfig, shape: str) -> None:
    query, _ = instalment_shapes(TODAY)[shape]
    first = explain(loaded, query)
    assert first["table"] == "i" and first["key"] == EXPECTED[shape], (shape, first)
    assert first["type"] in {"range", "ref", "index"}, (shape, first)
    plan = _plan(loaded, query)
    for row in plan:
        extra = row["Extra"] or ""
        assert "filesort" not in extra and "temporary" not in extra, (shape, plan)
    joined = {row["table"]: row for row in plan[1:]}
    assert joined["p"]["type"] == "eq_ref" and joined["f"]["type"] == "eq_ref", plan  # one lookup per row shown


def test_the_shapes_cover_every_filter() -> None:
    shapes = instalment_shapes(TODAY)
    used = {name for q, _ in shapes.values() for name, value in vars(q).items() if value not in ("", None, 51)}
    assert {"plan_id", "caller", "status", "due_from", "due_to", "after"} <= used
    assert set(shapes) == set(EXPECTED)
