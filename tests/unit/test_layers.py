"""The use cases and servicers depend on the ports, not on the MySQL stores (the composition root wires those)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Modules that decide things; they may read the store's row types, nothing else of the store.
USE_CASES = [
    "gateway/flows.py",
    "gateway/orders.py",
    "gateway/agreements.py",
    "gateway/poller.py",
    "gateway/callbacks.py",
    "gateway/planner.py",
    "gateway/api/admin.py",
    "gateway/api/servicer.py",
    "gateway/api/status.py",
]
ALLOWED_FROM_STORE = {"gateway.store.rows"}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if node.module == "gateway.store")
    return found


@pytest.mark.parametrize("module", USE_CASES)
def test_a_use_case_knows_the_ports_and_the_row_types_only(module: str) -> None:
    store = {m for m in imported_modules(REPO / module) if m == "gateway.store" or m.startswith("gateway.store.")}
    assert store <= ALLOWED_FROM_STORE, f"{module} imports {sorted(store - ALLOWED_FROM_STORE)}"


def test_the_composition_root_is_where_the_mysql_stores_are_chosen() -> None:
    store = {m for m in imported_modules(REPO / "gateway/app.py") if m.startswith("gateway.store.")}
    assert {"gateway.store.flows", "gateway.store.poll_queue", "gateway.store.agreements"} <= store
