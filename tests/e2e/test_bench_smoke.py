"""``python -m bench.run --quick`` end to end: real processes, a few seconds per stage."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAST_LINE = re.compile(
    r"^bench: ratio_to_echo=(?P<ratio>\d+\.\d+) tps=(?P<tps>\d+) echo_tps=(?P<echo>\d+)"
    r" added_p99_ms=(?P<added>-?\d+\.\d+) commits_per_request=(?P<commits>-?\d+\.\d+)$"
)


def test_quick_bench_prints_the_machine_readable_last_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--database", "paygate_bench_smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    match = LAST_LINE.match(last)
    assert match, last
    assert int(match["tps"]) > 0 and int(match["echo"]) > 0, last
    assert 0 < float(match["commits"]) <= 2.0, last
