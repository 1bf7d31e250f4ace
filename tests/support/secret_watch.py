"""No configured secret in any log line of the whole test run (tests/conftest.py: ``no_secret_in_any_log``).

For the length of the run, every :class:`~channels.config.Secret` made in the test process is
remembered (:func:`channels.config.collect_secrets`) and every log record is formatted as the
gateway's JSON formatter writes it (message, every ``extra`` field, traceback) into memory. At the
end the text is searched for each secret, and so are the log files the gateway processes of the
end-to-end tests wrote under the run's temporary directory (their configuration files are read
there, so their secrets are known too). A find fails the run, naming where, never the secret.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.logs import JsonFormatter

# Values too likely to occur by chance are not searched for: shorter ones ("s" in a test's settings),
# and fillers of a few distinct characters ("x" * 20, "k" * 32 in the config tests), which hostile-input
# tests send as request fields too. No real secret looks like either.
MIN_LENGTH = 8
MIN_DISTINCT = 5


class LogText(logging.Handler):
    """Keeps every record it sees, formatted by the gateway's JSON formatter (without masking)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[tuple[str, str]] = []  # (logger, formatted line)
        self._formatter = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append((record.name, self._formatter.format(record)))
        except Exception:  # a record that cannot be formatted is kept as well as it can be
            self.lines.append((record.name, f"{record.msg!r} {record.args!r}"))


@dataclass(frozen=True)
class Leak:
    where: str
    secret: str = field(repr=False)

    def __str__(self) -> str:
        shown = f"{self.secret[:3]}... ({len(self.secret)} characters)"
        return f"{self.where}: a configured secret {shown}"


def find_leaks(texts: Iterable[tuple[str, str]], secrets: Iterable[str]) -> list[Leak]:
    """Every (where, secret) for which ``secret`` occurs in the text at ``where``."""
    wanted = sorted({s for s in secrets if len(s) >= MIN_LENGTH and len(set(s)) >= MIN_DISTINCT}, key=len, reverse=True)
    found: list[Leak] = []
    for where, text in texts:
        found += [Leak(where, s) for s in wanted if s in text]
    return found


def process_logs(folder: Path) -> list[tuple[str, str]]:
    """The ``*.log`` files below ``folder``, as (path, text)."""
    return [(str(p), p.read_text(errors="replace")) for p in sorted(folder.rglob("*.log")) if p.is_file()]


def configured_secrets(folder: Path) -> None:
    """Read every ``*.toml`` configuration below ``folder`` (inside ``collect_secrets``, so its secrets,
    channel keys included, are collected). Files that are no gateway configuration are passed over."""
    from gateway.app import build_registry
    from gateway.config import ConfigError, load

    for path in sorted(folder.rglob("*.toml")):
        try:
            build_registry(load(path, environ={}))
        except (ConfigError, OSError, ValueError):
            continue
