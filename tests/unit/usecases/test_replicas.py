"""gateway/replicas.py over the in-memory stores: what one replica takes from what the others did.

Operator states written through another replica are applied at the next
sync (and only newer ones, and not over a credentials hold unless the
operator changed something); outcomes other replicas recorded reach this
router once each; recovery takes only what no live replica is working on.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from channels.contract import CREDENTIALS_REJECTED, Outcome, OutcomeStatus
from gateway import metrics
from gateway.config import PollerConfig
from gateway.domain import AttemptStatus, FlowKind, FlowStatus
from gateway.planner import Planner
from gateway.poller import Poller
from gateway.replicas import ReplicasConfig, ReplicaSync
from gateway.store.rows import ChannelStateRow, NewAttempt, NewFlow, RecoveryScope, Source
from gateway.validation import WithholdParams
from routing.engine import ChannelState, Router
from tests.fakes import (
    CALLER,
    CARD,
    FakeChannel,
    FakeChannelStates,
    FakeFlowStore,
    FakeGateway,
    FakeObservations,
    FakePositionStore,
    FakeReplicas,
    Tables,
)
from tests.fakes.channel import busy, processing
from tests.unit.routing.helpers import make_router, withhold

REFUSED = Outcome(
    OutcomeStatus.FAILED, CREDENTIALS_REJECTED, raw_code="SIGN_ERROR", safe_elsewhere=True, credentials_rejected=True
)


class Replica:
    """One replica's router, planner and sync over shared tables (the database)."""

    def __init__(self, tables: Tables, name: str, router: Router | None = None, **config: float) -> None:
        self.router = router or make_router(exploration=0, elimination_consecutive=3, elimination_min_volume=3)
        self.planner = Planner(self.router, FakePositionStore(tables), FakeObservations(tables))
        self.replicas = FakeReplicas(tables)
        self.sync = ReplicaSync(
            ReplicasConfig(**config),
            replica_id=name,
            incarnation=f"RUN-{name}",
            store=self.replicas,
            channel_states=FakeChannelStates(tables),
            observations=FakeObservations(tables),
            planner=self.planner,
        )
        self.flows = FakeFlowStore(tables, incarnation=f"RUN-{name}")


def routable(router: Router) -> list[str]:
    return [s.channel_id for s in router.decide(withhold(now=time.time())).ranked]


async def record_channel_failure(replica: Replica, request_id: str, channel: str = "a") -> None:
    """Another replica sent an attempt on ``channel`` and recorded a channel-attributable failure."""
    new = NewFlow(CALLER, request_id, FlowKind.WITHHOLD, 1_000, "CNY", f"h-{request_id}", "acct", "6222****1234")
    created = await replica.flows.create(new, NewAttempt(channel, "withhold", {"reason": "test"}))
    await replica.flows.apply_outcome(created.row.attempts[0].id, busy(), Source.RESPONSE)


# --- operator states -------------------------------------------------------------------------


async def test_a_state_set_through_another_replica_is_applied_at_the_next_sync() -> None:
    tables = Tables()
    here = Replica(tables, "gw-a")
    await FakeChannelStates(tables).set("a", "disabled", operator="ops", reason="bank incident")
    assert here.router.state("a") is ChannelState.ENABLED  # nothing pushes it: the sync reads it
    assert await here.sync.follow_channel_states() == 1
    assert here.router.state("a") is ChannelState.DISABLED and "a" not in routable(here.router)
    assert await here.sync.follow_channel_states() == 0  # nothing new


async def test_an_older_version_never_undoes_a_newer_one() -> None:
    here = Replica(Tables(), "gw-a")
    disabled, enabled = ChannelStateRow("a", "disabled", 1), ChannelStateRow("a", "enabled", 2)
    assert here.planner.apply_operator_state(enabled, "read by the sync")
    assert not here.planner.apply_operator_state(disabled, "the RPC that wrote it, answered late")
    assert here.router.state("a") is ChannelState.ENABLED
    assert not here.planner.apply_operator_state(ChannelStateRow("gone", "disabled", 9), "unrouted")


async def test_a_credentials_hold_stays_until_an_operator_changes_the_state() -> None:
    tables = Tables()
    here = Replica(tables, "gw-a")
    states = FakeChannelStates(tables)
    await states.set("a", "enabled", operator="ops", reason="initial")
    await here.sync.follow_channel_states()
    here.planner.credentials.observe("a", REFUSED)  # this replica's own overlay on the operator state
    assert here.router.state("a") is ChannelState.DISABLED
    assert await here.sync.follow_channel_states() == 0
    assert here.router.state("a") is ChannelState.DISABLED and here.planner.credentials.held() == {"a"}
    await states.set("a", "enabled", operator="ops", reason="key rotated at the bank")  # through another replica
    assert await here.sync.follow_channel_states() == 1
    assert here.planner.credentials.held() == frozenset() and here.router.state("a") is ChannelState.ENABLED


# --- routing evidence ----------------------------------------------------------------------------


async def test_failures_another_replica_recorded_eliminate_the_channel_here() -> None:
    tables = Tables()
    here, there = Replica(tables, "gw-a"), Replica(tables, "gw-b")
    for i in range(3):
        await record_channel_failure(there, f"r-{i}")
    assert not here.router.eliminated("a", time.time())
    assert await here.sync.fold_evidence() == 3
    assert here.router.eliminated("a", time.time())
    assert await here.sync.fold_evidence() == 0  # the overlap reads them again: counted once


async def test_an_outcome_this_replica_applied_itself_is_not_counted_again() -> None:
    tables = Tables()
    here = Replica(tables, "gw-a", make_router(exploration=0, elimination_consecutive=2, elimination_min_volume=2))
    await record_channel_failure(here, "r-1")
    [attempt] = tables.attempts.values()
    here.planner.observe(attempt, busy())  # as FlowService.apply does after the transition
    assert await here.sync.fold_evidence() == 0
    assert not here.router.eliminated("a", time.time())  # one failure, not two


async def test_the_warm_start_counts_recent_outcomes_once() -> None:
    tables = Tables()
    there = Replica(tables, "gw-b")
    for i in range(3):
        await record_channel_failure(there, f"r-{i}")
    here = Replica(tables, "gw-a")
    await here.sync.start(warm_window_s=3600)
    try:
        assert here.router.eliminated("a", time.time())
        assert await here.sync.fold_evidence() == 0
    finally:
        await here.sync.stop()


# --- liveness and recovery --------------------------------------------------------------------------


async def test_a_restart_replaces_the_earlier_run_which_learns_it_at_its_next_beat(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tables = Tables()
    first = Replica(tables, "gw-a")
    await first.sync.start(warm_window_s=60)
    try:
        assert await first.sync.beat()
        second = ReplicaSync(
            ReplicasConfig(),
            replica_id="gw-a",
            incarnation="RUN-gw-a-2",
            store=FakeReplicas(tables),
            channel_states=FakeChannelStates(tables),
            observations=FakeObservations(tables),
            planner=first.planner,
        )
        await second.start(warm_window_s=60)
        caplog.set_level(logging.ERROR, logger="gateway.replicas")
        assert not await first.sync.beat()
        assert not await first.sync.beat()
        assert len([r for r in caplog.records if "replaced" in r.getMessage()]) == 1  # said once
        with pytest.raises(RuntimeError):  # and its heartbeat step keeps failing: the alert's age grows
            await first.sync._beat_step()
        assert [r.incarnation for r in await first.replicas.alive(10)] == ["RUN-gw-a-2"]
        await second.stop()
    finally:
        await first.sync.stop()
    assert await first.replicas.alive(10) == []


async def test_a_failing_step_is_counted_and_retried() -> None:
    tables = Tables()
    here = Replica(tables, "gw-a", heartbeat_s=0.02, state_sync_s=0.02, evidence_sync_s=0.02, dead_after_s=1)
    await here.sync.start(warm_window_s=60)
    errors = metrics.REPLICA_SYNC_ERRORS.labels(what="channel_states")
    before = errors._value.get()
    calls = 0
    real = here.sync.channel_states.current

    async def flaky() -> list[ChannelStateRow]:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ConnectionError("database went away")
        return await real()

    here.sync.channel_states.current = flaky  # type: ignore[method-assign]
    await FakeChannelStates(tables).set("a", "draining", operator="ops", reason="winding down")
    try:
        for _ in range(100):
            if here.router.state("a") is ChannelState.DRAINING:
                break
            await asyncio.sleep(0.02)
    finally:
        await here.sync.stop()
    assert here.router.state("a") is ChannelState.DRAINING
    assert errors._value.get() == before + 2


@pytest.fixture
def gw() -> FakeGateway:
    gateway = FakeGateway(FakeChannel("bank-a"), FakeChannel("bank-b"))
    gateway.agree("bank-a", "bank-b")
    return gateway


async def test_recovery_takes_only_what_no_live_replica_is_working_on(gw: FakeGateway) -> None:
    replicas = FakeReplicas(gw.tables)
    await replicas.register("RUN-A", "gw-a")
    await replicas.register("RUN-B", "gw-b")
    gw.store.incarnation = "RUN-A"  # gw's use cases are replica A
    gw.channels["bank-a"].answer(processing())
    sending = await gw.flows.withhold(CALLER, "r-1", WithholdParams(10_000, "CNY", CARD, "ICBC", "", ""), 5)
    gw.tables.attempts[sending.attempts[0].id].status = AttemptStatus.SENDING  # A is still waiting for the bank
    gw.tables.poll_queue.clear()
    gw.channels["bank-a"].answer(busy())
    # A stands between its two attempts: the first FAILED (safe elsewhere), the second not recorded yet
    gw.store.fail_next("add_attempt", ConnectionError("database lost before attempt 2"))
    gw.store.fail_next("finish_from_attempt", ConnectionError("still lost"))
    await gw.flows.withhold(CALLER, "r-2", WithholdParams(20_000, "CNY", CARD, "ICBC", "", ""), 5)
    [failing_over] = [f for f in gw.tables.flows.values() if f.request_id == "r-2"]
    assert failing_over.status is FlowStatus.PROCESSING

    config = PollerConfig(schedule=((5.0, 2),), lease_s=60.0)
    b = Poller(gw.queue, gw.flows, config, {}, owner="gw-b", scope=RecoveryScope("RUN-B", 10))
    assert await b.recover() == 0  # B starting (cutoff now) leaves A's work alone
    assert gw.tables.poll_queue == {} and gw.tables.flows[failing_over.id].status is FlowStatus.PROCESSING

    replicas.silence("RUN-A", 30)  # A died
    assert await b.recover(older_than_s=90) == 2  # the periodic sweep takes a dead replica's work at once
    assert sending.attempts[0].id in gw.tables.poll_queue
    assert gw.tables.flows[failing_over.id].status is FlowStatus.FAILED
