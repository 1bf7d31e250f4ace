"""Group commit in the application: the writes of concurrent requests share statements and one commit.

A durable commit costs a redo-log flush and every statement a round trip; a
request path that commits alone pays both per request. :class:`GroupCommitter`
queues the items of concurrent callers and hands them, as one list, to a
batch function that writes them together (multi-row statements, one
``COMMIT``). Each caller's future is resolved only after that commit returned,
so no caller hears "recorded" before its own rows are durable.

Batches form by themselves: up to ``workers`` batches run at once; whatever
arrives while they run waits for the next one. At low load every batch holds
one item and nothing waits for a timer.

A caller cancelled before its item was taken drops the item (nothing is
written, as with a transaction rolled back before its commit). Once taken,
the item is written whatever happens to the caller.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from gateway import metrics

T = TypeVar("T")
R = TypeVar("R")

BatchFn = Callable[[list[T]], Awaitable[Sequence["R | BaseException"]]]


class GroupCommitter(Generic[T, R]):
    """Runs ``batch_fn`` over the items submitted concurrently (see the module doc).

    ``batch_fn(items)`` returns one result per item, in order: a value, or an
    exception to raise in that item's caller. An exception raised by
    ``batch_fn`` itself reaches every caller of the batch.
    """

    def __init__(self, name: str, batch_fn: BatchFn[T, R], *, max_batch: int = 64, workers: int = 2) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.name = name
        self._batch_fn = batch_fn
        self.max_batch = max_batch
        self.workers = workers
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._size = metrics.STORE_BATCH_SIZE.labels(operation=name)

    async def submit(self, item: T) -> R:
        """Write ``item`` with whatever else is waiting; returns after the commit that holds it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        if self._running < self.workers:
            self._running += 1
            task = loop.create_task(self._drain(), name=f"group-commit-{self.name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch: list[tuple[T, asyncio.Future[R]]] = []
                while self._queue and len(batch) < self.max_batch:
                    item, future = self._queue.popleft()
                    if not future.cancelled():
                        batch.append((item, future))
                if batch:
                    await self._run(batch)
        finally:
            self._running -= 1

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self._size.observe(len(batch))
        try:
            results = await self._batch_fn([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        if len(results) != len(batch):  # pragma: no cover - a bug in the batch function
            error = RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} items")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self) -> None:
        """Wait for the batches in flight (new submissions still work afterwards)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


async def gather_each(calls: Sequence[Awaitable[R]]) -> list[R | BaseException]:
    """Await every call concurrently; exceptions become results (the fallback of a failed batch)."""
    results: list[R | BaseException] = list(await asyncio.gather(*calls, return_exceptions=True))
    for result in results:
        if isinstance(result, asyncio.CancelledError):
            raise result
    return results
