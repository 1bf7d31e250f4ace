"""``paygate bench plans --short`` end to end: a small book, a drained time point, one SIGKILL and restart."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAST_LINE = re.compile(
    r"^plans: book=(?P<book>\d+) items=(?P<items>\d+) drained_s=(?P<drained>\d+\.\d) ideal_s=(?P<ideal>\d+\.\d)"
    r" efficiency=(?P<efficiency>\d+\.\d{3}) duplicates=(?P<duplicates>\d+) missed=(?P<missed>\d+)"
    r" restarts=(?P<restarts>\d+) submit_per_s=(?P<submit>\d+)$"
)


@pytest.mark.timeout(300)
def test_short_plan_bench_drains_with_a_restart_and_no_duplicates() -> None:
    done = subprocess.run(
        # a database of this run's own: runs of other checkouts share the MariaDB server
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "bench",
            "plans",
            "--short",
            "--database",
            f"paygate_bench_plans_{uuid.uuid4().hex[:8]}",
        ],
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
    assert (match["book"], match["items"]) == ("6000", "600"), last
    assert (match["duplicates"], match["missed"], match["restarts"]) == ("0", "0", "1"), last
    assert float(match["ideal"]) == 7.5 and float(match["drained"]) >= float(match["ideal"]) * 0.9, last
    assert int(match["submit"]) > 0, last
