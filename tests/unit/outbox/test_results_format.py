"""The reference consumer's pure parts: the duplicate window and the printed line."""

from __future__ import annotations

import pytest

from gateway.outbox.relay import is_retriable
from gateway.results import RecentIds, format_amount, format_event
from paygate.v1 import events_pb2, gateway_pb2


def test_recent_ids_remembers_a_bounded_window() -> None:
    recent = RecentIds(capacity=3)
    assert [recent.seen(i) for i in ("a", "b", "c")] == [False, False, False]
    assert recent.seen("a") is True  # refreshed: now the newest
    assert recent.seen("d") is False  # evicts "b", the oldest
    assert len(recent) == 3
    assert recent.seen("b") is False  # forgotten, so seen as new (and evicts "c")
    assert recent.seen("a") is True


def test_recent_ids_needs_room() -> None:
    with pytest.raises(ValueError):
        RecentIds(0)


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (12345, "CNY", "123.45 CNY"),
        (5, "CNY", "0.05 CNY"),
        (-250, "USD", "-2.50 USD"),
        (1500, "JPY", "1500 JPY"),
        (9_007_199_254_740_993, "CNY", "90071992547409.93 CNY"),
    ],
)
def test_format_amount_uses_integer_arithmetic(minor: int, currency: str, text: str) -> None:
    assert format_amount(minor, currency) == text


def test_format_event_line() -> None:
    event = events_pb2.FlowEvent(
        event_id="E1",
        event_type=events_pb2.FLOW_RESULT,
        caller="loans",
        request_id="r-9",
        flow_no="F1",
        kind=gateway_pb2.WITHHOLD,
        status=gateway_pb2.FAILED,
        amount=gateway_pb2.Money(amount=10000, currency="CNY"),
        channel="sandbox",
        failure_code="INSUFFICIENT_FUNDS",
        payer_attributable=True,
    )
    event.finished_at.FromSeconds(1_700_000_000)
    assert format_event(event) == (
        "2023-11-14T22:13:20Z FLOW_RESULT WITHHOLD FAILED flow=F1 caller=loans request=r-9"
        " amount=100.00 CNY channel=sandbox failure=INSUFFICIENT_FUNDS (payer) event=E1"
    )


def test_retriable_classification() -> None:
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError

    from gateway.errors import DatabaseUnavailable, DuplicateKey

    assert is_retriable(KafkaConnectionError()) and is_retriable(KafkaTimeoutError()) and is_retriable(TimeoutError())
    assert is_retriable(DatabaseUnavailable("down"))
    assert not is_retriable(MessageSizeTooLargeError()) and not is_retriable(DuplicateKey("k", "m"))
    assert not is_retriable(ValueError())
