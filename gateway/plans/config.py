"""The ``[plans]`` configuration table: executor settings, policies, product and caller mapping, rate limits.

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
    attempts_per_day = 2
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
policy is refused at submission. Every problem raises :class:`PlanConfigError` naming the key,
and start-up stops.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from types import MappingProxyType
from typing import Any

from gateway.businessday import parse_hhmm
from gateway.plans.policy import DEFAULT_RETRY_CODES, DEFAULT_STOP_CODES, Policy, QuietWindow, check_policy

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-")
_CODE_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class PlanConfigError(ValueError):
    """A ``[plans]`` setting is wrong; ``key`` is its full dotted name."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class PlansConfig:
    enabled: bool = True
    scheduler: bool = True
    concurrency: int = 32
    claim_batch: int = 32
    lease_s: float = 60.0
    wait_s: float = 20.0
    tick_s: float = 1.0
    resolve_interval_s: float = 2.0
    burst_s: float = 0.2
    policies: Mapping[str, Policy] = field(default_factory=lambda: _frozen({}))
    products: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    callers: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    rate_limits: Mapping[str, float] = field(default_factory=lambda: _frozen({}))

    def policy_for(self, caller: str, product: str) -> str | None:
        """The name of the policy a plan of ``caller`` for ``product`` runs under, or None."""
        name = self.products.get(product) or self.callers.get(caller)
        if name is None and "default" in self.policies:
            name = "default"
        return name

    def product_label(self, product: str) -> str:
        """The metrics label of a product: configured products by name, every other one as ``other``."""
        return product if product in self.products else "other"

    def check_channels(self, channels: set[str]) -> None:
        """Raise for a rate limit on a channel that is not configured."""
        for channel in sorted(self.rate_limits):
            if channel not in channels:
                raise PlanConfigError(f"plans.rate_limits.{channel}", "no such channel in [[channels]]")


class _Table:
    def __init__(self, raw: Any, key: str) -> None:
        if not isinstance(raw, Mapping):
            raise PlanConfigError(key, "must be a table")
        self.raw: Mapping[str, Any] = raw
        self.key = key
        self.used: set[str] = set()

    def get(self, name: str, default: Any) -> Any:
        self.used.add(name)
        return self.raw.get(name, default)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise PlanConfigError(f"{self.key}.{name}", f"must be true or false, got {value!r}")
        return value

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise PlanConfigError(f"{self.key}.{name}", f"must be an integer from {lo} to {hi}, got {value!r}")
        return value

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise PlanConfigError(f"{self.key}.{name}", f"must be a number, got {value!r}")
        if not lo <= value <= hi:
            raise PlanConfigError(f"{self.key}.{name}", f"must be from {lo} to {hi}, got {value!r}")
        return float(value)

    def table(self, name: str) -> Mapping[str, Any]:
        value = self.get(name, {})
        if not isinstance(value, Mapping):
            raise PlanConfigError(f"{self.key}.{name}", "must be a table")
        return value

    def hhmm(self, name: str) -> time | None:
        value = self.get(name, None)
        if value is None:
            return None
        if not isinstance(value, str):
            raise PlanConfigError(f"{self.key}.{name}", f"must be a string HH:MM, got {value!r}")
        try:
            return parse_hhmm(value)
        except ValueError as exc:
            raise PlanConfigError(f"{self.key}.{name}", str(exc)) from None

    def codes(self, name: str, default: tuple[str, ...]) -> frozenset[str]:
        value = self.get(name, list(default))
        if not isinstance(value, list):
            raise PlanConfigError(f"{self.key}.{name}", "must be an array of failure codes")
        for i, code in enumerate(value):
            if not isinstance(code, str) or not code or not set(code) <= _CODE_CHARS or len(code) > 64:
                raise PlanConfigError(f"{self.key}.{name}[{i}]", f"must be an upper-case failure code, got {code!r}")
        return frozenset(value)

    def done(self) -> None:
        extra = sorted(set(self.raw) - self.used)
        if extra:
            raise PlanConfigError(f"{self.key}.{extra[0]}", "unknown key")


def _name(value: str, key: str) -> str:
    if not value or len(value) > 64 or not set(value) <= _NAME_CHARS:
        raise PlanConfigError(key, "names are 1-64 chars of a-z 0-9 . _ -")
    return value


def _policy(name: str, raw: Any, key: str) -> Policy:
    t = _Table(raw, key)
    points_raw = t.get("time_points", None)
    if not isinstance(points_raw, list) or not points_raw:
        raise PlanConfigError(f"{key}.time_points", 'is required: an array of "HH:MM" time points')
    points: list[time] = []
    for i, text in enumerate(points_raw):
        if not isinstance(text, str):
            raise PlanConfigError(f"{key}.time_points[{i}]", f"must be a string HH:MM, got {text!r}")
        try:
            points.append(parse_hhmm(text))
        except ValueError as exc:
            raise PlanConfigError(f"{key}.time_points[{i}]", str(exc)) from None
    quiet_start, quiet_end = t.hhmm("quiet_start"), t.hhmm("quiet_end")
    if (quiet_start is None) != (quiet_end is None):
        missing = "quiet_end" if quiet_end is None else "quiet_start"
        raise PlanConfigError(f"{key}.{missing}", "quiet_start and quiet_end go together")
    policy = Policy(
        name=name,
        time_points=tuple(points),
        attempts_per_day=t.integer("attempts_per_day", min(2, len(points)), 1, 48),
        retry_days=t.integer("retry_days", 3, 0, 366),
        max_attempts=t.integer("max_attempts", 0, 0, 10_000),
        retry_codes=t.codes("retry_codes", DEFAULT_RETRY_CODES),
        stop_codes=t.codes("stop_codes", DEFAULT_STOP_CODES),
        retry_unknown=t.boolean("retry_unknown", False),
        quiet=QuietWindow(quiet_start, quiet_end) if quiet_start is not None and quiet_end is not None else None,
    )
    t.done()
    problems = check_policy(policy, key)
    if problems:
        raise PlanConfigError(*problems[0])
    return policy


def parse_plans(raw: Mapping[str, Any], key: str = "plans") -> PlansConfig:
    """Validate the ``[plans]`` table (TOML types); raises :class:`PlanConfigError` naming the key."""
    t = _Table(raw, key)
    defaults = PlansConfig()
    policies: dict[str, Policy] = {}
    for name, table in t.table("policies").items():
        policy_key = f"{key}.policies.{name}"
        policies[_name(name, policy_key)] = _policy(name, table, policy_key)

    def mapping(table: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, target in t.table(table).items():
            entry_key = f"{key}.{table}.{name}"
            if not isinstance(name, str) or not name or len(name) > 64:
                raise PlanConfigError(entry_key, "names are 1-64 characters")
            if not isinstance(target, str) or target not in policies:
                known = ", ".join(sorted(policies)) or "none configured"
                raise PlanConfigError(entry_key, f"must name a policy in [{key}.policies] ({known}), got {target!r}")
            out[name] = target
        return out

    products = mapping("products")
    callers = mapping("callers")
    rates: dict[str, float] = {}
    for channel, rate in t.table("rate_limits").items():
        entry_key = f"{key}.rate_limits.{channel}"
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) or rate <= 0:
            raise PlanConfigError(entry_key, f"must be a positive number of withholds per second, got {rate!r}")
        rates[channel] = float(rate)
    config = PlansConfig(
        enabled=t.boolean("enabled", defaults.enabled),
        scheduler=t.boolean("scheduler", defaults.scheduler),
        concurrency=t.integer("concurrency", defaults.concurrency, 1, 1024),
        claim_batch=t.integer("claim_batch", defaults.claim_batch, 1, 1000),
        lease_s=t.number("lease_s", defaults.lease_s, 1.0, 3600.0),
        wait_s=t.number("wait_s", defaults.wait_s, 0.0, 600.0),
        tick_s=t.number("tick_s", defaults.tick_s, 0.01, 60.0),
        resolve_interval_s=t.number("resolve_interval_s", defaults.resolve_interval_s, 0.01, 600.0),
        burst_s=t.number("burst_s", defaults.burst_s, 0.01, 60.0),
        policies=_frozen(policies),
        products=_frozen(products),
        callers=_frozen(callers),
        rate_limits=_frozen(rates),
    )
    t.done()
    if config.wait_s >= config.lease_s:
        raise PlanConfigError(f"{key}.wait_s", f"must be shorter than {key}.lease_s ({config.lease_s:g})")
    return config
