"""The MySQL resolution store and audit queries keep the contract the fakes keep (tests/resolution_contract.py)."""

from __future__ import annotations

import pytest

from gateway.store.audit import MySQLAuditLog
from gateway.store.db import Database
from gateway.store.flows import MySQLFlowStore
from gateway.store.resolutions import MySQLResolutions
from tests.resolution_contract import ResolutionContract, ResolutionStores

pytestmark = pytest.mark.integration


class TestMySQLResolutions(ResolutionContract):
    @pytest.fixture
    def rstores(self, database: Database) -> ResolutionStores:
        return ResolutionStores(MySQLFlowStore(database), MySQLResolutions(database), MySQLAuditLog(database))
