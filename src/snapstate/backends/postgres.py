"""PostgreSQL: production storage shared by many processes on many hosts (psycopg 3).

:class:`PostgresBackend` is synchronous and :class:`AsyncPostgresBackend` uses psycopg's native
asyncio I/O (no worker threads). Both take a conninfo string (they then own a small connection
pool), a connection (used behind a lock: one connection cannot run two statements at once) or a
``psycopg_pool`` pool (used without any lock).

What every call relies on is set up here, not left to the caller: each call runs in autocommit
mode (a borrowed connection is switched for the call and switched back), rows come back through
snapstate's own cursors (whatever ``row_factory`` the connection has), results are binary, and
the only prepared statements are snapstate's, named by their text, so that a pooler handing
transactions to other server sessions (PgBouncer's transaction pooling) can never make a name
stand for another statement; ``prepare=False`` turns them off.

A write is one statement: the rows of each table travel as column arrays and a data-modifying
``WITH`` stores them all, so a checkpoint and its blobs commit together in one round trip and one
transaction. Blobs and plain writes are insert-or-ignore and checkpoints are upserts, so storing a
batch twice leaves the same rows: when the connection is lost during a call, the call is retried
once on a fresh connection (``retry=True``, pools only).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from time import monotonic
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from .. import _forksafe
from ..errors import (
    ConfigurationError,
    InvalidArgumentError,
    MigrationError,
    SnapstateError,
    StorageError,
    StoreUnavailableError,
)
from . import _pg_direct as direct
from . import _pg_sql as sql
from . import _pg_watchdog as watchdog
from ._async import AsyncBackend
from ._base import (
    Backend,
    BlobRef,
    BlobRow,
    CheckpointRow,
    ListQuery,
    MigrationStatus,
    TableStats,
    ThreadInfo,
    WriteBatch,
    WriteRow,
    first_line,
)

try:  # psycopg_pool ships separately; a backend on a single connection does not need it.
    import psycopg_pool
except ImportError:  # pragma: no cover - the postgres extra installs it
    psycopg_pool = None  # type: ignore[assignment]

__all__ = ["PostgresBackend", "AsyncPostgresBackend", "MIGRATIONS"]

MIGRATIONS = sql.MIGRATIONS

T = TypeVar("T")

#: A pooled connection idle longer than this is pinged before use. Servers, proxies and cloud
#: load balancers drop idle connections (Cloud SQL after 10 minutes, some balancers after 60 s);
#: pinging only the long-idle ones keeps a busy pool at one round trip per call.
IDLE_CHECK_AFTER = 30.0

#: While a caller waits for a pooled connection, every this many seconds it looks whether the
#: pool failed to connect since the server was last found answering (or since the pool opened);
#: if a direct connection attempt fails too, it raises at once instead of waiting out
#: ``pool_timeout`` against a server that is down.
_PROBE_EVERY = 0.25

#: Seconds a call waits for the server's reply before snapstate checks, with a new connection,
#: that the server still answers (``server_timeout``; see ``_pg_watchdog``).
SERVER_TIMEOUT = 15.0

#: SQLSTATE of a server whose disk is full (not a lost connection: the call is not retried).
_DISK_FULL = "53100"

#: SQLSTATEs after which a call is retried once: its transaction was rolled back whole.
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock

#: Write transactions a pooled backend runs side by side by default (``write_concurrency``).
#: Two is what a LangGraph step needs: its pending writes and its checkpoint are saved from two
#: threads, and on one transaction at a time the checkpoint waits for the writes' commit. More
#: callers than that share group commits. With 8 processes of 4 threads each, all in sync
#: mode (benchmarks/bench_postgres.py), alternating runs stored 1.10x and 0.89x LangGraph's
#: rate with 2 against 1.39x and 1.01x with 1 (other pairs showed no difference); pass
#: write_concurrency=1 to favour group commit.
MAX_WRITE_CONCURRENCY = 2


def _write_concurrency(
    shared: Any, pool: Any, max_connections: int, wanted: int | None = None
) -> int:
    """One transaction at a time on a single connection; by default up to two on a pool.

    The 1 MB graph of benchmarks/bench_postgres.py went from 12.4 to 9.0 ms of overhead per
    step in side-by-side runs: its 600 KB write and 600 KB blob are stored at the same time.
    """
    if wanted is not None and (
        isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1
    ):
        raise ConfigurationError(f"write_concurrency must be an int >= 1, got {wanted!r}")
    size = max_connections if pool is None else getattr(pool, "max_size", 1)
    if shared is not None:
        if wanted is not None and wanted > 1:
            raise ConfigurationError(
                f"write_concurrency={wanted} needs a pool: a single connection runs one "
                "transaction at a time",
                hint="pass a conninfo string or a pool, or leave write_concurrency unset",
            )
        return 1
    return max(1, min(int(size), MAX_WRITE_CONCURRENCY if wanted is None else wanted))


# Connections of pools abandoned in a forked child. Never closed or collected there: closing
# would end the parent's sessions, which share their sockets.
_FORKED_AWAY: list[Any] = []


class _Config:
    """What both backends validate and keep: schema, statements, pool settings."""

    def __init__(
        self,
        target: Any,
        *,
        schema: str,
        prepare: bool,
        max_connections: int,
        pool_timeout: float,
        connect_timeout: float,
        retry: bool,
        server_timeout: float | None,
    ) -> None:
        self.statements = sql.Statements(schema)
        self.schema = schema
        if not isinstance(prepare, bool):
            raise ConfigurationError(f"prepare must be True or False, got {prepare!r}")
        if not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigurationError(
                f"max_connections must be an int >= 1, got {max_connections!r}"
            )
        for name, value in (("pool_timeout", pool_timeout), ("connect_timeout", connect_timeout)):
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(f"{name} must be seconds > 0, got {value!r}")
        if server_timeout is not None and (
            isinstance(server_timeout, bool)
            or not isinstance(server_timeout, (int, float))
            or not server_timeout > 0
        ):
            raise ConfigurationError(
                f"server_timeout must be seconds > 0 or None, got {server_timeout!r}"
            )
        self.server_timeout = None if server_timeout is None else float(server_timeout)
        self.prepare = prepare
        self.max_connections = max_connections
        self.pool_timeout = float(pool_timeout)
        self.connect_timeout = connect_timeout
        self.retry = retry
        self.where = _describe(target)

    def watch(self, conn: Any) -> watchdog.Watch | watchdog.Unwatched:
        """The context a call waits on the server in (see ``_pg_watchdog``)."""
        return watchdog.watch(conn, self.server_timeout, self.connect_timeout)

    def connect_kwargs(self, conninfo: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"autocommit": True}
        if not self.prepare:
            kwargs["prepare_threshold"] = None
        if "connect_timeout" not in conninfo_to_dict(conninfo):
            kwargs["connect_timeout"] = max(1, round(self.connect_timeout))
        return kwargs


def _describe(target: Any) -> str:
    """Where the server is, for messages (never the password)."""
    try:
        if isinstance(target, str):
            info = conninfo_to_dict(target)
        elif isinstance(target, (psycopg.Connection, psycopg.AsyncConnection)):
            info = {
                "host": target.info.host,
                "port": target.info.port,
                "dbname": target.info.dbname,
            }
        else:
            conninfo = getattr(target, "conninfo", "")
            info = conninfo_to_dict(conninfo) if isinstance(conninfo, str) else {}
    except Exception:
        return "PostgreSQL"
    host = info.get("host") or "localhost"
    port = info.get("port") or "5432"
    db = info.get("dbname") or ""
    return f"PostgreSQL at {host}:{port}/{db}"


def _is_lost(exc: BaseException, conn: Any) -> bool:
    """Whether the connection died under the call (as opposed to the statement failing)."""
    if conn is not None and (conn.closed or conn.broken):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _statement_pooling(exc: BaseException) -> bool:
    """Whether PgBouncer in statement pooling mode refused a transaction (and closed the
    connection): a setting to change, not a connection to try again."""
    return "statement pooling mode" in str(exc)


def _retryable(exc: psycopg.Error, lost: bool) -> bool:
    """Whether a failed call may run again on a new connection."""
    if lost:
        return not _statement_pooling(exc)
    return getattr(exc, "sqlstate", None) in _RETRY_SQLSTATES


def _translate(exc: BaseException, what: str, cfg: _Config, *, lost: bool) -> SnapstateError:
    if _statement_pooling(exc):
        return ConfigurationError(
            f"{cfg.where} refused a transaction while {what}: {first_line(exc)}",
            hint="snapstate runs transactions (setup, deletes, retention): set PgBouncer's "
            "pool_mode to transaction or session for this database",
        )
    if lost:
        return StoreUnavailableError(
            f"lost the connection to {cfg.where} while {what}: {first_line(exc)}"
        )
    if isinstance(exc, pg_errors.UndefinedTable):
        return MigrationError(
            f"snapstate's tables are missing in schema {cfg.schema!r} of {cfg.where} while "
            f"{what}: {first_line(exc)}",
            hint="call setup() (or leave auto_setup on) before using the store",
        )
    if isinstance(exc, pg_errors.UndefinedFunction) and ".check_" in str(exc):
        return MigrationError(
            f"schema {cfg.schema!r} of {cfg.where} lacks a migration this version of "
            f"snapstate needs, while {what}: {first_line(exc)}",
            hint="call setup() (or leave auto_setup on) to apply it",
        )
    if isinstance(exc, (pg_errors.InvalidSqlStatementName, pg_errors.DuplicatePreparedStatement)):
        return StorageError(
            f"prepared statement error from {cfg.where} while {what}: {first_line(exc)}",
            hint="behind PgBouncer in transaction pooling mode, pass prepare=False",
        )
    if isinstance(exc, psycopg.DataError):
        text = first_line(exc)
        nul = "0x00" in text or "NUL" in text
        return InvalidArgumentError(
            f"{cfg.where} rejected a value while {what}: {text}",
            hint="PostgreSQL text cannot hold NUL characters (ids, namespaces, channels)"
            if nul
            else None,
        )
    if getattr(exc, "sqlstate", None) == _DISK_FULL:
        return StorageError(
            f"{cfg.where} ran out of disk space while {what}: {first_line(exc)}",
            hint="free space on the server's disk, or let retention delete old checkpoints "
            "(docs/retention.md). A write that fails this way stores nothing (its transaction "
            "is rolled back), and everything stored before is intact",
        )
    if isinstance(exc, psycopg.OperationalError):
        return StoreUnavailableError(f"{cfg.where} failed while {what}: {first_line(exc)}")
    return StorageError(f"{cfg.where} error while {what}: {first_line(exc)}")


def _check_borrowed(conn: Any, what: str) -> None:
    status = conn.info.transaction_status
    if status != TransactionStatus.IDLE:
        raise ConfigurationError(
            f"the PostgreSQL connection given to snapstate is not idle ({status.name}) while "
            f"{what}",
            hint="commit or roll back before handing the connection to snapstate",
        )


def _failed(
    cfg: _Config, what: str, exc: psycopg.Error, conn: Any, watch: Any, *, last: bool
) -> bool:
    """After a call's attempt failed with ``exc``: raise the store's error, unless the call may
    run again (not ``last``, and safe to repeat); then whether the connection was lost."""
    if watch.reason is not None:
        raise _silent(cfg, what, watch.reason) from None
    lost = _is_lost(exc, conn)
    if last or not _retryable(exc, lost):
        raise _translate(exc, what, cfg, lost=lost) from None
    return lost


def _silent(cfg: _Config, what: str, reason: str) -> StoreUnavailableError:
    """A call the watchdog ended: the server stopped answering (see ``_pg_watchdog``)."""
    return StoreUnavailableError(
        f"{cfg.where} stopped answering while {what}: no reply within "
        f"{cfg.server_timeout:g} s, and a new connection got none either ({reason})",
        hint="check the server and the network to it; server_timeout sets how long a call "
        "waits before that check",
    )


def _unavailable(cfg: _Config, what: str, reason: str) -> StoreUnavailableError:
    return StoreUnavailableError(f"cannot connect to {cfg.where} while {what}: {reason}")


def _pool_busy(cfg: _Config, what: str, pool: Any) -> StoreUnavailableError:
    return StoreUnavailableError(
        f"no connection to {cfg.where} became free within {cfg.pool_timeout:g} s while {what} "
        f"(pool of at most {pool.max_size} connections)",
        hint="raise max_connections or pool_timeout, or hold connections for less time",
    )


def _closed_error(cfg: _Config) -> StoreUnavailableError:
    """The error for a call on a backend that was closed."""
    return StoreUnavailableError(f"the PostgreSQL backend for {cfg.where} is closed")


def _pool_errors(pool: Any) -> int:
    """How many times ``pool`` failed to connect since it opened."""
    return int(pool.get_stats().get("connections_errors", 0))


def _probe_kwargs(pool: Any, cfg: _Config) -> tuple[str, dict[str, Any]] | None:
    conninfo = pool.conninfo
    kwargs = pool.kwargs
    if not isinstance(conninfo, str) or (kwargs is not None and not isinstance(kwargs, dict)):
        return None
    kw = dict(kwargs or {})
    kw.setdefault("connect_timeout", max(1, round(cfg.connect_timeout)))
    return conninfo, kw


# -- synchronous -------------------------------------------------------------------------------


class _Lease:
    """A call's connection from the pool a backend opened itself: taken when the ``with``
    block starts, given back when it ends. A class rather than a generator-based context
    manager: every call of a graph takes one, and the generator cost about 1 µs more a call."""

    __slots__ = ("backend", "conn", "pool", "what")

    def __init__(self, backend: PostgresBackend, what: str) -> None:
        self.backend = backend
        self.what = what

    def __enter__(self) -> psycopg.Connection[Any]:
        backend = self.backend
        if backend._closed:
            raise _closed_error(backend._cfg)
        self.pool = backend._own_pool()
        self.conn: psycopg.Connection[Any] = backend._checkout(self.pool, self.what)
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.backend._idle_since[self.conn] = monotonic()
        self.pool.putconn(self.conn)


class _AsyncLease:
    """The asyncio twin of :class:`_Lease`."""

    __slots__ = ("backend", "conn", "pool", "what")

    def __init__(self, backend: AsyncPostgresBackend, what: str) -> None:
        self.backend = backend
        self.what = what

    async def __aenter__(self) -> psycopg.AsyncConnection[Any]:
        backend = self.backend
        if backend._closed:
            raise _closed_error(backend._cfg)
        self.pool = await backend._own_pool()
        self.conn: psycopg.AsyncConnection[Any] = await backend._checkout(self.pool, self.what)
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        self.backend._idle_since[self.conn] = monotonic()
        await self.pool.putconn(self.conn)


class PostgresBackend(Backend):
    """Checkpoints in PostgreSQL, for threads and processes sharing one database.

    Parameters
    ----------
    conninfo:
        A conninfo string or URL (``"postgresql://user@host/db"``): the backend owns a pool of
        at most ``max_connections`` connections, opened on first use and checked after idling.
        Or a ``psycopg.Connection``, used behind a lock (one statement at a time; a lost
        connection cannot be replaced). Or a ``psycopg_pool.ConnectionPool``, used without a
        lock; its connections may have any autocommit, row factory or prepare setting.
    schema:
        The schema holding snapstate's tables (created by :meth:`setup` if missing).
    prepare:
        Prepare a statement on a server session at its second use there, under a name made of
        its text (psycopg's own numbered prepared statements are never used). Safe behind
        PgBouncer in transaction pooling mode; ``False`` there saves the round trips of
        statements prepared on one server session and missing on the next.
    max_connections, pool_timeout:
        Size of the owned pool, and how long a call waits for a free connection.
    connect_timeout:
        Seconds to wait for the server when connecting. A server that refuses connections fails
        a call at once with :class:`~snapstate.StoreUnavailableError`.
    server_timeout:
        Seconds a call waits for the server's reply before snapstate tries a new connection to
        it (default 15). If the server answers, the call goes on waiting (a long statement is
        not cut short) and is checked again after as long; if it does not answer within
        ``connect_timeout`` either, the call fails with
        :class:`~snapstate.StoreUnavailableError` instead of waiting for ever on a server that
        hangs. None: no check.
    retry:
        When a connection is lost during a call (or the server reports a deadlock or a
        serialization failure), run the call once more on a fresh connection. Every call is
        safe to repeat: reads trivially, writes because a batch stored twice leaves the same
        rows. Does not apply to a single given connection.
    write_concurrency:
        How many write transactions the ``sync`` writer runs side by side; callers beyond that
        share group commits. The default, None, means 2 on a pool (at most its size) and 1 on a
        single connection (which cannot run more). 1 favours group commit when many threads
        of a process write at once; 2 lets a LangGraph step's pending writes and checkpoint
        commit together instead of one after the other.
    """

    name = "postgres"

    def __init__(
        self,
        conninfo: str | psycopg.Connection[Any] | Any,
        *,
        schema: str = "public",
        prepare: bool = True,
        max_connections: int = 8,
        pool_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        retry: bool = True,
        write_concurrency: int | None = None,
        server_timeout: float | None = SERVER_TIMEOUT,
    ) -> None:
        self._cfg = _Config(
            conninfo,
            schema=schema,
            prepare=prepare,
            max_connections=max_connections,
            pool_timeout=pool_timeout,
            connect_timeout=connect_timeout,
            retry=retry,
            server_timeout=server_timeout,
        )
        self._q = self._cfg.statements
        self._stored = sql.StoredPayloads()
        self._conninfo: str | None = None
        self._shared: psycopg.Connection[Any] | None = None
        self._shared_lock = threading.RLock()
        self._pool: Any = None
        self._owned = False
        self._pool_lock = threading.Lock()
        self._idle_since: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        #: Per pool, its count of failed connection attempts when this backend last found the
        #: server answering (see _checkout).
        self._pool_errors: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._closed = False
        if isinstance(conninfo, str):
            self._conninfo = conninfo
            self._owned = True
        elif isinstance(conninfo, psycopg.Connection):
            self._shared = conninfo
        elif psycopg_pool is not None and isinstance(conninfo, psycopg_pool.ConnectionPool):
            self._pool = conninfo
        elif isinstance(conninfo, psycopg.AsyncConnection) or (
            psycopg_pool is not None and isinstance(conninfo, psycopg_pool.AsyncConnectionPool)
        ):
            raise ConfigurationError(
                f"PostgresBackend needs a synchronous connection or pool, got "
                f"{type(conninfo).__name__}",
                hint="use AsyncPostgresBackend with asyncio connections and pools",
            )
        else:
            raise ConfigurationError(
                "PostgresBackend takes a conninfo string, a psycopg.Connection or a "
                f"psycopg_pool.ConnectionPool, got {type(conninfo).__name__}"
            )
        self.write_concurrency = _write_concurrency(
            self._shared, self._pool, max_connections, write_concurrency
        )
        _forksafe.track(self)

    # -- connections ---------------------------------------------------------------------------

    def _start_in_child(self) -> None:
        """In a forked child, while it has one thread: locks of its own (the parent's may be
        held, at the fork, by a thread the child does not have) and, for a pool of its own
        making, none of the parent's: the child opens its own on first use."""
        self._shared_lock = threading.RLock()
        self._pool_lock = threading.Lock()
        if self._owned and self._pool is not None:
            _FORKED_AWAY.append(self._pool)  # the parent's: leave its sockets alone
            self._pool = None

    def _own_pool(self) -> Any:
        pool = self._pool
        if pool is not None:
            return pool
        with self._pool_lock:
            if self._pool is None:
                if psycopg_pool is None:  # pragma: no cover
                    raise ConfigurationError(
                        "a conninfo string needs psycopg_pool", hint="pip install psycopg_pool"
                    )
                assert self._conninfo is not None
                pool = psycopg_pool.ConnectionPool(
                    self._conninfo,
                    min_size=1,
                    max_size=self._cfg.max_connections,
                    kwargs=self._cfg.connect_kwargs(self._conninfo),
                    check=self._check_idle,
                    timeout=self._cfg.pool_timeout,
                    name="snapstate",
                    open=False,
                )
                pool.open(wait=False)
                # Published only once open: other threads take self._pool without the lock.
                self._pool = pool
            return self._pool

    def _check_idle(self, conn: psycopg.Connection[Any]) -> None:
        if monotonic() - self._idle_since.get(conn, 0.0) > IDLE_CHECK_AFTER:
            with self._cfg.watch(conn):
                conn.execute("")

    def _checkout(self, pool: Any, what: str) -> psycopg.Connection[Any]:
        deadline = monotonic() + self._cfg.pool_timeout
        while True:
            remaining = deadline - monotonic()
            try:
                return pool.getconn(timeout=max(min(remaining, _PROBE_EVERY), 0.001))  # type: ignore[no-any-return]
            except psycopg_pool.PoolClosed:
                raise StoreUnavailableError(
                    f"the connection pool for {self._cfg.where} is closed while {what}",
                    hint="open the pool (pool.open()) before handing it to snapstate",
                ) from None
            except psycopg_pool.PoolTimeout:
                pass
            # Looked at only while waiting (reading the pool's stats costs a copy of them).
            if _pool_errors(pool) != self._pool_errors.get(pool, 0):
                reason = self._probe(pool)
                if reason is not None:
                    raise _unavailable(self._cfg, what, reason) from None
                self._pool_errors[pool] = _pool_errors(pool)
            if monotonic() >= deadline:
                raise _pool_busy(self._cfg, what, pool) from None

    def _probe(self, pool: Any) -> str | None:
        """Why the server cannot be reached, or None if a direct connection works."""
        args = _probe_kwargs(pool, self._cfg)
        if args is None:
            return None
        try:
            psycopg.connect(args[0], **args[1]).close()
        except psycopg.Error as exc:
            return first_line(exc)
        return None

    def _connection(self, what: str) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]:
        """The connection a call runs on, for the length of a ``with`` block."""
        if self._owned:
            return _Lease(self, what)
        return self._given_connection(what)

    @contextlib.contextmanager
    def _given_connection(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """:meth:`_connection` on a connection or pool handed to snapstate."""
        if self._closed:
            raise _closed_error(self._cfg)
        if self._shared is not None:
            with self._shared_lock:
                conn = self._shared
                if conn.closed:
                    raise StoreUnavailableError(
                        f"the connection to {self._cfg.where} given to snapstate is closed "
                        f"while {what}",
                        hint="pass a conninfo string or a pool, which replace lost connections",
                    )
                with _borrowed(conn, what):
                    yield conn
            return
        pool = self._pool
        conn = self._checkout(pool, what)
        try:
            with _borrowed(conn, what):
                yield conn
        finally:
            self._idle_since[conn] = monotonic()
            pool.putconn(conn)

    def _run(self, what: str, make: Callable[[], sql.Op[T]], *, transaction: bool = False) -> T:
        """Run an operation, retrying it once on a fresh connection if that is safe."""
        attempts = 2 if self._cfg.retry and self._shared is None else 1
        for attempt in range(attempts):
            with self._connection(what) as conn, self._cfg.watch(conn) as watch:
                try:
                    return self._drive(conn, make(), transaction)
                except psycopg.Error as exc:
                    last = attempt + 1 == attempts
                    lost = _failed(self._cfg, what, exc, conn, watch, last=last)
            if lost:
                # A server restart drops every idle connection: weed them out before retrying.
                with contextlib.suppress(Exception):
                    self._pool.check()
        raise AssertionError("unreachable")  # pragma: no cover

    def _drive(self, conn: psycopg.Connection[Any], op: sql.Op[T], transaction: bool) -> T:
        cur: psycopg.Cursor[Any] | None = None  # made for the first statement that needs one
        try:
            with conn.transaction() if transaction else contextlib.nullcontext():
                try:
                    stmt = next(op)
                    while True:
                        try:
                            call = stmt.direct_call()
                            result = (
                                None
                                if call is None
                                else direct.run(conn, *call, prepare=self._cfg.prepare)
                            )
                            if result is not None:
                                rows: list[Any] = direct.rows(conn, result) if stmt.fetch else []
                            else:
                                if cur is None:
                                    cur = conn.cursor(binary=True, row_factory=tuple_row)
                                # psycopg's own prepared statements are numbered per
                                # connection: behind a pooler one client's name may be
                                # another's statement. Only the direct path prepares.
                                cur.execute(stmt.sql, stmt.cursor_params(), prepare=False)
                                rows = cur.fetchall() if stmt.fetch else []
                        except psycopg.Error as exc:
                            if _is_lost(exc, conn):
                                raise
                            stmt = op.throw(exc)  # the operation may handle it
                        else:
                            stmt = op.send(rows)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
        finally:
            if cur is not None:
                cur.close()

    # -- the contract --------------------------------------------------------------------------

    def setup(self) -> None:
        self._run("applying schema migrations", lambda: sql.op_setup(self._q), transaction=True)

    def migration_status(self) -> list[MigrationStatus]:
        return self._run("reading applied migrations", lambda: sql.op_migration_status(self._q))

    def write(self, batch: WriteBatch) -> None:
        self._run("writing a batch", lambda: sql.op_write(self._q, batch, self._stored))

    def get_checkpoint(
        self, thread_id: str, namespace: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        return self._run(
            "reading a checkpoint",
            lambda: sql.op_get_checkpoint(self._q, thread_id, namespace, checkpoint_id),
        )

    def load(
        self, thread_id: str, namespace: str, checkpoint_id: str | None
    ) -> tuple[CheckpointRow, list[BlobRow], list[WriteRow]] | None:
        return self._run(
            "reading a checkpoint",
            lambda: sql.op_load(self._q, thread_id, namespace, checkpoint_id),
        )

    def list_checkpoints(self, query: ListQuery) -> Iterator[CheckpointRow]:
        # Rows hold no state bytes, so materializing them holds no connection while the caller
        # consumes the iterator.
        return iter(self._run("listing checkpoints", lambda: sql.op_list(self._q, query)))

    def get_blobs(
        self, thread_id: str, namespace: str, keys: Collection[tuple[str, str]]
    ) -> list[BlobRow]:
        return self._run(
            "reading channel values",
            lambda: sql.op_get_blobs(self._q, thread_id, namespace, keys),
        )

    def get_writes(
        self, thread_id: str, namespace: str, checkpoint_ids: Collection[str]
    ) -> list[WriteRow]:
        return self._run(
            "reading pending writes",
            lambda: sql.op_get_writes(self._q, thread_id, namespace, checkpoint_ids),
        )

    def delete_threads(self, thread_ids: Sequence[str]) -> None:
        now = time.time()
        self._run(
            "deleting threads",
            lambda: sql.op_delete_threads(self._q, thread_ids, now),
            transaction=True,
        )

    def delete_idle_threads(self, thread_ids: Sequence[str], idle_before: float) -> list[str]:
        now = time.time()
        return self._run(
            "deleting idle threads",
            lambda: sql.op_delete_idle_threads(self._q, thread_ids, idle_before, now),
            transaction=True,
        )

    def purge_tombstones(self, deleted_before: float) -> int:
        return self._run(
            "purging tombstones", lambda: sql.op_purge_tombstones(self._q, deleted_before)
        )

    def blob_index(self, thread_id: str) -> list[BlobRef]:
        return self._run("indexing blobs", lambda: sql.op_blob_index(self._q, thread_id))

    def blob_counts(self, thread_ids: Sequence[str]) -> dict[str, int]:
        return self._run("counting blobs", lambda: sql.op_blob_counts(self._q, thread_ids))

    def delete_rows(
        self,
        thread_id: str,
        checkpoints: Collection[tuple[str, str]],
        blobs: Collection[tuple[str, str, str]],
    ) -> int:
        return self._run(
            "deleting checkpoints and blobs",
            lambda: sql.op_delete_rows(self._q, thread_id, checkpoints, blobs),
            transaction=True,
        )

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(
            "copying a thread",
            lambda: sql.op_copy_thread(self._q, source_thread_id, target_thread_id),
            transaction=True,
        )

    def threads(self, *, idle_before: float | None = None) -> list[ThreadInfo]:
        return self._run("listing threads", lambda: sql.op_threads(self._q, idle_before))

    def stats(self) -> TableStats:
        return self._run("gathering statistics", lambda: sql.op_stats(self._q))

    def close(self) -> None:
        """Close the pool this backend owns; a given connection or pool stays open."""
        self._closed = True
        with self._pool_lock:
            pool, owned = self._pool, self._owned
            if owned:
                self._pool = None
        if owned and pool is not None:
            pool.close()

    def __repr__(self) -> str:
        return f"PostgresBackend({self._cfg.where!r}, schema={self._cfg.schema!r})"


@contextlib.contextmanager
def _borrowed(conn: psycopg.Connection[Any], what: str) -> Iterator[None]:
    """Autocommit for the length of one call on a connection snapstate does not own."""
    _check_borrowed(conn, what)
    restore = not conn.autocommit
    if restore:
        conn.autocommit = True
    try:
        yield
    finally:
        if restore and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.autocommit = False


# -- asyncio -----------------------------------------------------------------------------------


class AsyncPostgresBackend(AsyncBackend):
    """The asyncio twin of :class:`PostgresBackend`, on psycopg's native async I/O.

    Takes a conninfo string (an ``AsyncConnectionPool`` is opened on first use, in the running
    event loop), a ``psycopg.AsyncConnection`` (used behind an ``asyncio.Lock``) or a
    ``psycopg_pool.AsyncConnectionPool`` (used without a lock). Other parameters as for
    :class:`PostgresBackend`. Use it from one event loop.
    """

    name = "postgres"

    def __init__(
        self,
        conninfo: str | psycopg.AsyncConnection[Any] | Any,
        *,
        schema: str = "public",
        prepare: bool = True,
        max_connections: int = 8,
        pool_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        retry: bool = True,
        write_concurrency: int | None = None,
        server_timeout: float | None = SERVER_TIMEOUT,
    ) -> None:
        self._cfg = _Config(
            conninfo,
            schema=schema,
            prepare=prepare,
            max_connections=max_connections,
            pool_timeout=pool_timeout,
            connect_timeout=connect_timeout,
            retry=retry,
            server_timeout=server_timeout,
        )
        self._q = self._cfg.statements
        self._stored = sql.StoredPayloads()
        self._conninfo: str | None = None
        self._shared: psycopg.AsyncConnection[Any] | None = None
        self._shared_lock: asyncio.Lock | None = None
        self._pool: Any = None
        self._owned = False
        self._pool_lock: asyncio.Lock | None = None
        self._idle_since: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        #: Per pool, its count of failed connection attempts when this backend last found the
        #: server answering (see _checkout).
        self._pool_errors: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._closed = False
        if isinstance(conninfo, str):
            self._conninfo = conninfo
            self._owned = True
        elif isinstance(conninfo, psycopg.AsyncConnection):
            self._shared = conninfo
        elif psycopg_pool is not None and isinstance(conninfo, psycopg_pool.AsyncConnectionPool):
            self._pool = conninfo
        elif isinstance(conninfo, psycopg.Connection) or (
            psycopg_pool is not None and isinstance(conninfo, psycopg_pool.ConnectionPool)
        ):
            raise ConfigurationError(
                f"AsyncPostgresBackend needs an asyncio connection or pool, got "
                f"{type(conninfo).__name__}",
                hint="use PostgresBackend with synchronous connections and pools",
            )
        else:
            raise ConfigurationError(
                "AsyncPostgresBackend takes a conninfo string, a psycopg.AsyncConnection or a "
                f"psycopg_pool.AsyncConnectionPool, got {type(conninfo).__name__}"
            )
        self.write_concurrency = _write_concurrency(
            self._shared, self._pool, max_connections, write_concurrency
        )

    # -- connections ---------------------------------------------------------------------------

    async def _own_pool(self) -> Any:
        if self._pool is not None:
            return self._pool
        if self._pool_lock is None:
            self._pool_lock = asyncio.Lock()
        async with self._pool_lock:
            if self._pool is None:
                if psycopg_pool is None:  # pragma: no cover
                    raise ConfigurationError(
                        "a conninfo string needs psycopg_pool", hint="pip install psycopg_pool"
                    )
                assert self._conninfo is not None
                pool = psycopg_pool.AsyncConnectionPool(
                    self._conninfo,
                    min_size=1,
                    max_size=self._cfg.max_connections,
                    kwargs=self._cfg.connect_kwargs(self._conninfo),
                    check=self._check_idle,
                    timeout=self._cfg.pool_timeout,
                    name="snapstate",
                    open=False,
                )
                await pool.open(wait=False)
                self._pool = pool
            return self._pool

    async def _check_idle(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if monotonic() - self._idle_since.get(conn, 0.0) > IDLE_CHECK_AFTER:
            with self._cfg.watch(conn):
                await conn.execute("")

    async def _checkout(self, pool: Any, what: str) -> psycopg.AsyncConnection[Any]:
        deadline = monotonic() + self._cfg.pool_timeout
        while True:
            remaining = deadline - monotonic()
            try:
                return await pool.getconn(timeout=max(min(remaining, _PROBE_EVERY), 0.001))  # type: ignore[no-any-return]
            except psycopg_pool.PoolClosed:
                raise StoreUnavailableError(
                    f"the connection pool for {self._cfg.where} is closed while {what}",
                    hint="open the pool (await pool.open()) before handing it to snapstate",
                ) from None
            except psycopg_pool.PoolTimeout:
                pass
            # Looked at only while waiting (reading the pool's stats costs a copy of them).
            if _pool_errors(pool) != self._pool_errors.get(pool, 0):
                reason = await self._probe(pool)
                if reason is not None:
                    raise _unavailable(self._cfg, what, reason) from None
                self._pool_errors[pool] = _pool_errors(pool)
            if monotonic() >= deadline:
                raise _pool_busy(self._cfg, what, pool) from None

    async def _probe(self, pool: Any) -> str | None:
        args = _probe_kwargs(pool, self._cfg)
        if args is None:
            return None
        try:
            conn = await psycopg.AsyncConnection.connect(args[0], **args[1])
        except psycopg.Error as exc:
            return first_line(exc)
        await conn.close()
        return None

    def _connection(
        self, what: str
    ) -> contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        """The connection a call runs on, for the length of an ``async with`` block."""
        if self._owned:
            return _AsyncLease(self, what)
        return self._given_connection(what)

    @contextlib.asynccontextmanager
    async def _given_connection(self, what: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """:meth:`_connection` on a connection or pool handed to snapstate."""
        if self._closed:
            raise _closed_error(self._cfg)
        if self._shared is not None:
            if self._shared_lock is None:
                self._shared_lock = asyncio.Lock()
            async with self._shared_lock:
                conn = self._shared
                if conn.closed:
                    raise StoreUnavailableError(
                        f"the connection to {self._cfg.where} given to snapstate is closed "
                        f"while {what}",
                        hint="pass a conninfo string or a pool, which replace lost connections",
                    )
                async with _aborrowed(conn, what):
                    yield conn
            return
        pool = self._pool
        conn = await self._checkout(pool, what)
        try:
            async with _aborrowed(conn, what):
                yield conn
        finally:
            self._idle_since[conn] = monotonic()
            await pool.putconn(conn)

    async def _run(
        self, what: str, make: Callable[[], sql.Op[T]], *, transaction: bool = False
    ) -> T:
        attempts = 2 if self._cfg.retry and self._shared is None else 1
        for attempt in range(attempts):
            async with self._connection(what) as conn:
                with self._cfg.watch(conn) as watch:
                    try:
                        return await self._drive(conn, make(), transaction)
                    except psycopg.Error as exc:
                        last = attempt + 1 == attempts
                        lost = _failed(self._cfg, what, exc, conn, watch, last=last)
            if lost:
                # A server restart drops every idle connection: weed them out before retrying.
                with contextlib.suppress(Exception):
                    await self._pool.check()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _drive(
        self, conn: psycopg.AsyncConnection[Any], op: sql.Op[T], transaction: bool
    ) -> T:
        cur: psycopg.AsyncCursor[Any] | None = None
        try:
            async with conn.transaction() if transaction else _anull():
                try:
                    stmt = next(op)
                    while True:
                        try:
                            call = stmt.direct_call()
                            result = (
                                None
                                if call is None
                                else await direct.run_async(conn, *call, prepare=self._cfg.prepare)
                            )
                            if result is not None:
                                rows: list[Any] = direct.rows(conn, result) if stmt.fetch else []
                            else:
                                if cur is None:
                                    cur = conn.cursor(binary=True, row_factory=tuple_row)
                                # Only the direct path prepares (see the sync twin).
                                await cur.execute(stmt.sql, stmt.cursor_params(), prepare=False)
                                rows = await cur.fetchall() if stmt.fetch else []
                        except psycopg.Error as exc:
                            if _is_lost(exc, conn):
                                raise
                            stmt = op.throw(exc)  # the operation may handle it
                        else:
                            stmt = op.send(rows)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
        finally:
            if cur is not None:
                await cur.close()

    # -- the contract --------------------------------------------------------------------------

    async def setup(self) -> None:
        await self._run(
            "applying schema migrations", lambda: sql.op_setup(self._q), transaction=True
        )

    async def migration_status(self) -> list[MigrationStatus]:
        return await self._run(
            "reading applied migrations", lambda: sql.op_migration_status(self._q)
        )

    async def write(self, batch: WriteBatch) -> None:
        await self._run("writing a batch", lambda: sql.op_write(self._q, batch, self._stored))

    async def get_checkpoint(
        self, thread_id: str, namespace: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        return await self._run(
            "reading a checkpoint",
            lambda: sql.op_get_checkpoint(self._q, thread_id, namespace, checkpoint_id),
        )

    async def load(
        self, thread_id: str, namespace: str, checkpoint_id: str | None
    ) -> tuple[CheckpointRow, list[BlobRow], list[WriteRow]] | None:
        return await self._run(
            "reading a checkpoint",
            lambda: sql.op_load(self._q, thread_id, namespace, checkpoint_id),
        )

    async def list_checkpoints(self, query: ListQuery) -> list[CheckpointRow]:
        return await self._run("listing checkpoints", lambda: sql.op_list(self._q, query))

    async def get_blobs(
        self, thread_id: str, namespace: str, keys: Collection[tuple[str, str]]
    ) -> list[BlobRow]:
        return await self._run(
            "reading channel values",
            lambda: sql.op_get_blobs(self._q, thread_id, namespace, keys),
        )

    async def get_writes(
        self, thread_id: str, namespace: str, checkpoint_ids: Collection[str]
    ) -> list[WriteRow]:
        return await self._run(
            "reading pending writes",
            lambda: sql.op_get_writes(self._q, thread_id, namespace, checkpoint_ids),
        )

    async def delete_threads(self, thread_ids: Sequence[str]) -> None:
        now = time.time()
        await self._run(
            "deleting threads",
            lambda: sql.op_delete_threads(self._q, thread_ids, now),
            transaction=True,
        )

    async def delete_idle_threads(self, thread_ids: Sequence[str], idle_before: float) -> list[str]:
        now = time.time()
        return await self._run(
            "deleting idle threads",
            lambda: sql.op_delete_idle_threads(self._q, thread_ids, idle_before, now),
            transaction=True,
        )

    async def purge_tombstones(self, deleted_before: float) -> int:
        return await self._run(
            "purging tombstones", lambda: sql.op_purge_tombstones(self._q, deleted_before)
        )

    async def blob_index(self, thread_id: str) -> list[BlobRef]:
        return await self._run("indexing blobs", lambda: sql.op_blob_index(self._q, thread_id))

    async def blob_counts(self, thread_ids: Sequence[str]) -> dict[str, int]:
        return await self._run("counting blobs", lambda: sql.op_blob_counts(self._q, thread_ids))

    async def delete_rows(
        self,
        thread_id: str,
        checkpoints: Collection[tuple[str, str]],
        blobs: Collection[tuple[str, str, str]],
    ) -> int:
        return await self._run(
            "deleting checkpoints and blobs",
            lambda: sql.op_delete_rows(self._q, thread_id, checkpoints, blobs),
            transaction=True,
        )

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._run(
            "copying a thread",
            lambda: sql.op_copy_thread(self._q, source_thread_id, target_thread_id),
            transaction=True,
        )

    async def threads(self, *, idle_before: float | None = None) -> list[ThreadInfo]:
        return await self._run("listing threads", lambda: sql.op_threads(self._q, idle_before))

    async def stats(self) -> TableStats:
        return await self._run("gathering statistics", lambda: sql.op_stats(self._q))

    async def close(self) -> None:
        """Close the pool this backend owns; a given connection or pool stays open."""
        self._closed = True
        pool, self._pool = (self._pool, None) if self._owned else (None, self._pool)
        if pool is not None:
            await pool.close()

    def __repr__(self) -> str:
        return f"AsyncPostgresBackend({self._cfg.where!r}, schema={self._cfg.schema!r})"


@contextlib.asynccontextmanager
async def _aborrowed(conn: psycopg.AsyncConnection[Any], what: str) -> AsyncIterator[None]:
    _check_borrowed(conn, what)
    restore = not conn.autocommit
    if restore:
        await conn.set_autocommit(True)
    try:
        yield
    finally:
        if restore and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                await conn.set_autocommit(False)


@contextlib.asynccontextmanager
async def _anull() -> AsyncIterator[None]:
    yield
