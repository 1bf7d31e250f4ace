"""GroupCommitter: batches form from concurrent callers, each caller gets its own result or error."""

from __future__ import annotations

import asyncio

import pytest

from gateway.store.batch import GroupCommitter


class Recorder:
    def __init__(self, delay: float = 0.01) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay

    async def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await asyncio.sleep(self.delay)  # the "commit": others queue meanwhile
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def test_concurrent_items_share_batches_and_get_their_own_results() -> None:
    rec = Recorder()
    gc: GroupCommitter[int, int] = GroupCommitter("t", rec, max_batch=8, workers=2)
    results = await asyncio.gather(*[gc.submit(i) for i in range(1, 21)], gc.submit(-1), return_exceptions=True)
    assert results[:20] == [i * 10 for i in range(1, 21)]
    assert isinstance(results[20], ValueError) and str(results[20]) == "bad -1"
    assert sorted(i for b in rec.batches for i in b) == [-1, *range(1, 21)]
    assert max(len(b) for b in rec.batches) == 8 and len(rec.batches) <= 4


async def test_one_item_alone_is_not_delayed() -> None:
    rec = Recorder(delay=0)
    gc: GroupCommitter[int, int] = GroupCommitter("t", rec)
    assert await gc.submit(3) == 30
    assert rec.batches == [[3]]


async def test_a_failing_batch_fails_every_caller_in_it() -> None:
    async def broken(items: list[int]) -> list[int | BaseException]:
        await asyncio.sleep(0)
        raise ConnectionError("database gone")

    gc: GroupCommitter[int, int] = GroupCommitter("t", broken, workers=1)
    results = await asyncio.gather(*[gc.submit(i) for i in range(5)], return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    [again] = await asyncio.gather(gc.submit(1), return_exceptions=True)
    assert isinstance(again, ConnectionError)  # the committer keeps answering after a failed batch


async def test_cancelled_before_taken_is_dropped_after_taken_is_written() -> None:
    rec = Recorder(delay=0.05)
    gc: GroupCommitter[int, int] = GroupCommitter("t", rec, workers=1)
    taken = asyncio.ensure_future(gc.submit(1))
    await asyncio.sleep(0.01)  # batch [1] is in flight
    waiting = asyncio.ensure_future(gc.submit(2))
    await asyncio.sleep(0)
    waiting.cancel()
    taken.cancel()  # already taken: still written, the caller just does not hear
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(asyncio.CancelledError):
        await taken
    await gc.close()
    assert rec.batches == [[1]]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommitter("t", Recorder(), max_batch=0)
    with pytest.raises(ValueError, match="workers"):
        GroupCommitter("t", Recorder(), workers=0)
