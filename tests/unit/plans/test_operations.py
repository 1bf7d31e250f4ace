"""The operators' run use cases (gateway/plans/operations.py), shared by PlanAdmin and the console:
a reason is required before anything changes, each change is audited with it, the run key is checked."""

from __future__ import annotations

from datetime import date
from unittest import mock

import pytest

from gateway.errors import InvalidInput
from gateway.plans.model import RunKey
from gateway.plans.operations import PlanOperations

KEY = RunKey("default", date(2026, 12, 1), "12:00")


def _operations() -> tuple[PlanOperations, mock.AsyncMock, mock.AsyncMock]:
    plans, audit = mock.AsyncMock(), mock.AsyncMock()
    plans.run_key = mock.Mock(side_effect=lambda policy, day, point: RunKey(policy, day or date(2026, 12, 1), point))
    return PlanOperations(plans, audit), plans, audit


@pytest.mark.parametrize("action", ["start_run", "pause_run", "resume_run"])
async def test_no_reason_no_change(action: str) -> None:
    operations, plans, audit = _operations()
    with pytest.raises(InvalidInput) as refused:
        await getattr(operations, action)(KEY, "ops", "")
    assert refused.value.field == "reason"
    assert getattr(plans, action).await_count == 0 and audit.record.await_count == 0


@pytest.mark.parametrize(
    ("action", "audited"),
    [("start_run", "start_plan_run"), ("pause_run", "pause_plan_run"), ("resume_run", "resume_plan_run")],
)
async def test_each_change_is_audited_with_the_operator_and_the_reason(action: str, audited: str) -> None:
    operations, plans, audit = _operations()
    await getattr(operations, action)(KEY, "li-na", "bank asked, card 6222020200112233445")
    assert getattr(plans, action).await_count == 1
    operator, name, target, reason, _ = audit.record.await_args.args
    assert (operator, name, target) == ("li-na", audited, "plan_run:default/2026-12-01/12:00")
    assert "6222020200112233445" not in reason  # reasons are scrubbed: they are stored and shown


def test_the_run_key_is_checked_naming_the_field() -> None:
    operations, _, _ = _operations()
    assert operations.key("default", "2026-12-01", "12:00") == KEY
    assert operations.key("default", "", "12:00", today_allowed=True).time_point == "12:00"
    for args, field in (
        (("Bad Policy", "2026-12-01", "12:00"), "policy"),
        (("default", "", "12:00"), "business_day"),
        (("default", "01/12/2026", "12:00"), "business_day"),
        (("default", "2026-12-01", "noon"), "time_point"),
    ):
        with pytest.raises(InvalidInput) as refused:
            operations.key(*args)
        assert refused.value.field == field, args
