"""Structured logging: JSON lines in production, readable text locally, card and ID numbers always masked.

Call :func:`configure_logging` once, in the composition root. Everything
else logs through ``logging.getLogger(__name__)`` and passes context with
``extra=``::

    log.info("withhold sent", extra={"flow_no": flow_no, "channel": "icbc", "attempt": 1})

One JSON object per line: ``ts`` (UTC, ISO 8601, ms), ``level``, ``logger``,
``msg``, then the well-known context fields in :data:`CONTEXT_FIELDS`
(when present), then any other ``extra`` fields, then ``exc`` for a
traceback.

Masking (DESIGN.md invariant 10) happens in :class:`MaskingFilter`, attached
to the handler so it sees records from every logger: the formatted message
(``msg % args``), every string extra (also inside lists and dicts) and the
traceback text go through :func:`gateway.domain.scrub` (cards, ids, mobiles
and long account numbers by shape; identifiers such as request ids and flow
numbers stay greppable); fields named in :data:`PII_FIELDS` are masked
whatever they look like.

:data:`RPC_FLOW_NO` carries the flow number an RPC created or found, from the
use case to the interceptor's log line (also when the RPC ends cancelled).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, Any, Literal

from gateway.domain import mask_account, mask_id, mask_phone, scrub

__all__ = [
    "CONTEXT_FIELDS",
    "PII_FIELDS",
    "RPC_FLOW_NO",
    "JsonFormatter",
    "MaskingFilter",
    "TextFormatter",
    "configure_logging",
    "publish_flow_no",
]

# Context fields, in output order.
CONTEXT_FIELDS = (
    "request_id",
    "caller",
    "flow_no",
    "channel",
    "channel_order_no",
    "method",
    "code",
    "duration_ms",
    "operation",
    "outcome",
    "attempt",
)

# Fields that hold a card/account or ID number by name: masked even when the
# value does not look like one (short test numbers, numbers with spaces).
PII_FIELDS: Mapping[str, Callable[[str], str]] = {
    "account_no": mask_account,
    "card_no": mask_account,
    "payee_account": mask_account,
    "id_no": mask_id,
    "phone": mask_phone,
    "mobile": mask_phone,
}

# The flow number the current RPC created or found (see publish_flow_no).
RPC_FLOW_NO: contextvars.ContextVar[str] = contextvars.ContextVar("paygate_rpc_flow_no", default="")


def publish_flow_no(flow_no: str) -> None:
    """Tell the RPC's interceptor which flow this call is about, so its log line names the flow even when the
    call then ends cancelled or past its deadline. A no-op outside an RPC."""
    RPC_FLOW_NO.set(flow_no)


# Attributes every LogRecord has; anything else on a record came from extra=.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

_HANDLER_MARK = "_paygate_handler"
_MASKED_MARK = "_paygate_masked"


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS and not k.startswith("_")}


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {key: _mask_field(str(key), item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub_value(item) for item in value]
    return value


def _mask_field(name: str, value: Any) -> Any:
    masker = PII_FIELDS.get(name)
    if masker is not None and value is not None:
        return masker("".join(str(value).split()))
    return _scrub_value(value)


class MaskingFilter(logging.Filter):
    """Masks card, account and ID numbers in a record's message, extras and traceback. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, _MASKED_MARK, False):
            try:
                message = record.getMessage()
            except (TypeError, ValueError):  # bad format args: keep both parts, masked
                message = f"{record.msg} {record.args!r}"
            record.msg = scrub(message)
            record.args = None
            for name, value in _extra_fields(record).items():
                setattr(record, name, _mask_field(name, value))
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = scrub(record.exc_text)
            if record.stack_info:
                record.stack_info = scrub(record.stack_info)
            setattr(record, _MASKED_MARK, True)
        return True


_SECOND: list[Any] = [-1, ""]  # the last whole second formatted, and its text: strftime once a second


def _timestamp(record: logging.LogRecord) -> str:
    whole = int(record.created)
    if _SECOND[0] != whole:
        _SECOND[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    return f"{_SECOND[1]}.{int(record.msecs):03d}Z"


def _ordered_fields(record: logging.LogRecord) -> dict[str, Any]:
    extras = _extra_fields(record)
    fields = {name: extras.pop(name) for name in CONTEXT_FIELDS if name in extras}
    fields.update(sorted(extras.items()))
    return fields


def _traceback(record: logging.LogRecord) -> str:
    parts = [record.exc_text or "", record.stack_info or ""]
    return "\n".join(part for part in parts if part)


_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)  # json.dumps with options builds one per call
# What a client sent (a request id before it was refused, a raw channel message) must not start a
# line of its own that reads like ours: controls and the Unicode line separators are escaped.
_LINE_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_JSON_RAW = re.compile("[\x7f-\x9f\u2028\u2029]")


def _one_line(text: str) -> str:
    return _LINE_BREAKING.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; values that JSON cannot hold are written with ``str()``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_ordered_fields(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        trace = _traceback(record)
        if trace:
            entry["exc"] = trace
        # JSON escapes the C0 controls itself; DEL, C1 and U+2028/2029 stay raw with ensure_ascii off
        return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", _ENCODER.encode(entry))


class TextFormatter(logging.Formatter):
    """``2026-01-02 03:04:05.678 INFO  gateway.flows: withhold sent flow_no=01J... channel=icbc``"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        context = " ".join(f"{key}={value}" for key, value in _ordered_fields(record).items())
        line = f"{stamp}.{int(record.msecs):03d} {record.levelname:<5} {record.name}: {record.getMessage()}"
        if context:
            line = f"{line} {context}"
        line = _one_line(line)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        trace = _traceback(record)
        return f"{line}\n{trace}" if trace else line


def configure_logging(
    fmt: Literal["json", "text"] = "json",
    level: int | str = "INFO",
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Route every logger through one masking handler on the root logger; return that handler.

    Idempotent: calling it again replaces the handler it installed before
    (handlers installed by others are left alone). ``stream`` defaults to
    stderr.
    """
    if fmt not in ("json", "text"):
        raise ValueError(f"log format: expected 'json' or 'text', got {fmt!r}")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, _HANDLER_MARK, False):
            root.removeHandler(existing)
            existing.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(MaskingFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
