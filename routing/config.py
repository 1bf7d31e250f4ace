"""Routing configuration: per-channel profiles and the router's tuning knobs.

Everything here is parsed once at start-up from plain mappings (the TOML
tables) and is immutable afterwards. Bad configuration raises
:class:`RoutingConfigError`, whose message starts with the exact key that is
wrong (``channels[1].fee.rate_ppm: must be >= 0``), so start-up stops with a
message an operator can act on. docs/ROUTING.md lists every key.

Money is integer minor units throughout; rates are parts per million.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from channels.contract import Operation

MINUTES_PER_DAY = 1440
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
# 1970-01-01 was a Thursday: minute 0 of the epoch is minute 3*1440 of an ISO week that starts on Monday.
_EPOCH_WEEK_OFFSET_MIN = 3 * MINUTES_PER_DAY
_DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")
_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")


class RoutingConfigError(ValueError):
    """Bad routing configuration; ``key`` is the exact config key at fault."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class ChannelState(enum.StrEnum):
    """Manual state of a channel, set by configuration or an operator.

    ENABLED takes traffic; DRAINING takes no new transactions (attempts already
    sent still resolve and feed the estimates); DISABLED takes nothing.
    """

    ENABLED = "enabled"
    DRAINING = "draining"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """A channel's fee for one transaction: ``fixed + amount * rate_ppm / 1e6``, clamped to [minimum, maximum].

    All values are minor units except ``rate_ppm`` (parts per million; 3000 = 0.3 %).
    The percentage part rounds half-up in integer arithmetic.
    """

    fixed: int = 0
    rate_ppm: int = 0
    minimum: int = 0
    maximum: int | None = None

    def fee(self, amount: int) -> int:
        variable = (amount * self.rate_ppm + 500_000) // 1_000_000
        value = max(self.fixed + variable, self.minimum)
        if self.maximum is not None:
            value = min(value, self.maximum)
        return value


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """A period in which a channel takes no traffic.

    Recurring: on each of ``days`` (0 = Monday .. 6 = Sunday, the day the window
    *starts*), from ``start`` to ``end`` ("HH:MM" local time at ``utc_offset_min``
    minutes east of UTC). ``end <= start`` means the window crosses midnight
    into the next day. One-off: ``starts_at`` to ``ends_at`` (epoch seconds,
    end exclusive). Use :meth:`recurring` / :meth:`one_off` to build one.
    """

    days: frozenset[int] = frozenset()
    start_min: int = 0
    end_min: int = 0
    utc_offset_min: int = 0
    starts_at: float | None = None
    ends_at: float | None = None
    label: str = ""

    @classmethod
    def recurring(
        cls, days: Iterable[int], start: str, end: str, utc_offset_min: int = 0, label: str = ""
    ) -> MaintenanceWindow:
        return cls(frozenset(days), _hhmm(start), _hhmm(end), utc_offset_min, label=label)

    @classmethod
    def one_off(cls, starts_at: float, ends_at: float, label: str = "") -> MaintenanceWindow:
        return cls(starts_at=starts_at, ends_at=ends_at, label=label)

    @property
    def is_one_off(self) -> bool:
        return self.starts_at is not None

    def week_segments(self) -> list[tuple[int, int]]:
        """The minutes of the (UTC, Monday-based) week this window covers, as half-open segments."""
        if self.starts_at is not None and self.ends_at is not None:
            start = int(self.starts_at // 60)
            end = -(-int(self.ends_at) // 60)
            if end - start >= MINUTES_PER_WEEK:
                return [(0, MINUTES_PER_WEEK)]
            return _wrap(start + _EPOCH_WEEK_OFFSET_MIN, end - start)
        length = (self.end_min - self.start_min) % MINUTES_PER_DAY or MINUTES_PER_DAY
        segments: list[tuple[int, int]] = []
        for day in sorted(self.days):
            segments.extend(_wrap(day * MINUTES_PER_DAY + self.start_min - self.utc_offset_min, length))
        return segments

    def active(self, now: float) -> bool:
        if self.starts_at is not None and self.ends_at is not None:
            return self.starts_at <= now < self.ends_at
        minute = (int(now // 60) + _EPOCH_WEEK_OFFSET_MIN) % MINUTES_PER_WEEK
        return any(lo <= minute < hi for lo, hi in self.week_segments())


def _wrap(start: int, length: int) -> list[tuple[int, int]]:
    start %= MINUTES_PER_WEEK
    end = start + length
    if end <= MINUTES_PER_WEEK:
        return [(start, end)]
    return [(start, MINUTES_PER_WEEK), (0, end - MINUTES_PER_WEEK)]


def _hhmm(text: str) -> int:
    match = _HHMM.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not HH:MM")
    if text == "24:00":
        return MINUTES_PER_DAY
    return int(text[:2]) * 60 + int(text[3:])


@dataclass(frozen=True, slots=True)
class ChannelProfile:
    """What the router knows about one channel.

    ``banks`` None means any bank. ``max_amount`` None means no upper limit.
    ``bank_limits`` maps a bank code to its own (min, max) per transaction, on top
    of the channel-wide limits. ``cost_weight`` None uses the router default.
    """

    channel_id: str
    operations: frozenset[Operation]
    currencies: frozenset[str]
    banks: frozenset[str] | None = None
    min_amount: int = 1
    max_amount: int | None = None
    bank_limits: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    fee: FeeSchedule = field(default_factory=FeeSchedule)
    per_card_daily_attempts: int | None = None
    per_card_daily_amount: int | None = None
    maintenance: tuple[MaintenanceWindow, ...] = ()
    state: ChannelState = ChannelState.ENABLED
    cost_weight: float | None = None


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Tuning of the estimates, exploration, elimination and cost term (see docs/ROUTING.md)."""

    # prior for a channel with little data: Beta(prior_mean * prior_strength, (1 - prior_mean) * prior_strength)
    prior_mean: float = 0.95
    prior_strength: float = 10.0
    # the prior's weight shrinks to prior_strength / (1 + prior_fade * outcomes ever seen / prior_strength)
    prior_fade: float = 0.1
    # a bank's estimate leans on its (channel, operation) estimate with this many pseudo-observations
    bank_prior_strength: float = 10.0
    # sliding memory: evidence halves every half_life_s seconds and never exceeds memory_observations
    half_life_s: float = 300.0
    memory_observations: float = 150.0
    # change detection: a short memory of this many observations; when it disagrees with the long one by
    # more than change_threshold (log-likelihood ratio, nats) the long memory is cut back to the short one
    fast_memory_observations: float = 20.0
    change_threshold: float = 4.5
    # exploration: 1.0 = Thompson sampling, 0 = always the best mean; at most max_exploration_share of decisions
    exploration: float = 0.5
    max_exploration_share: float = 0.1
    # elimination: of the last elimination_window channel-attributable outcomes within elimination_window_s,
    # at least elimination_min_volume seen and a failure share >= elimination_threshold; or
    # elimination_consecutive failures in a row
    elimination_threshold: float = 0.6
    elimination_window: int = 20
    elimination_window_s: float = 300.0
    elimination_min_volume: int = 10
    elimination_consecutive: int = 6
    # half-open probing of an eliminated channel: first after probe_interval_s, doubling on each failed
    # probe up to probe_max_interval_s; a probe without an answer for probe_timeout_s frees the slot
    probe_interval_s: float = 30.0
    probe_max_interval_s: float = 120.0
    probe_timeout_s: float = 120.0
    # successful probes in a row that re-admit the channel
    probe_successes: int = 2
    # when every candidate that passed the other filters is eliminated, route to them anyway (ranked)
    elimination_fallback: bool = True
    # score = estimate * (1 - cost_weight * fee / amount)
    cost_weight: float = 1.0
    max_attempts_per_flow: int = 3


# --- parsing -------------------------------------------------------------------------


class _Table:
    """Typed reads from one config table; every error names the full key."""

    def __init__(self, raw: Any, key: str) -> None:
        if not isinstance(raw, Mapping):
            raise RoutingConfigError(key, "must be a table")
        self.raw: Mapping[str, Any] = raw
        self.key = key
        self._read: set[str] = set()

    def k(self, name: str) -> str:
        return f"{self.key}.{name}"

    def has(self, name: str) -> bool:
        return name in self.raw

    def get(self, name: str) -> Any:
        self._read.add(name)
        return self.raw.get(name)

    def integer(self, name: str, default: int | None, *, lo: int | None = None) -> int | None:
        value = self.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise RoutingConfigError(self.k(name), f"must be an integer, got {value!r}")
        if lo is not None and value < lo:
            raise RoutingConfigError(self.k(name), f"must be >= {lo}")
        return value

    def required_integer(self, name: str, default: int, *, lo: int | None = None) -> int:
        value = self.integer(name, default, lo=lo)
        assert value is not None
        return value

    def number(self, name: str, default: float, *, lo: float | None = None, hi: float | None = None) -> float:
        value = self.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RoutingConfigError(self.k(name), f"must be a number, got {value!r}")
        if lo is not None and value < lo:
            raise RoutingConfigError(self.k(name), f"must be >= {lo}")
        if hi is not None and value > hi:
            raise RoutingConfigError(self.k(name), f"must be <= {hi}")
        return float(value)

    def positive(self, name: str, default: float) -> float:
        value = self.number(name, default)
        if value <= 0:
            raise RoutingConfigError(self.k(name), "must be > 0")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise RoutingConfigError(self.k(name), "must be true or false")
        return value

    def string(self, name: str, default: str | None = None) -> str:
        value = self.get(name)
        if value is None:
            if default is None:
                raise RoutingConfigError(self.k(name), "is required")
            return default
        if not isinstance(value, str) or not value:
            raise RoutingConfigError(self.k(name), "must be a non-empty string")
        return value

    def strings(self, name: str) -> frozenset[str] | None:
        value = self.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise RoutingConfigError(self.k(name), "must be an array of non-empty strings")
        return frozenset(value)

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self._read)
        if unknown:
            raise RoutingConfigError(self.k(unknown[0]), "unknown key")


def _fee(raw: Any, key: str) -> FeeSchedule:
    t = _Table(raw, key)
    fixed = t.required_integer("fixed", 0, lo=0)
    rate_ppm = t.required_integer("rate_ppm", 0, lo=0)
    minimum = t.required_integer("minimum", 0, lo=0)
    maximum = t.integer("maximum", None, lo=0)
    t.done()
    if rate_ppm > 1_000_000:
        raise RoutingConfigError(t.k("rate_ppm"), "must be <= 1000000 (100 %)")
    if maximum is not None and minimum > maximum:
        raise RoutingConfigError(t.k("minimum"), f"must be <= {t.k('maximum')} ({maximum})")
    return FeeSchedule(fixed, rate_ppm, minimum, maximum)


def _utc_offset(text: Any, key: str) -> int:
    match = _OFFSET.match(text) if isinstance(text, str) else None
    if match is None:
        raise RoutingConfigError(key, f"must look like +08:00, got {text!r}")
    sign, hours, minutes = match.groups()
    total = int(hours) * 60 + int(minutes)
    if int(hours) > 14 or int(minutes) > 59:
        raise RoutingConfigError(key, f"out of range: {text!r}")
    return -total if sign == "-" else total


def _timestamp(text: Any, key: str) -> float:
    if not isinstance(text, str | datetime):
        raise RoutingConfigError(key, "must be an ISO-8601 date-time with a UTC offset")
    try:
        moment = text if isinstance(text, datetime) else datetime.fromisoformat(text)
    except ValueError:
        raise RoutingConfigError(key, f"not an ISO-8601 date-time: {text!r}") from None
    if moment.tzinfo is None:
        raise RoutingConfigError(key, "needs a UTC offset (e.g. 2026-01-01T02:00:00+08:00)")
    return moment.timestamp()


def _window(raw: Any, key: str) -> MaintenanceWindow:
    t = _Table(raw, key)
    label = t.string("label", "-")
    if t.has("starts_at") or t.has("ends_at"):
        starts_at = _timestamp(t.get("starts_at"), t.k("starts_at"))
        ends_at = _timestamp(t.get("ends_at"), t.k("ends_at"))
        t.done()
        if ends_at <= starts_at:
            raise RoutingConfigError(t.k("ends_at"), "must be after starts_at")
        return MaintenanceWindow.one_off(starts_at, ends_at, label)
    days_raw = t.get("days")
    if not isinstance(days_raw, list) or not days_raw:
        raise RoutingConfigError(t.k("days"), 'must be a non-empty array like ["mon", "tue"] (or starts_at/ends_at)')
    days: set[int] = set()
    for i, day in enumerate(days_raw):
        if not isinstance(day, str) or day.lower() not in _DAYS:
            raise RoutingConfigError(f"{t.k('days')}[{i}]", f"must be one of {', '.join(_DAYS)}")
        if _DAYS[day.lower()] in days:
            raise RoutingConfigError(f"{t.k('days')}[{i}]", f"{day!r} listed twice")
        days.add(_DAYS[day.lower()])
    bounds: dict[str, str] = {}
    for name in ("start", "end"):
        value = t.get(name)
        if not isinstance(value, str) or not _HHMM.match(value):
            raise RoutingConfigError(t.k(name), f'must be "HH:MM" (00:00-24:00), got {value!r}')
        bounds[name] = value
    offset = _utc_offset(t.get("utc_offset") or "+00:00", t.k("utc_offset"))
    t.done()
    if _hhmm(bounds["start"]) == _hhmm(bounds["end"]) % MINUTES_PER_DAY:
        raise RoutingConfigError(t.k("end"), "must differ from start")
    return MaintenanceWindow.recurring(days, bounds["start"], bounds["end"], offset, label)


def _overlap(a: MaintenanceWindow, b: MaintenanceWindow) -> bool:
    if a.is_one_off and b.is_one_off:
        assert a.starts_at is not None and a.ends_at is not None and b.starts_at is not None and b.ends_at is not None
        return a.starts_at < b.ends_at and b.starts_at < a.ends_at
    # at least one recurs every week, so comparing minute-of-week coverage is exact
    return any(lo1 < hi2 and lo2 < hi1 for lo1, hi1 in a.week_segments() for lo2, hi2 in b.week_segments())


def _maintenance(raw: Any, key: str) -> tuple[MaintenanceWindow, ...]:
    if not isinstance(raw, list):
        raise RoutingConfigError(key, "must be an array of tables ([[...maintenance]])")
    windows = [_window(entry, f"{key}[{i}]") for i, entry in enumerate(raw)]
    for j, later in enumerate(windows):
        for i in range(j):
            if _overlap(windows[i], later):
                raise RoutingConfigError(f"{key}[{j}]", f"overlaps {key}[{i}]")
    return tuple(windows)


def _operations(t: _Table, default: frozenset[Operation] | None) -> frozenset[Operation]:
    names = t.strings("operations")
    if names is None:
        if default is None:
            raise RoutingConfigError(t.k("operations"), "is required")
        return default
    ops: set[Operation] = set()
    for name in names:
        try:
            ops.add(Operation(name))
        except ValueError:
            known = ", ".join(op.value for op in Operation)
            raise RoutingConfigError(t.k("operations"), f"unknown operation {name!r} (known: {known})") from None
    if not ops:
        raise RoutingConfigError(t.k("operations"), "must not be empty")
    return frozenset(ops)


def _bank_limits(raw: Any, key: str) -> dict[str, tuple[int, int]]:
    t = _Table(raw if raw is not None else {}, key)
    limits: dict[str, tuple[int, int]] = {}
    for bank, pair in t.raw.items():
        t.get(bank)
        ok = isinstance(pair, list) and len(pair) == 2
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pair)
        if not ok:
            raise RoutingConfigError(t.k(bank), "must be [min_amount, max_amount] in minor units, both >= 0")
        if pair[0] > pair[1]:
            raise RoutingConfigError(t.k(bank), f"min {pair[0]} > max {pair[1]}")
        limits[bank] = (pair[0], pair[1])
    return limits


def parse_channel_routing(
    key: str,
    raw: Mapping[str, Any],
    known_channel_ids: Iterable[str],
    *,
    channel_id: str | None = None,
    default_operations: frozenset[Operation] | None = None,
    default_currencies: frozenset[str] | None = None,
    default_banks: frozenset[str] | None = None,
) -> ChannelProfile:
    """Parse one channel's routing table into a :class:`ChannelProfile`.

    ``key`` is the table's config path (``channels[1]`` or ``channels[1].routing``);
    errors name keys under it. The channel id is ``channel_id`` when given, else
    ``raw["id"]``; it must be one of ``known_channel_ids``. ``operations``,
    ``currencies`` and ``banks`` default to the adapter's capabilities passed in
    ``default_*``. Unknown keys are errors (typos must not pass silently).
    Raises :class:`RoutingConfigError`.
    """
    t = _Table(raw, key)
    known = set(known_channel_ids)
    if channel_id is None or t.has("id"):
        channel_id = t.string("id")
    if channel_id not in known:
        listing = ", ".join(sorted(known)) or "none"
        raise RoutingConfigError(t.k("id"), f"unknown channel id {channel_id!r} (known: {listing})")
    operations = _operations(t, default_operations)
    currencies = t.strings("currencies") or default_currencies
    if not currencies:
        raise RoutingConfigError(t.k("currencies"), 'is required (e.g. ["CNY"])')
    for currency in currencies:
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise RoutingConfigError(t.k("currencies"), f"{currency!r} is not an ISO-4217 code")
    banks = t.strings("banks") if t.has("banks") else default_banks
    min_amount = t.required_integer("min_amount", 1, lo=1)
    max_amount = t.integer("max_amount", None, lo=1)
    if max_amount is not None and min_amount > max_amount:
        raise RoutingConfigError(t.k("min_amount"), f"must be <= {t.k('max_amount')} ({max_amount})")
    bank_limits = _bank_limits(t.get("bank_limits"), t.k("bank_limits"))
    if banks is not None:
        for bank in bank_limits:
            if bank not in banks:
                raise RoutingConfigError(f"{t.k('bank_limits')}.{bank}", "bank is not in this channel's banks")
    fee = _fee(t.get("fee") or {}, t.k("fee"))
    per_card_attempts = t.integer("per_card_daily_attempts", None, lo=1)
    per_card_amount = t.integer("per_card_daily_amount", None, lo=1)
    maintenance = _maintenance(t.get("maintenance") or [], t.k("maintenance"))
    state_name = t.string("state", ChannelState.ENABLED.value)
    try:
        state = ChannelState(state_name)
    except ValueError:
        raise RoutingConfigError(t.k("state"), "must be one of enabled, draining, disabled") from None
    cost_weight = t.number("cost_weight", -1.0, lo=0) if t.has("cost_weight") else None
    t.done()
    return ChannelProfile(
        channel_id=channel_id,
        operations=operations,
        currencies=frozenset(currencies),
        banks=banks,
        min_amount=min_amount,
        max_amount=max_amount,
        bank_limits=bank_limits,
        fee=fee,
        per_card_daily_attempts=per_card_attempts,
        per_card_daily_amount=per_card_amount,
        maintenance=maintenance,
        state=state,
        cost_weight=cost_weight,
    )


def parse_router_config(key: str, raw: Mapping[str, Any]) -> RouterConfig:
    """Parse the ``[routing]`` table. Missing keys take the documented defaults. Raises :class:`RoutingConfigError`."""
    t = _Table(raw, key)
    d = RouterConfig()
    config = RouterConfig(
        prior_mean=t.number("prior_mean", d.prior_mean, lo=0.01, hi=0.99),
        prior_strength=t.positive("prior_strength", d.prior_strength),
        prior_fade=t.number("prior_fade", d.prior_fade, lo=0),
        bank_prior_strength=t.positive("bank_prior_strength", d.bank_prior_strength),
        half_life_s=t.positive("half_life_s", d.half_life_s),
        memory_observations=t.number("memory_observations", d.memory_observations, lo=2),
        fast_memory_observations=t.number("fast_memory_observations", d.fast_memory_observations, lo=2),
        change_threshold=t.positive("change_threshold", d.change_threshold),
        exploration=t.number("exploration", d.exploration, lo=0, hi=10),
        max_exploration_share=t.number("max_exploration_share", d.max_exploration_share, lo=0, hi=1),
        elimination_threshold=t.number("elimination_threshold", d.elimination_threshold, lo=0.01, hi=1),
        elimination_window=t.required_integer("elimination_window", d.elimination_window, lo=1),
        elimination_window_s=t.positive("elimination_window_s", d.elimination_window_s),
        elimination_min_volume=t.required_integer("elimination_min_volume", d.elimination_min_volume, lo=1),
        elimination_consecutive=t.required_integer("elimination_consecutive", d.elimination_consecutive, lo=1),
        probe_interval_s=t.positive("probe_interval_s", d.probe_interval_s),
        probe_max_interval_s=t.positive("probe_max_interval_s", d.probe_max_interval_s),
        probe_timeout_s=t.positive("probe_timeout_s", d.probe_timeout_s),
        probe_successes=t.required_integer("probe_successes", d.probe_successes, lo=1),
        elimination_fallback=t.boolean("elimination_fallback", d.elimination_fallback),
        cost_weight=t.number("cost_weight", d.cost_weight, lo=0),
        max_attempts_per_flow=t.required_integer("max_attempts_per_flow", d.max_attempts_per_flow, lo=1),
    )
    t.done()
    if config.elimination_min_volume > config.elimination_window:
        raise RoutingConfigError(t.k("elimination_min_volume"), f"must be <= {t.k('elimination_window')}")
    if config.probe_max_interval_s < config.probe_interval_s:
        raise RoutingConfigError(t.k("probe_max_interval_s"), f"must be >= {t.k('probe_interval_s')}")
    if config.fast_memory_observations >= config.memory_observations:
        raise RoutingConfigError(t.k("fast_memory_observations"), f"must be < {t.k('memory_observations')}")
    return config


def parse_routing(
    router_key: str,
    router_raw: Mapping[str, Any],
    channels: Sequence[tuple[str, str, Mapping[str, Any]]],
    capabilities: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[RouterConfig, list[ChannelProfile]]:
    """Parse ``[routing]`` plus each channel's routing table: ``channels`` is (key, channel_id, raw) per channel.

    Checks that no channel id appears twice. ``capabilities`` maps a channel id to
    keyword defaults for :func:`parse_channel_routing` (``default_operations``,
    ``default_currencies``, ``default_banks``), normally the adapter's own.
    """
    defaults = capabilities or {}
    config = parse_router_config(router_key, router_raw)
    known = {channel_id for _, channel_id, _ in channels}
    profiles: list[ChannelProfile] = []
    seen: set[str] = set()
    for key, channel_id, raw in channels:
        if channel_id in seen:
            raise RoutingConfigError(f"{key}.id", f"duplicate channel id {channel_id!r}")
        seen.add(channel_id)
        profiles.append(parse_channel_routing(key, raw, known, channel_id=channel_id, **defaults.get(channel_id, {})))
    return config, profiles
