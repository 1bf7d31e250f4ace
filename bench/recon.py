"""``paygate bench recon``: reconcile a synthetic day of N statement lines against N attempts in MariaDB.

A fresh database gets N succeeded withhold attempts of one channel (set-based ``INSERT ... SELECT``
over MariaDB's sequence engine), a few failed and a few PENDING ones; a sandbox-format statement of
the same day is written from the same formulas, with ``--faults`` faults of each class injected:

    drop        a line missing                       -> local_only
    amount      a line's amount changed              -> amount_mismatch
    fee         a line's fee changed                 -> fee_mismatch
    extra       a line for an order never sent       -> channel_only
    late        a line for an attempt we recorded as FAILED -> channel_only
    status      a FAILED line for an attempt that succeeded -> status_mismatch
    pending     a line for a PENDING attempt         -> resolved_by_statement (not a discrepancy)

Then the file is imported (``Reconciler.import_file``: streaming parse, staged in batches,
set-based matching, the result in one commit), timed end to end. The last line is::

    recon: lines=<n> matched=<n> discrepancies=<n> injected=<n> found=<n> false_positives=<n> lines_per_s=<n> rss_mb=<n>

``found`` counts discrepancies whose (class, order) is an injected one; ``false_positives`` the
others. Peak RSS is the process's (``ru_maxrss``), writing the file included. Exit status 1 when
a fault is missed, anything else is flagged, or the pending flows were not all settled.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta

import pymysql

from channels.contract import Operation
from channels.sandbox.statement import write_statement
from channels.statement import LineStatus, StatementLine
from gateway.businessday import BusinessCalendar
from gateway.recon.config import ReconConfig
from gateway.recon.model import DISCREPANCIES
from gateway.recon.service import ChannelBooks, Reconciler
from gateway.store.db import Database, DatabaseConfig, migrate
from gateway.store.flows import MySQLFlowStore
from gateway.store.recon import MySQLReconStore
from routing.config import FeeSchedule

CHANNEL = "bench-bank"
DAY = date(2026, 3, 5)
FEE_PPM = 6000  # 0.6 %
SPACING_US = 80_000  # attempts 80 ms apart: 1,000,000 fit in one day


def amount_of(seq: int) -> int:
    return 100 + (seq * 7919) % 500_000


def fee_of(amount: int) -> int:
    return FeeSchedule(rate_ppm=FEE_PPM).fee(amount)


class Faults:
    """Which sequence numbers carry which fault (disjoint, seeded)."""

    def __init__(self, lines: int, per_class: int, seed: int = 16) -> None:
        rng = random.Random(seed)
        picked = rng.sample(range(1, lines + 1), per_class * 6)
        k = per_class
        self.drop = set(picked[0:k])
        self.amount = set(picked[k : 2 * k])
        self.fee = set(picked[2 * k : 3 * k])
        self.late = set(picked[3 * k : 4 * k])  # our attempt FAILED, the channel debited
        self.status = set(picked[4 * k : 5 * k])  # we succeeded, the channel lists it failed
        self.pending = set(picked[5 * k : 6 * k])  # still PENDING: the statement settles it
        self.extra = [f"GHOST{i:07d}" for i in range(k)]

    def expected(self) -> set[tuple[str, str]]:
        out = {("local_only", order_no(s)) for s in self.drop}
        out |= {("amount_mismatch", order_no(s)) for s in self.amount}
        out |= {("fee_mismatch", order_no(s)) for s in self.fee}
        out |= {("channel_only", order_no(s)) for s in self.late}
        out |= {("status_mismatch", order_no(s)) for s in self.status}
        out |= {("channel_only", o) for o in self.extra}
        return out


def order_no(seq: int) -> str:
    return f"B{seq:09d}"


def seed_attempts(config: DatabaseConfig, n: int, faults: Faults, start: datetime, step: int = 200_000) -> float:
    """N flows with one attempt each, set-based; the fault rows are then updated. Seconds taken."""
    began = time.perf_counter()
    conn = pymysql.connect(host=config.host, port=config.port, user=config.user, password="", db=config.database)
    moment = f"TIMESTAMP'{start.isoformat(sep=' ')}' + INTERVAL (s.seq * {SPACING_US}) MICROSECOND"
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION time_zone = '+00:00'")
            for lo in range(0, n, step):
                hi = min(lo + step, n)
                cur.execute(
                    "INSERT INTO flows (flow_no, caller, request_id, kind, amount, currency, request_hash, status,"
                    " channel, created_at, updated_at, finished_at)"
                    " SELECT CONCAT('01BR', LPAD(s.seq, 22, '0')), 'bench', CONCAT('B', LPAD(s.seq, 9, '0')),"
                    " 'WITHHOLD', 100 + (s.seq * 7919) %% 500000, 'CNY', SHA2(s.seq, 256), 'SUCCEEDED', %s,"
                    f" {moment}, {moment}, {moment} FROM seq_{lo + 1}_to_{hi} s",
                    (CHANNEL,),
                )
                # half the attempts carry the channel's fee from the result, half rely on the fee table
                cur.execute(
                    "INSERT INTO attempts (flow_id, seq, channel, operation, channel_order_no, status, amount,"
                    " currency, fee, created_at, updated_at, finished_at)"
                    " SELECT f.id, 1, f.channel, 'withhold', f.request_id, 'SUCCEEDED', f.amount, 'CNY',"
                    f" IF(f.id %% 2 = 1, (f.amount * {FEE_PPM} + 500000) DIV 1000000, NULL),"
                    " f.created_at, f.updated_at, f.finished_at FROM flows f"
                    " WHERE f.caller = 'bench' AND f.request_id BETWEEN %s AND %s",
                    (order_no(lo + 1), order_no(hi)),
                )
                conn.commit()
            for seqs, attempt, flow in ((faults.late, "FAILED", "FAILED"), (faults.pending, "PENDING", "PROCESSING")):
                names = [order_no(s) for s in seqs]
                marks = ",".join(["%s"] * len(names))
                finished = "NULL" if attempt == "PENDING" else "finished_at"
                cur.execute(
                    f"UPDATE attempts SET status=%s, finished_at={finished} WHERE channel_order_no IN ({marks})",
                    (attempt, *names),
                )
                cur.execute(
                    f"UPDATE flows SET status=%s, finished_at={finished}, needs_review=%s"
                    f" WHERE request_id IN ({marks})",
                    (flow, int(attempt == "PENDING"), *names),
                )
            conn.commit()
            cur.execute("ANALYZE TABLE attempts")
            cur.fetchall()
    finally:
        conn.close()
    return time.perf_counter() - began


def statement_lines(n: int, faults: Faults, start: datetime) -> Iterator[StatementLine]:
    for seq in range(1, n + 1):
        if seq in faults.drop:
            continue
        amount = amount_of(seq)
        fee = fee_of(amount)
        if seq in faults.amount:
            amount += 1
        if seq in faults.fee:
            fee += 1
        status = LineStatus.FAILED if seq in faults.status else LineStatus.SUCCEEDED
        yield StatementLine(
            0,
            order_no(seq),
            Operation.WITHHOLD,
            status,
            amount,
            "CNY",
            fee if status is LineStatus.SUCCEEDED else 0,
            start + timedelta(microseconds=seq * SPACING_US + 1000),
            f"SBX{seq:012d}",
        )
    for i, ghost in enumerate(faults.extra):
        yield StatementLine(
            0, ghost, Operation.WITHHOLD, LineStatus.SUCCEEDED, 5_000 + i, "CNY", 30, start + timedelta(hours=3)
        )


def peak_rss_mb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


async def run(n: int, per_class: int, batch: int, keep: bool, port: int = 3306) -> tuple[str, bool]:
    name = f"pgbench_recon_{uuid.uuid4().hex[:8]}"
    config = DatabaseConfig(database=name, port=port, pool_min=2, pool_max=8)
    faults = Faults(n, per_class)
    calendar = BusinessCalendar.named("Asia/Shanghai")
    start = calendar.start_of(DAY)
    folder = tempfile.mkdtemp(prefix="paygate-bench-recon-")
    path = os.path.join(folder, "statement.csv")
    try:
        await migrate(config)
        print(f"seeding {n:,} attempts ...", flush=True)
        print(f"  seeded in {seed_attempts(config, n, faults, start):.1f} s", flush=True)
        began = time.perf_counter()
        with open(path, "wb") as out:
            write_statement(statement_lines(n, faults, start), out, day=DAY, merchant_id=CHANNEL)
        print(f"  statement written in {time.perf_counter() - began:.1f} s ({os.path.getsize(path):,} bytes)")
        db = Database(config)
        await db.start()
        try:
            store = MySQLReconStore(db)
            recon = Reconciler(
                store,
                MySQLFlowStore(db, group_commit=False),
                {CHANNEL: ChannelBooks(None, FeeSchedule(rate_ppm=FEE_PPM))},
                calendar,
                ReconConfig(carry_over_days=0, stage_batch=batch),
            )
            began = time.perf_counter()
            result = await recon.import_file(CHANNEL, DAY, path, "sandbox", operator="bench")
            elapsed = time.perf_counter() - began
            items = await store.items(run_id=result.id, limit=1_000_000)
        finally:
            await db.stop()
    finally:
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(folder)
        if not keep:
            admin = pymysql.connect(host=config.host, port=config.port, user=config.user, password="")
            try:
                with admin.cursor() as cur:
                    cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            finally:
                admin.close()
    expected = faults.expected()
    flagged = {(i.item_class.value, i.channel_order_no) for i in items if i.item_class in DISCREPANCIES}
    settled = {i.channel_order_no for i in items if i.item_class.value == "resolved_by_statement"}
    found = len(flagged & expected)
    false_positives = len(flagged - expected)
    ok = found == len(expected) and false_positives == 0 and settled == {order_no(s) for s in faults.pending}
    print(
        f"  run #{result.id}: {result.outcome}, {len(settled)} flows settled by the statement,"
        f" {elapsed:.1f} s end to end",
        flush=True,
    )
    line = (
        f"recon: lines={result.lines} matched={result.matched} discrepancies={result.discrepancies}"
        f" injected={len(expected)} found={found} false_positives={false_positives}"
        f" lines_per_s={int(result.lines / elapsed) if elapsed else 0} rss_mb={peak_rss_mb()}"
    )
    return line, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paygate bench recon", description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="attempts, and statement lines (about)")
    parser.add_argument("--faults", type=int, default=20, help="faults of each class")
    parser.add_argument(
        "--batch", type=int, default=ReconConfig().stage_batch, help="lines per staging INSERT (the config's default)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--port", type=int, default=3306, help="MariaDB's port on 127.0.0.1")
    args = parser.parse_args(argv)
    if args.lines < args.faults * 6 + 1:
        parser.error("--lines must exceed 6 x --faults")
    line, ok = asyncio.run(run(args.lines, args.faults, args.batch, args.keep, args.port))
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
