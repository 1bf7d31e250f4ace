"""Adversarial probes of ``[server] workers = 2`` (gateway/workers.py), beyond tests/e2e/test_workers.py.

* SIGTERM while the bank is slower than the grace period: the workers stop anyway, and every attempt
  they did not see finish is polled or stays SENDING under a run marked stopped (the recovery of any
  replica, or of the next start, queries it: invariant 2), with at most one debit per order;
* a worker that dies (SIGKILL) is reported: the supervisor stops the other one and exits 1, as documented.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import grpc
import pytest

from devstack.cards import luhn_card
from gateway.store.db import DatabaseConfig
from paygate.v1 import gateway_pb2_grpc
from tests.e2e.test_crash_recovery import bind
from tests.e2e.test_workers import _children, _two_workers, _withhold


async def test_sigterm_with_the_bank_slower_than_grace_leaves_every_open_attempt_to_the_poller(
    db_config: DatabaseConfig, tmp_path: Path
) -> None:
    async with _two_workers(db_config, tmp_path, grace_s=1) as (gw, sim, db):
        card = luhn_card()
        async with grpc.aio.insecure_channel(gw.address) as channel:
            await bind(gateway_pb2_grpc.PaymentGatewayStub(channel), {"bank-a": sim}, db, card)
        sim.behaviour.p99_ms = 4200  # now slower than grace_s (1 s)
        sim.behaviour.p50_ms = 4000
        calls = [asyncio.ensure_future(_withhold(gw.address, f"g-{i}", card, 7010 + 100 * i)) for i in range(8)]
        await asyncio.sleep(1.0)  # every call sent and waiting on the bank
        gw.proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*calls, return_exceptions=True)  # answered or cut off: either is allowed
        assert await asyncio.to_thread(gw.proc.wait, 20) == 0
        open_attempts = await db.fetchall(
            "SELECT a.id, a.status, a.incarnation, (SELECT COUNT(*) FROM poll_queue q WHERE q.attempt_id = a.id)"
            " AS polls FROM attempts a JOIN flows f ON f.id = a.flow_id WHERE f.request_id LIKE 'g-%%'"
            " AND a.status NOT IN ('SUCCEEDED', 'FAILED')"
        )
        live = await db.fetchall("SELECT incarnation FROM replicas WHERE stopped_at IS NULL")
        flows = await db.fetchall("SELECT status FROM flows WHERE request_id LIKE 'g-%%'")
    assert len(flows) == 8
    assert open_attempts, "the bank outlasted the grace period: some attempts must still be open"
    # a cancelled call's attempt stays SENDING by design (gateway/app.py, shutdown step 3): never forgotten
    # because its run is marked stopped, so any replica's recovery queues it at once, or the next start's
    assert live == [], "a worker's run is not marked stopped: what it left waits for it to come back"
    for attempt in open_attempts:
        assert attempt["status"] == "SENDING" or int(attempt["polls"]) == 1, attempt
    assert all(n == 1 for n in sim.ledger.debits_by_order().values())  # at most one debit per order


async def test_a_worker_that_dies_stops_the_set_and_the_supervisor_says_so(
    db_config: DatabaseConfig, tmp_path: Path
) -> None:
    async with _two_workers(db_config, tmp_path, grace_s=1) as (gw, _sim, _db):
        workers = _children(gw.proc.pid)
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGKILL)
        assert await asyncio.to_thread(gw.proc.wait, 20) == 1
        log = gw.log_path.read_text()
    assert "a worker exited on its own; stopping the others" in log
    assert log.count("paygate stopped") == 1, "the surviving worker drained and stopped"


pytestmark = pytest.mark.asyncio(loop_scope="function")
