"""``python -m bench.run --quick`` end to end: real processes, a few seconds per stage."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NUM = r"-?\d+(?:\.\d+)?"
LAST_LINE = re.compile(
    rf"^bench: cpu_vs_floor=(?P<cpu_vs_floor>{NUM}) db_cpu_vs_floor={NUM} low_load_cpu_ratio={NUM}"
    rf" gw_cpu_ms=(?P<gw>{NUM}) floor_cpu_ms=(?P<floor>{NUM}) added_p50_c1_ms={NUM} floor_c1_ms=(?P<floor_c1>{NUM})"
    rf" tps=(?P<tps>\d+) echo_tps=(?P<echo>\d+) ratio_to_echo={NUM} commits_per_request=(?P<commits>{NUM})"
    r" big_table_ratio=na$"
)


@pytest.mark.timeout(200)
def test_quick_bench_prints_the_machine_readable_last_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--database", f"paygate_bench_smoke_{os.getpid()}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    match = LAST_LINE.match(last)
    assert match, last
    assert int(match["tps"]) > 0 and int(match["echo"]) > 0, last
    assert 0 < float(match["commits"]) <= 2.0, last
    assert float(match["gw"]) > 0 and float(match["floor"]) > 0 and float(match["floor_c1"]) > 0, last
