"""The product does not depend on its development tooling.

No module under ``gateway/``, ``channels/`` or ``routing/`` imports ``bench``
or ``devstack`` (statically, or through an ``importlib`` target string), except
``gateway/cli.py``, inside the functions behind ``paygate demo`` and
``paygate bench``. And ``devstack`` never imports ``bench``: benchmarks build
on the development stack, not the other way round.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("gateway", "channels", "routing")
TOOLING = ("bench", "devstack")
CLI = Path("gateway/cli.py")
# "devstack.demo", "bench.relay:main": a module path importlib could be handed
TARGET = re.compile(r"^(bench|devstack)(\.[A-Za-z_][\w.]*)?(:\w+)?$")


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    return []


def _top(module: str) -> str:
    return module.split(".", 1)[0].split(":", 1)[0]


def violations(path: Path, forbidden: tuple[str, ...], *, lazy_allowed: bool = False) -> list[str]:
    """``path:line what`` for every import of (or importlib target in) ``forbidden`` packages.

    With ``lazy_allowed``, imports inside a function body are allowed, and so
    are target strings (they are resolved only when a command runs).
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            in_function.update(id(inner) for inner in ast.walk(node) if inner is not node)
    found = []
    for node in ast.walk(tree):
        for module in _imported(node):
            if _top(module) in forbidden and not (lazy_allowed and id(node) in in_function):
                found.append(f"{path}:{node.lineno} imports {module}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and not lazy_allowed:
            match = TARGET.match(node.value)
            if match and match.group(1) in forbidden and (match.group(2) or match.group(3)):
                found.append(f"{path}:{node.lineno} names {node.value!r}")
    return found


def _modules(*packages: str) -> list[Path]:
    return sorted(p.relative_to(ROOT) for package in packages for p in (ROOT / package).rglob("*.py"))


def test_product_never_imports_bench_or_devstack() -> None:
    found = []
    for path in _modules(*PRODUCT):
        found += violations(ROOT / path, TOOLING, lazy_allowed=path == CLI)
    assert found == []


def test_devstack_never_imports_bench() -> None:
    found = [v for path in _modules("devstack") for v in violations(ROOT / path, ("bench",))]
    assert found == []


def test_the_cli_reaches_the_tooling_only_lazily() -> None:
    # the exception is used, and only inside functions
    cli = ROOT / CLI
    assert violations(cli, TOOLING, lazy_allowed=True) == []
    assert any(v.startswith(f"{cli}:") for v in violations(cli, TOOLING))


def test_importing_every_product_module_loads_no_tooling() -> None:
    # what the static scan cannot see: anything imported while the product's modules load
    modules = [
        ".".join(path.with_suffix("").parts).removesuffix(".__init__")
        for path in _modules(*PRODUCT)
        if "_template" not in path.parts
    ]
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {TOOLING!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_the_scan_sees_each_kind_of_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import bench.run\n"
        "from devstack.cards import luhn_card\n"
        "import json\n"
        "TARGET = 'bench.relay:main'\n"
        "WORD = 'bench'\n"
        "def f():\n"
        "    from devstack import demo\n"
    )
    assert [v.split(" ", 1)[1] for v in violations(module, TOOLING)] == [
        "imports bench.run",
        "imports devstack.cards",
        "names 'bench.relay:main'",
        "imports devstack",
    ]
    assert [v.split(" ", 1)[1] for v in violations(module, TOOLING, lazy_allowed=True)] == [
        "imports bench.run",
        "imports devstack.cards",
    ]
