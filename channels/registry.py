"""Registry: one explicit map from adapter name to adapter factory and, where we simulate it, simulator factory.

Channel *instances* are built from configuration: each ``[[channels]]`` entry
names an ``id`` (unique, e.g. ``icbc-sandbox``), an ``adapter`` (a key of
:data:`ADAPTERS`) and adapter settings, which the adapter's ``build`` reads into
its own settings table with :meth:`ChannelSpec.read`. Two banks behind the same
protocol are two instances of one adapter. An unknown adapter name is a loud,
specific error, raised at start-up; every error is a
:class:`~channels.config.ConfigError` naming the key. The same map tells the
simulator toolkit (``channels.simkit.create_simulator``) which simulator speaks
each protocol.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from channels.config import ConfigError, read
from channels.contract import Channel

T = TypeVar("T")

# The one configuration error, under the name the simulators import.
ChannelConfigError = ConfigError


@dataclass(frozen=True)
class ChannelSpec:
    """One configured channel instance.

    ``key`` is the config path used in error messages (``channels[2]``).
    ``settings`` are the adapter-specific keys (everything except ``id`` and
    ``adapter`` and the gateway-owned routing keys).
    """

    channel_id: str
    adapter: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    key: str = "channels"

    def read(self, table: type[T]) -> T:
        """``settings`` read into the adapter's settings table; errors name ``<key>.<setting>``."""
        return read(table, self.settings, self.key)


class ChannelFactory(Protocol):
    def __call__(self, spec: ChannelSpec) -> Channel: ...


@dataclass(frozen=True)
class AdapterEntry:
    """Where one adapter's code lives, as ``"module:attr"`` targets imported on first use.

    ``factory`` is the adapter's :class:`ChannelFactory`; ``simulator``, for a
    channel we simulate, the ``create(behaviour, **kw)`` of its simulator;
    ``statement``, for a channel that publishes statements, its
    :class:`~channels.statement.StatementFormat` (registered under the
    adapter's name; :mod:`channels.statements` looks formats up).
    """

    factory: str
    simulator: str | None = None
    statement: str | None = None


# adapter name -> its adapter and simulator. Imported lazily so one broken
# optional adapter cannot stop the others from loading.
ADAPTERS: dict[str, AdapterEntry] = {
    "sandbox": AdapterEntry(
        "channels.sandbox.adapter:build",
        simulator="channels.sandbox.simulator:create",
        statement="channels.sandbox.statement:FORMAT",
    ),
    "alipay": AdapterEntry(
        "channels.alipay.adapter:build",
        simulator="channels.alipay.simulator:create",
        statement="channels.alipay.statement:FORMAT",
    ),
    "wechatpay": AdapterEntry(
        "channels.wechatpay.adapter:build",
        simulator="channels.wechatpay.simulator:create",
        statement="channels.wechatpay.statement:FORMAT",
    ),
}


def load_target(target: str) -> Any:
    """Import ``"module:attr"`` and return the attribute."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def factory_for(adapter: str, *, key: str = "channels") -> ChannelFactory:
    entry = ADAPTERS.get(adapter)
    if entry is None:
        known = ", ".join(sorted(ADAPTERS))
        raise ConfigError(f"{key}.adapter", f"unknown adapter {adapter!r} (known: {known})")
    factory: ChannelFactory = load_target(entry.factory)
    return factory


class ChannelRegistry:
    """The live channel instances, by id."""

    def __init__(self, channels: Mapping[str, Channel]) -> None:
        self._channels = dict(channels)

    @classmethod
    def build(cls, specs: list[ChannelSpec]) -> ChannelRegistry:
        channels: dict[str, Channel] = {}
        for spec in specs:
            if spec.channel_id in channels:
                raise ConfigError(f"{spec.key}.id", f"duplicate channel id {spec.channel_id!r}")
            channels[spec.channel_id] = factory_for(spec.adapter, key=spec.key)(spec)
        return cls(channels)

    def get(self, channel_id: str) -> Channel:
        try:
            return self._channels[channel_id]
        except KeyError:
            raise KeyError(f"unknown channel id {channel_id!r}") from None

    def __contains__(self, channel_id: object) -> bool:
        return channel_id in self._channels

    def __iter__(self) -> Iterator[str]:
        return iter(self._channels)

    def items(self) -> Iterator[tuple[str, Channel]]:
        return iter(self._channels.items())

    async def start(self) -> None:
        for channel in self._channels.values():
            await channel.start()

    async def stop(self) -> None:
        for channel in self._channels.values():
            await channel.stop()
