"""The plans screen's read (gateway/console/plans.py): the instalment search over every caller's plans.

Earliest due first, paged with a keyset on ``(due_date, id)`` (never OFFSET), bounded by
``max_statement_time`` like every console search (:class:`MySQLConsoleQueries`). The index that
serves each shape (migration 0011_console_plans.sql; checked by tests/console/test_queries_explain.py):
``ix_instalments_plan_due`` for a plan id, ``ix_instalments_caller_due`` (0005) for a caller,
``ix_instalments_status_due`` for a status, else ``ix_instalments_due_date``; each keeps
``(…, due_date, id)`` order, so the due range and the cursor are ranges of the same index and
nothing is sorted. The payer comes from the plan (masked), one primary-key lookup per row shown.
The time points' progress is the plan store's (``PlanService.list_runs``).
"""

from __future__ import annotations

from typing import Any

from gateway.store.console_queries import MySQLConsoleQueries
from gateway.store.console_rows import InstalmentListItem, InstalmentQuery

_COLUMNS = (
    "i.id, i.caller, i.plan_id, i.instalment_id, i.product, i.policy, i.due_date, i.amount, i.original_amount,"
    " i.currency, i.status, i.paused, i.plan_paused, i.attempts, i.last_code, i.stop_reason, i.next_attempt_at,"
    " p.account_masked, p.bank_code, f.flow_no"
)


def instalment_search_sql(query: InstalmentQuery) -> tuple[str, list[Any]]:
    """The instalment search's statement and arguments (also what the EXPLAIN tests look at)."""
    where: list[str] = []
    args: list[Any] = []
    for column, value in (("i.plan_id", query.plan_id), ("i.caller", query.caller), ("i.status", query.status)):
        if value:
            where.append(f"{column} = %s")
            args.append(value)
    if query.due_from is not None:
        where.append("i.due_date >= %s")
        args.append(query.due_from)
    if query.due_to is not None:
        where.append("i.due_date <= %s")
        args.append(query.due_to)
    if query.after is not None:
        # (due_date, id) > (d, i), written so that the range on due_date is visible to the optimizer
        where.append("i.due_date >= %s AND (i.due_date > %s OR i.id > %s)")
        args += [query.after.due_date, query.after.due_date, query.after.id]
    # STRAIGHT_JOIN: instalments first, through the index that keeps the order (the optimizer would otherwise
    # read the smaller plans table whole and sort the join)
    sql = (
        f"SELECT {_COLUMNS} FROM instalments i STRAIGHT_JOIN plans p ON p.id = i.plan_ref"
        " LEFT JOIN flows f ON f.id = i.flow_id"
    )
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY i.due_date, i.id LIMIT %s"
    args.append(query.limit)
    return sql, args


def _item(r: dict[str, Any]) -> InstalmentListItem:
    return InstalmentListItem(
        id=int(r["id"]),
        caller=r["caller"],
        plan_id=r["plan_id"],
        instalment_id=r["instalment_id"],
        product=r["product"],
        policy=r["policy"],
        due_date=r["due_date"],
        amount=int(r["amount"]),
        original_amount=int(r["original_amount"]),
        currency=r["currency"],
        status=r["status"],
        paused=bool(r["paused"]) or bool(r["plan_paused"]),
        attempts=int(r["attempts"]),
        last_code=r["last_code"],
        stop_reason=r["stop_reason"],
        next_attempt_at=r["next_attempt_at"],
        account_masked=r["account_masked"],
        bank_code=r["bank_code"],
        flow_no=r["flow_no"] or "",
    )


class MySQLPlanConsoleQueries(MySQLConsoleQueries):
    """The console's read model with the plans screen's search (implements ``gateway.console.plans.PlanReads``)."""

    async def search_instalments(self, query: InstalmentQuery) -> list[InstalmentListItem]:
        """Earliest due first; raises QueryTooBroad when the search runs past the time limit."""
        sql, args = instalment_search_sql(query)
        return [_item(r) for r in await self._bounded(sql, args)]
