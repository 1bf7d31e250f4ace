"""What a simulated channel does with each order: :class:`Fate`, :class:`Behaviour` and the magic amounts.

Magic amounts
-------------

When ``Behaviour.magic`` is on (the default) the fate of a money order
(withhold, payout, refund) is fixed by ``amount % 100`` (minor units), before
any random mix is drawn. ``12301`` (123.01 CNY) is therefore always declined
for insufficient funds::

    amount % 100  fate                 what the simulator does
    ------------  -------------------  ------------------------------------------------
    01            INSUFFICIENT_FUNDS   declines, payer-attributable, nothing moved
    02            ACCOUNT_FROZEN       declines, payer-attributable, nothing moved
    03            CHANNEL_BUSY         declines, nothing executed, safe elsewhere
    04            BANK_NOT_SUPPORTED   declines, nothing executed, safe elsewhere
    05            PENDING_THEN_SUCCEED answers "processing"; after the settle delay the
                                       money moves, the order SUCCEEDS, a callback goes out
    06            PENDING_THEN_FAIL    answers "processing"; after the settle delay the
                                       order FAILS (insufficient funds), a callback goes out
    07            TIMEOUT              executes and moves the money, then holds the
                                       response past the client's timeout and drops it
    08            ERROR_5XX            executes and moves the money, then answers HTTP 500
    09            UNMAPPED_CODE        executes successfully but answers with a raw code
                                       that is in no error table (a query says success)
    anything else random mix           ``Behaviour`` ratios; by default every order succeeds

An outage (``Behaviour.outage`` or a current ``outage_windows`` entry) refuses
every order request before any processing: nothing is recorded or executed.
"""

from __future__ import annotations

import enum
import math
import numbers
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from channels.registry import ChannelConfigError


class Fate(enum.StrEnum):
    """What a simulator does with one new money order."""

    SUCCEED = "succeed"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    ACCOUNT_FROZEN = "account_frozen"
    CHANNEL_BUSY = "channel_busy"
    BANK_NOT_SUPPORTED = "bank_not_supported"
    PENDING_THEN_SUCCEED = "pending_then_succeed"
    PENDING_THEN_FAIL = "pending_then_fail"
    TIMEOUT = "timeout"
    ERROR_5XX = "error_5xx"
    UNMAPPED_CODE = "unmapped_code"


MAGIC: dict[int, Fate] = {
    1: Fate.INSUFFICIENT_FUNDS,
    2: Fate.ACCOUNT_FROZEN,
    3: Fate.CHANNEL_BUSY,
    4: Fate.BANK_NOT_SUPPORTED,
    5: Fate.PENDING_THEN_SUCCEED,
    6: Fate.PENDING_THEN_FAIL,
    7: Fate.TIMEOUT,
    8: Fate.ERROR_5XX,
    9: Fate.UNMAPPED_CODE,
}

# Outcomes the random decline mix may draw, keyed by their normalized name.
DECLINE_KINDS: tuple[str, ...] = ("insufficient_funds", "account_frozen", "channel_busy", "bank_not_supported")

_Z99 = 2.3263478740408408  # standard normal quantile at 0.99


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass
class Behaviour:
    """How a simulator behaves. Mutable at runtime (admin endpoint, tests); always valid.

    Ratios are probabilities in [0, 1] drawn per new order; their sum must not
    exceed 1 (the rest succeeds). Times: ``*_ms`` milliseconds, ``*_s``
    seconds, ``outage_windows`` are ``[start, end)`` epoch seconds.

    * ``p50_ms``/``p99_ms``: response latency, lognormal with these quantiles; 0 = none.
    * ``declines``: probability per kind in :data:`DECLINE_KINDS`.
    * ``pending_ratio``: answer "processing", settle after ``settle_after_ms``
      (uniform in the range); ``settle_success_ratio`` of those succeed.
    * ``timeout_ratio``: execute, hold the response ``timeout_hold_s``, drop it.
    * ``error_5xx_ratio``: execute, answer HTTP 500.
    * ``unmapped_ratio``: execute, answer with an unmapped raw code.
    * ``outage``/``outage_windows``: refuse requests before any processing.
    * ``notify_final``: also send a callback for orders that end at once (not
      only for pending ones that settle later).
    * ``magic``: the ``amount % 100`` table in the module docstring.
    """

    p50_ms: float = 0.0
    p99_ms: float = 0.0
    declines: dict[str, float] = field(default_factory=dict)
    pending_ratio: float = 0.0
    settle_after_ms: tuple[int, int] = (200, 500)
    settle_success_ratio: float = 1.0
    timeout_ratio: float = 0.0
    error_5xx_ratio: float = 0.0
    unmapped_ratio: float = 0.0
    timeout_hold_s: float = 15.0
    outage_windows: list[tuple[float, float]] = field(default_factory=list)
    outage: bool = False
    notify_final: bool = False
    magic: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        self.validate("behaviour")

    # -- construction and updates --

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], key: str = "behaviour") -> Behaviour:
        """Build from a config mapping; raises ChannelConfigError naming ``key.<field>``."""
        if not isinstance(settings, Mapping):
            raise ChannelConfigError(key, "must be a table of behaviour settings")
        known = {f.name for f in fields(cls)}
        for name in settings:
            if name not in known:
                raise ChannelConfigError(
                    f"{key}.{name}", f"unknown behaviour setting (known: {', '.join(sorted(known))})"
                )
        values = dict(settings)
        if "settle_after_ms" in values:
            values["settle_after_ms"] = _pair(values["settle_after_ms"], f"{key}.settle_after_ms")
        if "outage_windows" in values:
            raw = values["outage_windows"]
            if not isinstance(raw, list | tuple):
                raise ChannelConfigError(f"{key}.outage_windows", "must be a list of [start, end] pairs")
            values["outage_windows"] = [_pair(w, f"{key}.outage_windows[{i}]") for i, w in enumerate(raw)]
        if "declines" in values:
            raw = values["declines"]
            if not isinstance(raw, Mapping):
                raise ChannelConfigError(f"{key}.declines", "must be a table of kind = probability")
            values["declines"] = dict(raw)
        behaviour = cls.__new__(cls)
        for f in fields(cls):
            default: Any = f.default_factory() if callable(f.default_factory) else f.default
            setattr(behaviour, f.name, values.get(f.name, default))
        behaviour.validate(key)
        return behaviour

    def update(self, changes: Mapping[str, Any], key: str = "behaviour") -> None:
        """Apply ``changes`` in place, all or nothing (validated first)."""
        merged = {**self.to_settings(), **changes}
        fresh = Behaviour.from_settings(merged, key)
        for f in fields(self):
            setattr(self, f.name, getattr(fresh, f.name))

    def to_settings(self) -> dict[str, Any]:
        """A JSON-able mapping that :meth:`from_settings` accepts."""
        return {
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "declines": dict(self.declines),
            "pending_ratio": self.pending_ratio,
            "settle_after_ms": list(self.settle_after_ms),
            "settle_success_ratio": self.settle_success_ratio,
            "timeout_ratio": self.timeout_ratio,
            "error_5xx_ratio": self.error_5xx_ratio,
            "unmapped_ratio": self.unmapped_ratio,
            "timeout_hold_s": self.timeout_hold_s,
            "outage_windows": [list(w) for w in self.outage_windows],
            "outage": self.outage,
            "notify_final": self.notify_final,
            "magic": self.magic,
            "seed": self.seed,
        }

    def validate(self, key: str = "behaviour") -> None:
        """Raise ChannelConfigError naming ``key.<field>`` when a value is out of range."""
        for name in ("p50_ms", "p99_ms", "timeout_hold_s"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0 or not math.isfinite(value):
                raise ChannelConfigError(f"{key}.{name}", f"must be a finite number >= 0, got {value!r}")
        if self.p99_ms < self.p50_ms:
            raise ChannelConfigError(f"{key}.p99_ms", "must be >= p50_ms")
        if self.p50_ms == 0 and self.p99_ms > 0:
            raise ChannelConfigError(f"{key}.p50_ms", "must be > 0 when p99_ms is set")
        if not isinstance(self.declines, dict):
            raise ChannelConfigError(f"{key}.declines", "must be a table of kind = probability")
        for kind, ratio in self.declines.items():
            if kind not in DECLINE_KINDS:
                raise ChannelConfigError(
                    f"{key}.declines.{kind}", f"unknown decline kind (known: {', '.join(DECLINE_KINDS)})"
                )
            _check_ratio(ratio, f"{key}.declines.{kind}")
        for name in ("pending_ratio", "settle_success_ratio", "timeout_ratio", "error_5xx_ratio", "unmapped_ratio"):
            _check_ratio(getattr(self, name), f"{key}.{name}")
        total = sum(self.declines.values()) + self.pending_ratio + self.timeout_ratio
        total += self.error_5xx_ratio + self.unmapped_ratio
        if total > 1.0 + 1e-9:
            raise ChannelConfigError(key, f"declines and ratios add up to {total:.3f} > 1")
        low, high = _pair(self.settle_after_ms, f"{key}.settle_after_ms")
        if low < 0 or high < low:
            raise ChannelConfigError(f"{key}.settle_after_ms", "must be [low, high] with 0 <= low <= high")
        for i, window in enumerate(self.outage_windows):
            start, end = _pair(window, f"{key}.outage_windows[{i}]")
            if not start < end:
                raise ChannelConfigError(f"{key}.outage_windows[{i}]", "start must be before end")
        for name in ("outage", "notify_final", "magic"):
            if not isinstance(getattr(self, name), bool):
                raise ChannelConfigError(f"{key}.{name}", "must be true or false")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise ChannelConfigError(f"{key}.seed", "must be an integer")

    # -- decisions --

    def in_outage(self, now: float | None = None) -> bool:
        """True while requests must be refused before any processing."""
        if self.outage:
            return True
        at = time.time() if now is None else now
        return any(start <= at < end for start, end in self.outage_windows)

    def decide(self, amount: int, rng: random.Random) -> Fate:
        """The fate of a new money order: magic amount first, then the random mix."""
        if self.magic:
            magic = MAGIC.get(amount % 100)
            if magic is not None:
                return magic
        draw = rng.random()
        mix: list[tuple[float, Fate]] = [(self.declines.get(kind, 0.0), Fate(kind)) for kind in DECLINE_KINDS]
        mix += [
            (self.pending_ratio, Fate.PENDING_THEN_SUCCEED),
            (self.timeout_ratio, Fate.TIMEOUT),
            (self.error_5xx_ratio, Fate.ERROR_5XX),
            (self.unmapped_ratio, Fate.UNMAPPED_CODE),
        ]
        edge = 0.0
        for ratio, fate in mix:
            edge += ratio
            if draw < edge:
                if fate is Fate.PENDING_THEN_SUCCEED and rng.random() >= self.settle_success_ratio:
                    return Fate.PENDING_THEN_FAIL
                return fate
        return Fate.SUCCEED

    def latency_s(self, rng: random.Random) -> float:
        """One response latency sample in seconds (0 when latency is off)."""
        if self.p50_ms <= 0:
            return 0.0
        mu = math.log(self.p50_ms)
        sigma = (math.log(self.p99_ms) - mu) / _Z99 if self.p99_ms > self.p50_ms else 0.0
        return rng.lognormvariate(mu, sigma) / 1000.0

    def settle_delay_s(self, rng: random.Random) -> float:
        low, high = self.settle_after_ms
        return rng.uniform(low, high) / 1000.0


def _check_ratio(value: object, key: str) -> None:
    if not _is_number(value) or not 0.0 <= float(value) <= 1.0:  # type: ignore[arg-type]
        raise ChannelConfigError(key, f"must be a probability in [0, 1], got {value!r}")


def _pair(value: object, key: str) -> tuple[Any, Any]:
    if not isinstance(value, list | tuple) or len(value) != 2 or not all(_is_number(v) for v in value):
        raise ChannelConfigError(key, f"must be a [low, high] pair of numbers, got {value!r}")
    return value[0], value[1]
