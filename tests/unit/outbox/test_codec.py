from __future__ import annotations

import json

import pytest

from gateway.outbox import codec
from paygate.v1 import events_pb2, gateway_pb2


def sample() -> events_pb2.FlowEvent:
    event = events_pb2.FlowEvent(
        event_id="01J0000000000000000000000A",
        event_type=events_pb2.FLOW_RESULT,
        caller="loan-servicing",
        request_id="r-1",
        flow_no="01J0000000000000000000000F",
        kind=gateway_pb2.WITHHOLD,
        status=gateway_pb2.FAILED,
        amount=gateway_pb2.Money(amount=9_007_199_254_740_993, currency="CNY"),  # > 2**53: floats would round it
        failure_code="INSUFFICIENT_FUNDS",
        payer_attributable=True,
    )
    event.finished_at.FromSeconds(1_700_000_000)
    return event


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_round_trip(encoding: codec.Encoding) -> None:
    value, content_type = codec.encode(sample(), encoding)
    assert codec.decode(value, content_type) == sample()


def test_json_is_compact_snake_case_with_money_as_string() -> None:
    value, content_type = codec.encode(sample(), "json")
    assert content_type == "application/json"
    document = json.loads(value)
    assert document["amount"] == {"amount": "9007199254740993", "currency": "CNY"}
    assert document["failure_code"] == "INSUFFICIENT_FUNDS" and document["channel"] == ""
    assert document["kind"] == "WITHHOLD" and document["finished_at"] == "2023-11-14T22:13:20Z"
    assert b"\n" not in value and b": " not in value


def test_headers() -> None:
    headers = codec.headers_for(sample(), codec.CONTENT_TYPE_JSON)
    assert headers == [
        ("event_id", b"01J0000000000000000000000A"),
        ("event_type", b"FLOW_RESULT"),
        ("content-type", b"application/json"),
    ]
    assert codec.header(headers, "event_type") == "FLOW_RESULT"
    assert codec.header(headers, "missing") is None
    assert codec.header(None, "event_id") is None


def test_content_type_parameters_and_case_are_ignored() -> None:
    value, _ = codec.encode(sample(), "json")
    assert codec.decode(value, "Application/JSON; charset=utf-8") == sample()


def test_unknown_json_fields_are_ignored_for_forward_compatibility() -> None:
    value, _ = codec.encode(sample(), "json")
    document = json.loads(value)
    document["added_in_v2"] = {"x": 1}
    assert codec.decode(json.dumps(document).encode(), "application/json") == sample()


@pytest.mark.parametrize(
    ("value", "content_type"),
    [
        (b"\xff\xff\xff", "application/x-protobuf"),
        (b"{not json", "application/json"),
        (b'{"amount": {"amount": 1.5}}', "application/json"),
        (b"\xff", "application/json"),
        (b"", "text/plain"),
    ],
)
def test_bad_values_raise_decode_error(value: bytes, content_type: str) -> None:
    with pytest.raises(codec.EventDecodeError):
        codec.decode(value, content_type)


def test_unknown_encoding_is_refused() -> None:
    with pytest.raises(ValueError):
        codec.encode(sample(), "avro")  # type: ignore[arg-type]
