"""A lone request's timeline: timestamps around each step of the gateway, for diagnosis only.

``PAYGATE_TIMELINE=/tmp/tl PYTHONPATH=bench/timeline_site:. python -m bench.run ...`` makes
every ``paygate serve`` of the run install the wrappers below at start-up (through
``bench/timeline_site/sitecustomize.py``) and append one line per event to
``/tmp/tl.<pid>``: ``<perf_counter> <task> <event>``. ``python -m bench.timeline FILE``
cuts the file into requests (servicer entry to exit) and prints the median of each
segment. Nothing here is imported by the gateway in normal runs.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

_events: list[tuple[float, str, str]] = []
_path = ""


def mark(event: str) -> None:
    try:
        task = asyncio.current_task()
        name = task.get_name() if task is not None else "-"
    except RuntimeError:
        name = "-"
    _events.append((time.perf_counter(), name.replace(" ", "_")[:40], event))
    if len(_events) >= 2000:
        flush()


def flush() -> None:
    if not _path:
        return
    lines = "".join(f"{t:.6f} {task} {event}\n" for t, task, event in _events)
    _events.clear()
    with open(_path, "a") as out:
        out.write(lines)


def _wrap(cls: type, name: str, label: str | None = None, result: Callable[[Any], str] | None = None) -> None:
    original = getattr(cls, name)
    label = label or f"{cls.__name__}.{name}"

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        mark(f"{label}>")
        try:
            value = await original(*args, **kwargs)
        except BaseException as exc:
            mark(f"{label}<!{type(exc).__name__}")
            raise
        mark(f"{label}<{result(value) if result else ''}")
        return value

    setattr(cls, name, wrapper)


def install(path: str) -> None:
    global _path
    _path = f"{path}.{os.getpid()}"
    from gateway.api.servicer import PaymentGatewayServicer
    from gateway.flows import FlowService
    from gateway.outbox.relay import OutboxRelay
    from gateway.poller import Poller
    from gateway.store.agreements import MySQLAgreementStore
    from gateway.store.batch import GroupCommitter
    from gateway.store.db import Tx
    from gateway.store.flow_batch import FlowBatch
    from gateway.store.flows import MySQLFlowStore

    _wrap(PaymentGatewayServicer, "Withhold", result=lambda flow: f":{flow.flow_no}")
    _wrap(MySQLAgreementStore, "active_refs")
    _wrap(FlowService, "route")
    _wrap(FlowService, "timed_call")
    _wrap(FlowBatch, "create")
    _wrap(FlowBatch, "apply")
    _wrap(GroupCommitter, "_run")
    _wrap(MySQLFlowStore, "by_id")
    _wrap(MySQLFlowStore, "_apply_one")
    for name in ("script", "script_commit_if", "read_only", "commit", "execute", "fetchone", "fetchall", "insert"):
        _wrap(Tx, name, f"tx.{name}")
    _wrap(OutboxRelay, "run_once")
    _wrap(Poller, "run_once")
    import aiomysql

    _wrap(aiomysql.Pool, "_acquire", "pool.acquire")

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        mark(f"gc.{phase}{info.get('generation')}")

    gc.callbacks.append(on_gc)
    atexit.register(flush)


# --- analysis ---------------------------------------------------------------------------


def requests(path: str) -> list[list[tuple[float, str, str]]]:
    rows = []
    for line in open(path):
        t, task, event = line.rstrip("\n").split(" ", 2)
        rows.append((float(t), task, event))
    rows.sort()
    out: list[list[tuple[float, str, str]]] = []
    current: list[tuple[float, str, str]] | None = None
    for row in rows:
        if row[2] == "PaymentGatewayServicer.Withhold>":
            current = [row]
        elif current is not None:
            current.append(row)
            if row[2].startswith("PaymentGatewayServicer.Withhold<"):
                out.append(current)
                current = None
    return out


def main(argv: list[str]) -> int:
    segs: dict[str, list[float]] = {}
    order: list[str] = []
    for req in requests(argv[0]):
        t0 = req[0][0]
        prev = t0
        seen: dict[str, int] = {}
        for t, _task, event in req[1:]:
            n = seen.get(event, 0)
            seen[event] = n + 1
            key = event if n == 0 else f"{event}#{n + 1}"
            if key not in segs:
                segs[key] = []
                order.append(key)
            segs[key].append((t - prev) * 1000)
            prev = t
        segs.setdefault("TOTAL", []).append((req[-1][0] - t0) * 1000)
    for key in [*order, "TOTAL"]:
        values = segs[key]
        print(f"{key:<50} n={len(values):4d} p50={statistics.median(values):8.2f} ms  max={max(values):8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
