"""Adversarial probes of the ``paygate`` command: wrong arguments, unreadable files and a database that is
down give one clear line and a non-zero exit, never a traceback (and never a secret)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli import main

PASSWORD = "db-pass-0123456789"


@pytest.fixture(autouse=True)
def _own_logging() -> Iterator[None]:
    """``main`` configures logging onto this test's captured stderr: take that handler away afterwards, so
    a later test's line is not written to a capture that has been closed (a "Logging error" traceback)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """(exit code, stderr) of ``paygate <argv>`` run in-process; argparse's exits count as exits."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "paygate.toml"
    path.write_text(text)
    return str(path)


def test_a_configuration_path_that_is_not_a_readable_file_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (["config", "check"], ["migrate"], ["serve"]):
        code, err = _run([*command, "--config", str(tmp_path)], capsys)
        assert code == 2, command
        assert err.strip() == f"paygate: config error at {tmp_path}: cannot read the file (IsADirectoryError)"


@pytest.mark.parametrize("command", [["migrate"], ["serve"]])
def test_a_database_that_is_down_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    path = _config(
        tmp_path,
        f'[database]\nhost = "127.0.0.1"\nport = 1\npassword = "{PASSWORD}"\nconnect_timeout_s = 1\n'
        '[logging]\nlevel = "ERROR"\n',
    )
    code, err = _run([*command, "--config", path], capsys)
    assert code == 1
    assert err.startswith("paygate: database unavailable / 数据库不可用: ")
    assert "Traceback" not in err and PASSWORD not in err and len(err.strip().splitlines()) == 1


def test_health_with_a_missing_certificate_file_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "ca.pem"
    code, err = _run(["health", "--address", "127.0.0.1:1", "--timeout", "0.2", "--ca", str(missing)], capsys)
    assert (code, err.strip()) == (2, f"paygate health: cannot read {missing} (FileNotFoundError)")


@pytest.mark.parametrize(
    "argv",
    [
        ["no-such-command"],
        ["config"],
        ["config", "print"],
        ["bench"],
        ["results"],
        ["results", "tail", "--bogus"],
        ["obs"],
        ["console"],
        ["console", "hash-password", "--bogus"],
        ["health", "--timeout", "soon"],
        ["recon"],
        ["recon", "mark"],
        ["recon", "mark", "abc", "--resolution", "x", "--reason", "r", "--operator", "o"],
        ["recon", "report", "--day", "2026-13-45"],
        ["splits"],
        ["serve", "--bogus"],
        ["migrate", "extra"],
    ],
)
def test_bad_arguments_are_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(argv, capsys)
    assert code == 2, argv
    assert err.strip() and "Traceback" not in err


def test_bad_config_values_name_the_key_and_do_not_echo_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {
        '[server]\nworkers = "two"\n': "server.workers",
        "[server]\nbogus = 1\n": "server.bogus",
        f'[database]\npassword = "{PASSWORD}"\npool_min = "x"\n': "database.pool_min",
        f'[database]\npassword = ["{PASSWORD}"]\n': "database.password",
        f'[callers.loans]\ntoken = "{PASSWORD}"\nbogus = 1\n': "callers.loans.bogus",
    }
    for text, key in cases.items():
        code, err = _run(["config", "check", "--config", _config(tmp_path, text)], capsys)
        assert code == 2, text
        assert f"config error at {key}:" in err, (text, err)
        assert PASSWORD not in err and "Traceback" not in err


def test_recon_with_a_bad_configuration_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for config, said in (
        (str(tmp_path), f"config error at {tmp_path}: cannot read the file (IsADirectoryError)"),
        (_config(tmp_path, '[server]\nworkers = "two"\n'), "config error at server.workers: must be an integer"),
    ):
        code, err = _run(["recon", "--config", config, "runs"], capsys)
        assert code == 2 and err.startswith(f"paygate recon: {said}") and "Traceback" not in err, err


def test_splits_with_a_missing_certificate_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--address", "127.0.0.1:1", "--token", "t" * 20, "--timeout", "0.2"]
    missing = tmp_path / "ca.pem"
    code, err = _run(["splits", "run", *base, "--day", "2026-01-01", "--ca", str(missing)], capsys)
    assert (code, err.strip()) == (2, f"paygate splits: cannot open {missing} (FileNotFoundError)")
    code, err = _run(["splits", "funders", *base], capsys)  # nobody listens: a gRPC status, one line
    assert code == 1 and err.startswith("paygate splits: UNAVAILABLE: ") and len(err.strip().splitlines()) == 1


def test_results_tail_with_kafka_unreachable_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["results", "tail", "--bootstrap", "127.0.0.1:1", "--idle-timeout", "1"], capsys)
    assert code == 1
    assert "Traceback" not in err and "Unclosed AIOKafkaConsumer" not in err
    said = "paygate results tail: Kafka at 127.0.0.1:1 unavailable / "
    assert any(line.startswith(said) for line in err.splitlines())
