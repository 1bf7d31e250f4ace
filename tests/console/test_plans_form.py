"""The plans screen's search form: what it means, what it refuses (naming the field), its cursor."""

from __future__ import annotations

from datetime import date

import pytest

from gateway.console.plans import decode_cursor, encode_cursor, parse_search
from gateway.errors import InvalidInput
from gateway.store.console_rows import InstalmentCursor, InstalmentQuery

TODAY = date(2026, 12, 1)


def test_a_first_visit_shows_what_is_due_from_today() -> None:
    values, query = parse_search({}, TODAY, limit=51)
    assert values["from"] == "2026-12-01" and query == InstalmentQuery(due_from=TODAY, limit=51)
    _, query = parse_search({"lang": "en"}, TODAY, limit=51)  # choosing a language is not a search
    assert query.due_from == TODAY
    _, query = parse_search({"from": ""}, TODAY, limit=51)  # a cleared date is no date
    assert query == InstalmentQuery(limit=51)


def test_every_field_narrows_the_search() -> None:
    cursor = InstalmentCursor(date(2027, 1, 1), 42)
    params = {
        "plan_id": "loan-1",
        "caller": "loans",
        "status": "STOPPED",
        "from": "2026-11-01",
        "to": "2027-02-01",
        "after": encode_cursor(cursor),
    }
    _, query = parse_search(params, TODAY, limit=51)
    assert query == InstalmentQuery("loan-1", "loans", "STOPPED", date(2026, 11, 1), date(2027, 2, 1), cursor, 51)
    assert decode_cursor(encode_cursor(cursor)) == cursor


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"plan_id": "<script>"}, "plan_id"),
        ({"caller": "Bad Caller"}, "caller"),
        ({"status": "PROCESSING"}, "status"),
        ({"from": "1st of May"}, "from"),
        ({"from": "2026-12-02", "to": "2026-12-01"}, "from"),
        ({"after": "not-a-cursor"}, "after"),
    ],
)
def test_bad_input_is_refused_naming_the_field(params: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_search(params, TODAY, limit=51)
    assert refused.value.field == field
