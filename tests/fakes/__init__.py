"""In-memory fakes of the gateway's ports and a channel of our own, for unit tests (no MariaDB, no network).

:class:`FakeGateway` wires the real use cases (FlowService, Poller,
AgreementService, CallbackHandler) over the fakes, as gateway/app.py wires
them over MySQL.
"""

from __future__ import annotations

from collections.abc import Mapping

from channels.registry import ChannelRegistry
from gateway.agreements import AgreementService
from gateway.callbacks import CallbackHandler
from gateway.config import PollerConfig
from gateway.domain import account_hash
from gateway.flows import FlowService, FlowSettings
from gateway.poller import Poller, Schedule
from tests.fakes.channel import FakeChannel
from tests.fakes.planner import FakePlanner
from tests.fakes.stores import (
    FakeAgreementStore,
    FakeAuditLog,
    FakeChannelStates,
    FakeDiscrepancies,
    FakeFlowStore,
    FakeObservations,
    FakePollQueue,
    FakePositionStore,
    FakeReplicas,
    Position,
    Tables,
)

HASH_KEY = b"unit-test-account-hash-key"
CARD = "6222020200112233445"
CALLER = "loans"

__all__ = [
    "CALLER",
    "CARD",
    "HASH_KEY",
    "FakeAgreementStore",
    "FakeAuditLog",
    "FakeChannel",
    "FakeChannelStates",
    "FakeDiscrepancies",
    "FakeFlowStore",
    "FakeGateway",
    "FakeObservations",
    "FakePlanner",
    "FakePollQueue",
    "FakePositionStore",
    "FakeReplicas",
    "Position",
    "Tables",
]


class FakeGateway:
    """The use cases over in-memory stores, one fake planner and the given fake channels."""

    def __init__(
        self,
        *channels: FakeChannel,
        max_attempts: int = 3,
        call_guard_s: float = 5.0,
        poll_first_delay_s: float = 2.0,
        poller: Mapping[str, object] | None = None,
    ) -> None:
        self.tables = Tables()
        self.channels = {c.channel_id: c for c in channels}
        self.registry = ChannelRegistry(self.channels)
        self.planner = FakePlanner(list(self.channels))
        self.store = FakeFlowStore(self.tables)
        self.queue = FakePollQueue(self.tables)
        self.agreement_store = FakeAgreementStore(self.tables)
        self.positions = FakePositionStore(self.tables)
        self.channel_states = FakeChannelStates(self.tables)
        self.audit = FakeAuditLog(self.tables)
        self.discrepancies = FakeDiscrepancies(self.tables)
        self.observations = FakeObservations(self.tables)
        self.outbox_notices = 0
        self.flows = FlowService(
            store=self.store,
            agreements=self.agreement_store,
            registry=self.registry,
            planner=self.planner,
            settings=FlowSettings(
                callback_base="http://gateway.test",
                account_hash_key=HASH_KEY,
                max_attempts=max_attempts,
                call_guard_s=call_guard_s,
                poll_first_delay_s=poll_first_delay_s,
            ),
            on_outbox=self._notice,
        )
        self.agreements = AgreementService(self.agreement_store, self.registry, HASH_KEY)
        settings: dict[str, object] = {
            "schedule": ((5.0, 2), (30.0, 1)),
            "first_delay_s": 2.0,
            "not_found_close_after_s": 120.0,
            "lease_s": 60.0,
        }
        settings.update(poller or {})
        config = PollerConfig(**settings)  # type: ignore[arg-type]
        self.poller = Poller(self.queue, self.flows, config, {}, owner="unit-poller")
        self.flows.queries = self.poller  # as gateway/app.py wires it
        self.expedited: list[tuple[int, str]] = []
        self.callbacks = CallbackHandler(self.registry, self.flows, self._expedite)

    def _notice(self) -> None:
        self.outbox_notices += 1

    async def _expedite(self, attempt_id: int, channel: str) -> bool:
        self.expedited.append((attempt_id, channel))
        return await self.poller.expedite(attempt_id, channel)

    def default_schedule(self) -> Schedule:
        return self.poller.default_schedule

    def agree(self, *channels: str, caller: str = CALLER, card: str = CARD) -> None:
        """The payer of ``card`` has an ACTIVE agreement with each of ``channels``."""
        for channel in channels:
            self.agreement_store.add_active(caller, channel, account_hash(HASH_KEY, card), f"agr-{channel}")

    def fund(self, channel: str, balance: int, currency: str = "CNY") -> None:
        """The channel's float (payouts)."""
        self.tables.positions[channel] = Position(currency, balance)
