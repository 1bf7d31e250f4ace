"""The ``paygate`` command.

::

    paygate serve    [--config FILE] [--migrate]   run the gateway until SIGTERM/SIGINT
    paygate migrate  [--config FILE]               apply database migrations (safe to re-run)
    paygate config check [--config FILE]           validate a config (and its TLS files); print it, secrets redacted
    paygate sandbox  --port N ...                  run a sandbox channel simulator
    paygate demo                                   the end-to-end demo (see README)
    paygate health   --address HOST:PORT [--ca F --cert F --key F]  gRPC health probe (exit 0 when SERVING)
    paygate results tail ...                       the reference Kafka consumer
    paygate recon run|import|runs|discrepancies|mark|report ...  reconciliation (docs/RECONCILIATION.md)
    paygate bench routing|relay|pollqueue|plans|console|recon ... benchmarks
    paygate obs check-dashboard ...                evaluate the Grafana dashboard's queries
    paygate console hash-password                  a password hash for [operators.<name>] password_hash
    paygate splits funders|settlements|statement|run ...  joint-loan settlements (docs/SPLITS.md)
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
    "routing": "bench.routing:main",
    "relay": "bench.relay:main",
    "pollqueue": "bench.pollqueue:main",
    "plans": "bench.plans:main",
    "splits": "bench.splits:main",
    "console": "bench.console:main",
    "recon": "bench.recon:main",
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
    if command == "recon":
        return _delegate("gateway.recon.cli:main")(rest)
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
    if command == "splits":
        return _delegate("gateway.splits.cli:main")(rest)
    if command == "console":
        if not rest or rest[0] != "hash-password":
            print("usage: paygate console hash-password [--stdin]", file=sys.stderr)
            return 2
        return _delegate("gateway.console.cli:hash_password_command")(rest[1:])
    if command == "config":
        if not rest or rest[0] != "check":
            print("usage: paygate config check [--config FILE]", file=sys.stderr)
            return 2
        return _config_check(rest[1:])
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
        from gateway import workers
        from gateway.app import serve
        from gateway.errors import DatabaseUnavailable
        from gateway.store.db import migrate

        try:
            if command == "migrate":
                applied = asyncio.run(migrate(config.database))
                print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
                return 0
            if ns.migrate:  # once, in the supervisor when there are workers
                asyncio.run(migrate(config.database))
            if workers.supervising(config):
                return workers.supervise(config, ns.config)
            return asyncio.run(serve(workers.worker_config(config)))
        except ConfigError as exc:
            print(f"paygate: {exc}", file=sys.stderr)
            return 2
        except DatabaseUnavailable as exc:  # a message, not a traceback: which server, not its password
            print(f"paygate: database unavailable / 数据库不可用: {exc}", file=sys.stderr)
            return 1
    print(f"paygate: unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


def _config_check(argv: list[str]) -> int:
    """Read the configuration as ``serve`` would (adapters' settings, routing, TLS files included, no
    connections made); print it as TOML with every secret redacted. Exit 2 naming the bad key."""
    import tomli_w

    from channels.config import collect_secrets
    from gateway.app import build_registry, build_router
    from gateway.config import redacted, start_up_errors
    from gateway.security.tls import load_material

    parser = argparse.ArgumentParser(prog="paygate config check")
    parser.add_argument("--config", help="TOML file (default: $PAYGATE_CONFIG); PAYGATE_* overrides apply")
    ns = parser.parse_args(argv)
    with collect_secrets() as secrets:
        try:
            config = load(ns.config)
            build_router(config, build_registry(config))
            with start_up_errors():
                for table, key in ((config.server.tls, "server.tls"), (config.server.http_tls, "server.http_tls")):
                    if table.enabled:
                        load_material(table, key)
        except ConfigError as exc:
            print(f"paygate: {exc}", file=sys.stderr)
            return 2
    sys.stdout.write(tomli_w.dumps(redacted(config, secrets)))
    print("paygate: configuration ok", file=sys.stderr)
    return 0


def _health(argv: list[str]) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    parser = argparse.ArgumentParser(prog="paygate health")
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--service", default="")
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--ca", help="TLS: the CA (PEM) the gateway's certificate chains to")
    parser.add_argument("--cert", help="mutual TLS: this client's certificate (PEM)")
    parser.add_argument("--key", help="mutual TLS: its private key (PEM)")
    ns = parser.parse_args(argv)

    def read(path: str | None) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    try:
        ca, key, cert = read(ns.ca), read(ns.key), read(ns.cert)
    except OSError as exc:
        print(f"paygate health: cannot read {exc.filename} ({type(exc).__name__})", file=sys.stderr)
        return 2
    try:
        if ns.ca:
            credentials = grpc.ssl_channel_credentials(ca, key, cert)
            opened = grpc.secure_channel(ns.address, credentials)
        else:
            opened = grpc.insecure_channel(ns.address)
        with opened as channel:
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
