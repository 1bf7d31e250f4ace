"""Wire format of result events: value encoding and message headers.

Every message carries three headers (UTF-8 values):

* ``event_id``: the event's unique id (ULID); consumers drop duplicates by it;
* ``event_type``: ``FLOW_RESULT``, ``FLOW_NEEDS_REVIEW`` or ``DISCREPANCY``;
* ``content-type``: ``application/x-protobuf`` (a serialized ``paygate.v1.FlowEvent``)
  or ``application/json`` (the same message in proto3 JSON, field names as in the
  .proto, int64 amounts as strings so no consumer turns money into a float).

The message key is the flow number, so the events of one flow land on one
partition, in order. See docs/EVENTS.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Literal

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from gateway.errors import EventDecodeError as EventDecodeError  # raised here; consumers catch it from here
from paygate.v1.events_pb2 import EventType, FlowEvent

CONTENT_TYPE_PROTOBUF = "application/x-protobuf"
CONTENT_TYPE_JSON = "application/json"

HEADER_EVENT_ID = "event_id"
HEADER_EVENT_TYPE = "event_type"
HEADER_CONTENT_TYPE = "content-type"

Encoding = Literal["protobuf", "json"]


def encode(event: FlowEvent, encoding: Encoding) -> tuple[bytes, str]:
    """Serialize ``event``; returns ``(value, content_type)``."""
    if encoding == "protobuf":
        return event.SerializeToString(), CONTENT_TYPE_PROTOBUF
    if encoding == "json":
        document = json_format.MessageToDict(
            event,
            preserving_proto_field_name=True,
            # false/""/0 are printed too, so a JSON consumer sees every field.
            always_print_fields_with_no_presence=True,
        )
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode(), CONTENT_TYPE_JSON
    raise ValueError(f"unknown encoding {encoding!r}")


def media_type(content_type: str) -> str:
    """``"application/json; charset=utf-8"`` -> ``"application/json"``."""
    return content_type.split(";", 1)[0].strip().lower()


def decode(value: bytes, content_type: str) -> FlowEvent:
    """Parse a message value. Unknown fields are ignored (newer producers may add some).

    Raises :class:`EventDecodeError` for an unsupported content type or a malformed value.
    """
    kind = media_type(content_type)
    event = FlowEvent()
    try:
        if kind == CONTENT_TYPE_PROTOBUF:
            event.ParseFromString(value)
        elif kind == CONTENT_TYPE_JSON:
            json_format.Parse(value, event, ignore_unknown_fields=True)
        else:
            raise EventDecodeError(f"unsupported content type {content_type!r}")
    except (DecodeError, json_format.ParseError, UnicodeDecodeError) as exc:
        raise EventDecodeError(f"malformed {kind} event: {exc}") from exc
    return event


def headers_for(event: FlowEvent, content_type: str) -> list[tuple[str, bytes]]:
    """The Kafka headers of a message carrying ``event``."""
    return [
        (HEADER_EVENT_ID, event.event_id.encode()),
        (HEADER_EVENT_TYPE, EventType.Name(event.event_type).encode()),
        (HEADER_CONTENT_TYPE, content_type.encode()),
    ]


def header(headers: Iterable[tuple[str, bytes | None]] | None, name: str) -> str | None:
    """The value of header ``name`` (last one wins) from aiokafka's ``[(name, bytes)]``, or None."""
    found: str | None = None
    for item_name, item_value in headers or ():
        if item_name == name and item_value is not None:
            found = bytes(item_value).decode("utf-8", "replace")
    return found
