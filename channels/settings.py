"""Value types and helpers for adapter settings, shared by the channel packages.

An adapter declares the keys of its ``[channels.settings]`` as a table (a frozen dataclass with
``__pydantic_config__ = TABLE``, see :mod:`channels.config`), each key with its type and its one
default, and reads it in ``build`` with :meth:`~channels.registry.ChannelSpec.read`. Every error
is a :class:`~channels.config.ConfigError` naming ``f"{spec.key}.<setting>"``; none quotes a
secret's value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator
from yarl import URL

from channels.config import ConfigError, Secret, join


def _digits(value: object) -> object:
    # TOML ids such as `mchid = 1900000109` are integers; they count as their digits.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _required_text(value: str) -> str:
    if not value.strip():
        raise ValueError("required, a non-empty string")
    return value.strip()


def _given_secret(value: Secret) -> Secret:
    if not value.reveal().strip():
        raise ValueError("required, a non-empty string")
    return value


def _http_url(value: str) -> str:
    url = URL(value)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http(s) URL with a host")
    return value


def _without_trailing_slash(url: str) -> str:
    return url.rstrip("/")


# A non-blank string, stripped; a bare integer counts as its digits.
Text = Annotated[str, BeforeValidator(_digits), AfterValidator(_required_text)]
# A non-blank secret, kept as given (surrounding blanks are part of it).
SecretText = Annotated[Secret, AfterValidator(_given_secret)]
# An ``http(s)://host...`` URL, as given (stripped of blanks).
HttpUrl = Annotated[Text, AfterValidator(_http_url)]
# An API's base URL, without trailing slashes (the adapter appends paths).
BaseUrl = Annotated[HttpUrl, AfterValidator(_without_trailing_slash)]


def check_timeouts(key: str, connect_timeout_s: float, timeout_s: float) -> None:
    """``timeout_s`` is a whole-call budget, so connecting must take less of it."""
    if connect_timeout_s >= timeout_s:
        raise ConfigError(join(key, "connect_timeout_s"), "must be shorter than timeout_s")


def optional_key_material(table: object, name: str, key: str) -> tuple[str, str] | None:
    """Key material given inline as setting ``name`` or in a file ``name_path`` (not both), or None.

    ``table`` is the adapter's settings table, with both fields; ``key`` its config path.
    Returns (the setting used, its text) so that a caller rejecting the content can name the
    right setting.
    """
    inline: Secret | str | None = getattr(table, name)
    path: str | None = getattr(table, f"{name}_path")
    if inline and path:
        raise ConfigError(join(key, name), f"give only one of {name} or {name}_path")
    if inline:
        return name, inline.reveal() if isinstance(inline, Secret) else inline
    if not path:
        return None
    try:
        return f"{name}_path", Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(join(key, f"{name}_path"), f"cannot read key file ({type(exc).__name__})") from None


def key_material(table: object, name: str, key: str) -> tuple[str, str]:
    """Like :func:`optional_key_material`, but one of the two is required."""
    found = optional_key_material(table, name, key)
    if found is None:
        raise ConfigError(join(key, name), f"give {name} or {name}_path")
    return found
