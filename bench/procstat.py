"""CPU time of processes from /proc, for the benchmarks' per-request CPU figures."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (every thread's children)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` and its live descendants (a supervisor and its workers)."""
    return cpu_seconds(pid) + sum(tree_cpu_seconds(child) for child in children(pid))


def pid_of(command: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == command:
                    return int(entry.name)
            except OSError:
                continue
    return None


async def cpu_over_window(start: float, end: float, pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds each of ``pids`` spends between wall-clock ``start`` and ``end`` (sleeps until then)."""
    await asyncio.sleep(max(0.0, start - time.time()))
    before = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
    await asyncio.sleep(max(0.0, end - time.time()))
    return {name: tree_cpu_seconds(pid) - before[name] for name, pid in pids.items()}


def machine_busy_seconds() -> float:
    """CPU seconds every core spent busy since boot (/proc/stat: all but idle and iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in fields]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / TICK


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (``comm``; threads of one name added up) of one process."""
    out: dict[str, float] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return out
