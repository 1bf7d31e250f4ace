"""The end-of-run check that no secret reached a log (tests/support/secret_watch.py) can fail."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from channels.config import Secret, collect_secrets
from devstack.config import GatewayPorts, gateway_config, write_config
from tests.support.secret_watch import LogText, configured_secrets, find_leaks, process_logs


def test_a_secret_in_a_record_or_its_extras_is_found() -> None:
    handler = LogText()
    log = logging.getLogger("paygate.test.secret-watch")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # this leak is on purpose: not for the run's own check
    try:
        with collect_secrets() as secrets:
            token = Secret("a-token-that-leaked-0001")
            log.info("calling with %s", token)  # the wrapper never prints: fine
            log.info("ok", extra={"detail": {"headers": {"authorization": "Bearer " + token.reveal()}}})
    finally:
        log.removeHandler(handler)
    leaks = find_leaks(handler.lines, secrets)
    assert [leak.where for leak in leaks] == ["paygate.test.secret-watch"]
    assert "a-token-that-leaked-0001" not in str(leaks[0]) and "24 characters" in str(leaks[0])


def test_short_values_and_fillers_are_not_searched_for() -> None:
    assert find_leaks([("x", "the key is s, or xxxxxxxxxxxxxxxxxxxxxxxx")], ["s", "", "x" * 20, "ababab" * 4]) == []
    assert len(find_leaks([("x", "the key is abcde-123")], ["abcde-123"])) == 1


def test_process_logs_are_searched_for_the_secrets_of_their_configuration() -> None:
    # outside the run's temporary directory, which the run's own check searches
    with tempfile.TemporaryDirectory() as folder:
        _search_a_process_log(Path(folder))


def _search_a_process_log(tmp_path: Path) -> None:
    config = gateway_config(
        GatewayPorts(0, 0, 0),
        database={"password": "db-password-of-a-process"},
        callers={"loans": "loans-token-of-a-process"},
        channels=[
            {
                "id": "bank-a",
                "adapter": "sandbox",
                "settings": {"base_url": "http://127.0.0.1:9", "merchant_id": "m", "secret": "bank-secret-of-process"},
            }
        ],
    )
    (tmp_path / "run").mkdir()
    write_config(tmp_path / "run" / "paygate.toml", config)
    (tmp_path / "run" / "gateway.log").write_text('{"msg": "signing with bank-secret-of-process"}\\n')
    (tmp_path / "notes.toml").write_text("not = [a gateway config")
    with collect_secrets() as secrets:
        configured_secrets(tmp_path)
    assert {"db-password-of-a-process", "loans-token-of-a-process", "bank-secret-of-process"} <= secrets
    leaks = find_leaks(process_logs(tmp_path), secrets)
    assert [(Path(leak.where).name, leak.secret) for leak in leaks] == [("gateway.log", "bank-secret-of-process")]
