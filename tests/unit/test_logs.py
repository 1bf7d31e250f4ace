"""gateway.logs: JSON and text output, context fields, and no card or ID number ever printed whole."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from gateway.logs import CONTEXT_FIELDS, configure_logging

CARD_16 = "6222020200112233"
CARD_19 = "6222020200112233445"
ID_18 = "11010519491231002X"
SECRETS = (CARD_16, CARD_19, ID_18)


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    root = logging.getLogger()
    saved_level = root.level
    stream = io.StringIO()
    handler = configure_logging("json", "DEBUG", stream)
    try:
        yield stream, logging.getLogger("paygate.test.logs")
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def _assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
        assert secret.lower() not in text


def test_json_line_has_the_base_fields_and_context_in_order(capture) -> None:
    stream, log = capture
    context = {name: f"v-{name}" for name in CONTEXT_FIELDS}
    context["duration_ms"] = 12.5
    context["attempt"] = 2
    log.info("withhold sent to %s", "icbc", extra={**context, "zz_other": "x"})
    (entry,) = _lines(stream)
    assert list(entry)[:4] == ["ts", "level", "logger", "msg"]
    assert entry["level"] == "INFO" and entry["logger"] == "paygate.test.logs"
    assert entry["msg"] == "withhold sent to icbc"
    assert entry["ts"].endswith("Z") and "T" in entry["ts"]
    assert list(entry)[4 : 4 + len(CONTEXT_FIELDS)] == list(CONTEXT_FIELDS)
    assert entry["duration_ms"] == 12.5 and entry["attempt"] == 2
    assert entry["zz_other"] == "x"


@pytest.mark.parametrize("card", [CARD_16, CARD_19, "6222020200112233" + "44"])
def test_card_number_never_whole_in_msg_args_or_extras(capture, card: str) -> None:
    stream, log = capture
    log.warning(f"card {card} declined")
    log.warning("card %s declined", card)
    log.warning("card %d declined", int(card))
    log.warning("declined", extra={"detail": f"bank says card {card} is frozen", "request_id": card})
    log.warning("declined", extra={"raw": {"cardNo": card, "nested": [card]}})
    output = stream.getvalue()
    assert card not in output
    entries = _lines(stream)
    assert len(entries) == 5
    assert entries[1]["msg"] == f"card {'*' * (len(card) - 4)}{card[-4:]} declined"
    assert entries[3]["detail"].endswith(f"{card[-4:]} is frozen")


def test_id_number_never_whole(capture) -> None:
    stream, log = capture
    log.info("payer id %s", ID_18, extra={"payer": f"id={ID_18}", "id_lower": ID_18.lower()})
    output = stream.getvalue()
    _assert_no_secret(output)
    (entry,) = _lines(stream)
    assert entry["msg"] == "payer id **************002X"


def test_pii_named_fields_are_always_masked(capture) -> None:
    stream, log = capture
    # short, spaced or numeric values do not look like card numbers, but the field name says they are
    log.info("bound", extra={"account_no": "6222 0202 0011 2233 445", "card_no": 62220202, "id_no": "110105X"})
    (entry,) = _lines(stream)
    assert entry["account_no"] == "***************3445"
    assert entry["card_no"] == "****0202"
    assert "62220202" not in stream.getvalue()
    assert entry["id_no"] == "****05X"  # a short value shows half of it, never more than 4


def test_traceback_is_masked(capture) -> None:
    stream, log = capture
    try:
        raise ValueError(f"channel rejected card {CARD_19} for id {ID_18}")
    except ValueError:
        log.exception("call failed")
    output = stream.getvalue()
    _assert_no_secret(output)
    (entry,) = _lines(stream)
    assert "ValueError: channel rejected card" in entry["exc"]


def test_text_format_is_readable_and_masked() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved_level = root.level
    handler = configure_logging("text", "INFO", stream)
    try:
        log = logging.getLogger("paygate.test.text")
        log.debug("hidden below INFO")
        log.info("payout to %s", CARD_19, extra={"flow_no": "01JABCDEF", "channel": "icbc", "id_no": ID_18})
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)
    output = stream.getvalue()
    _assert_no_secret(output)
    assert "hidden" not in output
    (line,) = output.splitlines()
    assert " INFO  paygate.test.text: payout to ***************3445 flow_no=01JABCDEF channel=icbc id_no=" in line


def test_configure_logging_twice_keeps_one_handler(capture) -> None:
    stream, _ = capture
    second = io.StringIO()
    handler = configure_logging("json", "INFO", second)
    try:
        ours = [h for h in logging.getLogger().handlers if getattr(h, "_paygate_handler", False)]
        assert ours == [handler]
        logging.getLogger("paygate.test").info("once")
    finally:
        logging.getLogger().removeHandler(handler)
    assert len(_lines(second)) == 1 and stream.getvalue() == ""


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging("xml")  # type: ignore[arg-type]


def test_ulids_and_order_numbers_are_not_masked(capture) -> None:
    stream, log = capture
    log.info("ok", extra={"flow_no": "01JD3Z8X5Q7R2M4N6P8S0T1V3W", "channel_order_no": "01JD3Z8X5Q7R2M4N6P8S0T1V3W01"})
    (entry,) = _lines(stream)
    assert entry["flow_no"] == "01JD3Z8X5Q7R2M4N6P8S0T1V3W"
    assert entry["channel_order_no"] == "01JD3Z8X5Q7R2M4N6P8S0T1V3W01"
