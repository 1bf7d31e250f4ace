"""MariaDB access through aiomysql or asyncmy (``[database] driver``): the pool, a unit of work, migrations.

Driver pitfalls handled here, once:

* autocommit is set explicitly (off) on every connection; a unit of work
  commits only when told to and rolls back otherwise, in ``finally``.
* a connection whose use was cancelled or raised a connection-level error is
  closed, never returned to the pool half-way through a transaction.
* the driver's exceptions are translated here, once (:func:`translate`), into
  the store's part of the tree in gateway/errors.py: only connection-level
  failures become ``DatabaseUnavailable`` (gRPC UNAVAILABLE, "retry with the
  same request_id"), deadlocks ``Conflict``, a duplicate key ``DuplicateKey``
  naming the index, a value the database refuses (too long, out of range,
  a CHECK) ``DataRefused``, anything else ``StoreError`` (INTERNAL, not
  retriable), so nobody above the store string-matches MySQL error numbers
  or imports pymysql. asyncmy's error classes (its own tree, same error
  numbers) are translated the same way.
* asyncmy (compiled, Cython) speaks the same protocol with the same options:
  multi-statements are on in both (the client flag; :meth:`Tx.script`,
  :meth:`Tx.read_only` and the compound statements of
  :meth:`Tx.script_commit_if` rely on it), both set TCP_NODELAY. asyncmy keeps
  the previous result's server status when a later result's is 0 (so after
  ``…; COMMIT`` or ``…; ROLLBACK`` in one round trip it still says "in a
  transaction" and its pool would close the connection on release): a unit of
  work that ended in its last statement clears that flag (:meth:`Tx._end`).
  Bulk loads stay on aiomysql (:mod:`gateway.store.bulk`), as do migrations.
* every session is strict (:data:`SESSION_SQL_MODE`): the database refuses a
  value that does not fit instead of cutting it, whatever the server's default.
* work that must happen only once a transaction is durable (metrics, log
  lines about what was written) is registered with :meth:`Tx.on_commit` and
  runs after the COMMIT returned, never for a transaction rolled back or retried.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, Literal, TypeVar

import aiomysql
import asyncmy
import asyncmy.errors
import pymysql
from asyncmy.cursors import DictCursor as AsyncmyDictCursor
from pydantic import AfterValidator, Field

from channels.config import TABLE, ConfigError, Secret, join
from gateway import metrics
from gateway.errors import Conflict, CountMismatch, DatabaseUnavailable, DataRefused, DuplicateKey, StoreError
from gateway.store.bulk import BulkLoader

log = logging.getLogger(__name__)

T = TypeVar("T")

# Server error numbers that mean the server or the connection is gone, or cannot take writes now
# (a failover in progress: --read-only); every client-side error (2000-2999) is connection-level too.
_CONNECTION_ERRORS = {1040, 1053, 1152, 1158, 1159, 1160, 1161, 1203, 1290, 1836, 1927, 4031}
_DEADLOCK_ERRORS = {1213, 1205}  # deadlock, lock wait timeout
# A value the database refuses: too long, out of range, incorrect for its type, NULL, a CHECK, bad JSON.
_DATA_ERRORS = {1048, 1264, 1265, 1292, 1366, 1367, 1406, 1411, 1690, 3140, 4025, 4038}

# Strict: refuse rather than cut or clamp (a request id one character too long must not meet
# another caller's key), on every table, whatever the server's default sql_mode.
SESSION_SQL_MODE = "STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ZERO_DATE,NO_ZERO_IN_DATE,NO_ENGINE_SUBSTITUTION"
_SESSION_INIT = f"SET SESSION time_zone='+00:00', SESSION sql_mode='{SESSION_SQL_MODE}'"


# The driver's exception classes, each tree's counterpart side by side (asyncmy's are not pymysql's)
_DRIVER_ERROR = (pymysql.err.Error, asyncmy.errors.Error)
_INTEGRITY = (pymysql.err.IntegrityError, asyncmy.errors.IntegrityError)
_INTERFACE = (pymysql.err.InterfaceError, asyncmy.errors.InterfaceError)
_DATA = (*_INTEGRITY, pymysql.err.DataError, asyncmy.errors.DataError)
_SERVER_STATUS_IN_TRANS = 1


def error_number(exc: BaseException | None) -> int | None:
    """The MySQL error number of a driver error (either driver), else None."""
    if isinstance(exc, _DRIVER_ERROR) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def _database_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", name):
        raise ValueError("letters, digits and _ only")
    return name


@dataclass(frozen=True)
class DatabaseConfig:
    """The ``[database]`` table (see :mod:`channels.config`); the password stays a :class:`Secret` until the pool."""

    __pydantic_config__ = TABLE

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 3306
    user: str = "root"
    password: Secret = Secret("")
    database: Annotated[str, AfterValidator(_database_name)] = "paygate"
    pool_min: Annotated[int, Field(ge=0, le=500)] = 2
    pool_max: Annotated[int, Field(ge=1, le=500)] = 20
    connect_timeout_s: Annotated[float, Field(ge=0.1, le=120)] = 5.0
    pool_recycle_s: Annotated[int, Field(ge=-1)] = 3600
    # application group commit of the request path's writes (gateway/store/batch.py)
    group_commit: bool = True
    group_commit_workers: Annotated[int, Field(ge=1, le=64)] = 1  # batches in flight at once
    group_commit_max_batch: Annotated[int, Field(ge=1, le=1000)] = 64
    # reconciliation stages statements with LOAD DATA LOCAL INFILE on dedicated, guarded connections
    # (gateway/store/bulk.py); false: multi-row INSERTs only (about twice the server's CPU per line)
    bulk_load: bool = True
    # the pool's client library: aiomysql (pure Python, over pymysql) or asyncmy (compiled; bench/driver_ab.py)
    driver: Literal["aiomysql", "asyncmy"] = "aiomysql"

    def check_config(self, key: str) -> None:
        if self.pool_min > self.pool_max:
            raise ConfigError(join(key, "pool_min"), f"must be <= {join(key, 'pool_max')}")


def translate(exc: BaseException) -> BaseException:
    """Turn a pymysql or asyncmy error (or a socket error) into ours; other exceptions pass through unchanged.

    Only a connection-level failure is ``DatabaseUnavailable`` (callers are told to retry with
    the same request_id); an error the same request would hit again (a value out of range, a
    value too long, a bad statement) is never called retriable.
    """
    if isinstance(exc, _DRIVER_ERROR):
        code = error_number(exc) or 0
        message = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        if isinstance(exc, _INTEGRITY) and code == 1062:
            key = message.rsplit("for key ", 1)[-1].strip("'`") if "for key" in message else ""
            return DuplicateKey(key.rsplit(".", 1)[-1], message)
        if code in _DEADLOCK_ERRORS:
            return Conflict(message)
        if code in _CONNECTION_ERRORS or 2000 <= code < 3000 or isinstance(exc, _INTERFACE):
            return DatabaseUnavailable(message)
        if code in _DATA_ERRORS or isinstance(exc, _DATA):
            return DataRefused(code, message)
        return StoreError(f"database error {code}: {message}")
    if isinstance(exc, ConnectionError | OSError):  # TimeoutError included
        return DatabaseUnavailable(str(exc))
    return exc


@dataclass(frozen=True)
class StatementResult:
    """What one statement of :meth:`Tx.script` returned: rows changed, the insert id, a SELECT's rows."""

    count: int
    insert_id: int
    rows: list[dict[str, Any]]


async def _statement_result(cur: Any) -> StatementResult:
    rows = list(await cur.fetchall()) if cur.description else []
    return StatementResult(int(cur.rowcount), int(cur.lastrowid or 0), rows)


class Tx:
    """One open transaction on one connection. Obtained from :meth:`Database.transaction`."""

    def __init__(self, conn: Any, dict_cursor: Any = aiomysql.DictCursor) -> None:
        self.conn = conn
        self._dict = dict_cursor  # the driver's cursor class that returns rows as dicts
        self.committed = False
        self.ended = False  # ended in the same round trip as its last statement (read_only, script_commit_if)
        self._after_commit: list[Callable[[], None]] = []

    def on_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once this transaction has committed (never if it rolls back).

        For what must count only what is durable: a metric or a log line about a row written
        here would double-count when a deadlock makes the caller retry the transaction.
        """
        self._after_commit.append(action)

    def run_after_commit(self) -> None:
        actions, self._after_commit = self._after_commit, []
        if not self.committed:
            return
        for action in actions:
            try:
                action()
            except Exception:  # a metric or a log line must never undo what was committed
                log.exception("after-commit action failed")

    def _open(self) -> Any:
        """The connection, while this unit of work is open.

        After a COMMIT (or a ROLLBACK that rode along with a statement) a
        further statement would start a new transaction that nothing commits or
        rolls back before the connection goes back to the pool: refuse it.
        """
        if self.committed or self.ended:
            raise RuntimeError("this unit of work has already ended; start a new transaction")
        return self.conn

    def _end(self) -> None:
        """The transaction ended in the round trip just read (a COMMIT or ROLLBACK in it)."""
        self.ended = True
        if isinstance(self.conn, asyncmy.Connection):  # its stale in-transaction flag (module docstring)
            # a public attribute of the compiled class (asyncmy/connection.pxd), absent from its stub
            self.conn.server_status &= ~_SERVER_STATUS_IN_TRANS  # type: ignore[attr-defined]

    async def execute(self, sql: str, args: Sequence[Any] | None = None) -> int:
        """Run one statement; returns affected rows."""
        async with self._open().cursor() as cur:
            n: int = await cur.execute(sql, args)
            return n

    def quote(self, text: str) -> str:
        """``text`` as a quoted SQL string literal, escaped the way this connection's server reads it
        (backslash escapes, or only doubled quotes under NO_BACKSLASH_ESCAPES)."""
        quoted: str = self._open().escape(str(text))
        return quoted

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> int:
        async with self._open().cursor() as cur:
            n: int = await cur.executemany(sql, args)
            return n

    async def insert(self, sql: str, args: Sequence[Any] | None = None) -> int:
        """Run an INSERT and return ``LAST_INSERT_ID()``."""
        async with self._open().cursor() as cur:
            await cur.execute(sql, args)
            return int(cur.lastrowid)

    async def fetchone(self, sql: str, args: Sequence[Any] | None = None) -> dict[str, Any] | None:
        async with self._open().cursor(self._dict) as cur:
            await cur.execute(sql, args)
            row: dict[str, Any] | None = await cur.fetchone()
            return row

    async def fetchall(self, sql: str, args: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        async with self._open().cursor(self._dict) as cur:
            await cur.execute(sql, args)
            rows = await cur.fetchall()
            return list(rows)

    async def read_only(self, sql: str, args: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """One SELECT and the ROLLBACK that ends its transaction, in one round trip; the rows."""
        async with self._open().cursor(self._dict) as cur:
            await cur.execute(cur.mogrify(sql, args) + ";\nROLLBACK")
            rows = list(await cur.fetchall())
            while await cur.nextset():
                pass
        self._end()
        return rows

    async def script(
        self, statements: Sequence[tuple[str, Sequence[Any]]], *, commit: bool = False
    ) -> list[StatementResult]:
        """Several statements in one round trip (multi-statement query); what each one returned.

        Parameters are escaped by the driver as in :meth:`execute`. The server
        stops at the first failing statement, which raises here; the unit of
        work then rolls back what ran before it. ``commit`` appends the COMMIT.
        A SELECT's rows come back in its :class:`StatementResult` (a locking
        read in a script takes its locks in statement order).
        """
        async with self._open().cursor(self._dict) as cur:
            sql = ";\n".join(cur.mogrify(text, list(args)) for text, args in statements)
            await cur.execute(sql + (";\nCOMMIT" if commit else ""))
            results = [await _statement_result(cur)]
            while await cur.nextset():
                results.append(await _statement_result(cur))
        if commit:
            self._end()
            self.committed = True
            return results[:-1]
        return results

    async def script_commit_if(
        self, statements: Sequence[tuple[str, Sequence[Any]]], expected: Sequence[int | None]
    ) -> list[int]:
        """Several statements, then COMMIT only if each changed the rows expected of it; one round trip.

        The statements run inside a MariaDB compound statement (``BEGIN NOT
        ATOMIC … END``) that reads ``ROW_COUNT()`` after each, and ends the
        transaction with COMMIT if every count equals its ``expected`` entry
        (``None``: any count) and with ROLLBACK otherwise, in the same round
        trip as the writes. The first count that differs stops the script: the
        statements after it do not run (their counts are -1), so a later insert
        cannot fail on a key only because an earlier guard did not hold.
        Returns the counts; raises :class:`CountMismatch` (after the rollback)
        when they did not match. A failing statement raises as in :meth:`script`
        and the unit of work rolls back.
        """
        if len(expected) != len(statements) or not statements:
            raise ValueError("script_commit_if needs one expected count per statement")
        names = [f"pg_c{i}" for i in range(len(statements))]
        checks = " AND ".join(f"{name} = {int(n)}" for name, n in zip(names, expected, strict=True) if n is not None)
        counts_sql = ", ".join(names)
        async with self._open().cursor() as cur:
            body = "".join(
                f"{cur.mogrify(text, list(args))};\nSET {name} = ROW_COUNT();\n"
                + (f"IF {name} <> {int(n)} THEN LEAVE pg_writes; END IF;\n" if n is not None else "")
                for (text, args), name, n in zip(statements, names, expected, strict=True)
            )
            await cur.execute(
                f"BEGIN NOT ATOMIC\nDECLARE {', '.join(names)} BIGINT DEFAULT -1;\npg_writes: BEGIN\n{body}"
                f"END pg_writes;\nIF {checks or 'TRUE'} THEN COMMIT; SELECT 1, {counts_sql};\n"
                f"ELSE ROLLBACK; SELECT 0, {counts_sql};\nEND IF;\nEND"
            )
            row = await cur.fetchone()
            while await cur.nextset():
                pass
        if row is None:  # pragma: no cover - the compound statement always ends with a SELECT
            raise RuntimeError("checked script returned no result")
        ok, *counts = (int(v) for v in row)
        self._end()
        if not ok:
            raise CountMismatch(counts, list(expected))
        self.committed = True
        return counts

    async def commit(self) -> None:
        await self._open().commit()
        self.committed = True


class Database:
    """The connection pool. ``start()``/``stop()`` or ``async with``."""

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self._pool: Any = None  # aiomysql.Pool or asyncmy.Pool
        self.commits = 0  # commits issued by this process (benchmarks read it)
        self._loader: BulkLoader | None = None
        self.bulk_loads = 0  # files loaded with LOAD DATA LOCAL INFILE (tests and benchmarks read it)

    async def start(self) -> None:
        if self._pool is not None:
            return
        create_pool = asyncmy.create_pool if self.config.driver == "asyncmy" else aiomysql.create_pool
        try:
            self._pool = await create_pool(
                minsize=self.config.pool_min,
                maxsize=self.config.pool_max,
                pool_recycle=self.config.pool_recycle_s,
                **self._connect_kw(),
            )
        except Exception as exc:
            raise translate(exc) from exc

    def _connect_kw(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "host": cfg.host,
            "port": cfg.port,
            "user": cfg.user,
            "password": cfg.password.reveal(),
            "db": cfg.database,
            "autocommit": False,
            "connect_timeout": cfg.connect_timeout_s,
            "charset": "utf8mb4",
            "init_command": f"{_SESSION_INIT}, SESSION tx_isolation='READ-COMMITTED'",
        }

    async def load_file(self, path: str, table: str, columns: Sequence[str]) -> int | None:
        """``LOAD DATA LOCAL INFILE`` of ``path`` (tab-separated, :func:`gateway.store.bulk.field`) into
        ``table``, committed, on a dedicated connection (see :mod:`gateway.store.bulk`); rows loaded, or
        None when the server takes no LOCAL INFILE (load with INSERTs instead)."""
        if not self.config.bulk_load:
            return None
        if self._loader is None:
            self._loader = BulkLoader(self._connect_kw())
        n = await self._loader.load(path, table, columns)
        if n is not None:
            self.commits += 1
            self.bulk_loads += 1
        return n

    async def stop(self) -> None:
        loader, self._loader = self._loader, None
        if loader is not None:
            loader.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
            await pool.wait_closed()

    async def __aenter__(self) -> Database:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def pool(self) -> Any:
        if self._pool is None:
            raise DatabaseUnavailable("database pool is not started")
        return self._pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """A unit of work: rolls back unless ``tx.commit()`` was called.

        Errors are translated (DuplicateKey, Conflict, DatabaseUnavailable).
        A connection that saw a cancellation or a connection error is closed
        instead of being returned to the pool.
        """
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        try:
            conn = await self.pool.acquire()
        except Exception as exc:
            raise translate(exc) from exc
        if task is not None and task.cancelling() > cancels:
            # aiomysql and asyncmy open connections under Python 3.11's asyncio.wait_for, which
            # swallows a cancellation that arrives just as the connection is made: honour it here,
            # or the cancelled task would go on (tests/integration/test_db_cancellation.py)
            self.pool.release(conn)
            raise asyncio.CancelledError
        tx = Tx(conn, AsyncmyDictCursor if self.config.driver == "asyncmy" else aiomysql.DictCursor)
        broken = False
        try:
            yield tx
        except asyncio.CancelledError:
            broken = True
            raise
        except Exception as exc:
            ours = translate(exc)
            if isinstance(ours, DatabaseUnavailable):
                broken = True
            if ours is exc:
                raise
            raise ours from exc
        finally:
            if tx.committed:
                self.commits += 1
                metrics.DB_COMMITS.inc()
                tx.run_after_commit()
            try:
                if not tx.committed and not tx.ended and not broken:
                    try:
                        await conn.rollback()
                    except BaseException as exc:
                        # includes a cancellation delivered during the rollback: never
                        # return a connection in an unknown state, never skip the release
                        broken = True
                        ours = translate(exc)
                        if ours is exc:
                            raise
                        # a connection lost under a read-only unit of work is DatabaseUnavailable
                        # (UNAVAILABLE to callers, retried by loops), not a raw pymysql error
                        raise ours from exc
            finally:
                if broken:
                    conn.close()
                # not awaited: release must happen even while this task is being cancelled
                self.pool.release(conn)

    async def retrying(self, work: Callable[[], Awaitable[T]], *, attempts: int = 3) -> T:
        """``work()`` (one whole unit of work), tried again when a deadlock or lock wait rolled it back.

        A :class:`~gateway.errors.Conflict` means the transaction was rolled back entirely, so
        running it again is safe; after ``attempts`` tries the last Conflict is raised.
        """
        for attempt in range(1, attempts + 1):
            try:
                return await work()
            except Conflict:
                metrics.DB_CONFLICT_RETRIES.inc()
                if attempt == attempts:
                    raise
                await asyncio.sleep(0.005 * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def fetchone(self, sql: str, args: Sequence[Any] | None = None) -> dict[str, Any] | None:
        """A single-statement read in its own transaction (one round trip); the first row."""
        rows = await self.fetchall(sql, args)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, args: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """A single-statement read in its own transaction (one round trip, the ROLLBACK rides along)."""
        async with self.transaction() as tx:
            return await tx.read_only(sql, args)


# --- migrations ------------------------------------------------------------------


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) pairs in order, from gateway/store/migrations/NNNN_*.sql."""
    folder = resources.files("gateway.store") / "migrations"
    items = sorted((p.name, p.read_text()) for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), sql) for name, sql in items]


def _statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


async def migrate(config: DatabaseConfig, *, create_database: bool = True) -> list[str]:
    """Apply pending migrations; safe to re-run. Returns the versions applied now.

    A migration lock (``GET_LOCK``) stops two replicas migrating at once.
    """
    try:
        conn = await aiomysql.connect(
            host=config.host,
            port=config.port,
            user=config.user,
            password=config.password.reveal(),
            autocommit=True,
            connect_timeout=config.connect_timeout_s,
            charset="utf8mb4",
        )
    except Exception as exc:
        raise translate(exc) from exc
    applied: list[str] = []
    try:
        async with conn.cursor() as cur:
            if create_database:
                await cur.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name=%s", (config.database,))
                if not await cur.fetchone():
                    await cur.execute(f"CREATE DATABASE `{config.database}` CHARACTER SET utf8mb4")
            await cur.execute(f"USE `{config.database}`")
            await cur.execute(_SESSION_INIT)
            await cur.execute("SELECT GET_LOCK('paygate_migrate', 30)")
            try:
                await cur.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version VARCHAR(128) NOT NULL PRIMARY KEY, applied_at DATETIME(6) NOT NULL)"
                )
                await cur.execute("SELECT version FROM schema_migrations")
                done = {row[0] for row in await cur.fetchall()}
                for version, sql in migration_files():
                    if version in done:
                        continue
                    for statement in _statements(sql):
                        await cur.execute(statement)
                    await cur.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, UTC_TIMESTAMP(6))", (version,)
                    )
                    applied.append(version)
                    log.info("migration applied", extra={"version": version})
            finally:
                await cur.execute("SELECT RELEASE_LOCK('paygate_migrate')")
    finally:
        conn.close()
    return applied
