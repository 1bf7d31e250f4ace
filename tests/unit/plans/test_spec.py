"""Submitted plans are checked item by item: refusals name the item and the field, good items go ahead."""

from __future__ import annotations

from datetime import date, datetime, time

import pytest

from devstack.cards import luhn_card
from gateway.businessday import BusinessCalendar
from gateway.errors import InvalidInput
from gateway.plans.policy import Policy, Schedule
from gateway.plans.sealing import AccountSealer, SealBroken
from gateway.plans.spec import InstalmentSpec, PlanSpec, RejectCode, check_plans

SCHEDULES = {"default": Schedule(Policy("default", (time(12), time(18)), retry_days=2), BusinessCalendar.named())}
CARD = luhn_card()


def plan(plan_id: str = "loan-1", *items: InstalmentSpec, **kw: str) -> PlanSpec:
    fields = {"product": "cash", "account_no": CARD, "bank_code": "ICBC", **kw}
    return PlanSpec(
        plan_id, instalments=items or (InstalmentSpec(f"{plan_id}-1", "2026-12-01", 10000, "CNY"),), **fields
    )


def check(*plans: PlanSpec):  # type: ignore[no-untyped-def]
    return check_plans(
        plans,
        caller="loans",
        policy_for=lambda c, p: None if p == "unknown" else "default",
        schedules=SCHEDULES,
        hash_key=b"k",
    )


def test_good_plans_carry_their_schedule_and_hashes() -> None:
    accepted, rejected = check(plan())
    assert not rejected
    [p] = accepted
    assert p.account_masked.endswith(CARD[-4:]) and CARD not in p.account_masked
    [i] = p.instalments
    assert i.first_due == datetime(2026, 12, 1, 4, 0)  # 12:00 in Shanghai
    assert i.last_day == date(2026, 12, 3)
    again, _ = check(plan())
    assert again[0].request_hash == p.request_hash and again[0].instalments[0].request_hash == i.request_hash


def test_bad_items_are_refused_one_by_one_naming_the_field() -> None:
    good = InstalmentSpec("a-1", "2026-12-01", 100, "CNY")
    accepted, rejected = check(
        plan(
            "a", good, InstalmentSpec("a-2", "2026-13-01", 100, "CNY"), InstalmentSpec("a-3", "2026-12-02", -5, "CNY")
        ),
        plan("b", account_no="1234"),
        plan("c", product="unknown"),
        plan("d", InstalmentSpec("a-1", "2026-12-09", 100, "CNY")),
    )
    assert [p.plan_id for p in accepted] == ["a"]
    assert [i.instalment_id for i in accepted[0].instalments] == ["a-1"]
    by_field = {r.field: r for r in rejected}
    assert set(by_field) == {
        "plans[0].instalments[1].due_date",
        "plans[0].instalments[2].amount.amount",
        "plans[1].account_no",
        "plans[2].product",
        "plans[3].instalments[0].instalment_id",
    }
    assert by_field["plans[1].account_no"].instalments == 1 and by_field["plans[1].account_no"].instalment_id == ""
    assert by_field["plans[3].instalments[0].instalment_id"].code is RejectCode.ALREADY_EXISTS
    assert all(CARD not in r.problem for r in rejected)


def test_the_same_plan_twice_in_one_message_merges_or_is_refused() -> None:
    one = InstalmentSpec("m-1", "2026-12-01", 100, "CNY")
    two = InstalmentSpec("m-2", "2026-12-02", 100, "CNY")
    accepted, rejected = check(plan("m", one), plan("m", two, one))
    assert not rejected and [i.instalment_id for i in accepted[0].instalments] == ["m-1", "m-2"]
    _, rejected = check(plan("m", one), plan("m", two, bank_code="CCB"))
    assert [(r.field, r.code) for r in rejected] == [("plans[1].plan_id", RejectCode.ALREADY_EXISTS)]


def test_a_message_too_large_is_refused_whole() -> None:
    items = tuple(InstalmentSpec(f"x-{i}", "2026-12-01", 1, "CNY") for i in range(1200))
    with pytest.raises(InvalidInput) as err:
        check(*(plan(f"p{i}", *items) for i in range(17)))
    assert err.value.field == "plans"


def test_sealed_accounts_open_only_for_their_plan() -> None:
    sealer = AccountSealer(b"key material")
    sealed = sealer.seal(CARD, caller="loans", plan_id="loan-1")
    assert CARD.encode() not in sealed
    assert sealer.open(sealed, caller="loans", plan_id="loan-1") == CARD
    with pytest.raises(SealBroken):
        sealer.open(sealed, caller="loans", plan_id="loan-2")
    with pytest.raises(SealBroken):
        AccountSealer(b"other key").open(sealed, caller="loans", plan_id="loan-1")


def test_a_plan_names_only_a_bank_a_withhold_may_and_a_due_date_is_exactly_yyyy_mm_dd() -> None:
    accepted, rejected = check_plans(
        [
            plan("ok"),
            plan("bank", bank_code="CCB"),
            plan("week", InstalmentSpec("week-1", "2026-W49-2", 100, "CNY")),  # fromisoformat reads a week date
        ],
        caller="loans",
        policy_for=lambda c, p: "default",
        schedules=SCHEDULES,
        hash_key=b"k",
        banks=frozenset({"ICBC"}),
    )
    assert [p.plan_id for p in accepted] == ["ok"]
    assert [(r.plan_id, r.field) for r in rejected] == [
        ("bank", "plans[1].bank_code"),
        ("week", "plans[2].instalments[0].due_date"),
    ]
