"""A cached database with millions of finished flows, for ``make bench``'s big-table stage.

``python -m bench.bigtable --database paygate_bench_big --flows 10000000 --budget-s 600``

Seeds ``flows``, ``attempts`` and ``outbox`` (every event published) with
finished withholds spread over the past year, in chunks of bulk
``INSERT … SELECT`` from MariaDB's ``seq`` engine, nothing through Python per
row. Seeding is resumable and the database is kept between runs: each call
adds chunks until the target count or the time budget is reached, and says
how many flows the tables hold. Migrations are applied first (safe to
re-run), so the cached database follows the schema.

Seeded rows cannot collide with the bench's (which stay in the cached
database: a few thousand per run): flow numbers start with ``00``
(every real ULID sorts after them), the caller is ``seed``, card hashes are
``SHA2`` of the row number over a million cards.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import pymysql

from gateway.store.db import DatabaseConfig, migrate

CHUNK = 250_000
FLUSH_WAIT_S = 90.0
CARDS = 1_000_000
YEAR_S = 365 * 86_400


def seeded(database: str) -> int:
    """Flows seeded so far in ``database`` (0 when it does not exist)."""
    conn = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name=%s", (database,))
            if not cur.fetchone():
                return 0
            cur.execute(f"SELECT COUNT(*) FROM `{database}`.flows WHERE caller='seed'")
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()


def _chunk_sql(start: int, n: int, total: int, after_id: int) -> list[str]:
    """The three statements that seed rows ``start+1 .. start+n`` (flows get ids above ``after_id``)."""
    seq = f"(SELECT seq + {start} AS n FROM seq_1_to_{n}) s"
    # created over the past year, oldest first, so ids and creation times grow together like real traffic
    created = f"UTC_TIMESTAMP(6) - INTERVAL {YEAR_S} SECOND + INTERVAL (s.n * {YEAR_S} DIV {max(total, 1)}) SECOND"
    flow_no = "CONCAT('00', LPAD(s.n, 24, '0'))"
    card = f"SHA2(s.n % {CARDS}, 256)"
    mine = f"FROM flows f WHERE f.id > {after_id} AND f.caller = 'seed'"
    return [
        "INSERT INTO flows (flow_no, caller, request_id, kind, amount, currency, account_hash, account_masked,"
        " bank_code, request_hash, status, channel, channel_txn_id, version, created_at, updated_at, finished_at)"
        f" SELECT {flow_no}, 'seed', CONCAT('seed-', s.n), 'WITHHOLD', 1000 + s.n % 90000, 'CNY', {card},"
        f" '6222****0000', 'ICBC', SHA2(s.n, 256), IF(s.n % 10 = 0, 'FAILED', 'SUCCEEDED'), 'sandbox',"
        f" CONCAT('T', s.n), 2, {created}, {created}, {created} FROM {seq} ORDER BY s.n",
        "INSERT INTO attempts (flow_id, seq, channel, operation, channel_order_no, status, amount, currency,"
        " account_hash, bank_code, code, channel_txn_id, version, created_at, updated_at, finished_at)"
        " SELECT f.id, 1, 'sandbox', 'WITHHOLD', CONCAT(f.flow_no, '01'), f.status, f.amount, 'CNY',"
        f" f.account_hash, 'ICBC', 'OK', f.channel_txn_id, 2, f.created_at, f.created_at, f.created_at {mine}"
        " ORDER BY f.id",
        "INSERT INTO outbox (event_id, event_type, flow_id, caller, msg_key, payload, created_at, published_at,"
        " attempts, dedupe_key)"
        " SELECT f.flow_no, 'FLOW_RESULT', f.id, 'seed', f.flow_no, UNHEX(SHA2(f.id, 512)), f.created_at,"
        f" f.created_at, 1, CONCAT('result:', f.id) {mine} ORDER BY f.id",
    ]


async def seed(database: str, flows: int, budget_s: float) -> int:
    """Grow ``database`` towards ``flows`` seeded flows within ``budget_s``; the count it holds afterwards."""
    await migrate(DatabaseConfig(database=database))
    have = seeded(database)
    deadline = time.monotonic() + budget_s
    conn = pymysql.connect(host="127.0.0.1", user="root", password="", db=database, autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION unique_checks=0, foreign_key_checks=0")
            while have < flows and time.monotonic() < deadline:
                n = min(CHUNK, flows - have)
                started = time.monotonic()
                cur.execute("SELECT COALESCE(MAX(id), 0) FROM flows")
                row = cur.fetchone()
                try:
                    for sql in _chunk_sql(have, n, flows, int(row[0]) if row else 0):
                        cur.execute(sql)
                    conn.commit()
                except pymysql.err.OperationalError as exc:  # e.g. a lock wait: measure with what is there
                    conn.rollback()
                    print(f"bigtable: seeding stopped at {have:,} flows: {exc}", flush=True)
                    break
                have += n
                print(f"bigtable: {have:,} flows seeded ({n / (time.monotonic() - started):,.0f} rows/s)", flush=True)
            cur.execute("ANALYZE TABLE flows, attempts, outbox")
            cur.fetchall()
            # Let InnoDB write the seeded pages out first, or the stages after measure that flush (as
            # paygate bench pollqueue does); bounded, the shared server has other clients' pages too.
            flush_deadline = time.monotonic() + FLUSH_WAIT_S
            while time.monotonic() < flush_deadline:
                cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")
                dirty = cur.fetchone()
                if dirty is None or int(dirty[1]) < 500:
                    break
                time.sleep(1.0)
    finally:
        conn.close()
    return have


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.bigtable", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--database", default="paygate_bench_big")
    p.add_argument("--flows", type=int, default=10_000_000)
    p.add_argument("--budget-s", type=float, default=600.0, help="stop seeding after this long (resumes next time)")
    args = p.parse_args(argv)
    have = asyncio.run(seed(args.database, args.flows, args.budget_s))
    print(f"bigtable: database={args.database} flows={have}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
