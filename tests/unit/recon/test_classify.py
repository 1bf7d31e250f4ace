"""The decisions of reconciliation (gateway/recon/model.py): every pair ends in exactly one class."""

from __future__ import annotations

from datetime import date

import pytest

from channels.statement import LineStatus
from gateway.domain import AttemptStatus, FlowStatus
from gateway.recon.model import ItemClass, LineSide, LocalSide, classify, declare_day, resolution_reason

CH = "bank-a"


def line(status: LineStatus = LineStatus.SUCCEEDED, amount: int = 1000, fee: int = 6, op: str = "withhold") -> LineSide:
    return LineSide(7, op, status, amount, fee, "TXN1")


def local(
    status: AttemptStatus = AttemptStatus.SUCCEEDED,
    amount: int = 1000,
    fee: int | None = 6,
    flow: FlowStatus | None = None,
    channel: str = CH,
    op: str = "withhold",
) -> LocalSide:
    if flow is None:
        flow = {
            AttemptStatus.SUCCEEDED: FlowStatus.SUCCEEDED,
            AttemptStatus.FAILED: FlowStatus.FAILED,
        }.get(status, FlowStatus.PROCESSING)
    return LocalSide(1, 2, "F1", channel, op, status, amount, fee, flow)


@pytest.mark.parametrize(
    ("the_line", "ours", "expected", "settle"),
    [
        (line(), local(), ItemClass.MATCHED, None),
        (line(fee=9), local(fee=None), ItemClass.MATCHED, None),  # no expectation: the fee is not checked
        (line(fee=9), local(), ItemClass.FEE_MISMATCH, None),
        (line(amount=999), local(), ItemClass.AMOUNT_MISMATCH, None),
        (line(), None, ItemClass.CHANNEL_ONLY, None),  # an order we never sent
        (line(), local(channel="bank-b"), ItemClass.CHANNEL_ONLY, None),  # not ours on this channel
        (line(), local(AttemptStatus.FAILED), ItemClass.CHANNEL_ONLY, None),  # debited after we gave up
        (line(LineStatus.FAILED), None, ItemClass.IGNORED, None),  # nothing moved for an order we never sent
        (line(LineStatus.FAILED), local(AttemptStatus.FAILED), ItemClass.MATCHED, None),
        (line(LineStatus.FAILED), local(), ItemClass.STATUS_MISMATCH, None),
        (line(op="refund"), local(), ItemClass.STATUS_MISMATCH, None),
        (line(op="withhold"), local(op="collect"), ItemClass.MATCHED, None),  # a cashier payment is a trade
        (line(), local(AttemptStatus.PENDING), ItemClass.RESOLVED_BY_STATEMENT, FlowStatus.SUCCEEDED),
        (line(), local(AttemptStatus.SENDING), ItemClass.RESOLVED_BY_STATEMENT, FlowStatus.SUCCEEDED),
        (line(LineStatus.FAILED), local(AttemptStatus.PENDING), ItemClass.RESOLVED_BY_STATEMENT, FlowStatus.FAILED),
        (line(amount=5), local(AttemptStatus.PENDING), ItemClass.AMOUNT_MISMATCH, None),  # settles nothing
        # a terminal flow is never changed by a statement: an operator's case
        (line(), local(AttemptStatus.PENDING, flow=FlowStatus.FAILED), ItemClass.STATUS_MISMATCH, None),
        (None, local(), ItemClass.LOCAL_ONLY, None),
        (None, local(AttemptStatus.PENDING), ItemClass.IGNORED, None),
        (None, local(AttemptStatus.FAILED), ItemClass.IGNORED, None),
    ],
)
def test_classify(
    the_line: LineSide | None, ours: LocalSide | None, expected: ItemClass, settle: FlowStatus | None
) -> None:
    decision = classify(CH, the_line, ours)
    assert decision.item_class is expected
    assert decision.settle_to is settle


def test_carry_over_declares_after_the_configured_days() -> None:
    assert declare_day(date(2026, 3, 1), 0) == date(2026, 3, 1)
    assert declare_day(date(2026, 3, 31), 2) == date(2026, 4, 2)


def test_the_resolution_reason_names_the_line_as_evidence() -> None:
    reason = resolution_reason(CH, date(2026, 3, 5), line(), "https://bank/statement")
    assert reason.startswith("statement bank-a 2026-03-05 line 7: SUCCEEDED amount=1000 fee=6 txn=TXN1")
    assert len(resolution_reason(CH, date(2026, 3, 5), line(), "x" * 1000)) == 255
