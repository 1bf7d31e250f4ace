"""``paygate bench relay``: how fast the outbox relay moves results to Kafka.

Starts its own tansu broker and a throwaway MariaDB database, then runs three phases:

1. **requests**: ``--writers`` concurrent tasks run the request path's two
   commits straight through aiomysql for ``--request-seconds`` (insert a flow
   row + commit; terminal update + outbox insert + commit), relay off. The
   completed pairs per second are the request rate the relay must keep up with.
2. **drain**: the relay starts and publishes that backlog; events/s here is its
   capacity with work always waiting.
3. **steady**: writers keep producing at ``--rate`` requests/s (default: the
   rate measured in phase 1, i.e. the request path flat out) for ``--duration``
   seconds while the relay runs and is notified after each commit, as the
   gateway does. Lag is ``published_at - created_at`` per row, both stamped by
   the database clock (the row's insert, just before its commit, to the mark
   written right after Kafka's acknowledgement). While the relay keeps up, its
   throughput here equals what the writers manage to deliver, so this phase
   reports lag, and whether every event arrived, rather than capacity.

The last line is machine-readable::

    relay: events_per_s=<n> ratio_to_requests=<ratio> lag_p50_ms=<n> lag_p99_ms=<n>

``events_per_s`` is the relay's throughput with work waiting (phase 2),
``ratio_to_requests`` that divided by the phase-1 request rate (> 1: the relay
outruns the request path at full speed, with that much headroom), and the lag
percentiles come from the steady phase (3). Relay, writers and database share
the machine, as they do in the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pymysql

from devstack.kafka import KafkaBroker
from gateway.domain import new_ulid
from gateway.outbox.config import RelayConfig
from gateway.outbox.relay import OutboxRelay
from gateway.store.db import Database, DatabaseConfig, migrate
from paygate.v1 import events_pb2, gateway_pb2


@dataclass(frozen=True)
class Options:
    mysql_host: str
    mysql_port: int
    writers: int
    request_seconds: float
    rate: float
    duration: float
    batch_size: int
    encoding: str
    keep_db: bool


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="paygate bench relay", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--mysql-host", default="127.0.0.1")
    p.add_argument("--mysql-port", type=int, default=3306)
    p.add_argument("--writers", type=int, default=8, help="concurrent request-path writers (default 8)")
    p.add_argument("--request-seconds", type=float, default=5.0, help="length of the request-rate phase (default 5)")
    p.add_argument("--rate", type=float, default=0.0, help="steady fill rate, requests/s (default: measured rate)")
    p.add_argument("--duration", type=float, default=10.0, help="length of the steady phase in seconds (default 10)")
    p.add_argument("--batch-size", type=int, default=200, help="relay batch size (default 200)")
    p.add_argument("--encoding", choices=["protobuf", "json"], default="protobuf")
    p.add_argument("--keep-db", action="store_true", help="do not drop the benchmark database")
    return p


# --- the request path's two commits ------------------------------------------------------


def _event(flow_no: str, caller: str, request_id: str, amount: int) -> tuple[str, bytes]:
    event = events_pb2.FlowEvent(
        event_id=new_ulid(),
        event_type=events_pb2.FLOW_RESULT,
        caller=caller,
        request_id=request_id,
        flow_no=flow_no,
        kind=gateway_pb2.WITHHOLD,
        status=gateway_pb2.SUCCEEDED,
        amount=gateway_pb2.Money(amount=amount, currency="CNY"),
        channel="sandbox",
        channel_txn_id=f"SBX{flow_no}",
    )
    event.created_at.GetCurrentTime()
    event.finished_at.GetCurrentTime()
    event.emitted_at.GetCurrentTime()
    return event.event_id, event.SerializeToString()


async def one_request(db: Database, seq: int, on_commit: Callable[[], None]) -> None:
    """Insert a flow + commit; terminal update + outbox row + commit (the happy-path budget)."""
    flow_no = new_ulid()
    request_id = f"bench-{seq}-{uuid.uuid4().hex[:8]}"
    amount = 10_000 + seq % 5_000
    request_hash = hashlib.sha256(request_id.encode()).hexdigest()
    async with db.transaction() as tx:
        flow_id = await tx.insert(
            "INSERT INTO flows (flow_no, caller, request_id, kind, amount, currency, request_hash, status,"
            " created_at, updated_at) VALUES (%s, 'loan-servicing', %s, 'WITHHOLD', %s, 'CNY', %s, 'PROCESSING',"
            " UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
            (flow_no, request_id, amount, request_hash),
        )
        await tx.commit()
    event_id, payload = _event(flow_no, "loan-servicing", request_id, amount)
    async with db.transaction() as tx:
        await tx.execute(
            "UPDATE flows SET status='SUCCEEDED', channel='sandbox', version=version+1,"
            " finished_at=UTC_TIMESTAMP(6), updated_at=UTC_TIMESTAMP(6) WHERE id=%s AND status='PROCESSING'",
            (flow_id,),
        )
        await tx.execute(
            "INSERT INTO outbox (event_id, event_type, flow_id, caller, msg_key, payload, created_at, dedupe_key)"
            " VALUES (%s, 'FLOW_RESULT', %s, 'loan-servicing', %s, %s, UTC_TIMESTAMP(6), %s)",
            (event_id, flow_id, flow_no, payload, f"result:{flow_id}"),
        )
        await tx.commit()
    on_commit()


async def run_writers(
    db: Database, writers: int, seconds: float, rate: float | None, on_commit: Callable[[], None]
) -> int:
    """Run requests for ``seconds`` (paced at ``rate``/s if given); returns how many completed."""
    started = time.monotonic()
    deadline = started + seconds
    issued = 0
    completed = 0

    async def writer() -> None:
        nonlocal issued, completed
        while True:
            seq = issued
            issued += 1
            if rate:
                due = started + seq / rate  # open schedule: falling behind is not forgiven
                if due >= deadline:
                    return
                if due > time.monotonic():
                    await asyncio.sleep(due - time.monotonic())
            elif time.monotonic() >= deadline:
                return
            await one_request(db, seq, on_commit)
            completed += 1

    await asyncio.gather(*(writer() for _ in range(writers)))
    return completed


# --- measurement ---------------------------------------------------------------------------


async def wait_drained(db: Database, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = await db.fetchone("SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL")
        if row is not None and int(row["n"]) == 0:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"outbox not drained within {timeout:.0f} s")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending list."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class PhaseResult:
    events: int
    seconds: float
    lags_ms: list[float]

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def published_since(db: Database, first_id: int) -> PhaseResult:
    """Rows with id >= first_id: count, first insert to last acknowledgement, per-row lag."""
    span = await db.fetchone(
        "SELECT COUNT(*) AS n, TIMESTAMPDIFF(MICROSECOND, MIN(created_at), MAX(published_at)) AS span_us"
        " FROM outbox WHERE id >= %s",
        (first_id,),
    )
    rows = await db.fetchall(
        "SELECT TIMESTAMPDIFF(MICROSECOND, created_at, published_at) AS lag_us FROM outbox WHERE id >= %s",
        (first_id,),
    )
    lags = sorted(int(r["lag_us"]) / 1000 for r in rows if r["lag_us"] is not None)
    events = int(span["n"]) if span else 0
    seconds = int(span["span_us"]) / 1_000_000 if span and span["span_us"] is not None else 0.0
    return PhaseResult(events, seconds, lags)


async def next_outbox_id(db: Database) -> int:
    row = await db.fetchone("SELECT COALESCE(MAX(id), 0) + 1 AS next_id FROM outbox")
    return int(row["next_id"]) if row else 1


async def timed(step: Callable[[], Awaitable[None]]) -> float:
    started = time.monotonic()
    await step()
    return time.monotonic() - started


# --- the run -------------------------------------------------------------------------------


async def bench(options: Options, db_config: DatabaseConfig, bootstrap: str) -> str:
    await migrate(db_config)
    db = Database(db_config)
    await db.start()
    relay: OutboxRelay | None = None
    try:
        # Phase 1: the request path alone.
        completed = await run_writers(db, options.writers, options.request_seconds, None, lambda: None)
        request_rate = completed / options.request_seconds
        print(f"requests: writers={options.writers} seconds={options.request_seconds:g} completed={completed}"
              f" req_per_s={request_rate:.0f}", flush=True)  # fmt: skip

        # Phase 2: the relay drains that backlog.
        config = RelayConfig(
            bootstrap_servers=bootstrap,
            default_topic="bench.flow-results",
            encoding="json" if options.encoding == "json" else "protobuf",
            enable_idempotence=False,  # tansu has no InitProducerId
            create_topics=True,
            topic_partitions=6,
            topic_replication_factor=1,
            batch_size=options.batch_size,
            metrics_interval_s=1.0,
        )
        relay = OutboxRelay(db, config)
        drain_seconds = await timed(lambda: _start_and_drain(relay, db))
        capacity = completed / drain_seconds
        print(f"drain: events={completed} seconds={drain_seconds:.2f} events_per_s={capacity:.0f}", flush=True)

        # Phase 3: steady fill with the relay running and notified after each commit.
        first_id = await next_outbox_id(db)
        rate = options.rate or request_rate

        fill_started = time.monotonic()
        sent = await run_writers(db, options.writers, options.duration, rate, relay.notify)
        fill_seconds = time.monotonic() - fill_started
        await wait_drained(db, timeout=60 + options.duration)
        steady = await published_since(db, first_id)
        lag_p50 = percentile(steady.lags_ms, 50)
        lag_p99 = percentile(steady.lags_ms, 99)
        print(f"steady: target_rate={rate:.0f} achieved_req_per_s={sent / fill_seconds:.0f} requests={sent}"
              f" events={steady.events} events_per_s={steady.events_per_s:.0f} lag_p50_ms={lag_p50:.1f}"
              f" lag_p99_ms={lag_p99:.1f} lag_max_ms={(steady.lags_ms or [0.0])[-1]:.1f}", flush=True)  # fmt: skip
        if steady.events != sent:
            raise RuntimeError(f"{sent} requests but {steady.events} events published")
        ratio = capacity / request_rate if request_rate else 0.0
        return (
            f"relay: events_per_s={capacity:.0f} ratio_to_requests={ratio:.2f}"
            f" lag_p50_ms={lag_p50:.1f} lag_p99_ms={lag_p99:.1f}"
        )
    finally:
        if relay is not None:
            await relay.stop()
        await db.stop()


async def _start_and_drain(relay: OutboxRelay, db: Database) -> None:
    await relay.start()
    await wait_drained(db, timeout=120)


def _drop_database(config: DatabaseConfig) -> None:
    conn = pymysql.connect(host=config.host, port=config.port, user=config.user, password=config.password.reveal())
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{config.database}`")
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    """``paygate bench relay [options]``; prints phase lines and the ``relay: ...`` summary last."""
    args = _parser().parse_args(argv)
    options = Options(
        mysql_host=args.mysql_host,
        mysql_port=args.mysql_port,
        writers=max(1, args.writers),
        request_seconds=args.request_seconds,
        rate=args.rate,
        duration=args.duration,
        batch_size=args.batch_size,
        encoding=args.encoding,
        keep_db=args.keep_db,
    )
    db_config = DatabaseConfig(
        host=options.mysql_host,
        port=options.mysql_port,
        database=f"pgbench_{uuid.uuid4().hex[:10]}",
        pool_min=1,
        pool_max=options.writers + 4,
    )
    broker = KafkaBroker()
    broker.start()
    try:
        summary = asyncio.run(bench(options, db_config, broker.bootstrap))
    finally:
        broker.stop()
        if not options.keep_db:
            _drop_database(db_config)
    print(summary, flush=True)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
