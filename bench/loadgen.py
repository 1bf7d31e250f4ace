"""The benchmark's load generator: unary ``Withhold`` calls over gRPC, in its own process.

``python -m bench.loadgen --target 127.0.0.1:50051 --concurrency 64 --seconds 10 ...``

Runs ``--concurrency`` workers (closed loop; with ``--rate`` an open schedule
capped at that concurrency) over ``--connections`` gRPC channels against the
same RPC whatever the server is (the echo floor serves the same method), so
every stage is driven identically. Requests that *complete* inside the
measurement window ``[--start-at, --start-at + --seconds]`` (wall clock, so
several generator processes share one window) are counted; the ones before
are warm-up. Prints one JSON object on stdout: completed, errors, latencies
(ms) and, with ``--per-request FILE``, writes ``flow_no latency_ms`` lines for
the measured requests (the gateway-added latency is computed from them).

Amounts never end in 01..09 (the sandbox's magic suffixes), request ids are
unique per run (``--prefix``), cards rotate through ``--cards FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from paygate.v1 import gateway_pb2 as pb
from paygate.v1 import gateway_pb2_grpc

MAX_SECONDS = 600.0


@dataclass
class Tally:
    window_start: float
    window_end: float
    latencies_ms: list[float] = field(default_factory=list)
    per_request: list[tuple[str, float]] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    completed_total: int = 0

    def record(self, started: float, ended: float, flow: pb.Flow | None, error: str | None) -> None:
        self.completed_total += 1
        if not self.window_start <= ended <= self.window_end:
            return
        if error is not None:
            self.errors[error] = self.errors.get(error, 0) + 1
            return
        assert flow is not None
        latency = (ended - started) * 1000.0
        self.latencies_ms.append(latency)
        self.per_request.append((flow.flow_no, latency))
        status = "REPLAYED" if flow.replayed else pb.FlowStatus.Name(flow.status)  # a replay would flatter tps
        self.statuses[status] = self.statuses.get(status, 0) + 1


def safe_amount(seq: int) -> int:
    """A positive amount in fen whose last two digits are 10..99 (no sandbox magic)."""
    return (10 + seq % 40) * 100 + 10 + seq % 90


async def run(args: argparse.Namespace) -> dict[str, object]:
    cards = [c for c in Path(args.cards).read_text().split() if c] if args.cards else ["6222020000000000"]
    md = (("authorization", f"Bearer {args.token}"),)
    channels = [
        grpc.aio.insecure_channel(args.target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(max(1, args.connections))
    ]
    stubs = [gateway_pb2_grpc.PaymentGatewayStub(ch) for ch in channels]
    tally = Tally(args.start_at, args.start_at + args.seconds)
    stop_at = min(tally.window_end, time.time() + MAX_SECONDS)
    issued = 0
    rng = random.Random(args.seed)
    # open schedule (--rate): request n is due at start_at - warmup + n / rate
    first_due = time.monotonic() + max(0.0, args.start_at - time.time()) - args.warmup_for_rate

    async def worker(w: int) -> None:
        nonlocal issued
        stub = stubs[w % len(stubs)]
        while True:
            seq = issued
            issued += 1
            if args.rate > 0:
                due = first_due + seq / args.rate
                if due - time.monotonic() > 0:
                    await asyncio.sleep(due - time.monotonic())
            if time.time() >= stop_at:
                return
            request = pb.WithholdRequest(
                request_id=f"{args.prefix}-{seq}",
                amount=pb.Money(amount=safe_amount(seq + rng.randrange(1000)), currency="CNY"),
                account_no=cards[seq % len(cards)],
                bank_code="ICBC",
                description="bench",
                wait_ms=args.wait_ms,
            )
            started = time.time()
            try:
                flow = await stub.Withhold(request, metadata=md, timeout=args.timeout)
                tally.record(started, time.time(), flow, None)
            except grpc.aio.AioRpcError as exc:
                tally.record(started, time.time(), None, exc.code().name)

    try:
        await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
    finally:
        for ch in channels:
            await ch.close(None)
    if args.per_request:
        Path(args.per_request).write_text("".join(f"{f} {lat:.3f}\n" for f, lat in tally.per_request))
    return {
        "completed": len(tally.latencies_ms),
        "completed_total": tally.completed_total,
        "errors": tally.errors,
        "statuses": tally.statuses,
        "seconds": args.seconds,
        "latencies_ms": [round(v, 3) for v in tally.latencies_ms],
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.loadgen", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--target", required=True)
    p.add_argument("--token", default="bench-token")
    p.add_argument("--cards", default="", help="file with one card number per line")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--start-at", type=float, required=True, help="wall-clock start of the measurement window")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=0.0, help="requests/s for this process (0 = closed loop)")
    p.add_argument("--warmup-for-rate", type=float, default=0.0, help="open schedule starts this much earlier")
    p.add_argument("--prefix", required=True, help="request_id prefix, unique per run")
    p.add_argument("--wait-ms", type=int, default=10_000)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--per-request", default="", help="write 'flow_no latency_ms' lines here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.seconds <= 0 or args.seconds > MAX_SECONDS or args.concurrency < 1:
        print("bench.loadgen: --seconds must be in (0, 600] and --concurrency >= 1", file=sys.stderr)
        return 2
    result = asyncio.run(run(args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
