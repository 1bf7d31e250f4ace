"""The in-memory plan store keeps the plan store contract (tests/plan_store_contract.py), like MySQL does."""

from __future__ import annotations

import inspect

import pytest

from gateway.plans.ports import PlanStore
from gateway.store.plans import MySQLPlanStore
from tests.fakes.plans import FakePlanStore, FakeWithholder
from tests.plan_store_contract import PlanStoreContract


def test_the_mysql_store_and_its_fake_implement_every_method_of_the_port_alike() -> None:
    methods = [name for name in dir(PlanStore) if not name.startswith("_") and callable(getattr(PlanStore, name))]
    assert "claim" in methods and "take_tokens" in methods
    for name in methods:
        want = inspect.signature(getattr(PlanStore, name))
        for implementation in (MySQLPlanStore, FakePlanStore):
            method = getattr(implementation, name, None)
            assert method is not None, f"{implementation.__name__} lacks {name}"
            assert inspect.signature(method) == want, f"{implementation.__name__}.{name}{inspect.signature(method)}"


class TestFakePlanStore(PlanStoreContract):
    @pytest.fixture
    def store(self) -> PlanStore:
        return FakePlanStore(FakeWithholder())
