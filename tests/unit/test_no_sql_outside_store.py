"""All SQL lives in gateway/store/ (one module per table family); nothing else in the product writes any.

Scans every string literal (f-strings included, docstrings excepted) of the
product packages for SQL statements. A servicer, use case or loop that needs
data calls a store method through its port (gateway/ports.py).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("gateway", "channels", "routing")
STORE = REPO / "gateway" / "store"

# Development tooling that still sits inside the product package; it is moving out of it
# (issue 12, dev-tooling part), and this entry goes with it. Never add a product module here.
NOT_PRODUCT = {"gateway/demo.py"}

# A statement: its verb, then (after anything on one logical line) the word that makes it SQL.
_SQL = re.compile(
    r"\b(?:SELECT\b.*\bFROM|INSERT(?:\s+IGNORE)?\s+INTO|UPDATE\s+\w+\s+(?:\w+\s+)?(?:SET|JOIN)|DELETE\s+FROM"
    r"|REPLACE\s+INTO|(?:CREATE|ALTER|DROP|TRUNCATE)\s+(?:TABLE|DATABASE|INDEX)|SELECT\s+@@|BEGIN\s+NOT\s+ATOMIC)\b",
    re.DOTALL,
)


def sql_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of every non-docstring string literal in ``source`` that reads as SQL."""
    tree = ast.parse(source)
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value
        else:
            continue
        if _SQL.search(text):
            found.append((node.lineno, text))
    return found


def product_modules() -> list[Path]:
    files = [p for package in PRODUCT for p in sorted((REPO / package).rglob("*.py"))]
    return [p for p in files if STORE not in p.parents and p.relative_to(REPO).as_posix() not in NOT_PRODUCT]


@pytest.mark.parametrize(
    "text",
    [
        "SELECT id FROM flows WHERE id=%s",
        "INSERT IGNORE INTO poll_queue (attempt_id) VALUES (%s)",
        "UPDATE poll_queue SET tries=%s",
        "UPDATE attempts t JOIN (SELECT 1) v ON t.id = v.id SET t.status = v.status",
        "DELETE FROM outbox WHERE id = %s",
        "select channel, state\n from channel_states".upper(),
        "CREATE TABLE x (id INT)",
    ],
)
def test_the_scanner_recognises_sql(text: str) -> None:
    assert sql_literals(f"def f():\n    '''doc'''\n    return {text!r}\n")
    assert sql_literals("x = f" + repr(text + " {y}") + "\n")


def test_the_scanner_ignores_prose_and_docstrings() -> None:
    source = (
        '"""Claims rows with ``SELECT ... FROM poll_queue FOR UPDATE SKIP LOCKED``."""\n'
        "def f():\n"
        '    """UPDATE flows SET status: a docstring may describe SQL."""\n'
        '    return "select the next channel from the plan; update the metrics"\n'
    )
    assert sql_literals(source) == []


def test_no_sql_outside_gateway_store() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{line}: {text.strip()[:80]}"
        for path in product_modules()
        for line, text in sql_literals(path.read_text())
    ]
    assert offenders == [], "SQL belongs in gateway/store/ (call a store method through its port):\n" + "\n".join(
        offenders
    )


def test_migrations_are_the_only_sql_files() -> None:
    stray = [
        p.relative_to(REPO).as_posix()
        for package in PRODUCT
        for p in (REPO / package).rglob("*.sql")
        if p.parent != STORE / "migrations"
    ]
    assert stray == []


def test_the_store_is_where_the_sql_is() -> None:
    """The scan would pass vacuously if it could not see SQL at all: the store's modules must show plenty."""
    found = {p.name for p in STORE.glob("*.py") if sql_literals(p.read_text())}
    assert {"flows.py", "flow_batch.py", "poll_queue.py", "outbox.py", "positions.py", "audit.py"} <= found
