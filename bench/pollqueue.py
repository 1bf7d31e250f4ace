"""``paygate bench pollqueue``: claim throughput with a huge backlog vs a small one.

Fills ``poll_queue`` with N rows waiting (due tomorrow) plus D rows due now,
then measures how fast C concurrent claimers (the gateway's own
:func:`gateway.store.poll_queue.claim_due`, ``SELECT ... FOR UPDATE SKIP LOCKED`` + lease
update, batch B) drain the due rows. A small backlog and a large one sit in
two databases of the same server, and the drains alternate (small, large,
small, large ...): ``backlog_ratio`` is the median over the pairs of
claims/s(large) / claims/s(small), printed with its spread. The index on
``due_at`` makes a claim cost depend on the batch, not on the rows waiting,
so the ratio should stay near 1.

Last line: ``pollqueue: claims_per_s=<large, median> backlog_ratio=<median> spread=<low>-<high> pairs=<n>``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import pymysql

from bench.stages import Paired
from gateway.store.db import Database, DatabaseConfig, migrate
from gateway.store.poll_queue import claim_due


def _admin() -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)


async def _fill(config: DatabaseConfig, waiting: int, due: int) -> None:
    conn = pymysql.connect(
        host=config.host, port=config.port, user="root", password="", db=config.database, autocommit=True
    )
    try:
        with conn.cursor() as cur:
            cur.execute("TRUNCATE poll_queue")
            step = 250_000
            for start in range(0, waiting, step):
                n = min(step, waiting - start)
                cur.execute(
                    "INSERT INTO poll_queue (attempt_id, channel, due_at, created_at)"
                    f" SELECT seq + %s, 'bench', UTC_TIMESTAMP(6) + INTERVAL 1 DAY, UTC_TIMESTAMP(6)"
                    f" FROM seq_1_to_{n}",
                    (start + 10_000_000,),
                )
            cur.execute(
                "INSERT INTO poll_queue (attempt_id, channel, due_at, created_at)"
                f" SELECT seq, 'bench', UTC_TIMESTAMP(6) - INTERVAL seq MICROSECOND, UTC_TIMESTAMP(6)"
                f" FROM seq_1_to_{due}"
            )
            cur.execute("ANALYZE TABLE poll_queue")
            # Let InnoDB write out the fill's dirty pages first: otherwise the large
            # run measures the background flush of the million-row insert, not claims.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")
                row = cur.fetchone()
                if row is None or int(row[1]) < 200:
                    break
                time.sleep(0.5)
    finally:
        conn.close()


async def _drain(config: DatabaseConfig, due: int, claimers: int, batch: int) -> float:
    async with Database(DatabaseConfig(**{**config.__dict__, "pool_max": claimers + 2})) as db:
        claimed = 0
        started = time.perf_counter()

        async def worker(i: int) -> int:
            mine = 0
            while True:
                got = await claim_due(db, owner=f"bench-{i}", limit=batch, lease_s=600)
                if not got:
                    return mine
                mine += len(got)

        counts = await asyncio.gather(*[worker(i) for i in range(claimers)])
        elapsed = time.perf_counter() - started
        claimed = sum(counts)
    if claimed != due:
        raise RuntimeError(f"claimed {claimed} rows, expected {due}: a row was claimed twice or missed")
    return claimed / elapsed


async def run(small: int, large: int, due: int, claimers: int, batch: int, repeats: int) -> tuple[float, Paired]:
    """Both backlogs filled side by side (two databases), then drained interleaved: small, large, small, large ...

    Each pair's ratio is large/small of two drains taken seconds apart, so a
    change in the machine's load moves both sides of a pair alike; the median
    of the pairs is the figure, the spread shows the noise.
    """
    tag = uuid.uuid4().hex[:8]
    configs = {
        backlog: DatabaseConfig(database=f"pgbench_pq_{tag}_{which}", pool_min=1, pool_max=claimers + 2)
        for backlog, which in ((small, "small"), (large, "large"))
    }
    try:
        for backlog, config in configs.items():
            await migrate(config)
            await _fill(config, backlog, due)
        ratios: list[float] = []
        rates: dict[int, list[float]] = {small: [], large: []}
        for i in range(repeats):
            pair: dict[int, float] = {}
            for backlog in (small, large):
                pair[backlog] = await _drain(configs[backlog], due, claimers, batch)
                await _reset_due(configs[backlog], due)
                rates[backlog].append(pair[backlog])
            ratios.append(pair[large] / pair[small])
            print(
                f"  pair {i + 1}: {small:,} waiting {pair[small]:,.0f} claims/s, {large:,} waiting"
                f" {pair[large]:,.0f} claims/s, ratio {ratios[-1]:.2f}"
            )
        paired = Paired(tuple(ratios))
        print(f"  backlog ratio: {paired.describe()}")
        return statistics.median(rates[large]), paired
    finally:
        conn = _admin()
        with conn.cursor() as cur:
            for config in configs.values():
                cur.execute(f"DROP DATABASE IF EXISTS `{config.database}`")
        conn.close()


async def _reset_due(config: DatabaseConfig, due: int) -> None:
    conn = pymysql.connect(
        host=config.host, port=config.port, user="root", password="", db=config.database, autocommit=True
    )
    try:
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE poll_queue SET due_at = UTC_TIMESTAMP(6) - INTERVAL attempt_id MICROSECOND, lease_owner=''"
                " WHERE attempt_id <= %s",
                (due,),
            )
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paygate bench pollqueue", description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000, help="rows waiting in the small run")
    parser.add_argument("--large", type=int, default=1_000_000, help="rows waiting in the large run")
    parser.add_argument("--due", type=int, default=10_000, help="rows due now in each run")
    parser.add_argument("--claimers", type=int, default=4, help="concurrent claimers (replicas)")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved pairs")
    parser.add_argument("--quick", action="store_true", help="200k vs 10k waiting, 2k due (for make test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.large, args.due, args.repeats = 200_000, 2_000, 3
    print(f"pollqueue bench: {args.claimers} claimers, batch {args.batch}")
    rate, paired = asyncio.run(run(args.small, args.large, args.due, args.claimers, args.batch, max(1, args.repeats)))
    print(
        f"pollqueue: claims_per_s={rate:.0f} backlog_ratio={paired.median:.2f}"
        f" spread={paired.low:.2f}-{paired.high:.2f} pairs={len(paired.ratios)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
