"""The floor: a bare grpc.aio server answering ``PaymentGateway/Withhold`` with no work behind it.

``python -m bench.echo --port N`` serves on 127.0.0.1 until SIGTERM/SIGINT.
It parses the request and answers a SUCCEEDED ``Flow`` built from it, with the
same message types the gateway uses, so the load generator drives it exactly as
it drives paygate. No auth, no interceptor, no database: what is left is
gRPC + protobuf + asyncio in one Python process, the cost every request pays.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal

import grpc

from paygate.v1 import gateway_pb2 as pb

METHOD = "Withhold"
SERVICE = "paygate.v1.PaymentGateway"


async def serve(port: int) -> int:
    counter = itertools.count(1)

    async def withhold(
        request: pb.WithholdRequest, context: grpc.aio.ServicerContext[pb.WithholdRequest, pb.Flow]
    ) -> pb.Flow:
        return pb.Flow(
            flow_no=f"ECHO{next(counter):022d}",
            request_id=request.request_id,
            amount=request.amount,
            status=pb.SUCCEEDED,
        )

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            METHOD: grpc.unary_unary_rpc_method_handler(
                withhold,
                request_deserializer=pb.WithholdRequest.FromString,
                response_serializer=pb.Flow.SerializeToString,
            )
        },
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if bound == 0:
        raise SystemExit(f"bench.echo: cannot bind 127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.echo", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    return asyncio.run(serve(args.port))


if __name__ == "__main__":
    raise SystemExit(main())
