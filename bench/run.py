"""``make bench``: paygate's request path against its floors, side by side, in one run.

Stages, on one machine, all processes on 127.0.0.1, one load generator
(:mod:`bench.loadgen`, ``--loadgens`` processes) for every gRPC stage:

1. **echo**: a bare grpc.aio server (:mod:`bench.echo`) answering the same
   ``Withhold`` RPC; the floor of gRPC + protobuf + asyncio in Python.
2. **db**: the request path's two transactions straight through aiomysql
   (:mod:`bench.dbfloor`), same pool size and durability.
3. **paygate**: ``Withhold`` end to end: ``paygate serve`` (its own process,
   a real config file), real MariaDB with durable commits, the outbox relay
   publishing to a tansu Kafka-protocol broker, and a ``paygate sandbox``
   channel with zero added latency over loopback.
4. **paygate, channel 120/400 ms**: the sandbox answers with p50 120 ms /
   p99 400 ms at increasing concurrency, then paced at half of stage 3's
   throughput: the gateway-added latency should stay flat.

Per stage: throughput, p50/p99 latency, CPU per request of the server
process(es) (``/proc/<pid>/stat``), the gateway-added latency (client latency
minus the channel call's own duration, joined per request from the gateway's
``channel call`` log lines; the ``paygate_channel_request_duration_seconds``
mean is printed as a cross-check) and database commits per request
(``Com_commit`` delta minus the relay's commits, counted as its distinct
``published_at`` batches, minus the background rate measured while idle).

The last line is machine-readable::

    bench: ratio_to_echo=<ratio> tps=<n> echo_tps=<n> added_p99_ms=<n> commits_per_request=<n>
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomysql
import grpc
import pymysql

from bench.bigtable import seed
from bench.procstat import machine_busy_seconds, pid_of, thread_cpu_seconds, tree_cpu_seconds
from bench.profile_top import report as profile_report
from bench.stages import Paired, Stage, figures, last_line, percentile, verdicts
from devstack.agreements import bind_card
from devstack.cards import luhn_card
from devstack.config import gateway_config
from devstack.http import http_get
from devstack.kafka import KafkaBroker, gateway_kafka
from devstack.processes import ProcessSet, free_port, stop, wait_port
from devstack.stack import GatewayProcess, SandboxProcess
from gateway.store.db import DatabaseConfig, migrate
from paygate.v1 import gateway_pb2 as pb
from paygate.v1 import gateway_pb2_grpc

CALLER = "bench"
TOKEN = "bench-caller-token-000000000001"
CHANNEL = "sandbox"
SECRET = "bench-sandbox-secret"
REALISTIC = {"p50_ms": 120, "p99_ms": 400}
# A commit the server counted just before the first Com_commit read may be counted by the gateway just
# after its own first scrape (it counts once the COMMIT has returned): one per commit in flight then.
IN_FLIGHT_COMMITS = 8


@dataclass(frozen=True)
class Options:
    quick: bool
    seconds: float
    warmup: float
    concurrency: int
    levels: list[int]
    loadgens: int
    cards: int
    database: str
    keep_db: bool
    profile_s: float
    workdir: Path
    big_flows: int = 0  # 0: no big-table stage
    big_database: str = "paygate_bench_big"
    seed_budget_s: float = 120.0
    idle_s: float = 10.0  # the gateway with no load, before the stages: background commits and CPU
    pairs: int = 3
    workers: int = 2  # the zero-latency stage again with [server] workers = this (0 or 1: not run)


def channel_histogram(metrics_port: int) -> tuple[float, float]:
    """(sum seconds, count) of paygate_channel_request_duration_seconds for withholds."""
    text = http_get(f"http://127.0.0.1:{metrics_port}/metrics").decode()
    total = count = 0.0
    for line in text.splitlines():
        if 'operation="withhold"' not in line.lower():
            continue
        if line.startswith("paygate_channel_request_duration_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("paygate_channel_request_duration_seconds_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


class Bench:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.procs = ProcessSet(opts.workdir / "processes.log")
        self.pids = self.procs.pids
        self.broker = KafkaBroker()
        self.sandbox = SandboxProcess(CHANNEL, merchant_id="bench-merchant", secret=SECRET)
        self.gateway_log = opts.workdir / "gateway.log"
        self.gateway = GatewayProcess(self.procs, opts.workdir / "paygate.toml", log=self.gateway_log)
        self.log_offset = 0
        self.cards_file = opts.workdir / "cards.txt"
        self.background_commits_per_s = 0.0
        self.idle_cpu_ms_per_s = 0.0
        self.run_id = f"{int(time.time())}"

    @property
    def grpc_port(self) -> int:
        return self.gateway.grpc_port  # a first start whose port was taken moves the gateway to fresh ports

    @property
    def metrics_port(self) -> int:
        return self.gateway.metrics_port

    # --- processes -------------------------------------------------------------------

    def stop_all(self) -> None:
        self.procs.stop_all()
        self.broker.stop()

    async def restore(self) -> None:
        if not self.opts.keep_db:
            await execute(f"DROP USER IF EXISTS '{self.opts.database}'@'127.0.0.1'")
            await drop_database(self.opts.database)
            await drop_database(self.opts.database + "_dbfloor")

    def config(
        self, gateway: GatewayProcess | None = None, *, database: dict[str, Any] | None = None, workers: int = 1
    ) -> dict[str, Any]:
        return gateway_config(
            (gateway or self.gateway).ports,
            server={"default_wait_ms": 10000, "grace_s": 5, **({"workers": workers} if workers > 1 else {})},
            database=database or {"database": self.opts.database, "user": self.opts.database},
            security={"account_hash_key": "bench-account-hash-key-0000000000"},
            callers={CALLER: TOKEN},
            logging={"format": "json", "level": "INFO"},
            kafka=gateway_kafka(self.broker.bootstrap, "paygate.flow-results"),
            channels=[self.sandbox.channel(timeout_s=5.0)],
        )

    async def start(self) -> None:
        await drop_database(self.opts.database)
        await drop_database(self.opts.database + "_dbfloor")
        await migrate(DatabaseConfig(database=self.opts.database))
        await migrate(DatabaseConfig(database=self.opts.database + "_dbfloor"))
        # the gateway logs in as its own MariaDB user (named like the database), apart from every other client
        user = self.opts.database
        await execute(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")
        await execute(f"CREATE USER '{user}'@'127.0.0.1'")
        await execute(f"GRANT ALL ON `{user}`.* TO '{user}'@'127.0.0.1'")
        self.broker.start()
        await asyncio.to_thread(self.sandbox.start, self.procs, log=self.opts.workdir / "sandbox.log")
        self.gateway.write_config(self.config())
        await asyncio.to_thread(self.gateway.start)
        await self.bind_cards()

    async def bind_cards(self, gateway: GatewayProcess | None = None, *, cards_file: Path | None = None) -> None:
        import random

        gateway = gateway or self.gateway
        rng = random.Random(f"{self.run_id}-{gateway.name}")  # new cards every run: a cached database keeps old ones
        md = (("authorization", f"Bearer {TOKEN}"),)
        cards = [luhn_card(rng) for _ in range(self.opts.cards)]
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            stub = gateway_pb2_grpc.PaymentGatewayStub(channel)
            for i, card in enumerate(cards):
                done = await bind_card(
                    stub,
                    md,
                    request_id=f"sign-{self.run_id}-{gateway.name}-{i}",
                    channel=CHANNEL,
                    card=card,
                    sms_code=self.sandbox.last_sms_code,
                )
                if done.status != pb.ACTIVE:
                    raise RuntimeError(f"agreement {i} ended {pb.AgreementStatus.Name(done.status)}")
        (cards_file or self.cards_file).write_text("\n".join(cards) + "\n")

    # --- load --------------------------------------------------------------------------

    async def load(
        self,
        stage: Stage,
        port: int,
        servers: tuple[str, ...],
        *,
        rate: float = 0.0,
        per_request: bool = False,
        cards: Path | None = None,
    ) -> None:
        """Drive ``stage.concurrency`` workers (over ``--loadgens`` processes) against ``port``."""
        opts = self.opts
        procs = max(1, min(opts.loadgens, stage.concurrency))
        start_at = time.time() + 1.5 + opts.warmup
        handles: list[tuple[subprocess.Popen[bytes], Path]] = []
        for i in range(procs):
            share = stage.concurrency // procs + (1 if i < stage.concurrency % procs else 0)
            out = opts.workdir / f"{stage.name}-{i}.json"
            per = opts.workdir / f"{stage.name}-{i}.req"
            args = [
                sys.executable,
                "-m",
                "bench.loadgen",
                "--target",
                f"127.0.0.1:{port}",
                "--token",
                TOKEN,
                "--cards",
                str(cards or self.cards_file),
                "--concurrency",
                str(share),
                "--connections",
                str(max(1, min(4, share))),
                "--start-at",
                f"{start_at:.3f}",
                "--seconds",
                str(opts.seconds),
                "--prefix",
                f"{stage.name}-{self.run_id}-{i}",
                "--seed",
                str(i),
            ]
            if rate > 0:
                args += ["--rate", f"{rate / procs:.3f}", "--warmup-for-rate", f"{opts.warmup:.3f}"]
            if per_request:
                args += ["--per-request", str(per)]
            with out.open("wb") as sink:
                handles.append((subprocess.Popen(args, stdout=sink, stderr=subprocess.DEVNULL), out))
        watched = {name: self.pids[name] for name in servers}
        watched.update({f"loadgen{i}": h.pid for i, (h, _) in enumerate(handles)})
        await asyncio.sleep(max(0.0, start_at - time.time()))
        before = {name: tree_cpu_seconds(pid) for name, pid in watched.items()}
        threads_before = thread_cpu_seconds(watched["gateway"]) if "gateway" in watched else {}
        busy_before = machine_busy_seconds()
        hist_before = channel_histogram(self.metrics_port) if per_request else (0.0, 0.0)
        await asyncio.sleep(max(0.0, start_at + opts.seconds - time.time()))
        stage.cpu_s = {name: tree_cpu_seconds(pid) - before[name] for name, pid in watched.items()}
        if "gateway" in watched:
            after = thread_cpu_seconds(watched["gateway"])
            stage.threads = {
                k: v - threads_before.get(k, 0.0) for k, v in after.items() if v > threads_before.get(k, 0.0)
            }
        busy = machine_busy_seconds() - busy_before
        stage.others_cores = max(0.0, busy - sum(stage.cpu_s.values())) / opts.seconds
        if per_request:
            hist_after = channel_histogram(self.metrics_port)
            calls = hist_after[1] - hist_before[1]
            stage.channel_mean_ms = (hist_after[0] - hist_before[0]) * 1000 / calls if calls else None
        for handle, _ in handles:
            await asyncio.to_thread(handle.wait, opts.seconds + 120)
        stage.seconds = opts.seconds
        for i, (_, out) in enumerate(handles):
            result = json.loads(out.read_text())
            stage.completed += int(result["completed"])
            stage.latencies_ms += [float(v) for v in result["latencies_ms"]]
            for key, n in result["errors"].items():
                stage.errors[key] = stage.errors.get(key, 0) + int(n)
            for key, n in result["statuses"].items():
                stage.statuses[key] = stage.statuses.get(key, 0) + int(n)
            if per_request:
                stage.added_ms += self.added_latencies(opts.workdir / f"{stage.name}-{i}.req")

    def channel_durations(self) -> dict[str, float]:
        """flow_no -> summed channel call duration (ms), from the gateway log lines written since last read."""
        with self.gateway_log.open("rb") as log:
            log.seek(self.log_offset)
            data = log.read()
        self.log_offset += len(data)
        durations: dict[str, float] = {}
        for raw in data.splitlines():
            if b'"channel call' not in raw:
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            order_no = str(entry.get("channel_order_no", ""))
            if str(entry.get("operation", "")).upper() == "WITHHOLD" and order_no:
                flow_no = order_no[:-2]
                durations[flow_no] = durations.get(flow_no, 0.0) + float(entry.get("duration_ms", 0.0))
        self._durations = durations
        return durations

    def added_latencies(self, per_request_file: Path) -> list[float]:
        durations = getattr(self, "_durations", None) or self.channel_durations()
        added: list[float] = []
        for line in per_request_file.read_text().splitlines():
            flow_no, latency = line.split()
            if flow_no in durations:
                added.append(float(latency) - durations[flow_no])
        return added

    # --- stages ------------------------------------------------------------------------

    async def echo_stage(self, concurrency: int, name: str = "echo") -> Stage:
        port = free_port()
        args = [sys.executable, "-m", "bench.echo", "--port", str(port)]
        echo = self.procs.spawn(args, name="echo", log=self.opts.workdir / "echo.log")
        await asyncio.to_thread(wait_port, port, echo, "echo server")
        stage = Stage(name, concurrency)
        try:
            await self.load(stage, port, ("echo",))
        finally:
            stop(echo)
        return stage

    async def db_stage(self, concurrency: int, name: str = "db") -> Stage:
        """The database floor (:mod:`bench.dbfloor`): its own CPU and MariaDB's, measured inside its window."""
        stage = Stage(name, concurrency)
        out = self.opts.workdir / f"{name}.json"
        args = [sys.executable, "-m", "bench.dbfloor", "--database", self.opts.database + "_dbfloor"]
        args += ["--writers", str(concurrency), "--seconds", str(self.stage_seconds(concurrency))]
        args += ["--warmup", str(self.opts.warmup), "--prefix", f"{name}-{self.run_id}"]
        result = await self.floor_process(args, out)
        stage.completed = int(result["completed"])
        stage.seconds = float(result["seconds"])
        stage.latencies_ms = [float(v) for v in result["latencies_ms"]]
        stage.cpu_s = {k: float(v) for k, v in result["cpu_s"].items()}
        stage.commits = {"request_path": 2.0, "measured_by": 0.0}
        stage.note = f"{2 * stage.tps:.0f} commits/s"
        return stage

    async def http_stage(self, concurrency: int) -> Stage:
        """The HTTP floor (:mod:`bench.httpfloor`) against the sandbox bank, which must answer at once."""
        stage = Stage("http", concurrency)
        pairs = self.opts.workdir / "agreements.txt"
        rows = await fetch_all(
            self.opts.database, "SELECT agreement_ref FROM agreements WHERE status='ACTIVE' ORDER BY id", ()
        )
        cards = self.cards_file.read_text().split()
        pairs.write_text("".join(f"{card} {ref}\n" for card, (ref,) in zip(cards, rows, strict=False)))
        args = [sys.executable, "-m", "bench.httpfloor", "--base-url", f"http://127.0.0.1:{self.sandbox.port}"]
        args += ["--merchant", "bench-merchant", "--secret", SECRET, "--pairs", str(pairs)]
        args += ["--concurrency", str(concurrency), "--seconds", str(self.opts.seconds)]
        args += ["--warmup", str(self.opts.warmup), "--sandbox-pid", str(self.pids[CHANNEL])]
        args += ["--prefix", f"HF{self.run_id}"]
        result = await self.floor_process(args, self.opts.workdir / "httpfloor.json")
        stage.completed = int(result["completed"])
        stage.seconds = float(result["seconds"])
        stage.latencies_ms = [float(v) for v in result["latencies_ms"]]
        stage.cpu_s = {k: float(v) for k, v in result["cpu_s"].items()}
        stage.statuses = {f"HTTP {k}": int(v) for k, v in result["statuses"].items()}
        return stage

    async def floor_process(self, args: list[str], out: Path) -> dict[str, Any]:
        with out.open("wb") as sink:
            proc = subprocess.Popen(args, stdout=sink)
        await asyncio.to_thread(proc.wait, self.opts.seconds + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[2]} exited {proc.returncode}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result

    def stage_seconds(self, concurrency: int) -> float:
        """Concurrency-1 floors are steady after a few seconds; the rest get the full window."""
        return self.opts.seconds if concurrency > 1 else min(self.opts.seconds, 8.0)

    async def paygate_stage(self, name: str, concurrency: int, *, rate: float = 0.0) -> Stage:
        stage = Stage(name, concurrency)
        db = self.opts.database
        mariadb = pid_of("mariadbd") or pid_of("mysqld")
        if mariadb:
            self.pids["mariadb"] = mariadb
        first_id = int((await query_one(db, "SELECT COALESCE(MAX(id), 0) FROM flows", ()))[0])
        global_before = await com_commit()  # the server's window holds the gateway's (see IN_FLIGHT_COMMITS)
        commits_before = gateway_commits(self.metrics_port)
        batches_before = gateway_samples(self.metrics_port, (STALE_KNOWN, APPLY_BATCHES))
        started = time.monotonic()
        self.channel_durations()  # skip log lines of earlier stages
        self._durations = {}
        await self.load(stage, self.grpc_port, ("gateway", "sandbox", "mariadb"), rate=rate, per_request=True)
        self._durations = {}
        await wait_drained(db, timeout=60)
        elapsed = time.monotonic() - started
        commits = gateway_commits(self.metrics_port) - commits_before
        batches = gateway_samples(self.metrics_port, (STALE_KNOWN, APPLY_BATCHES))
        if STALE_KNOWN not in batches:  # an unlabelled counter is always exported: missing means renamed
            raise RuntimeError(f"the gateway exports no {STALE_KNOWN.strip()}")
        global_commits = await com_commit() - global_before
        if commits > global_commits + IN_FLIGHT_COMMITS:  # the server saw fewer COMMITs than counted: a bug
            raise RuntimeError(f"gateway counted {commits} commits, the server {global_commits}")
        flows, relay = await query_one(
            db,
            "SELECT COUNT(*), (SELECT COUNT(DISTINCT published_at) FROM outbox WHERE flow_id > %s) FROM flows"
            " WHERE id > %s",
            (first_id, first_id),
        )
        background = self.background_commits_per_s * elapsed
        request_path = commits - int(relay) - background
        stage.commits = {
            "com_commit": commits,
            "global_com_commit": float(global_commits),
            "relay": float(relay),
            "background": background,
            "flows": float(flows),
            "per_request": request_path / int(flows) if flows else 0.0,
            "per_request_all": commits / int(flows) if flows else 0.0,
            "stale_known": batches.get(STALE_KNOWN, 0.0) - batches_before.get(STALE_KNOWN, 0.0),
            "apply_batches": batches.get(APPLY_BATCHES, 0.0) - batches_before.get(APPLY_BATCHES, 0.0),
        }
        return stage

    async def throughput_stage(self, name: str, gateway: GatewayProcess, database: str, cards: Path) -> Stage:
        """Closed-loop withholds against ``gateway``: throughput and CPU only, the outbox drained afterwards."""
        stage = Stage(name, self.opts.concurrency)
        seconds = self.opts.seconds
        self.opts = dataclasses.replace(self.opts, seconds=max(2.0, seconds / 2))
        try:
            await self.load(stage, gateway.grpc_port, (gateway.name, "mariadb"), cards=cards)
        finally:
            self.opts = dataclasses.replace(self.opts, seconds=seconds)
        await wait_drained(database, timeout=60)
        return stage

    async def big_table(self, flows: int) -> tuple[Paired, list[Stage]]:
        """Zero-latency throughput with ``flows`` flows in the tables over an empty database, interleaved.

        A second gateway serves the cached big database beside the first; the
        stages alternate empty, big, empty, big ... and each pair gives a ratio.
        """
        opts = self.opts
        big = GatewayProcess(
            self.procs, opts.workdir / "paygate-big.toml", log=opts.workdir / "gateway-big.log", name="gateway_big"
        )
        big.write_config(self.config(big, database={"database": opts.big_database, "user": "root"}))
        await asyncio.to_thread(big.start)
        big_cards = opts.workdir / "cards-big.txt"
        await self.bind_cards(big, cards_file=big_cards)
        ratios: list[float] = []
        stages: list[Stage] = []
        try:
            for i in range(opts.pairs):
                empty = await self.throughput_stage(f"empty-{i}", self.gateway, opts.database, self.cards_file)
                full = await self.throughput_stage(f"big-{i}", big, opts.big_database, big_cards)
                stages += [empty, full]
                ratios.append(full.tps / empty.tps if empty.tps else 0.0)
        finally:
            await asyncio.to_thread(big.stop)
        return Paired(tuple(ratios)), stages

    async def restart_gateway(self, workers: int) -> None:
        await asyncio.to_thread(self.gateway.stop)
        self.gateway.write_config(self.config(workers=workers))
        await asyncio.to_thread(self.gateway.start)

    async def measure_background(self, seconds: float) -> None:
        """The gateway with no load: its commits and CPU a second (the background jobs' fixed cost)."""
        pid = self.pids["gateway"]
        before, cpu_before = gateway_commits(self.metrics_port), tree_cpu_seconds(pid)
        await asyncio.sleep(seconds)
        self.background_commits_per_s = (gateway_commits(self.metrics_port) - before) / seconds
        self.idle_cpu_ms_per_s = (tree_cpu_seconds(pid) - cpu_before) * 1000 / seconds
        print(
            f"bench: idle gateway ({seconds:g} s, no load): {self.idle_cpu_ms_per_s:.1f} ms CPU/s,"
            f" {self.background_commits_per_s:.2f} commits/s"
        )

    def set_channel(self, behaviour: dict[str, Any]) -> None:
        self.sandbox.set_behaviour(behaviour)

    def profile(self, seconds: float) -> Path | None:
        """A py-spy flame graph of the gateway while the caller drives load (best effort)."""
        out = self.opts.workdir / "gateway-profile.txt"
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists():
            return None
        subprocess.run(
            [
                *(str(spy), "record", "--pid", str(self.pids["gateway"]), "--duration", str(int(seconds))),
                *("--format", "raw", "--output", str(out)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=seconds + 30,
            check=False,
        )
        return out if out.exists() else None


# --- database helpers --------------------------------------------------------------------


async def fetch(sql: str, args: tuple[Any, ...] = (), database: str | None = None) -> tuple[Any, ...] | None:
    """One statement as root on its own autocommit connection; the first row, if any."""
    conn = await aiomysql.connect(host="127.0.0.1", user="root", password="", db=database, autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql, args or None)
            row: tuple[Any, ...] | None = await cur.fetchone() if cur.description else None
            return row
    finally:
        conn.close()


async def fetch_all(database: str, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    conn = await aiomysql.connect(host="127.0.0.1", user="root", password="", db=database, autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql, args or None)
            return list(await cur.fetchall())
    finally:
        conn.close()


async def query_one(database: str, sql: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    row = await fetch(sql, args, database)
    assert row is not None, sql
    return row


async def execute(sql: str) -> None:
    await fetch(sql)


async def drop_database(name: str) -> None:
    """Drop ``name`` if it exists (migrate() creates it afresh)."""
    await fetch(f"DROP DATABASE IF EXISTS `{name}`")


async def com_commit() -> int:
    row = await fetch("SHOW GLOBAL STATUS LIKE 'Com_commit'")
    return int(row[1]) if row else 0


def gateway_commits(metrics_port: int) -> int:
    """Transactions the gateway process committed (``paygate_db_commits_total`` on its metrics port).

    A group commit counts once. The server-wide ``Com_commit`` delta is read
    beside it as a cross-check: it counts every client of the server, so it
    may be larger, never smaller.
    """
    value = gateway_samples(metrics_port, ("paygate_db_commits_total ",)).get("paygate_db_commits_total ")
    if value is None:
        raise RuntimeError("the gateway exports no paygate_db_commits_total")
    return int(value)


# The transition batches whose known rows were stale (redone under locks), beside all transition batches.
STALE_KNOWN = "paygate_store_stale_known_rows_total "
APPLY_BATCHES = 'paygate_store_batch_size_count{operation="apply"} '


def gateway_samples(metrics_port: int, prefixes: tuple[str, ...]) -> dict[str, float]:
    """The samples of the gateway's ``/metrics`` whose line starts with one of ``prefixes`` (name and labels)."""
    found: dict[str, float] = {}
    for line in http_get(f"http://127.0.0.1:{metrics_port}/metrics").decode().splitlines():
        for prefix in prefixes:
            if line.startswith(prefix):
                found[prefix] = float(line[len(prefix) :].split()[0])  # the value (a timestamp may follow)
    return found


async def server_setting(name: str) -> str:
    row = await fetch("SHOW GLOBAL VARIABLES LIKE %s", (name,))
    return str(row[1]) if row else "?"


async def wait_drained(database: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (left,) = await query_one(database, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL", ())
        if int(left) == 0:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"outbox not drained within {timeout:.0f} s")


# --- report ------------------------------------------------------------------------------

GATEWAY_SIDE = ("gateway", "sandbox", "mariadb")
FLOOR_SERVERS = {"echo": ("echo",), "db": ("dbfloor", "mariadb"), "http": ("httpfloor", "sandbox")}


def row(stage: Stage) -> str:
    lat = stage.latencies_ms
    servers = FLOOR_SERVERS.get(stage.name.split("-c1")[0], GATEWAY_SIDE)
    cpu = stage.cpu_ms_per_request(servers)
    gateways = tuple(name for name in stage.cpu_s if name.startswith("gateway"))
    gw = f"{stage.cpu_ms_per_request(gateways):.2f}" if gateways else "-"
    added = "      -       -"
    if stage.added_ms:
        added = f"{percentile(stage.added_ms, 50):7.1f} {percentile(stage.added_ms, 99):7.1f}"
    commits = f"{stage.commits['per_request']:.2f}" if "per_request" in stage.commits else "-"
    errors = sum(stage.errors.values())
    return (
        f"{stage.name:<22} {stage.concurrency:>5} {stage.tps:>8.0f} {percentile(lat, 50):>7.1f} "
        f"{percentile(lat, 99):>7.1f} {cpu:>8.2f} {gw:>7} {added} {commits:>7} {errors:>5}"
    )


HEADER = (
    f"{'stage':<22} {'conc':>5} {'tps':>8} {'p50ms':>7} {'p99ms':>7} {'cpu/req':>8} {'gw_cpu':>7} "
    f"{'add_p50':>7} {'add_p99':>7} {'commits':>7} {'errs':>5}"
)


async def main_async(opts: Options) -> int:
    bench = Bench(opts)
    flush = await server_setting("innodb_flush_log_at_trx_commit")
    sync_binlog = await server_setting("sync_binlog")
    print(f"bench: workdir {opts.workdir}; MariaDB innodb_flush_log_at_trx_commit={flush} sync_binlog={sync_binlog}")
    print(
        f"bench: {opts.seconds:g} s measured per stage after {opts.warmup:g} s warm-up; load from {opts.loadgens}"
        f" generator process(es); {os.cpu_count()} CPUs shared by everything"
    )
    big_flows = 0
    if opts.big_flows > 0:
        started = time.monotonic()
        big_flows = await seed(opts.big_database, opts.big_flows, opts.seed_budget_s)
        print(
            f"bench: big-table database {opts.big_database}: {big_flows:,} flows seeded (target {opts.big_flows:,};"
            f" {time.monotonic() - started:.0f} s spent seeding this run, cached for the next)"
        )
    stages: dict[str, Stage] = {}
    big: Paired | None = None
    big_stages: list[Stage] = []
    try:
        await bench.start()
        print(
            f"bench: paygate serve (gRPC :{bench.grpc_port}), sandbox channel :{bench.sandbox.port}, tansu"
            f" {bench.broker.bootstrap}, relay on; {opts.cards} cards with ACTIVE agreements"
        )
        await bench.measure_background(opts.idle_s)
        for stage in (
            await bench.echo_stage(opts.concurrency),
            await bench.echo_stage(1, "echo-c1"),
            await bench.db_stage(opts.concurrency),
            await bench.db_stage(1, "db-c1"),
        ):
            stages[stage.name] = stage
        bench.set_channel({"p50_ms": 0, "p99_ms": 0})
        stages["http"] = await bench.http_stage(opts.concurrency)
        if opts.profile_s > 0:
            task = asyncio.create_task(bench.paygate_stage("profile", opts.concurrency))
            await asyncio.sleep(opts.warmup + 2.0)
            out = await asyncio.to_thread(bench.profile, min(opts.profile_s, opts.seconds - 1))
            prof_stage = await task
            print(f"bench: py-spy profile of the gateway: {out or 'unavailable'} ({prof_stage.tps:.0f} tps, sampled)")
            if out is not None:
                print(profile_report(out, 30))
        full = await bench.paygate_stage("paygate-zero-latency", opts.concurrency)
        full.note = "sandbox over loopback, zero added latency"
        stages[full.name] = full
        bench.set_channel(REALISTIC)
        for level in sorted({1, *opts.levels}):
            stage = await bench.paygate_stage(f"paygate-ch120-c{level}", level)  # names make request ids
            stages[stage.name] = stage
        half = max(full.tps / 2, 1.0)
        paced = await bench.paygate_stage("paygate-ch120-half", max(opts.levels) * 2, rate=half)
        paced.note = f"open schedule at {half:.0f}/s (half of the zero-latency tps)"
        stages[paced.name] = paced
        bench.set_channel({"p50_ms": 0, "p99_ms": 0})
        if big_flows > 0:
            big, big_stages = await bench.big_table(big_flows)
        if opts.workers > 1:
            await bench.restart_gateway(opts.workers)
            wide = await bench.paygate_stage(f"paygate-zero-latency-w{opts.workers}", opts.concurrency)
            wide.note = f"[server] workers = {opts.workers}: gateway CPU is the supervisor and its workers"
            stages[wide.name] = wide
    finally:
        bench.stop_all()
        await bench.restore()
    report(list(stages.values()) + big_stages)
    print()
    print(budget_line(stages["echo"], full, os.cpu_count() or 1))
    f = figures(stages, big)
    print(
        f"bench: floors per request: echo {f.echo_cpu_ms:.2f} ms + HTTP client {f.http_cpu_ms:.2f} ms"
        f" + aiomysql client {f.db_client_cpu_ms:.2f} ms = {f.floor_cpu_ms:.2f} ms; gateway {f.gw_cpu_ms:.2f} ms"
        f" (zero latency), {f.gw_cpu_c8_ms:.2f} ms (concurrency 8); MariaDB {f.mariadb_cpu_ms:.2f} ms per withhold"
        f" vs {f.db_floor_mariadb_ms:.2f} ms per db-stage pair"
    )
    print(
        f"bench: concurrency 1, 120/400 ms channel: added p50 {f.added_p50_c1_ms:.1f} ms, p99 {f.added_p99_c1_ms:.1f}"
        f" ms; floor {f.floor_c1_ms:.1f} ms (echo p50 {f.echo_p50_c1_ms:.1f} + db p50 {f.db_p50_c1_ms:.1f})"
    )
    if big is not None:
        print(f"bench: big tables ({big_flows:,} seeded flows) / empty, zero-latency throughput: {big.describe()}")
    wide_stage = stages.get(f"paygate-zero-latency-w{opts.workers}")
    if wide_stage is not None:
        print(
            f"bench: workers={opts.workers}: {wide_stage.tps:.0f} tps, gateway"
            f" {wide_stage.cpu_ms_per_request(('gateway',)):.2f} ms/withhold; workers=1: {full.tps:.0f} tps,"
            f" {f.gw_cpu_ms:.2f} ms/withhold (ratio {wide_stage.tps / full.tps if full.tps else 0:.2f})"
        )
    print("bench: targets")
    for line in verdicts(f):
        print(line)
    print(last_line(f))
    return 0


def report(stages: list[Stage]) -> None:
    print()
    print(HEADER)
    for stage in stages:
        print(row(stage))
    print()
    for stage in stages:
        extras = []
        if stage.channel_mean_ms is not None:
            extras.append(f"channel mean {stage.channel_mean_ms:.1f} ms (histogram)")
        if stage.commits and "com_commit" in stage.commits:
            c = stage.commits
            extras.append(
                f"commits of the gateway {c['com_commit']:.0f} = relay {c['relay']:.0f}"
                f" + background {c['background']:.0f}"
                f" + request path {c['com_commit'] - c['relay'] - c['background']:.0f} for {c['flows']:.0f} flows"
                f" ({c['per_request_all']:.2f}/flow all in; server-wide Com_commit delta, other clients"
                f" included: {c['global_com_commit']:.0f}); transition batches {c['apply_batches']:.0f},"
                f" {c['stale_known']:.0f} redone under locks (stale known rows)"
            )
        if stage.statuses:
            extras.append("statuses " + ",".join(f"{k}={v}" for k, v in sorted(stage.statuses.items())))
        if stage.errors:
            extras.append("errors " + ",".join(f"{k}={v}" for k, v in sorted(stage.errors.items())))
        cpu = ", ".join(f"{k} {v * 1000 / max(stage.completed, 1):.2f}" for k, v in stage.cpu_s.items())
        extras.append(f"cpu ms/req: {cpu}")
        if stage.others_cores is not None:
            extras.append(f"other processes used {stage.others_cores:.2f} of {os.cpu_count()} cores")
        if stage.threads:
            busy = sorted(stage.threads.items(), key=lambda kv: -kv[1])[:4]
            extras.append(
                "gateway threads ms/req: " + ", ".join(f"{k} {v * 1000 / max(stage.completed, 1):.2f}" for k, v in busy)
            )
        if stage.note:
            extras.append(stage.note)
        print(f"  {stage.name}@{stage.concurrency}: " + "; ".join(extras))


def budget_line(echo: Stage, full: Stage, cores: int) -> str:
    """What 0.4 x the echo floor leaves per withhold in CPU on this machine, and what was spent, by whom."""
    target_tps = 0.4 * echo.tps
    budget = cores * 1000.0 / target_tps if target_tps else 0.0
    gateway = full.cpu_ms_per_request(("gateway",))
    outside = full.cpu_ms_per_request(tuple(name for name in full.cpu_s if name != "gateway"))
    verdict = (
        "over budget before the gateway spends anything"
        if outside >= budget
        else f"leaves the gateway {budget - outside:.2f} ms"
    )
    return (
        f"bench: CPU budget per withhold for 0.4 x echo ({target_tps:.0f}/s on {cores} cores, nothing else running):"
        f" {budget:.2f} ms; spent per withhold outside the gateway (MariaDB, sandbox bank, load generators):"
        f" {outside:.2f} ms ({verdict}); gateway: {gateway:.2f} ms"
    )


def parse(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="a few seconds per stage (smoke test)")
    p.add_argument("--seconds", type=float, default=0.0, help="measured seconds per stage (default 15; quick 2)")
    p.add_argument("--concurrency", type=int, default=64, help="concurrency of the echo/db/zero-latency stages")
    p.add_argument("--levels", default="8,32,128", help="concurrency levels with the 120/400 ms channel")
    p.add_argument("--loadgens", type=int, default=2, help="load generator processes")
    p.add_argument("--cards", type=int, default=0, help="cards with agreements (default 64; quick 8)")
    p.add_argument("--database", default="paygate_bench", help="database and MariaDB user the gateway uses")
    p.add_argument("--keep-db", action="store_true", help="keep the databases and the user afterwards")
    p.add_argument("--profile", type=float, default=0.0, help="also py-spy the gateway for this many seconds")
    p.add_argument("--big-flows", type=int, default=-1, help="big-table flows (default 10M; quick 0: off)")
    p.add_argument("--big-database", default="paygate_bench_big", help="the cached big-table database")
    p.add_argument("--seed-budget", type=float, default=120.0, help="seconds of seeding per run (resumes next run)")
    p.add_argument("--pairs", type=int, default=3, help="interleaved empty/big pairs")
    p.add_argument("--idle", type=float, default=-1, help="seconds of the idle gateway (default 10; quick 2)")
    p.add_argument("--workers", type=int, default=-1, help="zero-latency again with N workers (default 2; quick 0)")
    a = p.parse_args(argv)
    seconds = a.seconds or (1.5 if a.quick else 15.0)
    levels = [int(x) for x in a.levels.split(",") if x.strip()]
    if a.quick:
        levels = levels[:1] if a.levels == "8,32,128" else levels
    return Options(
        quick=a.quick,
        seconds=min(max(seconds, 1.0), 120.0),
        warmup=0.5 if a.quick else 3.0,
        concurrency=a.concurrency if not a.quick or a.concurrency != 64 else 32,
        levels=levels or [8],
        loadgens=max(1, a.loadgens),
        cards=a.cards or (8 if a.quick else 64),
        database=a.database,
        keep_db=a.keep_db,
        profile_s=a.profile,
        workdir=Path(tempfile.mkdtemp(prefix="paygate-bench-")),
        big_flows=a.big_flows if a.big_flows >= 0 else (0 if a.quick else 10_000_000),
        big_database=a.big_database,
        seed_budget_s=max(0.0, a.seed_budget),
        idle_s=a.idle if a.idle > 0 else (2.0 if a.quick else 10.0),
        pairs=max(1, a.pairs),
        workers=a.workers if a.workers >= 0 else (0 if a.quick else 2),
    )


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=pymysql.Warning)  # "database doesn't exist" on DROP ... IF EXISTS
    return asyncio.run(main_async(parse(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
