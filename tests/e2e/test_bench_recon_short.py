"""``paygate bench recon --lines 20000`` end to end: the short variant of the 1,000,000-line bench."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAST_LINE = re.compile(
    r"^recon: lines=(?P<lines>\d+) matched=(?P<matched>\d+) discrepancies=(?P<discrepancies>\d+)"
    r" injected=(?P<injected>\d+) found=(?P<found>\d+) false_positives=(?P<fp>\d+)"
    r" lines_per_s=(?P<rate>\d+) rss_mb=(?P<rss>\d+)$"
)
FAULTS = 5  # of each of the six classes the bench injects; and as many PENDING flows settled


@pytest.mark.timeout(300)
def test_short_recon_bench_finds_every_injected_fault_and_nothing_else() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "bench", "recon", "--lines", "20000", "--faults", str(FAULTS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    match = LAST_LINE.match(last)
    assert match, last
    n = {k: int(v) for k, v in match.groupdict().items()}
    assert n["injected"] == 6 * FAULTS and n["found"] == n["injected"] and n["fp"] == 0
    assert n["discrepancies"] == n["injected"]
    assert n["lines"] == 20_000  # less the dropped lines, plus as many lines of orders never sent
    # every line matched but those of a discrepancy (a dropped line has none) and the settled flows'
    assert n["matched"] == n["lines"] - (n["discrepancies"] - FAULTS) - FAULTS
    assert 0 < n["rss"] < 512
