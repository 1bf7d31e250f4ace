"""``paygate bench plans``: a loan book's time point drained at the channels' rate limits, with a crash in the middle.

What runs (all on 127.0.0.1, real processes): a tansu broker, two ``paygate sandbox`` banks, and
``paygate serve`` with the plan executor on (replica id fixed, so a restart takes back at once
what it held), publishing to the broker.

1. **The book**: ``--book`` instalments (``--per-plan`` a plan, 10 by default: 100,000 loans for a
   million instalments) submitted through ``WithholdingPlans/ImportPlans`` in messages of
   ``--chunk`` instalments, on cards bound to both banks. ``submit_per_s`` is instalments per
   second of that stream, from the first message sent to the last answer.
2. **The time point**: ``--due`` of them (the first instalment of the first ``--due`` plans) are
   due yesterday at 00:00; every other one is due in the months ahead, so the claims walk past
   a million rows that are not due. An operator starts the run by hand (``PlanAdmin/StartRun``).
3. **The crash**: when ``--kill-at`` of the due instalments have been attempted, the gateway is
   SIGKILLed and started again (``restarts=1``); its claims and withholds in flight come back to
   it (or to the poller) as they would in production.
4. **The measure**: each bank is limited to ``--rate`` plan withholds a second (``[plans.rate_limits]``),
   so ``ideal_s = due / (2 x rate)``; ``drained_s`` is from the run's start to the last attempt
   of it recorded (the database's own timestamps); ``efficiency = ideal_s / drained_s``.
   ``duplicates`` counts instalments debited more than once on the banks' own ledgers;
   ``missed`` due instalments the run never attempted.

Why the default rate (``--rate 40``, 80 withholds/s in all): on the 2-core machines this runs on,
the gateway's own withhold path tops out at about 130 a second (docs/BENCHMARKS.md, zero-latency
stage, a gRPC client on the same cores), and the executor's claims, compare-and-sets and events
add three short transactions per instalment; 80 a second leaves the gateway headroom, so the
banks' limits, not the gateway, set the pace (``gateway_busy`` in the report says how much of a
core the gateway used). The banks answer after 20-60 ms.

Last line (machine-readable, one line)::

    plans: book=<n> items=<n> drained_s=<n> ideal_s=<n> efficiency=<ratio> duplicates=<n> missed=<n>
    restarts=<n> submit_per_s=<n>
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomysql
import grpc

from devstack.agreements import bind_card
from devstack.cards import luhn_card
from devstack.config import GatewayPorts, gateway_config
from devstack.kafka import KafkaBroker, gateway_kafka
from devstack.processes import ProcessSet
from devstack.stack import GatewayProcess, SandboxProcess
from gateway.businessday import BusinessCalendar
from gateway.store.db import DatabaseConfig, migrate
from paygate.v1 import gateway_pb2, gateway_pb2_grpc, plans_pb2, plans_pb2_grpc

CALLER = "loan-book"
TOKEN = "bench-loan-book-token-000000001"
OPERATOR_TOKEN = "bench-operator-token-0000000001"
BANKS = ("bank-a", "bank-b")
BURST_S = 0.2


@dataclass
class Options:
    book: int
    due: int
    rate: float
    per_plan: int
    chunk: int
    kill_at: float
    cards: int
    concurrency: int
    report_s: float
    database: str
    keep_db: bool
    workdir: Path
    timeout_s: float


@dataclass
class Result:
    book: int
    items: int
    drained_s: float
    ideal_s: float
    duplicates: int
    missed: int
    restarts: int
    submit_per_s: float

    @property
    def efficiency(self) -> float:
        return self.ideal_s / self.drained_s if self.drained_s > 0 else 0.0

    def line(self) -> str:
        return (
            f"plans: book={self.book} items={self.items} drained_s={self.drained_s:.1f} ideal_s={self.ideal_s:.1f}"
            f" efficiency={self.efficiency:.3f} duplicates={self.duplicates} missed={self.missed}"
            f" restarts={self.restarts} submit_per_s={self.submit_per_s:.0f}"
        )


async def sql(database: str, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = await aiomysql.connect(host="127.0.0.1", user="root", password="", db=database, autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute(statement, args or None)
            return list(await cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


class PlanBench:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.procs = ProcessSet(opts.workdir / "processes.log")
        self.broker = KafkaBroker(procs=self.procs)
        self.banks = {name: SandboxProcess(name, {"p50_ms": 25, "p99_ms": 60, "magic": False}) for name in BANKS}
        self.gateway = GatewayProcess(
            self.procs, opts.workdir / "paygate.toml", GatewayPorts.free(), log=opts.workdir / "gateway.log"
        )
        self.md = (("authorization", f"Bearer {TOKEN}"),)
        self.op_md = (("authorization", f"Bearer {OPERATOR_TOKEN}"),)
        self.calendar = BusinessCalendar.named()
        self.day = self.calendar.today(datetime.now(UTC)) - timedelta(days=1)
        self.cards: list[str] = []
        self.restarts = 0
        self.gateway_cpu = 0.0
        self.run_id = 0

    def config(self) -> dict[str, Any]:
        opts = self.opts
        return gateway_config(
            self.gateway.ports,
            server={"default_wait_ms": 5000, "grace_s": 5, "replica_id": "bench-executor"},
            database={"database": opts.database, "pool_max": 40},
            security={"account_hash_key": "bench-plans-account-hash-key-000"},
            callers={CALLER: TOKEN},
            operators={"oncall": {"token": OPERATOR_TOKEN, "role": "operator"}},
            logging={"format": "json", "level": "WARNING"},
            poller={
                "interval_s": 0.2,
                "first_delay_s": 0.5,
                "schedule": [[0.5, 20], [2, 30]],
                "not_found_close_after_s": 5,
            },
            kafka=gateway_kafka(self.broker.bootstrap, "paygate.flow-results"),
            channels=[bank.channel(timeout_s=5.0) for bank in self.banks.values()],
            plans={
                "scheduler": False,  # the operator starts yesterday's time point by hand
                "concurrency": opts.concurrency,
                "claim_batch": 32,
                "lease_s": 15.0,
                "wait_s": 5.0,
                "tick_s": 0.2,
                "resolve_interval_s": 0.5,
                "burst_s": BURST_S,
                "policies": {"default": {"time_points": ["00:00", "06:00"], "retry_days": 3}},
                "rate_limits": dict.fromkeys(BANKS, opts.rate),
            },
        )

    # --- the stack ---------------------------------------------------------------------

    async def start(self) -> None:
        await sql("", f"DROP DATABASE IF EXISTS `{self.opts.database}`")
        await migrate(DatabaseConfig(database=self.opts.database))
        await asyncio.to_thread(self.broker.start)
        for name, bank in self.banks.items():
            await asyncio.to_thread(bank.start, self.procs, log=self.opts.workdir / f"{name}.log")
        self.gateway.write_config(self.config())
        await asyncio.to_thread(self.gateway.start)
        await self.bind_cards()

    def stop(self) -> None:
        self.procs.stop_all()
        self.broker.stop()

    async def restore(self) -> None:
        if not self.opts.keep_db:
            await sql("", f"DROP DATABASE IF EXISTS `{self.opts.database}`")

    async def bind_cards(self) -> None:
        rng = random.Random(17)
        self.cards = [luhn_card(rng) for _ in range(self.opts.cards)]
        async with grpc.aio.insecure_channel(self.gateway.address) as channel:
            stub = gateway_pb2_grpc.PaymentGatewayStub(channel)
            for i, card in enumerate(self.cards):
                for name, bank in self.banks.items():
                    await bind_card(
                        stub,
                        self.md,
                        request_id=f"sign-{i}-{name}",
                        channel=name,
                        card=card,
                        sms_code=bank.last_sms_code,
                    )

    # --- the book ----------------------------------------------------------------------

    def _messages(self) -> list[plans_pb2.SubmitPlansRequest]:
        opts = self.opts
        plans_total = -(-opts.book // opts.per_plan)
        due_day = self.day.isoformat()
        future = [(self.day + timedelta(days=30 * (k + 1))).isoformat() for k in range(opts.per_plan)]
        messages: list[plans_pb2.SubmitPlansRequest] = []
        current = plans_pb2.SubmitPlansRequest()
        in_current = 0
        made = 0
        for p in range(plans_total):
            n = min(opts.per_plan, opts.book - made)
            plan = current.plans.add(
                plan_id=f"L{p:07d}",
                product="cash-loan",
                account_no=self.cards[p % len(self.cards)],
                bank_code="ICBC",
            )
            for k in range(n):
                plan.instalments.add(
                    instalment_id=f"L{p:07d}-{k:02d}",
                    due_date=due_day if (k == 0 and p < opts.due) else future[k],
                    amount=gateway_pb2.Money(amount=10_000 + (p % 500) * 100 + 10, currency="CNY"),
                )
            made += n
            in_current += n
            if in_current >= opts.chunk:
                messages.append(current)
                current, in_current = plans_pb2.SubmitPlansRequest(), 0
        if in_current:
            messages.append(current)
        return messages

    async def submit_book(self) -> float:
        """Stream the book; instalments accepted per second."""
        messages = self._messages()
        accepted = 0

        async def stream() -> AsyncIterator[plans_pb2.SubmitPlansRequest]:
            for message in messages:
                yield message

        async with grpc.aio.insecure_channel(
            self.gateway.address, options=[("grpc.max_send_message_length", 1 << 20)]
        ) as channel:
            stub = plans_pb2_grpc.WithholdingPlansStub(channel)
            started = time.monotonic()
            async for reply in stub.ImportPlans(stream(), metadata=self.md):
                if reply.rejected:
                    raise RuntimeError(f"book refused items: {reply.rejected[:3]}")
                accepted += reply.instalments_accepted
            elapsed = time.monotonic() - started
        if accepted != self.opts.book:
            raise RuntimeError(f"book: {accepted} of {self.opts.book} instalments accepted")
        return accepted / elapsed

    # --- the run ---------------------------------------------------------------------

    async def start_run(self) -> None:
        async with grpc.aio.insecure_channel(self.gateway.address) as channel:
            run = await plans_pb2_grpc.PlanAdminStub(channel).StartRun(
                plans_pb2.RunRequest(
                    policy="default", business_day=self.day.isoformat(), time_point="00:00", reason="bench"
                ),
                metadata=self.op_md,
            )
        if run.due != self.opts.due:
            raise RuntimeError(f"the run found {run.due} due, not {self.opts.due}")
        rows = await sql(
            self.opts.database,
            "SELECT id FROM plan_runs WHERE policy='default' AND business_day=%s AND time_point='00:00'",
            (self.day,),
        )
        self.run_id = int(rows[0][0])

    async def counts(self) -> tuple[int, int, int]:
        """(attempted by the run, still due or claimed, in flight)."""
        db = self.opts.database
        (attempted,) = (await sql(db, "SELECT COUNT(*) FROM instalment_attempts WHERE run_id=%s", (self.run_id,)))[0]
        (left,) = (
            await sql(
                db,
                "SELECT COUNT(*) FROM instalments WHERE policy='default' AND status IN ('SCHEDULED','CLAIMED')"
                " AND next_attempt_at <= (SELECT scheduled_at FROM plan_runs WHERE id=%s)",
                (self.run_id,),
            )
        )[0]
        (flying,) = (await sql(db, "SELECT COUNT(*) FROM instalments WHERE status='IN_FLIGHT'"))[0]
        return int(attempted), int(left), int(flying)

    async def drain(self) -> float:
        """Start the run, SIGKILL and restart the gateway at --kill-at, wait for the end; drained seconds."""
        opts = self.opts
        pid = self.gateway.proc.pid if self.gateway.proc else 0
        cpu0 = cpu_seconds(pid) if pid else 0.0
        await self.start_run()
        started = time.monotonic()
        deadline = started + opts.timeout_s
        killed = False
        next_report = started
        while time.monotonic() < deadline:
            attempted, left, flying = await self.counts()
            if time.monotonic() >= next_report:
                print(
                    f"  {time.monotonic() - started:6.1f} s: {attempted} attempted, {left} due, {flying} in flight",
                    flush=True,
                )
                next_report += opts.report_s
            if not killed and attempted >= opts.kill_at * opts.due:
                if pid:
                    self.gateway_cpu += cpu_seconds(pid) - cpu0
                await asyncio.to_thread(self.gateway.kill)
                print(f"  SIGKILL at {attempted} attempted; restarting", flush=True)
                await asyncio.to_thread(self.gateway.start)
                self.restarts += 1
                killed = True
                pid = self.gateway.proc.pid if self.gateway.proc else 0
                cpu0 = cpu_seconds(pid) if pid else 0.0
            if killed and left == 0 and flying == 0:
                break
            await asyncio.sleep(0.5)
        else:
            raise RuntimeError("the run did not drain in time")
        if pid:
            self.gateway_cpu += cpu_seconds(pid) - cpu0
        (drained,) = (
            await sql(
                opts.database,
                "SELECT TIMESTAMPDIFF(MICROSECOND, r.started_at, MAX(COALESCE(a.finished_at, a.created_at)))"
                " FROM instalment_attempts a JOIN plan_runs r ON r.id = a.run_id WHERE a.run_id=%s",
                (self.run_id,),
            )
        )[0]
        return int(drained) / 1e6

    async def tally(self) -> tuple[int, int, dict[str, int]]:
        """(duplicates, missed, busiest second per bank) from the banks' ledgers and the database."""
        order_to_ref: dict[str, str] = {}
        for order_no, request_id in await sql(
            self.opts.database,
            "SELECT a.channel_order_no, f.request_id FROM attempts a JOIN flows f ON f.id = a.flow_id"
            " WHERE f.request_id LIKE 'plan:%%'",
        ):
            order_to_ref[order_no] = request_id.rsplit(":", 1)[1]
        debits: dict[str, int] = {}
        busiest: dict[str, int] = {}
        for name, bank in self.banks.items():
            ledger = await asyncio.to_thread(bank.ledger)
            times = sorted(e["created_at"] for e in ledger["entries"] if e["order_no"] in order_to_ref)
            j, best = 0, 0
            for i, t in enumerate(times):  # the most orders the bank received in any one second
                while times[j] <= t - 1.0:
                    j += 1
                best = max(best, i - j + 1)
            busiest[name] = best
            for order_no, n in ledger["debits_by_order"].items():
                ref = order_to_ref.get(order_no)
                if ref is not None and n:
                    debits[ref] = debits.get(ref, 0) + n
        for label, query in (
            ("go", "SELECT UNIX_TIMESTAMP(created_at) FROM instalment_attempts WHERE run_id=%s"),
            (
                "recorded",
                "SELECT UNIX_TIMESTAMP(a.created_at) FROM attempts a JOIN flows f ON f.id=a.flow_id"
                " WHERE f.request_id LIKE 'plan:%%' AND %s > 0",
            ),
        ):
            stamps = sorted(float(r[0]) for r in await sql(self.opts.database, query, (self.run_id,)))
            j, best = 0, 0
            for i, t in enumerate(stamps):
                while stamps[j] <= t - 1.0:
                    j += 1
                best = max(best, i - j + 1)
            busiest[label] = best
        duplicates = sum(1 for n in debits.values() if n > 1)
        (attempted,) = (
            await sql(
                self.opts.database,
                "SELECT COUNT(DISTINCT instalment_ref) FROM instalment_attempts WHERE run_id=%s",
                (self.run_id,),
            )
        )[0]
        return duplicates, self.opts.due - int(attempted), busiest


async def main_async(opts: Options) -> int:
    bench = PlanBench(opts)
    try:
        print(f"plans bench: book {opts.book}, {opts.due} due, 2 banks at {opts.rate:g}/s each", flush=True)
        await bench.start()
        submit_per_s = await bench.submit_book()
        print(f"  book submitted: {opts.book} instalments, {submit_per_s:.0f}/s", flush=True)
        drained = await bench.drain()
        duplicates, missed, busiest = await bench.tally()
        ideal = opts.due / (opts.rate * len(BANKS))
        result = Result(opts.book, opts.due, drained, ideal, duplicates, missed, bench.restarts, submit_per_s)
        cap = max(1.0, opts.rate * BURST_S)
        print(
            f"  busiest second at the banks: {busiest} (limit {opts.rate:g}/s each, bucket {cap:g});"
            f" gateway_busy={bench.gateway_cpu / drained:.2f} cores while draining",
            flush=True,
        )
        print(result.line(), flush=True)
        return 0 if duplicates == 0 and missed == 0 else 1
    finally:
        bench.stop()
        await bench.restore()


def parse(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="paygate bench plans", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--book", type=int, default=1_000_000, help="instalments in the book")
    p.add_argument("--due", type=int, default=20_000, help="instalments due at the time point")
    p.add_argument("--rate", type=float, default=40.0, help="each bank's limit, plan withholds per second")
    p.add_argument("--per-plan", type=int, default=10, help="instalments per plan (loan)")
    p.add_argument("--chunk", type=int, default=10_000, help="instalments per ImportPlans message")
    p.add_argument("--kill-at", type=float, default=0.5, help="SIGKILL when this share of the due was attempted")
    p.add_argument("--cards", type=int, default=200, help="cards bound to both banks")
    p.add_argument("--concurrency", type=int, default=192, help="[plans] concurrency")
    p.add_argument("--report", type=float, default=10.0, help="progress line every this many seconds")
    p.add_argument("--database", default="paygate_bench_plans")
    p.add_argument("--keep-db", action="store_true")
    p.add_argument("--timeout", type=float, default=900.0, help="give up draining after this many seconds")
    p.add_argument("--short", action="store_true", help="a small book for the test suite")
    ns = p.parse_args(argv)
    if ns.short:
        ns.book, ns.due, ns.rate, ns.per_plan, ns.chunk, ns.cards = 6_000, 600, 40.0, 3, 3_000, 24
    if ns.due > -(-ns.book // ns.per_plan):
        p.error("--due can be at most the number of plans (book / per-plan)")
    workdir = Path(tempfile.mkdtemp(prefix="paygate-bench-plans-"))
    return Options(
        ns.book,
        ns.due,
        ns.rate,
        ns.per_plan,
        ns.chunk,
        ns.kill_at,
        ns.cards,
        ns.concurrency,
        ns.report,
        ns.database,
        ns.keep_db,
        workdir,
        ns.timeout,
    )


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
