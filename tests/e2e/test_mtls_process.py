"""``paygate serve`` behind mutual TLS as a process: grpcurl and ``paygate health`` with certificates,
refusals as a client sees them, the start-up log, and the certificates re-read from disk."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from channels.sandbox.simulator import SandboxSimulator
from channels.simkit import Behaviour
from devstack.certs import stack_pki
from gateway.store.db import DatabaseConfig, migrate
from tests.e2e.test_process import GRPCURL
from tests.support.harness import CALLER_TOKENS
from tests.support.processes import GatewayProcess

ROOT = Path(__file__).resolve().parents[2]


async def test_a_gateway_process_behind_mutual_tls(db_config: DatabaseConfig, tmp_path: Path) -> None:
    await migrate(db_config)
    sim = SandboxSimulator(Behaviour(), name="bank-a", secret="bank-a-secret")
    await sim.start()
    pki = stack_pki(tmp_path / "tls", {"stranger": "spiffe://lender.example/stranger"})
    gw = GatewayProcess(
        tmp_path,
        db_config,
        [{"id": "bank-a", "adapter": "sandbox", "settings": sim.adapter_settings()}],
        server={"tls": pki.server_tls(reload_check_s=0.2)},
    )
    cert, key = pki.client_files("stranger")
    tls = ["-cacert", str(pki.ca_file), "-cert", str(cert), "-key", str(key)]
    try:
        await gw.start_async()

        def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=20)

        listed = grpcurl(*tls, gw.address, "list")  # reflection and health need no principal
        assert listed.returncode == 0, listed.stderr
        assert "paygate.v1.GatewayAdmin" in listed.stdout
        assert grpcurl("-plaintext", gw.address, "list").returncode != 0  # TLS only
        assert grpcurl("-cacert", str(pki.ca_file), gw.address, "list").returncode != 0  # no certificate
        called = grpcurl(
            *tls,
            "-H",
            f"authorization: Bearer {CALLER_TOKENS['loans']}",
            "-d",
            json.dumps({"request_id": "nope"}),
            gw.address,
            "paygate.v1.PaymentGateway/GetFlow",
        )
        assert "Unauthenticated" in called.stderr and "names no configured caller" in called.stderr, called.stderr

        health = [sys.executable, "-m", "gateway.cli", "health", "--address", gw.address]
        ok = subprocess.run(
            [*health, "--ca", str(pki.ca_file), "--cert", str(cert), "--key", str(key)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )
        assert (ok.returncode, ok.stdout.strip()) == (0, "SERVING"), ok.stderr
        assert subprocess.run(health, capture_output=True, timeout=30, cwd=ROOT).returncode == 1

        # a rotated server certificate is re-read from disk by the running process
        pki.ca.issue("paygate", dns=["localhost"], ips=["127.0.0.1"], server=True, days=2).write(pki.folder, "server")
        deadline = time.monotonic() + 20
        while "TLS certificate reloaded for grpc" not in gw.log_path.read_text():
            assert time.monotonic() < deadline, "the process did not re-read its certificate"
            time.sleep(0.2)
        assert grpcurl(*tls, gw.address, "list").returncode == 0
    finally:
        await gw.stop_async()
        await sim.stop()
    log = [json.loads(line) for line in gw.log_path.read_text().splitlines() if line.startswith("{")]
    messages = [entry["msg"] for entry in log]
    assert any(m.startswith("TLS certificate loaded for grpc") for m in messages)
    assert not any(m.startswith("gRPC listener is plaintext") for m in messages)
    serving = next(entry for entry in log if entry["msg"] == "paygate serving")
    assert serving["grpc_tls"] == "mutual"
