"""Run the gateway as a real process (``python -m gateway.cli serve``) for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gateway.store.db import DatabaseConfig
from tests.support.harness import CALLER_TOKENS, OPERATOR_TOKEN
from tests.support.services import free_port


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def _table(name: str, values: dict[str, Any]) -> list[str]:
    lines = [f"[{name}]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return lines


class GatewayProcess:
    """A `paygate serve` process with its own TOML config on free 127.0.0.1 ports."""

    def __init__(
        self,
        workdir: Path,
        db: DatabaseConfig,
        channels: list[dict[str, Any]],
        *,
        poller: dict[str, Any] | None = None,
        server: dict[str, Any] | None = None,
        kafka: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.metrics_port = free_port()
        self.config_path = workdir / "paygate.toml"
        lines: list[str] = []
        lines += _table(
            "server",
            {
                "grpc_port": self.grpc_port,
                "http_port": self.http_port,
                "metrics_port": self.metrics_port,
                "grace_s": 3,
                **(server or {}),
            },
        )
        lines += _table("database", {"host": db.host, "port": db.port, "database": db.database, "pool_max": 30})
        for name, token in CALLER_TOKENS.items():
            lines += _table(f"callers.{name}", {"token": token})
        lines += _table("operators.ops", {"token": OPERATOR_TOKEN})
        lines += _table("poller", poller or {"interval_s": 0.1, "first_delay_s": 0.3, "schedule": [[0.3, 40], [1, 60]]})
        lines += _table("logging", {"format": "json", "level": "INFO"})
        if kafka is not None:
            lines += _table("kafka", {"enabled": True, **kafka})
        for channel in channels:
            lines += [
                "[[channels]]",
                f"id = {json.dumps(channel['id'])}",
                f"adapter = {json.dumps(channel['adapter'])}",
            ]
            lines += _table("channels.settings", channel["settings"])
            if channel.get("routing"):
                lines += _table("channels.routing", channel["routing"])
        self.config_path.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "gateway.log"
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 30.0) -> None:
        env = {**os.environ, "PAYGATE_CONFIG": str(self.config_path)}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--migrate"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=0.3):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"gateway did not listen; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
