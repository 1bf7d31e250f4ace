"""Validation of adapter settings shared by the channel packages.

Each function reads one setting from a :class:`~channels.registry.ChannelSpec`
and raises :class:`~channels.registry.ChannelConfigError` naming
``f"{spec.key}.<setting>"`` when it is missing or wrong. Error messages never
quote a secret's value.
"""

from __future__ import annotations

import math
from pathlib import Path

from yarl import URL

from channels.registry import ChannelConfigError, ChannelSpec


def _error(spec: ChannelSpec, name: str, problem: str) -> ChannelConfigError:
    return ChannelConfigError(f"{spec.key}.{name}", problem)


def text(spec: ChannelSpec, name: str, *, default: str | None = None, strip: bool = True) -> str:
    """A required non-blank string; a bare integer counts as its digits (TOML ids such as ``mchid = 1900000109``).

    ``strip=False`` for secrets, whose surrounding blanks are part of the value.
    """
    value = spec.settings.get(name, default)
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise _error(spec, name, "required, a non-empty string")
    return str(value).strip() if strip else str(value)


def text_list(spec: ChannelSpec, name: str) -> list[str]:
    """A list of non-empty strings."""
    value = spec.settings.get(name)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise _error(spec, name, "must be a list of non-empty strings")
    return list(value)


def seconds(spec: ChannelSpec, name: str, default: float) -> float:
    """A positive, finite number of seconds."""
    value = spec.settings.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise _error(spec, name, f"must be a number of seconds > 0, got {value!r}")
    return float(value)


def connect_and_timeout(spec: ChannelSpec, *, connect_default: float, timeout_default: float) -> tuple[float, float]:
    """``connect_timeout_s`` and ``timeout_s`` (a whole-call budget, so connecting must take less of it)."""
    connect, timeout = seconds(spec, "connect_timeout_s", connect_default), seconds(spec, "timeout_s", timeout_default)
    if connect >= timeout:
        raise _error(spec, "connect_timeout_s", "must be shorter than timeout_s")
    return connect, timeout


def http_url(spec: ChannelSpec, name: str, *, default: str | None = None) -> str:
    """An ``http(s)://host...`` URL, as given (stripped of blanks)."""
    value = text(spec, name, default=default)
    url = URL(value)
    if url.scheme not in ("http", "https") or not url.host:
        raise _error(spec, name, "must be an http(s) URL with a host")
    return value


def optional_key_material(spec: ChannelSpec, name: str) -> tuple[str, str] | None:
    """Key material given inline as ``name`` or in a file ``name_path`` (not both), or None when neither.

    Returns (the setting used, its text) so that a caller rejecting the
    content can name the right setting.
    """
    inline, path = spec.settings.get(name), spec.settings.get(f"{name}_path")
    if inline and path:
        raise _error(spec, name, f"give only one of {name} or {name}_path")
    if inline:
        return name, str(inline)
    if not path:
        return None
    try:
        return f"{name}_path", Path(str(path)).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(spec, f"{name}_path", f"cannot read key file ({type(exc).__name__})") from None


def key_material(spec: ChannelSpec, name: str) -> tuple[str, str]:
    """Like :func:`optional_key_material`, but one of the two is required."""
    found = optional_key_material(spec, name)
    if found is None:
        raise _error(spec, name, f"give {name} or {name}_path")
    return found
