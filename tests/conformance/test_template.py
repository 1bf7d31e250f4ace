"""The channel template stays a valid starting point: it builds and satisfies both protocols."""

from __future__ import annotations

import pytest

from channels._template import adapter, simulator
from channels.config import ConfigError
from channels.contract import Channel
from channels.registry import ChannelSpec
from channels.simkit import Behaviour, SimulatorHandle


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
