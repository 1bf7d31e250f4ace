"""``[server] workers = N``: N gateway processes on one host, every core in use.

``paygate serve`` with ``workers > 1`` becomes a small supervisor (no
database, no channels of its own) that starts N workers, each
``paygate serve`` again with its own event loop, and then:

* **Ports.** Every worker binds the gRPC port and the callback port with
  ``SO_REUSEPORT`` (``grpc.so_reuseport``, aiohttp ``reuse_port=True``): the
  kernel spreads new connections over them. The ports must therefore be
  fixed (not 0). The console, when enabled, is served by worker 0 alone.
* **Background jobs.** Each worker is a replica of its own
  (gateway/replicas.py): replica id ``<replica_id>-w<i>``, or
  ``<hostname>-<supervisor pid>-w<i>`` without one, so the poller, the
  relay, the plan executor and recovery share their work through the same
  database leases and claims as separate hosts do, and a restarted worker
  ``i`` replaces its earlier run as a restarted replica does. Migrations run
  once, in the supervisor, before any worker starts.
* **Metrics.** Each worker serves its own registry on a private loopback
  port; the supervisor's ``/metrics`` (the configured metrics port) reads
  them all and answers the sum: counters, histograms and summaries add up
  across workers, ``*_created`` takes the earliest, gauges take the largest
  worker's value (every gauge here is state sampled from the shared database
  or one replica's view of it, where the worst worker is the one to see).
  ``paygate_workers`` and ``paygate_workers_scraped`` say how many workers
  run and how many answered this scrape.
* **Shutdown.** SIGTERM/SIGINT to the supervisor is passed to every worker,
  which drains as a single gateway does (``grace_s``); the supervisor waits
  for all of them (SIGKILL after ``grace_s`` + 15 s). A worker that exits on
  its own stops the others and the supervisor exits 1: the host's
  supervisor (systemd, Kubernetes) restarts the whole set. A supervisor
  that is killed outright takes its workers with it (``PR_SET_PDEATHSIG``:
  they get SIGTERM and drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterable, Sequence

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from channels.config import ConfigError
from gateway.config import Config

log = logging.getLogger("paygate.workers")

WORKER_ENV = "PAYGATE_WORKER"  # "<index>:<metrics port>:<supervisor pid>", set by the supervisor for its workers
SCRAPE_TIMEOUT_S = 2.0
STOP_MARGIN_S = 15.0


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    index: int
    metrics_port: int
    supervisor_pid: int


def role(env: dict[str, str] | None = None) -> WorkerRole | None:
    """This process's role when a supervisor started it, else None."""
    raw = (os.environ if env is None else env).get(WORKER_ENV, "")
    if not raw:
        return None
    index, port, pid = (int(part) for part in raw.split(":"))
    return WorkerRole(index, port, pid)


def supervising(config: Config) -> bool:
    """True when this ``paygate serve`` is to start workers instead of serving itself."""
    return config.server.workers > 1 and role() is None


def replica_id(config: Config, who: WorkerRole) -> str:
    base = config.server.replica_id or f"{socket.gethostname()}-{who.supervisor_pid}"
    suffix = f"-w{who.index}"
    return base[: 64 - len(suffix)] + suffix


def worker_config(config: Config, who: WorkerRole | None = None) -> Config:
    """The configuration worker ``who`` serves (``config`` itself outside a supervisor's worker)."""
    who = who or role()
    if who is None:
        return config
    server = dataclasses.replace(
        config.server, replica_id=replica_id(config, who), metrics_host="127.0.0.1", metrics_port=who.metrics_port
    )
    console = config.console if who.index == 0 else dataclasses.replace(config.console, enabled=False)
    return dataclasses.replace(config, server=server, console=console)


def check(config: Config) -> None:
    """Workers share ports: they must be fixed ones."""
    if config.server.workers <= 1:
        return
    for key, port in (("server.grpc_port", config.server.grpc_port), ("server.http_port", config.server.http_port)):
        if port == 0:
            problem = "must be a fixed port when server.workers > 1 (the workers share it)"
            raise ConfigError(key, problem, at_start_up=True)


# --- metrics ------------------------------------------------------------------------------


def merge(texts: Iterable[str]) -> list[Metric]:
    """The workers' exposition texts as one: counters etc. summed, ``*_created`` earliest, gauges largest."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            into = values.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in into:
                    into[key] = sample.value
                elif family.type == "gauge":
                    into[key] = max(into[key], sample.value)
                elif sample.name.endswith("_created"):
                    into[key] = min(into[key], sample.value)
                else:
                    into[key] += sample.value
    out: list[Metric] = []
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.samples.append(Sample(sample_name, dict(labels), value))
        out.append(family)
    return out


class _Merged(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


def exposition(texts: Sequence[str], workers: int) -> bytes:
    """The supervisor's ``/metrics`` body from the texts of the workers that answered."""
    up = Metric("paygate_workers", "Gateway worker processes this supervisor runs ([server] workers).", "gauge")
    up.add_sample("paygate_workers", {}, float(workers))
    scraped = Metric("paygate_workers_scraped", "Workers whose metrics this scrape includes.", "gauge")
    scraped.add_sample("paygate_workers_scraped", {}, float(len(texts)))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged([*merge(texts), up, scraped]))
    return generate_latest(registry)


# --- the supervisor -----------------------------------------------------------------------


PR_SET_PDEATHSIG = 1


def _die_with_supervisor() -> None:
    """In a worker, between fork and exec: SIGTERM when the supervisor dies, even by SIGKILL (Linux).

    So no worker outlives its supervisor holding the shared ports; it drains
    as on any SIGTERM. Elsewhere a no-op.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Supervisor:
    """Starts ``config.server.workers`` workers, serves their summed metrics, stops them together."""

    def __init__(self, config: Config, command: list[str]) -> None:
        self.config = config
        self.command = command  # how to run one worker: ``paygate serve`` with the same config source
        self.ports = [_free_loopback_port() for _ in range(config.server.workers)]
        self.procs: list[asyncio.subprocess.Process] = []
        self.runner: web.AppRunner | None = None

    async def scrape(self) -> list[str]:
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def one(port: int) -> str | None:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                        return await response.text() if response.status == 200 else None
                except (aiohttp.ClientError, TimeoutError):
                    return None

            texts = await asyncio.gather(*(one(port) for port in self.ports))
        return [text for text in texts if text is not None]

    async def _metrics(self, request: web.Request) -> web.Response:
        body = exposition(await self.scrape(), len(self.procs))
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def start(self) -> None:
        me = os.getpid()
        for index, port in enumerate(self.ports):
            env = {**os.environ, WORKER_ENV: f"{index}:{port}:{me}"}
            self.procs.append(
                await asyncio.create_subprocess_exec(*self.command, env=env, preexec_fn=_die_with_supervisor)
            )
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        # keepalive_timeout: a scrape whose headers never finish is cut off (as on every listener, gateway/app.py)
        self.runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=self.config.server.http_request_timeout_s
        )
        await self.runner.setup()
        server = self.config.server
        await web.TCPSite(self.runner, server.metrics_host, server.metrics_port).start()
        log.info(
            "supervising workers",
            extra={"pids": [p.pid for p in self.procs], "metrics_port": server.metrics_port},
        )

    async def run(self) -> int:
        """Until SIGTERM/SIGINT (0) or a worker's own exit (1); every worker is stopped either way."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        exits = [asyncio.create_task(proc.wait()) for proc in self.procs]
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([stopping, *exits], return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if not stop.is_set():
            died = [p for p in self.procs if p.returncode is not None]
            log.error("a worker exited on its own; stopping the others", extra={"pids": [p.pid for p in died]})
            code = 1
        stopping.cancel()
        await self.stop()
        return code

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = self.config.server.grace_s + STOP_MARGIN_S
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in self.procs)), deadline)
        except TimeoutError:
            for proc in self.procs:
                if proc.returncode is None:
                    log.error("worker did not stop in time; killing it", extra={"pid": proc.pid})
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in self.procs))
        if self.runner is not None:
            await self.runner.cleanup()
        log.info("workers stopped", extra={"codes": [p.returncode for p in self.procs]})


def supervise(config: Config, config_path: str | None) -> int:
    """``paygate serve`` with ``[server] workers > 1``: run the workers until told to stop."""
    check(config)
    command = [sys.executable, "-m", "gateway.cli", "serve", *(["--config", config_path] if config_path else [])]
    return asyncio.run(Supervisor(config, command).run())
