"""Adversarial probes of the result events (docs/EVENTS.md), read-only: gateway/outbox/ is owned elsewhere.

A FLOW_RESULT written by a real withhold carries what the contract promises (fields, minor units, UTC
timestamps, no card or id number anywhere in its bytes); the JSON and protobuf encodings carry the same
event (int64 amounts as strings in JSON); the reference consumer drops duplicates by event id.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.outbox.codec import CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF, decode, encode, headers_for
from gateway.results import ResultConsumer
from gateway.store.db import DatabaseConfig
from paygate.v1 import events_pb2, gateway_pb2
from tests.support.harness import running_gateway

ID_NO = "11010519491231002X"  # what Harness.bind_card signs with
PHONE = "13800138000"


async def test_a_flow_result_carries_what_the_contract_promises(db_config: DatabaseConfig) -> None:
    async with running_gateway(db_config, {"bank-a": Behaviour()}) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        flows = {}
        for request_id, amount in (("ev-ok", 12_345), ("ev-no", 10_001)):  # ...01: insufficient funds
            flows[request_id] = await h.stub.Withhold(
                gateway_pb2.WithholdRequest(
                    request_id=request_id,
                    amount=gateway_pb2.Money(amount=amount, currency="CNY"),
                    account_no=card,
                    bank_code="ICBC",
                    wait_ms=8000,
                ),
                metadata=h.md(),
            )
        rows = await h.gateway.db.fetchall(
            "SELECT o.event_id, o.event_type, o.msg_key, o.caller, o.payload FROM outbox o ORDER BY o.id"
        )
    results = [r for r in rows if r["event_type"] == "FLOW_RESULT"]
    assert len(results) == 2
    by_request = {}
    for row in results:
        payload = bytes(row["payload"])
        for secret in (card, card[:-4], ID_NO, PHONE):
            assert secret.encode() not in payload, secret
        event = events_pb2.FlowEvent.FromString(payload)
        assert (event.event_id, event.flow_no, event.caller) == (row["event_id"], row["msg_key"], row["caller"])
        by_request[event.request_id] = event
    ok, no = by_request["ev-ok"], by_request["ev-no"]
    for event, flow in ((ok, flows["ev-ok"]), (no, flows["ev-no"])):
        assert event.event_type == events_pb2.FLOW_RESULT
        assert (event.caller, event.flow_no, event.kind) == ("loans", flow.flow_no, gateway_pb2.WITHHOLD)
        assert (event.amount.amount, event.amount.currency) == (flow.amount.amount, "CNY")
        assert event.channel == "bank-a"
        for stamp in (event.created_at, event.finished_at, event.emitted_at):
            assert stamp.seconds > 0
        assert event.created_at.ToDatetime() <= event.finished_at.ToDatetime() <= event.emitted_at.ToDatetime()
    assert ok.amount.amount == 12_345 and ok.status == gateway_pb2.SUCCEEDED and ok.channel_txn_id
    assert not ok.failure_code and not ok.payer_attributable
    assert no.status == gateway_pb2.FAILED
    assert (no.failure_code, no.payer_attributable) == ("INSUFFICIENT_FUNDS", True)


def _rich_event() -> events_pb2.FlowEvent:
    event = events_pb2.FlowEvent(
        event_id="01JEVENT0000000000000000AA",
        event_type=events_pb2.FLOW_RESULT,
        caller="loans",
        request_id="r-1 中文",
        flow_no="01JFLOW00000000000000000AA",
        kind=gateway_pb2.REFUND,
        status=gateway_pb2.FAILED,
        channel="bank-a",
        channel_txn_id="T1",
        failure_code="X",
        failure_message='余额不足 \u2028 "quoted"',
        payer_attributable=True,
        needs_review=True,
        original_flow_no="01JORIG00000000000000000AA",
        detail="d",
    )
    event.amount.amount = 9_007_199_254_740_993  # 2**53 + 1: a float would round it
    event.amount.currency = "CNY"
    event.created_at.FromSeconds(1_700_000_000)
    event.finished_at.FromNanoseconds(1_700_000_001_123_456_789)
    event.emitted_at.FromSeconds(1_700_000_002)
    return event


def test_json_and_protobuf_carry_the_same_event() -> None:
    event = _rich_event()
    as_proto, proto_type = encode(event, "protobuf")
    as_json, json_type = encode(event, "json")
    assert (proto_type, json_type) == (CONTENT_TYPE_PROTOBUF, CONTENT_TYPE_JSON)
    assert decode(as_proto, proto_type) == decode(as_json, json_type + "; charset=utf-8") == event
    document = json.loads(as_json)
    assert document["amount"]["amount"] == "9007199254740993"  # a string: no consumer's float rounds money
    assert document["payer_attributable"] is True and document["kind"] == "REFUND"
    empty = json.loads(encode(events_pb2.FlowEvent(event_id="e"), "json")[0])
    assert empty["needs_review"] is False and empty["failure_code"] == ""  # every field, even the defaults
    assert dict(headers_for(event, json_type)) == {
        "event_id": event.event_id.encode(),
        "event_type": b"FLOW_RESULT",
        "content-type": b"application/json",
    }


def _record(event: events_pb2.FlowEvent, offset: int, *, header_id: bool = True) -> Any:
    value, content_type = encode(event, "protobuf")
    headers = headers_for(event, content_type)
    if not header_id:
        headers = [(k, v) for k, v in headers if k != "event_id"]
    return SimpleNamespace(topic="loans.results", partition=0, offset=offset, value=value, headers=headers)


def _consumer() -> ResultConsumer:
    return ResultConsumer("127.0.0.1:1", ["loans.results"])  # never started: no broker is asked


async def test_the_consumer_drops_a_redelivered_event_by_its_id() -> None:
    consumer = _consumer()
    first, second = _rich_event(), _rich_event()
    second.event_id = "01JEVENT0000000000000000BB"
    accepted = [consumer._accept(_record(e, n)) for n, e in enumerate((first, first, second, first))]
    assert [e.event_id if e else None for e in accepted] == [first.event_id, None, second.event_id, None]
    assert (consumer.stats.delivered, consumer.stats.duplicates) == (2, 2)


async def test_events_without_an_id_are_not_taken_for_duplicates_of_each_other() -> None:
    consumer = _consumer()
    one, other = _rich_event(), _rich_event()
    one.event_id = other.event_id = ""
    other.flow_no = "01JFLOW00000000000000000BB"
    accepted = [consumer._accept(_record(e, n, header_id=False)) for n, e in enumerate((one, other))]
    assert consumer.stats.duplicates == 0, [e.flow_no if e else None for e in accepted]
    assert accepted == [None, None] and consumer.stats.undecodable == 2  # refused, as no event of ours lacks an id
