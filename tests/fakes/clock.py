"""A clock the tests move by hand (the plan executor's ``Clock``): nothing in a test waits on real time."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta


class FakeClock:
    """``now()`` stands still until :meth:`advance` or :meth:`set`; ``sleep`` returns when the clock has moved on."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._sleepers: list[tuple[datetime, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        deadline = self._now + timedelta(seconds=max(seconds, 0.0))
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((deadline, future))
        await future

    @property
    def sleepers(self) -> int:
        return sum(1 for _, f in self._sleepers if not f.done())

    def set(self, moment: datetime) -> None:
        if moment < self._now:
            raise ValueError("the clock only moves forward")
        self._now = moment
        still = []
        for deadline, future in self._sleepers:
            if future.done():
                continue
            if deadline <= moment:
                future.set_result(None)
            else:
                still.append((deadline, future))
        self._sleepers = still

    def advance(self, seconds: float) -> None:
        self.set(self._now + timedelta(seconds=seconds))
