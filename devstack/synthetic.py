"""Synthetic traffic on every paygate metric, served over HTTP.

For dashboard and alert work without a running gateway, and for the live
dashboard test: every metric in :data:`gateway.metrics.REGISTRY` gets samples
for every label value the dashboard and the rules select on.

Run it in its own process (it writes into the process-wide registry)::

    python -m devstack.synthetic --port 9464

then point Prometheus (or ``start_prometheus``) at ``127.0.0.1:9464``.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence

from prometheus_client import start_http_server

from gateway import metrics

CHANNELS = ("sandbox_a", "sandbox_b")
OPERATIONS = ("withhold", "payout", "refund", "query")
# Per channel: weights of succeeded, payer_failure, channel_failure, pending, error.
# sandbox_b is the unhealthy one.
OUTCOME_WEIGHTS = {"sandbox_a": (90, 6, 2, 1, 1), "sandbox_b": (55, 5, 30, 5, 5)}
OUTCOMES = ("succeeded", "payer_failure", "channel_failure", "pending", "error")
STATES = ("enabled", "draining", "disabled", "eliminated", "probing")
CURRENT_STATE = {"sandbox_a": "enabled", "sandbox_b": "eliminated"}
DECISION_REASONS = ("best_score", "exploration", "probe", "failover", "explicit")
ROUTING_FILTERS = ("capability", "currency", "bank", "amount_limit", "agreement", "position", "maintenance", "state")
FAILOVER_REASONS = ("channel_busy", "maintenance", "bank_not_supported")
POLL_RESULTS = ("resolved", "pending", "error", "exhausted")
CALLBACK_RESULTS = ("verified", "bad_signature", "unknown_order", "replay", "mismatch", "malformed")
DISCREPANCY_SOURCES = ("callback", "poll")
KINDS = ("WITHHOLD", "PAYOUT", "REFUND")
GRPC_METHODS = (
    "Withhold",
    "Payout",
    "GetFlow",
)
GRPC_CODES = ("OK", "OK", "OK", "OK", "INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE")
TOPIC = "paygate.flow-results.v1"
PUBLISH_ERRORS = ("KafkaTimeoutError", "NotLeaderForPartitionError")


def record_tick(rng: random.Random, calls: int = 20) -> None:
    """One round of synthetic activity on every metric (``calls`` channel calls per channel)."""
    for channel in CHANNELS:
        for _ in range(calls):
            operation = rng.choice(OPERATIONS)
            outcome = rng.choices(OUTCOMES, weights=OUTCOME_WEIGHTS[channel])[0]
            metrics.CHANNEL_REQUESTS.labels(channel, operation, outcome).inc()
            metrics.CHANNEL_LATENCY.labels(channel, operation).observe(rng.expovariate(1 / 0.2))
            metrics.ROUTING_DECISIONS.labels(channel, operation, rng.choice(DECISION_REASONS)).inc()
        for operation in OPERATIONS:
            metrics.ROUTER_SUCCESS_ESTIMATE.labels(channel, operation).set(rng.uniform(0.6, 0.99))
        for state in STATES:
            metrics.CHANNEL_STATE.labels(channel, state).set(1 if CURRENT_STATE[channel] == state else 0)
        metrics.CHANNEL_UNMAPPED_CODES.labels(channel).inc(rng.randint(0, 1))
        metrics.ROUTING_REJECTIONS.labels(channel, rng.choice(ROUTING_FILTERS)).inc()
        metrics.FAILOVERS.labels(channel, rng.choice(FAILOVER_REASONS)).inc()
        metrics.POSITION_AVAILABLE.labels(channel, "CNY").set(rng.randint(1_000_000, 50_000_000))
        metrics.POSITION_RESERVED.labels(channel, "CNY").set(rng.randint(0, 1_000_000))
        for result in POLL_RESULTS:
            metrics.POLLS.labels(channel, result).inc(rng.randint(1, 3))
        metrics.POLL_EXHAUSTED.labels(channel).inc(rng.randint(0, 1))
        for result in CALLBACK_RESULTS:
            metrics.CALLBACKS.labels(channel, result).inc(rng.randint(1, 5))
        metrics.DISCREPANCIES.labels(channel, rng.choice(DISCREPANCY_SOURCES)).inc(rng.randint(0, 1))
    for operation in OPERATIONS:
        metrics.ROUTING_NO_CANDIDATE.labels(operation).inc(rng.randint(0, 1))
    for kind in KINDS:
        metrics.FLOWS_CREATED.labels(kind).inc(rng.randint(5, 20))
        metrics.FLOWS_FINISHED.labels(kind, "SUCCEEDED").inc(rng.randint(4, 15))
        metrics.FLOWS_FINISHED.labels(kind, "FAILED").inc(rng.randint(0, 3))
        metrics.FLOWS_REPLAYED.labels(kind).inc(rng.randint(0, 2))
    for method in GRPC_METHODS:
        for _ in range(calls):
            metrics.GRPC_REQUESTS.labels(method, rng.choice(GRPC_CODES)).inc()
            metrics.GRPC_LATENCY.labels(method).observe(rng.expovariate(1 / 0.05))
    metrics.PENDING_ATTEMPTS.set(rng.randint(0, 40))
    metrics.OLDEST_PENDING_AGE.set(rng.uniform(0, 900))
    metrics.POLL_QUEUE_DUE.set(rng.randint(0, 10))
    metrics.NEEDS_REVIEW.set(rng.randint(0, 3))
    metrics.OUTBOX_BACKLOG.set(rng.randint(0, 20))
    metrics.OUTBOX_OLDEST_AGE.set(rng.uniform(0, 5))
    for status in ("PAYING", "PAYOUT_FAILED"):
        metrics.SETTLEMENTS_UNFINISHED.labels(status).set(rng.randint(0, 2))
        metrics.SETTLEMENT_OLDEST_AGE.labels(status).set(rng.uniform(0, 7200))
    metrics.OUTBOX_PUBLISHED.labels(TOPIC).inc(rng.randint(5, 30))
    metrics.OUTBOX_PUBLISH_ERRORS.labels(rng.choice(PUBLISH_ERRORS)).inc(rng.randint(0, 1))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="HTTP port for /metrics (binds 127.0.0.1)")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between activity rounds")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: run forever)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    record_tick(rng)  # every series exists before the first scrape
    server, thread = start_http_server(args.port, addr="127.0.0.1", registry=metrics.REGISTRY)
    deadline = time.monotonic() + args.duration if args.duration > 0 else None
    print(f"serving synthetic paygate metrics on http://127.0.0.1:{args.port}/metrics", flush=True)
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(args.interval)
            record_tick(rng)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        thread.join(timeout=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
