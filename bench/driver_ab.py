"""aiomysql against asyncmy (compiled) on the request path's statements: client CPU per request, interleaved.

``python -m bench.driver_ab --database perf_driver --pairs 5 --seconds 6``

Each run is a fresh process (``bench.driver_ab worker``) with one driver, the
pool size, session settings and statements of :mod:`bench.dbfloor`; it
measures its own CPU and MariaDB's inside its window (:mod:`bench.procstat`)
and the p50 latency of one request. Patterns:

* ``write``: the ``db`` floor stage's two transactions (insert a flow and its
  attempt, commit; update both and insert the outbox row, commit);
* ``wide``: one read of ``--rows`` attempts with their flows (the columns of
  the known-rows path's ``_ATTEMPTS_WITH_FLOWS``, without ``FOR UPDATE``) and
  the ROLLBACK riding along in the same round trip (``Tx.read_only``): the
  row parsing and conversion where a pure-Python driver costs most.

For every (pattern, concurrency) the two drivers run in pairs, the pair's
first driver alternating (A B, B A, …) so a drift of the shared machine falls
on both; per pair the ratio asyncmy ÷ aiomysql of the client CPU per request.
Prints one JSON line per run and a summary line per case: median ratio and
its spread (min–max over the pairs), and the load average at the start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.dbfloor import measured_loops
from gateway.domain import channel_order_no, new_ulid
from gateway.store.db import _SESSION_INIT, DatabaseConfig, migrate
from gateway.store.flow_sql import FLOW_COLUMNS

DRIVERS = ("aiomysql", "asyncmy")
WIDE = (
    "SELECT a.*, "
    + ", ".join(f"f.{name} AS f__{name}" for name in FLOW_COLUMNS)
    + " FROM attempts a JOIN flows f ON f.id = a.flow_id WHERE a.id IN ({marks}) ORDER BY a.id"
)
SEED_ROWS = 2000
STALE_STATUS_AFTER_MULTI = False  # set by the worker for asyncmy (see wide_read)


async def create_pool(driver: str, database: str, size: int) -> Any:
    kw: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 3306,
        "user": "root",
        "password": "",
        "db": database,
        "autocommit": False,
        "connect_timeout": 5.0,
        "charset": "utf8mb4",
        "init_command": f"{_SESSION_INIT}, SESSION tx_isolation='READ-COMMITTED'",
    }
    if driver == "asyncmy":
        import asyncmy

        return await asyncmy.create_pool(minsize=2, maxsize=size, pool_recycle=3600, **kw)
    import aiomysql

    return await aiomysql.create_pool(minsize=2, maxsize=size, pool_recycle=3600, **kw)


def dict_cursor(driver: str) -> Any:
    if driver == "asyncmy":
        from asyncmy.cursors import DictCursor

        return DictCursor
    import aiomysql

    return aiomysql.DictCursor


async def write_pair(pool: Any, prefix: str, seq: int) -> None:
    """The two transactions of :func:`bench.dbfloor.one_pair`, on a bare pool."""
    flow_no = new_ulid()
    amount = 10_000 + seq % 5_000
    conn = await pool.acquire()
    try:
        async with conn.cursor() as cur:
            await cur.execute(
                "INSERT INTO flows (flow_no, caller, request_id, kind, amount, currency, request_hash, status,"
                " created_at, updated_at) VALUES (%s,'dbfloor',%s,'WITHHOLD',%s,'CNY',%s,'PROCESSING',"
                " UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
                (flow_no, f"{prefix}-{seq}", amount, flow_no.lower()),
            )
            flow_id = int(cur.lastrowid)
        async with conn.cursor() as cur:
            await cur.execute(
                "INSERT INTO attempts (flow_id, seq, channel, operation, channel_order_no, status, amount, currency,"
                " created_at, updated_at) VALUES (%s,1,'sandbox','WITHHOLD',%s,'SENDING',%s,'CNY',"
                " UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
                (flow_id, channel_order_no(flow_no, 1), amount),
            )
            attempt_id = int(cur.lastrowid)
        await conn.commit()
    finally:
        pool.release(conn)
    conn = await pool.acquire()
    try:
        async with conn.cursor() as cur:
            await cur.execute(
                "UPDATE attempts SET status='SUCCEEDED', code='OK', finished_at=UTC_TIMESTAMP(6),"
                " updated_at=UTC_TIMESTAMP(6), version=version+1 WHERE id=%s AND status='SENDING'",
                (attempt_id,),
            )
        async with conn.cursor() as cur:
            await cur.execute(
                "UPDATE flows SET status='SUCCEEDED', channel='sandbox', finished_at=UTC_TIMESTAMP(6),"
                " updated_at=UTC_TIMESTAMP(6), version=version+1 WHERE id=%s AND status='PROCESSING'",
                (flow_id,),
            )
        async with conn.cursor() as cur:
            await cur.execute(
                "INSERT INTO outbox (event_id, event_type, flow_id, caller, msg_key, payload, created_at, dedupe_key)"
                " VALUES (%s,'FLOW_RESULT',%s,'dbfloor',%s,UNHEX(%s),UTC_TIMESTAMP(6),%s)",
                (new_ulid(), flow_id, flow_no, (flow_no * 6).encode().hex(), f"result:{flow_id}"),
            )
        await conn.commit()
    finally:
        pool.release(conn)


async def wide_read(pool: Any, cursor_cls: Any, ids: list[int], rows: int) -> int:
    """``rows`` attempts with their flows and the ROLLBACK, one round trip (``Tx.read_only``)."""
    chosen = random.sample(ids, rows)
    conn = await pool.acquire()
    try:
        async with conn.cursor(cursor_cls) as cur:
            sql = cur.mogrify(WIDE.format(marks=",".join(["%s"] * rows)), chosen)
            await cur.execute(sql + ";\nROLLBACK")
            got = list(await cur.fetchall())
            while await cur.nextset():
                pass
        if STALE_STATUS_AFTER_MULTI and conn.server_status & 1:
            # asyncmy keeps the previous result's status when the last one's is 0 (``if
            # result.server_status != 0``), so after ``…; ROLLBACK`` it still says "in a
            # transaction" and its pool closes the connection on release: one new
            # connection per read. The ROLLBACK did end the transaction.
            conn.server_status &= ~1
    finally:
        pool.release(conn)
    if len(got) != rows:
        raise RuntimeError(f"wide read returned {len(got)} rows, expected {rows}")
    return len(got)


async def seed(database: str) -> None:
    """Migrate ``database`` and give it :data:`SEED_ROWS` finished attempts with every text column filled."""
    await migrate(DatabaseConfig(database=database))
    import aiomysql

    conn = await aiomysql.connect(host="127.0.0.1", user="root", db=database, autocommit=True, charset="utf8mb4")
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT COUNT(*) FROM attempts WHERE raw_message <> ''")
            (have,) = await cur.fetchone()
            for i in range(int(have), SEED_ROWS):
                flow_no = new_ulid()
                await cur.execute(
                    "INSERT INTO flows (flow_no, caller, request_id, kind, amount, currency, account_hash,"
                    " account_masked, bank_code, request_hash, status, channel, channel_txn_id, description,"
                    " created_at, updated_at, finished_at, split_shares) VALUES (%s,'bench-caller',%s,'WITHHOLD',"
                    "%s,'CNY',%s,'6222********1234','ICBC',%s,'SUCCEEDED','sandbox',%s,%s,UTC_TIMESTAMP(6),"
                    "UTC_TIMESTAMP(6),UTC_TIMESTAMP(6),NULL)",
                    (
                        flow_no,
                        f"seed-{flow_no}",
                        10_000 + i,
                        "a" * 64,
                        flow_no.lower() * 2 + "0" * 12,
                        f"txn-{flow_no}",
                        "第 3 期还款 instalment 3",
                    ),
                )
                flow_id = cur.lastrowid
                await cur.execute(
                    "INSERT INTO attempts (flow_id, seq, channel, operation, channel_order_no, status, amount,"
                    " currency, account_hash, bank_code, raw_code, raw_message, code, channel_txn_id, fee,"
                    " decision, created_at, updated_at, finished_at, incarnation) VALUES (%s,1,'sandbox',"
                    "'WITHHOLD',%s,'SUCCEEDED',%s,'CNY',%s,'ICBC','0000','交易成功 success','OK',%s,12,"
                    "%s,UTC_TIMESTAMP(6),UTC_TIMESTAMP(6),UTC_TIMESTAMP(6),%s)",
                    (
                        flow_id,
                        channel_order_no(flow_no, 1),
                        10_000 + i,
                        "a" * 64,
                        f"txn-{flow_no}",
                        json.dumps({"channel": "sandbox", "score": 0.93, "why": "cheapest healthy"}),
                        new_ulid(),
                    ),
                )
    finally:
        conn.close()


async def worker(args: argparse.Namespace) -> dict[str, Any]:
    global STALE_STATUS_AFTER_MULTI
    STALE_STATUS_AFTER_MULTI = args.driver == "asyncmy" and not args.no_status_fix
    pool = await create_pool(args.driver, args.database, args.pool_max)
    cursor_cls = dict_cursor(args.driver)
    ids: list[int] = []
    if args.pattern == "wide":
        conn = await pool.acquire()
        try:
            async with conn.cursor() as cur:
                await cur.execute("SELECT id FROM attempts WHERE raw_message <> ''")
                ids = [int(r[0]) for r in await cur.fetchall()]
            await conn.rollback()
        finally:
            pool.release(conn)

    async def one(seq: int) -> None:
        if args.pattern == "write":
            await write_pair(pool, args.prefix, seq)
        else:
            await wide_read(pool, cursor_cls, ids, args.rows)

    try:
        latencies, cpu_s = await measured_loops(
            one, args.concurrency, warmup=args.warmup, seconds=args.seconds, name="client"
        )
        in_window = len(latencies)
    finally:
        pool.close()
        await pool.wait_closed()
    return {
        "driver": args.driver,
        "pattern": args.pattern,
        "rows": args.rows,
        "concurrency": args.concurrency,
        "completed": in_window,
        "client_cpu_ms": 1000 * cpu_s["client"] / max(in_window, 1),
        "mariadb_cpu_ms": 1000 * cpu_s.get("mariadb", 0.0) / max(in_window, 1),
        "p50_ms": statistics.median(latencies) if latencies else 0.0,
        "rps": in_window / args.seconds,
    }


def run_once(args: argparse.Namespace, driver: str, pattern: str, concurrency: int, seq: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.driver_ab", "worker", "--driver", driver, "--pattern", pattern]
    cmd += ["--database", args.database, "--concurrency", str(concurrency), "--rows", str(args.rows)]
    cmd += ["--seconds", str(args.seconds), "--warmup", str(args.warmup), "--prefix", f"ab-{int(time.time())}-{seq}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["load1"] = os.getloadavg()[0]
    return result


def compare(args: argparse.Namespace) -> int:
    asyncio.run(seed(args.database))
    summary: list[str] = []
    seq = 0
    for case in args.cases.split(","):
        pattern, concurrency = case.split("@")
        load_start = os.getloadavg()
        ratios: list[float] = []
        lat_ratios: list[float] = []
        by_driver: dict[str, list[dict[str, Any]]] = {d: [] for d in DRIVERS}
        for pair in range(args.pairs):
            order = DRIVERS if pair % 2 == 0 else DRIVERS[::-1]
            got: dict[str, dict[str, Any]] = {}
            for driver in order:
                seq += 1
                got[driver] = run_once(args, driver, pattern, int(concurrency), seq)
                by_driver[driver].append(got[driver])
                print(json.dumps(got[driver]), flush=True)
            ratios.append(got["asyncmy"]["client_cpu_ms"] / got["aiomysql"]["client_cpu_ms"])
            lat_ratios.append(got["asyncmy"]["p50_ms"] / max(got["aiomysql"]["p50_ms"], 1e-9))

        def med(driver: str, key: str, runs: dict[str, list[dict[str, Any]]] = by_driver) -> float:
            return float(statistics.median(float(r[key]) for r in runs[driver]))

        line = (
            f"driver_ab: case={pattern}{'' if pattern == 'write' else args.rows}@{concurrency} pairs={args.pairs}"
            f" client_cpu_ms aiomysql={med('aiomysql', 'client_cpu_ms'):.3f}"
            f" asyncmy={med('asyncmy', 'client_cpu_ms'):.3f}"
            f" cpu_ratio median={statistics.median(ratios):.3f} spread={min(ratios):.3f}-{max(ratios):.3f}"
            f" p50_ms aiomysql={med('aiomysql', 'p50_ms'):.2f} asyncmy={med('asyncmy', 'p50_ms'):.2f}"
            f" p50_ratio median={statistics.median(lat_ratios):.3f} spread={min(lat_ratios):.3f}-{max(lat_ratios):.3f}"
            f" rps aiomysql={med('aiomysql', 'rps'):.0f} asyncmy={med('asyncmy', 'rps'):.0f}"
            f" mariadb_cpu_ms aiomysql={med('aiomysql', 'mariadb_cpu_ms'):.3f}"
            f" asyncmy={med('asyncmy', 'mariadb_cpu_ms'):.3f}"
            f" load_at_start={load_start[0]:.2f}/{load_start[1]:.2f}/{load_start[2]:.2f}"
        )
        summary.append(line)
        print(line, flush=True)
    print("\n".join(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.driver_ab", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("mode", nargs="?", choices=("compare", "worker"), default="compare")
    p.add_argument("--database", default="perf_driver_ab")
    p.add_argument("--driver", choices=DRIVERS, default="aiomysql")
    p.add_argument("--pattern", choices=("write", "wide"), default="write")
    p.add_argument("--cases", default="write@64,write@1,wide@64,wide@1", help="pattern@concurrency, comma-separated")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rows", type=int, default=1, help="rows per wide read")
    p.add_argument("--pool-max", type=int, default=20)
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--no-status-fix", action="store_true", help="asyncmy: leave its stale in-transaction flag")
    p.add_argument("--prefix", default=f"driver-ab-{int(time.time())}")
    args = p.parse_args(argv)
    if args.mode == "worker":
        print(json.dumps(asyncio.run(worker(args))))
        return 0
    return compare(args)


if __name__ == "__main__":
    raise SystemExit(main())
