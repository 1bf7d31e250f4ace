"""The MySQL plan store keeps the plan store contract (tests/plan_store_contract.py) the executor's fakes keep."""

from __future__ import annotations

import pytest

from gateway.plans.ports import PlanStore
from gateway.store.db import Database
from gateway.store.plans import MySQLPlanStore
from tests.plan_store_contract import PlanStoreContract

pytestmark = pytest.mark.integration


class TestMySQLPlanStore(PlanStoreContract):
    @pytest.fixture
    def store(self, database: Database) -> PlanStore:
        return MySQLPlanStore(database)
