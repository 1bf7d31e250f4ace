"""channels.config: the one reader every layer's tables go through."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Literal

import pytest
from pydantic import AfterValidator, Field

from channels.config import TABLE, ConfigError, Names, NonBlank, Operations, Seconds, Secret, join, read
from channels.contract import Operation

checked: list[str] = []


@dataclass(frozen=True, slots=True)
class Inner:
    __pydantic_config__ = TABLE

    low: Annotated[int, Field(ge=0)] = 0
    high: Annotated[int, Field(ge=0)] | None = None

    def check_config(self, key: str) -> None:
        checked.append(key)
        if self.high is not None and self.low > self.high:
            raise ConfigError(join(key, "low"), f"must be <= {join(key, 'high')}")


def _even(items: tuple[int, ...]) -> tuple[int, ...]:
    for i, item in enumerate(items):
        if item % 2:
            raise ConfigError(f"[{i}]", "must be even")
    return items


@dataclass(frozen=True)
class Outer:
    __pydantic_config__ = TABLE

    name: NonBlank = "x"
    count: int = 1
    ratio: float = 0.5
    flag: bool = True
    wait_s: Seconds = 1.0
    mode: Literal["a", "b"] = "a"
    token: Secret = Secret("")
    steps: tuple[tuple[float, int], ...] = ()
    evens: Annotated[tuple[int, ...], AfterValidator(_even)] = ()
    banks: Names | None = None
    operations: Operations = frozenset(Operation)
    inner: Inner = field(default_factory=Inner)
    inners: Mapping[str, Inner] = field(default_factory=dict)
    listed: tuple[Inner, ...] = ()

    def check_config(self, key: str) -> None:
        checked.append(key)


def test_an_empty_table_is_its_defaults() -> None:
    assert read(Outer, {}, "t") == Outer()


def test_arrays_fill_tuples_and_sets_scalars_stay_strict() -> None:
    table = read(Outer, {"steps": [[1, 2]], "banks": ["ICBC"], "ratio": 1, "operations": ["payout"]}, "t")
    assert table.steps == ((1.0, 2),) and isinstance(table.steps[0][0], float)
    assert table.banks == frozenset({"ICBC"}) and table.ratio == 1.0 and isinstance(table.ratio, float)
    assert table.operations == {Operation.PAYOUT}


@pytest.mark.parametrize(
    ("raw", "key", "problem"),
    [
        ({"count": "10"}, "t.count", "must be an integer, got a string"),
        ({"count": True}, "t.count", "must be an integer, got True"),
        ({"count": 1.5}, "t.count", "must be an integer, got 1.5"),
        ({"ratio": "0.5"}, "t.ratio", "must be a number, got a string"),
        ({"ratio": float("nan")}, "t.ratio", "must be a finite number"),
        ({"flag": 1}, "t.flag", "must be true or false, got 1"),
        ({"name": "  "}, "t.name", "must be a non-empty string"),
        ({"name": 5}, "t.name", "must be a string, got int"),
        ({"wait_s": 0}, "t.wait_s", "must be > 0"),
        ({"mode": "c"}, "t.mode", "must be one of 'a' or 'b'"),
        ({"steps": [[1, "2"]]}, "t.steps[0][1]", "must be an integer, got a string"),
        ({"steps": {"a": 1}}, "t.steps", "must be an array"),
        ({"evens": [2, 3]}, "t.evens[1]", "must be even"),
        ({"banks": "ICBC"}, "t.banks", "must be an array of non-empty strings"),
        ({"operations": []}, "t.operations", "must not be empty"),
        ({"inner": 3}, "t.inner", "must be a table"),
        ({"inner": {"low": -1}}, "t.inner.low", "must be >= 0"),
        ({"inner": {"lo": 1}}, "t.inner.lo", "unknown key (known: high, low)"),
        ({"inner": {"low": 5, "high": 1}}, "t.inner.low", "must be <= t.inner.high"),
        ({"inners": {"a": {"low": 5, "high": 1}}}, "t.inners.a.low", "must be <= t.inners.a.high"),
        ({"listed": [{}, {"low": 5, "high": 1}]}, "t.listed[1].low", "must be <= t.listed[1].high"),
        ({"bogus": 1}, "t.bogus", "unknown key (known: banks, count, evens, flag,"),
    ],
)
def test_every_error_names_the_key(raw: dict, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        read(Outer, raw, "t")
    assert err.value.key == key
    assert err.value.problem.startswith(problem), err.value.problem
    assert str(err.value) == f"{key}: {err.value.problem}"


def test_the_root_names_its_own_entries_config() -> None:
    for raw, key in (({"bogus": {}}, "config.bogus"), ({"inner": 1}, "config.inner"), ([], "config")):
        with pytest.raises(ConfigError) as err:
            read(Outer, raw)
        assert err.value.key == key
    with pytest.raises(ConfigError) as err:
        read(Outer, {"inner": {"low": -1}})
    assert err.value.key == "inner.low"


def test_checks_run_inner_tables_first_with_their_paths() -> None:
    checked.clear()
    read(Outer, {"listed": [{}, {}], "inners": {"a": {}}}, "t")
    assert checked == ["t.inner", "t.inners.a", "t.listed[0]", "t.listed[1]", "t"]


def test_a_secret_is_never_quoted() -> None:
    table = read(Outer, {"token": "s3cret-value"}, "t")
    assert table.token.reveal() == "s3cret-value" and "s3cret" not in repr(table)
    with pytest.raises(ConfigError) as err:
        read(Outer, {"count": "s3cret-value"}, "t")  # a secret pasted under the wrong key
    assert "s3cret" not in str(err.value)
    assert not Secret("") and Secret("x")


@dataclass(frozen=True)
class Loose:
    value: int = 0


def test_a_dataclass_without_the_table_config_is_refused() -> None:
    with pytest.raises(TypeError, match="not a config table"):
        read(Loose, {}, "t")


def test_at_start_up_is_how_the_gateway_reports_it() -> None:
    error = ConfigError("database.pool_min", "must be <= database.pool_max", at_start_up=True)
    assert str(error) == "config error at database.pool_min: must be <= database.pool_max"
    assert (error.key, error.problem) == ("database.pool_min", "must be <= database.pool_max")
    assert isinstance(error, ValueError)
