"""The console's flow search uses an index for every shape, and never sorts (EXPLAIN on MariaDB).

The data is bench/console.py's (the same loader the 1,000,000-flow measurement uses), smaller.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.console import explain, load, search_shapes
from gateway.store.db import DatabaseConfig, migrate

# shape -> the index that must serve it
EXPECTED = {
    "no filter (page 1)": "ix_flows_created",
    "no filter, 30 days back (deep cursor)": "ix_flows_created",
    "flow number": "uq_flows_flow_no",
    "request id": "ix_flows_request",
    "caller": "ix_flows_caller_created",
    "channel": "ix_flows_channel_created",
    "status PROCESSING": "ix_flows_status_created",
    "status FAILED + channel": {"ix_flows_status_created", "ix_flows_channel_created"},
    "kind REFUND": "ix_flows_created",
    "needs review": "ix_flows_review",
    "date range (one day, a month ago)": "ix_flows_created",
    "caller + date range (last 7 days)": "ix_flows_caller_created",
    "amount range": "ix_flows_created",
    "amount range + kind + date range": "ix_flows_amount",
}
# these match one row or a handful (a narrow amount range: a few thousand of a million): sorting them costs little
MAY_SORT = {"flow number", "request id", "needs review", "amount range + kind + date range"}


@pytest.fixture(scope="module")
def loaded() -> Iterator[DatabaseConfig]:
    import asyncio

    from tests.support.services import drop_db, new_db_config

    config = new_db_config()
    try:
        asyncio.run(migrate(config))
        load(config, 40_000)
        yield config
    finally:
        drop_db(config)


@pytest.mark.parametrize("shape", sorted(EXPECTED))
def test_each_search_uses_its_index_and_no_sort(loaded: DatabaseConfig, shape: str) -> None:
    query = search_shapes(loaded)[shape]
    row = explain(loaded, query)
    expected = EXPECTED[shape]
    allowed = expected if isinstance(expected, set) else {expected}
    assert row["key"] in allowed, (shape, row)
    assert row["type"] in {"range", "ref", "index", "const", "eq_ref"}, (shape, row)
    if shape not in MAY_SORT:
        assert "filesort" not in (row["Extra"] or ""), (shape, row)


def test_the_shapes_cover_every_filter(loaded: DatabaseConfig) -> None:
    shapes = search_shapes(loaded)
    used = {name for q in shapes.values() for name, value in vars(q).items() if value not in ("", None, False, 51)}
    assert {
        "flow_no",
        "request_id",
        "caller",
        "kind",
        "status",
        "channel",
        "min_amount",
        "max_amount",
        "created_from",
        "created_to",
        "needs_review",
        "after",
    } <= used
    assert set(shapes) == set(EXPECTED)
