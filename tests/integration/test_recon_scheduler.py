"""The daily reconciliation on two replicas: exactly one run per (channel, day), on real MariaDB and a
sandbox simulator over HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta

from channels.registry import ChannelSpec, factory_for
from channels.simkit import Behaviour, EntryKind, create_simulator
from gateway.businessday import BusinessCalendar
from gateway.recon.config import ReconConfig
from gateway.recon.scheduler import ReconScheduler
from gateway.recon.service import ChannelBooks, Reconciler
from gateway.store.db import Database
from gateway.store.flows import MySQLFlowStore
from gateway.store.recon import MySQLReconStore

CHANNEL = "bank-s"


async def test_two_replicas_scheduling_the_same_run_produce_one_run(database: Database) -> None:
    sim = create_simulator("sandbox", Behaviour())
    await sim.start()
    channel = factory_for("sandbox")(ChannelSpec(CHANNEL, "sandbox", sim.adapter_settings()))
    await channel.start()
    try:
        for i in range(20):
            sim.ledger.record(f"S{i}", EntryKind.WITHHOLD, 1_000 + i, "CNY", "acct", {})
            sim.ledger.execute(f"S{i}")
        calendar = BusinessCalendar.named("Asia/Shanghai")
        day = sim.ledger.booking_day(sim.ledger.now())
        config = ReconConfig(run_at={CHANNEL: time(10, 30)})
        # the replicas' clock: the next business day, before and then after 10:30
        early = calendar.at(day + timedelta(days=1), time(10, 29))
        late = calendar.at(day + timedelta(days=1), time(10, 31))
        clock = {"now": early}

        def replica(name: str) -> ReconScheduler:
            recon = Reconciler(
                MySQLReconStore(database),
                MySQLFlowStore(database, group_commit=False),
                {CHANNEL: ChannelBooks(channel)},
                calendar,
                config,
            )
            return ReconScheduler(recon, config, calendar, owner=name, now=lambda: clock["now"])

        a, b = replica("replica-a"), replica("replica-b")
        assert await asyncio.gather(a.tick(), b.tick()) == [[], []]  # not due yet
        clock["now"] = late
        first, second = await asyncio.gather(a.tick(), b.tick())
        assert len(first) + len(second) == 1
        [run] = first or second
        assert run.day == day and run.trigger == "schedule" and run.lines == 20
        assert await asyncio.gather(a.tick(), b.tick()) == [[], []]  # done for the day
        runs = await database.fetchall("SELECT channel, day, trigger_kind FROM recon_runs")
        assert len(runs) == 1
        claim = await database.fetchone("SELECT run_id FROM recon_claims")
        assert claim == {"run_id": run.id}
        assert datetime.now(UTC).replace(tzinfo=None) > run.started_at
    finally:
        await channel.stop()
        await sim.stop()


async def test_an_unpublished_statement_releases_the_claim_for_a_later_tick(database: Database) -> None:
    sim = create_simulator("sandbox", Behaviour())
    await sim.start()
    channel = factory_for("sandbox")(ChannelSpec(CHANNEL, "sandbox", sim.adapter_settings()))
    await channel.start()
    try:
        calendar = BusinessCalendar.named("Asia/Shanghai")
        day = sim.ledger.booking_day(sim.ledger.now())
        sim.statements.faults.unpublish(day)
        config = ReconConfig(run_at={CHANNEL: time(10, 30)})
        recon = Reconciler(
            MySQLReconStore(database),
            MySQLFlowStore(database, group_commit=False),
            {CHANNEL: ChannelBooks(channel)},
            calendar,
            config,
        )
        at = calendar.at(day + timedelta(days=1), time(11, 0))
        scheduler = ReconScheduler(recon, config, calendar, owner="r1", now=lambda: at)
        assert await scheduler.tick() == []
        assert await database.fetchall("SELECT * FROM recon_claims") == []
        sim.statements.faults.publish(day)
        [run] = await scheduler.tick()
        assert run.day == day
    finally:
        await channel.stop()
        await sim.stop()
