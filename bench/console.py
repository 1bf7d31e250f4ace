"""``paygate bench console`` (``python -m bench.console``): the console's pages with 1,000,000 flows in MariaDB.

Bulk-loads N flows (one attempt each, a few thousand unpublished outbox rows and audit entries)
spread over the last 60 days, with :func:`load` (``INSERT ... SELECT`` from MariaDB's sequence
engine: a million rows in well under a minute), starts a gateway with the console over that
database, signs in, and times each page over HTTP (the whole answer: queries and rendering),
several runs each; then prints the EXPLAIN of every flow-search shape (the index it uses, and
that no filesort happens). With ``--instalments`` (default 1,000,000) it loads a book of withholding
plans too (four instalments a plan, due over a year around today, 1 in 50 due today with their
attempts in today's 12:00 run) and times the plans screen and its instalment searches the same
way. docs/CONSOLE.md has the figures.

Last line: ``console: flows=<n> instalments=<n> pages=<n> worst_p50_ms=<x> worst_max_ms=<y>``
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp
import pymysql

from channels.sandbox.simulator import SandboxSimulator
from channels.simkit import Behaviour
from devstack.config import GatewayPorts, gateway_config
from gateway.app import Gateway
from gateway.businessday import BusinessCalendar
from gateway.config import from_mapping
from gateway.store.console_plans import instalment_search_sql
from gateway.store.console_queries import flow_search_sql
from gateway.store.console_rows import FlowCursor, FlowQuery, InstalmentCursor, InstalmentQuery
from gateway.store.db import DatabaseConfig, migrate

OPERATOR_TOKEN = "bench-console-operator-token-0001"
SECRET = "bench-console-secret-key-0123456789abcdef"
CHANNELS = ("bank-a", "bank-b", "bank-c")
CALLERS = ("loan-servicing", "collections", "disbursement")
SPAN_S = 60 * 86400  # the flows are spread over the last 60 days


def _connect(config: DatabaseConfig) -> pymysql.connections.Connection:
    return pymysql.connect(
        host=config.host,
        port=config.port,
        user=config.user,
        password=config.password.reveal(),
        db=config.database,
        autocommit=True,
    )


def _one(cur: Any) -> Any:
    row = cur.fetchone()
    assert row is not None
    return row


def load(config: DatabaseConfig, flows: int, *, step: int = 200_000) -> float:
    """Insert ``flows`` synthetic flows with one attempt each (and some outbox and audit rows); seconds taken.

    Kinds: 1 in 10 a payout, 1 in 50 a refund, else withholds. Statuses: 8 % FAILED, PROCESSING for 1 in 500
    of the last two days' flows and for 1 in 100,000 older ones (those need review), the rest SUCCEEDED.
    Times spread evenly over the last 60 days.
    Descriptions hold ``<script>`` now and then, as a hostile caller's might.
    """
    started = time.perf_counter()
    conn = _connect(config)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION time_zone = '+00:00'")
            cur.execute("SELECT UTC_TIMESTAMP(6)")
            now = _one(cur)[0]
            # the moment of flow number s.seq: evenly spread, the newest now (values of our own, not input)
            gap_us = SPAN_S * 1_000_000 // flows
            # still open: 1 in 500 of the last two days' flows (their polls run about two days), and a
            # few older ones an exhausted poll schedule left in review
            review = "s.seq % 100000 = 7"
            open_ = f"((s.seq % 500 = 7 AND s.seq > {flows - flows // 30}) OR {review})"
            moment = f"TIMESTAMP'{now.isoformat(sep=' ')}' - INTERVAL (({flows} - s.seq) * {gap_us}) MICROSECOND"
            for start in range(0, flows, step):
                n = min(step, flows - start)
                cur.execute(
                    "INSERT INTO flows (flow_no, caller, request_id, kind, amount, currency, account_hash,"
                    " account_masked, bank_code, request_hash, status, channel, failure_code, needs_review,"
                    " description, created_at, updated_at, finished_at)"
                    " SELECT CONCAT('01BENCH', LPAD(s.seq, 19, '0')),"
                    " ELT(1 + s.seq % 3, 'loan-servicing', 'collections', 'disbursement'),"
                    " CONCAT('bench-', s.seq),"
                    " CASE WHEN s.seq % 50 = 0 THEN 'REFUND' WHEN s.seq % 10 = 0 THEN 'PAYOUT' ELSE 'WITHHOLD' END,"
                    " 100 + (s.seq * 7919) % 500000, 'CNY', SHA2(s.seq % 20000, 256),"
                    " CONCAT('************', LPAD(s.seq % 10000, 4, '0')), 'ICBC', SHA2(s.seq, 256),"
                    f" CASE WHEN {open_} THEN 'PROCESSING' WHEN s.seq % 100 < 8 THEN 'FAILED' ELSE 'SUCCEEDED' END,"
                    " ELT(1 + s.seq % 3, 'bank-a', 'bank-b', 'bank-c'),"
                    f" IF(s.seq % 100 < 8 AND NOT ({open_}), 'INSUFFICIENT_FUNDS', ''),"
                    f" IF({review}, 1, 0),"
                    " IF(s.seq % 1000 = 3, '<script>alert(1)</script> repayment', 'loan repayment'),"
                    f" {moment}, {moment},"
                    f" IF({open_}, NULL, {moment} + INTERVAL 300000 MICROSECOND)"
                    f" FROM seq_{start + 1}_to_{start + n} s"
                )
            cur.execute(
                "INSERT INTO attempts (flow_id, seq, channel, operation, channel_order_no, status, amount, currency,"
                " account_hash, bank_code, code, payer_attributable, created_at, updated_at, finished_at)"
                " SELECT f.id, 1, f.channel, LOWER(f.kind), CONCAT(f.flow_no, '-1'),"
                " IF(f.status = 'PROCESSING', 'PENDING', f.status), f.amount, f.currency, f.account_hash,"
                " f.bank_code, f.failure_code, f.failure_code <> '', f.created_at, f.updated_at, f.finished_at"
                " FROM flows f WHERE f.flow_no LIKE '01BENCH%'"
            )
            cur.execute(
                "INSERT INTO outbox (event_id, event_type, flow_id, caller, msg_key, payload, created_at, attempts,"
                " last_error) SELECT CONCAT('01BENCHEV', LPAD(f.id, 17, '0')), 'FLOW_RESULT', f.id, f.caller,"
                " f.flow_no, '', f.created_at, IF(f.id % 2 = 0, 10, 1), IF(f.id % 2 = 0, 'broker refused', '')"
                " FROM flows f WHERE f.flow_no LIKE '01BENCH%' ORDER BY f.id DESC LIMIT 3000"
            )
            cur.execute(
                "INSERT INTO audit_log (operator, action, target, reason, detail, created_at)"
                " SELECT ELT(1 + s.seq % 3, 'alice', 'bob', 'carol'), 'requery_flow',"
                " CONCAT('01BENCH', LPAD(s.seq * 97, 19, '0')), 're-query', '{}',"
                f" TIMESTAMP'{now.isoformat(sep=' ')}' - INTERVAL s.seq MINUTE FROM seq_1_to_20000 s"
            )
            for table in ("flows", "attempts", "outbox", "audit_log"):
                cur.execute(f"ANALYZE TABLE {table}")
                cur.fetchall()
    finally:
        conn.close()
    return time.perf_counter() - started


def load_plans(config: DatabaseConfig, instalments: int, today: date) -> float:
    """Insert ``instalments`` // 4 plans of four instalments each, and today's 12:00 run; seconds taken.

    Due dates spread over the 180 days before and after ``today``, 1 in 50 due today. Before today:
    SUCCEEDED (1 in 10 STOPPED); today: attempted in today's 12:00 run, 90 % SUCCEEDED, 8 % failed
    (INSUFFICIENT_FUNDS, SCHEDULED again for 18:00), 2 % IN_FLIGHT; after today: SCHEDULED.
    """
    started = time.perf_counter()
    plans = max(1, instalments // 4)
    conn = _connect(config)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION time_zone = '+00:00'")
            cur.execute("SELECT UTC_TIMESTAMP(6)")
            now = _one(cur)[0]
            stamp = f"TIMESTAMP'{now.isoformat(sep=' ')}'"
            for start in range(0, plans, 200_000):
                n = min(200_000, plans - start)
                cur.execute(
                    "INSERT INTO plans (caller, plan_id, product, policy, status, account_sealed, account_hash,"
                    " account_masked, bank_code, request_hash, created_at, updated_at)"
                    " SELECT ELT(1 + s.seq % 3, 'loan-servicing', 'collections', 'disbursement'),"
                    " CONCAT('bench-plan-', s.seq), 'cash-loan', 'default', 'ACTIVE', x'00', SHA2(s.seq, 256),"
                    " CONCAT('************', LPAD(s.seq % 10000, 4, '0')), 'ICBC', SHA2(s.seq, 256),"
                    f" {stamp}, {stamp} FROM seq_{start + 1}_to_{start + n} s"
                )
            day = f"DATE'{today.isoformat()}'"
            number = "CAST(p.id * 4 + k.seq AS SIGNED)"
            offset = f"IF({number} % 50 = 0, 0, {number} % 360 - 180 + IF({number} % 360 >= 180, 1, 0))"
            due = f"{day} + INTERVAL {offset} DAY"
            status = (
                f"IF({offset} < 0, IF({number} % 10 = 1, 'STOPPED', 'SUCCEEDED'), IF({offset} > 0, 'SCHEDULED',"
                f" CASE WHEN {number} % 100 < 90 THEN 'SUCCEEDED' WHEN {number} % 100 < 98 THEN 'SCHEDULED'"
                " ELSE 'IN_FLIGHT' END))"
            )
            for start in range(0, plans, 100_000):
                cur.execute(
                    "INSERT INTO instalments (plan_ref, caller, plan_id, instalment_id, product, policy, due_date,"
                    " last_day, amount, original_amount, currency, status, next_attempt_at, attempts, last_code,"
                    " stop_reason, request_hash, created_at, updated_at)"
                    f" SELECT p.id, p.caller, p.plan_id, CONCAT(p.plan_id, '-', k.seq), 'cash-loan', 'default', {due},"
                    f" {due} + INTERVAL 3 DAY, 10000 + {number} % 90000, 10000 + {number} % 90000, 'CNY', {status},"
                    f" IF({status} = 'SCHEDULED', TIMESTAMP({due} + INTERVAL IF({offset} = 0, 10, 4) HOUR), NULL),"
                    f" IF({offset} > 0, 0, 1), IF({offset} = 0 AND {status} = 'SCHEDULED', 'INSUFFICIENT_FUNDS', ''),"
                    f" IF({status} = 'STOPPED', 'ACCOUNT_FROZEN', ''), SHA2({number}, 256), {stamp}, {stamp}"
                    f" FROM plans p JOIN seq_1_to_4 k WHERE p.id > {start} AND p.id <= {start + 100_000}"
                )
            cur.execute(
                "INSERT INTO plan_runs (policy, business_day, time_point, scheduled_at, deadline, status, started_by,"
                " due_by_product, started_at, finished_at, updated_at) VALUES ('default', %s, '12:00',"
                " TIMESTAMP(%s) - INTERVAL 4 HOUR, TIMESTAMP(%s) + INTERVAL 2 HOUR, 'FINISHED', 'schedule',"
                " NULL, %s, %s, %s)",
                (today, today, today, now, now, now),
            )
            run_id = cur.lastrowid
            cur.execute(
                "INSERT INTO instalment_attempts (instalment_ref, run_id, business_day, time_point, request_id,"
                " amount, currency, status, code, channel, created_at, finished_at)"
                f" SELECT i.id, {run_id}, i.due_date, '12:00', CONCAT('plan:', DATE_FORMAT(i.due_date, '%%Y%%m%%d'),"
                " ':1200:', i.id), i.amount, i.currency, IF(i.status = 'SCHEDULED', 'FAILED', i.status),"
                f" i.last_code, 'bank-a', {stamp}, IF(i.status = 'IN_FLIGHT', NULL, {stamp})"
                " FROM instalments i WHERE i.due_date = %s",
                (today,),
            )
            for table in ("plans", "instalments", "instalment_attempts", "plan_runs"):
                cur.execute(f"ANALYZE TABLE {table}")
                cur.fetchall()
    finally:
        conn.close()
    return time.perf_counter() - started


def instalment_shapes(today: date) -> dict[str, tuple[InstalmentQuery, str]]:
    """One instalment search of each shape (the query, its page's query string), with values in the loaded data."""
    later = (today + timedelta(days=30)).isoformat()
    return {
        "first visit (due from today)": (InstalmentQuery(due_from=today, limit=51), ""),
        "no filter": (InstalmentQuery(limit=51), "from="),
        "plan id": (InstalmentQuery(plan_id="bench-plan-123457", limit=51), "plan_id=bench-plan-123457&from="),
        "caller + due from today": (
            InstalmentQuery(caller="collections", due_from=today, limit=51),
            f"caller=collections&from={today.isoformat()}",
        ),
        "status STOPPED": (InstalmentQuery(status="STOPPED", limit=51), "status=STOPPED&from="),
        "status IN_FLIGHT": (InstalmentQuery(status="IN_FLIGHT", limit=51), "status=IN_FLIGHT&from="),
        "one due day, a month ahead": (
            InstalmentQuery(due_from=today + timedelta(days=30), due_to=today + timedelta(days=30), limit=51),
            f"from={later}&to={later}",
        ),
        "deep cursor (150 days ahead)": (
            InstalmentQuery(after=InstalmentCursor(today + timedelta(days=150), 0), limit=51),
            "from=&after=" + _instalment_cursor(InstalmentCursor(today + timedelta(days=150), 0)),
        ),
    }


def _instalment_cursor(cursor: InstalmentCursor) -> str:
    from gateway.console.plans import encode_cursor

    return encode_cursor(cursor)


def explain(config: DatabaseConfig, query: FlowQuery | InstalmentQuery) -> dict[str, Any]:
    """The EXPLAIN row of a flow or instalment search (which key, how many rows it expects, its Extra)."""
    sql, args = flow_search_sql(query) if isinstance(query, FlowQuery) else instalment_search_sql(query)
    conn = _connect(config)
    try:
        with conn.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute("SET SESSION time_zone = '+00:00'")
            cur.execute("EXPLAIN " + sql, args)
            row: dict[str, Any] = _one(cur)  # the first table of the plan: flows f, or instalments i
            return row
    finally:
        conn.close()


def search_shapes(config: DatabaseConfig) -> dict[str, FlowQuery]:
    """One flow search of each shape, with values that exist in the loaded data."""
    conn = _connect(config)
    try:
        with conn.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute("SELECT flow_no, request_id, caller, created_at, id FROM flows ORDER BY id LIMIT 1 OFFSET 1000")
            old = _one(cur)
            cur.execute("SELECT MAX(created_at) AS newest, MIN(created_at) AS oldest FROM flows")
            span = _one(cur)
    finally:
        conn.close()
    week_ago = span["newest"] - timedelta(days=7)
    month_ago = span["newest"] - timedelta(days=30)
    return {
        "no filter (page 1)": FlowQuery(limit=51),
        "no filter, 30 days back (deep cursor)": FlowQuery(after=FlowCursor(month_ago, 10**12), limit=51),
        "flow number": FlowQuery(flow_no=old["flow_no"], limit=51),
        "request id": FlowQuery(request_id=old["request_id"], limit=51),
        "caller": FlowQuery(caller="collections", limit=51),
        "channel": FlowQuery(channel="bank-b", limit=51),
        "status PROCESSING": FlowQuery(status="PROCESSING", limit=51),
        "status FAILED + channel": FlowQuery(status="FAILED", channel="bank-c", limit=51),
        "kind REFUND": FlowQuery(kind="REFUND", limit=51),
        "needs review": FlowQuery(needs_review=True, limit=51),
        "date range (one day, a month ago)": FlowQuery(
            created_from=month_ago, created_to=month_ago + timedelta(days=1), limit=51
        ),
        "caller + date range (last 7 days)": FlowQuery(caller="loan-servicing", created_from=week_ago, limit=51),
        "amount range": FlowQuery(min_amount=100_000, max_amount=200_000, limit=51),
        "amount range + kind + date range": FlowQuery(
            kind="PAYOUT", min_amount=100_000, max_amount=101_000, created_from=month_ago, limit=51
        ),
    }


def _query_string(query: FlowQuery, calendar_day: Any = None) -> str:
    from urllib.parse import urlencode

    from gateway.console.views import encode_cursor

    params = {
        "flow_no": query.flow_no,
        "request_id": query.request_id,
        "caller": query.caller,
        "kind": query.kind,
        "status": query.status,
        "channel": query.channel,
        "min": f"{query.min_amount / 100:.2f}" if query.min_amount is not None else "",
        "max": f"{query.max_amount / 100:.2f}" if query.max_amount is not None else "",
        "review": "1" if query.needs_review else "",
        "after": encode_cursor(query.after) if query.after else "",
    }
    if query.created_from is not None:
        params["from"] = (query.created_from + __import__("datetime").timedelta(hours=8)).date().isoformat()
    if query.created_to is not None:
        params["to"] = (query.created_to + __import__("datetime").timedelta(hours=8)).date().isoformat()
    return urlencode({k: v for k, v in params.items() if v})


async def _time_pages(base: str, pages: Sequence[tuple[str, str]], runs: int) -> list[tuple[str, float, float, int]]:
    jar = aiohttp.CookieJar(unsafe=True)
    out = []
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        form = await (await session.get(f"{base}/login")).text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf is not None
        signed = await session.post(f"{base}/login", data={"csrf": csrf.group(1), "token": OPERATOR_TOKEN, "next": "/"})
        assert "/login" not in str(signed.url), "sign-in failed"
        for name, path in pages:
            times = []
            size = 0
            for _ in range(runs):
                started = time.perf_counter()
                response = await session.get(f"{base}{path}")
                body = await response.read()
                times.append((time.perf_counter() - started) * 1000)
                size = len(body) if response.status == 200 else -response.status
            out.append((name, statistics.median(times), max(times), size))
    return out


async def run(flows: int, runs: int, keep: bool, reuse: str = "", instalments: int = 0) -> int:
    name = reuse or f"pgbench_console_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
    if not reuse:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    config = DatabaseConfig(database=name, pool_min=2, pool_max=20)
    today = BusinessCalendar.named("Asia/Shanghai").day_of(datetime.now(UTC).replace(tzinfo=None))
    sims = [SandboxSimulator(Behaviour(), name=c, secret=f"{c}-secret", merchant_id=c) for c in CHANNELS]
    try:
        await migrate(config)
        if not reuse:
            print(f"loading {flows:,} flows ...", flush=True)
            seconds = load(config, flows)
            print(f"  loaded in {seconds:.1f} s", flush=True)
            if instalments:
                print(f"loading {instalments:,} instalments ...", flush=True)
                seconds = load_plans(config, instalments, today)
                print(f"  loaded in {seconds:.1f} s", flush=True)
        for sim in sims:
            await sim.start()
        raw = gateway_config(
            GatewayPorts(0, 0, 0),
            database={"database": name, "pool_min": 2, "pool_max": 20},
            callers={"loan-servicing": "bench-console-caller-token-0001"},
            operators={"ops": OPERATOR_TOKEN},
            channels=[{"id": s.name, "adapter": "sandbox", "settings": s.adapter_settings()} for s in sims],
            poller={"enabled": False},
            logging={"format": "text", "level": "WARNING"},
            console={"enabled": True, "port": 0, "secret_key": SECRET},
            plans={
                "enabled": False,  # the screen reads the book; nothing is withheld
                "policies": {"default": {"time_points": ["12:00", "18:00"]}},
                "products": {"cash-loan": "default"},
            },
        )
        gateway = Gateway.build(from_mapping(raw))
        await gateway.start()
        try:
            shapes = search_shapes(config)
            base = f"http://127.0.0.1:{gateway.console_port}"
            conn = _connect(config)
            with conn.cursor() as cur:
                cur.execute("SELECT flow_no FROM flows ORDER BY id DESC LIMIT 1 OFFSET 500")
                one = _one(cur)[0]
            conn.close()
            pages = [
                ("overview", "/"),
                *[(f"flows: {label}", f"/flows?{_query_string(q)}") for label, q in shapes.items()],
                ("flow detail", f"/flows/{one}"),
                ("review queue", "/review"),
                ("channels", "/channels"),
                ("outbox (1,500 parked, 1,500 waiting)", "/outbox"),
                ("audit log", "/audit"),
                ("audit log by operator", "/audit?operator=bob"),
                ("audit log by target", f"/audit?target=01BENCH{97 * 500:019d}"),
            ]
            plan_shapes = instalment_shapes(today) if instalments else {}
            pages += [(f"plans: {label}", f"/plans?{qs}" if qs else "/plans") for label, (_, qs) in plan_shapes.items()]
            timed = await _time_pages(base, pages, runs)
            print(f"\n{'page':<45} {'p50 ms':>8} {'max ms':>8} {'bytes':>9}")
            for label, p50, worst, size in timed:
                print(f"{label:<45} {p50:8.1f} {worst:8.1f} {size:9,}")
            print(f"\n{'flow search':<45} {'key':<26} {'rows':>8}  extra")
            for label, query in shapes.items():
                row = explain(config, query)
                print(f"{label:<45} {row['key'] or '-':<26} {row['rows'] or 0:>8}  {row['Extra'] or ''}")
            if plan_shapes:
                print(f"\n{'instalment search':<45} {'key':<26} {'rows':>8}  extra")
                for label, (plan_query, _) in plan_shapes.items():
                    row = explain(config, plan_query)
                    print(f"{label:<45} {row['key'] or '-':<26} {row['rows'] or 0:>8}  {row['Extra'] or ''}")
            started = time.perf_counter()
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
                form = await (await session.get(f"{base}/login")).text()
                csrf = re.search(r'name="csrf" value="([^"]+)"', form)
                assert csrf is not None
                await session.post(f"{base}/login", data={"csrf": csrf.group(1), "token": OPERATOR_TOKEN})
                response = await session.get(f"{base}/flows.csv?caller=collections")
                size = len(await response.read())
            export_s = time.perf_counter() - started
            print(
                f"\nCSV export of one caller's flows (capped at 200,000 rows): {size / 1e6:.1f} MB in {export_s:.1f} s"
            )
            refused = [label for label, _, _, size in timed if size < 0]
            if refused:
                print(f"console: pages that did not answer 200: {', '.join(refused)}")
                return 1
            worst_p50 = max(p50 for _, p50, _, _ in timed)
            worst_max = max(w for _, _, w, _ in timed)
            print(
                f"console: flows={flows} instalments={instalments} pages={len(timed)}"
                f" worst_p50_ms={worst_p50:.1f} worst_max_ms={worst_max:.1f}"
            )
        finally:
            await gateway.stop()
    finally:
        for sim in sims:
            await sim.stop()
        if not keep and not reuse:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console")
    parser.add_argument("--flows", type=int, default=1_000_000)
    parser.add_argument("--instalments", type=int, default=1_000_000, help="plan instalments to load (0: none)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", default="", help="time the pages of a database kept by an earlier --keep run")
    args = parser.parse_args(argv)
    return asyncio.run(run(args.flows, args.runs, args.keep, args.reuse, args.instalments))


if __name__ == "__main__":
    raise SystemExit(main())
