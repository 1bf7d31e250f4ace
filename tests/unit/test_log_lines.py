"""Adversarial probe: what a client sends cannot forge a line of the text log.

The RPC log line carries the request id as sent, before validation refuses it (the refusal is what the
line reports); a line break in it must not start a second line that reads like one of ours.
"""

from __future__ import annotations

import io
import json
import logging

import pytest

from gateway.logs import configure_logging


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_line_break_sent_by_a_client_stays_in_its_line(fmt: str) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved_level = root.level
    handler = configure_logging(fmt, "INFO", stream)
    forged = "r-1\n2026-12-04 19:00:00.000 INFO  paygate.rpc: rpc ResolveFlow OK caller=ops"
    try:
        logging.getLogger("paygate.rpc").info(
            "rpc %s %s", "Withhold", "INVALID_ARGUMENT", extra={"request_id": forged, "caller": "loans\r\nx"}
        )
        logging.getLogger("paygate.test").warning("refused: %s", "a\u2028b\x1b[31m\x85c")
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert "rpc Withhold INVALID_ARGUMENT" in lines[0] and "ResolveFlow" in lines[0]
    assert not {"\x1b", "\u2028", "\x85"} & set(stream.getvalue())
    if fmt == "json":
        assert [json.loads(line)["msg"] for line in lines][1] == "refused: a\u2028b\x1b[31m\x85c"
