"""The contract of ``gateway.plans.ports.PlanStore``, as tests run against the fake and the MySQL store.

``tests/unit/plans/test_fake_plan_store.py`` runs :class:`PlanStoreContract` against
tests/fakes/plans.py, ``tests/integration/test_plan_store_contract.py`` against MariaDB: the
executor's unit tests trust the fake because the same assertions hold for the real store.

A subclass provides the ``store`` fixture.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import date, datetime, time, timedelta

import pytest

from devstack.cards import luhn_card
from gateway.businessday import BusinessCalendar
from gateway.errors import DuplicateKey
from gateway.plans import transitions
from gateway.plans.model import AttemptRow, AttemptStatus, Closing, InstalmentStatus, RunKey, RunStatus
from gateway.plans.policy import Policy, Schedule
from gateway.plans.ports import PlanStore, write
from gateway.plans.spec import InstalmentSpec, NewPlan, PlanSpec, RejectCode, check_plans

NOW = datetime(2026, 12, 1, 4, 0)  # 12:00 in Shanghai
DAY = date(2026, 12, 1)
SCHEDULES = {"default": Schedule(Policy("default", (time(12), time(18))), BusinessCalendar.named())}
CARD = luhn_card()


def plans(*specs: PlanSpec) -> list[NewPlan]:
    accepted, rejected = check_plans(
        specs, caller="loans", policy_for=lambda c, p: "default", schedules=SCHEDULES, hash_key=b"k"
    )
    assert not rejected
    for p in accepted:
        p.account_sealed = b"\x01sealed-" + p.plan_id.encode()
    return accepted


def plan(plan_id: str, *items: tuple[str, str, int], bank: str = "ICBC") -> PlanSpec:
    return PlanSpec(
        plan_id, "cash", CARD, bank, instalments=[InstalmentSpec(i, due, amount, "CNY") for i, due, amount in items]
    )


async def open_run(store: PlanStore, *, deadline: datetime = NOW + timedelta(hours=6)):  # type: ignore[no-untyped-def]
    run, _ = await store.open_run(
        RunKey("default", DAY, "12:00"), scheduled_at=NOW, deadline=deadline, started_by="schedule", now=NOW, due={}
    )
    return run


def attempt(row_id: int, run_id: int, *, point: str = "12:00") -> AttemptRow:
    return AttemptRow(
        0,
        row_id,
        DAY,
        point,
        f"plan:20261201:{point.replace(':', '')}:{row_id}",
        1000,
        "CNY",
        AttemptStatus.IN_FLIGHT,
        run_id=run_id,
    )


def going(row, run_id: int):  # type: ignore[no-untyped-def]
    return transitions.counted(
        dataclasses.replace(
            row,
            status=InstalmentStatus.IN_FLIGHT,
            attempt_request_id=f"plan:20261201:1200:{row.id}",
            attempt_day=DAY,
            attempt_time_point="12:00",
            lease_until=NOW + timedelta(seconds=30),
            updated_at=NOW,
        ),
        DAY,
    )


class PlanStoreContract:
    @pytest.fixture
    def store(self) -> PlanStore:
        raise NotImplementedError

    async def test_submission_is_idempotent_and_refuses_the_same_key_with_other_parameters(
        self, store: PlanStore
    ) -> None:
        first = await store.submit(
            "loans", plans(plan("p1", ("i1", "2026-12-01", 1000), ("i2", "2027-01-01", 1000))), now=NOW
        )
        assert (first.plans_accepted, first.instalments_accepted, first.instalments_replayed) == (1, 2, 0)
        again = await store.submit(
            "loans", plans(plan("p1", ("i1", "2026-12-01", 1000), ("i3", "2027-02-01", 1000))), now=NOW
        )
        assert (again.instalments_accepted, again.instalments_replayed, again.rejected) == (1, 1, [])
        moved = await store.submit("loans", plans(plan("p1", ("i2", "2027-01-09", 1000))), now=NOW)
        assert [(r.instalment_id, r.code) for r in moved.rejected] == [("i2", RejectCode.ALREADY_EXISTS)]
        other = await store.submit("loans", plans(plan("p1", ("i4", "2027-03-01", 1000), bank="CCB")), now=NOW)
        assert [(r.plan_id, r.instalment_id, r.code) for r in other.rejected] == [("p1", "", RejectCode.ALREADY_EXISTS)]
        stored = await store.plan("loans", "p1")
        assert stored is not None and [i.instalment_id for i in stored.instalments] == ["i1", "i2", "i3"]
        assert stored.instalments[1].due_date == date(2027, 1, 1)  # never overwritten
        assert await store.plan("collections", "p1") is None

    async def test_claims_hand_each_due_instalment_to_one_claimer(self, store: PlanStore) -> None:
        await store.submit(
            "loans",
            plans(
                *(plan(f"p{i}", (f"i{i}", "2026-12-01", 1000)) for i in range(12)),
                plan("later", ("l1", "2026-12-02", 1)),
            ),
            now=NOW,
        )
        await store.set_paused("loans", "p0", "", True, now=NOW)
        run = await open_run(store)
        lease = NOW + timedelta(seconds=30)
        a, b = await asyncio.gather(
            store.claim(run, owner="a", limit=8, now=NOW, lease_until=lease),
            store.claim(run, owner="b", limit=8, now=NOW, lease_until=lease),
        )
        ids_a = {c.instalment.instalment_id for c in a}
        ids_b = {c.instalment.instalment_id for c in b}
        assert not ids_a & ids_b and ids_a | ids_b == {f"i{i}" for i in range(1, 12)}  # not paused, not later
        claimed = a[0].instalment
        assert claimed.status is InstalmentStatus.CLAIMED and claimed.claim_token and claimed.run_id == run.id
        assert a[0].account_sealed.startswith(b"\x01sealed-")
        assert await store.claim(run, owner="c", limit=8, now=NOW, lease_until=lease) == []
        progress = await store.run_progress(run)
        assert progress.remaining == 11 and progress.attempted == 0

    async def test_go_is_the_one_step_before_a_withhold_and_refuses_what_changed(self, store: PlanStore) -> None:
        await store.submit("loans", plans(*(plan(f"p{i}", (f"i{i}", "2026-12-01", 1000)) for i in range(3))), now=NOW)
        run = await open_run(store)
        c0, c1, c2 = await store.claim(run, owner="a", limit=3, now=NOW, lease_until=NOW + timedelta(seconds=30))
        await store.set_paused("loans", c1.instalment.plan_id, c1.instalment.instalment_id, True, now=NOW)
        assert not await store.go(c1, going(c1.instalment, run.id), attempt(c1.instalment.id, run.id), now=NOW)
        stale = dataclasses.replace(c2, instalment=dataclasses.replace(c2.instalment, claim_token="other"))
        assert not await store.go(stale, going(c2.instalment, run.id), attempt(c2.instalment.id, run.id), now=NOW)
        assert await store.go(c0, going(c0.instalment, run.id), attempt(c0.instalment.id, run.id), now=NOW)
        row = await store.instalment(c0.instalment.id)
        assert row is not None and row.status is InstalmentStatus.IN_FLIGHT and row.attempts == 1
        assert not await store.go(c0, going(c0.instalment, run.id), attempt(c0.instalment.id, run.id), now=NOW)
        plan_row = await store.plan("loans", c0.instalment.plan_id, with_attempts=True)
        assert plan_row is not None and len(plan_row.instalments[0].attempt_rows) == 1
        assert (await store.run_progress(run)).in_flight == 1
        # a paused run and a run past its deadline let nothing go
        await store.set_run_status(run.id, RunStatus.PAUSED, expect=frozenset({RunStatus.RUNNING}), now=NOW)
        assert not await store.go(c2, going(c2.instalment, run.id), attempt(c2.instalment.id, run.id), now=NOW)
        await store.set_run_status(run.id, RunStatus.RUNNING, expect=frozenset({RunStatus.PAUSED}), now=NOW)
        late = NOW + timedelta(hours=7)
        assert not await store.go(c2, going(c2.instalment, run.id), attempt(c2.instalment.id, run.id), now=late)

    async def test_one_attempt_per_instalment_and_time_point(self, store: PlanStore) -> None:
        await store.submit("loans", plans(plan("p", ("i", "2026-12-01", 1000))), now=NOW)
        run = await open_run(store)
        [c] = await store.claim(run, owner="a", limit=1, now=NOW, lease_until=NOW + timedelta(seconds=30))
        assert await store.go(c, going(c.instalment, run.id), attempt(c.instalment.id, run.id), now=NOW)
        row = await store.instalment(c.instalment.id)
        assert row is not None
        back = transitions.release(dataclasses.replace(row, status=InstalmentStatus.IN_FLIGHT), NOW).after
        assert await store.save([write(row, transitions.Step(back))])
        [again] = await store.claim(run, owner="a", limit=1, now=NOW, lease_until=NOW + timedelta(seconds=30))
        with pytest.raises(DuplicateKey):
            await store.go(again, going(again.instalment, run.id), attempt(again.instalment.id, run.id), now=NOW)

    async def test_save_is_a_compare_and_set_with_its_event(self, store: PlanStore) -> None:
        await store.submit("loans", plans(plan("p", ("i", "2026-12-01", 1000), ("j", "2026-12-01", 500))), now=NOW)
        stored = await store.plan("loans", "p")
        assert stored is not None
        i, j = stored.instalments
        settled = transitions.close(i, Closing.SETTLE, NOW)
        assert settled is not None and settled.event is not None
        stale = dataclasses.replace(j, event_seq=5)
        cancelled = transitions.close(stale, Closing.CANCEL, NOW)
        assert cancelled is not None
        assert not await store.save([write(i, settled), write(stale, cancelled)])  # one guard fails: nothing
        fresh = await store.plan("loans", "p")
        assert fresh is not None and {x.status for x in fresh.instalments} == {InstalmentStatus.SCHEDULED}
        assert await store.save([write(i, settled)])
        assert not await store.save([write(i, settled)])  # the same step twice: the guard has moved on
        fresh = await store.plan("loans", "p")
        assert fresh is not None and fresh.instalments[0].status is InstalmentStatus.SETTLED
        assert fresh.instalments[0].event_seq == 1

    async def test_leases_expire_and_an_owner_takes_back_what_it_held(self, store: PlanStore) -> None:
        await store.submit("loans", plans(*(plan(f"p{i}", (f"i{i}", "2026-12-01", 1000)) for i in range(3))), now=NOW)
        run = await open_run(store)
        lease = NOW + timedelta(seconds=30)
        c0, c1, _ = await store.claim(run, owner="dead", limit=3, now=NOW, lease_until=lease)
        assert await store.go(c0, going(c0.instalment, run.id), attempt(c0.instalment.id, run.id), now=NOW)
        assert await store.release_expired_claims(NOW) == 0
        assert await store.claim_orphans(owner="b", now=NOW, lease_until=lease, limit=10) == []
        later = NOW + timedelta(seconds=31)
        assert await store.release_expired_claims(later) == 2  # c1, c2: never went
        [orphan] = await store.claim_orphans(owner="b", now=later, lease_until=later + timedelta(seconds=30), limit=10)
        assert orphan.instalment.id == c0.instalment.id and orphan.instalment.attempt_request_id
        assert await store.claim_orphans(owner="c", now=later, lease_until=later, limit=10) == []
        again = await store.claim(run, owner="b", limit=3, now=later, lease_until=later + timedelta(seconds=30))
        assert await store.release_owner("b", now=later) == 3  # two claims and one in-flight lease
        row = await store.instalment(c1.instalment.id)
        assert row is not None and row.status is InstalmentStatus.SCHEDULED
        assert len(again) == 2

    async def test_rate_buckets_start_full_and_are_shared(self, store: PlanStore) -> None:
        first = await store.take_tokens("bank-a", want=3, rate=10, capacity=5, now=NOW)
        second = await store.take_tokens("bank-a", want=3, rate=10, capacity=5, now=NOW)
        assert (first.granted, second.granted) == (3, 2) and second.wait_s == pytest.approx(0.1)
        later = await store.take_tokens("bank-a", want=3, rate=10, capacity=5, now=NOW + timedelta(seconds=0.25))
        assert later.granted == 2
        assert (await store.take_tokens("bank-b", want=1, rate=1, capacity=1, now=NOW)).granted == 1

    async def test_runs_are_one_per_time_point(self, store: PlanStore) -> None:
        run = await open_run(store)
        again, created = await store.open_run(
            RunKey("default", DAY, "12:00"), scheduled_at=NOW, deadline=NOW, started_by="ops", now=NOW, due={}
        )
        assert not created and again.id == run.id and again.started_by == "schedule"
        assert [r.id for r in await store.open_runs(NOW)] == [run.id]
        assert await store.set_run_status(run.id, RunStatus.FINISHED, expect=frozenset({RunStatus.RUNNING}), now=NOW)
        assert [r.id for r in await store.open_runs(NOW)] == [run.id]  # FINISHED inside its window: still open
        assert await store.open_runs(NOW + timedelta(hours=7)) == []
        restarted = await store.restart_run(run.id, deadline=NOW + timedelta(hours=8), started_by="ops", now=NOW)
        assert restarted.status is RunStatus.RUNNING and restarted.started_by == "ops"
