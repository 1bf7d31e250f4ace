"""Shares as requests carry them (``paygate.v1.FunderShare``) → checked :class:`Shares`."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.errors import InvalidInput
from gateway.splits.allocation import Share, ShareKind, Shares, check_shares
from gateway.splits.funders import FUNDER_ID
from paygate.v1 import gateway_pb2

# A share as a request carries it: (funder_id, ppm, amount); one of ppm and amount set.
RawShare = tuple[str, int, int]


def raw_shares(items: Sequence[gateway_pb2.FunderShare]) -> tuple[RawShare, ...]:
    return tuple((s.funder_id, s.ppm, s.amount) for s in items)


def shares_from_pb(items: Sequence[gateway_pb2.FunderShare], amount: int, *, field: str = "shares") -> Shares | None:
    """The request's shares (None when it has none), checked against ``amount``; InvalidInput names the field."""
    return check_raw_shares(raw_shares(items), amount, field=field)


def check_raw_shares(items: Sequence[RawShare], amount: int, *, field: str = "shares") -> Shares | None:
    """:func:`shares_from_pb` on ``(funder_id, ppm, amount)`` triples.

    Each share sets ``ppm`` or ``amount``, and every share of a request the same one.
    """
    if not items:
        return None
    kinds: set[ShareKind] = set()
    out: list[Share] = []
    for i, (funder_id, ppm, fixed) in enumerate(items):
        if not FUNDER_ID.fullmatch(funder_id):
            raise InvalidInput(f"{field}[{i}].funder_id", "must be a funder id (1-32 chars a-z 0-9 . _ -)")
        if ppm and fixed:
            raise InvalidInput(f"{field}[{i}]", "set ppm or amount, never both")
        if ppm < 0 or fixed < 0:
            raise InvalidInput(f"{field}[{i}].{'ppm' if ppm < 0 else 'amount'}", "must be positive")
        if not ppm and not fixed:
            raise InvalidInput(f"{field}[{i}]", "set ppm (parts per million) or amount (minor units)")
        kind = ShareKind.PPM if ppm else ShareKind.FIXED
        kinds.add(kind)
        out.append(Share(funder_id, ppm or fixed))
    if len(kinds) > 1:
        raise InvalidInput(field, "all shares are proportions (ppm) or all are fixed amounts, never both")
    return check_shares(Shares(kinds.pop(), tuple(out)), amount, field=field)
