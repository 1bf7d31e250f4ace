"""Plan use cases for callers (submit, read, pause, amend, settle, cancel) and operators (runs).

Every read and write is scoped to the caller; another caller's plan is NOT_FOUND. Changes to
instalments are transitions (gateway/plans/transitions.py) written with a compare-and-set; when a
replica's executor changes the same rows at the same moment the use case reads them again and
decides again, so a settle that arrives while a time point runs either happens before the
executor commits to a withhold (which then is never sent) or after (the withhold's result is
reported, then the instalment closes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import date

from gateway.errors import InvalidInput, NotFound, PreconditionFailed
from gateway.plans import transitions
from gateway.plans.clock import Clock
from gateway.plans.config import PlansConfig
from gateway.plans.model import (
    Closing,
    InstalmentRow,
    InstalmentStatus,
    PlanRow,
    PlanStatus,
    RunKey,
    RunProgress,
    RunRow,
    RunStatus,
)
from gateway.plans.policy import Schedule
from gateway.plans.ports import PlanStore, Submitted, Write, write
from gateway.plans.sealing import AccountSealer
from gateway.plans.spec import PlanSpec, Rejection, check_plans
from gateway.splits.funders import Funders

log = logging.getLogger(__name__)

_CAS_TRIES = 8


class PlanService:
    def __init__(
        self,
        *,
        store: PlanStore,
        config: PlansConfig,
        schedules: Mapping[str, Schedule],
        sealer: AccountSealer,
        hash_key: bytes,
        clock: Clock,
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.schedules = dict(schedules)
        self.sealer = sealer
        self.hash_key = hash_key
        self.funders = Funders({})  # the funders instalment shares may name; set by the composition root
        self.banks: frozenset[str] | None = None  # the bank codes a plan may name; set by the composition root
        self.clock = clock
        self.on_outbox = on_outbox or (lambda: None)

    # --- submission ----------------------------------------------------------------------

    async def submit(self, caller: str, specs: Sequence[PlanSpec], *, prefix: str = "plans") -> Submitted:
        """Check every item, store the good ones (idempotently), report the refused ones."""
        plans, rejected = check_plans(
            specs,
            caller=caller,
            policy_for=self.config.policy_for,
            schedules=self.schedules,
            hash_key=self.hash_key,
            prefix=prefix,
            funders=self.funders,
            banks=self.banks,
        )
        for plan in plans:
            plan.account_sealed = self.sealer.seal(plan.payer.account_no, caller=caller, plan_id=plan.plan_id)
        stored = await self.store.submit(caller, plans, now=self.clock.now()) if plans else Submitted()
        refused: list[Rejection] = [*rejected, *stored.rejected]
        return Submitted(stored.plans_accepted, stored.instalments_accepted, stored.instalments_replayed, refused)

    # --- reads ---------------------------------------------------------------------------

    async def get(self, caller: str, plan_id: str, *, with_attempts: bool = False) -> PlanRow:
        plan = await self.store.plan(caller, plan_id, with_attempts=with_attempts)
        if plan is None:
            raise NotFound(f"plan_id: no plan {plan_id}")
        return plan

    async def list_instalments(
        self,
        caller: str,
        *,
        due_from: date | None,
        due_to: date | None,
        statuses: frozenset[InstalmentStatus],
        plan_id: str,
        after: tuple[date, int] | None,
        limit: int,
    ) -> list[InstalmentRow]:
        return await self.store.list_instalments(
            caller, due_from=due_from, due_to=due_to, statuses=statuses, plan_id=plan_id, after=after, limit=limit
        )

    # --- caller changes ------------------------------------------------------------------

    async def set_paused(self, caller: str, plan_id: str, instalment_id: str, paused: bool) -> PlanRow:
        plan = await self.get(caller, plan_id)
        if instalment_id and not any(i.instalment_id == instalment_id for i in plan.instalments):
            raise NotFound(f"instalment_id: no instalment {instalment_id} in plan {plan_id}")
        await self.store.set_paused(caller, plan_id, instalment_id, paused, now=self.clock.now())
        return await self.get(caller, plan_id)

    async def amend(self, caller: str, plan_id: str, instalment_id: str, amount: int, currency: str) -> InstalmentRow:
        for _ in range(_CAS_TRIES):
            row = self._one(await self.get(caller, plan_id), instalment_id)
            step = transitions.amend(row, amount, currency, self.clock.now())
            if await self.store.save([write(row, step)]):
                return step.after
        raise PreconditionFailed(f"instalment {instalment_id} keeps changing; try again")

    async def close(self, caller: str, plan_id: str, instalment_id: str, closing: Closing) -> PlanRow:
        """Settle (结清) or cancel a plan or one of its instalments; nothing more is attempted."""
        for _ in range(_CAS_TRIES):
            plan = await self.get(caller, plan_id)
            rows = [self._one(plan, instalment_id)] if instalment_id else plan.instalments
            now = self.clock.now()
            writes: list[Write] = []
            for row in rows:
                step = transitions.close(row, closing, now)
                if step is not None:
                    writes.append(write(row, step))
            if not writes or await self.store.save(writes):
                if not instalment_id:
                    status = PlanStatus.SETTLED if closing is Closing.SETTLE else PlanStatus.CANCELLED
                    await self.store.set_plan_status(plan.id, status.value, now=now)
                if any(w.event is not None for w in writes):
                    self.on_outbox()
                return await self.get(caller, plan_id)
        raise PreconditionFailed(f"plan {plan_id} keeps changing; try again")

    @staticmethod
    def _one(plan: PlanRow, instalment_id: str) -> InstalmentRow:
        for row in plan.instalments:
            if row.instalment_id == instalment_id:
                return row
        raise NotFound(f"instalment_id: no instalment {instalment_id} in plan {plan.plan_id}")

    # --- operators: runs -----------------------------------------------------------------

    def schedule(self, policy: str) -> Schedule:
        schedule = self.schedules.get(policy)
        if schedule is None:
            known = ", ".join(sorted(self.schedules)) or "none"
            raise InvalidInput("policy", f"no policy {policy!r} (configured: {known})")
        return schedule

    def run_key(self, policy: str, business_day: date | None, time_point: str) -> RunKey:
        schedule = self.schedule(policy)
        if not schedule.has_time_point(time_point):
            raise InvalidInput("time_point", f"must be one of {', '.join(schedule.policy.labels)} (policy {policy})")
        day = business_day or schedule.calendar.today(self.clock.now())
        return RunKey(policy, day, time_point)

    async def start_run(self, operator: str, key: RunKey) -> RunRow:
        """Start a time point's run by hand (or start it again), as the scheduler would; audited by the caller."""
        schedule = self.schedule(key.policy)
        now = self.clock.now()
        moment = schedule.moment(key.business_day, key.time_point)
        if moment > now:
            raise PreconditionFailed(f"time_point: {key.label()} has not come yet")
        if schedule.in_quiet(now):
            raise PreconditionFailed("now is inside the policy's quiet window: no withholds are sent")
        window = schedule.window(key.business_day, key.time_point)
        # a run started after its window gets a window of the same length from now
        deadline = window.deadline if window.deadline > now else now + (window.deadline - window.start)
        quiet_start = schedule.quiet_start_after(now)
        if quiet_start is not None and quiet_start < deadline:
            deadline = quiet_start
        due = await self.store.due_by_product(key.policy, moment)
        run, created = await self.store.open_run(
            key, scheduled_at=moment, deadline=deadline, started_by=operator, now=now, due=due
        )
        if not created:
            run = await self.store.restart_run(run.id, deadline=deadline, started_by=operator, now=now)
        return run

    async def pause_run(self, key: RunKey) -> RunRow:
        return await self._run_status(key, RunStatus.PAUSED, frozenset({RunStatus.RUNNING, RunStatus.FINISHED}))

    async def resume_run(self, key: RunKey) -> RunRow:
        return await self._run_status(key, RunStatus.RUNNING, frozenset({RunStatus.PAUSED}))

    async def _run_status(self, key: RunKey, status: RunStatus, expect: frozenset[RunStatus]) -> RunRow:
        run = await self.get_run_row(key)
        if run.status is status:
            return run
        if run.status not in expect:
            raise PreconditionFailed(f"run {key.label()} is {run.status.value}")
        if not await self.store.set_run_status(run.id, status, expect=expect, now=self.clock.now()):
            raise PreconditionFailed(f"run {key.label()} changed meanwhile; look again")
        return await self.get_run_row(key)

    async def get_run_row(self, key: RunKey) -> RunRow:
        run = await self.store.run(key)
        if run is None:
            raise NotFound(f"no run {key.label()}")
        return run

    async def progress(self, key: RunKey) -> RunProgress:
        return await self.store.run_progress(await self.get_run_row(key))

    async def list_runs(self, day: date | None, policy: str) -> list[RunProgress]:
        if policy:
            self.schedule(policy)
        if day is None:
            calendar = next(iter(self.schedules.values())).calendar if self.schedules else None
            day = calendar.today(self.clock.now()) if calendar else self.clock.now().date()
        return [await self.store.run_progress(run) for run in await self.store.runs(day=day, policy=policy)]
