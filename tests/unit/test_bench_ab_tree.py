"""bench.ab's tree A really runs tree A: run from this repository, ``python -m`` would import this tree first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.ab import ROOT, TreeGateway
from devstack.processes import ProcessSet

PROBE = [sys.executable, "-c", "import gateway; print(gateway.__file__)"]


def tree_gateway(tree: Path, tmp_path: Path) -> TreeGateway:
    return TreeGateway(ProcessSet(tmp_path / "procs.log"), tmp_path / "a.toml", tree, log=tmp_path / "a.log", name="a")


def test_tree_a_imports_its_own_gateway_even_from_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "base"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD", "gateway"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    monkeypatch.chdir(ROOT)  # where bench.ab runs
    gateway = tree_gateway(tree, tmp_path)
    gateway.check_tree()
    found = subprocess.run(PROBE, env=gateway.env(), capture_output=True, text=True, check=True).stdout
    assert Path(found.strip()) == tree / "gateway" / "__init__.py"
    # without PYTHONSAFEPATH the working directory comes before PYTHONPATH: tree B instead of A
    unsafe = {k: v for k, v in gateway.env().items() if k != "PYTHONSAFEPATH"}
    found = subprocess.run(PROBE, env=unsafe, capture_output=True, text=True, check=True).stdout
    assert Path(found.strip()) == ROOT / "gateway" / "__init__.py"


def test_a_tree_the_gateway_is_not_imported_from_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="would import the gateway from"):
        tree_gateway(tmp_path / "empty", tmp_path).check_tree()
