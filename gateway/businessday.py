"""The lender's business day: one calendar for every "per day" in the gateway.

A day is a date in the lender's timezone (``[business] timezone``, default
``Asia/Shanghai``), never a UTC date: per-card daily limits, plan time points,
statements and funder settlements all ask this module which day a moment
belongs to and where a day starts and ends.

The database stores naive UTC ``DATETIME(6)`` values (the sessions run with
``time_zone='+00:00'``), so the functions here take and return naive UTC
datetimes at their edges, and aware ones inside. Pure: no I/O, no clock
unless one is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIMEZONE = "Asia/Shanghai"

_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


def parse_hhmm(text: str) -> time:
    """``"12:00"`` → ``time(12, 0)``; raises ValueError naming the expected shape."""
    match = _HHMM.fullmatch(text)
    if match is None:
        raise ValueError(f"must be HH:MM (00:00-23:59), got {text!r}")
    return time(int(match.group(1)), int(match.group(2)))


def zone(name: str) -> ZoneInfo:
    """An IANA timezone by name; raises ValueError for an unknown one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {name!r}") from exc


def _as_utc(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC (the database's convention)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class BusinessCalendar:
    """Days, their bounds and the moments of local time points, in one timezone."""

    tz: ZoneInfo

    @classmethod
    def named(cls, name: str = DEFAULT_TIMEZONE) -> BusinessCalendar:
        return cls(zone(name))

    @property
    def name(self) -> str:
        return self.tz.key

    def day_of(self, moment: datetime) -> date:
        """The business day ``moment`` (naive UTC or aware) belongs to."""
        return _as_utc(moment).astimezone(self.tz).date()

    def today(self, now: datetime | None = None) -> date:
        return self.day_of(now if now is not None else datetime.now(UTC))

    def start_of(self, day: date) -> datetime:
        """The first instant of ``day``, as naive UTC (inclusive lower bound for queries)."""
        return self.at(day, time(0, 0))

    def bounds(self, day: date) -> tuple[datetime, datetime]:
        """``[start, end)`` of ``day`` in naive UTC; 23 or 25 hours long across a DST change."""
        return self.start_of(day), self.start_of(day + timedelta(days=1))

    def at(self, day: date, local: time) -> datetime:
        """The naive-UTC moment of local wall-clock ``local`` on ``day``.

        A wall-clock time that does not exist (skipped by a DST change) is
        taken after the gap; an ambiguous one takes its first occurrence
        (``fold=0``), so a time point never runs twice on one day.
        """
        wall = datetime.combine(day, local).replace(tzinfo=self.tz)
        moment = wall.astimezone(UTC)
        # A skipped time does not round-trip; move it forward past the gap.
        if moment.astimezone(self.tz).replace(tzinfo=None) != wall.replace(tzinfo=None):
            moment = (wall + timedelta(hours=1)).astimezone(UTC)
        return _naive_utc(moment)

    def local(self, moment: datetime) -> datetime:
        """``moment`` as an aware datetime in the business timezone (for what people read)."""
        return _as_utc(moment).astimezone(self.tz)

    def local_time(self, moment: datetime) -> time:
        """The wall-clock time of ``moment`` in the business timezone."""
        return _as_utc(moment).astimezone(self.tz).time()

    def in_window(self, moment: datetime, start: time, end: time) -> bool:
        """Whether ``moment``'s local time lies in ``[start, end)``; ``end <= start`` crosses midnight."""
        now = self.local_time(moment).replace(tzinfo=None)
        if start < end:
            return start <= now < end
        return now >= start or now < end
