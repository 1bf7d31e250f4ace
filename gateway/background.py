"""Background tasks the RPCs start and cannot cancel (flow drives, agreement calls): draining them at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def drain(tasks: Iterable[asyncio.Task[Any]], grace_s: float) -> int:
    """Wait up to ``grace_s`` for ``tasks``; cancel what is left and wait for it. Returns how many were cancelled."""
    pending = list(tasks)
    if not pending:
        return 0
    _, still = await asyncio.wait(pending, timeout=grace_s)
    for task in still:
        task.cancel()
    if still:
        await asyncio.gather(*still, return_exceptions=True)
    return len(still)
