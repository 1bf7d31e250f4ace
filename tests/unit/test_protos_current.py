"""The committed generated code matches protos/ (regenerated into a temp dir and compared)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_current(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run([str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)], check=True, env=env, capture_output=True)
    for generated in sorted((tmp_path / "paygate" / "v1").glob("*_pb2*.py*")):
        committed = ROOT / "paygate" / "v1" / generated.name
        assert committed.read_text() == generated.read_text(), f"{generated.name} is stale: run make protos"
