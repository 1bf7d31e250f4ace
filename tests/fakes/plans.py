"""In-memory fakes of the plan ports: the plan store, the withhold use case, agreements and routing.

:class:`FakePlanStore` keeps the contracts of ``gateway.plans.ports.PlanStore`` (idempotent
submission, one claimer per row, ``go`` and ``save`` as compare-and-sets on the same guard,
``UNIQUE(instalment, day, time point)`` on attempts); :class:`FakeWithholder` is idempotent per
(caller, request id) like ``FlowService.withhold`` and counts the debits it made.
"""

from __future__ import annotations

import dataclasses
import itertools
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from gateway.domain import FlowKind, FlowStatus
from gateway.errors import DuplicateKey, IdempotencyConflict
from gateway.planner import Plan
from gateway.plans.model import (
    AttemptRow,
    AttemptStatus,
    InstalmentRow,
    InstalmentStatus,
    PlanRow,
    PlanStatus,
    RunKey,
    RunProgress,
    RunRow,
    RunStatus,
)
from gateway.plans.ports import Claimed, DayFigures, FlowResult, OutboxEvent, Submitted, Write
from gateway.plans.ratelimit import Bucket, Grant, take
from gateway.plans.spec import NewPlan, RejectCode, Rejection
from gateway.store.rows import FlowRow
from gateway.validation import WithholdParams


def _guard(row: InstalmentRow) -> tuple[Any, ...]:
    return (row.status, row.event_seq, row.claim_token, row.attempt_request_id, row.closing)


@dataclass
class _Plan:
    row: PlanRow
    sealed: bytes
    account_hash: str
    request_hash: str


class FakePlanStore:
    def __init__(self, flows: FakeWithholder | None = None) -> None:
        self.flows = flows
        self.plans: dict[tuple[str, str], _Plan] = {}
        self.instalments: dict[int, InstalmentRow] = {}
        self.hashes: dict[int, str] = {}
        self.attempts: list[AttemptRow] = []
        self.runs_by_id: dict[int, RunRow] = {}
        self.outbox: list[OutboxEvent] = []
        self.buckets: dict[str, Bucket] = {}
        self._ids = itertools.count(1)

    # --- submission and reads ----------------------------------------------------------

    async def submit(self, caller: str, plans: Sequence[NewPlan], *, now: datetime) -> Submitted:
        accepted = new = replayed = 0
        rejected: list[Rejection] = []
        for p in plans:
            stored = self.plans.get((caller, p.plan_id))
            if stored is None:
                row = PlanRow(
                    next(self._ids),
                    caller,
                    p.plan_id,
                    p.product,
                    p.policy,
                    PlanStatus.ACTIVE,
                    False,
                    p.account_masked,
                    p.payer.bank_code,
                    p.payer.agreement_no,
                    p.description,
                    now,
                    now,
                )
                stored = self.plans[(caller, p.plan_id)] = _Plan(row, p.account_sealed, p.account_hash, p.request_hash)
            elif stored.request_hash != p.request_hash:
                rejected.append(
                    Rejection(p.plan_id, "", f"{p.field}.plan_id", "other parameters", RejectCode.ALREADY_EXISTS)
                )
                continue
            accepted += 1
            for item in p.instalments:
                existing = next(
                    (
                        i
                        for i in self.instalments.values()
                        if (i.caller, i.instalment_id) == (caller, item.instalment_id)
                    ),
                    None,
                )
                if existing is not None:
                    if self.hashes[existing.id] == item.request_hash and existing.plan_ref == stored.row.id:
                        replayed += 1
                    else:
                        rejected.append(
                            Rejection(
                                p.plan_id,
                                item.instalment_id,
                                f"{item.field}.instalment_id",
                                "other parameters",
                                RejectCode.ALREADY_EXISTS,
                            )
                        )
                    continue
                row_id = next(self._ids)
                self.instalments[row_id] = InstalmentRow(
                    row_id,
                    stored.row.id,
                    caller,
                    p.plan_id,
                    item.instalment_id,
                    p.product,
                    p.policy,
                    item.due_date,
                    item.last_day,
                    item.amount,
                    item.amount,
                    item.currency,
                    InstalmentStatus.SCHEDULED,
                    next_attempt_at=item.first_due,
                    created_at=now,
                    updated_at=now,
                )
                self.hashes[row_id] = item.request_hash
                new += 1
        return Submitted(accepted, new, replayed, rejected)

    async def plan(self, caller: str, plan_id: str, *, with_attempts: bool = False) -> PlanRow | None:
        stored = self.plans.get((caller, plan_id))
        if stored is None:
            return None
        row = dataclasses.replace(stored.row)
        row.instalments = sorted(
            (dataclasses.replace(i, attempt_rows=[]) for i in self.instalments.values() if i.plan_ref == row.id),
            key=lambda i: (i.due_date, i.id),
        )
        if with_attempts:
            for i in row.instalments:
                i.attempt_rows = [a for a in self.attempts if a.instalment_ref == i.id]
        return row

    async def instalment(self, row_id: int) -> InstalmentRow | None:
        row = self.instalments.get(row_id)
        return dataclasses.replace(row) if row else None

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
        rows = sorted(
            (
                i
                for i in self.instalments.values()
                if i.caller == caller
                and (due_from is None or i.due_date >= due_from)
                and (due_to is None or i.due_date <= due_to)
                and (not statuses or i.status in statuses)
                and (not plan_id or i.plan_id == plan_id)
                and (after is None or (i.due_date, i.id) > after)
            ),
            key=lambda i: (i.due_date, i.id),
        )
        return [dataclasses.replace(i) for i in rows[:limit]]

    async def set_paused(self, caller: str, plan_id: str, instalment_id: str, paused: bool, *, now: datetime) -> bool:
        stored = self.plans.get((caller, plan_id))
        if stored is None:
            return False
        for row in self.instalments.values():
            if row.plan_ref != stored.row.id:
                continue
            if instalment_id and row.instalment_id == instalment_id:
                row.paused = paused
            elif not instalment_id:
                row.plan_paused = paused
        if not instalment_id:
            stored.row.paused = paused
        return True

    async def set_plan_status(self, plan_ref: int, status: str, *, now: datetime) -> None:
        for stored in self.plans.values():
            if stored.row.id == plan_ref:
                stored.row.status = PlanStatus(status)

    async def save(self, writes: Sequence[Write]) -> bool:
        for w in writes:
            current = self.instalments.get(w.before.id)
            if current is None or _guard(current) != _guard(w.before):
                return False
            if w.attempt is not None and w.new_attempt:
                self._check_unique(w.attempt)
        for w in writes:
            current = self.instalments[w.before.id]
            after = dataclasses.replace(
                w.after, paused=current.paused, plan_paused=current.plan_paused, attempt_rows=[]
            )
            self.instalments[w.before.id] = after
            if w.attempt is not None:
                if w.new_attempt:
                    self.attempts.append(dataclasses.replace(w.attempt, id=next(self._ids)))
                else:
                    for i, a in enumerate(self.attempts):
                        if a.instalment_ref == w.attempt.instalment_ref and a.request_id == w.attempt.request_id:
                            self.attempts[i] = dataclasses.replace(
                                a,
                                status=w.attempt.status,
                                code=w.attempt.code,
                                flow_id=w.attempt.flow_id,
                                channel=w.attempt.channel,
                                finished_at=w.attempt.finished_at,
                            )
            if w.event is not None:
                if any(e.dedupe_key == w.event.dedupe_key for e in self.outbox):
                    raise DuplicateKey("uq_outbox_dedupe", "duplicate event")
                self.outbox.append(w.event)
        return True

    def _check_unique(self, attempt: AttemptRow) -> None:
        key = (attempt.instalment_ref, attempt.business_day, attempt.time_point)
        if any((a.instalment_ref, a.business_day, a.time_point) == key for a in self.attempts):
            raise DuplicateKey("uq_attempts_instalment_point", "duplicate attempt")

    # --- runs ---------------------------------------------------------------------------

    async def open_run(
        self,
        key: RunKey,
        *,
        scheduled_at: datetime,
        deadline: datetime,
        started_by: str,
        now: datetime,
        due: dict[str, int],
    ) -> tuple[RunRow, bool]:
        existing = await self.run(key)
        if existing is not None:
            return existing, False
        run = RunRow(
            next(self._ids),
            key.policy,
            key.business_day,
            key.time_point,
            scheduled_at,
            deadline,
            RunStatus.RUNNING,
            started_by,
            dict(due),
            started_at=now,
        )
        self.runs_by_id[run.id] = run
        return dataclasses.replace(run), True

    async def restart_run(self, run_id: int, *, deadline: datetime, started_by: str, now: datetime) -> RunRow:
        run = self.runs_by_id[run_id]
        run.status, run.deadline, run.started_by, run.started_at = RunStatus.RUNNING, deadline, started_by, now
        run.finished_at, run.missed, run.lag_s = None, 0, 0.0
        return dataclasses.replace(run)

    async def set_run_status(
        self,
        run_id: int,
        status: RunStatus,
        *,
        expect: frozenset[RunStatus],
        now: datetime,
        missed: int = 0,
        lag_s: float = 0.0,
    ) -> bool:
        run = self.runs_by_id[run_id]
        if run.status not in expect:
            return False
        run.status, run.missed, run.lag_s = status, missed, lag_s
        run.finished_at = now if status in (RunStatus.FINISHED, RunStatus.BEHIND) else None
        return True

    async def set_run_lag(self, run_id: int, lag_s: float) -> None:
        self.runs_by_id[run_id].lag_s = lag_s

    async def run(self, key: RunKey) -> RunRow | None:
        for run in self.runs_by_id.values():
            if run.key == key:
                return dataclasses.replace(run)
        return None

    async def runs(
        self, *, statuses: frozenset[RunStatus] | None = None, day: date | None = None, policy: str = ""
    ) -> list[RunRow]:
        return [
            dataclasses.replace(r)
            for r in self.runs_by_id.values()
            if (not statuses or r.status in statuses)
            and (day is None or r.business_day == day)
            and (not policy or r.policy == policy)
        ]

    async def open_runs(self, now: datetime) -> list[RunRow]:
        return [
            dataclasses.replace(r)
            for r in self.runs_by_id.values()
            if r.status in (RunStatus.RUNNING, RunStatus.PAUSED)
            or (r.status is RunStatus.FINISHED and r.deadline > now)
        ]

    def _remaining(self, policy: str, moment: datetime) -> list[InstalmentRow]:
        return [
            i
            for i in self.instalments.values()
            if i.policy == policy
            and i.status in (InstalmentStatus.SCHEDULED, InstalmentStatus.CLAIMED)
            and not i.held
            and i.next_attempt_at is not None
            and i.next_attempt_at <= moment
        ]

    async def due_by_product(self, policy: str, moment: datetime) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in self._remaining(policy, moment):
            out[i.product] = out.get(i.product, 0) + 1
        return out

    async def remaining_by_product(self, run: RunRow) -> dict[str, int]:
        return await self.due_by_product(run.policy, run.scheduled_at)

    async def run_progress(self, run: RunRow) -> RunProgress:
        progress = RunProgress(run)
        for a in self.attempts:
            if a.run_id != run.id:
                continue
            progress.attempted += 1
            if a.status is AttemptStatus.SUCCEEDED:
                progress.succeeded += 1
                progress.succeeded_amounts[a.currency] = progress.succeeded_amounts.get(a.currency, 0) + a.amount
            elif a.status is AttemptStatus.FAILED:
                progress.failed[a.code] = progress.failed.get(a.code, 0) + 1
            else:
                progress.in_flight += 1
        progress.remaining = len(self._remaining(run.policy, run.scheduled_at))
        return progress

    # --- the executor ---------------------------------------------------------------------

    def _claimed(self, row: InstalmentRow) -> Claimed:
        stored = next(p for p in self.plans.values() if p.row.id == row.plan_ref)
        return Claimed(
            dataclasses.replace(row),
            stored.sealed,
            stored.account_hash,
            stored.row.bank_code,
            stored.row.agreement_no,
            stored.row.description,
        )

    async def claim(
        self, run: RunRow, *, owner: str, limit: int, now: datetime, lease_until: datetime
    ) -> list[Claimed]:
        token = secrets.token_hex(8)
        due = sorted(
            (
                i
                for i in self.instalments.values()
                if i.policy == run.policy
                and i.status is InstalmentStatus.SCHEDULED
                and not i.held
                and i.next_attempt_at is not None
                and i.next_attempt_at <= run.scheduled_at
            ),
            key=lambda i: (i.next_attempt_at, i.id),
        )[:limit]
        for i in due:
            i.status, i.run_id, i.claim_owner, i.claim_token, i.lease_until = (
                InstalmentStatus.CLAIMED,
                run.id,
                owner,
                token,
                lease_until,
            )
        return [self._claimed(i) for i in due]

    async def go(self, claimed: Claimed, after: InstalmentRow, attempt: AttemptRow, *, now: datetime) -> bool:
        before = claimed.instalment
        current = self.instalments.get(before.id)
        run = self.runs_by_id.get(before.run_id or 0)
        if (
            current is None
            or current.status is not InstalmentStatus.CLAIMED
            or current.claim_token != before.claim_token
            or current.held
            or current.closing.value
            or run is None
            or run.status not in (RunStatus.RUNNING, RunStatus.FINISHED)
            or run.deadline <= now
        ):
            return False
        self._check_unique(attempt)
        self.instalments[before.id] = dataclasses.replace(
            after, paused=current.paused, plan_paused=current.plan_paused, attempt_rows=[]
        )
        self.attempts.append(dataclasses.replace(attempt, id=next(self._ids), created_at=now))
        return True

    async def resolvable(self, limit: int) -> list[tuple[InstalmentRow, FlowResult]]:
        out = []
        assert self.flows is not None
        for i in self.instalments.values():
            if i.status is InstalmentStatus.IN_FLIGHT and i.flow_id is not None:
                flow = self.flows.by_id[i.flow_id]
                if flow.status is not FlowStatus.PROCESSING:
                    out.append(
                        (dataclasses.replace(i), FlowResult(flow.id, flow.flow_no, flow.status, flow.failure_code, "f"))
                    )
        return out[:limit]

    async def claim_orphans(self, *, owner: str, now: datetime, lease_until: datetime, limit: int) -> list[Claimed]:
        out = []
        for i in self.instalments.values():
            if (
                i.status is InstalmentStatus.IN_FLIGHT
                and i.flow_id is None
                and i.lease_until is not None
                and i.lease_until < now
                and len(out) < limit
            ):
                i.claim_owner, i.lease_until = owner, lease_until
                out.append(self._claimed(i))
        return out

    async def release_expired_claims(self, now: datetime) -> int:
        n = 0
        for i in self.instalments.values():
            if i.status is InstalmentStatus.CLAIMED and i.lease_until is not None and i.lease_until < now:
                i.status, i.run_id, i.claim_owner, i.claim_token, i.lease_until = (
                    InstalmentStatus.SCHEDULED,
                    None,
                    "",
                    "",
                    None,
                )
                n += 1
        return n

    async def release_owner(self, owner: str, *, now: datetime) -> int:
        n = 0
        for i in self.instalments.values():
            if i.claim_owner != owner:
                continue
            if i.status is InstalmentStatus.CLAIMED:
                i.status, i.run_id, i.claim_owner, i.claim_token, i.lease_until = (
                    InstalmentStatus.SCHEDULED,
                    None,
                    "",
                    "",
                    None,
                )
                n += 1
            elif i.status is InstalmentStatus.IN_FLIGHT and i.flow_id is None:
                i.lease_until = now - timedelta(microseconds=1)
                n += 1
        return n

    async def take_tokens(self, channel: str, *, want: int, rate: float, capacity: float, now: datetime) -> Grant:
        grant = take(self.buckets.get(channel, Bucket(capacity, now)), now=now, rate=rate, capacity=capacity, want=want)
        self.buckets[channel] = grant.bucket
        return grant

    async def daily_figures(self, day: date) -> list[DayFigures]:
        return []


# --- the withhold path -------------------------------------------------------------------------


def sandbox_fate(params: WithholdParams) -> tuple[FlowStatus, str]:
    """Like the sandbox's magic amounts: ..01 insufficient funds, ..02 frozen, ..05 pending, else success."""
    cents = params.amount % 100
    if cents == 1:
        return FlowStatus.FAILED, "INSUFFICIENT_FUNDS"
    if cents == 2:
        return FlowStatus.FAILED, "ACCOUNT_FROZEN"
    if cents == 5:
        return FlowStatus.PROCESSING, ""
    return FlowStatus.SUCCEEDED, ""


@dataclass
class FakeWithholder:
    """``FlowService.withhold`` in memory: one flow per (caller, request id); ``debits`` counts money taken."""

    fate: Callable[[WithholdParams], tuple[FlowStatus, str]] = sandbox_fate
    by_key: dict[tuple[str, str], FlowRow] = field(default_factory=dict)
    by_id: dict[int, FlowRow] = field(default_factory=dict)
    params: dict[int, WithholdParams] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    crash_on: set[str] = field(default_factory=set)  # request ids whose first call raises after recording

    async def withhold(self, caller: str, request_id: str, params: WithholdParams, wait_s: float) -> FlowRow:
        self.calls.append(request_id)
        existing = self.by_key.get((caller, request_id))
        if existing is not None:
            if self.params[existing.id] != params:
                raise IdempotencyConflict(f"request_id {request_id} was already used with different parameters")
            return dataclasses.replace(existing, replayed=True)
        status, code = self.fate(params)
        flow = FlowRow(
            len(self.by_id) + 1,
            f"F{len(self.by_id) + 1:025d}",
            caller,
            request_id,
            FlowKind.WITHHOLD,
            params.amount,
            params.currency,
            "h",
            status,
            failure_code=code,
            channel="bank-a",
        )
        self.by_key[(caller, request_id)] = flow
        self.by_id[flow.id] = flow
        self.params[flow.id] = params
        if request_id in self.crash_on:
            self.crash_on.discard(request_id)
            raise ConnectionError("the process died right after the flow was recorded")
        return dataclasses.replace(flow)

    def settle(self, flow_id: int, status: FlowStatus, code: str = "") -> None:
        """A PROCESSING flow ends (a poll or a callback)."""
        flow = self.by_id[flow_id]
        flow.status, flow.failure_code = status, code

    @property
    def debits(self) -> dict[str, int]:
        """request id -> debits made (at most one per flow, by construction of the flow path)."""
        return {f.request_id: 1 for f in self.by_id.values() if f.status is FlowStatus.SUCCEEDED}


class FakeAgreements:
    def __init__(self) -> None:
        self.revoked: set[str] = set()

    async def active_refs(self, caller: str, account_hash: str, agreement_no: str = "") -> dict[str, str]:
        return {} if account_hash in self.revoked else {"bank-a": "agr-a", "bank-b": "agr-b"}


class FakeRoutePlanner:
    """Routing for plan withholds: every agreement channel, in name order."""

    async def plan(self, operation: Any, amount: int, currency: str, bank_code: str, **kw: Any) -> Plan:
        channels = sorted(kw.get("agreement_channels") or ())
        return Plan(channels, None, "best_score")
