"""``paygate bench console`` end to end on a small database: every page (the plans screen's too) answers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAST_LINE = re.compile(
    r"^console: flows=(?P<flows>\d+) instalments=(?P<instalments>\d+) pages=(?P<pages>\d+)"
    r" worst_p50_ms=(?P<p50>\d+\.\d) worst_max_ms=(?P<max>\d+\.\d)$"
)


SMALL = ("--flows", "5000", "--instalments", "4000", "--runs", "1")


@pytest.mark.timeout(300)
def test_short_console_bench_times_every_page() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "bench", "console", *SMALL],
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
    assert (match["flows"], match["instalments"]) == ("5000", "4000"), last
    assert int(match["pages"]) == 30, last  # 22 of the core screens, 8 of the plans screen
    assert "plans: first visit (due from today)" in done.stdout
    assert "ix_instalments_due_date" in done.stdout  # the EXPLAIN it prints
