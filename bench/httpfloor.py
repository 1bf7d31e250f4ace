"""The HTTP floor: a bare aiohttp client calling the sandbox bank's withhold endpoint, nothing else.

``python -m bench.httpfloor --base-url http://127.0.0.1:9100 --merchant M --secret S --pairs FILE ...``

Each of ``--concurrency`` workers loops: build the withhold JSON
(:func:`channels.sandbox.wire.encode`), sign it (the bank refuses unsigned
orders: :func:`channels.sandbox.wire.sign_headers`), POST it over one shared
``aiohttp.ClientSession`` and read the answer. No verification of the
answer, no database, no gRPC: what an HTTP call to a channel costs the
client process (its CPU per request is what ``make bench`` reads from
``/proc``). ``--pairs`` holds ``card agreement_ref`` lines, from agreements
the gateway bound. Prints JSON like :mod:`bench.dbfloor`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import aiohttp

from bench.procstat import cpu_over_window
from channels.sandbox import wire

MAX_SECONDS = 600.0


async def run(args: argparse.Namespace) -> dict[str, object]:
    pairs = [line.split() for line in Path(args.pairs).read_text().splitlines() if line.strip()]
    window_start = time.time() + args.warmup
    window_end = window_start + args.seconds
    issued = 0
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    url = args.base_url.rstrip("/") + "/v1/withhold"
    path = "/v1/withhold"
    watched = {"httpfloor": os.getpid(), **({"sandbox": args.sandbox_pid} if args.sandbox_pid else {})}
    cpu = asyncio.create_task(cpu_over_window(window_start, window_end, watched))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency)) as session:

        async def worker() -> None:
            nonlocal issued
            while time.time() < window_end:
                seq = issued
                issued += 1
                card, agreement_ref = pairs[seq % len(pairs)]
                body = wire.encode(
                    wire.WithholdRequest(
                        order_no=f"{args.prefix}{seq:012d}",
                        amount=(10 + seq % 40) * 100 + 10 + seq % 90,
                        currency="CNY",
                        agreement_ref=agreement_ref,
                        account_no=card,
                        bank_code="ICBC",
                        description="bench",
                    )
                )
                headers = wire.sign_headers(args.merchant, args.secret, "POST", path, body)
                started = time.time()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    status = str(response.status)
                ended = time.time()
                if window_start <= ended <= window_end:
                    latencies.append((ended - started) * 1000)
                    statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return {
        "completed": len(latencies),
        "seconds": args.seconds,
        "statuses": statuses,
        "latencies_ms": latencies,
        "cpu_s": await cpu,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.httpfloor", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--base-url", required=True)
    p.add_argument("--merchant", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--pairs", required=True, help="file of 'card agreement_ref' lines")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--sandbox-pid", type=int, default=0, help="also report this process's CPU in the window")
    p.add_argument("--prefix", default=f"HF{int(time.time())}")
    args = p.parse_args(argv)
    args.seconds = min(max(args.seconds, 0.5), MAX_SECONDS)
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
