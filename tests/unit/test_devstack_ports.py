"""devstack picks a gateway's ports together and starts it again on fresh ones when another process took one.

The gateway here is a fake ``paygate serve`` (a small script binding the ports of its TOML file the way the
gateway does, and logging "paygate serving" or exiting with "address already in use"): what is tested is the
picking and the start, not the gateway.
"""

from __future__ import annotations

import os
import socket
import sys
import tomllib
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from devstack import processes, stack
from devstack.config import GatewayPorts
from devstack.processes import ProcessSet, free_ports

FAKE_SERVE = """
import json, os, signal, socket, sys, time, tomllib
config = tomllib.load(open(os.environ["PAYGATE_CONFIG"], "rb"))
server = config["server"]
wanted = [server["grpc_port"], server["http_port"], server["metrics_port"]]
if config.get("console", {}).get("enabled"):
    wanted.append(config["console"]["port"])
held = []
for port in wanted:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        print(f"error while attempting to bind on address ('127.0.0.1', {port}): {exc.strerror.lower()}", flush=True)
        sys.exit(1)
    sock.listen()
    held.append(sock)
print(json.dumps({"msg": "paygate serving", "grpc_port": server["grpc_port"]}), flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(1)
"""


class LowestPortSocket:
    """A socket whose ``bind(port 0)`` returns the lowest port no open one holds (some systems do that)."""

    bound: ClassVar[set[int]] = set()

    def __init__(self) -> None:
        self.port = 0

    def __enter__(self) -> LowestPortSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def bind(self, address: tuple[str, int]) -> None:
        self.port = address[1] or min(set(range(40000, 40100)) - self.bound)
        self.bound.add(self.port)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def close(self) -> None:
        self.bound.discard(self.port)


@pytest.fixture
def lowest_port_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LowestPortSocket, "bound", set())
    monkeypatch.setattr(processes, "socket", types.SimpleNamespace(socket=LowestPortSocket))
    monkeypatch.setattr(processes, "_HANDED_OUT", set())


@pytest.mark.usefixtures("lowest_port_sockets")
def test_the_ports_of_one_pick_are_different() -> None:
    ports = GatewayPorts.free(console=True)
    assert len({ports.grpc, ports.http, ports.metrics, ports.console}) == 4
    assert len(set(free_ports(5))) == 5


@pytest.mark.usefixtures("lowest_port_sockets")
def test_a_port_handed_out_is_not_handed_out_again() -> None:
    first, second = GatewayPorts.free(), GatewayPorts.free()
    picked = [first.grpc, first.http, first.metrics, second.grpc, second.http, second.metrics, processes.free_port()]
    assert len(set(picked)) == len(picked)


@pytest.fixture
def fake_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[stack.GatewayProcess]:
    script = tmp_path / "fake_serve.py"
    script.write_text(FAKE_SERVE)
    monkeypatch.setattr(stack, "PAYGATE", [sys.executable, str(script)])
    log = tmp_path / "gateway.log"
    gateway = stack.GatewayProcess(ProcessSet(log), tmp_path / "paygate.toml", GatewayPorts.free(console=True), log=log)
    gateway.write_config(_config(gateway.ports))
    yield gateway
    gateway.procs.stop_all(timeout=5)


def _config(ports: GatewayPorts, level: str = "INFO") -> dict[str, Any]:
    return {
        "server": {**ports.server_settings(), "grace_s": 1},
        "console": {"enabled": True, "port": ports.console},
        "logging": {"level": level},
    }


def _listen(port: int) -> socket.socket:
    """Another process's server on ``port`` (it answers connections: it is just not our gateway)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


@pytest.mark.parametrize(
    ("taken", "level"), [("grpc", "INFO"), ("http", "INFO"), ("console", "INFO"), ("grpc", "WARNING")]
)
def test_a_first_start_whose_port_was_taken_starts_on_fresh_ports(
    fake_gateway: stack.GatewayProcess, taken: str, level: str
) -> None:
    """At WARNING the gateway does not log "paygate serving": whose socket listens on the port tells instead."""
    picked = fake_gateway.ports
    fake_gateway.write_config(_config(picked, level))
    with _listen(getattr(picked, taken)):
        fake_gateway.start(timeout=10)
        assert fake_gateway.proc is not None and fake_gateway.proc.poll() is None, "our gateway serves"
        assert fake_gateway.starts == 2
        now = fake_gateway.ports
        assert getattr(now, taken) != getattr(picked, taken)
        assert len({now.grpc, now.http, now.metrics, now.console}) == 4
        written = tomllib.loads(fake_gateway.config_path.read_text())
        assert written["server"]["grpc_port"] == now.grpc and written["server"]["http_port"] == now.http
        assert written["server"]["metrics_port"] == now.metrics and written["console"]["port"] == now.console
        assert written["server"]["grace_s"] == 1  # the rest of the configuration as it was
        with socket.create_connection(("127.0.0.1", now.grpc), timeout=2):
            pass


def test_a_restart_keeps_its_ports_and_fails_when_one_was_taken(fake_gateway: stack.GatewayProcess) -> None:
    fake_gateway.start(timeout=10)
    assert fake_gateway.starts == 1
    picked = fake_gateway.ports
    fake_gateway.stop(timeout=5)
    with _listen(picked.http), pytest.raises(RuntimeError, match="exited"):
        fake_gateway.start(timeout=10)
    assert fake_gateway.ports == picked and fake_gateway.starts == 2


def test_a_start_waits_for_its_own_serving_line(fake_gateway: stack.GatewayProcess) -> None:
    assert fake_gateway.log_path is not None
    other = fake_gateway.ports.grpc + 1
    fake_gateway.log_path.write_text(f'{{"msg": "paygate serving", "grpc_port": {other}}}\n')
    assert not fake_gateway._serving_since(0)
    with fake_gateway.log_path.open("a") as log:
        log.write(f"12:00:00.000 INFO  gateway.app: paygate serving grpc_port={fake_gateway.ports.grpc} http_port=1\n")
    assert fake_gateway._serving_since(0)
    assert fake_gateway.config is not None
    fake_gateway.config["server"]["workers"] = 2  # each worker logs its own line
    assert not fake_gateway._serving_since(0)


def test_whose_socket_listens_on_a_port() -> None:
    with _listen(0) as ours:
        port = ours.getsockname()[1]
        assert processes.group_listens(os.getpgid(0), port)
        assert not processes.group_listens(os.getpgid(0) + 100_000, port)  # no such process group
    assert not processes.group_listens(os.getpgid(0), port)
