"""The arithmetic of joint-loan splits (pure: no I/O).

A split withhold names its funders' **shares**, one of two kinds, never both:

* **proportions** in parts per million (ppm), summing to exactly 1,000,000;
* **fixed amounts** in minor units, summing to exactly the withhold's amount.

:func:`split_amount` turns shares into **parts** (one per funder, in the
order the shares were given) that always sum to the amount, none negative.
Proportions use largest-remainder allocation (:func:`gateway.domain.allocate`):
each funder gets ``floor(amount * ppm / 1e6)``, and the cents still missing go
one each to the funders with the largest remainders.

**Tie rule** (documented, deterministic): among equal remainders the funder
listed *earlier* in the request gets the cent. The same request (same amount,
same shares in the same order) always gives the same cents; the order is part
of the request, and so of its idempotency hash.

:func:`split_refund` splits a refund against what each funder **still holds**
of the withhold (its part minus its earlier refunds), by the same largest
remainder rule with the held amounts as weights. Because a refund never
exceeds the total still held, no funder is ever given back more than it
holds (``floor(r*h/H) + 1 <= h`` when ``r < H``), and the refund of
everything still held returns each funder exactly what it holds: refunding
the whole withhold in any number of pieces returns each share exactly.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.domain import allocate
from gateway.errors import InvalidInput

PPM_WHOLE = 1_000_000
MIN_FUNDERS = 2
MAX_FUNDERS = 10


class ShareKind(enum.StrEnum):
    PPM = "ppm"
    FIXED = "fixed"


@dataclass(frozen=True)
class Share:
    """One funder's share: ``value`` ppm or fixed minor units, as the share set's kind says."""

    funder_id: str
    value: int


@dataclass(frozen=True)
class Shares:
    """The shares of one withhold, all of one kind, in the order the request gave them."""

    kind: ShareKind
    items: tuple[Share, ...]

    @property
    def funder_ids(self) -> tuple[str, ...]:
        return tuple(s.funder_id for s in self.items)


@dataclass(frozen=True)
class Part:
    """One funder's part of an amount (a small order, 小订单), minor units; ``refunded``: of a withhold's
    part as stored, what succeeded refunds have taken back so far."""

    funder_id: str
    amount: int
    refunded: int = 0


def check_shares(shares: Shares, amount: int, *, field: str = "shares") -> Shares:
    """``shares`` if they are a valid split of ``amount``; else :class:`InvalidInput` naming the field.

    2-10 funders, each named once, each share positive; ppm summing to exactly
    1,000,000, fixed amounts summing to exactly ``amount``.
    """
    n = len(shares.items)
    if not MIN_FUNDERS <= n <= MAX_FUNDERS:
        raise InvalidInput(field, f"a split needs {MIN_FUNDERS} to {MAX_FUNDERS} funders, got {n}")
    seen: set[str] = set()
    for i, share in enumerate(shares.items):
        if share.funder_id in seen:
            raise InvalidInput(f"{field}[{i}].funder_id", f"funder {share.funder_id!r} is named twice")
        seen.add(share.funder_id)
        if share.value <= 0:
            raise InvalidInput(f"{field}[{i}].{shares.kind.value}", "must be positive")
    total = sum(s.value for s in shares.items)
    if shares.kind is ShareKind.PPM and total != PPM_WHOLE:
        raise InvalidInput(f"{field}.ppm", f"the proportions must sum to exactly {PPM_WHOLE} ppm, got {total}")
    if shares.kind is ShareKind.FIXED and total != amount:
        raise InvalidInput(f"{field}.amount", f"the fixed amounts must sum to exactly the amount {amount}, got {total}")
    return shares


def split_amount(amount: int, shares: Shares) -> tuple[Part, ...]:
    """The funders' parts of ``amount`` (minor units, >= 0): they sum to ``amount`` exactly, none negative.

    A part may be 0 when ``amount`` has fewer fen than the proportions need (1 fen at 50 : 50 is
    1 and 0; an instalment's fixed amounts fitted down, :func:`fit`, likewise): the 0 part is a
    small order of 0, written and shown, refunded nothing (:func:`split_refund` weighs by what is
    held) and adding 0 to its funder's settlement (tests/integration/test_adversarial_splits.py).

    ``shares`` must have passed :func:`check_shares` for ``amount``.
    """
    if amount <= 0:
        raise ValueError("amount: must be positive")
    if shares.kind is ShareKind.FIXED:
        values = [s.value for s in shares.items]
        if sum(values) != amount:
            raise ValueError("shares: fixed amounts do not sum to the amount")
    else:
        values = allocate(amount, [s.value for s in shares.items])
    return tuple(Part(s.funder_id, v) for s, v in zip(shares.items, values, strict=True))


def fit(shares: Shares, amount: int) -> Shares:
    """``shares`` for another ``amount`` than they were given for (an instalment amended down).

    Proportions fit any amount as they are. Fixed amounts that no longer sum to ``amount``
    become fixed amounts that do, allocated by the old amounts as weights (largest remainder).
    """
    if shares.kind is ShareKind.PPM or sum(s.value for s in shares.items) == amount:
        return shares
    values = allocate(amount, [s.value for s in shares.items])
    return Shares(ShareKind.FIXED, tuple(Share(s.funder_id, v) for s, v in zip(shares.items, values, strict=True)))


def split_refund(refund: int, held: Sequence[Part]) -> tuple[Part, ...]:
    """The funders' parts of a refund of ``refund`` minor units, against what each still ``held``.

    Every part is between 0 and what that funder holds; the parts sum to
    ``refund``. Raises ValueError when ``refund`` exceeds the total held.
    """
    if refund <= 0:
        raise ValueError("refund: must be positive")
    if any(p.amount < 0 for p in held):
        raise ValueError("held: must not be negative")
    total = sum(p.amount for p in held)
    if refund > total:
        raise ValueError(f"refund: {refund} exceeds the {total} the funders still hold")
    values = allocate(refund, [p.amount for p in held])
    return tuple(Part(p.funder_id, v) for p, v in zip(held, values, strict=True))


def remaining(parts: Sequence[Part], refunds: Sequence[Sequence[Part]]) -> tuple[Part, ...]:
    """What each funder still holds of ``parts`` after ``refunds`` (each a split from :func:`split_refund`)."""
    left = {p.funder_id: p.amount for p in parts}
    for refund in refunds:
        for part in refund:
            left[part.funder_id] -= part.amount
    return tuple(Part(p.funder_id, left[p.funder_id]) for p in parts)


# --- the shares as kept on the flow (flows.split_shares) -------------------------------

REFUND_MARKER = '{"refund":true}'


def shares_json(shares: Shares) -> str:
    """The shares as the flow keeps them: kind and the ordered ``[funder_id, value]`` pairs."""
    return json.dumps(
        {"kind": shares.kind.value, "shares": [[s.funder_id, s.value] for s in shares.items]}, separators=(",", ":")
    )


def shares_from_json(text: str) -> Shares:
    """The inverse of :func:`shares_json`."""
    raw = json.loads(text)
    return Shares(ShareKind(raw["kind"]), tuple(Share(str(fid), int(v)) for fid, v in raw["shares"]))


def is_refund_marker(text: str | None) -> bool:
    return text == REFUND_MARKER
