"""The one configuration reader: typed tables, each default written once, errors that name the key.

Every layer declares its configuration as *tables*: frozen dataclasses whose fields are the keys of
one TOML table, each with its type, its bounds (``Annotated[int, Field(ge=1)]``) and its default.
The dataclass is the only place a default is written, so code that builds one directly (tests,
benchmarks) gets exactly what a configuration file that leaves the key out gets. A table carries
``__pydantic_config__ = TABLE``. :func:`read` turns a TOML-shaped mapping (what :mod:`tomllib`
returns; the gateway lays its ``PAYGATE_*`` environment overrides over it first, see
:mod:`gateway.config`) into a table:

* unknown keys are errors, so a typo cannot fall back to a default unnoticed;
* scalars are strict (``"10"`` is not an integer, ``1`` is not ``true``; an integer is a number;
  numbers are finite); arrays fill tuples and frozensets, nested tables their dataclasses;
* checks between keys go in the table's ``check_config(self, key)``, called with the table's
  full path once every key has the right type (inner tables first); use :func:`join` to name keys;
* a :class:`Secret` key ``name`` of any table may instead be given as ``name_file``: the path of a
  file holding the secret (one trailing newline is dropped), read when the table is read; giving
  both is an error unless ``name`` is empty (the environment overlay replaces one with the other,
  see :mod:`gateway.config`);
* every failure is one :class:`ConfigError` whose ``key`` is the full path of the key at fault
  (``channels[1].routing.fee.rate_ppm``). A validator may raise ``ConfigError("sub", ...)`` to
  name a key below the value it validates (``"[2]"`` for an array item); a plain ``ValueError``
  names the value itself.

pydantic (v2) validates the dataclasses as they are (they stay plain dataclasses for everyone
else). Its messages are replaced by ours (``must be >= 0``), and an error never quotes the value
of a string, so a misplaced secret is not printed.

Value types several layers share are at the end: :data:`NonBlank`, :data:`Seconds`,
:data:`Names`, :data:`Operations`, :data:`Currencies`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, ConfigDict, Field, PlainValidator, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails, SchemaValidator, core_schema

from channels.contract import Operation

T = TypeVar("T")

# Every table's ``__pydantic_config__``. Strict here makes scalars strict; _loosen lets arrays and
# tables through (a TOML array must fill a tuple), so their items are checked strictly one by one.
TABLE = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, hide_input_in_errors=True)

_LAX_KINDS = frozenset({"dataclass", "tuple", "list", "set", "frozenset", "dict", "enum"})
_UnionType = type(int | None)


class ConfigError(ValueError):
    """Bad configuration: ``key`` is the exact key at fault, ``problem`` what is wrong with it.

    Raised by every layer (tables read with :func:`read`, adapter ``build`` functions, the routing
    and relay readers). ``str()`` is ``"<key>: <problem>"``; with ``at_start_up`` (the gateway's
    loader and composition root) it is ``"config error at <key>: <problem>"``, which is what an
    operator sees when start-up stops.
    """

    def __init__(self, key: str, problem: str, *, at_start_up: bool = False) -> None:
        super().__init__(f"{'config error at ' if at_start_up else ''}{key}: {problem}")
        self.key = key
        self.problem = problem
        self.at_start_up = at_start_up


class Secret:
    """A string that never prints itself (tokens, passwords, keys); :meth:`reveal` gives the value.

    True when it holds a value, so ``password or ""`` still reads an unset password as empty.
    In a table a secret is given as a TOML string, or as the path of a file (``<key>_file``).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        for seen in _SECRET_COLLECTORS if value else ():  # an empty one (not set) hides nothing
            seen.add(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(_secret)


# The sets of collect_secrets() blocks now open; every Secret made meanwhile adds its value to each.
_SECRET_COLLECTORS: list[set[str]] = []


@contextlib.contextmanager
def collect_secrets() -> Iterator[set[str]]:
    """Collect the value of every :class:`Secret` made inside the block (to redact them from a printout,
    or to check that none reached a log). The set is filled as secrets are made; it stops growing
    when the block ends."""
    seen: set[str] = set()
    _SECRET_COLLECTORS.append(seen)
    try:
        yield seen
    finally:
        # by identity: two collectors holding the same values are still two blocks
        del _SECRET_COLLECTORS[next(i for i, s in enumerate(_SECRET_COLLECTORS) if s is seen)]


def _secret(value: object) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__}")
    return Secret(value)


def join(key: str, name: str | int) -> str:
    """The path of ``name`` (a key, or an array index) inside the table at ``key`` ("" = the root)."""
    if isinstance(name, int):
        return f"{key}[{name}]"
    if not key:
        return name
    return f"{key}{name}" if name.startswith("[") else f"{key}.{name}"


def read(table: type[T], raw: object, key: str = "") -> T:
    """Read ``raw`` (a TOML-shaped mapping) into ``table``, then run the ``check_config`` methods.

    ``key`` is the table's own path, which error keys start with; "" for the whole configuration
    (errors about a top-level entry itself are then named ``config.<name>``). Raises
    :class:`ConfigError`.
    """
    validator = _validator(table)
    try:
        value: T = validator.validate_python(raw)
    except ValidationError as exc:
        raise _error(table, key, exc.errors()[0]) from None
    _check(value, key)
    return value


_VALIDATORS: dict[object, SchemaValidator] = {}


def _validator(table: type[Any]) -> SchemaValidator:
    validator = _VALIDATORS.get(table)
    if validator is None:
        schema = copy.deepcopy(TypeAdapter(table).core_schema)
        _loosen(schema, table)
        validator = _VALIDATORS[table] = SchemaValidator(schema)
    return validator


def _loosen(node: object, table: Any) -> None:
    """Let arrays and tables through the strict schema, refuse a dataclass that is no table, and let each
    table's secrets come from files (:func:`_secrets_from_files`)."""
    if isinstance(node, dict):
        if node.get("type") in _LAX_KINDS:
            node["strict"] = False
        if node.get("type") == "dataclass":
            if node.get("config", {}).get("extra_fields_behavior") != "forbid":
                raise TypeError(
                    f"{node.get('cls')} in {table} is not a config table: give it __pydantic_config__ = TABLE"
                )
            names = secret_fields(node["cls"])
            if names:
                node["schema"] = core_schema.no_info_before_validator_function(
                    _secrets_from_files(names), node["schema"]
                )
        for child in node.values():
            _loosen(child, table)
    elif isinstance(node, list):
        for child in node:
            _loosen(child, table)


def secret_fields(table: type[Any]) -> tuple[str, ...]:
    """The names of ``table``'s fields that hold a :class:`Secret` (``Secret``, ``Secret | None``, annotated)."""
    hints = typing.get_type_hints(table, include_extras=True)
    return tuple(f.name for f in dataclasses.fields(table) if f.init and _unwrap(hints.get(f.name)) is Secret)


FILE_SUFFIX = "_file"


def _secrets_from_files(names: tuple[str, ...]) -> typing.Callable[[Any], Any]:
    """A validator run before a table's own: ``<name>_file = "path"`` becomes ``<name>`` = the file's text."""

    def resolve(raw: Any) -> Any:
        if not isinstance(raw, Mapping) or not any(name + FILE_SUFFIX in raw for name in names):
            return raw
        out = dict(raw)
        for name in names:
            path = out.pop(name + FILE_SUFFIX, None)
            if path is None:
                continue
            if out.get(name, "") != "":  # an empty value (the example's placeholder) gives way to the file
                raise ConfigError(name + FILE_SUFFIX, f"give only one of {name} or {name}{FILE_SUFFIX}")
            out[name] = read_secret_file(path, name + FILE_SUFFIX)
        return out

    return resolve


def read_secret_file(path: object, key: str) -> Secret:
    """The secret held in the file at ``path`` (UTF-8; one trailing newline dropped). ConfigError names ``key``."""
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(key, "must be the path of a file holding the secret")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        # the path is not secret; the file's content never shows
        raise ConfigError(key, f"cannot read {path} ({type(exc).__name__})") from None
    return Secret(text.removesuffix("\n").removesuffix("\r"))


def _check(value: object, key: str) -> None:
    """Call ``check_config(key)`` on every table inside ``value``, inner tables first."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _check(getattr(value, f.name), join(key, f.name))
        check = getattr(value, "check_config", None)
        if check is not None:
            check(key)
    elif isinstance(value, tuple | list):
        for i, item in enumerate(value):
            _check(item, join(key, i))
    elif isinstance(value, Mapping):
        for name, item in value.items():
            _check(item, join(key, str(name)))


def _error(table: Any, key: str, error: ErrorDetails) -> ConfigError:
    loc = error["loc"]
    raised = (error.get("ctx") or {}).get("error")
    path = key
    for part in loc:
        if part != "[key]":  # an error about a mapping's key is the entry's
            path = join(path, part)
    if isinstance(raised, ConfigError):
        return ConfigError(join(path, raised.key) if raised.key else path, raised.problem)
    if not key and len(loc) <= 1:
        path = join("config", path) if path else "config"
    problem = _problem(error)
    if error["type"] in {"unexpected_keyword_argument", "extra_forbidden"}:
        known = _keys_of(table, loc[:-1])
        if known:
            problem += f" (known: {', '.join(known)})"
    return ConfigError(path, problem)


_PROBLEMS = {
    "missing": "is required",
    "missing_argument": "is required",
    "unexpected_keyword_argument": "unknown key",
    "extra_forbidden": "unknown key",
    "finite_number": "must be a finite number",
    "dataclass_type": "must be a table",
    "dict_type": "must be a table",
    "mapping_type": "must be a table",
    "tuple_type": "must be an array",
    "list_type": "must be an array",
    "set_type": "must be an array",
    "frozen_set_type": "must be an array",
}
_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
_BOUND_NAMES = {">=": "ge", ">": "gt", "<=": "le", "<": "lt"}


def _problem(error: ErrorDetails) -> str:
    kind, ctx, given = error["type"], error.get("ctx") or {}, error.get("input")
    if kind in _PROBLEMS:
        return _PROBLEMS[kind]
    if kind in _BOUNDS:
        op = _BOUNDS[kind]
        return f"must be {op} {_number(ctx[_BOUND_NAMES[op]])}"
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return f"must be an integer, got {_shown(given)}"
    if kind in {"float_type", "float_parsing"}:
        return f"must be a number, got {_shown(given)}"
    if kind in {"bool_type", "bool_parsing"}:
        return f"must be true or false, got {_shown(given)}"
    if kind == "string_type":
        return f"must be a string, got {type(given).__name__}"
    if kind == "string_too_short":
        return "must not be empty" if ctx["min_length"] == 1 else f"must be at least {ctx['min_length']} characters"
    if kind == "string_too_long":
        return f"longer than {ctx['max_length']} characters"
    if kind in {"literal_error", "enum"}:
        return f"must be one of {ctx['expected']}"
    if kind in {"value_error", "assertion_error"}:
        return str(ctx["error"])
    return error["msg"]


def _number(value: object) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _shown(value: object) -> str:
    """A non-string value, for a message (strings are never quoted: a secret may be one)."""
    if isinstance(value, str):
        return "a string"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _keys_of(table: Any, loc: tuple[int | str, ...]) -> list[str]:
    """The keys of the table at ``loc`` inside ``table`` (for an unknown-key message), or [] if not a dataclass."""
    node = table
    for part in (*loc, None):
        node = _unwrap(node)
        if part is None:
            break
        if dataclasses.is_dataclass(node) and isinstance(part, str):
            try:
                node = typing.get_type_hints(node).get(part)
            except (NameError, TypeError):  # a hint that does not resolve: no listing, the error still stands
                return []
        elif typing.get_origin(node) in {tuple, frozenset, list} and isinstance(part, int):
            node = typing.get_args(node)[0]
        elif typing.get_origin(node) in {dict, Mapping} and isinstance(part, str):
            node = typing.get_args(node)[1]
        else:
            return []
    if not (dataclasses.is_dataclass(node) and isinstance(node, type)):
        return []
    return sorted(f.name for f in dataclasses.fields(node) if f.init)


def _unwrap(node: Any) -> Any:
    """``X`` from ``Annotated[X, ...]`` and ``X | None``."""
    while True:
        if typing.get_origin(node) is Annotated:
            node = typing.get_args(node)[0]
            continue
        args = [a for a in typing.get_args(node) if a is not type(None)]
        if typing.get_origin(node) in {typing.Union, _UnionType} and len(args) == 1:
            node = args[0]
            continue
        return node


# --- value types several layers share ----------------------------------------------------------------------


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def _names(value: object) -> frozenset[str]:
    if not isinstance(value, list | tuple | frozenset) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be an array of non-empty strings")
    return frozenset(value)


def _operations(value: object) -> frozenset[Operation]:
    names = _names(value)
    if not names:
        raise ValueError("must not be empty")
    try:
        return frozenset(Operation(name) for name in names)
    except ValueError:
        unknown = sorted(name for name in names if name not in set(Operation))
        known = ", ".join(op.value for op in Operation)
        raise ValueError(f"unknown operation {unknown[0]!r} (known: {known})") from None


def _currencies(value: object) -> frozenset[str]:
    codes = _names(value)
    for code in sorted(codes):
        if not re.fullmatch(r"[A-Z]{3}", code):
            raise ValueError(f"{code!r} is not an ISO-4217 code")
    return codes


# A string with something in it; surrounding blanks are dropped.
NonBlank = Annotated[str, AfterValidator(_non_blank)]
# A positive, finite number of seconds.
Seconds = Annotated[float, Field(gt=0)]
# An array of non-empty strings (bank codes, ...), as a set.
Names = Annotated[frozenset[str], PlainValidator(_names)]
# A non-empty array of operation names (withhold, payout, refund, agreement, balance, statement).
Operations = Annotated[frozenset[Operation], PlainValidator(_operations)]
# An array of ISO-4217 codes (may be empty).
Currencies = Annotated[frozenset[str], PlainValidator(_currencies)]
