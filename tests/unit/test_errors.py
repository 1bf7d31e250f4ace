"""One documented exception tree whose flags decide the gRPC status; database errors stop at the store."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import asyncmy.errors
import grpc
import pymysql
import pytest

from gateway import errors
from gateway.api.status import to_status
from gateway.errors import (
    Conflict,
    DatabaseUnavailable,
    DataRefused,
    DuplicateKey,
    GatewayError,
    IdempotencyConflict,
    InvalidInput,
    NoRoute,
    NotFound,
    PositionShort,
    PreconditionFailed,
    StoreError,
    Unauthenticated,
    Unavailable,
)
from gateway.store.db import translate

REPO = Path(__file__).resolve().parents[2]


def tree() -> list[type[GatewayError]]:
    """Every class of the gateway's tree."""
    found: list[type[GatewayError]] = []
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return [cls for cls in found if cls.__module__ == "gateway.errors"]


def test_the_module_docstring_draws_every_class_with_its_status() -> None:
    doc = errors.__doc__ or ""
    drawn = {line.split("── ")[-1].split()[0] for line in doc.splitlines() if "── " in line}
    drawn.add("GatewayError")
    classes = {cls.__name__ for cls in tree()}
    assert classes == drawn
    for cls in tree():
        [line] = [ln for ln in doc.splitlines() if ln.rstrip().endswith(cls.__name__) or f" {cls.__name__} " in ln]
        if cls.grpc_status != "INTERNAL" or cls in (StoreError, errors.OutboxError):
            assert cls.grpc_status in line, cls
        assert ("yes" in line.split(cls.__name__, 1)[1].split()[:2]) == (cls.retriable is True), cls


def test_every_status_named_is_a_grpc_status() -> None:
    for cls in tree():
        assert cls.grpc_status in grpc.StatusCode.__members__, cls


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (InvalidInput("amount", "must be positive"), grpc.StatusCode.INVALID_ARGUMENT),
        (Unauthenticated("no token"), grpc.StatusCode.UNAUTHENTICATED),
        (NotFound("flow_no: no flow X"), grpc.StatusCode.NOT_FOUND),
        (IdempotencyConflict("request_id reused"), grpc.StatusCode.ALREADY_EXISTS),
        (PreconditionFailed("no agreement"), grpc.StatusCode.FAILED_PRECONDITION),
        (NoRoute("no channel"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (Unavailable("channel down"), grpc.StatusCode.UNAVAILABLE),
        (DatabaseUnavailable("Can't connect to MySQL server on 10.0.0.5"), grpc.StatusCode.UNAVAILABLE),
        (Conflict("Deadlock found"), grpc.StatusCode.ABORTED),
        (DuplicateKey("uq_x", "Duplicate entry '6222020200112233445' for key 'uq_x'"), grpc.StatusCode.INTERNAL),
        (PositionShort("pay-a"), grpc.StatusCode.INTERNAL),
        (RuntimeError("a bug"), grpc.StatusCode.INTERNAL),
    ],
)
def test_the_status_comes_from_the_class(exc: BaseException, code: grpc.StatusCode) -> None:
    assert to_status(exc)[0] is code


def test_callers_see_no_internals_and_no_card_numbers() -> None:
    assert to_status(DatabaseUnavailable("Can't connect to MySQL server on 10.0.0.5"))[1] == (
        "database unavailable, retry with the same request_id"
    )
    assert to_status(DuplicateKey("uq_x", "Duplicate entry '6222020200112233445'"))[1] == "internal error"
    assert to_status(RuntimeError("secret detail"))[1] == "internal error"
    _, message = to_status(PreconditionFailed("card 6222020200112233445 has no agreement"))
    assert "6222020200112233445" not in message and message.endswith("has no agreement")


def test_the_status_mapping_knows_no_store_module() -> None:
    source = (REPO / "gateway" / "api" / "status.py").read_text()
    imported = {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom) and node.module}
    assert not any(name.startswith("gateway.store") for name in imported), imported


# both drivers' exception trees ([database] driver): the same numbers translate the same way
DRIVERS = pytest.mark.parametrize("err", [pymysql.err, asyncmy.errors], ids=["pymysql", "asyncmy"])


@DRIVERS
def test_database_exceptions_are_translated_at_the_store_boundary(err: Any) -> None:
    duplicate = translate(
        err.IntegrityError(1062, "Duplicate entry 'loans-r1' for key 'flows.uq_flows_caller_request'")
    )
    assert isinstance(duplicate, DuplicateKey) and duplicate.key == "uq_flows_caller_request"
    assert isinstance(translate(err.OperationalError(2003, "Can't connect")), DatabaseUnavailable)
    assert isinstance(translate(err.OperationalError(1213, "Deadlock found")), Conflict)
    assert isinstance(translate(ConnectionResetError()), DatabaseUnavailable)
    other = ValueError("not a database error")
    assert translate(other) is other


@DRIVERS
@pytest.mark.parametrize(
    "exc",
    [
        ("OperationalError", 2013, "Lost connection to MySQL server during query"),
        ("OperationalError", 2006, "MySQL server has gone away"),
        ("OperationalError", 1053, "Server shutdown in progress"),
        ("OperationalError", 1927, "Connection was killed"),
        ("OperationalError", 1290, "The MariaDB server is running with the --read-only option"),
        ("OperationalError", 1040, "Too many connections"),
        ("InterfaceError", 0, ""),
        TimeoutError("connect timed out"),
    ],
)
def test_connection_level_failures_are_unavailable_and_retriable(err: Any, exc: Any) -> None:
    if isinstance(exc, tuple):
        exc = getattr(err, exc[0])(*exc[1:])
    ours = translate(exc)
    assert isinstance(ours, DatabaseUnavailable) and ours.retriable
    assert to_status(ours)[1] == "database unavailable, retry with the same request_id"


@DRIVERS
@pytest.mark.parametrize(
    "spec",
    [
        ("OperationalError", 1690, "BIGINT value is out of range in '`balance` + 1000000000000000'"),
        ("OperationalError", 1264, "Out of range value for column 'fee' at row 1"),
        ("DataError", 1406, "Data too long for column 'bank_code' at row 1"),
        ("OperationalError", 4025, "CONSTRAINT `CONSTRAINT_1` failed for `positions`"),
        ("IntegrityError", 1048, "Column 'flow_id' cannot be null"),
        ("OperationalError", 1317, "Query execution was interrupted"),
        ("ProgrammingError", 1064, "You have an error in your SQL syntax"),
    ],
)
def test_other_database_errors_are_never_called_retriable(err: Any, spec: tuple[str, int, str]) -> None:
    """Telling a caller "retry with the same request_id" for a request that can never succeed is a lie."""
    exc = getattr(err, spec[0])(*spec[1:])
    ours = translate(exc)
    assert isinstance(ours, StoreError) and not isinstance(ours, DatabaseUnavailable | Conflict)
    assert not ours.retriable and to_status(ours)[0] is grpc.StatusCode.INTERNAL
    if exc.args[0] in (1690, 1264, 1406, 4025, 1048):
        assert isinstance(ours, DataRefused) and ours.code == exc.args[0]


def test_only_the_store_imports_the_database_driver() -> None:
    offenders = []
    for package in ("gateway", "channels", "routing"):
        for path in (REPO / package).rglob("*.py"):
            rel = path.relative_to(REPO).as_posix()
            if rel.startswith("gateway/store/") or rel == "gateway/demo.py":  # demo: development tooling, moving out
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                if any(n.split(".")[0] in ("pymysql", "aiomysql", "asyncmy") for n in names):
                    offenders.append(rel)
    assert offenders == []


def test_an_idempotent_hit_is_a_result_not_an_exception() -> None:
    from gateway.store import rows

    assert not any(
        inspect.isclass(v) and issubclass(v, BaseException) and "Idempotent" in name for name, v in vars(rows).items()
    )
    assert not hasattr(errors, "IdempotentHit")
    assert rows.Existing.__doc__ and "nothing was written" in rows.Existing.__doc__
