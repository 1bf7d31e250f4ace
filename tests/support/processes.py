"""Run the gateway as a real process (``python -m gateway.cli serve``) for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from pathlib import Path
from typing import Any

from devstack.config import GatewayPorts, gateway_config
from devstack.processes import ProcessSet
from devstack.stack import GatewayProcess as _GatewayProcess
from gateway.store.db import DatabaseConfig
from tests.support.harness import CALLER_TOKENS, OPERATOR_TOKEN

# What a gateway whose port another process took in the meantime says before it exits.
_PORT_TAKEN = ("address already in use", "cannot bind")
START_TRIES = 3


def distinct_free_ports() -> GatewayPorts:
    """Three different 127.0.0.1 ports, free a moment ago (held together, so no two are the same)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(3)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        grpc, http, metrics = (int(sock.getsockname()[1]) for sock in socks)
    return GatewayPorts(grpc, http, metrics)


class GatewayProcess(_GatewayProcess):
    """A `paygate serve --migrate` process with its own TOML config on free 127.0.0.1 ports; log in ``gateway.log``.

    The ports are picked before the process starts (a restarted gateway is reachable where the
    old one was), so another process can take one in between. :meth:`start` therefore waits for
    this process's own "paygate serving" line with its gRPC port (something else answering on
    the port is not our gateway), and on a first start whose port was taken picks new ports and
    tries again.
    """

    def __init__(
        self,
        workdir: Path,
        db: DatabaseConfig,
        channels: list[dict[str, Any]],
        *,
        poller: dict[str, Any] | None = None,
        server: dict[str, Any] | None = None,
        kafka: dict[str, Any] | None = None,
        plans: dict[str, Any] | None = None,
    ) -> None:
        log = workdir / "gateway.log"
        super().__init__(ProcessSet(log), workdir / "paygate.toml", distinct_free_ports(), log=log)
        self._sections: dict[str, Any] = {
            "server": {"grace_s": 3, **(server or {})},
            "database": {"host": db.host, "port": db.port, "database": db.database, "pool_max": 30},
            "callers": CALLER_TOKENS,
            "operators": {"ops": {"token": OPERATOR_TOKEN, "role": "approver"}},
            "poller": poller or {"interval_s": 0.1, "first_delay_s": 0.3, "schedule": [[0.3, 40], [1, 60]]},
            "logging": {"format": "json", "level": "INFO"},
            "kafka": None if kafka is None else {"enabled": True, **kafka},
            "channels": channels,
            **({"plans": plans} if plans is not None else {}),
        }
        self._write()

    def _write(self) -> None:
        self.write_config(gateway_config(self.ports, **self._sections))

    def start(self, *, migrate: bool = True, timeout: float = 30.0, wait_callbacks: bool = False) -> None:
        for tries in range(1, START_TRIES + 1):
            offset = self._log_size()
            try:
                super().start(migrate=migrate, timeout=timeout, wait_callbacks=wait_callbacks)
                self._wait_serving(offset, timeout)
                return
            except RuntimeError:
                if not self._port_was_taken(offset) or self.starts > tries or tries == START_TRIES:
                    raise
            self.stop()
            self.ports = distinct_free_ports()  # a first start only: nothing holds the old address yet
            self._write()

    async def start_async(self, *, migrate: bool = True, timeout: float = 30.0, wait_callbacks: bool = False) -> None:
        """:meth:`start` off the event loop. The simulators of a test run on its loop, and the gateway's start-up
        queries them (the position sync asks a paying-out channel its balance): with the loop blocked in
        :meth:`start` that query could only time out, which made every start about 10 s slower."""
        await asyncio.to_thread(self.start, migrate=migrate, timeout=timeout, wait_callbacks=wait_callbacks)

    async def stop_async(self, timeout: float = 15.0) -> None:
        """:meth:`stop` off the event loop (a draining gateway may still be waiting for a simulator)."""
        await asyncio.to_thread(self.stop, timeout)

    def _log_size(self) -> int:
        assert self.log_path is not None
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def _log_since(self, offset: int) -> str:
        assert self.log_path is not None
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def _port_was_taken(self, offset: int) -> bool:
        text = self._log_since(offset).lower()
        return any(sign in text for sign in _PORT_TAKEN)

    def _wait_serving(self, offset: int, timeout: float) -> None:
        """Until this process (each worker) logged "paygate serving" on its gRPC port; RuntimeError if it exits."""
        deadline = time.monotonic() + timeout
        while not self._serving_since(offset):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode} (log: {self.log_path})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not log 'paygate serving' within {timeout} s (log: {self.log_path})")
            time.sleep(0.05)

    def _serving_since(self, offset: int) -> bool:
        """Every worker of this process (``[server] workers``, each logs its own line) serves on its gRPC port."""
        serving = 0
        for line in self._log_since(offset).splitlines():
            if '"paygate serving"' not in line:
                continue
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                serving += entry.get("msg") == "paygate serving" and entry.get("grpc_port") == self.ports.grpc
        return serving >= int(self._sections["server"].get("workers", 1))
