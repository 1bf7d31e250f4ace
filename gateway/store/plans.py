"""Withholding plans in MySQL: every statement on ``plans``, ``instalments``, ``instalment_attempts``,
``plan_runs`` and ``plan_rate_buckets`` (and the outbox rows of instalment events) is here.

The contracts are those of :class:`gateway.plans.ports.PlanStore`. How they hold here:

* **submission**: multi-row ``INSERT ... ON DUPLICATE KEY UPDATE id = id`` (a key that exists is
  left exactly as it was) inside one transaction per message, then the existing rows' request
  hashes are compared; only when some keys existed are they read back, so a fresh loan book
  costs one statement per thousand instalments;
* **claims**: ``SELECT ... ORDER BY next_attempt_at, id LIMIT n FOR UPDATE SKIP LOCKED`` on
  ``ix_instalments_due`` (policy, status, next_attempt_at), then the claimed rows get the claim
  token and the lease in the same transaction: concurrent claimers pass each other's rows;
* **go** and **save** are compare-and-sets run as one checked script (``Tx.script_commit_if``):
  the instalment's UPDATE must change exactly one row, else the whole transaction, attempt row
  and outbox row included, rolls back in the same round trip;
* **rate buckets**: ``SELECT ... FOR UPDATE`` of the channel's row, the arithmetic of
  :func:`gateway.plans.ratelimit.take`, the UPDATE and COMMIT in one more round trip.

Times are naive UTC; ``now`` always comes from the caller's clock (tests move it).
"""

from __future__ import annotations

import json
import re
import secrets
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pymysql.converters import escape_string

from gateway.domain import FlowStatus
from gateway.errors import CountMismatch, DuplicateKey
from gateway.plans.events import EVENT_TYPE
from gateway.plans.model import (
    AttemptRow,
    AttemptStatus,
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
from gateway.plans.ports import Claimed, DayFigures, FlowResult, OutboxEvent, Submitted, Write
from gateway.plans.ratelimit import Bucket, Grant, take
from gateway.plans.spec import NewInstalment, NewPlan, RejectCode, Rejection
from gateway.store.db import Database, Tx

_INSERT_CHUNK = 1000
_IN_CHUNK = 5000

_PLAN_COLUMNS = (
    "caller, plan_id, product, policy, status, paused, account_sealed, account_hash, account_masked,"
    " bank_code, agreement_no, description, request_hash, created_at, updated_at"
)
_INSTALMENT_INSERT_COLUMNS = (
    "plan_ref, caller, plan_id, instalment_id, product, policy, due_date, last_day, amount, original_amount,"
    " currency, status, plan_paused, next_attempt_at, request_hash, created_at, updated_at, split_shares"
)
# what a Write puts back (everything a transition may change; pause flags are set on their own)
_WRITE_BACK = (
    "status",
    "closing",
    "next_attempt_at",
    "attempts",
    "attempts_day",
    "attempts_on_day",
    "last_code",
    "stop_reason",
    "run_id",
    "claim_owner",
    "claim_token",
    "lease_until",
    "attempt_request_id",
    "attempt_day",
    "attempt_time_point",
    "flow_id",
    "event_seq",
    "amount",
    "updated_at",
    "finished_at",
)
_GUARD = "id=%s AND status=%s AND event_seq=%s AND claim_token=%s AND attempt_request_id=%s AND closing=%s"
_WRITE_SQL = (
    "UPDATE instalments SET " + ", ".join(f"{c}=%s" for c in _WRITE_BACK) + ", version=version+1 WHERE " + _GUARD
)
_ATTEMPT_INSERT = (
    "INSERT INTO instalment_attempts (instalment_ref, run_id, business_day, time_point, request_id, amount, currency,"
    " status, code, flow_id, channel, created_at, finished_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
    " %s, %s)"
)
_ATTEMPT_UPDATE = (
    "UPDATE instalment_attempts SET status=%s, code=%s, flow_id=%s, channel=%s, finished_at=%s"
    " WHERE instalment_ref=%s AND request_id=%s"
)
_OUTBOX_INSERT = (
    "INSERT INTO outbox (event_id, event_type, flow_id, caller, msg_key, payload, created_at, dedupe_key)"
    " VALUES (%s, %s, %s, %s, %s, %s, UTC_TIMESTAMP(6), %s)"
)
_CLAIMABLE = "status='SCHEDULED' AND paused=0 AND plan_paused=0"
_REMAINING = "status IN ('SCHEDULED','CLAIMED') AND paused=0 AND plan_paused=0"
_PLAN_OF = "SELECT id, account_sealed, account_hash, bank_code, agreement_no, description FROM plans WHERE id IN "


_SAFE = re.compile(r"[A-Za-z0-9._:-]*")


def _literal(text: str) -> str:
    """``text`` as a quoted SQL string literal."""
    if _SAFE.fullmatch(text):
        return f"'{text}'"
    return "'" + escape_string(text) + "'"


def _marks(n: int) -> str:
    return ",".join(["%s"] * n)


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _instalment(row: dict[str, Any]) -> InstalmentRow:
    return InstalmentRow(
        id=int(row["id"]),
        plan_ref=int(row["plan_ref"]),
        caller=row["caller"],
        plan_id=row["plan_id"],
        instalment_id=row["instalment_id"],
        product=row["product"],
        policy=row["policy"],
        due_date=row["due_date"],
        last_day=row["last_day"],
        amount=int(row["amount"]),
        original_amount=int(row["original_amount"]),
        currency=row["currency"],
        status=InstalmentStatus(row["status"]),
        paused=bool(row["paused"]),
        plan_paused=bool(row["plan_paused"]),
        closing=Closing(row["closing"]),
        next_attempt_at=row["next_attempt_at"],
        attempts=int(row["attempts"]),
        attempts_day=row["attempts_day"],
        attempts_on_day=int(row["attempts_on_day"]),
        last_code=row["last_code"],
        stop_reason=row["stop_reason"],
        run_id=row["run_id"],
        claim_owner=row["claim_owner"],
        claim_token=row["claim_token"],
        lease_until=row["lease_until"],
        attempt_request_id=row["attempt_request_id"],
        attempt_day=row["attempt_day"],
        attempt_time_point=row["attempt_time_point"],
        flow_id=row["flow_id"],
        event_seq=int(row["event_seq"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        split_shares=row.get("split_shares"),
    )


def _plan(row: dict[str, Any]) -> PlanRow:
    return PlanRow(
        id=int(row["id"]),
        caller=row["caller"],
        plan_id=row["plan_id"],
        product=row["product"],
        policy=row["policy"],
        status=PlanStatus(row["status"]),
        paused=bool(row["paused"]),
        account_masked=row["account_masked"],
        bank_code=row["bank_code"],
        agreement_no=row["agreement_no"],
        description=row["description"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _run(row: dict[str, Any]) -> RunRow:
    due = row.get("due_by_product")
    if isinstance(due, str | bytes):
        due = json.loads(due)
    return RunRow(
        id=int(row["id"]),
        policy=row["policy"],
        business_day=row["business_day"],
        time_point=row["time_point"],
        scheduled_at=row["scheduled_at"],
        deadline=row["deadline"],
        status=RunStatus(row["status"]),
        started_by=row["started_by"],
        due_by_product={str(k): int(v) for k, v in (due or {}).items()},
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        lag_s=float(row["lag_s"]),
        missed=int(row["missed"]),
    )


def _attempt(row: dict[str, Any]) -> AttemptRow:
    return AttemptRow(
        id=int(row["id"]),
        instalment_ref=int(row["instalment_ref"]),
        business_day=row["business_day"],
        time_point=row["time_point"],
        request_id=row["request_id"],
        amount=int(row["amount"]),
        currency=row["currency"],
        status=AttemptStatus(row["status"]),
        code=row["code"],
        flow_id=row["flow_id"],
        flow_no=row.get("flow_no") or "",
        channel=row["channel"],
        run_id=row["run_id"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )


def _write_args(after: InstalmentRow, before: InstalmentRow) -> list[Any]:
    values = [getattr(after, c) for c in _WRITE_BACK]
    values = [v.value if isinstance(v, InstalmentStatus | Closing) else v for v in values]
    guard = [
        before.id,
        before.status.value,
        before.event_seq,
        before.claim_token,
        before.attempt_request_id,
        before.closing.value,
    ]
    return values + guard


def _attempt_insert(a: AttemptRow, now: datetime) -> tuple[str, list[Any]]:
    return _ATTEMPT_INSERT, [
        a.instalment_ref,
        a.run_id,
        a.business_day,
        a.time_point,
        a.request_id,
        a.amount,
        a.currency,
        a.status.value,
        a.code,
        a.flow_id,
        a.channel,
        a.created_at or now,
        a.finished_at,
    ]


def _outbox(event: OutboxEvent, caller: str) -> tuple[str, list[Any]]:
    e = event.event
    return _OUTBOX_INSERT, [
        e.event_id,
        EVENT_TYPE,
        event.flow_id,
        caller,
        event.msg_key,
        e.SerializeToString(),
        event.dedupe_key,
    ]


class MySQLPlanStore:
    """The MySQL :class:`gateway.plans.ports.PlanStore`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- submission ----------------------------------------------------------------------

    async def submit(self, caller: str, plans: Sequence[NewPlan], *, now: datetime) -> Submitted:
        rejected: list[Rejection] = []
        accepted = 0
        async with self.db.transaction() as tx:
            refs = await self._upsert_plans(tx, caller, plans, now)
            open_rows: list[tuple[NewPlan, NewInstalment]] = []
            closed_rows: list[tuple[NewPlan, NewInstalment]] = []
            for plan in plans:
                ref, stored_hash, status = refs[plan.plan_id]
                if stored_hash != plan.request_hash:
                    rejected.append(
                        Rejection(
                            plan.plan_id,
                            "",
                            f"{plan.field}.plan_id",
                            "was already used with other parameters (product, account, bank, agreement or"
                            " description); use a new plan_id for a new plan",
                            RejectCode.ALREADY_EXISTS,
                            instalments=len(plan.instalments),
                        )
                    )
                    continue
                accepted += 1
                target = open_rows if status == PlanStatus.ACTIVE.value else closed_rows
                target.extend((plan, item) for item in plan.instalments)
            inserted = 0
            for chunk in _chunks(open_rows, _INSERT_CHUNK):
                inserted += await self._insert_instalments(tx, caller, chunk, refs, now)
            # only when some keys existed (or the plan is closed) are the stored rows read back
            check = [*(open_rows if inserted < len(open_rows) else []), *closed_rows]
            found = await self._existing_instalments(tx, caller, [item.instalment_id for _, item in check])
            matched = 0
            for plan, item in check:
                ref, _, status = refs[plan.plan_id]
                stored = found.get(item.instalment_id)
                if stored is None:  # a new instalment for a settled or cancelled plan
                    rejected.append(
                        Rejection(
                            plan.plan_id,
                            item.instalment_id,
                            f"{item.field}.instalment_id",
                            f"plan {plan.plan_id} is {status}; it takes no new instalments",
                            RejectCode.FAILED_PRECONDITION,
                        )
                    )
                elif stored == (item.request_hash, ref):
                    matched += 1
                else:
                    rejected.append(
                        Rejection(
                            plan.plan_id,
                            item.instalment_id,
                            f"{item.field}.instalment_id",
                            "was already used with other parameters (plan, due date or amount)",
                            RejectCode.ALREADY_EXISTS,
                        )
                    )
            await tx.commit()
        # rows inserted now were matched too when they were read back
        replayed = matched - (inserted if inserted < len(open_rows) else 0)
        return Submitted(accepted, inserted, replayed, rejected)

    async def _upsert_plans(
        self, tx: Tx, caller: str, plans: Sequence[NewPlan], now: datetime
    ) -> dict[str, tuple[int, str, str]]:
        """plan_id -> (id, stored request hash, status), inserting the plans that do not exist."""
        for chunk in _chunks(plans, _INSERT_CHUNK):
            args: list[Any] = []
            for p in chunk:
                args += [
                    caller,
                    p.plan_id,
                    p.product,
                    p.policy,
                    PlanStatus.ACTIVE.value,
                    0,
                    p.account_sealed,
                    p.account_hash,
                    p.account_masked,
                    p.payer.bank_code,
                    p.payer.agreement_no,
                    p.description,
                    p.request_hash,
                    now,
                    now,
                ]
            values = ",".join([f"({_marks(15)})"] * len(chunk))
            await tx.execute(f"INSERT INTO plans ({_PLAN_COLUMNS}) VALUES {values} ON DUPLICATE KEY UPDATE id=id", args)
        out: dict[str, tuple[int, str, str]] = {}
        ids = sorted({p.plan_id for p in plans})
        for chunk in _chunks(ids, _IN_CHUNK):
            for row in await tx.fetchall(
                "SELECT id, plan_id, request_hash, status FROM plans"
                f" WHERE caller=%s AND plan_id IN ({_marks(len(chunk))})",
                [caller, *chunk],
            ):
                out[row["plan_id"]] = (int(row["id"]), row["request_hash"], row["status"])
        return out

    async def _insert_instalments(
        self,
        tx: Tx,
        caller: str,
        rows: Sequence[tuple[NewPlan, NewInstalment]],
        refs: dict[str, tuple[int, str, str]],
        now: datetime,
    ) -> int:
        # Written as literals, not as parameters: a loan book is millions of rows, and every value
        # here is an integer, a date, a hex hash, a currency code or an identifier checked against
        # [A-Za-z0-9._:-] at the API (``_literal`` escapes anything else).
        stamp = f"'{now:%Y-%m-%d %H:%M:%S.%f}'"
        head = f"{_literal(caller)}"
        values = []
        for plan, item in rows:
            values.append(
                f"({refs[plan.plan_id][0]},{head},{_literal(plan.plan_id)},{_literal(item.instalment_id)},"
                f"{_literal(plan.product)},{_literal(plan.policy)},'{item.due_date}','{item.last_day}',"
                f"{int(item.amount)},{int(item.amount)},{_literal(item.currency)},'SCHEDULED',0,"
                f"'{item.first_due:%Y-%m-%d %H:%M:%S.%f}',{_literal(item.request_hash)},{stamp},{stamp},"
                f"{'NULL' if item.split_shares is None else _literal(item.split_shares)})"
            )
        inserted: int = await tx.execute(
            f"INSERT INTO instalments ({_INSTALMENT_INSERT_COLUMNS}) VALUES {','.join(values)}"
            " ON DUPLICATE KEY UPDATE id=id"
        )
        return inserted

    async def _existing_instalments(
        self, tx: Tx, caller: str, instalment_ids: Sequence[str]
    ) -> dict[str, tuple[str, int]]:
        """instalment_id -> (request hash, plan ref) of those that exist."""
        out: dict[str, tuple[str, int]] = {}
        for chunk in _chunks(sorted(set(instalment_ids)), _IN_CHUNK):
            for row in await tx.fetchall(
                "SELECT instalment_id, request_hash, plan_ref FROM instalments"
                f" WHERE caller=%s AND instalment_id IN ({_marks(len(chunk))})",
                [caller, *chunk],
            ):
                out[row["instalment_id"]] = (row["request_hash"], int(row["plan_ref"]))
        return out

    # --- reads ---------------------------------------------------------------------------

    async def plan(self, caller: str, plan_id: str, *, with_attempts: bool = False) -> PlanRow | None:
        row = await self.db.fetchone("SELECT * FROM plans WHERE caller=%s AND plan_id=%s", (caller, plan_id))
        if row is None:
            return None
        plan = _plan(row)
        plan.instalments = [
            _instalment(r)
            for r in await self.db.fetchall(
                "SELECT * FROM instalments WHERE plan_ref=%s ORDER BY due_date, id", (plan.id,)
            )
        ]
        if with_attempts and plan.instalments:
            by_ref = {i.id: i for i in plan.instalments}
            for r in await self.db.fetchall(
                "SELECT a.*, f.flow_no FROM instalment_attempts a LEFT JOIN flows f ON f.id = a.flow_id"
                f" WHERE a.instalment_ref IN ({_marks(len(by_ref))}) ORDER BY a.id",
                list(by_ref),
            ):
                by_ref[int(r["instalment_ref"])].attempt_rows.append(_attempt(r))
        return plan

    async def instalment(self, row_id: int) -> InstalmentRow | None:
        row = await self.db.fetchone("SELECT * FROM instalments WHERE id=%s", (row_id,))
        return _instalment(row) if row else None

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
        where = ["caller=%s"]
        args: list[Any] = [caller]
        if due_from is not None:
            where.append("due_date >= %s")
            args.append(due_from)
        if due_to is not None:
            where.append("due_date <= %s")
            args.append(due_to)
        if statuses:
            where.append(f"status IN ({_marks(len(statuses))})")
            args += sorted(s.value for s in statuses)
        if plan_id:
            where.append("plan_id=%s")
            args.append(plan_id)
        if after is not None:
            where.append("(due_date > %s OR (due_date = %s AND id > %s))")
            args += [after[0], after[0], after[1]]
        rows = await self.db.fetchall(
            f"SELECT * FROM instalments WHERE {' AND '.join(where)} ORDER BY due_date, id LIMIT %s", [*args, limit]
        )
        return [_instalment(r) for r in rows]

    # --- caller changes ------------------------------------------------------------------

    async def set_paused(self, caller: str, plan_id: str, instalment_id: str, paused: bool, *, now: datetime) -> bool:
        async with self.db.transaction() as tx:
            if instalment_id:
                n = await tx.execute(
                    "UPDATE instalments SET paused=%s, version=version+1, updated_at=%s"
                    " WHERE caller=%s AND plan_id=%s AND instalment_id=%s",
                    (int(paused), now, caller, plan_id, instalment_id),
                )
            else:
                n = await tx.execute(
                    "UPDATE plans SET paused=%s, updated_at=%s WHERE caller=%s AND plan_id=%s",
                    (int(paused), now, caller, plan_id),
                )
                await tx.execute(
                    "UPDATE instalments SET plan_paused=%s, version=version+1, updated_at=%s"
                    " WHERE plan_ref=(SELECT id FROM plans WHERE caller=%s AND plan_id=%s)",
                    (int(paused), now, caller, plan_id),
                )
            await tx.commit()
        return n > 0

    async def set_plan_status(self, plan_ref: int, status: str, *, now: datetime) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE plans SET status=%s, updated_at=%s WHERE id=%s", (status, now, plan_ref))
            await tx.commit()

    async def save(self, writes: Sequence[Write]) -> bool:
        statements: list[tuple[str, Sequence[Any]]] = []
        expected: list[int | None] = []
        for w in writes:
            statements.append((_WRITE_SQL, _write_args(w.after, w.before)))
            expected.append(1)
            if w.attempt is not None:
                if w.new_attempt:
                    statements.append(
                        _attempt_insert(w.attempt, w.after.updated_at or datetime.now(UTC).replace(tzinfo=None))
                    )
                    expected.append(1)
                else:
                    a = w.attempt
                    statements.append(
                        (
                            _ATTEMPT_UPDATE,
                            [
                                a.status.value,
                                a.code,
                                a.flow_id,
                                a.channel,
                                a.finished_at,
                                a.instalment_ref,
                                a.request_id,
                            ],
                        )
                    )
                    expected.append(None)
            if w.event is not None:
                statements.append(_outbox(w.event, w.after.caller))
                expected.append(1)
        if not statements:
            return True
        try:
            async with self.db.transaction() as tx:
                await tx.script_commit_if(statements, expected)
        except CountMismatch:
            return False
        except DuplicateKey:
            # the script runs every statement before it checks the counts: an insert may collide
            # because a guard had already moved on (the same step written before) - that is a lost
            # compare-and-set; only with every guard still holding is it a real duplicate
            if not await self._guards_hold([w.before for w in writes]):
                return False
            raise
        return True

    async def _guards_hold(self, rows: Sequence[InstalmentRow]) -> bool:
        ids = [r.id for r in rows]
        current = {
            int(r["id"]): r
            for r in await self.db.fetchall(
                "SELECT id, status, event_seq, claim_token, attempt_request_id, closing FROM instalments"
                f" WHERE id IN ({_marks(len(ids))})",
                ids,
            )
        }
        for row in rows:
            now = current.get(row.id)
            if now is None or (
                now["status"],
                int(now["event_seq"]),
                now["claim_token"],
                now["attempt_request_id"],
                now["closing"],
            ) != (row.status.value, row.event_seq, row.claim_token, row.attempt_request_id, row.closing.value):
                return False
        return True

    # --- runs ----------------------------------------------------------------------------

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
        async with self.db.transaction() as tx:
            created = await tx.execute(
                "INSERT INTO plan_runs (policy, business_day, time_point, scheduled_at, deadline, status, started_by,"
                " due_by_product, started_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON DUPLICATE KEY UPDATE id=id",
                (
                    key.policy,
                    key.business_day,
                    key.time_point,
                    scheduled_at,
                    deadline,
                    RunStatus.RUNNING.value,
                    started_by[:64],
                    json.dumps(due, sort_keys=True),
                    now,
                    now,
                ),
            )
            await tx.commit()
        run = await self.run(key)
        assert run is not None
        return run, created == 1

    async def restart_run(self, run_id: int, *, deadline: datetime, started_by: str, now: datetime) -> RunRow:
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE plan_runs SET status='RUNNING', deadline=%s, started_by=%s, started_at=%s, finished_at=NULL,"
                " missed=0, lag_s=0, updated_at=%s WHERE id=%s",
                (deadline, started_by[:64], now, now, run_id),
            )
            await tx.commit()
        row = await self.db.fetchone("SELECT * FROM plan_runs WHERE id=%s", (run_id,))
        assert row is not None
        return _run(row)

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
        finished = now if status in (RunStatus.FINISHED, RunStatus.BEHIND) else None
        async with self.db.transaction() as tx:
            n = await tx.execute(
                "UPDATE plan_runs SET status=%s, finished_at=%s, missed=%s, lag_s=%s, updated_at=%s"
                f" WHERE id=%s AND status IN ({_marks(len(expect))})",
                (status.value, finished, missed, lag_s, now, run_id, *sorted(s.value for s in expect)),
            )
            await tx.commit()
        return n == 1

    async def set_run_lag(self, run_id: int, lag_s: float) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE plan_runs SET lag_s=%s WHERE id=%s", (lag_s, run_id))
            await tx.commit()

    async def run(self, key: RunKey) -> RunRow | None:
        row = await self.db.fetchone(
            "SELECT * FROM plan_runs WHERE policy=%s AND business_day=%s AND time_point=%s",
            (key.policy, key.business_day, key.time_point),
        )
        return _run(row) if row else None

    async def runs(
        self, *, statuses: frozenset[RunStatus] | None = None, day: date | None = None, policy: str = ""
    ) -> list[RunRow]:
        where: list[str] = ["1=1"]
        args: list[Any] = []
        if statuses:
            where.append(f"status IN ({_marks(len(statuses))})")
            args += sorted(s.value for s in statuses)
        if day is not None:
            where.append("business_day=%s")
            args.append(day)
        if policy:
            where.append("policy=%s")
            args.append(policy)
        rows = await self.db.fetchall(
            f"SELECT * FROM plan_runs WHERE {' AND '.join(where)} ORDER BY scheduled_at", args
        )
        return [_run(r) for r in rows]

    async def open_runs(self, now: datetime) -> list[RunRow]:
        rows = await self.db.fetchall(
            "SELECT * FROM plan_runs WHERE status IN ('RUNNING','PAUSED')"
            " UNION ALL SELECT * FROM plan_runs WHERE status='FINISHED' AND deadline > %s",
            (now,),
        )
        return sorted((_run(r) for r in rows), key=lambda r: r.scheduled_at)

    async def due_by_product(self, policy: str, moment: datetime) -> dict[str, int]:
        rows = await self.db.fetchall(
            f"SELECT product, COUNT(*) AS n FROM instalments WHERE policy=%s AND {_REMAINING}"
            " AND next_attempt_at <= %s GROUP BY product",
            (policy, moment),
        )
        return {r["product"]: int(r["n"]) for r in rows}

    async def remaining_by_product(self, run: RunRow) -> dict[str, int]:
        return await self.due_by_product(run.policy, run.scheduled_at)

    async def run_progress(self, run: RunRow) -> RunProgress:
        progress = RunProgress(run)
        rows = await self.db.fetchall(
            "SELECT status, code, currency, COUNT(*) AS n, SUM(amount) AS total FROM instalment_attempts"
            " WHERE run_id=%s GROUP BY status, code, currency",
            (run.id,),
        )
        for r in rows:
            n = int(r["n"])
            progress.attempted += n
            status = AttemptStatus(r["status"])
            if status is AttemptStatus.SUCCEEDED:
                progress.succeeded += n
                amounts = progress.succeeded_amounts
                amounts[r["currency"]] = amounts.get(r["currency"], 0) + int(r["total"])
            elif status is AttemptStatus.FAILED:
                progress.failed[r["code"]] = progress.failed.get(r["code"], 0) + n
            else:
                progress.in_flight += n
        progress.remaining = sum((await self.remaining_by_product(run)).values())
        return progress

    # --- the executor ---------------------------------------------------------------------

    async def claim(
        self, run: RunRow, *, owner: str, limit: int, now: datetime, lease_until: datetime
    ) -> list[Claimed]:
        token = secrets.token_hex(8)
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                f"SELECT * FROM instalments WHERE policy=%s AND {_CLAIMABLE} AND next_attempt_at <= %s"
                " ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED",
                (run.policy, run.scheduled_at, limit),
            )
            if not rows:
                return []
            ids = [int(r["id"]) for r in rows]
            await tx.script(
                [
                    (
                        "UPDATE instalments SET status='CLAIMED', run_id=%s, claim_owner=%s, claim_token=%s,"
                        f" lease_until=%s, updated_at=%s, version=version+1 WHERE id IN ({_marks(len(ids))})",
                        [run.id, owner[:64], token, lease_until, now, *ids],
                    )
                ],
                commit=True,
            )
        claimed = []
        for r in rows:
            r.update(
                status="CLAIMED", run_id=run.id, claim_owner=owner[:64], claim_token=token, lease_until=lease_until
            )
            claimed.append(_instalment(r))
        return await self._with_plans(claimed)

    async def _with_plans(self, rows: list[InstalmentRow]) -> list[Claimed]:
        if not rows:
            return []
        refs = sorted({r.plan_ref for r in rows})
        plans = {int(p["id"]): p for p in await self.db.fetchall(_PLAN_OF + f"({_marks(len(refs))})", refs)}
        return [
            Claimed(
                r,
                bytes(plans[r.plan_ref]["account_sealed"]),
                plans[r.plan_ref]["account_hash"],
                plans[r.plan_ref]["bank_code"],
                plans[r.plan_ref]["agreement_no"],
                plans[r.plan_ref]["description"],
            )
            for r in rows
        ]

    async def go(self, claimed: Claimed, after: InstalmentRow, attempt: AttemptRow, *, now: datetime) -> bool:
        before = claimed.instalment
        update = (
            "UPDATE instalments SET status='IN_FLIGHT', attempt_request_id=%s, attempt_day=%s, attempt_time_point=%s,"
            " attempts=%s, attempts_day=%s, attempts_on_day=%s, lease_until=%s, flow_id=NULL, updated_at=%s,"
            " version=version+1"
            " WHERE id=%s AND status='CLAIMED' AND claim_token=%s AND paused=0 AND plan_paused=0 AND closing=''"
            " AND EXISTS (SELECT 1 FROM plan_runs r WHERE r.id=%s AND r.status IN ('RUNNING','FINISHED')"
            " AND r.deadline > %s)"
        )
        args = [
            after.attempt_request_id,
            after.attempt_day,
            after.attempt_time_point,
            after.attempts,
            after.attempts_day,
            after.attempts_on_day,
            after.lease_until,
            now,
            before.id,
            before.claim_token,
            before.run_id,
            now,
        ]
        try:
            async with self.db.transaction() as tx:
                await tx.script_commit_if([(update, args), _attempt_insert(attempt, now)], [1, 1])
        except CountMismatch:
            return False
        except DuplicateKey:  # as in save: a real duplicate only while the claim still stands
            if not await self._guards_hold([before]):
                return False
            raise
        return True

    async def resolvable(self, limit: int) -> list[tuple[InstalmentRow, FlowResult]]:
        rows = await self.db.fetchall(
            "SELECT i.*, f.flow_no AS f_flow_no, f.status AS f_status, f.failure_code AS f_failure_code,"
            " f.channel AS f_channel FROM instalments i JOIN flows f ON f.id = i.flow_id"
            " WHERE i.status='IN_FLIGHT' AND i.flow_id IS NOT NULL AND f.status <> 'PROCESSING' LIMIT %s",
            (limit,),
        )
        return [
            (
                _instalment(r),
                FlowResult(
                    int(r["flow_id"]), r["f_flow_no"], FlowStatus(r["f_status"]), r["f_failure_code"], r["f_channel"]
                ),
            )
            for r in rows
        ]

    async def claim_orphans(self, *, owner: str, now: datetime, lease_until: datetime, limit: int) -> list[Claimed]:
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                "SELECT * FROM instalments WHERE status='IN_FLIGHT' AND lease_until < %s AND flow_id IS NULL"
                " LIMIT %s FOR UPDATE SKIP LOCKED",
                (now, limit),
            )
            if not rows:
                return []
            ids = [int(r["id"]) for r in rows]
            await tx.script(
                [
                    (
                        f"UPDATE instalments SET claim_owner=%s, lease_until=%s WHERE id IN ({_marks(len(ids))})",
                        [owner[:64], lease_until, *ids],
                    )
                ],
                commit=True,
            )
        for r in rows:
            r.update(claim_owner=owner[:64], lease_until=lease_until)
        return await self._with_plans([_instalment(r) for r in rows])

    async def release_expired_claims(self, now: datetime) -> int:
        async with self.db.transaction() as tx:
            n = await tx.execute(
                "UPDATE instalments SET status='SCHEDULED', run_id=NULL, claim_owner='', claim_token='',"
                " lease_until=NULL, updated_at=%s, version=version+1 WHERE status='CLAIMED' AND lease_until < %s",
                (now, now),
            )
            await tx.commit()
        return n

    async def release_owner(self, owner: str, *, now: datetime) -> int:
        ended = now - timedelta(microseconds=1)
        async with self.db.transaction() as tx:
            claims = await tx.execute(
                "UPDATE instalments SET status='SCHEDULED', run_id=NULL, claim_owner='', claim_token='',"
                " lease_until=NULL, updated_at=%s, version=version+1 WHERE claim_owner=%s AND status='CLAIMED'",
                (now, owner[:64]),
            )
            flights = await tx.execute(
                "UPDATE instalments SET lease_until=%s WHERE claim_owner=%s AND status='IN_FLIGHT' AND flow_id IS NULL",
                (ended, owner[:64]),
            )
            await tx.commit()
        return claims + flights

    # --- rate limits ---------------------------------------------------------------------

    async def take_tokens(self, channel: str, *, want: int, rate: float, capacity: float, now: datetime) -> Grant:
        async with self.db.transaction() as tx:
            row = await tx.fetchone(
                "SELECT tokens, refilled_at FROM plan_rate_buckets WHERE channel=%s FOR UPDATE", (channel,)
            )
            if row is None:
                await tx.execute(
                    "INSERT INTO plan_rate_buckets (channel, tokens, refilled_at) VALUES (%s, %s, %s)"
                    " ON DUPLICATE KEY UPDATE channel=channel",
                    (channel, capacity, now),
                )
                row = await tx.fetchone(
                    "SELECT tokens, refilled_at FROM plan_rate_buckets WHERE channel=%s FOR UPDATE", (channel,)
                )
                assert row is not None
            grant = take(
                Bucket(float(row["tokens"]), row["refilled_at"]), now=now, rate=rate, capacity=capacity, want=want
            )
            await tx.script(
                [
                    (
                        "UPDATE plan_rate_buckets SET tokens=%s, refilled_at=%s WHERE channel=%s",
                        [grant.bucket.tokens, grant.bucket.refilled_at, channel],
                    )
                ],
                commit=True,
            )
        return grant

    # --- the daily report -----------------------------------------------------------------

    async def daily_figures(self, day: date) -> list[DayFigures]:
        """Plan withholds of business day ``day`` by caller, product, policy, time point and currency.

        The daily withhold report (gateway/recon) reads this: attempts are counted by the business
        day of their time point, so a run that spilled past midnight still counts on its own day.
        """
        rows = await self.db.fetchall(
            "SELECT i.caller, i.product, i.policy, a.time_point, a.currency, a.status, a.code,"
            " COUNT(*) AS n, SUM(a.amount) AS total FROM instalment_attempts a"
            " JOIN instalments i ON i.id = a.instalment_ref WHERE a.business_day=%s"
            " GROUP BY i.caller, i.product, i.policy, a.time_point, a.currency, a.status, a.code",
            (day,),
        )
        groups: dict[tuple[str, str, str, str, str], dict[str, Any]] = defaultdict(
            lambda: {"attempted": 0, "succeeded": 0, "amount": 0, "failed": 0, "in_flight": 0, "codes": {}}
        )
        for r in rows:
            g = groups[(r["caller"], r["product"], r["policy"], r["time_point"], r["currency"])]
            n = int(r["n"])
            g["attempted"] += n
            if r["status"] == AttemptStatus.SUCCEEDED.value:
                g["succeeded"] += n
                g["amount"] += int(r["total"])
            elif r["status"] == AttemptStatus.FAILED.value:
                g["failed"] += n
                g["codes"][r["code"]] = g["codes"].get(r["code"], 0) + n
            else:
                g["in_flight"] += n
        return [
            DayFigures(
                caller,
                product,
                policy,
                point,
                currency,
                g["attempted"],
                g["succeeded"],
                g["amount"],
                g["failed"],
                g["in_flight"],
                dict(g["codes"]),
            )
            for (caller, product, policy, point, currency), g in sorted(groups.items())
        ]
