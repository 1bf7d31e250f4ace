"""``paygate splits``: funders' settlements and statements, through the SplitSettlement admin API.

::

    paygate splits funders      --address HOST:PORT
    paygate splits settlements  --address HOST:PORT (--day YYYY-MM-DD | --funder ID)
    paygate splits statement    --address HOST:PORT --funder ID --day YYYY-MM-DD [--out FILE]
    paygate splits run          --address HOST:PORT --day YYYY-MM-DD [--funder ID] --reason TEXT
    paygate splits resend       --address HOST:PORT --funder ID --day YYYY-MM-DD --reason TEXT

The operator token comes from ``--token`` or ``$PAYGATE_OPERATOR_TOKEN`` (reads need a viewer,
``run`` and ``resend`` an operator; both are audited). ``resend`` re-sends the payout of a
PAYOUT_FAILED settlement under a new request id (docs/SPLITS.md, "Re-sending a failed payout").
``--ca/--cert/--key`` for TLS as ``paygate health``.
A statement is written as the API gives it (UTF-8 with BOM, bilingual headers) to ``--out``,
or to standard output.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc

from gateway.domain import minor_to_text
from paygate.v1 import splits_pb2, splits_pb2_grpc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paygate splits", description="joint-loan settlements / 联合贷结算")
    parser.add_argument("what", choices=("funders", "settlements", "statement", "run", "resend"))
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--token", default=os.environ.get("PAYGATE_OPERATOR_TOKEN", ""))
    parser.add_argument("--day", default="", help="business day YYYY-MM-DD")
    parser.add_argument("--funder", default="")
    parser.add_argument("--reason", default="")
    parser.add_argument("--out", default="", help="statement: write the CSV here")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--ca")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    return parser


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


def settlement_line(s: splits_pb2.Settlement) -> str:
    status = splits_pb2.SettlementStatus.Name(s.status).removeprefix("SETTLEMENT_")
    money = {
        n: minor_to_text(getattr(s, n), s.currency)
        for n in ("withheld", "refunded", "carried_in", "net", "paid", "carried_out")
    }
    return (
        f"{s.business_day} {s.funder_id:<12} {status:<13}"
        f" 代扣 withheld={money['withheld']} 退款 refunded={money['refunded']}"
        f" 结转入 carried_in={money['carried_in']} 净额 net={money['net']} 支付 paid={money['paid']}"
        f" 结转出 carried_out={money['carried_out']} {s.currency} orders={s.orders} payout={s.payout_flow_no or '-'}"
    )


def main(argv: list[str]) -> int:
    ns = _parser().parse_args(argv)
    if not ns.token:
        print("paygate splits: an operator token is needed (--token or $PAYGATE_OPERATOR_TOKEN)", file=sys.stderr)
        return 2
    md = (("authorization", f"Bearer {ns.token}"),)
    try:
        pem = (_read(ns.ca), _read(ns.key), _read(ns.cert))
    except OSError as exc:
        return _unreadable(exc)
    if ns.ca:
        channel = grpc.secure_channel(ns.address, grpc.ssl_channel_credentials(*pem))
    else:
        channel = grpc.insecure_channel(ns.address)
    try:
        with channel:
            stub = splits_pb2_grpc.SplitSettlementStub(channel)
            if ns.what == "funders":
                listed = stub.ListFunders(splits_pb2.ListFundersRequest(), metadata=md, timeout=ns.timeout)
                for funder in listed.funders:
                    print(
                        f"{funder.funder_id:<12} {funder.name} {funder.currency}"
                        f" settle_from={funder.settle_from} {funder.account_masked}"
                    )
            elif ns.what == "settlements":
                request = splits_pb2.ListSettlementsRequest(business_day=ns.day, funder_id=ns.funder)
                for s in stub.ListSettlements(request, metadata=md, timeout=ns.timeout).settlements:
                    print(settlement_line(s))
            elif ns.what == "statement":
                reply = stub.GetStatement(
                    splits_pb2.StatementRequest(funder_id=ns.funder, business_day=ns.day),
                    metadata=md,
                    timeout=ns.timeout,
                )
                if ns.out:
                    with open(ns.out, "w", encoding="utf-8", newline="") as out:
                        out.write(reply.csv)
                    print(f"{ns.out}: {settlement_line(reply.settlement)}")
                else:
                    sys.stdout.write(reply.csv)
            elif ns.what == "resend":
                resend = splits_pb2.ResendSettlementPayoutRequest(
                    funder_id=ns.funder, business_day=ns.day, reason=ns.reason
                )
                s = stub.ResendSettlementPayout(resend, metadata=md, timeout=ns.timeout)
                print(f"已重新支付 re-sent as {s.payout_request_id} (attempt {s.payout_attempt}): {settlement_line(s)}")
            else:
                run = splits_pb2.RunSettlementRequest(business_day=ns.day, funder_id=ns.funder, reason=ns.reason)
                for s in stub.RunSettlement(run, metadata=md, timeout=ns.timeout).settlements:
                    print(settlement_line(s))
    except grpc.RpcError as exc:
        print(f"paygate splits: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except OSError as exc:  # --out
        return _unreadable(exc)
    return 0


def _unreadable(exc: OSError) -> int:
    print(f"paygate splits: cannot open {exc.filename} ({type(exc).__name__})", file=sys.stderr)
    return 2
