from __future__ import annotations

import random

import pytest

from gateway.domain import (
    AttemptStatus,
    allocate,
    can_transition_attempt,
    channel_order_no,
    mask_account,
    new_ulid,
    scrub,
    spreadsheet_safe,
)
from routing.config import FeeSchedule


@pytest.mark.parametrize("seed", range(50))
def test_allocate_always_sums_to_the_whole(seed: int) -> None:
    rng = random.Random(seed)
    total = rng.randrange(-(10**12), 10**12)
    weights = [rng.randrange(0, 1000) for _ in range(rng.randrange(1, 9))]
    if sum(weights) == 0:
        weights[0] = 1
    parts = allocate(total, weights)
    assert sum(parts) == total
    assert all(isinstance(p, int) for p in parts)


def test_allocate_one_cent_problem() -> None:
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]
    assert allocate(1, [1, 1]) == [1, 0]
    with pytest.raises(ValueError):
        allocate(100, [0, 0])


def test_fee_is_integer_and_clamped() -> None:
    # channel fees live in the routing cost term (one implementation)
    assert FeeSchedule(fixed=10, rate_ppm=1500, minimum=0, maximum=None).fee(10_000) == 25
    assert FeeSchedule(fixed=0, rate_ppm=1500, minimum=5, maximum=None).fee(1) == 5
    assert FeeSchedule(fixed=0, rate_ppm=1500, minimum=0, maximum=500).fee(10**9) == 500


def test_masking() -> None:
    assert mask_account("6222020212345678") == "************5678"
    for text in (
        "card 6222020212345678 declined",
        "card 6222 0202 1234 5678 declined",
        "card 6222-0202-1234-5678 declined",
        "卡号6222020212345678",
        "id 11010519491231002X",
    ):
        out = scrub(text)
        assert "02021234" not in out.replace(" ", "").replace("-", "") and "1949123" not in out, out
    assert scrub("amount 12345 CNY") == "amount 12345 CNY"


def test_forward_only_attempts() -> None:
    assert can_transition_attempt(AttemptStatus.SENDING, AttemptStatus.PENDING)
    assert can_transition_attempt(AttemptStatus.PENDING, AttemptStatus.SUCCEEDED)
    assert not can_transition_attempt(AttemptStatus.SUCCEEDED, AttemptStatus.FAILED)
    assert not can_transition_attempt(AttemptStatus.FAILED, AttemptStatus.SUCCEEDED)
    assert not can_transition_attempt(AttemptStatus.PENDING, AttemptStatus.SENDING)


def test_ids_are_sortable_and_unique() -> None:
    ids = [new_ulid(now_ms=1_000 + i) for i in range(100)]
    assert ids == sorted(ids) and len(set(ids)) == 100
    assert len(channel_order_no(ids[0], 3)) == 28


@pytest.mark.parametrize(
    "cell",
    [
        " =1+1",
        "  +SUM(A1)",
        '\u3000=HYPERLINK("x")',
        "\u00a0@A1",
        '\uff1dHYPERLINK("x")',
        "\uff0b1",
        "\uff0d1",
        "\uff20SUM(A1)",
        " \uff1d1",
        "\n=1",
        "=1",
        "\t1",
    ],
)
def test_a_formula_behind_blanks_or_in_full_width_is_quoted(cell: str) -> None:
    assert spreadsheet_safe(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["loan 1", " 1+1", "张三", "", "a=1", "\u3000"])
def test_text_that_is_no_formula_is_kept(cell: str) -> None:
    assert spreadsheet_safe(cell) == cell
