"""``paygate bench splits``: a business day of random joint-loan withholds and refunds, settled, checked to the fen.

What runs (127.0.0.1): MariaDB (a database of its own, dropped at the end unless ``--keep-db``),
two sandbox banks over HTTP (``bank-a`` takes the borrowers' withholds and refunds, with some
declines and some answers left pending for a callback or a poll; ``pay-bank`` holds the float
the funders are settled from) and the gateway, in this process, serving gRPC to a client in
this process.

1. ``--flows`` flows in all: about ``1 - --refund-share`` of them split withholds (an amount of
   1 fen to ``--max-amount``; 2-10 of ``--funders`` funders; shares in ppm or fixed amounts at
   random), sent ``--concurrency`` at a time; the rest partial refunds (1-3 a withhold, some
   taking all that is left) of withholds that succeeded.
2. Wait until no flow is PROCESSING; then settle the day (the settlement's clock is moved to
   the next morning: a day is settled only once it has ended) and wait for the payouts.
3. Check, each count reported:

   * ``sum_errors``: flows whose funder parts do not sum to the flow's amount (as the API
     returned them, and as the database holds them);
   * ``over_refunds``: funder parts refunded beyond what the funder got of the withhold;
   * ``settlement_mismatch``: funders whose settled amount differs from what the client's own
     tally of the parts says, or from what ``pay-bank``'s ledger paid into the funder's
     account; plus one if the sum of all funders' settled amounts differs from ``bank-a``'s
     ledger (succeeded withholds minus succeeded refunds), and one for each funder paid more
     than once.

Last line (machine-readable)::

    splits: flows=<n> funders=<n> sum_errors=<n> over_refunds=<n> settlement_mismatch=<n> flows_per_s=<n>

``--short`` is the variant the test suite runs (300 flows).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from typing import TYPE_CHECKING, Any

import grpc
import pymysql

from channels.sandbox.simulator import SandboxSimulator
from channels.simkit import Behaviour, Ledger
from channels.simkit.ledger import EntryKind, EntryStatus
from devstack import config as devconfig
from devstack.agreements import bind_card
from devstack.cards import luhn_card
from gateway.app import Gateway
from gateway.businessday import BusinessCalendar
from gateway.config import from_mapping
from gateway.store.db import DatabaseConfig, migrate
from paygate.v1 import gateway_pb2, gateway_pb2_grpc

if TYPE_CHECKING:
    from paygate.v1.gateway_pb2_grpc import PaymentGatewayAsyncStub

CALLER, TOKEN = "loans", "bench-splits-loans-token-0001"
OPERATOR_TOKEN = "bench-splits-operator-token-01"
PPM = 1_000_000


class MovableClock:
    """Real time until moved: the settlement asks it what day it is."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None) + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


@dataclass
class Options:
    flows: int
    funders: int
    refund_share: float
    max_amount: int
    concurrency: int
    cards: int
    seed: int
    keep_db: bool


@dataclass
class Tally:
    flows: int = 0
    withholds: int = 0
    answers: dict[str, gateway_pb2.Flow] = field(default_factory=dict)  # request id -> the Withhold's answer
    sum_errors: int = 0
    expected: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # funder -> net, client-side
    succeeded: list[tuple[gateway_pb2.Flow, int]] = field(default_factory=list)  # withhold, refundable left


def random_shares(rng: random.Random, amount: int, funders: list[str]) -> list[gateway_pb2.FunderShare]:
    n = rng.randint(2, min(10, len(funders)))
    chosen = rng.sample(funders, n)
    proportions = rng.random() < 0.5 or amount < n
    total = PPM if proportions else amount
    cuts = sorted(rng.sample(range(1, total), n - 1))
    values = [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
    if proportions:
        return [gateway_pb2.FunderShare(funder_id=f, ppm=v) for f, v in zip(chosen, values, strict=True)]
    return [gateway_pb2.FunderShare(funder_id=f, amount=v) for f, v in zip(chosen, values, strict=True)]


class SplitBench:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.funders = [f"f{i:02d}" for i in range(opts.funders)]
        self.accounts = {f: f"62220299{i:08d}" for i, f in enumerate(self.funders)}
        self.md = (("authorization", f"Bearer {TOKEN}"),)
        self.op_md = (("authorization", f"Bearer {OPERATOR_TOKEN}"),)
        self.calendar = BusinessCalendar.named()
        self.clock = MovableClock()
        self.tally = Tally()

    async def run(self) -> str:
        name = f"paygate_bench_splits_{uuid.uuid4().hex[:8]}"
        conn = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        db = DatabaseConfig(host="127.0.0.1", port=3306, database=name, pool_min=2, pool_max=40)
        try:
            return await self._run(db)
        finally:
            if not self.opts.keep_db:
                with conn.cursor() as cur:
                    cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            conn.close()

    async def _run(self, db: DatabaseConfig) -> str:
        payer_bank = Behaviour(
            magic=False,
            p50_ms=5,
            p99_ms=30,
            declines={"insufficient_funds": 0.04},
            pending_ratio=0.04,
            settle_after_ms=(100, 400),
            seed=self.opts.seed,
        )
        sims = {
            "bank-a": SandboxSimulator(
                payer_bank, name="bank-a", secret="bank-a-secret", ledger=Ledger(txn_prefix="BANKA")
            ),
            "pay-bank": SandboxSimulator(
                Behaviour(magic=False),
                name="pay-bank",
                secret="pay-bank-secret",
                ledger=Ledger(merchant_float=10**14, txn_prefix="PAYBK"),
            ),
        }
        for sim in sims.values():
            await sim.start()
        for account in self.accounts.values():
            sims["pay-bank"].ledger.set_balance(account, 0)
        await migrate(db)
        gateway = Gateway.build(from_mapping(self._config(db, sims)), clock=self.clock)
        await gateway.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
        try:
            stub: PaymentGatewayAsyncStub = gateway_pb2_grpc.PaymentGatewayStub(channel)
            cards = []
            for i in range(self.opts.cards):
                card = luhn_card()
                await bind_card(
                    stub,
                    self.md,
                    request_id=f"bind-{i}",
                    channel="bank-a",
                    card=card,
                    sms_code=lambda phone: sims["bank-a"].last_sms(phone).code,
                )
                cards.append(card)
                sims["bank-a"].ledger.set_balance(card, 10**13)  # declines come from the behaviour, not empty cards
            started = time.monotonic()
            refunds = int(self.opts.flows * self.opts.refund_share)
            await self._withholds(stub, cards, self.opts.flows - refunds)
            await self._settled(gateway)
            await self._refunds(stub, refunds)
            await self._settled(gateway)
            elapsed = time.monotonic() - started
            await self._refresh(stub)
            day = self.calendar.today(self.clock.now())
            self.clock.offset = self.calendar.at(day + timedelta(days=1), clock_time(1, 0)) - self.clock.now()
            settled = await gateway.settlement.settle_through(day)
            for _ in range(200):
                if not any(r.status == "PAYING" for r in settled):
                    break
                await asyncio.sleep(0.1)
                await gateway.settlement.follow_payouts()
                settled = [await gateway.settlement.store.settlement(r.funder_id, day) or r for r in settled]
            return await self._check(gateway, sims, day, elapsed)
        finally:
            await channel.close(None)
            await gateway.stop()
            for sim in sims.values():
                await sim.stop()

    def _config(self, db: DatabaseConfig, sims: dict[str, SandboxSimulator]) -> dict[str, Any]:
        channels = []
        for name, sim in sims.items():
            settings = dict(sim.adapter_settings())
            settings.pop("notify_url", None)
            settings.update({"timeout_s": 5.0, "connect_timeout_s": 2.0})
            channels.append({"id": name, "adapter": "sandbox", "settings": settings})
        return devconfig.gateway_config(
            devconfig.GatewayPorts(0, 0, 0),
            server={"default_wait_ms": 8000, "grace_s": 5},
            database={"host": db.host, "port": db.port, "database": db.database, "pool_min": 2, "pool_max": 40},
            callers={CALLER: TOKEN},
            operators={"ops": {"token": OPERATOR_TOKEN, "role": "operator"}},
            channels=channels,
            poller={"interval_s": 0.1, "first_delay_s": 0.3, "schedule": [[0.3, 20], [1.0, 60]]},
            logging={"format": "text", "level": "WARNING"},
            plans={"enabled": False},
            funders={
                f: {
                    "name": f"出资方 {f}",
                    "payout_account": acct,
                    "account_name": f"Funder {f}",
                    "settle_from": "pay-bank",
                }
                for f, acct in self.accounts.items()
            },
            settlement={"enabled": False, "lookback_days": 0, "wait_s": 5.0},
        )

    async def _withholds(self, stub: PaymentGatewayAsyncStub, cards: list[str], n: int) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                amount = self.rng.randint(1, self.opts.max_amount)
                request = gateway_pb2.WithholdRequest(
                    request_id=f"jl-{i}",
                    amount=gateway_pb2.Money(amount=amount, currency="CNY"),
                    account_no=self.rng.choice(cards),
                    bank_code="ICBC",
                    shares=random_shares(self.rng, amount, self.funders),
                    wait_ms=8000,
                )
                self.tally.answers[request.request_id] = await stub.Withhold(request, metadata=self.md)
                self.tally.flows += 1
                self.tally.withholds += 1

        await asyncio.gather(*(worker() for _ in range(self.opts.concurrency)))

    async def _settled(self, gateway: Gateway) -> None:
        """Until no flow is PROCESSING (pending answers resolve by callback or poll)."""
        for _ in range(1200):
            row = await gateway.db.fetchone("SELECT COUNT(*) AS n FROM flows WHERE status='PROCESSING'")
            if row is not None and int(row["n"]) == 0:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("flows still PROCESSING after 120 s")

    async def _refresh(self, stub: PaymentGatewayAsyncStub) -> None:
        """The final flows, as the API gives them: parts summed, tallied per funder."""
        rows = []
        for i in range(self.tally.withholds):
            flow = await stub.GetFlow(gateway_pb2.GetFlowRequest(request_id=f"jl-{i}"), metadata=self.md)
            rows.append(flow)
        expected: dict[str, int] = defaultdict(int)
        for flow in rows:
            if flow.status != gateway_pb2.SUCCEEDED:
                continue
            if sum(p.amount for p in flow.split.parts) != flow.amount.amount:
                self.tally.sum_errors += 1
            for p in flow.split.parts:
                expected[p.funder_id] += p.amount - p.refunded
        self.tally.expected = expected

    async def _refunds(self, stub: PaymentGatewayAsyncStub, n: int) -> None:
        succeeded = []
        for i in range(self.tally.withholds):
            flow = self.tally.answers[f"jl-{i}"]
            if flow.status == gateway_pb2.PROCESSING:  # answered before its result: read it now
                flow = await stub.GetFlow(gateway_pb2.GetFlowRequest(request_id=f"jl-{i}"), metadata=self.md)
            if flow.status == gateway_pb2.SUCCEEDED and flow.amount.amount > 1:
                succeeded.append(flow)
        self.rng.shuffle(succeeded)
        issued = 0

        async def worker() -> None:
            nonlocal issued
            while succeeded and issued < n:
                flow = succeeded.pop()
                remaining = flow.amount.amount
                for j in range(self.rng.randint(1, 3)):
                    if remaining <= 0 or issued >= n:
                        break
                    issued += 1
                    last = self.rng.random() < 0.3
                    amount = remaining if last else self.rng.randint(1, max(1, remaining // 2))
                    refund = await stub.Refund(
                        gateway_pb2.RefundRequest(
                            request_id=f"{flow.request_id}-r{j}",
                            original_flow_no=flow.flow_no,
                            amount=gateway_pb2.Money(amount=amount, currency="CNY"),
                            reason="bench",
                            wait_ms=8000,
                        ),
                        metadata=self.md,
                    )
                    self.tally.flows += 1
                    if refund.status == gateway_pb2.SUCCEEDED:
                        remaining -= amount
                        if sum(p.amount for p in refund.split.parts) != amount:
                            self.tally.sum_errors += 1
                    elif refund.status == gateway_pb2.PROCESSING:
                        break  # its result comes later; the next refund could exceed what is left

        await asyncio.gather(*(worker() for _ in range(self.opts.concurrency)))

    async def _check(self, gateway: Gateway, sims: dict[str, SandboxSimulator], day: date, elapsed: float) -> str:
        db = gateway.db
        sum_rows = await db.fetchall(
            "SELECT f.id FROM flows f JOIN splits s ON s.flow_id = f.id GROUP BY f.id, f.amount"
            " HAVING SUM(s.amount) <> f.amount"
            " UNION ALL SELECT f.id FROM flows f JOIN refund_splits r ON r.refund_flow_id = f.id"
            " GROUP BY f.id, f.amount HAVING SUM(r.amount) <> f.amount"
        )
        missing = await db.fetchall(
            "SELECT f.id FROM flows f LEFT JOIN splits s ON s.flow_id = f.id"
            " WHERE f.kind='WITHHOLD' AND f.status='SUCCEEDED' AND s.id IS NULL"
        )
        over = await db.fetchall(
            "SELECT s.flow_id, s.funder_id FROM splits s LEFT JOIN refund_splits r"
            " ON r.original_flow_id = s.flow_id AND r.funder_id = s.funder_id"
            " GROUP BY s.id, s.amount, s.refunded HAVING COALESCE(SUM(r.amount), 0) > s.amount"
            " OR COALESCE(SUM(r.amount), 0) <> s.refunded OR s.refunded < 0"
        )
        pay_ledger = sims["pay-bank"].ledger
        payer_ledger = sims["bank-a"].ledger
        mismatch = 0
        total_paid = 0
        for funder in self.funders:
            row = await gateway.settlement.store.settlement(funder, day)
            paid = row.paid if row is not None and row.status == "PAID" else 0
            total_paid += paid
            received = pay_ledger.balance(self.accounts[funder])
            payouts = [
                e
                for e in pay_ledger.entries()
                if e.account == self.accounts[funder]
                and e.kind is EntryKind.PAYOUT
                and e.status is EntryStatus.SUCCEEDED
            ]
            if paid != self.tally.expected.get(funder, 0) or received != paid or len(payouts) > 1:
                mismatch += 1
        withheld = sum(
            e.amount
            for e in payer_ledger.entries()
            if e.kind is EntryKind.WITHHOLD and e.status is EntryStatus.SUCCEEDED
        )
        refunded = sum(
            e.amount for e in payer_ledger.entries() if e.kind is EntryKind.REFUND and e.status is EntryStatus.SUCCEEDED
        )
        if total_paid != withheld - refunded:
            mismatch += 1
        codes = await db.fetchall(
            "SELECT kind, status, failure_code, COUNT(*) AS n FROM flows GROUP BY kind, status, failure_code"
        )
        print(
            "flows: " + ", ".join(f"{r['kind']} {r['status']} {r['failure_code'] or ''}: {r['n']}" for r in codes),
            file=sys.stderr,
        )
        print(
            f"day {day}: withheld {withheld} refunded {refunded} settled {total_paid} (fen) over"
            f" {len(self.funders)} funders; {self.tally.flows} flows in {elapsed:.1f} s",
            file=sys.stderr,
        )
        return (
            f"splits: flows={self.tally.flows} funders={len(self.funders)}"
            f" sum_errors={self.tally.sum_errors + len(sum_rows) + len(missing)} over_refunds={len(over)}"
            f" settlement_mismatch={mismatch} flows_per_s={self.tally.flows / elapsed if elapsed else 0:.0f}"
        )


def parse(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="paygate bench splits", description=__doc__.split("\n")[0] if __doc__ else "")
    p.add_argument("--flows", type=int, default=10_000, help="withholds and refunds in all")
    p.add_argument("--funders", type=int, default=10)
    p.add_argument("--refund-share", type=float, default=0.25)
    p.add_argument("--max-amount", type=int, default=500_000, help="fen")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--cards", type=int, default=20)
    p.add_argument("--seed", type=int, default=18)
    p.add_argument("--keep-db", action="store_true")
    p.add_argument("--short", action="store_true", help="300 flows (the test suite's variant)")
    ns = p.parse_args(argv)
    if ns.short:
        ns.flows, ns.cards, ns.concurrency = 300, 5, 16
    if ns.funders < 2:
        p.error("--funders: at least 2")
    return Options(ns.flows, ns.funders, ns.refund_share, ns.max_amount, ns.concurrency, ns.cards, ns.seed, ns.keep_db)


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    line = asyncio.run(SplitBench(opts).run())
    print(line)
    ok = " sum_errors=0 over_refunds=0 settlement_mismatch=0 " in line
    return 0 if ok else 1
