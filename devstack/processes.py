"""Child processes of a development stack: free ports, spawning, waiting for a port, stopping.

Every process is started in its own session (process group), so a signal
reaches whatever it started too, and binds 127.0.0.1 only. Blocking API
(subprocess, sockets); from asyncio code call the waits through
``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

# Every port :func:`free_ports` handed out in this process: a later pick never returns one of them again, so the
# processes of one stack (picked one after the other, before any of them binds) never share a port.
_HANDED_OUT: set[int] = set()


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports on 127.0.0.1, free a moment ago.

    The sockets are all held until every port is picked (so no two picks are the same port), and no
    port handed out earlier in this process is handed out again. Another process can still take a
    port before ours binds it: see :meth:`devstack.stack.GatewayProcess.start`.
    """
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        while len(ports) < count:
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in _HANDED_OUT:  # kept bound meanwhile: the next bind cannot return it again
                ports.append(port)
    _HANDED_OUT.update(ports)
    return ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (see :func:`free_ports`)."""
    return free_ports(1)[0]


def group_listens(pgid: int, port: int) -> bool:
    """Whether a process of the process group ``pgid`` holds a listening TCP socket on ``port`` (Linux /proc)."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    sockets.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not sockets or not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            if any(os.readlink(fd) in sockets for fd in (proc / "fd").iterdir()):
                return True
        except (OSError, IndexError, ValueError):
            continue
    return False


def wait_port(
    port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30.0, *, interval: float = 0.1
) -> None:
    """Block until something accepts connections on 127.0.0.1:``port``.

    Raises RuntimeError naming ``what`` when ``proc`` exits first or nothing
    listens within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.3):
                return
        except OSError:
            time.sleep(interval)
    raise RuntimeError(f"{what} did not listen on {port}")


def kill(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal the process's whole group (it is its own session leader); reap it after SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    if sig == signal.SIGKILL:
        proc.wait(10)


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the process's group and wait ``timeout`` seconds for it to exit, then SIGKILL it.

    A frozen (SIGSTOPped) process is continued first: it could not handle SIGTERM.
    """
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGCONT)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        kill(proc)


class ProcessSet:
    """Spawns processes in their own process groups and remembers them all, for :meth:`stop_all`.

    Output goes to ``log`` (an open binary file shared by every process, or a
    path opened for appending at each spawn) unless :meth:`spawn` is given
    another path.
    """

    def __init__(self, log: IO[bytes] | Path) -> None:
        self.log = log
        self._procs: list[subprocess.Popen[bytes]] = []
        self.pids: dict[str, int] = {}

    def spawn(
        self,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        name: str | None = None,
        log: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``args``; ``name`` records its pid in :attr:`pids`."""
        with self._output(log) as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._procs.append(proc)
        if name is not None:
            self.pids[name] = proc.pid
        return proc

    def run(
        self, args: list[str], *, env: dict[str, str] | None = None, log: Path | None = None, timeout: float = 120.0
    ) -> None:
        """Run ``args`` to completion, output to the log; raises CalledProcessError when it fails."""
        with self._output(log) as out:
            subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, env=env, check=True, timeout=timeout)

    @contextlib.contextmanager
    def _output(self, log: Path | None) -> Iterator[IO[bytes]]:
        sink = log or self.log
        if isinstance(sink, Path):
            with sink.open("ab") as out:
                yield out
        else:
            yield sink

    def stop_all(self, timeout: float = 15.0) -> None:
        """:func:`stop` every process still running, the last started first."""
        for proc in reversed(self._procs):
            stop(proc, timeout)
