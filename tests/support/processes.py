"""Run the gateway as a real process (``python -m gateway.cli serve``) for end-to-end tests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from devstack.config import GatewayPorts, gateway_config
from devstack.processes import ProcessSet
from devstack.stack import GatewayProcess as _GatewayProcess
from gateway.store.db import DatabaseConfig
from tests.support.harness import CALLER_TOKENS, OPERATOR_TOKEN


class GatewayProcess(_GatewayProcess):
    """A `paygate serve --migrate` process with its own TOML config on free 127.0.0.1 ports; log in ``gateway.log``.

    Its start waits for its own "paygate serving" line and retries a first start whose port was
    taken on fresh ports (:meth:`devstack.stack.GatewayProcess.start`).
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
        super().__init__(ProcessSet(log), workdir / "paygate.toml", GatewayPorts.free(), log=log)
        self.write_config(
            gateway_config(
                self.ports,
                server={"grace_s": 3, **(server or {})},
                database={
                    "host": db.host,
                    "port": db.port,
                    "database": db.database,
                    "pool_max": 30,
                    "driver": db.driver,
                },
                callers=CALLER_TOKENS,
                operators={"ops": {"token": OPERATOR_TOKEN, "role": "approver"}},
                poller=poller or {"interval_s": 0.1, "first_delay_s": 0.3, "schedule": [[0.3, 40], [1, 60]]},
                logging={"format": "json", "level": "INFO"},
                kafka=None if kafka is None else {"enabled": True, **kafka},
                channels=channels,
                **({"plans": plans} if plans is not None else {}),
            )
        )

    def start(self, *, migrate: bool = True, timeout: float = 30.0, wait_callbacks: bool = False) -> None:
        super().start(migrate=migrate, timeout=timeout, wait_callbacks=wait_callbacks)

    async def start_async(self, *, migrate: bool = True, timeout: float = 30.0, wait_callbacks: bool = False) -> None:
        """:meth:`start` off the event loop. The simulators of a test run on its loop, and the gateway's start-up
        queries them (the position sync asks a paying-out channel its balance): with the loop blocked in
        :meth:`start` that query could only time out, which made every start about 10 s slower."""
        await asyncio.to_thread(self.start, migrate=migrate, timeout=timeout, wait_callbacks=wait_callbacks)

    async def stop_async(self, timeout: float = 15.0) -> None:
        """:meth:`stop` off the event loop (a draining gateway may still be waiting for a simulator)."""
        await asyncio.to_thread(self.stop, timeout)
