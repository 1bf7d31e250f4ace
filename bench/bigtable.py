"""A cached database with millions of finished flows, for ``make bench``'s big-table stage.

``python -m bench.bigtable --database paygate_bench_big --flows 10000000 --budget-s 3600``
``python -m bench.bigtable measure [bench.run options]``: the big-table stage of ``make bench`` alone

Seeds ``flows``, ``attempts`` and ``outbox`` (every event published) with
finished withholds spread over the past year, in chunks of bulk
``INSERT … SELECT`` from MariaDB's ``seq`` engine, nothing through Python per
row. The tables are created by the migrations (safe to re-run), so the cached
database follows the schema; then their secondary indexes are dropped, the rows
go in in primary-key order, and the indexes come back at the end with one
``ALTER TABLE … ADD INDEX`` per table, which InnoDB builds by sorting (10 M
random inserts into every index through a 128 MB buffer pool ran at 1,400–2,800
flows/s). Every call ends by checking that ``SHOW CREATE TABLE`` of each seeded
table equals that of a freshly migrated database, and raises when it does not:
a seed interrupted before its indexes were back is finished by the next call
and never measured.

Seeding is resumable and the database is kept between runs: each call adds
chunks until the target count or the time budget is reached, and says how many
flows the tables hold.

Seeded rows cannot collide with the bench's (which stay in the cached
database: a few thousand per run): flow numbers start with ``00``
(every real ULID sorts after them), the caller is ``seed``, card hashes are
``SHA2`` of the row number over a million cards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from collections.abc import Callable

import pymysql
import pymysql.cursors

from gateway.store.db import DatabaseConfig, migrate

CHUNK = 500_000
FLUSH_WAIT_S = 90.0
CARDS = 1_000_000
YEAR_S = 365 * 86_400
TABLES = ("flows", "attempts", "outbox")
_KEY = re.compile(r"^\s*((?:UNIQUE )?KEY `([^`]+)` .*?),?$")
_AUTO_INCREMENT = re.compile(r" AUTO_INCREMENT=\d+")


def _connect(database: str | None = None) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    return pymysql.connect(host="127.0.0.1", user="root", password="", db=database, autocommit=True)


def seeded(database: str) -> int:
    """Flows seeded so far in ``database`` (0 when it does not exist)."""
    conn = _connect()
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


def shape(cur: pymysql.cursors.Cursor, table: str) -> str:
    """``SHOW CREATE TABLE`` of ``table`` without its ``AUTO_INCREMENT=`` counter."""
    cur.execute(f"SHOW CREATE TABLE `{table}`")
    row = cur.fetchone()
    assert row is not None
    return _AUTO_INCREMENT.sub("", str(row[1]))


def secondary_keys(create: str) -> dict[str, str]:
    """The secondary indexes of a ``SHOW CREATE TABLE`` text, name -> definition, in their order."""
    keys: dict[str, str] = {}
    for line in create.splitlines():
        m = _KEY.match(line)
        if m:
            keys[m.group(2)] = m.group(1)
    return keys


async def migrated_shapes(database: str) -> dict[str, str]:
    """Each seeded table's shape in a freshly migrated scratch database (created and dropped here)."""
    scratch = f"{database}_shape"
    conn = _connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{scratch}`")
            await migrate(DatabaseConfig(database=scratch))
            cur.execute(f"USE `{scratch}`")
            return {t: shape(cur, t) for t in TABLES}
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{scratch}`")
        conn.close()


def _chunk_sql(start: int, n: int, total: int, first_id: int) -> list[str]:
    """The three statements that seed rows ``start+1 .. start+n``; row ``start+1`` becomes flow ``first_id``.

    The flow ids are given (consecutive, above every row there), so attempts and
    outbox are computed from the same sequence instead of reading flows back.
    """
    seq = f"(SELECT seq + {start} AS n FROM seq_1_to_{n}) s"
    fid = f"(s.n + {first_id - start - 1})"
    # created over the past year, oldest first, so ids and creation times grow together like real traffic
    created = f"UTC_TIMESTAMP(6) - INTERVAL {YEAR_S} SECOND + INTERVAL (s.n * {YEAR_S} DIV {max(total, 1)}) SECOND"
    flow_no = "CONCAT('00', LPAD(s.n, 24, '0'))"
    card = f"SHA2(s.n % {CARDS}, 256)"
    status = "IF(s.n % 10 = 0, 'FAILED', 'SUCCEEDED')"
    amount = "1000 + s.n % 90000"
    return [
        "INSERT INTO flows (id, flow_no, caller, request_id, kind, amount, currency, account_hash, account_masked,"
        " bank_code, request_hash, status, channel, channel_txn_id, version, created_at, updated_at, finished_at)"
        f" SELECT {fid}, {flow_no}, 'seed', CONCAT('seed-', s.n), 'WITHHOLD', {amount}, 'CNY', {card},"
        f" '6222****0000', 'ICBC', SHA2(s.n, 256), {status}, 'sandbox',"
        f" CONCAT('T', s.n), 2, {created}, {created}, {created} FROM {seq} ORDER BY s.n",
        "INSERT INTO attempts (flow_id, seq, channel, operation, channel_order_no, status, amount, currency,"
        " account_hash, bank_code, code, channel_txn_id, version, created_at, updated_at, finished_at)"
        f" SELECT {fid}, 1, 'sandbox', 'WITHHOLD', CONCAT({flow_no}, '01'), {status}, {amount}, 'CNY',"
        f" {card}, 'ICBC', 'OK', CONCAT('T', s.n), 2, {created}, {created}, {created} FROM {seq} ORDER BY s.n",
        "INSERT INTO outbox (event_id, event_type, flow_id, caller, msg_key, payload, created_at, published_at,"
        " attempts, dedupe_key)"
        f" SELECT {flow_no}, 'FLOW_RESULT', {fid}, 'seed', {flow_no}, UNHEX(SHA2({fid}, 512)), {created},"
        f" {created}, 1, CONCAT('result:', {fid}) FROM {seq} ORDER BY s.n",
    ]


def _alter(cur: pymysql.cursors.Cursor, table: str, clauses: list[str], say: Callable[[str], None]) -> int:
    if clauses:
        started = time.monotonic()
        cur.execute(f"ALTER TABLE `{table}` {', '.join(clauses)}")
        say(f"bigtable: {table}: {len(clauses)} index changes in {time.monotonic() - started:.1f} s")
    return len(clauses)


def drop_secondary(cur: pymysql.cursors.Cursor, say: Callable[[str], None]) -> None:
    """Drop every secondary index of the seeded tables (the rows then go in by primary key only)."""
    for table in TABLES:
        have = secondary_keys(shape(cur, table))
        _alter(cur, table, [f"DROP INDEX `{name}`" for name in have], say)


def restore_secondary(cur: pymysql.cursors.Cursor, want: dict[str, str], say: Callable[[str], None]) -> int:
    """Give each seeded table the migrated secondary indexes, in the migrations' order; then compare.

    A table without any gets them all in one ``ALTER``; a table with some, or with one defined
    otherwise (an interrupted or a foreign change), has them all dropped and re-added in the same
    ``ALTER``, as ``SHOW CREATE TABLE`` lists indexes in the order they were added. Raises when a
    table still differs (in its columns, say): such a database is not measured. Returns how many
    tables it changed.
    """
    changed = 0
    for table in TABLES:
        if shape(cur, table) == want[table]:
            continue
        drop = [f"DROP INDEX `{name}`" for name in secondary_keys(shape(cur, table))]
        changed += bool(_alter(cur, table, drop + [f"ADD {d}" for d in secondary_keys(want[table]).values()], say))
    differ = [t for t in TABLES if shape(cur, t) != want[t]]
    if differ:
        raise RuntimeError(f"bigtable: {', '.join(differ)} differ from the migrated schema (SHOW CREATE TABLE)")
    return changed


def _settle(cur: pymysql.cursors.Cursor, flush_wait_s: float) -> None:
    cur.execute("ANALYZE TABLE flows, attempts, outbox")
    cur.fetchall()
    # Let InnoDB write the seeded pages out first, or the stages after measure that flush (as
    # paygate bench pollqueue does); bounded, the shared server has other clients' pages too.
    flush_deadline = time.monotonic() + flush_wait_s
    while time.monotonic() < flush_deadline:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")
        dirty = cur.fetchone()
        if dirty is None or int(dirty[1]) < 500:
            break
        time.sleep(1.0)


async def seed(
    database: str,
    flows: int,
    budget_s: float,
    say: Callable[[str], None] = print,
    *,
    flush_wait_s: float = FLUSH_WAIT_S,
) -> int:
    """Grow ``database`` towards ``flows`` seeded flows within ``budget_s``; the count it holds afterwards.

    Returns only with every seeded table shaped as the migrations shape it (or raises). When it
    changed anything, it then waits up to ``flush_wait_s`` for the server's dirty pages to be written.
    """
    await migrate(DatabaseConfig(database=database))
    want = await migrated_shapes(database)
    have = seeded(database)
    deadline = time.monotonic() + budget_s
    conn = _connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION unique_checks=0, foreign_key_checks=0")
            loaded = 0
            if have < flows and budget_s > 0:
                drop_secondary(cur, say)
                cur.execute("SET autocommit=0")
                started_all = time.monotonic()
                while have < flows and time.monotonic() < deadline:
                    n = min(CHUNK, flows - have)
                    started = time.monotonic()
                    cur.execute("SELECT COALESCE(MAX(id), 0) FROM flows")
                    row = cur.fetchone()
                    try:
                        for sql in _chunk_sql(have, n, flows, (int(row[0]) if row else 0) + 1):
                            cur.execute(sql)
                        conn.commit()
                    except pymysql.err.OperationalError as exc:  # e.g. a lock wait: measure with what is there
                        conn.rollback()
                        say(f"bigtable: seeding stopped at {have:,} flows: {exc}")
                        break
                    have += n
                    loaded += n
                    say(f"bigtable: {have:,} flows seeded ({n / (time.monotonic() - started):,.0f} flows/s)")
                cur.execute("SET autocommit=1")
                if loaded:
                    say(
                        f"bigtable: {loaded:,} flows loaded at {loaded / (time.monotonic() - started_all):,.0f} flows/s"
                    )
            started = time.monotonic()
            added = restore_secondary(cur, want, say)
            say(f"bigtable: indexes as migrated after {time.monotonic() - started:.1f} s")
            _settle(cur, flush_wait_s if loaded or added else 0.0)
    finally:
        conn.close()
    return have


async def measure(argv: list[str]) -> int:
    """``make bench``'s big-table stage alone (after a warm-up of the empty gateway), with ``bench.run``'s options."""
    from bench import run  # bench.run imports this module: its machinery is loaded only to measure

    opts = run.parse(argv)
    flows = await seed(opts.big_database, opts.big_flows, opts.seed_budget_s, lambda s: print(s, flush=True))
    print(f"bench: big-table database {opts.big_database}: {flows:,} flows; load average {os.getloadavg()}")
    bench = run.Bench(opts)
    try:
        await bench.start()
        bench.set_channel({"p50_ms": 0, "p99_ms": 0})
        await bench.paygate_stage("warm-up", opts.concurrency)  # as make bench's zero-latency stage before it
        paired, stages = await bench.big_table(flows)
    finally:
        bench.stop_all()
        await bench.restore()
    run.report(stages)
    print(f"bench: big tables ({flows:,} seeded flows) / empty, zero-latency throughput: {paired.describe()}")
    print(f"bench: load average {os.getloadavg()}; big_table_ratio={paired.median:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["measure"]:
        return asyncio.run(measure(argv[1:]))
    p = argparse.ArgumentParser(prog="bench.bigtable", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--database", default="paygate_bench_big")
    p.add_argument("--flows", type=int, default=10_000_000)
    p.add_argument("--budget-s", type=float, default=600.0, help="stop seeding after this long (resumes next time)")
    args = p.parse_args(argv)
    started = time.monotonic()
    have = asyncio.run(seed(args.database, args.flows, args.budget_s, lambda s: print(s, flush=True)))
    print(f"bigtable: database={args.database} flows={have} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
