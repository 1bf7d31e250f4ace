"""What the pages show, computed without I/O: amounts, times, the search form, a flow's timeline, alerts.

Every function here is pure (the clock and the calendar come in as arguments), so the rules the
pages follow are unit tested without a server (tests/console/test_views.py).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from channels.statement import StatementFormatError, yuan_to_minor
from gateway import validation as v
from gateway.businessday import BusinessCalendar
from gateway.domain import CURRENCIES, FlowKind, FlowStatus, minor_to_text, scrub, spreadsheet_safe
from gateway.errors import InvalidInput
from gateway.plans.spec import due_date
from gateway.store.console_rows import ChannelOutcomes, FlowCursor, FlowQuery, FlowRecords, OutboxBacklog
from gateway.store.rows import FlowRow
from paygate.v1 import events_pb2

Translate = Callable[..., str]


# --- amounts and times -----------------------------------------------------------------


def money(amount: int, currency: str = "CNY") -> str:
    """``123456, "CNY"`` → ``"1,234.56 CNY"``: exact, from minor units, never through a float."""
    digits = CURRENCIES.get(currency, 2)
    sign = "-" if amount < 0 else ""
    whole, minor = divmod(abs(amount), 10**digits)
    text = f"{whole:,}" + (f".{minor:0{digits}d}" if digits else "")
    return f"{sign}{text} {currency}".strip()


# thousands grouped by commas, every group of three ("1,000.05"): "1,0.5" or "1,5" is a typo, not 10.50
_GROUPED = re.compile(r"-?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]*)?")


def parse_yuan(text: str, field_name: str) -> int | None:
    """An amount typed in yuan (``"12.30"``, ``"1,000.05"``) as minor units, exactly; None when blank."""
    text = text.strip()
    if not text:
        return None
    if "," in text:
        if not _GROUPED.fullmatch(text):
            raise InvalidInput(field_name, "must group thousands by commas as 1,000.00 (or use no commas)")
        text = text.replace(",", "")
    try:
        value = yuan_to_minor(text)
    except StatementFormatError:
        raise InvalidInput(field_name, "must be an amount in yuan with at most two decimals") from None
    if abs(value) > v.MAX_AMOUNT:
        raise InvalidInput(field_name, "is too large")
    return value


def local(moment: datetime | None, calendar: BusinessCalendar) -> str:
    """A stored (naive UTC) time as the business timezone's wall clock, to the second; "" for None."""
    if moment is None:
        return ""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(calendar.tz).strftime("%Y-%m-%d %H:%M:%S")


def age(seconds: float) -> str:
    """``4000`` → ``"1h 6m"``: a duration an operator reads at a glance."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f}%"


# --- the flow search form --------------------------------------------------------------

KINDS = tuple(k.value for k in FlowKind)
STATUSES = tuple(s.value for s in FlowStatus)


def encode_cursor(cursor: FlowCursor) -> str:
    raw = f"{cursor.created_at.isoformat()}|{cursor.id}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(token: str) -> FlowCursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        stamp, _, row_id = raw.partition("|")
        return FlowCursor(datetime.fromisoformat(stamp), int(row_id))
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("after", "is not a page cursor of this search") from None


def parse_day(text: str, field_name: str) -> date | None:
    """A business day typed as YYYY-MM-DD (the API's rule, :func:`gateway.plans.spec.due_date`); None when blank."""
    text = text.strip()
    return due_date(text, field_name) if text else None


@dataclass(frozen=True)
class SearchForm:
    """The flow search as typed (the values the form shows again) and the query it means."""

    values: dict[str, str]
    query: FlowQuery

    def link(self, **changes: str) -> str:
        """The query string of this search with ``changes`` (e.g. ``after=...``), blanks left out."""
        from urllib.parse import urlencode

        merged = {**self.values, **changes}
        return urlencode({k: val for k, val in merged.items() if val})


SEARCH_FIELDS = ("flow_no", "request_id", "caller", "kind", "status", "channel", "min", "max", "from", "to", "review")


def parse_search(params: Mapping[str, str], calendar: BusinessCalendar, *, limit: int) -> SearchForm:
    """The flow search of a query string; raises InvalidInput naming the field. Dates are business days."""
    values = {name: params.get(name, "").strip() for name in SEARCH_FIELDS}
    flow_no = v.pattern(values["flow_no"].upper(), "flow_no", v.FLOW_NO, "a 26-character flow number", required=False)
    values["flow_no"] = flow_no
    request_id = values["request_id"]
    if request_id:
        v.request_id(request_id)
    caller = v.pattern(values["caller"], "caller", v.CHANNEL_ID, "a caller name", required=False)
    channel = v.pattern(values["channel"], "channel", v.CHANNEL_ID, "a channel id", required=False)
    if values["kind"] and values["kind"] not in KINDS:
        raise InvalidInput("kind", f"must be one of {', '.join(KINDS)}")
    if values["status"] and values["status"] not in STATUSES:
        raise InvalidInput("status", f"must be one of {', '.join(STATUSES)}")
    low, high = parse_yuan(values["min"], "min"), parse_yuan(values["max"], "max")
    if low is not None and high is not None and low > high:
        raise InvalidInput("min", "must not be above max")
    first, last = parse_day(values["from"], "from"), parse_day(values["to"], "to")
    if first is not None and last is not None and first > last:
        raise InvalidInput("from", "must not be after to")
    after = decode_cursor(params["after"]) if params.get("after") else None
    query = FlowQuery(
        flow_no=flow_no,
        request_id=request_id,
        caller=caller,
        kind=values["kind"],
        status=values["status"],
        channel=channel,
        min_amount=low,
        max_amount=high,
        created_from=calendar.start_of(first) if first else None,
        created_to=calendar.start_of(last + timedelta(days=1)) if last else None,
        needs_review=values["review"] == "1",
        after=after,
        limit=limit,
    )
    return SearchForm(values, query)


CSV_COLUMNS = (
    "flow_no",
    "created_at",
    "finished_at",
    "caller",
    "request_id",
    "kind",
    "status",
    "amount",
    "currency",
    "account_masked",
    "bank_code",
    "channel",
    "failure_code",
    "needs_review",
    "description",
)


csv_cell = spreadsheet_safe  # one rule for every CSV the gateway hands out (gateway/domain.py)


def yuan(amount: int, currency: str) -> str:
    """Minor units as a plain decimal string (``"1234.56"``), exact, for CSV."""
    return minor_to_text(amount, currency)


# --- a flow's timeline -----------------------------------------------------------------


@dataclass
class TimelineEntry:
    """One thing that happened to a flow, with what to show about it."""

    at: datetime
    kind: str  # created, attempt, decision, answer, open, poll, event, audit, discrepancy, finished, review, refund
    title: str
    tone: str = ""  # "", ok, bad, warn
    lines: list[str] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    order: int = 0  # ties at the same time keep the order they were added in


_TONE = {"SUCCEEDED": "ok", "FAILED": "bad", "PENDING": "warn", "SENDING": "warn", "PROCESSING": "warn"}


def _event_detail(payload: bytes) -> str:
    event = events_pb2.FlowEvent()
    try:
        event.ParseFromString(payload)
    except Exception:
        return ""
    return event.detail


def build_timeline(
    flow: FlowRow, records: FlowRecords, t: Translate, calendar: BusinessCalendar
) -> list[TimelineEntry]:
    """Every recorded step of ``flow``, oldest first.

    Sources: the flow row (received, finished, review), each attempt (recorded and sent, its route
    decision with candidates, scores and rejections, the channel's answer or that none came yet),
    its poll-queue row (queries so far, the next one, an expedited one), the outbox (each event and
    whether it was published), the audit log (operators' actions), discrepancies and refunds.
    """
    entries: list[TimelineEntry] = []

    def add(entry: TimelineEntry) -> None:
        entry.order = len(entries)
        entries.append(entry)

    created = flow.created_at or datetime.min
    add(
        TimelineEntry(
            created,
            "created",
            t(
                "timeline.created",
                kind=t(f"kind.{flow.kind.value}"),
                amount=money(flow.amount, flow.currency),
                caller=flow.caller,
            ),
            lines=[f"{t('field.request_id')}: {flow.request_id}", f"{t('field.account')}: {flow.account_masked}"],
        )
    )
    polls = {p.attempt_id: p for p in records.polls}
    for attempt in flow.attempts:
        at = attempt.created_at or created
        add(
            TimelineEntry(
                at,
                "attempt",
                t("timeline.attempt", seq=attempt.seq, channel=attempt.channel, order_no=attempt.channel_order_no),
            )
        )
        decision = attempt.decision or {}
        if decision:
            add(
                TimelineEntry(
                    at,
                    "decision",
                    t(
                        "timeline.decision",
                        chosen=decision.get("chosen", attempt.channel),
                        reason=decision.get("reason", ""),
                    ),
                    candidates=[dict(c) for c in decision.get("ranked", []) if isinstance(c, dict)],
                    rejected=[dict(r) for r in decision.get("rejected", []) if isinstance(r, dict)],
                )
            )
        status = attempt.status.value
        if attempt.finished_at is not None:
            lines = [f"{attempt.raw_code} {attempt.raw_message}".strip(), attempt.code]
            if attempt.payer_attributable:
                lines.append(t("timeline.payer_attributable"))
            if attempt.safe_elsewhere:
                lines.append(t("timeline.safe_elsewhere"))
            if attempt.fee is not None:
                lines.append(f"{t('timeline.cost')}: {money(attempt.fee, attempt.currency)}")
            if attempt.channel_txn_id:
                lines.append(attempt.channel_txn_id)
            add(
                TimelineEntry(
                    attempt.finished_at,
                    "answer",
                    t("timeline.answer", status=t(f"status.{status}")),
                    _TONE.get(status, ""),
                    [line for line in lines if line],
                )
            )
        else:
            lines = [f"{attempt.raw_code} {attempt.raw_message}".strip()] if attempt.raw_code else []
            add(TimelineEntry(at, "open", t("timeline.open", status=t(f"status.{status}")), "warn", lines))
        poll = polls.get(attempt.id)
        if poll is not None:
            lines = [t("timeline.expedited", at=local(poll.expedited_at, calendar))] if poll.expedited_at else []
            add(
                TimelineEntry(
                    poll.due_at,
                    "poll",
                    t("timeline.poll", tries=poll.tries, due=local(poll.due_at, calendar)),
                    "warn",
                    lines,
                )
            )
    for event in records.events:
        detail = _event_detail(event.payload)
        published = (
            t("timeline.event_published", at=local(event.published_at, calendar))
            if event.published_at
            else t("timeline.event_unpublished", attempts=event.attempts)
        )
        lines = [published, *([detail] if detail else []), *([event.last_error] if event.last_error else [])]
        add(
            TimelineEntry(
                event.created_at,
                "event",
                t("timeline.event", type=event.event_type),
                "" if event.published_at else "warn",
                lines,
            )
        )
    for entry in records.audit:
        detail = ", ".join(f"{k}={val}" for k, val in sorted(entry.detail.items()))
        add(
            TimelineEntry(
                entry.created_at,
                "audit",
                t("timeline.audit", operator=entry.operator, action=entry.action),
                lines=[line for line in (entry.reason, detail) if line],
            )
        )
    for d in records.discrepancies:
        add(
            TimelineEntry(
                d.created_at,
                "discrepancy",
                t("timeline.discrepancy", recorded=d.recorded_status, reported=d.reported_status, source=d.source),
                "bad",
                [d.reported_code] if d.reported_code else [],
            )
        )
    for refund in records.refunds:
        add(
            TimelineEntry(
                refund.created_at,
                "refund",
                t(
                    "timeline.refund",
                    flow_no=refund.flow_no,
                    amount=money(refund.amount, refund.currency),
                    status=t(f"status.{refund.status}"),
                ),
                _TONE.get(refund.status, ""),
            )
        )
    if flow.needs_review and flow.status is FlowStatus.PROCESSING:
        add(TimelineEntry(flow.updated_at or created, "review", t("timeline.review"), "warn"))
    if flow.finished_at is not None:
        lines = [line for line in (flow.failure_code, flow.failure_message) if line]
        add(
            TimelineEntry(
                flow.finished_at,
                "finished",
                t("timeline.finished", status=t(f"status.{flow.status.value}")),
                _TONE.get(flow.status.value, ""),
                lines,
            )
        )
    for item in entries:  # raw channel messages, failure texts, reasons: never a whole card or id number
        item.lines = [scrub(line) for line in item.lines]
    entries.sort(key=lambda e: (e.at, e.order))
    return entries


# --- what is alerting ------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    severity: str  # warning / critical
    text: str


# the thresholds of deploy/prometheus/rules/paygate.rules.yml, read the same way here
OUTBOX_STALE_S = 300.0
PENDING_TOO_OLD_S = 7200.0
SUCCESS_WARNING = 0.95
SUCCESS_CRITICAL = 0.80
MIN_DECIDED = 10  # a rate over fewer decided attempts says nothing


@dataclass(frozen=True)
class ChannelView:
    """The router's view of one channel, as the alerts need it."""

    channel: str
    state: str  # enabled / draining / disabled
    eliminated: bool


def alerts(
    t: Translate,
    *,
    review: int,
    outbox: OutboxBacklog,
    channels: Sequence[ChannelView],
    oldest_open_s: float | None,
    discrepancies_15m: int,
    last_hour: Sequence[ChannelOutcomes],
) -> list[Alert]:
    """The alert conditions of the Prometheus rules, as the gateway itself sees them now."""
    out: list[Alert] = []
    for c in channels:
        if c.eliminated:
            out.append(Alert("critical", t("alert.eliminated", channel=c.channel)))
        if c.state != "enabled":
            out.append(Alert("warning", t("alert.disabled", channel=c.channel, state=t(f"channels.state.{c.state}"))))
    for o in last_hour:
        rate = o.success_rate
        if rate is None or o.succeeded + o.channel_failed < MIN_DECIDED or rate >= SUCCESS_WARNING:
            continue
        severity = "critical" if rate < SUCCESS_CRITICAL else "warning"
        out.append(
            Alert(severity, t("alert.success_low", channel=o.channel, operation=o.operation, rate=percent(rate)))
        )
    if discrepancies_15m:
        out.append(Alert("critical", t("alert.discrepancy", n=discrepancies_15m)))
    if outbox.parked:
        out.append(Alert("critical", t("alert.outbox_parked", n=outbox.parked)))
    if outbox.oldest_age_s > OUTBOX_STALE_S:
        out.append(Alert("warning", t("alert.outbox_stale", age=age(outbox.oldest_age_s))))
    if oldest_open_s is not None and oldest_open_s > PENDING_TOO_OLD_S:
        out.append(Alert("warning", t("alert.pending_old", age=age(oldest_open_s))))
    if review:
        out.append(Alert("warning", t("alert.review", n=review)))
    return out
