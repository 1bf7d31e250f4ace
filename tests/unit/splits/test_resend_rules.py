"""Re-sending a failed settlement payout, without services: the input rules, the request ids, the refusals."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from typing import Any

import pytest

from gateway.api.splits import resend_input
from gateway.businessday import BusinessCalendar
from gateway.errors import InvalidInput, NoRoute, NotFound, PreconditionFailed
from gateway.splits.funders import FunderConfig, Funders, SettlementConfig
from gateway.splits.settlement import SettlementService, settlement_request_id
from gateway.store.splits import Resend, SettlementRow
from paygate.v1 import splits_pb2

DAY = date(2026, 12, 1)
ACCOUNT = "6222020000000301"
FAILED = SettlementRow(
    "xd", DAY, "CNY", 3000, 0, 0, 3000, 3000, 0, 1, 0, "PAYOUT_FAILED", "settle:xd:20261201", "F" * 26
)


def rq(funder_id: str = "xd", business_day: str = "2026-12-01", reason: str = "unfrozen") -> Any:
    return splits_pb2.ResendSettlementPayoutRequest(funder_id=funder_id, business_day=business_day, reason=reason)


def test_the_input_is_funder_day_and_reason() -> None:
    assert resend_input(rq()) == ("xd", DAY, "unfrozen")


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (rq(funder_id=""), "funder_id"),
        (rq(funder_id="XD"), "funder_id"),
        (rq(funder_id="x" * 33), "funder_id"),
        (rq(business_day=""), "business_day"),
        (rq(business_day="2026-02-30"), "business_day"),
        (rq(business_day="20261201"), "business_day"),
        (rq(reason=""), "reason"),
        (rq(reason="   "), "reason"),
        (rq(reason="x" * 513), "reason"),
        (rq(reason="line\x00two"), "reason"),
    ],
)
def test_bad_input_is_refused_naming_the_field(request_: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        resend_input(request_)
    assert err.value.field == field


def test_each_re_send_has_its_own_request_id_and_the_first_keeps_its_own() -> None:
    assert settlement_request_id("xd", DAY, 0) == settlement_request_id("xd", DAY) == "settle:xd:20261201"
    assert settlement_request_id("xd", DAY, 1) == "settle:xd:20261201:r1"
    assert settlement_request_id("xd", DAY, 12) == "settle:xd:20261201:r12"
    assert len(settlement_request_id("f" * 32, DAY, 999_999)) <= 64


class Store:
    """The two calls a re-send makes; records what begin_resend was asked."""

    def __init__(self, row: SettlementRow | None, answer: Resend | None = None) -> None:
        self.row, self.answer = row, answer
        self.asked: list[dict[str, Any]] = []

    async def settlement(self, funder_id: str, day: date) -> SettlementRow | None:
        return self.row

    async def begin_resend(self, funder_id: str, day: date, **kw: Any) -> Resend:
        self.asked.append(kw)
        assert self.answer is not None
        return self.answer


class NoFloat:
    async def payout(self, *args: Any, **kw: Any) -> Any:
        raise NoRoute("no channel with float")


def service(store: Store) -> SettlementService:
    return SettlementService(
        store=store,  # type: ignore[arg-type]
        payouts=NoFloat(),  # type: ignore[arg-type]
        funders=Funders(
            {"xd": FunderConfig(name="XD", settle_from="bank-a", payout_account=ACCOUNT, account_name="XD")}
        ),
        calendar=BusinessCalendar.named("Asia/Shanghai"),
        config=SettlementConfig(),
        now=lambda: datetime(2026, 12, 2, 1, 0),
    )


@pytest.mark.parametrize("status", ["PAYING", "PAID", "CARRIED", "REPORTED"])
async def test_only_a_payout_failed_settlement_is_re_sent(status: str) -> None:
    store = Store(replace(FAILED, status=status))
    with pytest.raises(PreconditionFailed, match=f"is {status}: only PAYOUT_FAILED"):
        await service(store).resend("xd", DAY, operator="ops", reason="r")
    assert store.asked == []


async def test_unknown_funders_and_days_are_refused() -> None:
    with pytest.raises(InvalidInput) as err:
        await service(Store(FAILED)).resend("nobody", DAY, operator="ops", reason="r")
    assert err.value.field == "funder_id"
    with pytest.raises(NotFound):
        await service(Store(None)).resend("xd", DAY, operator="ops", reason="r")


async def test_the_store_is_asked_with_what_was_read_and_its_refusal_is_a_precondition() -> None:
    store = Store(replace(FAILED, payout_attempt=2), Resend(None, "its payout flow F is PENDING, not FAILED"))
    with pytest.raises(PreconditionFailed, match="not re-sent: its payout flow F is PENDING, not FAILED"):
        await service(store).resend("xd", DAY, operator="ops", reason="unfrozen")
    assert store.asked == [
        {
            "attempt": 2,
            "flow_no": "F" * 26,
            "request_id": "settle:xd:20261201:r3",
            "operator": "ops",
            "reason": "unfrozen",
        }
    ]


async def test_a_re_send_recorded_but_not_sent_yet_is_returned_paying() -> None:
    paying = replace(FAILED, status="PAYING", payout_attempt=1, payout_request_id="settle:xd:20261201:r1")
    paying.payout_flow_no = ""
    got = await service(Store(FAILED, Resend(paying))).resend("xd", DAY, operator="ops", reason="r")
    assert got == paying
