from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from channels.config import ConfigError
from channels.contract import Operation
from routing.config import (
    ChannelState,
    FeeSchedule,
    MaintenanceWindow,
    RouterConfig,
    parse_channel_routing,
    parse_router_config,
    parse_routing,
)

KNOWN = {"icbc", "alipay"}


def channel(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "id": "icbc",
        "operations": ["withhold", "payout"],
        "currencies": ["CNY"],
        "banks": ["ICBC", "CCB"],
        "min_amount": 100,
        "max_amount": 5_000_000,
        "bank_limits": {"CCB": [100, 1_000_000]},
        "fee": {"fixed": 100, "rate_ppm": 2500, "minimum": 200, "maximum": 5000},
        "per_card_daily_attempts": 5,
        "per_card_daily_amount": 10_000_000,
        "maintenance": [
            {"days": ["sun"], "start": "23:30", "end": "01:00", "utc_offset": "+08:00", "label": "weekly"},
            {"starts_at": "2026-02-01T02:00:00+08:00", "ends_at": "2026-02-01T04:00:00+08:00"},
        ],
        "state": "draining",
        "cost_weight": 2.0,
    }
    raw.update(overrides)
    return raw


def error_key(raw: dict[str, Any], key: str = "channels[1]") -> str:
    with pytest.raises(ConfigError) as info:
        parse_channel_routing(key, raw, KNOWN)
    assert str(info.value).startswith(f"{info.value.key}: ")
    return info.value.key


def test_parses_a_full_channel_table() -> None:
    p = parse_channel_routing("channels[1]", channel(), KNOWN)
    assert p.channel_id == "icbc"
    assert p.operations == {Operation.WITHHOLD, Operation.PAYOUT}
    assert p.banks == {"ICBC", "CCB"}
    assert p.bank_limits == {"CCB": (100, 1_000_000)}
    assert p.fee == FeeSchedule(100, 2500, 200, 5000)
    assert p.state is ChannelState.DRAINING
    assert p.cost_weight == 2.0
    assert len(p.maintenance) == 2 and p.maintenance[1].is_one_off


def test_defaults_come_from_the_adapter_capabilities() -> None:
    p = parse_channel_routing(
        "channels[0].routing",
        {},
        KNOWN,
        channel_id="alipay",
        default_operations=frozenset({Operation.WITHHOLD}),
        default_currencies=frozenset({"CNY"}),
    )
    assert p.channel_id == "alipay" and p.operations == {Operation.WITHHOLD} and p.banks is None
    assert p.state is ChannelState.ENABLED and p.cost_weight is None and p.max_amount is None


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"id": "nope"}, "channels[1].id"),
        ({"fee": {"rate_ppm": -1}}, "channels[1].fee.rate_ppm"),
        ({"fee": {"fixed": -5}}, "channels[1].fee.fixed"),
        ({"fee": {"minimum": 10, "maximum": 5}}, "channels[1].fee.minimum"),
        ({"fee": {"rate_ppm": 2_000_000}}, "channels[1].fee.rate_ppm"),
        ({"fee": {"rate": 5}}, "channels[1].fee.rate"),
        ({"min_amount": 500, "max_amount": 100}, "channels[1].min_amount"),
        ({"min_amount": 0}, "channels[1].min_amount"),
        ({"max_amount": "lots"}, "channels[1].max_amount"),
        ({"bank_limits": {"CCB": [900, 100]}}, "channels[1].bank_limits.CCB"),
        ({"bank_limits": {"CCB": [1]}}, "channels[1].bank_limits.CCB"),
        ({"bank_limits": {"ABC": [1, 2]}}, "channels[1].bank_limits.ABC"),
        ({"operations": ["withhold", "teleport"]}, "channels[1].operations"),
        ({"currencies": ["yuan"]}, "channels[1].currencies"),
        ({"state": "paused"}, "channels[1].state"),
        ({"per_card_daily_attempts": 0}, "channels[1].per_card_daily_attempts"),
        ({"per_card_daily_amount": -1}, "channels[1].per_card_daily_amount"),
        ({"cost_weight": -1}, "channels[1].cost_weight"),
        ({"min_ammount": 5}, "channels[1].min_ammount"),
        ({"maintenance": {"days": ["mon"]}}, "channels[1].maintenance"),
        (
            {"maintenance": [{"days": ["funday"], "start": "01:00", "end": "02:00"}]},
            "channels[1].maintenance[0].days[0]",
        ),
        ({"maintenance": [{"days": [], "start": "01:00", "end": "02:00"}]}, "channels[1].maintenance[0].days"),
        ({"maintenance": [{"days": ["mon"], "start": "25:00", "end": "02:00"}]}, "channels[1].maintenance[0].start"),
        ({"maintenance": [{"days": ["mon"], "start": "01:00", "end": "2pm"}]}, "channels[1].maintenance[0].end"),
        ({"maintenance": [{"days": ["mon"], "start": "01:00", "end": "01:00"}]}, "channels[1].maintenance[0].end"),
        (
            {"maintenance": [{"days": ["mon"], "start": "01:00", "end": "02:00", "utc_offset": "8"}]},
            "channels[1].maintenance[0].utc_offset",
        ),
        (
            {"maintenance": [{"starts_at": "2026-02-01T02:00:00", "ends_at": "2026-02-01T03:00:00+08:00"}]},
            "channels[1].maintenance[0].starts_at",
        ),
        (
            {"maintenance": [{"starts_at": "2026-02-01T04:00:00+08:00", "ends_at": "2026-02-01T03:00:00+08:00"}]},
            "channels[1].maintenance[0].ends_at",
        ),
        (
            {"maintenance": [{"starts_at": "yesterday", "ends_at": "2026-02-01T03:00:00+08:00"}]},
            "channels[1].maintenance[0].starts_at",
        ),
        (
            {
                "maintenance": [
                    {"days": ["mon", "tue"], "start": "22:00", "end": "02:00"},
                    {"days": ["wed"], "start": "01:00", "end": "03:00"},
                ]
            },
            "channels[1].maintenance[1]",
        ),
        (
            {
                "maintenance": [
                    {"starts_at": "2026-02-01T02:00:00+08:00", "ends_at": "2026-02-01T04:00:00+08:00"},
                    {"starts_at": "2026-01-31T19:30:00+00:00", "ends_at": "2026-01-31T20:30:00+00:00"},
                ]
            },
            "channels[1].maintenance[1]",
        ),
        (
            {
                "maintenance": [
                    {"days": ["sun"], "start": "02:00", "end": "03:00", "utc_offset": "+08:00"},
                    {"starts_at": "2026-02-01T02:30:00+08:00", "ends_at": "2026-02-01T05:00:00+08:00"},
                ]
            },
            "channels[1].maintenance[1]",
        ),
    ],
)
def test_every_bad_channel_setting_names_its_key(overrides: dict[str, Any], key: str) -> None:
    assert error_key(channel(**overrides)) == key


def test_missing_capabilities_name_their_key() -> None:
    assert error_key({"id": "icbc"}, "channels[0].routing") == "channels[0].routing.operations"
    assert (
        error_key({"id": "icbc", "operations": ["payout"]}, "channels[0].routing") == "channels[0].routing.currencies"
    )


def test_error_message_reads_like_the_example() -> None:
    with pytest.raises(ConfigError, match=r"^channels\[1\]\.fee\.rate_ppm: must be >= 0$"):
        parse_channel_routing("channels[1]", channel(fee={"rate_ppm": -3}), KNOWN)
    assert issubclass(ConfigError, ValueError)


def test_non_overlapping_windows_are_accepted() -> None:
    windows = [
        {"days": ["mon", "tue"], "start": "23:00", "end": "01:00"},
        {"days": ["tue"], "start": "01:00", "end": "02:00"},
        {"starts_at": "2026-02-04T12:00:00+00:00", "ends_at": "2026-02-04T13:00:00+00:00"},  # a Wednesday
    ]
    assert len(parse_channel_routing("c", channel(maintenance=windows), KNOWN).maintenance) == 3


def test_router_config_defaults_and_overrides() -> None:
    assert parse_router_config("routing", {}) == RouterConfig()
    config = parse_router_config("routing", {"cost_weight": 3, "half_life_s": 60, "elimination_fallback": False})
    assert config.cost_weight == 3.0 and config.half_life_s == 60.0 and not config.elimination_fallback


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"prior_mean": 1.5}, "routing.prior_mean"),
        ({"prior_fade": -1}, "routing.prior_fade"),
        ({"half_life_s": 0}, "routing.half_life_s"),
        ({"cost_weight": -0.1}, "routing.cost_weight"),
        ({"exploration": "lots"}, "routing.exploration"),
        ({"elimination_window": 5, "elimination_min_volume": 10}, "routing.elimination_min_volume"),
        ({"probe_interval_s": 60, "probe_max_interval_s": 30}, "routing.probe_max_interval_s"),
        ({"memory_observations": 10, "fast_memory_observations": 20}, "routing.fast_memory_observations"),
        ({"max_attempts_per_flow": 0}, "routing.max_attempts_per_flow"),
        ({"elimination_fallback": "yes"}, "routing.elimination_fallback"),
        ({"explore": 1}, "routing.explore"),
        ({"upward_chain_clean": "yes"}, "routing.upward_chain_clean"),
        ({"upward_restart_p1": "yes"}, "routing.upward_restart_p1"),
        ({"upward_excursion_late": "yes"}, "routing.upward_excursion_late"),
        ({"upward_chain_timeout_s": 0}, "routing.upward_chain_timeout_s"),
        ({"upward_chain_max": -1}, "routing.upward_chain_max"),
        ({"upward_fallen_only": "yes"}, "routing.upward_fallen_only"),
        ({"upward_fallen_back": "yes"}, "routing.upward_fallen_back"),
    ],
)
def test_every_bad_router_setting_names_its_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_router_config("routing", raw)
    assert info.value.key == key


def test_parse_routing_rejects_duplicate_channel_ids() -> None:
    raw = {"operations": ["payout"], "currencies": ["CNY"]}
    entries = [("channels[0]", "icbc", raw), ("channels[1]", "icbc", raw)]
    with pytest.raises(ConfigError) as info:
        parse_routing("routing", {}, entries)
    assert info.value.key == "channels[1].id"


def test_fee_is_integer_half_up_and_clamped() -> None:
    assert FeeSchedule(0, 2500).fee(199) == 0  # 0.4975 rounds down
    assert FeeSchedule(0, 2500).fee(200) == 1  # 0.5 rounds up
    assert FeeSchedule(100, 6000).fee(100_000) == 700
    assert FeeSchedule(0, 6000, minimum=200).fee(1000) == 200
    assert FeeSchedule(0, 6000, maximum=500).fee(1_000_000) == 500
    assert isinstance(FeeSchedule(1, 1).fee(10**15), int)


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_recurring_window_crossing_midnight_in_a_timezone() -> None:
    window = MaintenanceWindow.recurring([6], "23:30", "01:00", utc_offset_min=8 * 60)  # Sunday 23:30-01:00 +08:00
    assert window.active(at("2026-02-01T23:45:00+08:00"))  # Sunday night
    assert window.active(at("2026-02-02T00:30:00+08:00"))  # Monday early, same window
    assert not window.active(at("2026-02-02T01:00:00+08:00"))  # end is exclusive
    assert not window.active(at("2026-02-01T23:29:00+08:00"))
    assert not window.active(at("2026-01-31T23:45:00+08:00"))  # Saturday


def test_one_off_window() -> None:
    window = MaintenanceWindow.one_off(at("2026-02-01T02:00:00+08:00"), at("2026-02-01T04:00:00+08:00"))
    assert window.active(at("2026-01-31T18:30:00+00:00"))
    assert not window.active(at("2026-02-01T04:00:00+08:00"))
