"""What the console's pages show, computed without I/O (gateway/console/views.py)."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from gateway.businessday import BusinessCalendar
from gateway.console import views
from gateway.console.i18n import translator
from gateway.domain import AttemptStatus, FlowKind, FlowStatus
from gateway.errors import InvalidInput
from gateway.store.console_rows import (
    ChannelOutcomes,
    FlowCursor,
    FlowRecords,
    OutboxBacklog,
    OutboxEntry,
    PollState,
)
from gateway.store.rows import AttemptRow, AuditRow, FlowRow

SHANGHAI = BusinessCalendar.named("Asia/Shanghai")
T = translator("en")


def test_money_is_exact() -> None:
    assert views.money(123456) == "1,234.56 CNY"
    assert views.money(5) == "0.05 CNY"
    assert views.money(-100) == "-1.00 CNY"
    assert views.money(1234, "JPY") == "1,234 JPY"
    assert views.money(10**15 + 1) == "10,000,000,000,000.01 CNY"
    assert views.yuan(1005, "CNY") == "10.05"


def test_yuan_typed_in_a_form() -> None:
    assert views.parse_yuan("12.3", "min") == 1230
    assert views.parse_yuan(" 1,000.05 ", "min") == 100005
    assert views.parse_yuan("", "min") is None
    for bad in ("12.345", "1e3", "abc", "0.1.2"):
        with pytest.raises(InvalidInput) as raised:
            views.parse_yuan(bad, "min")
        assert str(raised.value).startswith("min")


def test_local_time_is_the_business_timezone() -> None:
    assert views.local(datetime(2026, 3, 5, 16, 30), SHANGHAI) == "2026-03-06 00:30:00"
    assert views.local(None, SHANGHAI) == ""
    assert views.age(59) == "59s" and views.age(3700) == "1h 1m" and views.age(90000) == "1d 1h"


def test_search_dates_are_business_days() -> None:
    form = views.parse_search({"from": "2026-03-05", "to": "2026-03-05"}, SHANGHAI, limit=51)
    assert form.query.created_from == datetime(2026, 3, 4, 16, 0)
    assert form.query.created_to == datetime(2026, 3, 5, 16, 0)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"flow_no": "not-a-flow"}, "flow_no"),
        ({"request_id": "bad id with spaces"}, "request_id"),
        ({"kind": "STEAL"}, "kind"),
        ({"status": "DONE"}, "status"),
        ({"channel": "Bank A"}, "channel"),
        ({"min": "3", "max": "2"}, "min"),
        ({"from": "2026-03-06", "to": "2026-03-05"}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"after": "!!!"}, "after"),
    ],
)
def test_a_bad_search_names_its_field(params: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        views.parse_search(params, SHANGHAI, limit=51)
    assert str(raised.value).startswith(field)


def test_a_cursor_round_trips_and_links_keep_the_search() -> None:
    cursor = FlowCursor(datetime(2026, 3, 5, 1, 2, 3, 456789), 42)
    assert views.decode_cursor(views.encode_cursor(cursor)) == cursor
    form = views.parse_search({"caller": "loans", "status": "FAILED"}, SHANGHAI, limit=51)
    link = form.link(after=views.encode_cursor(cursor))
    again = views.parse_search(dict(p.split("=", 1) for p in link.split("&")), SHANGHAI, limit=51)
    assert again.query.caller == "loans" and again.query.status == "FAILED" and again.query.after == cursor


def test_csv_cells_cannot_become_formulas() -> None:
    assert views.csv_cell('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")'
    assert views.csv_cell("+1") == "'+1" and views.csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert views.csv_cell("loan repayment") == "loan repayment"
    assert views.csv_cell(None) == ""


def _flow() -> FlowRow:
    t0 = datetime(2026, 3, 5, 2, 0, 0)
    attempts = [
        AttemptRow(
            1,
            7,
            1,
            "bank-a",
            "withhold",
            "01ABC-1",
            AttemptStatus.FAILED,
            1000,
            "CNY",
            raw_code="BUSY",
            raw_message="busy",
            code="CHANNEL_BUSY",
            safe_elsewhere=True,
            decision={
                "chosen": "bank-a",
                "reason": "best_score",
                "ranked": [{"channel_id": "bank-a", "score": 0.9, "estimate": 0.95, "cost": 20, "reason": "x"}],
                "rejected": [{"channel_id": "bank-c", "filter": "state", "detail": "disabled"}],
            },
            created_at=t0.replace(second=1),
            finished_at=t0.replace(second=2),
        ),
        AttemptRow(
            2,
            7,
            2,
            "bank-b",
            "withhold",
            "01ABC-2",
            AttemptStatus.PENDING,
            1000,
            "CNY",
            decision={"chosen": "bank-b", "reason": "failover"},
            created_at=t0.replace(second=3),
        ),
    ]
    return FlowRow(
        7,
        "01ABC",
        "loans",
        "r-1",
        FlowKind.WITHHOLD,
        1000,
        "CNY",
        "h",
        FlowStatus.PROCESSING,
        account_masked="************1234",
        needs_review=True,
        created_at=t0,
        updated_at=t0.replace(minute=5),
        attempts=attempts,
    )


def test_the_timeline_tells_every_recorded_step_in_order() -> None:
    flow = _flow()
    records = FlowRecords(
        polls=[PollState(2, 3, datetime(2026, 3, 5, 2, 4), None, "")],
        events=[
            OutboxEntry(
                1,
                "E1",
                "FLOW_NEEDS_REVIEW",
                7,
                "01ABC",
                "loans",
                b"",
                datetime(2026, 3, 5, 2, 5),
                datetime(2026, 3, 5, 2, 5, 1),
                1,
                "",
            )
        ],
        audit=[AuditRow(1, "alice", "requery_flow", "01ABC", "re-query", {"queued": 1}, datetime(2026, 3, 5, 2, 6))],
    )
    timeline = views.build_timeline(flow, records, T, SHANGHAI)
    kinds = [e.kind for e in timeline]
    assert kinds == [
        "created",
        "attempt",
        "decision",
        "answer",
        "attempt",
        "decision",
        "open",
        "poll",
        "event",
        "review",
        "audit",
    ]
    assert [e.at for e in timeline] == sorted(e.at for e in timeline)
    decision = timeline[2]
    assert decision.candidates[0]["channel_id"] == "bank-a" and decision.rejected[0]["filter"] == "state"
    answer = timeline[3]
    assert answer.tone == "bad" and "CHANNEL_BUSY" in answer.lines and "safe to try elsewhere" in answer.lines
    assert "published to Kafka" in timeline[8].lines[0]
    assert timeline[-1].title == "Operator alice: requery_flow"


def test_alerts_follow_the_prometheus_rules() -> None:
    calm = views.alerts(
        T,
        review=0,
        outbox=OutboxBacklog(0, 0, 0.0),
        channels=[views.ChannelView("a", "enabled", False)],
        oldest_open_s=10.0,
        discrepancies_15m=0,
        last_hour=[ChannelOutcomes("a", "withhold", 99, 1, 50, 0)],
    )
    assert calm == []
    loud = views.alerts(
        T,
        review=2,
        outbox=OutboxBacklog(5, 1, 400.0),
        channels=[views.ChannelView("a", "disabled", False), views.ChannelView("b", "enabled", True)],
        oldest_open_s=8000.0,
        discrepancies_15m=1,
        last_hour=[ChannelOutcomes("c", "withhold", 7, 3, 0, 0), ChannelOutcomes("d", "withhold", 1, 1, 0, 0)],
    )
    texts = [a.text for a in loud]
    assert "channel b is eliminated (circuit open)" in texts
    assert "channel a was set disabled by an operator" in texts
    assert "channel c withhold success rate 70.0% over the last hour" in texts
    assert not any("channel d" in t for t in texts), "two decided attempts say nothing"
    assert len(loud) == 8
    assert {a.severity for a in loud} == {"warning", "critical"}


def test_the_timeline_never_shows_a_whole_card_number() -> None:
    flow = _flow()
    flow.attempts[0].raw_message = "card 6222021234567890123 is frozen"
    lines = [line for e in views.build_timeline(flow, FlowRecords(), T, SHANGHAI) for line in e.lines]
    assert not any("6222021234567890123" in line for line in lines)
    assert any("0123" in line for line in lines)


@pytest.mark.parametrize(
    "text", ["2026-W50-1", "2026W501", "20261207", "2026-341", "2026-12-7", "9999-12-31", "0001-01-01"]
)
def test_a_day_is_exactly_yyyy_mm_dd_as_the_api_takes_it(text: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        views.parse_day(text, "from")
    assert raised.value.field == "from"
    assert views.parse_day(" 2026-12-07 ", "from") == date(2026, 12, 7) and views.parse_day("", "from") is None
