"""The services of a development stack as child processes: ``paygate serve`` and ``paygate sandbox``.

Both keep their ports across restarts (a restarted process is reachable
where the old one was) and are spawned through a
:class:`~devstack.processes.ProcessSet`, which stops them on the way out.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.config import GatewayPorts, sandbox_channel, write_config
from devstack.http import http_json
from devstack.processes import ProcessSet, free_port, group_listens, kill, stop, wait_port

PAYGATE = [sys.executable, "-m", "gateway.cli"]
# What a gateway whose port another process took in the meantime says before it exits.
PORT_TAKEN = ("address already in use", "cannot bind")
START_TRIES = 3
# The start line of one gateway (worker), JSON (``"grpc_port": 1234``) or text (``grpc_port=1234``) logging.
_SERVING = re.compile(r"paygate serving.*?\bgrpc_port\W{1,3}(\d+)")


class GatewayProcess:
    """``paygate serve`` reading the TOML file ``config_path`` (see :meth:`write_config`).

    Its output goes to ``log`` when given, else to the process set's log.

    The ports are picked before the process starts (a restarted gateway is reachable where the old
    one was), so another process can take one in between. :meth:`start` therefore waits for this
    process's own "paygate serving" line with its gRPC port (something else answering on the port
    is not our gateway), and on a first start whose port was taken picks new ports, writes the
    configuration again with them and tries again.
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
        self.config: dict[str, Any] | None = None  # as last written

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
    def console_port(self) -> int:
        return self.ports.console

    @property
    def address(self) -> str:
        """``host:port`` of the gRPC API."""
        return f"127.0.0.1:{self.ports.grpc}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "PAYGATE_CONFIG": str(self.config_path)}

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config`` (built for :attr:`ports`: its ``[server]`` ports, its ``[console] port``)."""
        self.config = config
        write_config(self.config_path, config)

    def migrate(self, timeout: float = 120.0) -> None:
        """``paygate migrate`` to completion (raises CalledProcessError when it fails)."""
        self.procs.run([*PAYGATE, "migrate"], env=self.env(), log=self.log_path, timeout=timeout)

    def start(self, *, migrate: bool = False, timeout: float = 30.0, wait_callbacks: bool = False) -> None:
        """Spawn ``paygate serve`` (``--migrate`` first when asked) and wait until it serves on its gRPC port.

        ``wait_callbacks`` also waits for the callback HTTP port. A first start whose port another
        process took is tried again on fresh ports (up to :data:`START_TRIES` times); a restart keeps
        its ports (its clients know them) and raises RuntimeError like any start that fails.
        """
        for tries in range(1, START_TRIES + 1):
            offset = self._log_size()
            try:
                self._spawn(migrate=migrate, timeout=timeout, wait_callbacks=wait_callbacks)
                self._wait_serving(offset, timeout)
                return
            except RuntimeError:
                if self.config is None or self.starts > tries or tries == START_TRIES or not self._port_taken(offset):
                    raise
            self.stop()
            self._repick()

    def _spawn(self, *, migrate: bool, timeout: float, wait_callbacks: bool) -> None:
        args = [*PAYGATE, "serve", *(["--migrate"] if migrate else [])]
        self.proc = self.procs.spawn(args, env=self.env(), name=self.name, log=self.log_path)
        self.starts += 1
        wait_port(self.ports.grpc, self.proc, f"gateway (log: {self._log_file() or 'the stack log'})", timeout)
        if wait_callbacks:
            wait_port(self.ports.http, self.proc, "gateway callbacks", timeout)

    def _repick(self) -> None:
        """New ports (a first start only: nothing knows the old ones yet), written into the configuration."""
        assert self.config is not None
        self.ports = GatewayPorts.free(console=bool(self.ports.console))
        config = {**self.config, "server": {**self.config["server"], **self.ports.server_settings()}}
        if self.ports.console:
            config["console"] = {**config["console"], "port": self.ports.console}
        self.write_config(config)

    def _log_file(self) -> Path | None:
        """Where this process's output goes, when it is a file this process can read back."""
        if self.log_path is not None:
            return self.log_path
        return self.procs.log if isinstance(self.procs.log, Path) else None

    def _log_size(self) -> int:
        path = self._log_file()
        return path.stat().st_size if path is not None and path.exists() else 0

    def _log_since(self, offset: int) -> str:
        path = self._log_file()
        if path is None or not path.exists():
            return ""
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def _port_taken(self, offset: int) -> bool:
        text = self._log_since(offset).lower()
        return any(sign in text for sign in PORT_TAKEN)

    def _wait_serving(self, offset: int, timeout: float) -> None:
        """Until this process (each worker) logged "paygate serving" on its gRPC port; RuntimeError if it exits.

        When that line is not logged (no log file to read back, or ``[logging] level`` above INFO), until
        the gRPC socket listening on the port is this process's (the gateway binds it last).
        """
        level = (self.config or {}).get("logging", {}).get("level", "INFO")
        logged = self._log_file() is not None and level in ("DEBUG", "INFO")
        assert self.proc is not None
        pid = self.proc.pid
        deadline = time.monotonic() + timeout
        while not (self._serving_since(offset) if logged else group_listens(pid, self.ports.grpc)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode} (log: {self._log_file()})")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"gateway did not serve on {self.ports.grpc} within {timeout} s (log: {self._log_file()})"
                )
            time.sleep(0.05)

    def _serving_since(self, offset: int) -> bool:
        """Every worker of this process (``[server] workers``, each logs its own line) serves on its gRPC port."""
        ports = [int(m.group(1)) for m in _SERVING.finditer(self._log_since(offset))]
        workers = int((self.config or {}).get("server", {}).get("workers", 1))
        return ports.count(self.ports.grpc) >= workers

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
