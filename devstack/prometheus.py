"""Run a throwaway Prometheus server against paygate metrics endpoints.

Used by tests, the e2e suite and local dashboard work; queries go through
:mod:`gateway.obs.promql`, which ``paygate obs check-dashboard`` uses too.
The server listens on 127.0.0.1 only, keeps its TSDB in a temporary
directory that :meth:`stop` removes, and loads the given rule files (paths are made absolute, so the
generated config may live anywhere).

Blocking API (subprocess + urllib); from asyncio code call it through
``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from devstack.processes import free_port
from gateway.obs.promql import PrometheusError, api_get, prometheus_query

__all__ = ["PrometheusError", "PrometheusProcess", "prometheus_query", "start_prometheus"]


class PrometheusProcess:
    """A running ``prometheus`` child process. ``stop()`` is idempotent; usable as a context manager."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, workdir: Path) -> None:
        self._process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.workdir = workdir
        self.log_path = workdir / "prometheus.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def running(self) -> bool:
        return self._process.poll() is None

    def query(self, expr: str, *, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Instant query at "now"; see :func:`prometheus_query`."""
        return prometheus_query(self.url, expr, timeout=timeout)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Block until ``/-/ready`` answers 200; raise :class:`PrometheusError` with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise PrometheusError(f"prometheus exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise PrometheusError(f"prometheus not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def wait_for_scrapes(self, *, samples: int = 3, timeout: float = 20.0) -> None:
        """Block until every target is up and has been scraped at least ``samples`` times.

        ``count_over_time(up[5m])`` counts the scrapes Prometheus recorded; a
        target that is down raises with its last scrape error.
        """
        deadline = time.monotonic() + timeout
        last_problem = "no targets yet"
        while time.monotonic() < deadline:
            targets = api_get(f"{self.url}/api/v1/targets", 2.0)["data"]["activeTargets"]
            down = [t for t in targets if t.get("health") == "down"]
            if down:
                last_problem = "; ".join(f"{t['scrapeUrl']}: {t.get('lastError', '')}" for t in down)
            elif targets:
                counts = self.query("count_over_time(up[5m])")
                if len(counts) >= len(targets) and all(float(r["value"][1]) >= samples for r in counts):
                    return
                last_problem = f"scrapes so far: {[r['value'][1] for r in counts]}"
            time.sleep(0.2)
        raise PrometheusError(f"targets not scraped {samples} times within {timeout:.0f}s: {last_problem}")

    def stop(self, timeout: float = 10.0) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=timeout)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrometheusProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def prometheus_binary() -> str:
    """Path of the ``prometheus`` executable (Debian package ``prometheus``)."""
    found = shutil.which("prometheus")
    if found is None:
        raise PrometheusError("prometheus binary not found on PATH; run `bash scripts/ensure_services.sh`")
    return found


def start_prometheus(
    targets: Sequence[str],
    rule_files: Sequence[Path],
    port: int | None = None,
    scrape_interval: str = "1s",
    eval_interval: str = "1s",
    *,
    job: str = "paygate",
    ready_timeout: float = 20.0,
) -> PrometheusProcess:
    """Start Prometheus on 127.0.0.1 scraping ``targets`` (``host:port``, path ``/metrics``).

    ``port=None`` picks a free port. Rule files must exist (Prometheus refuses
    to start on an invalid rule file; the error is in the raised message).
    Returns once the server is ready; the caller must ``stop()`` it.
    """
    workdir = Path(tempfile.mkdtemp(prefix="paygate-prom-"))
    try:
        missing = [str(p) for p in rule_files if not Path(p).is_file()]
        if missing:
            raise PrometheusError(f"rule files not found: {', '.join(missing)}")
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": eval_interval},
            "rule_files": [str(Path(p).resolve()) for p in rule_files],
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": "/metrics",
                    "scrape_interval": scrape_interval,
                    "scrape_timeout": scrape_interval,
                    "static_configs": [{"targets": list(targets)}],
                }
            ],
        }
        config_path = workdir / "prometheus.yml"
        # JSON is valid YAML: no YAML library needed at run time.
        config_path.write_text(json.dumps(config, indent=2))
        listen_port = port if port is not None else free_port()
        log = (workdir / "prometheus.log").open("wb")
        try:
            process = subprocess.Popen(
                [
                    prometheus_binary(),
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{listen_port}",
                    "--storage.tsdb.retention.time=1d",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    server = PrometheusProcess(process, listen_port, workdir)
    try:
        server.wait_ready(ready_timeout)
    except BaseException:
        server.stop()
        raise
    return server
