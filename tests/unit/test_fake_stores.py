"""The in-memory fakes keep the store contract (tests/store_contract.py), like the MySQL stores do."""

from __future__ import annotations

import inspect

import pytest

from gateway import ports
from gateway.store.agreements import MySQLAgreementStore
from gateway.store.audit import MySQLAuditLog
from gateway.store.channel_states import MySQLChannelStates
from gateway.store.discrepancies import MySQLDiscrepancies
from gateway.store.flows import MySQLFlowStore
from gateway.store.observations import MySQLObservations
from gateway.store.poll_queue import MySQLPollQueue
from gateway.store.positions import MySQLPositionStore
from gateway.store.replicas import MySQLReplicas
from gateway.store.resolutions import MySQLResolutions
from tests.fakes import (
    FakeAgreementStore,
    FakeAuditLog,
    FakeChannelStates,
    FakeDiscrepancies,
    FakeFlowStore,
    FakeObservations,
    FakePlanner,
    FakePollQueue,
    FakePositionStore,
    FakeReplicas,
    Tables,
)
from tests.fakes.resolutions import FakeResolutions
from tests.store_contract import StoreContract, Stores

IMPLEMENTATIONS = [
    (ports.FlowStore, MySQLFlowStore, FakeFlowStore),
    (ports.AgreementStore, MySQLAgreementStore, FakeAgreementStore),
    (ports.PositionStore, MySQLPositionStore, FakePositionStore),
    (ports.PollQueue, MySQLPollQueue, FakePollQueue),
    (ports.ChannelStateStore, MySQLChannelStates, FakeChannelStates),
    (ports.ObservationStore, MySQLObservations, FakeObservations),
    (ports.AuditLog, MySQLAuditLog, FakeAuditLog),
    (ports.DiscrepancyLog, MySQLDiscrepancies, FakeDiscrepancies),
    (ports.ReplicaStore, MySQLReplicas, FakeReplicas),
    (ports.ResolutionStore, MySQLResolutions, FakeResolutions),
]


def port_methods(port: type) -> list[str]:
    return [name for name, value in vars(port).items() if callable(value) and not name.startswith("_")]


@pytest.mark.parametrize(("port", "mysql", "fake"), IMPLEMENTATIONS, ids=lambda v: getattr(v, "__name__", ""))
def test_the_mysql_store_and_its_fake_implement_every_method_of_the_port_alike(
    port: type, mysql: type, fake: type
) -> None:
    methods = port_methods(port)
    assert methods
    for name in methods:
        want = inspect.signature(getattr(port, name))
        for implementation in (mysql, fake):
            method = getattr(implementation, name, None)
            assert method is not None, f"{implementation.__name__} lacks {name}"
            assert inspect.iscoroutinefunction(method) == inspect.iscoroutinefunction(getattr(port, name)), name
            assert inspect.signature(method) == want, f"{implementation.__name__}.{name}{inspect.signature(method)}"


def test_the_fake_planner_answers_like_the_route_planner_port() -> None:
    for name in port_methods(ports.RoutePlanner):
        assert inspect.signature(getattr(FakePlanner, name)) == inspect.signature(getattr(ports.RoutePlanner, name))


class TestFakeStores(StoreContract):
    @pytest.fixture
    def stores(self) -> Stores:
        tables = Tables()

        async def events(flow_id: int) -> list[str]:
            return [e.event_type for e in tables.outbox if e.flow_id == flow_id]

        async def queued(attempt_id: int) -> int | None:
            row = tables.poll_queue.get(attempt_id)
            return row.tries if row else None

        replicas = FakeReplicas(tables)

        async def silence(incarnation: str, seconds: float) -> None:
            replicas.silence(incarnation, seconds)

        return Stores(
            FakeFlowStore(tables),
            FakePollQueue(tables),
            FakeAgreementStore(tables),
            FakePositionStore(tables),
            events,
            queued,
            replicas,
            FakeChannelStates(tables),
            lambda incarnation: FakeFlowStore(tables, incarnation=incarnation),
            silence,
        )
