"""The MySQL stores keep the store contract (tests/store_contract.py) the unit tests' fakes keep."""

from __future__ import annotations

import pytest

from gateway.store.agreements import MySQLAgreementStore
from gateway.store.channel_states import MySQLChannelStates
from gateway.store.db import Database
from gateway.store.flows import MySQLFlowStore
from gateway.store.poll_queue import MySQLPollQueue
from gateway.store.positions import MySQLPositionStore
from gateway.store.replicas import MySQLReplicas
from tests.store_contract import StoreContract, Stores

pytestmark = pytest.mark.integration


class TestMySQLStores(StoreContract):
    @pytest.fixture
    def stores(self, database: Database) -> Stores:
        async def events(flow_id: int) -> list[str]:
            rows = await database.fetchall("SELECT event_type FROM outbox WHERE flow_id=%s ORDER BY id", (flow_id,))
            return [str(r["event_type"]) for r in rows]

        async def queued(attempt_id: int) -> int | None:
            row = await database.fetchone("SELECT tries FROM poll_queue WHERE attempt_id=%s", (attempt_id,))
            return int(row["tries"]) if row else None

        async def silence(incarnation: str, seconds: float) -> None:
            async with database.transaction() as tx:
                await tx.execute(
                    "UPDATE replicas SET last_seen = UTC_TIMESTAMP(6) - INTERVAL %s SECOND WHERE incarnation=%s",
                    (seconds, incarnation),
                )
                await tx.commit()

        return Stores(
            MySQLFlowStore(database),
            MySQLPollQueue(database),
            MySQLAgreementStore(database),
            MySQLPositionStore(database),
            events,
            queued,
            MySQLReplicas(database),
            MySQLChannelStates(database),
            lambda incarnation: MySQLFlowStore(database, incarnation=incarnation),
            silence,
        )
