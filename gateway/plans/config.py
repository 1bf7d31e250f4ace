"""The ``[plans]`` table: executor settings, policies, product and caller mapping, rate limits.

::

    [plans]
    enabled = true              # run the executor on this replica (the API is always served)
    scheduler = true            # start each time point's run by itself; false: operators start runs
    concurrency = 32            # withholds in flight per replica
    claim_batch = 32            # instalments claimed per round trip
    lease_s = 60.0              # a claim not acted on for this long can be taken over
    wait_s = 20.0               # how long the executor waits for a withhold's result before leaving it in flight
    tick_s = 1.0                # how often an idle replica looks for runs and work
    resolve_interval_s = 2.0    # how often in-flight withholds are checked for their result
    burst_s = 0.2               # a channel's token bucket holds rate x burst_s tokens (at least 1)

    [plans.policies.default]    # a policy; "default" serves plans nothing else maps
    time_points = ["12:00", "18:00"]   # HH:MM in the business timezone ([business] timezone)
    attempts_per_day = 0        # 0: one attempt per time point
    retry_days = 3              # keep trying this many days after the due date
    max_attempts = 0            # in all; 0 = bounded by attempts_per_day x days only
    retry_codes = ["INSUFFICIENT_FUNDS", ...]   # retried at the next time point
    stop_codes = ["ACCOUNT_FROZEN", ...]        # stop the instalment and report it
    retry_unknown = false       # a code in neither list: retry (true) or stop (false)
    quiet_start = "22:00"       # no withholds from quiet_start to quiet_end (both or neither)
    quiet_end = "07:00"

    [plans.products]            # product -> policy
    cash-loan = "default"
    [plans.callers]             # caller -> policy, for products not listed above
    loan-servicing = "default"
    [plans.rate_limits]         # channel id -> plan withholds per second, all replicas together
    icbc-direct = 50

A plan's policy is its product's, else its caller's, else ``default``; a plan that maps to no
policy is refused at submission. The tables are read by the one configuration reader
(:func:`channels.config.read`): every problem is a ``ConfigError`` naming the key, and start-up stops.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from typing import Annotated, Any

from pydantic import AfterValidator, Field, PlainValidator

from channels.config import TABLE, ConfigError, join
from gateway.businessday import parse_hhmm
from gateway.plans.policy import DEFAULT_RETRY_CODES, DEFAULT_STOP_CODES, Policy, QuietWindow, check_policy

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
_CODE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _hhmm(value: object) -> time:
    if not isinstance(value, str):
        raise ValueError(f"must be a string HH:MM, got {type(value).__name__}")
    return parse_hhmm(value)


def _codes(value: object) -> frozenset[str]:
    if not isinstance(value, list | tuple | frozenset | set):
        raise ValueError("must be an array of failure codes")
    for i, code in enumerate(value):
        if not isinstance(code, str) or not code or not set(code) <= _CODE_CHARS or len(code) > 64:
            raise ConfigError(f"[{i}]", "must be an upper-case failure code like INSUFFICIENT_FUNDS")
    return frozenset(value)


def _time_points(value: object) -> tuple[time, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError('must be a non-empty array of "HH:MM" time points')
    points = []
    for i, item in enumerate(value):
        try:
            points.append(_hhmm(item))
        except ValueError as exc:
            raise ConfigError(f"[{i}]", str(exc)) from None
    return tuple(points)


def _name(value: str) -> str:
    if not value or len(value) > 64 or not set(value) <= _NAME_CHARS:
        raise ValueError("names are 1-64 chars of a-z 0-9 . _ -")
    return value


HHMM = Annotated[time, PlainValidator(_hhmm)]
Codes = Annotated[frozenset[str], PlainValidator(_codes)]
Name = Annotated[str, AfterValidator(_name)]


@dataclass(frozen=True)
class PolicyConfig:
    """``[plans.policies.<name>]``: when and how often an instalment is tried (gateway/plans/policy.py)."""

    __pydantic_config__ = TABLE

    time_points: Annotated[tuple[time, ...], PlainValidator(_time_points)]  # HH:MM, business timezone
    attempts_per_day: Annotated[int, Field(ge=0, le=48)] = 0  # 0: one per time point
    retry_days: Annotated[int, Field(ge=0, le=366)] = 3  # days after the due date to keep trying
    max_attempts: Annotated[int, Field(ge=0, le=10_000)] = 0  # in all; 0: no cap beyond the days
    retry_codes: Codes = frozenset(DEFAULT_RETRY_CODES)  # retried at the next time point
    stop_codes: Codes = frozenset(DEFAULT_STOP_CODES)  # stop the instalment and report it
    retry_unknown: bool = False  # a code in neither list: retry (true) or stop (false)
    quiet_start: HHMM | None = None  # no withholds from quiet_start ...
    quiet_end: HHMM | None = None  # ... to quiet_end (both or neither)

    def policy(self, name: str) -> Policy:
        quiet = None
        if self.quiet_start is not None and self.quiet_end is not None:
            quiet = QuietWindow(self.quiet_start, self.quiet_end)
        return Policy(
            name=name,
            time_points=self.time_points,
            attempts_per_day=self.attempts_per_day or len(self.time_points),
            retry_days=self.retry_days,
            max_attempts=self.max_attempts,
            retry_codes=self.retry_codes,
            stop_codes=self.stop_codes,
            retry_unknown=self.retry_unknown,
            quiet=quiet,
        )

    def check_config(self, key: str) -> None:
        if (self.quiet_start is None) != (self.quiet_end is None):
            missing = "quiet_end" if self.quiet_end is None else "quiet_start"
            raise ConfigError(join(key, missing), "quiet_start and quiet_end go together")
        problems = check_policy(self.policy("-"), key)
        if problems:
            raise ConfigError(*problems[0])


@dataclass(frozen=True)
class PlansConfig:
    """``[plans]``: see the module docstring."""

    __pydantic_config__ = TABLE

    enabled: bool = True  # run the executor on this replica
    scheduler: bool = True  # start each time point's run by itself (false: operators start them)
    concurrency: Annotated[int, Field(ge=1, le=1024)] = 32  # withholds in flight per replica
    claim_batch: Annotated[int, Field(ge=1, le=1000)] = 32  # instalments claimed per round trip
    lease_s: Annotated[float, Field(ge=1, le=3600)] = 60.0  # a claim not acted on for this long is taken over
    wait_s: Annotated[float, Field(ge=0, le=600)] = 20.0  # wait for a withhold's result, then leave it in flight
    tick_s: Annotated[float, Field(ge=0.01, le=60)] = 1.0  # an idle replica looks for runs and work this often
    resolve_interval_s: Annotated[float, Field(ge=0.01, le=600)] = 2.0  # in-flight withholds checked this often
    burst_s: Annotated[float, Field(ge=0.01, le=60)] = 0.2  # a bucket holds rate x burst_s tokens (at least 1)
    policies: Mapping[Name, PolicyConfig] = field(default_factory=dict)
    products: Mapping[str, str] = field(default_factory=dict)  # product -> policy
    callers: Mapping[str, str] = field(default_factory=dict)  # caller -> policy, for products not listed
    rate_limits: Mapping[str, Annotated[float, Field(gt=0)]] = field(default_factory=dict)  # channel -> per second

    def check_config(self, key: str) -> None:
        for table in ("products", "callers"):
            for name, target in getattr(self, table).items():
                if not name or len(name) > 64:
                    raise ConfigError(join(join(key, table), name), "names are 1-64 characters")
                if target not in self.policies:
                    known = ", ".join(sorted(self.policies)) or "none configured"
                    raise ConfigError(join(join(key, table), name), f"must name a policy in [plans.policies] ({known})")
        if self.wait_s >= self.lease_s:
            raise ConfigError(join(key, "wait_s"), f"must be shorter than lease_s ({self.lease_s:g})")

    def policy_objects(self) -> dict[str, Policy]:
        return {name: table.policy(name) for name, table in self.policies.items()}

    def policy_for(self, caller: str, product: str) -> str | None:
        """The name of the policy a plan of ``caller`` for ``product`` runs under, or None."""
        name = self.products.get(product) or self.callers.get(caller)
        if name is None and "default" in self.policies:
            name = "default"
        return name

    def product_label(self, product: str) -> str:
        """The metrics label of a product: configured products by name, every other one as ``other``."""
        return product if product in self.products else "other"

    def check_channels(self, channels: set[str], key: str = "plans") -> None:
        """Raise for a rate limit on a channel that is not configured."""
        for channel in sorted(self.rate_limits):
            if channel not in channels:
                raise ConfigError(join(join(key, "rate_limits"), channel), "no such channel in [[channels]]")


def plans_table(**values: Any) -> PlansConfig:
    """A :class:`PlansConfig` from TOML-shaped values, checked like a configuration file (tests, benchmarks)."""
    from channels.config import read

    return read(PlansConfig, values, "plans")
