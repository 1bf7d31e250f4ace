"""Adversarial probes: a slow bank never takes the gateway down.

One sandbox channel answers in seconds (or holds its answer and drops it); the other answers at once.
Withholds on the fast channel keep their latency while the slow one is saturated; a call with a short
gRPC deadline returns about then with its flow PROCESSING (never DEADLINE_EXCEEDED, never FAILED while
the money may have moved), and the poller resolves it later with one debit. A bank whose queries are slow
holds only its share of the poller: the other banks' results keep coming.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import grpc
import pytest

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.store import poll_queue
from gateway.store.db import Database, DatabaseConfig
from gateway.store.poll_queue import MySQLPollQueue
from gateway.store.rows import utcnow
from paygate.v1 import gateway_pb2 as pb
from tests.support.harness import Harness, running_gateway
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

SLOW = {
    "slow": Behaviour(magic=False, p50_ms=2500, p99_ms=2900),  # answers after the adapter's 2 s budget
    "fast": Behaviour(magic=False, p50_ms=20, p99_ms=60),
}
HELD = {
    "held": Behaviour(magic=False, timeout_ratio=1.0, timeout_hold_s=4.0),  # pays, then never answers
    "fast": Behaviour(magic=False, p50_ms=20, p99_ms=60),
}


def withhold(rid: str, card: str, amount: int, wait_ms: int = 0) -> pb.WithholdRequest:
    return pb.WithholdRequest(
        request_id=rid,
        amount=pb.Money(amount=amount, currency="CNY"),
        account_no=card,
        bank_code="ICBC",
        wait_ms=wait_ms,
    )


async def timed(call: Any) -> tuple[float, Any]:
    started = time.monotonic()
    try:
        result = await call
    except grpc.aio.AioRpcError as err:
        result = err
    return time.monotonic() - started, result


async def statuses(h: Harness, flow_nos: list[str]) -> list[int]:
    got = [await h.stub.GetFlow(pb.GetFlowRequest(flow_no=n), metadata=h.md()) for n in flow_nos]
    return [f.status for f in got]


async def probe(h: Harness, slow: str, n_slow: int = 20, n_fast: int = 20) -> None:
    slow_card, fast_card = luhn_card(), luhn_card()
    await h.bind_card(slow_card, [slow])
    await h.bind_card(fast_card, ["fast"])
    # a baseline: the fast channel's latency with nothing else going on
    baseline = [
        await timed(h.stub.Withhold(withhold(f"base-{i}", fast_card, 1_000 + i), metadata=h.md())) for i in range(5)
    ]
    assert all(isinstance(r, pb.Flow) and r.status == pb.SUCCEEDED for _, r in baseline)
    slow_calls = [
        timed(h.stub.Withhold(withhold(f"slow-{i}", slow_card, 2_000 + i, wait_ms=8000), metadata=h.md(), timeout=1.0))
        for i in range(n_slow)
    ]
    slow_tasks = [asyncio.ensure_future(c) for c in slow_calls]
    await asyncio.sleep(0.2)  # the slow channel now holds every one of them
    fast = [
        await timed(h.stub.Withhold(withhold(f"fast-{i}", fast_card, 3_000 + i), metadata=h.md(), timeout=2.0))
        for i in range(n_fast)
    ]
    slow_results = await asyncio.gather(*slow_tasks)
    assert all(isinstance(r, pb.Flow) and r.status == pb.SUCCEEDED for _, r in fast), [r for _, r in fast]
    worst_fast = max(t for t, _ in fast)
    assert worst_fast < 0.5, f"a fast withhold took {worst_fast:.2f} s beside the slow bank"
    for took, result in slow_results:
        assert isinstance(result, pb.Flow), result  # PROCESSING, never DEADLINE_EXCEEDED
        assert result.status == pb.PROCESSING, result
        assert took < 1.3, f"a 1 s deadline returned after {took:.2f} s"
    flow_nos = [r.flow_no for _, r in slow_results]
    seen_failed: list[int] = []

    async def all_succeeded() -> bool:
        got = await statuses(h, flow_nos)
        seen_failed.extend(s for s in got if s == pb.FAILED)
        return all(s == pb.SUCCEEDED for s in got)

    await eventually(all_succeeded, timeout_s=12, what="the poller resolves every slow withhold")
    assert not seen_failed, "a withhold whose money moved was shown FAILED"
    debits = h.sims[slow].ledger.debits_by_order()
    assert len(debits) == n_slow and all(n == 1 for n in debits.values()), debits
    rows = await h.gateway.db.fetchall("SELECT COUNT(*) AS n FROM attempts GROUP BY flow_id HAVING n > 1")
    assert not rows, "a pending withhold was tried on another channel"


async def test_a_bank_answering_in_seconds_leaves_the_others_fast(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, SLOW) as h:
        await probe(h, "slow")


async def test_a_bank_that_pays_and_never_answers_leaves_the_others_fast(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, HELD) as h:
        await probe(h, "held")


def slow_queries(h: Harness, channel: str, delay_s: float) -> None:
    """The channel's order queries take ``delay_s`` (a bank whose query interface is slow)."""
    adapter = h.gateway.registry.get(channel)
    query = adapter.query

    async def slow(ref: Any) -> Any:
        await asyncio.sleep(delay_s)
        return await query(ref)

    adapter.query = slow  # type: ignore[method-assign]


async def test_a_bank_with_slow_queries_does_not_hold_up_the_others_results(db_config: DatabaseConfig) -> None:
    """Pending withholds on a bank whose queries take seconds leave the poller free for the other bank's."""
    behaviours = {"slow": Behaviour(timeout_hold_s=3.0), "fast": Behaviour(timeout_hold_s=3.0)}
    settings = {"slow": {"timeout_s": 0.5}, "fast": {"timeout_s": 0.5}}
    async with running_gateway(db_config, behaviours, channel_settings=settings) as h:
        slow_card, fast_card = luhn_card(), luhn_card()
        await h.bind_card(slow_card, ["slow"])
        await h.bind_card(fast_card, ["fast"])
        slow_queries(h, "slow", 2.5)
        # 40 withholds that paid and timed out (07): only a query tells their result
        slow = await asyncio.gather(
            *[h.stub.Withhold(withhold(f"sq-{i}", slow_card, 1_007 + 100 * i), metadata=h.md()) for i in range(40)]
        )
        assert all(f.status == pb.PROCESSING for f in slow)
        await asyncio.sleep(1.0)  # the poller is busy with them now
        started = time.monotonic()
        fast = await h.stub.Withhold(withhold("fq-1", fast_card, 2_007), metadata=h.md())
        assert fast.status == pb.PROCESSING

        async def resolved() -> bool:
            return (await statuses(h, [fast.flow_no])) == [pb.SUCCEEDED]

        await eventually(resolved, timeout_s=15, what="the fast bank's withhold resolved")
        took = time.monotonic() - started
        assert took < 2.5, f"the fast bank's result waited {took:.1f} s behind the slow bank's queries"


async def test_a_claim_takes_no_more_of_a_channel_than_its_share(database: Database) -> None:
    """The store's half of the bulkhead: rows of a channel the claimer holds its share of stay due."""
    now = utcnow()
    async with database.transaction() as tx:
        for attempt_id in range(1, 11):
            await poll_queue.enqueue(tx, attempt_id, "slow", now - timedelta(seconds=10 - attempt_id), now)
        await poll_queue.enqueue(tx, 99, "fast", now, now)
        await tx.commit()
    queue = MySQLPollQueue(database)
    first = await queue.claim(owner="p", limit=5, lease_s=30, held={"slow": 1}, per_channel=3)
    assert [(c.attempt_id, c.channel) for c in first] == [(1, "slow"), (2, "slow")]
    second = await queue.claim(owner="p", limit=5, lease_s=30, held={"slow": 3}, per_channel=3)
    assert [(c.attempt_id, c.channel) for c in second] == [(99, "fast")]
    rest = await queue.claim(owner="p", limit=20, lease_s=30)
    assert sorted(c.attempt_id for c in rest) == list(range(3, 11))


async def _rows_read(database: Database) -> int:
    row = await database.fetchone("SHOW GLOBAL STATUS LIKE 'Handler_read_next'")
    assert row is not None
    return int(row["Value"])


async def test_a_full_channels_backlog_is_not_walked_at_every_claim(database: Database) -> None:
    """With a slow bank at its share and 3,000 of its rows due, a claim for the other banks reads a few index
    entries: neither the backlog (a scan in due order past ``channel NOT IN``) nor the other banks' rows that
    are not due yet (a range on the channel alone)."""
    now = utcnow()
    async with database.transaction() as tx:
        for attempt_id in range(1, 3001):
            await poll_queue.enqueue(tx, attempt_id, "slow", now - timedelta(seconds=4000 - attempt_id), now)
        await poll_queue.enqueue(tx, 9001, "fast", now, now)
        await poll_queue.enqueue(tx, 9002, "other", now - timedelta(seconds=1), now)
        for attempt_id in range(10_001, 12_001):  # the fast bank's other pending rows, queried later
            await poll_queue.enqueue(tx, attempt_id, "fast", now + timedelta(seconds=60), now)
        await tx.commit()
    queue = MySQLPollQueue(database)
    before = await _rows_read(database)
    claims = await queue.claim(
        owner="p", limit=10, lease_s=30, held={"slow": 8}, per_channel=8, channels=("slow", "fast", "other")
    )
    read = await _rows_read(database) - before
    assert [(c.attempt_id, c.channel) for c in claims] == [(9002, "other"), (9001, "fast")]  # oldest first
    assert read < 300, f"the claim read {read} index entries"


async def test_more_withholds_than_a_slow_bank_has_connections_debit_each_borrower_once(
    db_config: DatabaseConfig,
) -> None:
    """Beyond the slow bank's connection pool (100), a withhold waits for a connection or, unsent, fails over:
    none is FAILED while its money may have moved, and no borrower is debited twice."""
    behaviours = {"slow": Behaviour(magic=False, p50_ms=2500, p99_ms=2900), "fast": Behaviour(magic=False)}
    async with running_gateway(db_config, behaviours, routing={"exploration": 0}) as h:
        card = luhn_card()
        await h.bind_card(card, ["slow", "fast"])
        # no exploration, equal priors: every first attempt goes to the slow bank (configuration order)
        calls = [
            h.stub.Withhold(withhold(f"pool-{i}", card, 1_000 + i, wait_ms=6000), metadata=h.md()) for i in range(120)
        ]
        flows = await asyncio.gather(*calls)
        assert {f.attempts[0].channel for f in flows} == {"slow"}
        assert all(f.status in (pb.PROCESSING, pb.SUCCEEDED) for f in flows), [
            f for f in flows if f.status == pb.FAILED
        ][:1]
        for f in flows:
            if len(f.attempts) == 2:  # only a definite "nothing was sent" may move on
                assert f.attempts[0].status == pb.ATTEMPT_FAILED, f

        async def settled() -> bool:
            return set(await statuses(h, [f.flow_no for f in flows])) == {pb.SUCCEEDED}

        await eventually(settled, timeout_s=15, what="every withhold succeeded")
        assert sorted(h.debits().values()) == [1] * 120
