"""The executor's decisions against in-memory fakes, with a clock the test moves."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import date, datetime, time
from typing import Any

import pytest

from devstack.cards import luhn_card
from gateway.businessday import BusinessCalendar
from gateway.domain import FlowStatus, account_hash
from gateway.errors import PreconditionFailed
from gateway.plans.config import PlansConfig
from gateway.plans.executor import PlanExecutor
from gateway.plans.model import (
    ATTEMPTS_EXHAUSTED,
    NO_AGREEMENT,
    WINDOW_PASSED,
    Closing,
    InstalmentStatus,
    OutcomeKind,
    RunKey,
    RunStatus,
)
from gateway.plans.policy import Policy, QuietWindow, Schedule
from gateway.plans.ratelimit import RateLimiter
from gateway.plans.sealing import AccountSealer
from gateway.plans.service import PlanService
from gateway.plans.spec import InstalmentSpec, PlanSpec
from paygate.v1 import events_pb2
from tests.fakes.clock import FakeClock
from tests.fakes.plans import FakeAgreements, FakePlanStore, FakeRoutePlanner, FakeWithholder

DAY = date(2026, 12, 1)
NOON = datetime(2026, 12, 1, 4, 0)  # 12:00 in Shanghai
SIX = datetime(2026, 12, 1, 10, 0)  # 18:00
HASH_KEY = b"test-hash-key"


class World:
    def __init__(self, *, replicas: int = 1, **policy: Any) -> None:
        spec: dict[str, Any] = {
            "attempts_per_day": 2,
            "retry_days": 1,
            "quiet": QuietWindow(time(22), time(7)),
            **policy,
        }
        self.policy = Policy("default", (time(12), time(18)), **spec)
        self.schedules = {"default": Schedule(self.policy, BusinessCalendar.named())}
        self.config = PlansConfig(concurrency=4, claim_batch=2, lease_s=30, wait_s=5, policies={"default": self.policy})
        self.clock = FakeClock(datetime(2026, 12, 1, 0, 0))  # 08:00 in Shanghai
        self.flows = FakeWithholder()
        self.store = FakePlanStore(self.flows)
        self.agreements = FakeAgreements()
        sealer = AccountSealer(HASH_KEY)
        self.service = PlanService(
            store=self.store,
            config=self.config,
            schedules=self.schedules,
            sealer=sealer,
            hash_key=HASH_KEY,
            clock=self.clock,
        )
        self.executors = [
            PlanExecutor(
                store=self.store,
                flows=self.flows,
                agreements=self.agreements,
                planner=FakeRoutePlanner(),  # type: ignore[arg-type]
                limiter=RateLimiter(self.store, {}, burst_s=0.2, clock=self.clock),
                config=self.config,
                schedules=self.schedules,
                sealer=sealer,
                clock=self.clock,
                owner=f"replica-{i}",
            )
            for i in range(replicas)
        ]
        self.card = luhn_card()

    @property
    def executor(self) -> PlanExecutor:
        return self.executors[0]

    async def submit(self, *amounts: int, due: str = "2026-12-01", prefix: str = "loan") -> None:
        specs = [
            PlanSpec(
                f"{prefix}-{i}",
                "cash",
                self.card,
                "ICBC",
                instalments=[InstalmentSpec(f"{prefix}-{i}-1", due, amount, "CNY")],
            )
            for i, amount in enumerate(amounts)
        ]
        result = await self.service.submit("loans", specs)
        assert not result.rejected, result.rejected

    def status(self) -> dict[str, InstalmentStatus]:
        return {i.instalment_id: i.status for i in self.store.instalments.values()}

    def events(self, instalment_id: str) -> list[events_pb2.InstalmentOutcome]:
        return [e.event.instalment for e in self.store.outbox if e.event.instalment.instalment_id == instalment_id]

    async def at(self, moment: datetime) -> None:
        self.clock.set(moment)
        await self.executor.settle()


async def test_due_instalments_are_attempted_once_at_their_time_point() -> None:
    w = World()
    await w.submit(10000, 20000, 30000)
    await w.at(datetime(2026, 12, 1, 3, 59))  # 11:59: nothing is due yet
    assert not w.flows.calls
    await w.at(NOON)
    assert sorted(w.flows.calls) == sorted(set(w.flows.calls)) and len(w.flows.calls) == 3
    assert set(w.status().values()) == {InstalmentStatus.SUCCEEDED}
    assert all(c.startswith("plan:20261201:1200:") for c in w.flows.calls)
    run = await w.store.run(RunKey("default", DAY, "12:00"))
    assert run is not None and run.due == 3 and run.status is RunStatus.FINISHED
    await w.executor.settle()
    await w.at(SIX)
    await w.at(datetime(2026, 12, 2, 4, 0))
    assert len(w.flows.calls) == 3  # repaid in full: never attempted again
    [event] = w.events("loan-0-1")
    assert event.kind == events_pb2.OUTCOME_SUCCEEDED and event.sequence == 1 and event.time_point == "12:00"


async def test_two_replicas_split_a_run_and_none_withholds_twice() -> None:
    w = World(replicas=2)
    await w.submit(*[10000 + i * 100 for i in range(40)])
    w.clock.set(NOON)
    original = w.flows.withhold

    async def slow(*args: Any) -> Any:
        await asyncio.sleep(0)  # let the other replica's step in between
        return await original(*args)

    w.flows.withhold = slow  # type: ignore[method-assign]
    for _ in range(200):
        for e in w.executors:
            await e.step()
            await asyncio.sleep(0)
        if len(w.flows.calls) == 40 and not any(e.in_flight for e in w.executors):
            break
    assert len(w.flows.calls) == 40 and len(set(w.flows.calls)) == 40
    owners = {a.request_id for a in w.store.attempts}
    assert len(owners) == 40
    assert set(w.status().values()) == {InstalmentStatus.SUCCEEDED}


async def test_insufficient_funds_retries_at_the_next_time_point_then_stops() -> None:
    w = World(retry_days=0)
    await w.submit(10001)  # ..01: insufficient funds
    await w.at(NOON)
    [retry] = w.events("loan-0-1")
    assert retry.kind == events_pb2.OUTCOME_RETRY_SCHEDULED and retry.failure_code == "INSUFFICIENT_FUNDS"
    assert (retry.next_business_day, retry.next_time_point) == ("2026-12-01", "18:00")
    assert w.status()["loan-0-1"] is InstalmentStatus.SCHEDULED
    await w.at(datetime(2026, 12, 1, 9, 59))  # 17:59: not due yet
    assert len(w.flows.calls) == 1
    await w.at(SIX)
    assert w.flows.calls == ["plan:20261201:1200:" + w.flows.calls[0].rsplit(":", 1)[1], w.flows.calls[1]]
    assert w.flows.calls[1].startswith("plan:20261201:1800:")
    _, stopped = w.events("loan-0-1")
    assert stopped.kind == events_pb2.OUTCOME_STOPPED and stopped.stop_reason == ATTEMPTS_EXHAUSTED
    assert stopped.sequence == 2 and stopped.attempts == 2
    await w.at(datetime(2026, 12, 2, 4, 0))
    assert len(w.flows.calls) == 2


async def test_a_hard_decline_stops_at_once() -> None:
    w = World()
    await w.submit(10002)  # ..02: account frozen
    await w.at(NOON)
    [stopped] = w.events("loan-0-1")
    assert stopped.kind == events_pb2.OUTCOME_STOPPED and stopped.stop_reason == "ACCOUNT_FROZEN"
    await w.at(SIX)
    assert len(w.flows.calls) == 1


async def test_a_revoked_agreement_stops_without_a_withhold() -> None:
    w = World()
    await w.submit(10000)
    w.agreements.revoked.add(account_hash(HASH_KEY, w.card))
    await w.at(NOON)
    assert not w.flows.calls
    [stopped] = w.events("loan-0-1")
    assert stopped.stop_reason == NO_AGREEMENT


async def test_pause_between_claim_and_go_sends_nothing_until_resumed() -> None:
    w = World()
    await w.submit(10000)
    lookups = 0
    original = w.agreements.active_refs

    async def pausing(*args: Any) -> dict[str, str]:
        nonlocal lookups
        lookups += 1
        if lookups == 1:  # the instalment is claimed now; the collector pauses the plan
            await w.service.set_paused("loans", "loan-0", "", True)
        return await original(*args)

    w.agreements.active_refs = pausing  # type: ignore[method-assign]
    await w.at(NOON)
    assert not w.flows.calls
    row = next(iter(w.store.instalments.values()))
    assert row.status is InstalmentStatus.SCHEDULED and row.plan_paused
    await w.service.set_paused("loans", "loan-0", "", False)
    await w.executor.settle()  # resumed inside the run's window: attempted at 12:00 after all
    assert len(w.flows.calls) == 1 and w.flows.calls[0].startswith("plan:20261201:1200:")


async def test_a_crash_after_the_withhold_is_re_driven_with_the_same_request_id() -> None:
    w = World()
    await w.submit(10000)
    w.flows.crash_on.add(f"plan:20261201:1200:{next(iter(w.store.instalments))}")
    await w.at(NOON)
    row = next(iter(w.store.instalments.values()))
    assert row.status is InstalmentStatus.IN_FLIGHT and row.flow_id is None
    await w.at(datetime(2026, 12, 1, 4, 1))  # the lease (30 s) ran out
    assert w.flows.calls == [w.flows.calls[0]] * 2  # the same request: a replay, not a second withhold
    assert len(w.flows.by_id) == 1
    assert w.status()["loan-0-1"] is InstalmentStatus.SUCCEEDED


async def test_an_unresolved_withhold_is_never_attempted_again_until_it_resolves() -> None:
    w = World()
    await w.submit(10005)  # ..05: PROCESSING
    await w.at(NOON)
    row = next(iter(w.store.instalments.values()))
    assert row.status is InstalmentStatus.IN_FLIGHT and row.flow_id is not None
    await w.at(SIX)
    await w.at(datetime(2026, 12, 2, 4, 0))
    assert len(w.flows.calls) == 1
    w.flows.settle(row.flow_id, FlowStatus.SUCCEEDED)
    await w.at(datetime(2026, 12, 2, 4, 1))
    assert w.status()["loan-0-1"] is InstalmentStatus.SUCCEEDED
    [event] = w.events("loan-0-1")
    assert event.kind == events_pb2.OUTCOME_SUCCEEDED and event.time_point == "12:00"


async def test_settle_while_in_flight_applies_when_the_withhold_fails() -> None:
    w = World()
    await w.submit(10005)
    await w.at(NOON)
    plan = await w.service.close("loans", "loan-0", "", Closing.SETTLE)
    assert plan.instalments[0].status is InstalmentStatus.IN_FLIGHT and plan.instalments[0].closing is Closing.SETTLE
    row = next(iter(w.store.instalments.values()))
    assert row.flow_id is not None
    w.flows.settle(row.flow_id, FlowStatus.FAILED, "INSUFFICIENT_FUNDS")
    await w.at(datetime(2026, 12, 1, 4, 1))
    assert w.status()["loan-0-1"] is InstalmentStatus.SETTLED
    [event] = w.events("loan-0-1")
    assert event.kind == events_pb2.OUTCOME_SETTLED and event.closing == "SETTLE"
    await w.at(SIX)
    assert len(w.flows.calls) == 1


async def test_settle_and_cancel_before_the_time_point_mean_nothing_is_attempted() -> None:
    w = World()
    await w.submit(10000, 20000)
    await w.service.close("loans", "loan-0", "", Closing.SETTLE)
    await w.service.close("loans", "loan-1", "loan-1-1", Closing.CANCEL)
    with pytest.raises(PreconditionFailed):
        await w.service.close("loans", "loan-1", "loan-1-1", Closing.SETTLE)
    await w.at(NOON)
    assert not w.flows.calls
    assert w.status() == {"loan-0-1": InstalmentStatus.SETTLED, "loan-1-1": InstalmentStatus.CANCELLED}
    assert [e.kind for e in w.events("loan-0-1")] == [events_pb2.OUTCOME_SETTLED]


async def test_amend_lowers_the_amount_of_the_next_withhold() -> None:
    w = World()
    await w.submit(10001)
    await w.at(NOON)
    row = await w.service.amend("loans", "loan-0", "loan-0-1", 6000, "CNY")
    assert row.amount == 6000 and row.original_amount == 10001
    await w.at(SIX)
    assert w.flows.params[2].amount == 6000
    assert w.status()["loan-0-1"] is InstalmentStatus.SUCCEEDED


async def test_a_run_that_cannot_finish_in_its_window_is_reported_behind() -> None:
    w = World()
    await w.submit(10000, 20000)
    w.clock.set(NOON)
    await w.executor.schedule_runs(NOON)
    key = RunKey("default", DAY, "12:00")
    await w.service.pause_run(key)
    await w.executor.settle()
    assert not w.flows.calls
    await w.at(SIX)  # the 12:00 window closed with both left; the 18:00 run takes them
    noon = await w.store.run(key)
    assert noon is not None and noon.status is RunStatus.BEHIND and noon.missed == 2
    assert sorted(c.split(":")[2] for c in w.flows.calls) == ["1800", "1800"]


async def test_the_quiet_window_is_respected() -> None:
    w = World()
    await w.submit(10000)
    await w.at(datetime(2026, 12, 1, 14, 5))  # 22:05: quiet
    assert not w.flows.calls
    with pytest.raises(PreconditionFailed):
        await w.service.start_run("ops", RunKey("default", DAY, "18:00"))
    await w.at(datetime(2026, 12, 1, 23, 0))  # 07:00 next morning: not quiet, but no time point yet
    assert not w.flows.calls
    await w.at(datetime(2026, 12, 2, 4, 0))
    assert w.flows.calls and w.flows.calls[0].startswith("plan:20261202:1200:")


async def test_an_instalment_past_its_last_day_is_stopped_without_an_attempt() -> None:
    w = World(retry_days=1)
    await w.submit(10000, due="2026-11-28")
    await w.at(NOON)
    assert not w.flows.calls
    [event] = w.events("loan-0-1")
    assert event.kind == events_pb2.OUTCOME_STOPPED and event.stop_reason == WINDOW_PASSED


async def test_an_operator_starts_a_missed_time_point_by_hand() -> None:
    w = World()
    for e in w.executors:
        e.config = dataclasses.replace(w.config, scheduler=False)
    await w.submit(10000)
    await w.at(NOON)
    assert not w.flows.calls  # no scheduler on this replica
    run = await w.service.start_run("ops", RunKey("default", DAY, "12:00"))
    assert run.started_by == "ops" and run.status is RunStatus.RUNNING
    await w.executor.settle()
    assert len(w.flows.calls) == 1
    with pytest.raises(PreconditionFailed):  # a time point that has not come
        await w.service.start_run("ops", RunKey("default", date(2026, 12, 2), "12:00"))


def test_outcome_kinds_map_to_the_event_schema() -> None:
    from gateway.plans.events import KIND

    assert set(KIND) == set(OutcomeKind)


async def test_an_account_that_no_longer_opens_stops_the_instalment_without_a_withhold() -> None:
    w = World()
    await w.submit(10000)
    w.executor.sealer = AccountSealer(b"another key")  # [security] account_hash_key was changed
    await w.at(NOON)
    assert not w.flows.calls
    [event] = w.events("loan-0-1")
    assert event.kind == events_pb2.OUTCOME_STOPPED and event.stop_reason == "ACCOUNT_UNREADABLE"
