"""The [plans] table: policies, mappings, rate limits; every bad value stops start-up naming its key."""

from __future__ import annotations

from datetime import time
from typing import Any

import pytest

from gateway.config import ConfigError, from_mapping
from gateway.plans.config import plans_table

GOOD: dict[str, Any] = {
    "concurrency": 8,
    "policies": {
        "default": {"time_points": ["12:00", "18:00"], "quiet_start": "22:00", "quiet_end": "07:00"},
        "evening": {"time_points": ["19:30"], "retry_days": 0, "stop_codes": ["CARD_LOST"]},
    },
    "products": {"cash-loan": "evening"},
    "callers": {"loans": "default"},
    "rate_limits": {"bank-a": 50, "bank-b": 12.5},
}


def test_a_good_table() -> None:
    config = plans_table(**GOOD)
    assert config.concurrency == 8
    policies = config.policy_objects()
    assert policies["default"].time_points == (time(12), time(18))
    assert policies["default"].attempts_per_day == 2  # 0: one per time point
    assert policies["evening"].attempts_per_day == 1
    assert policies["evening"].stop_codes == frozenset({"CARD_LOST"})
    assert policies["default"].quiet is not None and policies["evening"].quiet is None
    assert config.policy_for("loans", "cash-loan") == "evening"  # the product first
    assert config.policy_for("loans", "car-loan") == "default"  # then the caller
    assert config.policy_for("other", "car-loan") == "default"  # then "default"
    assert config.product_label("cash-loan") == "cash-loan" and config.product_label("x") == "other"
    assert config.rate_limits == {"bank-a": 50.0, "bank-b": 12.5}


def test_no_default_policy_means_unmapped_plans_are_refused() -> None:
    config = plans_table(policies={"noon": {"time_points": ["12:00"]}}, products={"p": "noon"})
    assert config.policy_for("loans", "q") is None


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"policies": {"default": {"time_points": ["12:00", "18:00"]}}}
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (("policies", "default", "time_points"), ["12:00", "25:00"], "plans.policies.default.time_points[1]"),
        (("policies", "default", "time_points"), [], "plans.policies.default.time_points"),
        (("policies", "default", "time_points"), ["18:00", "12:00"], "plans.policies.default.time_points"),
        (("policies", "default", "quiet_start"), "11:00", "plans.policies.default.quiet_end"),
        (("policies", "default", "attempts_per_day"), 3, "plans.policies.default.attempts_per_day"),
        (("policies", "default", "retry_codes"), ["lower"], "plans.policies.default.retry_codes[0]"),
        (("policies", "default", "tiem_points"), ["12:00"], "plans.policies.default.tiem_points"),
        (("policies", "Bad Name"), {"time_points": ["12:00"]}, "plans.policies"),
        (("products",), {"p": "nope"}, "plans.products.p"),
        (("rate_limits",), {"bank-a": 0}, "plans.rate_limits.bank-a"),
        (("wait_s",), 90.0, "plans.wait_s"),
        (("concurrency",), 0, "plans.concurrency"),
        (("bogus",), 1, "plans.bogus"),
    ],
)
def test_bad_values_name_their_key(path: tuple[str, ...], value: Any, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping({"plans": _with(path, value)})
    assert err.value.key.startswith(key), err.value
    assert str(err.value).startswith("config error at plans.")


def test_a_time_point_in_the_quiet_window_stops_start_up() -> None:
    raw = {
        "plans": {
            "policies": {"default": {"time_points": ["12:00", "22:30"], "quiet_start": "22:00", "quiet_end": "07:00"}}
        }
    }
    with pytest.raises(ConfigError) as err:
        from_mapping(raw)
    assert err.value.key == "plans.policies.default.time_points[1]"
    assert "quiet window" in str(err.value)


def test_a_rate_limit_on_an_unknown_channel_stops_start_up() -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping({"plans": {"rate_limits": {"nowhere": 5}}})
    assert err.value.key == "plans.rate_limits.nowhere"
