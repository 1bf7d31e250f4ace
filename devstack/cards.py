"""Test card numbers: random digits behind a bank prefix, with a valid Luhn check digit."""

from __future__ import annotations

import random

from gateway.domain import luhn_valid as luhn_ok


def luhn_card(rng: random.Random | None = None, *, prefix: str = "622202", length: int = 16) -> str:
    """A ``length``-digit card number starting with ``prefix`` that passes the gateway's Luhn check.

    Draws ``length - len(prefix) - 1`` digits from ``rng`` (a fresh unseeded
    one by default), so a seeded ``rng`` gives the same cards every run.
    """
    r = rng or random.Random()
    body = prefix + "".join(str(r.randrange(10)) for _ in range(length - len(prefix) - 1))
    # the one check digit that makes the number valid, by the same arithmetic the gateway validates with
    return next(body + digit for digit in "0123456789" if luhn_ok(body + digit))
