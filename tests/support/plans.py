"""Helpers for plan tests on the real stack: plan messages, debits per instalment from the banks' ledgers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from paygate.v1 import gateway_pb2, plans_pb2


def plan_pb(
    plan_id: str,
    card: str,
    instalments: Iterable[tuple[str, str, int]],
    *,
    product: str = "cash-loan",
    bank_code: str = "ICBC",
) -> plans_pb2.PlanSpec:
    """A plan message; ``instalments`` are ``(instalment_id, due_date, amount in fen)``."""
    return plans_pb2.PlanSpec(
        plan_id=plan_id,
        product=product,
        account_no=card,
        bank_code=bank_code,
        instalments=[
            plans_pb2.InstalmentSpec(instalment_id=i, due_date=d, amount=gateway_pb2.Money(amount=a, currency="CNY"))
            for i, d, a in instalments
        ],
    )


def debits_by_instalment(ledger_debits: Mapping[str, int], order_to_request: Mapping[str, str]) -> dict[int, int]:
    """instalment row id -> debits on the banks' ledgers, through channel order no -> withhold request id."""
    out: dict[int, int] = {}
    for order_no, n in ledger_debits.items():
        request_id = order_to_request.get(order_no, "")
        if request_id.startswith("plan:") and n:
            ref = int(request_id.rsplit(":", 1)[1])
            out[ref] = out.get(ref, 0) + n
    return out


ORDER_TO_REQUEST_SQL = "SELECT a.channel_order_no, f.request_id FROM attempts a JOIN flows f ON f.id = a.flow_id"


def order_map(rows: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    return {str(r["channel_order_no"]): str(r["request_id"]) for r in rows}
