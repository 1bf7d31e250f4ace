"""Property tests of the split arithmetic (issue 18): sums exact, none negative, no over-refund."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain import INT64_MAX
from gateway.errors import InvalidInput
from gateway.splits.allocation import (
    PPM_WHOLE,
    Part,
    Share,
    ShareKind,
    Shares,
    check_shares,
    remaining,
    split_amount,
    split_refund,
)

amounts = st.integers(min_value=1, max_value=INT64_MAX)


def _cuts(total: int, n: int) -> st.SearchStrategy[list[int]]:
    """n positive integers summing to ``total`` (total >= n)."""
    return st.lists(st.integers(min_value=1, max_value=total - 1), min_size=n - 1, max_size=n - 1, unique=True).map(
        lambda cuts: [b - a for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), total], strict=True)]
    )


@st.composite
def split_cases(draw: st.DrawFn) -> tuple[int, Shares]:
    n = draw(st.integers(min_value=2, max_value=10))
    kind = draw(st.sampled_from(list(ShareKind)))
    if kind is ShareKind.PPM:
        amount = draw(amounts)
        values = draw(_cuts(PPM_WHOLE, n))
    else:
        amount = draw(st.integers(min_value=n, max_value=INT64_MAX))
        values = draw(_cuts(amount, n))
    return amount, Shares(kind, tuple(Share(f"F{i}", v) for i, v in enumerate(values)))


@st.composite
def refund_sequences(draw: st.DrawFn, total: int) -> list[int]:
    """Random partial refunds of at most ``total``; sometimes the last one takes whatever is left."""
    out: list[int] = []
    left = total
    for _ in range(draw(st.integers(min_value=0, max_value=8))):
        if left == 0:
            break
        piece = draw(st.integers(min_value=1, max_value=left))
        out.append(piece)
        left -= piece
    if left and draw(st.booleans()):
        out.append(left)
    return out


@settings(max_examples=400, deadline=None)  # a loaded CI machine must not make it flaky
@given(split_cases())
def test_parts_sum_exactly_and_none_is_negative(case: tuple[int, Shares]) -> None:
    amount, shares = case
    check_shares(shares, amount)
    parts = split_amount(amount, shares)
    assert sum(p.amount for p in parts) == amount
    assert all(p.amount >= 0 for p in parts)
    assert [p.funder_id for p in parts] == list(shares.funder_ids)
    if shares.kind is ShareKind.FIXED:
        assert [p.amount for p in parts] == [s.value for s in shares.items]
    else:  # each part is within one cent of its exact proportion
        for part, share in zip(parts, shares.items, strict=True):
            assert abs(part.amount * PPM_WHOLE - amount * share.value) < PPM_WHOLE
    assert split_amount(amount, shares) == parts  # deterministic


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_refunds_never_exceed_a_share_and_a_full_refund_returns_each_share(data: st.DataObject) -> None:
    amount, shares = data.draw(split_cases())
    parts = split_amount(amount, shares)
    refunds = data.draw(refund_sequences(amount))
    splits: list[tuple[Part, ...]] = []
    for refund in refunds:
        held = remaining(parts, splits)
        piece = split_refund(refund, held)
        assert sum(p.amount for p in piece) == refund
        for got, had in zip(piece, held, strict=True):
            assert 0 <= got.amount <= had.amount  # nobody refunded beyond what it holds
        splits.append(piece)
    left = remaining(parts, splits)
    assert all(p.amount >= 0 for p in left)
    refunded = {p.funder_id: p.amount - q.amount for p, q in zip(parts, left, strict=True)}
    assert sum(refunded.values()) == sum(refunds)
    if sum(refunds) == amount:  # the whole refunded in pieces: each funder got back exactly its share
        assert all(q.amount == 0 for q in left)
        assert refunded == {p.funder_id: p.amount for p in parts}


def test_the_tie_goes_to_the_funder_listed_first() -> None:
    shares = Shares(ShareKind.PPM, (Share("A", 500_000), Share("B", 500_000)))
    assert [p.amount for p in split_amount(1, shares)] == [1, 0]
    swapped = Shares(ShareKind.PPM, (Share("B", 500_000), Share("A", 500_000)))
    assert split_amount(1, swapped) == (Part("B", 1), Part("A", 0))


def test_thirty_seventy_of_an_uneven_amount() -> None:
    shares = Shares(ShareKind.PPM, (Share("XD", 300_000), Share("BANK", 700_000)))
    assert split_amount(10001, shares) == (Part("XD", 3000), Part("BANK", 7001))


def test_a_refund_beyond_what_is_held_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        split_refund(11, (Part("A", 5), Part("B", 5)))


@pytest.mark.parametrize(
    ("shares", "amount", "field"),
    [
        (Shares(ShareKind.PPM, (Share("A", 1_000_000),)), 100, "shares"),
        (Shares(ShareKind.PPM, (Share("A", 300_000), Share("B", 600_000))), 100, "shares.ppm"),
        (Shares(ShareKind.PPM, (Share("A", 1_000_000), Share("B", 0))), 100, "shares[1].ppm"),
        (Shares(ShareKind.FIXED, (Share("A", 30), Share("B", 71))), 100, "shares.amount"),
        (Shares(ShareKind.FIXED, (Share("A", 50), Share("A", 50))), 100, "shares[1].funder_id"),
        (Shares(ShareKind.PPM, tuple(Share(f"F{i}", 1) for i in range(11))), 100, "shares"),
    ],
)
def test_bad_shares_name_the_field(shares: Shares, amount: int, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        check_shares(shares, amount)
    assert err.value.field == field
