"""The channel template stays a valid starting point: it builds, satisfies both protocols, and fetches a statement."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from channels._template import adapter, simulator, statement
from channels.config import ConfigError
from channels.contract import Channel, Operation
from channels.registry import ChannelSpec
from channels.simkit import Behaviour, EntryKind, SimulatorHandle
from channels.statement import StatementError, StatementUnavailable


async def test_template_pieces_satisfy_the_protocols() -> None:
    sim = simulator.create(Behaviour())
    assert isinstance(sim, SimulatorHandle)
    await sim.start()
    try:
        channel = adapter.build(ChannelSpec("tpl", "template", sim.adapter_settings()))
        assert isinstance(channel, Channel)
        assert "generated-at-start" not in repr(channel._settings)
    finally:
        await sim.stop()


def test_template_build_names_missing_settings() -> None:
    with pytest.raises(ConfigError) as caught:
        adapter.build(ChannelSpec("tpl", "template", {}, key="channels[0]"))
    assert caught.value.key == "channels[0].base_url"


async def test_template_statement_round_trip(tmp_path: Path) -> None:
    """The template's fetch_statement, simulator route and format work together, so a copy starts from working code."""
    sim = simulator.create(Behaviour())
    await sim.start()
    try:
        ledger = sim.ledger
        ledger.fee_bps = 60
        for i in range(3):
            ledger.record(f"T{i}", EntryKind.WITHHOLD, 10_000 + i, "CNY", "acct", {})
            ledger.execute(f"T{i}")
        channel = adapter.build(ChannelSpec("tpl", "template", sim.adapter_settings()))
        assert Operation.STATEMENT in channel.operations
        day = ledger.booking_day(ledger.now())
        async with channel:
            fetched = await channel.fetch_statement(day, str(tmp_path))
            with open(fetched.path, "rb") as stream:
                lines = list(statement.FORMAT.iter_lines(stream, channel_id="tpl", day=day))
            assert [(line.channel_order_no, line.amount, line.fee) for line in lines] == [
                ("T0", 10_000, 60),
                ("T1", 10_001, 60),
                ("T2", 10_002, 60),
            ]
            with pytest.raises(StatementUnavailable):
                await channel.fetch_statement(day + timedelta(days=1), str(tmp_path))
            settings = {**sim.adapter_settings(), "secret": "another"}
            async with adapter.build(ChannelSpec("tpl2", "template", settings)) as stranger:
                with pytest.raises(StatementError):
                    await stranger.fetch_statement(day, str(tmp_path / "x"))
    finally:
        await sim.stop()
