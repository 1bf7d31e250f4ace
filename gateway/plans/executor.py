"""The executor: runs each time point's withholds on every replica, together, through the normal withhold path.

One loop per replica (:meth:`PlanExecutor.step`, repeated):

1. **schedule**: for each policy, the time point whose window contains now gets its run
   (``plan_runs``, one row per policy + business day + time point, created by whichever replica
   comes first); operators start runs by hand too (gateway/plans/service.py);
2. **claim**: for each running run, claim due instalments (``SKIP LOCKED``, a lease, a claim
   token) up to the replica's free concurrency; replicas split the work, none takes a row
   another holds;
3. **attempt** (one task per instalment): route it as a withhold would be routed, take a
   rate-limit token from the best-ranked channel that has one (shared buckets: the limit holds
   for all replicas together), then **go**: the compare-and-set CLAIMED → IN_FLIGHT with the
   attempt row, which fails if the instalment was paused, settled or cancelled, or the run paused
   or past its deadline, meanwhile. Only then ``FlowService.withhold`` with the request id
   derived from the instalment and the time point (:func:`gateway.plans.model.withhold_request_id`);
4. **record**: the flow's result decides the instalment's next state (gateway/plans/transitions.py):
   succeeded; retry at the next time point; stopped; written with its event in one commit. A
   withhold still PROCESSING leaves the instalment IN_FLIGHT with its flow; it is never
   attempted again before that flow ends (DESIGN.md invariant 12);
5. **resolve** (every ``resolve_interval_s``): in-flight instalments whose flow has ended are
   recorded; instalments left IN_FLIGHT without a flow by a replica that died are re-driven with
   their recorded request id (a replay if the withhold exists, the withhold if it never got
   sent); claims whose lease ran out go back to SCHEDULED;
6. **close**: a run whose deadline has passed becomes FINISHED, or BEHIND with the count of due
   instalments it did not attempt (they are due at the next time point; the metric
   ``paygate_plan_runs_behind_total`` and the alert say so). Nothing spills silently.

Why no instalment is withheld twice for one time point, whatever crashes: the request id is
fixed by (instalment, business day, time point), so a second sender gets the first sender's
flow; the attempt row is unique on the same three; and a new time point's request id is only
used after the previous withhold's flow has ended.

The clock is injected (gateway/plans/clock.py); tests drive :meth:`step` and :meth:`settle`
themselves with a clock they move.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from channels.contract import Operation
from gateway import metrics
from gateway.domain import FlowStatus
from gateway.errors import DuplicateKey, IdempotencyConflict, NoRoute, PreconditionFailed
from gateway.plans import transitions
from gateway.plans.clock import Clock
from gateway.plans.config import PlansConfig
from gateway.plans.model import (
    ACCOUNT_UNREADABLE,
    NO_AGREEMENT,
    NO_ROUTE,
    REQUEST_ID_CONFLICT,
    AttemptRow,
    AttemptStatus,
    InstalmentRow,
    InstalmentStatus,
    OutcomeKind,
    RunKey,
    RunRow,
    RunStatus,
    withhold_request_id,
)
from gateway.plans.policy import Schedule, Stop, projected_lag_s
from gateway.plans.ports import AgreementLookup, Claimed, FlowResult, PlanStore, Withholder, write
from gateway.plans.ratelimit import RateLimiter
from gateway.plans.routing import RESERVED, Reservation
from gateway.plans.sealing import AccountSealer, SealBroken
from gateway.plans.transitions import Step
from gateway.ports import RoutePlanner
from gateway.splits.allocation import fit, shares_from_json
from gateway.store.rows import FlowRow
from gateway.validation import WithholdParams

log = logging.getLogger(__name__)

_CAS_TRIES = 8
_TOKEN_MARGIN = timedelta(seconds=2)  # a token wait ends this long before the claim's lease


class PlanExecutor:
    def __init__(
        self,
        *,
        store: PlanStore,
        flows: Withholder,
        agreements: AgreementLookup,
        planner: RoutePlanner,
        limiter: RateLimiter,
        config: PlansConfig,
        schedules: Mapping[str, Schedule],
        sealer: AccountSealer,
        clock: Clock,
        owner: str,
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.flows = flows
        self.agreements = agreements
        self.planner = planner
        self.limiter = limiter
        self.config = config
        self.schedules = dict(schedules)
        self.sealer = sealer
        self.clock = clock
        self.owner = owner
        self.on_outbox = on_outbox or (lambda: None)
        self._workers: set[asyncio.Task[None]] = set()
        self._known_runs: dict[RunKey, None] = {}
        self._runs: list[RunRow] = []
        self._next_look: datetime | None = None
        self._next_resolve: datetime | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """End what this replica held before a restart, then run the loop in the background. Idempotent."""
        if self._task is not None:
            return
        self._stopping = False
        released = await self.store.release_owner(self.owner, now=self.clock.now())
        if released:
            log.warning("plan executor took back %d instalments it held before a restart", released)
        self._task = asyncio.create_task(self._loop(), name="plan-executor")

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop claiming; give running attempts ``grace_s``, then cancel them (their leases bring them back)."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        workers = list(self._workers)
        if workers:
            _, late = await asyncio.wait(workers, timeout=grace_s)
            for worker in late:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _loop(self) -> None:
        while not self._stopping:
            busy = False
            try:
                busy = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("plan executor step failed; next try in %.1f s", self.config.tick_s)
            if busy and len(self._workers) < self.config.concurrency:
                continue  # more was claimed than nothing, and there is room: claim again at once
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.tick_s):
                    await self._wake.wait()

    @property
    def in_flight(self) -> int:
        """Attempts this replica is running now."""
        return len(self._workers)

    # --- one step ------------------------------------------------------------------------

    async def step(self) -> bool:
        """Schedule, close, claim and resolve once; True when something was claimed."""
        now = self.clock.now()
        if self._next_look is None or now >= self._next_look:
            self._next_look = now + timedelta(seconds=self.config.tick_s)
            if self.config.scheduler:
                await self.schedule_runs(now)
            self._runs = await self.store.open_runs(now)
            for run in [r for r in self._runs if now >= r.deadline]:
                await self._close(run, now)
            self._runs = [r for r in self._runs if now < r.deadline]
        if self._next_resolve is None or now >= self._next_resolve:
            self._next_resolve = now + timedelta(seconds=self.config.resolve_interval_s)
            await self.resolve(now)
        claimed = False
        for run in self._runs:
            claimed = await self._work(run, now) or claimed
        return claimed

    async def settle(self, *, max_steps: int = 10_000) -> None:
        """Step until nothing is claimed and no attempt runs (tests and the demo: with a clock that stands still)."""
        for _ in range(max_steps):
            self._next_look = None
            self._next_resolve = None
            claimed = await self.step()
            if self._workers:
                await asyncio.wait(list(self._workers))
                continue
            if not claimed:
                return
        raise RuntimeError("plan executor did not settle")

    # --- schedule and close runs -----------------------------------------------------------

    async def schedule_runs(self, now: datetime) -> None:
        for schedule in self.schedules.values():
            window = schedule.current(now)
            if window is None:
                continue
            key = RunKey(schedule.name, window.business_day, window.time_point)
            if key in self._known_runs:
                continue
            if await self.store.run(key) is None:
                due = await self.store.due_by_product(schedule.name, window.start)
                _, created = await self.store.open_run(
                    key, scheduled_at=window.start, deadline=window.deadline, started_by="schedule", now=now, due=due
                )
                if created:
                    log.info("time point run started: %s, %d due", key.label(), sum(due.values()))
                    for product, n in due.items():
                        metrics.PLAN_DUE.labels(
                            product=self.config.product_label(product), time_point=key.time_point
                        ).set(n)
            self._known_runs[key] = None
            while len(self._known_runs) > 256:
                self._known_runs.pop(next(iter(self._known_runs)))

    async def _close(self, run: RunRow, now: datetime) -> None:
        """The deadline passed: FINISHED, or BEHIND with what was left unattempted."""
        if run.status is RunStatus.FINISHED:
            return
        progress = await self.store.run_progress(run)
        remaining = progress.remaining
        status = RunStatus.BEHIND if remaining else RunStatus.FINISHED
        lag = projected_lag_s(
            now=now,
            started_at=run.started_at or run.scheduled_at,
            deadline=run.deadline,
            attempted=progress.attempted,
            remaining=remaining,
        )
        if not await self.store.set_run_status(
            run.id,
            status,
            expect=frozenset({RunStatus.RUNNING, RunStatus.PAUSED}),
            now=now,
            missed=remaining,
            lag_s=lag,
        ):
            return
        for product in run.due_by_product:  # the run is over: what it left is counted in runs_behind
            label = self.config.product_label(product)
            metrics.PLAN_REMAINING.labels(product=label, time_point=run.time_point).set(0)
            metrics.PLAN_RUN_LAG.labels(product=label, time_point=run.time_point).set(0)
        if remaining:
            metrics.PLAN_RUNS_BEHIND.labels(policy=run.policy, time_point=run.time_point).inc()
            log.warning(
                "time point run fell behind: %s left %d due instalments unattempted (about %.0f s behind);"
                " they are due at the next time point / 代扣节点批次未在窗口内完成：%d 笔顺延至下一节点",
                run.key.label(),
                remaining,
                lag,
                remaining,
            )

    # --- claim and attempt -----------------------------------------------------------------

    async def _work(self, run: RunRow, now: datetime) -> bool:
        if run.status is RunStatus.PAUSED or self._stopping or now >= run.deadline:
            return False
        schedule = self.schedules.get(run.policy)
        if schedule is None or schedule.in_quiet(now):
            return False
        free = self.config.concurrency - len(self._workers)
        if free <= 0:
            return True
        batch = await self.store.claim(
            run,
            owner=self.owner,
            limit=min(free, self.config.claim_batch),
            now=now,
            lease_until=now + timedelta(seconds=self.config.lease_s),
        )
        if batch and run.status is RunStatus.FINISHED:
            # something became due again inside the window (e.g. a resumed instalment)
            await self.store.set_run_status(run.id, RunStatus.RUNNING, expect=frozenset({RunStatus.FINISHED}), now=now)
            run.status = RunStatus.RUNNING
        elif not batch and run.status is RunStatus.RUNNING and not self._workers:
            if (await self.store.run_progress(run)).remaining == 0:
                if await self.store.set_run_status(
                    run.id, RunStatus.FINISHED, expect=frozenset({RunStatus.RUNNING}), now=now
                ):
                    log.info("time point run drained: %s", run.key.label())
                run.status = RunStatus.FINISHED
        for claimed in batch:
            self._spawn(self._attempt(run, claimed), f"plan-{claimed.instalment.id}")
        return bool(batch)

    def _spawn(self, work: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work, name=name)
        self._workers.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._workers.discard(t)
            self._wake.set()
            if not t.cancelled() and t.exception() is not None:
                log.error("plan attempt task failed", exc_info=t.exception())

        task.add_done_callback(done)

    async def _attempt(self, run: RunRow, claimed: Claimed) -> None:
        row = claimed.instalment
        schedule = self.schedules[run.policy]
        day, point = run.business_day, run.time_point
        now = self.clock.now()
        if day > row.last_day:
            await self._save(row, transitions.window_passed(row, now))
            return
        if schedule.day_is_full(day=day, attempts_day=row.attempts_day, attempts_on_day=row.attempts_on_day):
            await self._save(row, transitions.next_day(row, schedule, day, now))
            return
        request_id = withhold_request_id(row.id, day, point)
        try:
            account_no = self.sealer.open(claimed.account_sealed, caller=row.caller, plan_id=row.plan_id)
        except SealBroken:
            # the key changed ([security] account_hash_key) or the row was tampered with: never a guess
            log.error("plan %s: the payer's sealed account number does not open; instalment stopped", row.plan_id)
            await self._save(row, transitions.stop(row, Stop(ACCOUNT_UNREADABLE, ACCOUNT_UNREADABLE), now))
            return
        refs = await self.agreements.active_refs(row.caller, claimed.account_hash, claimed.agreement_no)
        if not refs:
            await self._refused(run, row, request_id, NO_AGREEMENT)
            return
        route = await self.planner.plan(
            Operation.WITHHOLD,
            row.amount,
            row.currency,
            claimed.bank_code,
            account_hash=claimed.account_hash,
            agreement_channels=frozenset(refs),
            exclude=frozenset(),
        )
        if not route.candidates:
            await self._refused(run, row, request_id, NO_ROUTE)
            return
        until = run.deadline
        if row.lease_until is not None:
            until = min(until, row.lease_until - _TOKEN_MARGIN)
        channel = await self.limiter.acquire(route.candidates, until=until)
        now = self.clock.now()
        if channel is None or schedule.in_quiet(now):
            if channel is not None:
                self.limiter.give_back(channel)
            await self._save(row, transitions.release(row, now), quiet=True)
            return
        after = transitions.counted(
            dataclasses.replace(
                row,
                status=InstalmentStatus.IN_FLIGHT,
                attempt_request_id=request_id,
                attempt_day=day,
                attempt_time_point=point,
                lease_until=now + timedelta(seconds=self.config.lease_s),
                flow_id=None,
                updated_at=now,
            ),
            day,
        )
        attempt = AttemptRow(
            0, row.id, day, point, request_id, row.amount, row.currency, AttemptStatus.IN_FLIGHT, run_id=run.id
        )
        try:
            went = await self.store.go(claimed, after, attempt, now=now)
        except DuplicateKey:
            # this instalment already has an attempt at this time point (a re-run): never a second one
            self.limiter.give_back(channel)
            await self._save(row, self._skip_time_point(row, schedule, day, point, now), quiet=True)
            return
        if not went:
            self.limiter.give_back(channel)
            # paused, settled or cancelled meanwhile, or the run paused or past its deadline
            await self._save(row, transitions.release(row, self.clock.now()), quiet=True)
            return
        label = self.config.product_label(row.product)
        metrics.PLAN_ATTEMPTS.labels(product=label, time_point=point).inc()
        params = WithholdParams(
            amount=after.amount,
            currency=after.currency,
            account_no=account_no,
            bank_code=claimed.bank_code,
            agreement_no=claimed.agreement_no,
            description=claimed.description or f"instalment {row.instalment_id}"[:128],
            # the instalment's shares, fitted to what is still to collect (it may have been amended down)
            shares=fit(shares_from_json(row.split_shares), after.amount) if row.split_shares else None,
        )
        await self._withhold(after, params, Reservation(channel))

    @staticmethod
    def _skip_time_point(row: InstalmentRow, schedule: Schedule, day: Any, point: str, now: datetime) -> Step:
        following = schedule.next_time_point(day, point)
        step = transitions.release(row, now)
        return Step(dataclasses.replace(step.after, next_attempt_at=schedule.moment(*following)))

    async def _refused(self, run: RunRow, row: InstalmentRow, request_id: str, code: str) -> None:
        """No withhold could be made (no agreement, no route): counted as an attempt that failed with ``code``."""
        now = self.clock.now()
        tried = transitions.counted(
            dataclasses.replace(
                row, attempt_request_id=request_id, attempt_day=run.business_day, attempt_time_point=run.time_point
            ),
            run.business_day,
        )
        step = transitions.after_result(tried, self.schedules[run.policy], succeeded=False, code=code, now=now)
        attempt = AttemptRow(
            0,
            row.id,
            run.business_day,
            run.time_point,
            request_id,
            row.amount,
            row.currency,
            AttemptStatus.FAILED,
            code=code,
            run_id=run.id,
            finished_at=now,
        )
        try:
            saved = await self.store.save([write(row, step, attempt=attempt, new_attempt=True)])
        except DuplicateKey:  # already attempted at this time point: never a second attempt
            schedule = self.schedules[run.policy]
            await self._save(row, self._skip_time_point(row, schedule, run.business_day, run.time_point, now))
            return
        if saved:
            self._count_outcome(step, code)
            self.on_outbox()

    async def _withhold(self, row: InstalmentRow, params: WithholdParams, reservation: Reservation | None) -> None:
        """Send (or replay) the withhold of an IN_FLIGHT instalment and record what came of it."""
        token = RESERVED.set(reservation)
        try:
            flow: FlowRow | None = await self.flows.withhold(
                row.caller, row.attempt_request_id, params, self.config.wait_s
            )
            code = ""
        except IdempotencyConflict:
            flow, code = None, REQUEST_ID_CONFLICT
        except PreconditionFailed:
            flow, code = None, NO_AGREEMENT  # the agreement went away between routing and the withhold
        except NoRoute:
            flow, code = None, NO_ROUTE
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # the database or the flow path failed: the instalment stays IN_FLIGHT and is re-driven with the
            # same request id once its lease ends (a replay if the withhold was made)
            log.warning(
                "plan withhold %s did not complete (%s); re-driven after its lease",
                row.attempt_request_id,
                type(exc).__name__,
            )
            return
        finally:
            RESERVED.reset(token)
        if flow is None:
            await self.record(row, None, code)
        else:
            await self.record(row, _result_of(flow), "")

    async def record(self, row: InstalmentRow, result: FlowResult | None, code: str) -> None:
        """Record the result of an IN_FLIGHT instalment's withhold (``result`` None: refused with ``code``)."""
        schedule = self.schedules.get(row.policy)
        if schedule is None:
            log.error("instalment %s has policy %r, which is not configured", row.id, row.policy)
            return
        for _ in range(_CAS_TRIES):
            now = self.clock.now()
            if result is not None and result.status is FlowStatus.PROCESSING:
                if row.flow_id == result.flow_id:
                    return
                attempt = self._attempt_row(row, AttemptStatus.IN_FLIGHT, "", result, None)
                step = transitions.track(row, result.flow_id, now)
            else:
                succeeded = result is not None and result.status is FlowStatus.SUCCEEDED
                failure = code if result is None else ("" if succeeded else result.failure_code or "FAILED")
                step = transitions.after_result(
                    row,
                    schedule,
                    succeeded=succeeded,
                    code=failure,
                    now=now,
                    flow_id=result.flow_id if result else None,
                    flow_no=result.flow_no if result else "",
                )
                status = AttemptStatus.SUCCEEDED if succeeded else AttemptStatus.FAILED
                attempt = self._attempt_row(row, status, failure, result, now)
            if await self.store.save([write(row, step, attempt=attempt)]):
                if step.event is not None:
                    self._count_outcome(step, step.event.code)
                    self.on_outbox()
                return
            fresh = await self.store.instalment(row.id)
            if (
                fresh is None
                or fresh.status is not InstalmentStatus.IN_FLIGHT
                or fresh.attempt_request_id != row.attempt_request_id
            ):
                return  # someone else recorded it
            row = fresh
        log.error("instalment %s: could not record its withhold's result after %d tries", row.id, _CAS_TRIES)

    @staticmethod
    def _attempt_row(
        row: InstalmentRow, status: AttemptStatus, code: str, result: FlowResult | None, now: datetime | None
    ) -> AttemptRow:
        assert row.attempt_day is not None
        return AttemptRow(
            0,
            row.id,
            row.attempt_day,
            row.attempt_time_point,
            row.attempt_request_id,
            row.amount,
            row.currency,
            status,
            code=code,
            flow_id=result.flow_id if result else None,
            flow_no=result.flow_no if result else "",
            channel=result.channel if result else "",
            finished_at=now,
        )

    async def _save(self, row: InstalmentRow, step: Step, *, quiet: bool = False) -> bool:
        saved = await self.store.save([write(row, step)])
        if saved and step.event is not None:
            self._count_outcome(step, step.event.code)
            self.on_outbox()
        elif not saved and not quiet:
            log.info("instalment %s changed meanwhile; left as it is", row.id)
        return saved

    def _count_outcome(self, step: Step, code: str) -> None:
        event = step.event
        if event is None:
            return
        row = step.after
        label = self.config.product_label(row.product)
        metrics.PLAN_OUTCOMES.labels(product=label, outcome=event.kind.value.lower()).inc()
        point = event.time_point or "-"
        if event.kind is OutcomeKind.SUCCEEDED:
            metrics.PLAN_SUCCEEDED.labels(product=label, time_point=point).inc()
            metrics.PLAN_SUCCEEDED_AMOUNT.labels(product=label, time_point=point, currency=row.currency).inc(row.amount)
        elif event.time_point and code:
            metrics.PLAN_FAILED.labels(product=label, time_point=point, reason=code).inc()

    # --- resolve ---------------------------------------------------------------------------

    async def resolve(self, now: datetime) -> None:
        """Record ended withholds, re-drive orphans, release claims whose lease ran out."""
        released = await self.store.release_expired_claims(now)
        if released:
            log.info("%d plan claims returned after their lease ran out", released)
        for row, result in await self.store.resolvable(500):
            await self.record(row, result, "")
        room = self.config.concurrency - len(self._workers)
        if room <= 0 or self._stopping:
            return
        for claimed in await self.store.claim_orphans(
            owner=self.owner, now=now, lease_until=now + timedelta(seconds=self.config.lease_s), limit=room
        ):
            self._spawn(self._redrive(claimed), f"plan-redrive-{claimed.instalment.id}")

    async def _redrive(self, claimed: Claimed) -> None:
        """An IN_FLIGHT instalment whose replica died before recording a flow: send or replay its withhold."""
        row = claimed.instalment
        schedule = self.schedules.get(row.policy)
        if schedule is not None and schedule.in_quiet(self.clock.now()):
            return  # its lease brings it back after the quiet window
        log.warning("re-driving plan withhold %s left in flight by a replica that stopped", row.attempt_request_id)
        params = WithholdParams(
            amount=row.amount,
            currency=row.currency,
            account_no=self.sealer.open(claimed.account_sealed, caller=row.caller, plan_id=row.plan_id),
            bank_code=claimed.bank_code,
            agreement_no=claimed.agreement_no,
            description=claimed.description or f"instalment {row.instalment_id}"[:128],
        )
        await self._withhold(row, params, None)

    # --- metrics ---------------------------------------------------------------------------

    async def sample_metrics(self) -> None:
        """Due, remaining and lag per product and time point of the runs still open (database view)."""
        now = self.clock.now()
        for run in await self.store.runs(statuses=frozenset({RunStatus.RUNNING, RunStatus.PAUSED})):
            progress = await self.store.run_progress(run)
            lag = projected_lag_s(
                now=now,
                started_at=run.started_at or run.scheduled_at,
                deadline=run.deadline,
                attempted=progress.attempted,
                remaining=progress.remaining,
            )
            await self.store.set_run_lag(run.id, lag)
            remaining = await self.store.remaining_by_product(run)
            for product in {*remaining, *run.due_by_product}:
                label = self.config.product_label(product)
                metrics.PLAN_DUE.labels(product=label, time_point=run.time_point).set(
                    run.due_by_product.get(product, 0)
                )
                metrics.PLAN_REMAINING.labels(product=label, time_point=run.time_point).set(remaining.get(product, 0))
                metrics.PLAN_RUN_LAG.labels(product=label, time_point=run.time_point).set(
                    lag if remaining.get(product) else 0.0
                )


def _result_of(flow: FlowRow) -> FlowResult:
    return FlowResult(flow.id, flow.flow_no, flow.status, flow.failure_code, flow.channel)
