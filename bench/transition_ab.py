"""The response's transition with and without the rows its request recorded, interleaved per flow.

``python -m bench.transition_ab --database NAME --flows 400``

One process, one pool, one store with group commit (what ``paygate serve``
uses): each flow is created, then its SUCCEEDED response applied either the
old way (the attempt and flow read under their row locks, then the checked
commit: two round trips) or with ``known`` rows (the checked commit alone),
alternating A B A B so that the shared machine moves both alike. Prints the
p50 of each and, over chunks of 20 pairs, the median of the B/A ratios with
their spread; the last line::

    transition_ab: locked_p50_ms=<m> known_p50_ms=<m> ratio=<median> spread=<lo>-<hi> chunks=<n> loadavg=<1 min>

The database is created and migrated if needed; its flows stay (use a scratch database).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import warnings

import pymysql

from bench.stages import Paired
from channels.contract import Outcome, OutcomeStatus
from gateway.domain import FlowKind
from gateway.store.db import Database, DatabaseConfig, migrate
from gateway.store.flows import MySQLFlowStore
from gateway.store.rows import Created, NewAttempt, NewFlow, Source

OK = Outcome(OutcomeStatus.SUCCEEDED, "OK", raw_code="0000", channel_txn_id="txn")
CHUNK = 20


async def one(store: MySQLFlowStore, request_id: str, known: bool) -> float:
    """Create a flow, then time its response's transition (ms)."""
    new = NewFlow(
        "bench", request_id, FlowKind.WITHHOLD, 1000, "CNY", f"h-{request_id}", "acct", "6222****1234", "ICBC"
    )
    creation = await store.create(new, NewAttempt("sandbox", "withhold"))
    assert isinstance(creation, Created)
    flow = creation.row
    attempt = flow.attempts[0]
    started = time.perf_counter()
    result = await store.apply_outcome(attempt.id, OK, Source.RESPONSE, known=(attempt, flow) if known else None)
    elapsed = (time.perf_counter() - started) * 1000
    assert result.flow_finished
    return elapsed


async def run(database: str, flows: int) -> tuple[list[float], list[float]]:
    config = DatabaseConfig(database=database)
    await migrate(config)
    db = Database(config)
    await db.start()
    store = MySQLFlowStore(db)
    locked: list[float] = []
    known: list[float] = []
    prefix = f"tab-{time.time_ns()}"
    try:
        for i in range(flows):
            order = (False, True) if i % 2 == 0 else (True, False)
            for use_known in order:
                elapsed = await one(store, f"{prefix}-{i}-{int(use_known)}", use_known)
                (known if use_known else locked).append(elapsed)
    finally:
        await db.stop()
    return locked, known


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.transition_ab", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--database", default="paygate_transition_ab")
    p.add_argument("--flows", type=int, default=400, help="pairs (each: one flow per side)")
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=pymysql.Warning)
    locked, known = asyncio.run(run(a.database, max(a.flows, CHUNK)))
    chunks = [
        statistics.median(known[i : i + CHUNK]) / statistics.median(locked[i : i + CHUNK])
        for i in range(0, len(locked) - CHUNK + 1, CHUNK)
    ]
    paired = Paired(tuple(chunks))
    print(f"transition_ab: known/locked per chunk of {CHUNK} pairs: {paired.describe()}")
    print(
        f"transition_ab: locked_p50_ms={statistics.median(locked):.3f} known_p50_ms={statistics.median(known):.3f}"
        f" ratio={paired.median:.3f} spread={paired.low:.3f}-{paired.high:.3f} chunks={len(chunks)}"
        f" loadavg={os.getloadavg()[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
