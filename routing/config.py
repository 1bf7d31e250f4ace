"""Routing configuration: per-channel profiles and the router's tuning knobs.

Everything here is read once at start-up from the TOML tables, by the reader every layer uses
(:mod:`channels.config`), and is immutable afterwards. :class:`RouterConfig` is the ``[routing]``
table and :class:`FeeSchedule` a channel's ``fee`` table as they are; a channel's routing table
(:class:`ChannelRouting`, its maintenance windows :class:`WindowTable`) becomes a
:class:`ChannelProfile` once the adapter's capabilities are known (:func:`parse_channel_routing`).
Each default is written once, in these dataclasses. Bad configuration raises
:class:`~channels.config.ConfigError`, whose message starts with the exact key that is wrong
(``channels[1].fee.rate_ppm: must be >= 0``), so start-up stops with a message an operator can act
on. docs/ROUTING.md lists every key.

Money is integer minor units throughout; rates are parts per million.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, PlainValidator

from channels.config import TABLE, ConfigError, Currencies, Names, Operations, join, read
from channels.contract import CashierKind, Operation

MINUTES_PER_DAY = 1440
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
# 1970-01-01 was a Thursday: minute 0 of the epoch is minute 3*1440 of an ISO week that starts on Monday.
_EPOCH_WEEK_OFFSET_MIN = 3 * MINUTES_PER_DAY
_DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")
_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")


# The one configuration error, under the name routing/engine.py imports.
RoutingConfigError = ConfigError

# A number > 0.
_Positive = Annotated[float, Field(gt=0)]


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
    The percentage part rounds half-up in integer arithmetic. Also a channel's ``fee`` table.
    """

    __pydantic_config__ = TABLE

    fixed: Annotated[int, Field(ge=0)] = 0
    rate_ppm: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    minimum: Annotated[int, Field(ge=0)] = 0
    maximum: Annotated[int, Field(ge=0)] | None = None

    def fee(self, amount: int) -> int:
        variable = (amount * self.rate_ppm + 500_000) // 1_000_000
        value = max(self.fixed + variable, self.minimum)
        if self.maximum is not None:
            value = min(value, self.maximum)
        return value

    def check_config(self, key: str) -> None:
        if self.maximum is not None and self.minimum > self.maximum:
            raise ConfigError(join(key, "minimum"), f"must be <= {join(key, 'maximum')} ({self.maximum})")


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
    ``cashier_kinds`` are the cashiers the channel opens for COLLECT (the adapter's).
    """

    channel_id: str
    operations: frozenset[Operation]
    currencies: frozenset[str]
    banks: frozenset[str] | None = None
    cashier_kinds: frozenset[CashierKind] = frozenset()
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
    """Tuning of the estimates, exploration, elimination and cost term; the ``[routing]`` table (docs/ROUTING.md)."""

    __pydantic_config__ = TABLE

    # prior for a channel with little data: Beta(prior_mean * prior_strength, (1 - prior_mean) * prior_strength)
    prior_mean: Annotated[float, Field(ge=0.01, le=0.99)] = 0.95
    prior_strength: _Positive = 10.0
    # the prior's weight shrinks to prior_strength / (1 + prior_fade * outcomes ever seen / prior_strength)
    prior_fade: Annotated[float, Field(ge=0)] = 0.1
    # ... and grows back toward prior_strength as the channel stays idle, halving the gap every prior_half_life_s
    prior_half_life_s: _Positive = 600.0
    # a bank's estimate leans on its (channel, operation) estimate with this many pseudo-observations
    bank_prior_strength: _Positive = 10.0
    # the bank's pseudo-observations sit at a blend of the channel-across-banks mean and, with this weight,
    # the bank-across-channels mean
    pool_across_channels: Annotated[float, Field(ge=0, le=1)] = 0.25
    # sliding memory: evidence halves every half_life_s seconds and never exceeds memory_observations
    half_life_s: _Positive = 300.0
    # a late answer about an attempt sent before the newest one counted enters with the weight it would have
    # had on time, on this clock (None: half_life_s), so a long memory need not weigh late news as fresh
    late_half_life_s: _Positive | None = None
    memory_observations: Annotated[float, Field(ge=2)] = 1000.0
    # change detection: a short memory of this many observations; when it disagrees with the long one by
    # more than change_threshold (log-likelihood ratio, nats) the long memory is cut back to the short one
    fast_memory_observations: Annotated[float, Field(ge=2)] = 20.0
    change_threshold: _Positive = 4.5
    # exploration: 1.0 = Thompson sampling, 0 = always the best mean; at most max_exploration_share of decisions
    exploration: Annotated[float, Field(ge=0, le=10)] = 0.5
    max_exploration_share: Annotated[float, Field(ge=0, le=1)] = 0.1
    # exploration by the value of information (> 0; 0 = the Thompson draws above): a candidate is explored
    # when exploration_value * (the leader's evidence + prior_strength) * its expected improvement over the
    # leader's mean score exceeds the mean score it gives up (the most valuable look first)
    exploration_value: Annotated[float, Field(ge=0)] = 0.0
    # ... and exploration may cost at most this share of the segment's value: the running mean of (the best
    # mean score - the explored channel's mean score) stays under max_exploration_cost * the best mean score
    max_exploration_cost: Annotated[float, Field(ge=0, le=1)] = 1.0
    # a candidate not chosen first for relook_after_s takes one transaction (per operation and bank); each
    # re-look doubles the interval up to relook_max_after_s; it starts over when the channel's estimate moved
    # by relook_change_ratio (relative) since the last re-look
    relook_after_s: _Positive = 120.0
    relook_max_after_s: _Positive = 240.0
    relook_change_ratio: Annotated[float, Field(gt=0, le=1)] = 0.05
    # a re-look at a channel whose estimate is at least relook_burst_gap under the leader's continues while
    # its answers succeed; when they add up to relook_burst_llr nats of evidence (each success
    # log(leader / estimate)) for "it is as good as the leader now", its estimates restart from them
    relook_burst_gap: Annotated[float, Field(gt=0, le=1)] = 1.0
    relook_burst_llr: _Positive = 2.0
    # upward CUSUM on the answers to looks (re-looks and exploration) at a channel under the leader: each
    # adds the log-likelihood ratio of "at max(leader, reliability + upward_delta)" against "at its
    # reliability" (a / (a + b), not the estimate); from upward_chain_llr on the looks come one after
    # another, at upward_llr its record restarts from them (0 = off; then the re-look streaks above apply).
    # upward_all_answers: every fresh answer from a channel other than the last leader counts, not only looks
    upward_llr: Annotated[float, Field(ge=0)] = 0.0
    upward_chain_llr: Annotated[float, Field(ge=0)] = 0.5
    upward_delta: Annotated[float, Field(gt=0, le=1)] = 0.08
    upward_all_answers: bool = False
    # a chain of looks goes on without waiting for answers while fewer than this many are outstanding
    # (1: each look waits for the previous one's answer)
    upward_chain_pending: Annotated[int, Field(ge=1)] = 1
    # upward_chain_clean: the chain goes on over outstanding looks only while every answer counted in the
    # excursion is good; after a failure each look waits for its answer again
    upward_chain_clean: bool = False
    # upward_restart_p1: a restart starts the record at p1 (the CUSUM's alternative) with the excursion's
    # weight, not at the excursion's own counts (which end on a run of successes, so they are biased upward)
    upward_restart_p1: bool = False
    # upward_excursion_late: with upward_all_answers, a late answer counts in the CUSUM when its attempt was
    # sent after the excursion's first counted answer (it is about the channel since the excursion began)
    upward_excursion_late: bool = False
    # upward_chain_timeout_s: a look unanswered for this long no longer counts as outstanding for
    # upward_chain_pending (None: it counts until its answer comes), so answers hours late do not stall a chain
    upward_chain_timeout_s: _Positive | None = None
    # upward_chain_max: the looks chain only until the excursion has counted this many answers (0: no bound);
    # then it goes on with ordinary answers and re-looks at their interval (a channel whose rate lies between its
    # record and the leader's makes the sum a random walk, and a chain without a bound can run for 100+ looks)
    upward_chain_max: Annotated[int, Field(ge=0)] = 0
    # upward_fallen_only: with upward_all_answers, an excursion starts only for a channel whose record fell: a
    # detected drop from a level at least upward_gap above its reliability now (a channel always at its level,
    # far under the leader, is left to re-looks and exploration; one that dropped is the one likely to come back)
    upward_fallen_only: bool = False
    # upward_fallen_back: with upward_all_answers, a channel that fell is tested against the level it had before
    # its drop when that is above the leader's (p1 = max(leader, that level)): "it came back", not "it caught up"
    upward_fallen_back: bool = False
    # an excursion starts only for a channel at least upward_gap under the leader's reliability (0: any)
    upward_gap: Annotated[float, Field(ge=0, le=1)] = 0.0
    # segments ((operation, bank) pairs) whose exploration state and estimates are kept, least recently used out
    max_segments: Annotated[int, Field(ge=1)] = 10_000
    # probe attempt ids remembered per eliminated channel (a timed-out probe's late answer still counts), and
    # re-look attempt ids per segment
    max_tracked_attempts: Annotated[int, Field(ge=1)] = 64
    # elimination: of the last elimination_window channel-attributable outcomes within elimination_window_s,
    # at least elimination_min_volume seen and a failure share >= elimination_threshold; or
    # elimination_consecutive failures in a row
    elimination_threshold: Annotated[float, Field(ge=0.01, le=1)] = 0.6
    elimination_window: Annotated[int, Field(ge=1)] = 20
    elimination_window_s: _Positive = 300.0
    elimination_min_volume: Annotated[int, Field(ge=1)] = 10
    elimination_consecutive: Annotated[int, Field(ge=1)] = 6
    # half-open probing of an eliminated channel: first after probe_interval_s, doubling on each failed
    # probe up to probe_max_interval_s; a probe without an answer for probe_timeout_s frees the slot
    probe_interval_s: _Positive = 30.0
    probe_max_interval_s: _Positive = 120.0
    probe_timeout_s: _Positive = 60.0
    # successful probes in a row that re-admit the channel
    probe_successes: Annotated[int, Field(ge=1)] = 2
    # when every candidate that passed the other filters is eliminated, route to them anyway (ranked)
    elimination_fallback: bool = True
    # score = estimate * (1 - cost_weight * fee / amount)
    cost_weight: Annotated[float, Field(ge=0)] = 1.0
    max_attempts_per_flow: Annotated[int, Field(ge=1)] = 3

    def check_config(self, key: str) -> None:
        if self.elimination_min_volume > self.elimination_window:
            raise ConfigError(join(key, "elimination_min_volume"), f"must be <= {join(key, 'elimination_window')}")
        if self.probe_max_interval_s < self.probe_interval_s:
            raise ConfigError(join(key, "probe_max_interval_s"), f"must be >= {join(key, 'probe_interval_s')}")
        if self.relook_max_after_s < self.relook_after_s:
            raise ConfigError(join(key, "relook_max_after_s"), f"must be >= {join(key, 'relook_after_s')}")
        if self.fast_memory_observations >= self.memory_observations:
            raise ConfigError(join(key, "fast_memory_observations"), f"must be < {join(key, 'memory_observations')}")


# --- channel routing tables ------------------------------------------------------------


def _weekday(value: object) -> int:
    if not isinstance(value, str) or value.lower() not in _DAYS:
        raise ValueError(f"must be one of {', '.join(_DAYS)}")
    return _DAYS[value.lower()]


def _minute_of_day(value: object) -> int:
    if not isinstance(value, str) or not _HHMM.match(value):
        raise ValueError(f'must be "HH:MM" (00:00-24:00), got {value!r}')
    return _hhmm(value)


def _utc_offset(value: object) -> int:
    match = _OFFSET.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"must look like +08:00, got {value!r}")
    sign, hours, minutes = match.groups()
    if int(hours) > 14 or int(minutes) > 59:
        raise ValueError(f"out of range: {value!r}")
    total = int(hours) * 60 + int(minutes)
    return -total if sign == "-" else total


def _moment(value: object) -> float:
    """Epoch seconds of an ISO-8601 date-time with a UTC offset (a TOML date-time or a string)."""
    if not isinstance(value, str | datetime):
        raise ValueError("must be an ISO-8601 date-time with a UTC offset")
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO-8601 date-time: {value!r}") from None
    if moment.tzinfo is None:
        raise ValueError("needs a UTC offset (e.g. 2026-01-01T02:00:00+08:00)")
    return moment.timestamp()


def _bank_limit(value: object) -> tuple[int, int]:
    pair = value if isinstance(value, list | tuple) else ()
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pair):
        raise ValueError("must be [min_amount, max_amount] in minor units, both >= 0")
    low, high = pair
    if low > high:
        raise ValueError(f"min {low} > max {high}")
    return low, high


_Weekday = Annotated[int, PlainValidator(_weekday)]
_MinuteOfDay = Annotated[int, PlainValidator(_minute_of_day)]
_UtcOffset = Annotated[int, PlainValidator(_utc_offset)]
_Moment = Annotated[float, PlainValidator(_moment)]
_BankLimit = Annotated[tuple[int, int], PlainValidator(_bank_limit)]
_RECURRING_KEYS = ("days", "start", "end", "utc_offset")


@dataclass(frozen=True)
class WindowTable:
    """One ``maintenance`` entry: recurring (``days``, ``start``, ``end``, ``utc_offset``) or one-off
    (``starts_at``, ``ends_at``, ISO-8601 with an offset). See :class:`MaintenanceWindow`."""

    __pydantic_config__ = TABLE

    label: Annotated[str, Field(min_length=1)] = "-"
    days: tuple[_Weekday, ...] | None = None
    start: _MinuteOfDay | None = None
    end: _MinuteOfDay | None = None
    utc_offset: _UtcOffset | None = None  # None: UTC
    starts_at: _Moment | None = None
    ends_at: _Moment | None = None

    def window(self, key: str) -> MaintenanceWindow:
        """The window this table describes; raises ConfigError naming the key under ``key``."""
        if self.starts_at is not None or self.ends_at is not None:
            for name in _RECURRING_KEYS:
                if getattr(self, name) is not None:
                    raise ConfigError(join(key, name), "not in a one-off window (starts_at/ends_at)")
            for name in ("starts_at", "ends_at"):
                if getattr(self, name) is None:
                    raise ConfigError(join(key, name), "must be an ISO-8601 date-time with a UTC offset")
            assert self.starts_at is not None and self.ends_at is not None
            if self.ends_at <= self.starts_at:
                raise ConfigError(join(key, "ends_at"), "must be after starts_at")
            return MaintenanceWindow(starts_at=self.starts_at, ends_at=self.ends_at, label=self.label)
        if not self.days:
            raise ConfigError(join(key, "days"), 'must be a non-empty array like ["mon", "tue"] (or starts_at/ends_at)')
        for i, day in enumerate(self.days):
            if day in self.days[:i]:
                raise ConfigError(join(join(key, "days"), i), f"{list(_DAYS)[day]!r} listed twice")
        for name in ("start", "end"):
            if getattr(self, name) is None:
                raise ConfigError(join(key, name), 'must be "HH:MM" (00:00-24:00)')
        assert self.start is not None and self.end is not None
        if self.start == self.end % MINUTES_PER_DAY:
            raise ConfigError(join(key, "end"), "must differ from start")
        offset = {} if self.utc_offset is None else {"utc_offset_min": self.utc_offset}
        return MaintenanceWindow(frozenset(self.days), self.start, self.end, label=self.label, **offset)


@dataclass(frozen=True)
class ChannelRouting:
    """A channel's routing table (``[channels.routing]``; docs/ROUTING.md). A key left out (None) takes
    the adapter's capability (``operations``, ``currencies``, ``banks``) or :class:`ChannelProfile`'s default."""

    __pydantic_config__ = TABLE

    id: Annotated[str, Field(min_length=1)] | None = None  # when the table names its channel itself
    operations: Operations | None = None
    currencies: Currencies | None = None  # an empty array counts as left out
    banks: Names | None = None
    min_amount: Annotated[int, Field(ge=1)] | None = None
    max_amount: Annotated[int, Field(ge=1)] | None = None
    bank_limits: Mapping[str, _BankLimit] | None = None
    fee: FeeSchedule | None = None
    per_card_daily_attempts: Annotated[int, Field(ge=1)] | None = None
    per_card_daily_amount: Annotated[int, Field(ge=1)] | None = None
    maintenance: tuple[WindowTable, ...] | None = None
    state: ChannelState | None = None
    cost_weight: Annotated[float, Field(ge=0)] | None = None


def _overlap(a: MaintenanceWindow, b: MaintenanceWindow) -> bool:
    if a.is_one_off and b.is_one_off:
        assert a.starts_at is not None and a.ends_at is not None and b.starts_at is not None and b.ends_at is not None
        return a.starts_at < b.ends_at and b.starts_at < a.ends_at
    # at least one recurs every week, so comparing minute-of-week coverage is exact
    return any(lo1 < hi2 and lo2 < hi1 for lo1, hi1 in a.week_segments() for lo2, hi2 in b.week_segments())


def _maintenance(tables: tuple[WindowTable, ...], key: str) -> tuple[MaintenanceWindow, ...]:
    windows = [table.window(join(key, i)) for i, table in enumerate(tables)]
    for j, later in enumerate(windows):
        for i in range(j):
            if _overlap(windows[i], later):
                raise ConfigError(join(key, j), f"overlaps {join(key, i)}")
    return tuple(windows)


def parse_channel_routing(
    key: str,
    raw: Mapping[str, Any],
    known_channel_ids: Iterable[str],
    *,
    channel_id: str | None = None,
    default_operations: frozenset[Operation] | None = None,
    default_currencies: frozenset[str] | None = None,
    default_banks: frozenset[str] | None = None,
    default_cashier_kinds: frozenset[CashierKind] = frozenset(),
) -> ChannelProfile:
    """Read one channel's routing table (:class:`ChannelRouting`) into a :class:`ChannelProfile`.

    ``key`` is the table's config path (``channels[1]`` or ``channels[1].routing``);
    errors name keys under it. The channel id is ``channel_id`` when given, else
    ``raw["id"]``; it must be one of ``known_channel_ids``. ``operations``,
    ``currencies`` and ``banks`` default to the adapter's capabilities passed in
    ``default_*``; the cashiers are the adapter's (``default_cashier_kinds``).
    Unknown keys are errors (typos must not pass silently).
    Raises :class:`~channels.config.ConfigError`.
    """
    table = read(ChannelRouting, raw, key)
    known = set(known_channel_ids)
    if channel_id is None or table.id is not None:
        if table.id is None:
            raise ConfigError(join(key, "id"), "is required")
        channel_id = table.id
    if channel_id not in known:
        listing = ", ".join(sorted(known)) or "none"
        raise ConfigError(join(key, "id"), f"unknown channel id {channel_id!r} (known: {listing})")
    operations = table.operations or default_operations
    if operations is None:
        raise ConfigError(join(key, "operations"), "is required")
    currencies = table.currencies or default_currencies
    if not currencies:
        raise ConfigError(join(key, "currencies"), 'is required (e.g. ["CNY"])')
    banks = table.banks if table.banks is not None else default_banks
    if table.max_amount is not None and table.min_amount is not None and table.min_amount > table.max_amount:
        raise ConfigError(join(key, "min_amount"), f"must be <= {join(key, 'max_amount')} ({table.max_amount})")
    for bank in table.bank_limits or {}:
        if banks is not None and bank not in banks:
            raise ConfigError(join(join(key, "bank_limits"), bank), "bank is not in this channel's banks")
    given: dict[str, Any] = {
        "min_amount": table.min_amount,
        "max_amount": table.max_amount,
        "bank_limits": table.bank_limits,
        "fee": table.fee,
        "per_card_daily_attempts": table.per_card_daily_attempts,
        "per_card_daily_amount": table.per_card_daily_amount,
        "maintenance": _maintenance(table.maintenance, join(key, "maintenance")) if table.maintenance else None,
        "state": table.state,
        "cost_weight": table.cost_weight,
    }
    return ChannelProfile(
        channel_id=channel_id,
        operations=operations,
        currencies=currencies,
        banks=banks,
        cashier_kinds=default_cashier_kinds if Operation.COLLECT in operations else frozenset(),
        **{name: value for name, value in given.items() if value is not None},
    )


def parse_router_config(key: str, raw: Mapping[str, Any]) -> RouterConfig:
    """Read the ``[routing]`` table. Missing keys take the documented defaults. Raises ConfigError."""
    return read(RouterConfig, raw, key)


def parse_channel_profiles(
    channels: Sequence[tuple[str, str, Mapping[str, Any]]],
    capabilities: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[ChannelProfile]:
    """Each channel's routing table: ``channels`` is (key, channel_id, raw) per channel.

    Checks that no channel id appears twice. ``capabilities`` maps a channel id to
    keyword defaults for :func:`parse_channel_routing` (``default_operations``,
    ``default_currencies``, ``default_banks``), normally the adapter's own.
    """
    defaults = capabilities or {}
    known = {channel_id for _, channel_id, _ in channels}
    profiles: list[ChannelProfile] = []
    seen: set[str] = set()
    for key, channel_id, raw in channels:
        if channel_id in seen:
            raise ConfigError(join(key, "id"), f"duplicate channel id {channel_id!r}")
        seen.add(channel_id)
        profiles.append(parse_channel_routing(key, raw, known, channel_id=channel_id, **defaults.get(channel_id, {})))
    return profiles


def parse_routing(
    router_key: str,
    router_raw: Mapping[str, Any],
    channels: Sequence[tuple[str, str, Mapping[str, Any]]],
    capabilities: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[RouterConfig, list[ChannelProfile]]:
    """``[routing]`` (:func:`parse_router_config`) and the channels' tables (:func:`parse_channel_profiles`)."""
    return parse_router_config(router_key, router_raw), parse_channel_profiles(channels, capabilities)
