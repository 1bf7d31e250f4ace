"""Schedules and policies: the time points, what is due, what a failure leads to. Pure: no I/O, no clock.

A :class:`Policy` is what the configuration says (``[plans.policies.<name>]``); a
:class:`Schedule` is a policy placed in the lender's :class:`~gateway.businessday.BusinessCalendar`,
so every moment it returns is the naive-UTC moment of a local wall-clock time point on a
business day (DESIGN.md invariant 14: never a UTC date).

The rules, all here:

* an instalment is first due at the first time point of its due date;
* after a failure whose code retries, it is due again at the next time point of the same
  business day while it has attempts left that day (``attempts_per_day``), else at the first
  time point of the next business day, up to ``retry_days`` days after the due date, and at
  most ``max_attempts`` times in all (0: no cap beyond the days);
* a failure whose code stops (or a code in neither list, unless ``retry_unknown``) stops it;
* the run of a time point may claim work from its moment until its *deadline*: the next time
  point, or the start of the quiet window if that comes first. No withhold is sent inside the
  quiet window, whoever asks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from gateway.businessday import BusinessCalendar
from gateway.plans.model import ATTEMPTS_EXHAUSTED

# Payer-attributable failures, and failures where the channel executed nothing (busy, closed before it
# was ever received, refused our request before processing it): worth another try at the next time point.
DEFAULT_RETRY_CODES = (
    "INSUFFICIENT_FUNDS",
    "OVER_PAYER_LIMIT",
    "PAYER_LIMIT",
    "CHANNEL_BUSY",
    "CHANNEL_MAINTENANCE",
    "CHANNEL_LIMIT",
    "MERCHANT_BALANCE_INSUFFICIENT",
    "ORDER_CLOSED",
    "CONNECTION_FAILED",
    "CREDENTIALS_REJECTED",
    "REQUEST_EXPIRED",
    "NO_ROUTE",
)
# Failures another try cannot cure: stop the instalment and report it. A code in neither list stops too
# (unless ``retry_unknown``): the lender decides, rather than the gateway guessing.
DEFAULT_STOP_CODES = (
    "ACCOUNT_FROZEN",
    "ACCOUNT_CLOSED",
    "ACCOUNT_INVALID",
    "CARD_LOST",
    "AGREEMENT_INVALID",
    "AGREEMENT_REVOKED",
    "NO_AGREEMENT",
    "BANK_NOT_SUPPORTED",
    "NAME_MISMATCH",
    "RISK_REJECTED",
    "REQUEST_ID_CONFLICT",
)


def hhmm(value: time) -> str:
    return f"{value.hour:02d}:{value.minute:02d}"


@dataclass(frozen=True)
class QuietWindow:
    """``[start, end)`` in local wall-clock time; ``end <= start`` crosses midnight (e.g. 22:00-07:00)."""

    start: time
    end: time

    def contains_time(self, local: time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


@dataclass(frozen=True)
class Policy:
    name: str
    time_points: tuple[time, ...]  # sorted, distinct, none inside the quiet window
    attempts_per_day: int = 2
    retry_days: int = 3
    max_attempts: int = 0
    retry_codes: frozenset[str] = frozenset(DEFAULT_RETRY_CODES)
    stop_codes: frozenset[str] = frozenset(DEFAULT_STOP_CODES)
    retry_unknown: bool = False
    quiet: QuietWindow | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(hhmm(t) for t in self.time_points)

    def retries(self, code: str) -> bool:
        """Whether a failure with ``code`` is tried again at a later time point."""
        if code in self.stop_codes:
            return False
        return code in self.retry_codes or self.retry_unknown


@dataclass(frozen=True)
class Retry:
    """Due again at ``time_point`` of ``business_day`` (``at`` is that moment, naive UTC)."""

    business_day: date
    time_point: str
    at: datetime


@dataclass(frozen=True)
class Stop:
    """No more attempts. ``reason`` is the stop code or ATTEMPTS_EXHAUSTED; ``code`` the last failure's."""

    reason: str
    code: str


@dataclass(frozen=True)
class Window:
    """A time point's run: from its moment to its deadline (naive UTC)."""

    business_day: date
    time_point: str
    start: datetime
    deadline: datetime


class Schedule:
    """A policy in the lender's calendar."""

    def __init__(self, policy: Policy, calendar: BusinessCalendar) -> None:
        self.policy = policy
        self.calendar = calendar
        self._labels = {hhmm(t): t for t in policy.time_points}

    @property
    def name(self) -> str:
        return self.policy.name

    def has_time_point(self, label: str) -> bool:
        return label in self._labels

    def moment(self, day: date, time_point: str) -> datetime:
        """The naive-UTC moment of ``time_point`` ("HH:MM", one of the policy's) on business day ``day``."""
        return self.calendar.at(day, self._labels[time_point])

    def moments(self, day: date) -> list[tuple[str, datetime]]:
        return [(hhmm(t), self.calendar.at(day, t)) for t in self.policy.time_points]

    def first_due(self, due_date: date) -> datetime:
        """When an instalment due on ``due_date`` is first attempted."""
        return self.calendar.at(due_date, self.policy.time_points[0])

    def last_day(self, due_date: date) -> date:
        """The last business day an instalment due on ``due_date`` may be attempted."""
        return due_date + timedelta(days=self.policy.retry_days)

    def next_time_point(self, day: date, time_point: str) -> tuple[date, str]:
        """The time point after ``time_point`` of ``day`` (the first of the next day after the last)."""
        labels = self.policy.labels
        index = labels.index(time_point)
        if index + 1 < len(labels):
            return day, labels[index + 1]
        return day + timedelta(days=1), labels[0]

    def in_quiet(self, moment: datetime) -> bool:
        """Whether ``moment`` (naive UTC) falls in the quiet window, when withholds are never sent."""
        quiet = self.policy.quiet
        return quiet is not None and quiet.contains_time(self.calendar.local_time(moment).replace(tzinfo=None))

    def quiet_start_after(self, moment: datetime) -> datetime | None:
        quiet = self.policy.quiet
        if quiet is None:
            return None
        day = self.calendar.day_of(moment)
        for offset in (0, 1):
            start = self.calendar.at(day + timedelta(days=offset), quiet.start)
            if start > moment:
                return start
        return None  # pragma: no cover - a day later always starts after

    def window(self, day: date, time_point: str) -> Window:
        start = self.moment(day, time_point)
        next_day, next_point = self.next_time_point(day, time_point)
        deadline = self.moment(next_day, next_point)
        quiet_start = self.quiet_start_after(start)
        if quiet_start is not None and quiet_start < deadline:
            deadline = quiet_start
        return Window(day, time_point, start, deadline)

    def current(self, now: datetime) -> Window | None:
        """The time point whose window contains ``now`` (naive UTC), if any (none inside the quiet window)."""
        if self.in_quiet(now):
            return None
        today = self.calendar.day_of(now)
        found: Window | None = None
        for day in (today - timedelta(days=1), today):
            for label in self.policy.labels:
                window = self.window(day, label)
                if window.start <= now < window.deadline:
                    found = window
        return found

    def after_failure(
        self, code: str, *, day: date, time_point: str, attempts_on_day: int, attempts: int, last_day: date
    ) -> Retry | Stop:
        """What follows a failed attempt at ``time_point`` of ``day``.

        ``attempts_on_day`` and ``attempts`` count the attempts of that business day and in all,
        this one included.
        """
        policy = self.policy
        if not policy.retries(code):
            return Stop(code, code)
        if policy.max_attempts and attempts >= policy.max_attempts:
            return Stop(ATTEMPTS_EXHAUSTED, code)
        next_day, next_point = self.next_time_point(day, time_point)
        if next_day == day and attempts_on_day >= policy.attempts_per_day:
            next_day, next_point = day + timedelta(days=1), policy.labels[0]
        if next_day > last_day:
            return Stop(ATTEMPTS_EXHAUSTED, code)
        return Retry(next_day, next_point, self.moment(next_day, next_point))

    def day_is_full(self, *, day: date, attempts_day: date | None, attempts_on_day: int) -> bool:
        """Whether ``day`` already had its ``attempts_per_day`` attempts."""
        return attempts_day == day and attempts_on_day >= self.policy.attempts_per_day


def projected_lag_s(
    *,
    now: datetime,
    started_at: datetime,
    deadline: datetime,
    attempted: int,
    remaining: int,
    min_elapsed_s: float = 10.0,
) -> float:
    """How far past its deadline a run will finish at its pace so far (0: on time or done).

    Past the deadline it is the time already over plus what the rest would take. With nothing
    attempted yet (stalled, paused) it is at least as long as the run has stood still. The
    first ``min_elapsed_s`` give no projection (too little to measure a pace by).
    """
    if remaining <= 0:
        return 0.0
    overdue = max(0.0, (now - deadline).total_seconds())
    elapsed = (now - started_at).total_seconds()
    if elapsed < min_elapsed_s:
        return overdue
    if attempted <= 0:
        return max(overdue, elapsed)
    finish_in = remaining * elapsed / attempted
    return max(overdue, (now - deadline).total_seconds() + finish_in)


def check_policy(policy: Policy, key: str) -> list[tuple[str, str]]:
    """Problems of a policy as ``(dotted key, problem)`` pairs; empty when it is sound."""
    problems: list[tuple[str, str]] = []
    if not policy.time_points:
        problems.append((f"{key}.time_points", "needs at least one HH:MM time point"))
    if len(set(policy.time_points)) != len(policy.time_points):
        problems.append((f"{key}.time_points", "lists a time point twice"))
    if list(policy.time_points) != sorted(policy.time_points):
        problems.append((f"{key}.time_points", "must be in increasing order"))
    if policy.quiet is not None:
        for i, tp in enumerate(policy.time_points):
            if policy.quiet.contains_time(tp):
                problems.append(
                    (
                        f"{key}.time_points[{i}]",
                        f"{hhmm(tp)} lies inside the quiet window {hhmm(policy.quiet.start)}-{hhmm(policy.quiet.end)}",
                    )
                )
        if policy.quiet.start == policy.quiet.end:
            problems.append((f"{key}.quiet_end", "must differ from quiet_start"))
    if policy.time_points and policy.attempts_per_day > len(policy.time_points):
        problems.append(
            (
                f"{key}.attempts_per_day",
                f"is {policy.attempts_per_day} but the policy has only {len(policy.time_points)} time point(s) a day",
            )
        )
    both = sorted(policy.retry_codes & policy.stop_codes)
    if both:
        problems.append((f"{key}.stop_codes", f"{both[0]} is also in retry_codes"))
    return problems


def labels_of(points: Iterable[time]) -> list[str]:
    return [hhmm(t) for t in points]
