"""What every simulator's command line shares: arguments, ``--behaviour-json``, serving until a signal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from channels.registry import ChannelConfigError
from channels.simkit.behaviour import Behaviour
from channels.simkit.server import SimulatorHandle


def cli_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """Arguments every simulator CLI takes; a simulator adds its credentials."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0 = any free port)")
    parser.add_argument("--notify-url", default=None, help="callback URL for orders that carry none")
    parser.add_argument("--behaviour-json", default="{}", help="Behaviour settings as a JSON object")
    return parser


def behaviour_from_json(text: str) -> Behaviour:
    """Parse ``--behaviour-json``; raises ChannelConfigError on bad JSON or values."""
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ChannelConfigError("behaviour", f"not valid JSON: {exc}") from exc
    return Behaviour.from_settings(settings, "behaviour")


async def serve_until_signalled(
    handle: SimulatorHandle,
    host: str,
    port: int,
    *,
    announce: Callable[[str], None] = print,
    stop_signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    stopped: Awaitable[Any] | None = None,
) -> int:
    """Start ``handle``, announce its URL, run until a stop signal (or ``stopped``), stop it."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in stop_signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, done.set)
            installed.append(sig)
    try:
        url = await handle.start(host, port)
        announce(url)
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(done.wait())]
        if stopped is not None:
            waiters.append(asyncio.ensure_future(stopped))
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        return 0
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await handle.stop()
