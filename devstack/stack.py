"""The services of a development stack as child processes: ``paygate serve`` and ``paygate sandbox``.

Both keep their ports across restarts (a restarted process is reachable
where the old one was) and are spawned through a
:class:`~devstack.processes.ProcessSet`, which stops them on the way out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.config import GatewayPorts, sandbox_channel, write_config
from devstack.http import http_json
from devstack.processes import ProcessSet, free_port, kill, stop, wait_port

PAYGATE = [sys.executable, "-m", "gateway.cli"]


class GatewayProcess:
    """``paygate serve`` reading the TOML file ``config_path`` (see :meth:`write_config`).

    Its output goes to ``log`` when given, else to the process set's log.
    """

    def __init__(
        self,
        procs: ProcessSet,
        config_path: Path,
        ports: GatewayPorts | None = None,
        *,
        log: Path | None = None,
        name: str = "gateway",
    ) -> None:
        self.procs = procs
        self.name = name  # the key of its pid in the process set's pids
        self.config_path = config_path
        self.ports = ports or GatewayPorts.free()
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def grpc_port(self) -> int:
        return self.ports.grpc

    @property
    def http_port(self) -> int:
        return self.ports.http

    @property
    def metrics_port(self) -> int:
        return self.ports.metrics

    @property
    def address(self) -> str:
        """``host:port`` of the gRPC API."""
        return f"127.0.0.1:{self.ports.grpc}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "PAYGATE_CONFIG": str(self.config_path)}

    def write_config(self, config: dict[str, Any]) -> None:
        write_config(self.config_path, config)

    def migrate(self, timeout: float = 120.0) -> None:
        """``paygate migrate`` to completion (raises CalledProcessError when it fails)."""
        self.procs.run([*PAYGATE, "migrate"], env=self.env(), log=self.log_path, timeout=timeout)

    def start(self, *, migrate: bool = False, timeout: float = 30.0, wait_callbacks: bool = False) -> None:
        """Spawn ``paygate serve`` (``--migrate`` first when asked) and wait until its gRPC port listens.

        ``wait_callbacks`` also waits for the callback HTTP port.
        """
        args = [*PAYGATE, "serve", *(["--migrate"] if migrate else [])]
        self.proc = self.procs.spawn(args, env=self.env(), name=self.name, log=self.log_path)
        self.starts += 1
        wait_port(self.ports.grpc, self.proc, f"gateway (log: {self.log_path or 'the stack log'})", timeout)
        if wait_callbacks:
            wait_port(self.ports.http, self.proc, "gateway callbacks", timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash."""
        if self.proc is not None:
            kill(self.proc)

    def freeze(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM (a graceful shutdown) and its exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is not None:
            stop(self.proc, timeout)


@dataclass
class SandboxProcess:
    """One ``paygate sandbox`` process (a simulated bank with its own ledger), driven over its admin routes.

    ``merchant_id`` defaults to the name, ``secret`` to ``<name>-secret``.
    """

    name: str
    behaviour: dict[str, Any] = field(default_factory=dict)
    notify_url: str | None = None
    merchant_id: str = ""
    secret: str = ""
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.merchant_id = self.merchant_id or self.name
        self.secret = self.secret or f"{self.name}-secret"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, procs: ProcessSet, *, log: Path | None = None) -> None:
        args = [*PAYGATE, "sandbox", "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--name", self.name, "--secret", self.secret, "--merchant-id", self.merchant_id]
        if self.notify_url is not None:
            args += ["--notify-url", self.notify_url]
        args += ["--behaviour-json", json.dumps(self.behaviour)]
        wait_port(self.port, procs.spawn(args, name=self.name, log=log), f"sandbox {self.name}")

    def channel(self, *, timeout_s: float, routing: dict[str, Any] | None = None) -> dict[str, Any]:
        """The gateway's ``[[channels]]`` entry for this bank (channel id = name)."""
        return sandbox_channel(
            self.name,
            self.base_url,
            merchant_id=self.merchant_id,
            secret=self.secret,
            timeout_s=timeout_s,
            routing=routing,
        )

    def set_behaviour(self, changes: dict[str, Any]) -> None:
        http_json(f"{self.base_url}/_admin/behaviour", changes, timeout=5)

    def ledger(self, timeout: float = 120.0) -> dict[str, Any]:
        result: dict[str, Any] = http_json(f"{self.base_url}/_admin/ledger", timeout=timeout)
        return result

    def last_sms_code(self, phone: str) -> str:
        """The code of the last SMS the bank "sent" to ``phone`` (read as the borrower's phone would)."""
        query = urllib.parse.urlencode({"phone": phone})
        return str(http_json(f"{self.base_url}/_admin/sms?{query}", timeout=5)["sms_code"])

    def borrower(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """The borrower at the bank's cashier (``open``, ``pay``, ``abandon``; :func:`channels.simkit.borrower_routes`).

        A refusal (the order closed or expired) comes back as ``{"error": code}``.
        """
        try:
            result: dict[str, Any] = http_json(f"{self.base_url}/_admin/cashier/{action}", body, timeout=5)
        except urllib.error.HTTPError as refused:
            result = json.loads(refused.read() or b"{}")
        return result
