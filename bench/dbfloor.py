"""The database floor: the request path's two transactions straight through aiomysql, nothing else.

``python -m bench.dbfloor --database NAME --writers 64 --seconds 10``

Each writer loops: insert a flow and its attempt, commit; then update the
attempt and the flow and insert the FLOW_RESULT outbox row, commit. The same
pool (:class:`gateway.store.db.Database`, same size as the gateway's) and the
same durability settings as the gateway. Prints JSON: pairs completed inside
the window, commits, seconds, and the CPU seconds this process and MariaDB
spent inside the window (``cpu_s``). The database must exist and be migrated; use a
database no relay is reading, so these outbox rows stay put.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable

from bench.procstat import cpu_over_window, pid_of
from gateway.domain import channel_order_no, new_ulid
from gateway.store.db import Database, DatabaseConfig

MAX_SECONDS = 600.0


async def one_pair(db: Database, prefix: str, seq: int) -> None:
    flow_no = new_ulid()
    amount = 10_000 + seq % 5_000
    async with db.transaction() as tx:
        flow_id = await tx.insert(
            "INSERT INTO flows (flow_no, caller, request_id, kind, amount, currency, request_hash, status,"
            " created_at, updated_at) VALUES (%s,'dbfloor',%s,'WITHHOLD',%s,'CNY',%s,'PROCESSING',"
            " UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
            (flow_no, f"{prefix}-{seq}", amount, flow_no.lower()),
        )
        attempt_id = await tx.insert(
            "INSERT INTO attempts (flow_id, seq, channel, operation, channel_order_no, status, amount, currency,"
            " created_at, updated_at) VALUES (%s,1,'sandbox','WITHHOLD',%s,'SENDING',%s,'CNY',"
            " UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
            (flow_id, channel_order_no(flow_no, 1), amount),
        )
        await tx.commit()
    async with db.transaction() as tx:
        await tx.execute(
            "UPDATE attempts SET status='SUCCEEDED', code='OK', finished_at=UTC_TIMESTAMP(6),"
            " updated_at=UTC_TIMESTAMP(6), version=version+1 WHERE id=%s AND status='SENDING'",
            (attempt_id,),
        )
        await tx.execute(
            "UPDATE flows SET status='SUCCEEDED', channel='sandbox', finished_at=UTC_TIMESTAMP(6),"
            " updated_at=UTC_TIMESTAMP(6), version=version+1 WHERE id=%s AND status='PROCESSING'",
            (flow_id,),
        )
        await tx.execute(
            "INSERT INTO outbox (event_id, event_type, flow_id, caller, msg_key, payload, created_at, dedupe_key)"
            " VALUES (%s,'FLOW_RESULT',%s,'dbfloor',%s,UNHEX(%s),UTC_TIMESTAMP(6),%s)",
            (new_ulid(), flow_id, flow_no, (flow_no * 6).encode().hex(), f"result:{flow_id}"),
        )
        await tx.commit()


async def measured_loops(
    work: Callable[[int], Awaitable[None]], loops: int, *, warmup: float, seconds: float, name: str
) -> tuple[list[float], dict[str, float]]:
    """``loops`` concurrent loops of ``work(seq)`` for ``warmup`` + ``seconds``: the latencies (ms) of the
    calls that ended inside the window, and the CPU seconds this process (as ``name``) and MariaDB spent in it."""
    window_start = time.time() + warmup
    window_end = window_start + seconds
    watched = {name: os.getpid()}
    if (server := pid_of("mariadbd") or pid_of("mysqld")) is not None:
        watched["mariadb"] = server
    cpu = asyncio.create_task(cpu_over_window(window_start, window_end, watched))
    issued = 0
    latencies: list[float] = []

    async def loop() -> None:
        nonlocal issued
        while time.time() < window_end:
            seq = issued
            issued += 1
            started = time.time()
            await work(seq)
            ended = time.time()
            if window_start <= ended <= window_end:
                latencies.append((ended - started) * 1000)

    try:
        await asyncio.gather(*(loop() for _ in range(loops)))
    finally:
        cpu_s = await cpu
    return latencies, cpu_s


async def run(args: argparse.Namespace) -> dict[str, object]:
    db = Database(DatabaseConfig(host=args.host, port=args.port, database=args.database, pool_max=args.pool_max))
    await db.start()
    try:
        latencies, cpu_s = await measured_loops(
            lambda seq: one_pair(db, args.prefix, seq),
            args.writers,
            warmup=args.warmup,
            seconds=args.seconds,
            name="dbfloor",
        )
    finally:
        await db.stop()
    return {
        "completed": len(latencies),
        "seconds": args.seconds,
        "commits_total": db.commits,
        "latencies_ms": latencies,
        "cpu_s": cpu_s,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.dbfloor", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3306)
    p.add_argument("--database", required=True)
    p.add_argument("--writers", type=int, default=64)
    p.add_argument("--pool-max", type=int, default=20)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--prefix", default=f"dbfloor-{int(time.time())}")
    args = p.parse_args(argv)
    args.seconds = min(max(args.seconds, 0.5), MAX_SECONDS)
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
