"""The ``paygate`` command.

::

    paygate serve    [--config FILE] [--migrate]   run the gateway until SIGTERM/SIGINT
    paygate migrate  [--config FILE]               apply database migrations (safe to re-run)
    paygate sandbox  --port N ...                  run a sandbox channel simulator
    paygate demo                                   the end-to-end demo (see README)
    paygate health   --address HOST:PORT           gRPC health probe (exit 0 when SERVING)
    paygate results tail ...                       the reference Kafka consumer
    paygate bench routing|relay|pollqueue|plans ... benchmarks
    paygate obs check-dashboard ...                evaluate the Grafana dashboard's queries
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable

from gateway.config import ConfigError, load


def _configure_logging(fmt: str, level: str) -> None:
    try:
        from gateway.logs import configure_logging

        configure_logging(fmt, level)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - logs module always ships
        import logging

        logging.basicConfig(level=level)


def _delegate(target: str) -> Callable[[list[str]], int]:
    module_name, _, attr = target.partition(":")

    def run(argv: list[str]) -> int:
        module = importlib.import_module(module_name)
        result: int = getattr(module, attr)(argv)
        return result

    return run


# paygate bench <name> -> "module:main", imported only when that bench runs.
BENCHES = {
    "routing": "routing.bench:main",
    "relay": "bench.relay:main",
    "pollqueue": "bench.pollqueue:main",
    "plans": "bench.plans:main",
    "gateway": "bench.run:main",
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    command, rest = args[0], args[1:]
    if command == "sandbox":
        return _delegate("channels.sandbox.simulator:main")(rest)
    if command == "demo":
        from devstack.demo import main as demo  # development tooling, imported only for this command

        return demo(rest)
    if command == "results":
        if not rest or rest[0] != "tail":
            print("usage: paygate results tail [options]", file=sys.stderr)
            return 2
        return _delegate("gateway.results:main")(rest[1:])
    if command == "bench":
        if not rest or rest[0] not in BENCHES:
            print(f"usage: paygate bench {{{'|'.join(BENCHES)}}} [options]", file=sys.stderr)
            return 2
        return _delegate(BENCHES[rest[0]])(rest[1:])
    if command == "obs":
        if not rest or rest[0] != "check-dashboard":
            print("usage: paygate obs check-dashboard [options]", file=sys.stderr)
            return 2
        return _delegate("gateway.obs.dashboard:main")(rest[1:])
    if command == "health":
        return _health(rest)
    if command in {"serve", "migrate"}:
        parser = argparse.ArgumentParser(prog=f"paygate {command}")
        parser.add_argument("--config", help="TOML file (default: $PAYGATE_CONFIG)")
        if command == "serve":
            parser.add_argument("--migrate", action="store_true", help="apply migrations before serving")
        ns = parser.parse_args(rest)
        try:
            config = load(ns.config)
        except ConfigError as exc:
            print(f"paygate: {exc}", file=sys.stderr)
            return 2
        _configure_logging(config.logging.format, config.logging.level)
        from gateway.store.db import migrate

        if command == "migrate":
            applied = asyncio.run(migrate(config.database))
            print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
            return 0
        from gateway.app import serve

        if ns.migrate:
            asyncio.run(migrate(config.database))
        try:
            return asyncio.run(serve(config))
        except ConfigError as exc:
            print(f"paygate: {exc}", file=sys.stderr)
            return 2
    print(f"paygate: unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


def _health(argv: list[str]) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    parser = argparse.ArgumentParser(prog="paygate health")
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--service", default="")
    parser.add_argument("--timeout", type=float, default=3.0)
    ns = parser.parse_args(argv)
    try:
        with grpc.insecure_channel(ns.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=ns.service), timeout=ns.timeout)
    except grpc.RpcError as exc:
        print(f"unhealthy: {exc.code().name}")
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    raise SystemExit(main())
