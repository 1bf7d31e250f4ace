"""The processes of the fault-injection run (``python -m bench.chaos``) and how to hurt them.

Every process is started in its own session (process group), binds 127.0.0.1
only, and is killed by :meth:`ProcessSet.kill_all` on the way out, whatever
happened. Nothing here knows about payments: the workload and the checks are
in ``bench/chaos.py`` and ``bench/chaos_check.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.kafka_broker import free_port, tansu_binary
from gateway.demo import wait_port

CALLER = "chaos-loans"
TOKEN = "chaos-loans-token-0123456789"
OPERATOR_TOKEN = "chaos-operator-token-0123456789"
TOPIC = "paygate.flow-results"
MERCHANT_ID = "chaos-merchant"


def http_json(url: str, payload: Any = None, timeout: float = 30.0) -> Any:
    """GET (or POST ``payload`` as JSON) a loopback URL and decode the JSON answer."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())


class ProcessSet:
    """Spawns processes in their own process groups and remembers them all, for kill_all()."""

    def __init__(self, log: IO[bytes]) -> None:
        self.log = log
        self._procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._procs.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal the process's whole group (it is its own session leader) and reap it after SIGKILL."""
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        if sig == signal.SIGKILL:
            proc.wait(10)

    def kill_all(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGCONT)  # a frozen process cannot handle SIGTERM
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    self.kill(proc)


@dataclass
class Broker:
    """tansu with in-memory storage on a fixed port: a restart comes back with an empty log."""

    procs: ProcessSet
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        args = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        self.proc = self.procs.spawn([*args, "--storage-engine", "memory://tansu/"])
        wait_port(self.port, self.proc, "tansu broker")

    def kill(self) -> None:
        if self.proc is not None:
            self.procs.kill(self.proc)


@dataclass
class Sandbox:
    """One ``paygate sandbox`` process (a simulated bank) with its own ledger."""

    name: str
    behaviour: dict[str, Any]
    notify_url: str
    port: int = field(default_factory=free_port)

    @property
    def secret(self) -> str:
        return f"{self.name}-secret"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, procs: ProcessSet) -> None:
        args = [sys.executable, "-m", "gateway.cli", "sandbox", "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--name", self.name, "--secret", self.secret, "--merchant-id", MERCHANT_ID]
        args += ["--notify-url", self.notify_url, "--behaviour-json", json.dumps(self.behaviour)]
        wait_port(self.port, procs.spawn(args), f"sandbox {self.name}")

    def set_behaviour(self, changes: dict[str, Any]) -> None:
        http_json(f"{self.base_url}/_admin/behaviour", changes, timeout=5)

    def ledger(self) -> dict[str, Any]:
        result: dict[str, Any] = http_json(f"{self.base_url}/_admin/ledger", timeout=120)
        return result

    def sms_code(self, sign_ref: str) -> str:
        return str(http_json(f"{self.base_url}/_admin/sms/{sign_ref}", timeout=5)["sms_code"])


@dataclass
class GatewayProcess:
    """``paygate serve`` on fixed ports (so a restarted gateway is reachable where the old one was)."""

    procs: ProcessSet
    config_path: Path
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "PAYGATE_CONFIG": str(self.config_path)}

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "gateway.cli", "migrate"],
            env=self.env(),
            check=True,
            stdout=self.procs.log,
            stderr=subprocess.STDOUT,
            timeout=120,
        )

    def start(self) -> None:
        self.proc = self.procs.spawn([sys.executable, "-m", "gateway.cli", "serve"], env=self.env())
        wait_port(self.grpc_port, self.proc, "gateway", timeout=60)
        wait_port(self.http_port, self.proc, "gateway callbacks", timeout=30)

    def crash(self) -> None:
        """SIGKILL: no shutdown code runs, in-flight calls and unmarked outbox rows are left as they are."""
        if self.proc is not None:
            self.procs.kill(self.proc)

    def freeze(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def write_config(self, database: str, bootstrap: str, sandboxes: list[Sandbox]) -> None:
        self.config_path.write_text(gateway_toml(self, database, bootstrap, sandboxes))


def gateway_toml(gw: GatewayProcess, database: str, bootstrap: str, sandboxes: list[Sandbox]) -> str:
    # Short poll schedules so every pending result resolves (or reaches review) within the run.
    schedule = "[[0.5, 40], [2, 60]]"
    lines = [
        "[server]",
        'grpc_host = "127.0.0.1"',
        f"grpc_port = {gw.grpc_port}",
        'http_host = "127.0.0.1"',
        f"http_port = {gw.http_port}",
        'metrics_host = "127.0.0.1"',
        f"metrics_port = {gw.metrics_port}",
        "default_wait_ms = 2000",
        "grace_s = 2",
        "",
        "[database]",
        f'database = "{database}"',
        "pool_min = 2",
        "pool_max = 30",
        "connect_timeout_s = 2",
        "",
        "[security]",
        'account_hash_key = "chaos-account-hash-key-0123456789"',
        "",
        f"[callers.{CALLER}]",
        f'token = "{TOKEN}"',
        "",
        "[operators.chaos]",
        f'token = "{OPERATOR_TOKEN}"',
        "",
        "[poller]",
        "interval_s = 0.2",
        "first_delay_s = 0.5",
        # A killed gateway's leases must expire quickly, or its rows wait a minute.
        "lease_s = 5",
        f"schedule = {schedule}",
        "not_found_close_after_s = 5",
        "",
        "[logging]",
        'format = "text"',
        'level = "WARNING"',
        "",
        "[kafka]",
        "enabled = true",
        f'bootstrap_servers = "{bootstrap}"',
        f'default_topic = "{TOPIC}"',
        "enable_idempotence = false  # tansu lacks InitProducerId",
        "request_timeout_ms = 3000",
        "backoff_max_s = 2",
    ]
    for sandbox in sandboxes:
        lines += [
            "",
            "[[channels]]",
            f'id = "{sandbox.name}"',
            'adapter = "sandbox"',
            "[channels.settings]",
            f'base_url = "{sandbox.base_url}"',
            f'merchant_id = "{MERCHANT_ID}"',
            f'secret = "{sandbox.secret}"',
            "timeout_s = 1.0",
        ]
    return "\n".join(lines) + "\n"


def restart_mariadb(timeout: float = 60.0) -> float:
    """Shut the shared MariaDB down and start it again; returns the seconds it was unreachable.

    Other agents use this server too: the outage is kept as short as the
    server allows. ``mysqladmin shutdown`` returns before the server process
    has exited, and starting a second one meanwhile does nothing, so the old
    process is waited for first; a start that does not answer pings is retried.
    """
    began = time.monotonic()
    deadline = began + timeout
    subprocess.run(["mysqladmin", "-uroot", "-h127.0.0.1", "shutdown"], check=False, timeout=60, capture_output=True)
    while _mariadbd_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    while time.monotonic() < deadline:
        start = ["start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/mariadbd"]
        subprocess.run(start, check=True, timeout=30, capture_output=True)
        tried_until = min(deadline, time.monotonic() + 15)
        while time.monotonic() < tried_until:
            ping = ["mysqladmin", "-uroot", "-h127.0.0.1", "--connect-timeout=1", "ping"]
            if subprocess.run(ping, capture_output=True, timeout=10).returncode == 0:
                return time.monotonic() - began
            time.sleep(0.2)
    raise RuntimeError(f"MariaDB did not come back within {timeout:.0f} s")


def _mariadbd_running() -> bool:
    return subprocess.run(["pgrep", "-x", "mariadbd"], capture_output=True, timeout=10).returncode == 0


def mysql(statement: str) -> None:
    subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e", statement], check=True, timeout=60, capture_output=True)
