"""``[server] workers = 2``: two processes behind one port, each a replica, one /metrics, one drain."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from channels.sandbox.simulator import SandboxSimulator
from channels.simkit import Behaviour
from devstack.cards import luhn_card
from devstack.http import http_get
from devstack.processes import wait_port
from gateway.store.db import Database, DatabaseConfig, migrate
from gateway.workers import role
from paygate.v1 import gateway_pb2 as pb
from paygate.v1 import gateway_pb2_grpc
from tests.e2e.test_crash_recovery import MD, bind
from tests.support.processes import GatewayProcess
from tests.support.services import drop_db, new_db_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

WITHHOLDS = 24


def _counter(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _worker_metrics_ports(pid: int) -> list[int]:
    ports = []
    for child in _children(pid):
        env = dict(item.split("=", 1) for item in Path(f"/proc/{child}/environ").read_text().split("\0") if "=" in item)
        who = role(env)
        assert who is not None
        ports.append(who.metrics_port)
    return ports


@contextlib.asynccontextmanager
async def _two_workers(db_config: DatabaseConfig, workdir: Path, grace_s: float = 10):
    await migrate(db_config)
    # slow enough that SIGTERM meets calls in flight
    sim = SandboxSimulator(Behaviour(p50_ms=700, p99_ms=900), name="bank-a", secret="bank-a-secret")
    await sim.start()
    gw = GatewayProcess(
        workdir,
        db_config,
        [{"id": "bank-a", "adapter": "sandbox", "settings": sim.adapter_settings()}],
        server={"workers": 2, "replica_id": "wtest", "grace_s": grace_s},  # 10: a loaded machine, room to drain
    )
    db = Database(db_config)
    await db.start()
    await gw.start_async(wait_callbacks=True)
    try:
        yield gw, sim, db
    finally:
        gw.kill()
        for child in _children(gw.proc.pid) if gw.proc and gw.proc.poll() is None else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        await db.stop()
        await sim.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def two_workers(db_config: DatabaseConfig, tmp_path: Path):
    """Two workers of their own (the test stops them)."""
    async with _two_workers(db_config, tmp_path) as stack:
        yield stack


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_workers(tmp_path_factory: pytest.TempPathFactory):
    """Two workers shared by the tests that only read them, and the last one, which SIGKILLs the supervisor
    (a start costs about 10 s on this machine)."""
    config = new_db_config()
    try:
        async with _two_workers(config, tmp_path_factory.mktemp("workers")) as stack:
            yield stack
    finally:
        drop_db(config)


async def _withhold(address: str, request_id: str, card: str, amount: int = 5000) -> pb.Flow:
    # a channel of its own per call: a new connection, which the kernel gives to either worker
    async with grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        stub = gateway_pb2_grpc.PaymentGatewayStub(channel)
        return await stub.Withhold(
            pb.WithholdRequest(
                request_id=request_id,
                amount=pb.Money(amount=amount, currency="CNY"),
                account_no=card,
                bank_code="ICBC",
                wait_ms=10_000,
            ),
            metadata=MD,
        )


async def test_two_workers_share_the_port_add_up_their_metrics_and_run_once(shared_workers) -> None:
    gw, sim, db = shared_workers
    assert gw.proc is not None
    workers = _children(gw.proc.pid)
    assert len(workers) == 2
    for port in _worker_metrics_ports(gw.proc.pid):
        wait_port(port, gw.proc, "worker metrics", 30)
    card = luhn_card()
    async with grpc.aio.insecure_channel(gw.address) as channel:
        await bind(gateway_pb2_grpc.PaymentGatewayStub(channel), {"bank-a": sim}, db, card)
    flows = await asyncio.gather(*(_withhold(gw.address, f"w-{i}", card, 5010 + 100 * i) for i in range(WITHHOLDS)))
    assert [f.status for f in flows] == [pb.SUCCEEDED] * WITHHOLDS, [(f.status, str(f.failure)) for f in flows]
    assert len({f.flow_no for f in flows}) == WITHHOLDS

    # each worker is a replica of its own, alive, and neither replaced the other
    live = await db.fetchall("SELECT incarnation, replica_id FROM replicas WHERE stopped_at IS NULL")
    assert sorted(r["replica_id"] for r in live) == ["wtest-w0", "wtest-w1"]
    # both served: the attempts were recorded by both incarnations
    served = await db.fetchall("SELECT incarnation, COUNT(*) AS n FROM attempts GROUP BY incarnation")
    assert {r["incarnation"] for r in served} == {r["incarnation"] for r in live}, served
    # money moved once per flow
    assert sorted(sim.ledger.debits_by_order().values()) == [1] * WITHHOLDS

    # one /metrics: the sum of the workers' own
    per_worker = [http_get(f"http://127.0.0.1:{p}/metrics").decode() for p in _worker_metrics_ports(gw.proc.pid)]
    merged = http_get(f"http://127.0.0.1:{gw.metrics_port}/metrics").decode()
    name = "paygate_flows_created_total"
    mine = [_counter(text, name) for text in per_worker]
    assert all(0 < n < WITHHOLDS for n in mine), mine
    assert _counter(merged, name) == sum(mine) == WITHHOLDS
    assert re.search(r"^paygate_workers 2\.0$", merged, re.M) and re.search(
        r"^paygate_workers_scraped 2\.0$", merged, re.M
    )
    # the workers' background jobs (heartbeats, the poller) keep committing between the scrapes:
    # the merged count lies between the workers' sums read just before and just after it
    after = [http_get(f"http://127.0.0.1:{p}/metrics").decode() for p in _worker_metrics_ports(gw.proc.pid)]
    commits = "paygate_db_commits_total"
    assert (
        sum(_counter(t, commits) for t in per_worker)
        <= _counter(merged, commits)
        <= sum(_counter(t, commits) for t in after)
    )


async def test_sigterm_drains_every_worker(two_workers) -> None:
    gw, sim, db = two_workers
    assert gw.proc is not None
    workers = _children(gw.proc.pid)
    card = luhn_card()
    async with grpc.aio.insecure_channel(gw.address) as channel:
        await bind(gateway_pb2_grpc.PaymentGatewayStub(channel), {"bank-a": sim}, db, card)
    calls = [asyncio.ensure_future(_withhold(gw.address, f"d-{i}", card, 6010 + 100 * i)) for i in range(16)]
    await asyncio.sleep(0.5)  # every call sent (the bank takes 700 ms or more)
    gw.proc.send_signal(signal.SIGTERM)
    flows = await asyncio.gather(*calls)
    assert [f.status for f in flows] == [pb.SUCCEEDED] * 16, "in-flight calls finish within the grace period"
    assert await asyncio.to_thread(gw.proc.wait, 30) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    log = gw.log_path.read_text()
    assert log.count("paygate stopped") == 2, "both workers drained and stopped"
    served = await db.fetchall("SELECT DISTINCT incarnation FROM attempts")
    assert len(served) == 2, "the in-flight calls were spread over both workers"
    assert sorted(sim.ledger.debits_by_order().values()) == [1] * 16


async def test_workers_do_not_outlive_a_killed_supervisor(shared_workers) -> None:
    gw, _sim, _db = shared_workers
    assert gw.proc is not None
    workers = _children(gw.proc.pid)
    assert len(workers) == 2
    gw.proc.kill()  # SIGKILL: no shutdown code runs in the supervisor
    gw.proc.wait(10)
    deadline = asyncio.get_running_loop().time() + 15
    while any(_alive(pid) for pid in workers) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
    assert not any(_alive(pid) for pid in workers), "a worker kept the shared ports after its supervisor died"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
