"""A/B of two trees of the gateway in one run: ``python -m bench.ab --base REV``.

What a code change buys, measured so that the shared machine moves both
sides alike: the tree at ``REV`` (A, extracted with ``git archive`` and run
with ``PYTHONPATH`` pointing at it) and this tree (B) serve side by side, each
``paygate serve`` with its own database, the same zero-latency sandbox bank,
the same tansu broker and relay. Stages of ``--seconds`` alternate A B A B
... at ``--concurrency``, driven by :mod:`bench.loadgen`; each pair gives
B/A of the gateway's CPU per withhold and of throughput. The last line::

    ab: base=<rev> gw_cpu_ratio=<median> spread=<low>-<high> tps_ratio=<median> pairs=<n> a_cpu_ms=<m> b_cpu_ms=<m>
        added_p50_ratio=<median> added_spread=<low>-<high> a_added_p50_ms=<m> b_added_p50_ms=<m> loadavg=<1 min>

(a ``gw_cpu_ratio`` below 1: B spends less per withhold; ``added_p50_ratio``: the
gateway-added latency, client latency minus the channel call, as ``bench.run``
joins it from each gateway's ``channel call`` log lines.)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pymysql

from bench.procstat import pid_of
from bench.run import CHANNEL, Bench, Options, drop_database, wait_drained
from bench.stages import Paired, Stage, percentile
from devstack.processes import ProcessSet
from devstack.stack import GatewayProcess

ROOT = Path(__file__).resolve().parents[1]


class TreeGateway(GatewayProcess):
    """``paygate serve`` from another tree: that tree first on ``PYTHONPATH``."""

    def __init__(self, procs: ProcessSet, config_path: Path, tree: Path, *, log: Path, name: str) -> None:
        super().__init__(procs, config_path, log=log, name=name)
        self.tree = tree

    def env(self) -> dict[str, str]:
        # PYTHONSAFEPATH: ``python -m`` puts the working directory first on sys.path, before PYTHONPATH,
        # so run from this repository (as bench.ab is) tree A would import tree B's packages
        return {**super().env(), "PYTHONPATH": str(self.tree), "PYTHONSAFEPATH": "1"}

    def check_tree(self) -> None:
        """Refuse to measure unless this process's environment imports the gateway from :attr:`tree`."""
        probe = [sys.executable, "-c", "import gateway; print(gateway.__file__)"]
        where = subprocess.run(probe, env=self.env(), capture_output=True, text=True, check=True).stdout.strip()
        if not Path(where).resolve().is_relative_to(self.tree.resolve()):
            raise RuntimeError(f"{self.name} would import the gateway from {where}, not from {self.tree}")


def extract(rev: str, into: Path) -> None:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


async def run(rev: str, opts: Options, channel: dict[str, int]) -> tuple[Paired, Paired, Paired, list[Stage]]:
    base = opts.workdir / "base"
    base.mkdir()
    extract(rev, base)
    bench = Bench(opts)
    a = TreeGateway(bench.procs, opts.workdir / "a.toml", base, log=opts.workdir / "gateway-a.log", name="gateway_a")
    b = GatewayProcess(bench.procs, opts.workdir / "b.toml", log=opts.workdir / "gateway-b.log", name="gateway_b")
    a.check_tree()
    databases = {a.name: f"{opts.database}_a", b.name: f"{opts.database}_b"}
    stages: list[Stage] = []
    try:
        bench.broker.start()
        await asyncio.to_thread(bench.sandbox.start, bench.procs, log=opts.workdir / "sandbox.log")
        bench.set_channel(channel)
        for gw in (a, b):
            await drop_database(databases[gw.name])
            gw.write_config(bench.config(gw, database={"database": databases[gw.name], "user": "root"}))
            await asyncio.to_thread(gw.start, migrate=True)
            await bench.bind_cards(gw, cards_file=opts.workdir / f"cards-{gw.name}.txt")
        mariadb = pid_of("mariadbd") or pid_of("mysqld")
        if mariadb:
            bench.pids["mariadb"] = mariadb
        cpu: list[float] = []
        tps: list[float] = []
        added: list[float] = []
        for i in range(opts.pairs):
            pair = []
            for gw in (a, b):
                cards = opts.workdir / f"cards-{gw.name}.txt"
                stage = await added_stage(bench, f"{gw.name}-{i}", gw, databases[gw.name], cards)
                stages.append(stage)
                pair.append(stage)
                print(
                    f"  {stage.name}: {stage.tps:.0f} tps, gateway {stage.cpu_ms_per_request((gw.name,)):.2f} ms"
                    f" per withhold, added p50 {percentile(stage.added_ms, 50):.2f} ms"
                    f" (p99 {percentile(stage.added_ms, 99):.2f}), other processes {stage.others_cores or 0:.2f}"
                    f" cores, load average {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
            sa, sb = pair
            cpu.append(sb.cpu_ms_per_request((b.name,)) / max(sa.cpu_ms_per_request((a.name,)), 1e-9))
            tps.append(sb.tps / sa.tps if sa.tps else 0.0)
            a_added = percentile(sa.added_ms, 50)
            added.append(percentile(sb.added_ms, 50) / a_added if a_added else 0.0)
    finally:
        bench.stop_all()
        if not opts.keep_db:
            for name in databases.values():
                await drop_database(name)
    return Paired(tuple(cpu)), Paired(tuple(tps)), Paired(tuple(added)), stages


async def added_stage(bench: Bench, name: str, gw: GatewayProcess, database: str, cards: Path) -> Stage:
    """A closed-loop stage against ``gw`` that also joins each withhold with ``gw``'s channel-call log lines:
    the gateway-added latency (client latency minus the channel call), as ``bench.run`` measures it."""
    stage = Stage(name, bench.opts.concurrency)
    seconds = bench.opts.seconds
    bench.opts = dataclasses.replace(bench.opts, seconds=max(2.0, seconds / 2))
    bench.gateway, bench.gateway_log = gw, gw.log_path or bench.gateway_log
    bench.log_offset = bench.gateway_log.stat().st_size if bench.gateway_log.exists() else 0
    bench._durations = {}
    try:
        await bench.load(stage, gw.grpc_port, (gw.name, "mariadb"), cards=cards, per_request=True)
    finally:
        bench.opts = dataclasses.replace(bench.opts, seconds=seconds)
        bench._durations = {}
    await wait_drained(database, timeout=60)
    return stage


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--base", required=True, help="git revision of tree A (B is this tree)")
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--seconds", type=float, default=16.0, help="per stage (each stage measures half of it)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--cards", type=int, default=16)
    p.add_argument("--database", default="paygate_ab")
    p.add_argument("--keep-db", action="store_true")
    p.add_argument("--channel-ms", default="0/0", help="the sandbox bank's p50/p99 ms (120/400: the low-load stages)")
    a = p.parse_args(argv)
    p50, p99 = (int(x) for x in a.channel_ms.split("/"))
    warnings.filterwarnings("ignore", category=pymysql.Warning)
    opts = Options(
        quick=False,
        seconds=a.seconds,
        warmup=2.0,
        concurrency=a.concurrency,
        levels=[],
        loadgens=2,
        cards=a.cards,
        database=a.database,
        keep_db=a.keep_db,
        profile_s=0.0,
        workdir=Path(tempfile.mkdtemp(prefix="paygate-ab-")),
        pairs=max(1, a.pairs),
    )
    started = time.monotonic()
    print(f"ab: A = {a.base}, B = this tree ({ROOT}); {os.cpu_count()} CPUs shared; workdir {opts.workdir}")
    cpu, tps, added, stages = asyncio.run(run(a.base, opts, {"p50_ms": p50, "p99_ms": p99}))
    a_cpu = statistics.median(s.cpu_ms_per_request(("gateway_a",)) for s in stages if s.name.startswith("gateway_a"))
    b_cpu = statistics.median(s.cpu_ms_per_request(("gateway_b",)) for s in stages if s.name.startswith("gateway_b"))
    print(f"ab: gateway CPU per withhold B/A: {cpu.describe()}")
    print(
        f"ab: throughput B/A: {tps.describe()}  ({time.monotonic() - started:.0f} s; channel {CHANNEL}"
        f" p50/p99 {p50}/{p99} ms, concurrency {a.concurrency})"
    )
    a_added = statistics.median(percentile(s.added_ms, 50) for s in stages if s.name.startswith("gateway_a"))
    b_added = statistics.median(percentile(s.added_ms, 50) for s in stages if s.name.startswith("gateway_b"))
    print(f"ab: gateway-added latency p50 B/A: {added.describe()}")
    print(
        f"ab: base={a.base} gw_cpu_ratio={cpu.median:.3f} spread={cpu.low:.3f}-{cpu.high:.3f}"
        f" tps_ratio={tps.median:.3f} pairs={len(cpu.ratios)} a_cpu_ms={a_cpu:.2f} b_cpu_ms={b_cpu:.2f}"
        f" added_p50_ratio={added.median:.3f} added_spread={added.low:.3f}-{added.high:.3f}"
        f" a_added_p50_ms={a_added:.2f} b_added_p50_ms={b_added:.2f} loadavg={os.getloadavg()[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
