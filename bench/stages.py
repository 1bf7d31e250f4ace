"""What one benchmark stage measured, and the figures ``make bench``'s last line is computed from."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class Stage:
    name: str
    concurrency: int
    completed: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    added_ms: list[float] = field(default_factory=list)
    channel_mean_ms: float | None = None
    commits: dict[str, float] = field(default_factory=dict)
    note: str = ""
    others_cores: float | None = None  # CPU (in cores) used by processes outside the stage
    threads: dict[str, float] = field(default_factory=dict)  # gateway CPU seconds by thread name (workers=1)

    @property
    def tps(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    def cpu_ms_per_request(self, names: tuple[str, ...]) -> float:
        total = sum(self.cpu_s.get(n, 0.0) for n in names)
        return total * 1000 / self.completed if self.completed else 0.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(q / 100 * len(ordered) + 0.999999)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Paired:
    """A ratio B/A measured over interleaved pairs (A B A B ...): the median and its spread."""

    ratios: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.ratios) if self.ratios else 0.0

    @property
    def low(self) -> float:
        return min(self.ratios, default=0.0)

    @property
    def high(self) -> float:
        return max(self.ratios, default=0.0)

    def describe(self) -> str:
        each = ", ".join(f"{r:.3f}" for r in self.ratios)
        return f"median {self.median:.3f} of {len(self.ratios)} pairs (spread {self.low:.3f}-{self.high:.3f}: {each})"


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


@dataclass(frozen=True)
class Figures:
    """The last line's inputs, each from one stage of the same run (CPU in ms per request)."""

    gw_cpu_ms: float  # gateway process (all workers), zero-latency stage, per withhold
    echo_cpu_ms: float  # echo server, per call
    http_cpu_ms: float  # the bare aiohttp client, per call to the zero-latency bank
    db_client_cpu_ms: float  # the aiomysql client of the db stage, per pair of transactions
    mariadb_cpu_ms: float  # MariaDB, zero-latency stage, per withhold
    db_floor_mariadb_ms: float  # MariaDB, db stage, per pair of transactions
    gw_cpu_c8_ms: float  # gateway, 120/400 ms channel at concurrency 8, per withhold
    added_p50_c1_ms: float
    added_p99_c1_ms: float
    echo_p50_c1_ms: float
    db_p50_c1_ms: float
    tps: float
    echo_tps: float
    commits_per_request: float
    big_table: Paired | None = None

    @property
    def floor_cpu_ms(self) -> float:
        return self.echo_cpu_ms + self.http_cpu_ms + self.db_client_cpu_ms

    @property
    def cpu_vs_floor(self) -> float:
        return _ratio(self.gw_cpu_ms, self.floor_cpu_ms)

    @property
    def db_cpu_vs_floor(self) -> float:
        return _ratio(self.mariadb_cpu_ms, self.db_floor_mariadb_ms)

    @property
    def low_load_cpu_ratio(self) -> float:
        return _ratio(self.gw_cpu_c8_ms, self.gw_cpu_ms)

    @property
    def floor_c1_ms(self) -> float:
        return self.echo_p50_c1_ms + self.db_p50_c1_ms

    @property
    def ratio_to_echo(self) -> float:
        return _ratio(self.tps, self.echo_tps)


def figures(stages: Mapping[str, Stage], big_table: Paired | None) -> Figures:
    """The figures from the stages of one run, by stage name."""
    zero, c8, c1 = stages["paygate-zero-latency"], stages["paygate-ch120-c8"], stages["paygate-ch120-c1"]
    echo, http, db = stages["echo"], stages["http"], stages["db"]
    return Figures(
        gw_cpu_ms=zero.cpu_ms_per_request(("gateway",)),
        echo_cpu_ms=echo.cpu_ms_per_request(("echo",)),
        http_cpu_ms=http.cpu_ms_per_request(("httpfloor",)),
        db_client_cpu_ms=db.cpu_ms_per_request(("dbfloor",)),
        mariadb_cpu_ms=zero.cpu_ms_per_request(("mariadb",)),
        db_floor_mariadb_ms=db.cpu_ms_per_request(("mariadb",)),
        gw_cpu_c8_ms=c8.cpu_ms_per_request(("gateway",)),
        added_p50_c1_ms=percentile(c1.added_ms, 50),
        added_p99_c1_ms=percentile(c1.added_ms, 99),
        echo_p50_c1_ms=percentile(stages["echo-c1"].latencies_ms, 50),
        db_p50_c1_ms=percentile(stages["db-c1"].latencies_ms, 50),
        tps=zero.tps,
        echo_tps=echo.tps,
        commits_per_request=zero.commits.get("per_request", 0.0),
        big_table=big_table,
    )


def last_line(f: Figures) -> str:
    """``make bench``'s machine-readable last line (``big_table_ratio=na`` when the stage did not run)."""
    big = f"{f.big_table.median:.3f}" if f.big_table is not None else "na"
    return (
        f"bench: cpu_vs_floor={f.cpu_vs_floor:.2f} db_cpu_vs_floor={f.db_cpu_vs_floor:.2f}"
        f" low_load_cpu_ratio={f.low_load_cpu_ratio:.2f} gw_cpu_ms={f.gw_cpu_ms:.2f} floor_cpu_ms={f.floor_cpu_ms:.2f}"
        f" added_p50_c1_ms={f.added_p50_c1_ms:.1f} floor_c1_ms={f.floor_c1_ms:.1f} tps={f.tps:.0f}"
        f" echo_tps={f.echo_tps:.0f} ratio_to_echo={f.ratio_to_echo:.3f}"
        f" commits_per_request={f.commits_per_request:.2f} big_table_ratio={big}"
    )


def verdicts(f: Figures) -> list[str]:
    """One line per target: the figure, the target, met or missed."""

    def one(name: str, value: float, target: str, met: bool) -> str:
        return f"  {name:<22} {value:9.2f}  target {target:<22} {'met' if met else 'MISSED'}"

    lines = [
        one("cpu_vs_floor", f.cpu_vs_floor, "<= 1.5", f.cpu_vs_floor <= 1.5),
        one("db_cpu_vs_floor", f.db_cpu_vs_floor, "<= 1.0", f.db_cpu_vs_floor <= 1.0),
        one("low_load_cpu_ratio", f.low_load_cpu_ratio, "<= 1.3", f.low_load_cpu_ratio <= 1.3),
        one(
            "added_p50_c1_ms",
            f.added_p50_c1_ms,
            f"<= {f.floor_c1_ms + 1:.1f} (floor + 1)",
            f.added_p50_c1_ms <= f.floor_c1_ms + 1,
        ),
        one("commits_per_request", f.commits_per_request, "<= 2", f.commits_per_request <= 2),
    ]
    if f.big_table is not None:
        lines.append(one("big_table_ratio", f.big_table.median, ">= 0.9", f.big_table.median >= 0.9))
    return lines
