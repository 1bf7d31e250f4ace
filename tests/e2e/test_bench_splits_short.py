"""``paygate bench splits --short`` end to end: 300 random split withholds and refunds, settled, checked to the fen."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAST_LINE = re.compile(
    r"^splits: flows=(?P<flows>\d+) funders=(?P<funders>\d+) sum_errors=(?P<sum>\d+) over_refunds=(?P<over>\d+)"
    r" settlement_mismatch=(?P<mismatch>\d+) flows_per_s=(?P<rate>\d+)$"
)


@pytest.mark.timeout(240)
def test_short_splits_bench_settles_every_funder_to_the_fen() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "bench", "splits", "--short"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    match = LAST_LINE.match(last)
    assert match, last
    assert (match["flows"], match["funders"]) == ("300", "10"), last
    assert (match["sum"], match["over"], match["mismatch"]) == ("0", "0", "0"), last
    assert int(match["rate"]) > 0, last
