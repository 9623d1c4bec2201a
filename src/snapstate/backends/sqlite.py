"""The embedded default: one SQLite file.

The store configures its own connections: every connection it opens (or is given) gets a busy
timeout, WAL journaling and the ``synchronous`` level chosen here, so several threads and
processes can share one file without "database is locked" errors. Every write is one
``BEGIN IMMEDIATE`` transaction, rolled back on any error: taking the write lock up front means a
writer waits in the busy handler instead of failing half-way when another writer commits first.

Small writes (a ``put`` or ``put_writes`` of the ``sync`` writer) go through a compiled connection
of the backend's own, ``snapstate.backends._sqlite_native``, which runs their few statements
holding the GIL instead of handing it to other threads around each one. It never waits holding
the GIL: when another connection holds the write lock, the write goes through ``sqlite3`` and its
busy handler instead. Larger batches, ``synchronous`` ``full``/``extra`` (where a commit waits for
the disk), ``SNAPSTATE_IMPL=python`` and builds without the module always use ``sqlite3``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from types import ModuleType
from typing import Any, Literal, Protocol

import msgspec

from .. import _forksafe
from ..codec._api import requested_impl
from ..codec._format import raw_size
from ..errors import (
    ConfigurationError,
    MigrationError,
    SchemaVersionError,
    StorageError,
    StoreUnavailableError,
)
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
    batch_bytes,
    batch_threads,
    check_payloads,
    check_tombstones,
    checkpoint_values,
    delta_bases,
    key_conditions,
    missing_base,
    payload_value_sql,
    shared_payload_bytes_sql,
    stored_row,
)

__all__ = ["SqliteBackend", "MIGRATIONS", "file_of"]

Synchronous = Literal["off", "normal", "full", "extra"]

#: Rows per ``IN (...)``/``VALUES`` list; SQLite allows 32766 bound variables per statement.
_CHUNK = 400

#: Commits between two WAL checkpoints. A background thread runs them (PASSIVE: it never waits
#: for or blocks a writer), so that no commit pays for one. SQLite's own default is a checkpoint
#: run by whichever commit takes the WAL past 1000 pages; under ``synchronous=NORMAL`` that
#: checkpoint fsyncs the WAL and the database file. A chat step's two commits write about 10
#: pages (measured: 1805 WAL frames for one 100-step LangGraph chat thread), so 200 commits is
#: about SQLite's default interval. Measured on this project's CI machine type, replaying a
#: LangGraph chat thread's puts (1000 steps, three runs): a commit's mean went from 55-58 us to
#: 26-28 us (median 22 us and 23-24 us, slowest 4.2-4.6 ms and 0.3 ms); besides, 10 or 11
#: commits per 1000 steps copied a tail, about 2.1 ms each.
_CHECKPOINT_EVERY = 200
#: The background checkpointer also wakes this often (seconds), so that a WAL grown by other
#: writers of a shared connection is checkpointed too.
_CHECKPOINT_IDLE = 1.0
#: If that many commits pass without a finished background checkpoint (the thread cannot keep
#: up), the committing connection runs a PASSIVE checkpoint itself: the WAL stays bounded.
_CHECKPOINT_INLINE_AFTER = 20 * _CHECKPOINT_EVERY
#: While commits keep coming, the WAL grows to about this many frames (pages: 32 MB at SQLite's
#: default 4 KB) before a commit copies the tail a background checkpoint left behind, so that
#: the WAL starts over (see :meth:`_WalCheckpointer.committed`). A tail is everything
#: committed during the thread's checkpoint, and copying it ends with an fsync of the database
#: file, in the committing thread: under a steady stream of commits it took about 40% as long
#: as the thread's own checkpoint (10 to 30 ms on a slow disk). Starting the WAL over after
#: every background checkpoint kept it near 10 MB and paid that copy every 200 commits; at this
#: size, 20 chat threads' calls in a row copied 3 tails instead of 18 (docs/backends.md has the
#: benchmark).
_WAL_RESTART_FRAMES = 8192
#: Another process committing meanwhile defeats that copy: a write must begin while the WAL is
#: fully copied to start it over, and with several processes committing steadily none does (4
#: processes of 8000 puts each grew it to 1 GB). A WAL of this many frames is started over by
#: the thread itself: a RESTART checkpoint holds new writers back, waits up to
#: :data:`_RESTART_WAIT` seconds for the writer in progress and for readers of the WAL to
#: finish, copies what is left, and leaves the WAL to start over at the next write. If it cannot
#: within that wait, it has copied what it could, and the next background checkpoint tries again.
_WAL_FORCE_RESTART_FRAMES = 2 * _WAL_RESTART_FRAMES
_RESTART_WAIT = 0.1

#: Batches up to this many rows and bytes (:func:`~snapstate.backends._base.batch_bytes`) are
#: written through the compiled connection, holding the GIL: a ``sync`` put or put_writes of a
#: chat step is 1 to 4 rows of a few KB. A larger batch (the ``batched`` writer's) goes through
#: ``sqlite3``, which lets other threads run while SQLite works.
_HOLD_MAX_ROWS = 64
_HOLD_MAX_BYTES = 256 * 1024
#: SQLite's primary result codes for a lock held elsewhere.
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_FULL = 13  # the disk is full, or the database reached PRAGMA max_page_count


def _pick_native() -> ModuleType | None:
    """The compiled connection module, if small writes may go through it (once, at import).

    ``SNAPSTATE_IMPL=python`` turns it off; ``SNAPSTATE_IMPL=native`` requires it, as it
    requires the compiled codec.
    """
    wanted = requested_impl()
    if wanted == "python":
        return None
    module: ModuleType | None = None
    try:
        import _sqlite3

        from . import _sqlite_native
    except ImportError as exc:
        reason = str(exc)
    else:
        reason = _sqlite_native.load(getattr(_sqlite3, "__file__", None))
        if not reason:
            module = _sqlite_native
    if module is None and wanted == "native":
        raise ImportError(
            "SNAPSTATE_IMPL=native, but the compiled SQLite connection "
            f"snapstate.backends._sqlite_native cannot be used ({reason}). Build it with "
            "`python setup.py build_ext --inplace` (or install a wheel), or unset SNAPSTATE_IMPL."
        )
    return module


_NATIVE = _pick_native()


class _Statements(Protocol):
    """What a write needs of a connection (``sqlite3``'s, through :class:`_PyStatements`, or
    the compiled one)."""

    def query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any: ...


class _PyStatements:
    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        return self.conn.executemany(sql, rows)


#: Numbered, named schema migrations. Each runs once, inside the setup transaction, and is
#: recorded in ``schema_migrations``. Never edit a released entry: append a new one.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "create checkpoints, blobs and writes",
        """
        CREATE TABLE checkpoints (
            thread_id     TEXT NOT NULL,
            namespace     TEXT NOT NULL,
            checkpoint_id TEXT NOT NULL,
            parent_id     TEXT,
            run_id        TEXT,
            created_at    REAL NOT NULL,
            metadata      TEXT NOT NULL,
            skeleton      BLOB NOT NULL,
            PRIMARY KEY (thread_id, namespace, checkpoint_id)
        ) WITHOUT ROWID;
        CREATE INDEX checkpoints_by_id ON checkpoints (checkpoint_id);
        CREATE INDEX checkpoints_by_run ON checkpoints (run_id) WHERE run_id IS NOT NULL;
        CREATE TABLE blobs (
            thread_id TEXT NOT NULL,
            namespace TEXT NOT NULL,
            channel   TEXT NOT NULL,
            version   TEXT NOT NULL,
            kind      INTEGER NOT NULL,
            base      TEXT,
            data      BLOB NOT NULL,
            PRIMARY KEY (thread_id, namespace, channel, version)
        );
        CREATE TABLE writes (
            thread_id     TEXT NOT NULL,
            namespace     TEXT NOT NULL,
            checkpoint_id TEXT NOT NULL,
            task_id       TEXT NOT NULL,
            idx           INTEGER NOT NULL,
            channel       TEXT NOT NULL,
            task_path     TEXT NOT NULL,
            data          BLOB NOT NULL,
            PRIMARY KEY (thread_id, namespace, checkpoint_id, task_id, idx)
        );
        CREATE TABLE settings (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        """,
    ),
    (
        2,
        "tombstones of deleted threads",
        """
        CREATE TABLE tombstones (
            thread_id         TEXT PRIMARY KEY,
            max_checkpoint_id TEXT NOT NULL,
            deleted_at        REAL NOT NULL
        );
        """,
    ),
    (
        3,
        "store each large value once per thread",
        # A value of PAYLOAD_MIN_BYTES or more goes to payloads under its SHA-256; its write or
        # blob row names it in ``payload`` and keeps an empty ``data``. Existing rows keep their
        # data (the new columns are NULL for them); adding a column rewrites nothing.
        """
        CREATE TABLE payloads (
            thread_id TEXT NOT NULL,
            digest    BLOB NOT NULL,
            data      BLOB NOT NULL,
            PRIMARY KEY (thread_id, digest)
        );
        ALTER TABLE blobs ADD COLUMN payload BLOB;
        ALTER TABLE writes ADD COLUMN payload BLOB;
        CREATE INDEX blobs_by_payload ON blobs (thread_id, payload) WHERE payload IS NOT NULL;
        CREATE INDEX writes_by_payload ON writes (thread_id, payload) WHERE payload IS NOT NULL;
        """,
    ),
)

_CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
)
"""

_CHECKPOINT_COLUMNS = (
    "thread_id, namespace, checkpoint_id, parent_id, run_id, created_at, metadata, skeleton"
)
_WRITE_COLUMNS = "thread_id, namespace, checkpoint_id, task_id, idx, channel, task_path, data"
_WRITE_STORED = _WRITE_COLUMNS + ", payload"
_BLOB_STORED = "thread_id, namespace, channel, version, kind, base, data, payload"
# The value of the blob row ``b`` and of the write row ``w``, from the row or its payload.
_BLOB_VALUE = payload_value_sql("b")
_WRITE_VALUE = payload_value_sql("w")


#: Payloads of a thread that no row names any more (retention runs it after deleting rows).
#: Its three ``?`` all take the thread id. (Numbered ``?1`` placeholders count as named ones
#: for ``sqlite3``: from Python 3.14 it refuses them with a sequence of parameters.)
_COLLECT_PAYLOADS = (
    "DELETE FROM payloads WHERE thread_id = ? "
    "AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.thread_id = ? AND b.payload = payloads.digest) "
    "AND NOT EXISTS (SELECT 1 FROM writes w WHERE w.thread_id = ? "
    "AND w.payload = payloads.digest)"
)


def _checkpoint_row(r: tuple[Any, ...]) -> CheckpointRow:
    return CheckpointRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6].encode(), r[7])


def _checkpoint_query(
    thread_id: str, namespace: str, checkpoint_id: str | None
) -> tuple[str, tuple[str, ...]]:
    """The statement and parameters reading a checkpoint row (the latest for None)."""
    if checkpoint_id is None:
        return (
            f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints "
            "WHERE thread_id = ? AND namespace = ? ORDER BY checkpoint_id DESC LIMIT 1",
            (thread_id, namespace),
        )
    return (
        f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints "
        "WHERE thread_id = ? AND namespace = ? AND checkpoint_id = ?",
        (thread_id, namespace, checkpoint_id),
    )


def _select_writes(
    conn: sqlite3.Connection, thread_id: str, namespace: str, checkpoint_ids: list[str]
) -> list[WriteRow]:
    """Pending writes of those checkpoints, read on ``conn`` (payloads not yet checked)."""
    out: list[WriteRow] = []
    for chunk in _chunks(checkpoint_ids, _CHUNK):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT w.thread_id, w.namespace, w.checkpoint_id, w.task_id, w.idx, w.channel, "
            f"w.task_path, {_WRITE_VALUE} FROM writes w WHERE w.thread_id = ? "
            f"AND w.namespace = ? AND w.checkpoint_id IN ({marks})",
            [thread_id, namespace, *chunk],
        )
        out.extend(WriteRow(*r) for r in rows)
    return out


#: Every live checkpointer thread, so that a fork waits until none of them is inside SQLite.
_CHECKPOINTERS: weakref.WeakSet[_WalCheckpointer] = weakref.WeakSet()


def _before_fork() -> None:
    # A thread inside SQLite at the moment of fork() may hold one of SQLite's process-wide
    # mutexes, which then stays locked forever in the child: its first sqlite3.connect()
    # hangs. Hold every checkpointer between two of its SQLite calls until the fork is done.
    for cp in list(_CHECKPOINTERS):
        cp.in_sqlite.acquire()


def _after_fork() -> None:
    for cp in list(_CHECKPOINTERS):
        if cp.in_sqlite.locked():
            cp.in_sqlite.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork
    )


class _Gate:
    """Counts the threads inside SQLite through a backend: ``fork()`` waits until there are
    none, and holds new ones back until it is done.

    Besides SQLite's own mutexes, a process keeps the lock state of its connections to a file
    in memory the child inherits. A fork while one of them is inside a transaction (the write
    lock taken, say) leaves the child believing a connection of its own holds that lock: its
    writes then wait for it until their busy timeout, and fail. A thread already inside may
    enter again (a commit runs its WAL bookkeeping on a pooled connection) without waiting.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._inside = 0
        self._forking = False
        self._depth = threading.local()

    def __enter__(self) -> None:
        depth = getattr(self._depth, "n", 0)
        with self._lock:
            while self._forking and not depth:
                self._cv.wait()
            self._inside += 1
        self._depth.n = depth + 1

    def __exit__(self, *exc: object) -> None:
        self._depth.n -= 1
        with self._lock:
            self._inside -= 1
            if self._forking and not self._inside:
                self._cv.notify_all()

    def before_fork(self) -> None:
        own = getattr(self._depth, "n", 0)  # never wait for the forking thread itself
        with self._lock:
            self._forking = True
            while self._inside > own:
                self._cv.wait()

    def after_fork_in_parent(self) -> None:
        with self._lock:
            self._forking = False
            self._cv.notify_all()


_GATE = _Gate()


@_forksafe.on_fork
def _gate_in_child() -> None:
    global _GATE
    _GATE = _Gate()  # the child has none of the parent's threads, inside or waiting


# Registered after the checkpointers' hook, so that it runs before it (fork runs the "before"
# hooks in reverse order): a commit inside the gate may be waiting for a checkpointer.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=lambda: _GATE.before_fork(), after_in_parent=lambda: _GATE.after_fork_in_parent()
    )


class _WalCheckpointer:
    """Runs the WAL checkpoints of one database file in a background thread.

    Every connection the backend configures has ``wal_autocheckpoint`` off; the backend calls
    :meth:`committed` after each commit, and every :data:`_CHECKPOINT_EVERY` commits (or
    :data:`_CHECKPOINT_IDLE` seconds) this thread runs ``PRAGMA wal_checkpoint(PASSIVE)`` on a
    connection of its own; when the WAL has grown past :data:`_WAL_FORCE_RESTART_FRAMES`, a
    ``RESTART`` one after it. A checkpoint copies committed pages from the WAL into the database
    file; it never changes what a reader sees, and an interrupted one is simply redone, so
    stopping the thread at any point (interpreter exit included) loses nothing. The thread
    makes its SQLite calls holding ``in_sqlite``, which ``fork()`` waits for.
    """

    def __init__(self, path: str, busy_timeout: float) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        #: Commits since the thread last started a checkpoint (approximate: not locked).
        self.pending = 0
        #: Set by the thread when its checkpoint left frames behind for the next commit to
        #: copy: only once the WAL has grown past _WAL_RESTART_FRAMES.
        self.tail = False
        self.in_sqlite = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"snapstate-wal-checkpoint:{os.path.basename(path)}"
        )
        self._thread.daemon = True
        _CHECKPOINTERS.add(self)
        self._thread.start()

    def committed(self) -> bool:
        """Count a commit; whether its caller should run :meth:`checkpoint` now, on a connection
        of ``sqlite3`` (a checkpoint waits for the disk, so never holding the GIL)."""
        self.pending += 1
        if self.tail:
            # The thread has just copied the bulk of a WAL grown past _WAL_RESTART_FRAMES, and
            # commits made meanwhile left frames behind it. Copying them here leaves the WAL
            # fully checkpointed, so the next commit starts it over from its first frame
            # instead of growing it without end. Only under a steady stream of commits: when
            # none came during the thread's checkpoint, the next commit starts over by itself.
            self.tail = False
            return True
        if self.pending >= _CHECKPOINT_EVERY:
            self._wake.set()
            if self.pending >= _CHECKPOINT_INLINE_AFTER:
                # The thread is stuck or gone: checkpoint here, without waiting for anyone.
                self.pending = 0
                return True
        return False

    def catch_up(self, conn: sqlite3.Connection) -> None:
        """Run the checkpoint :meth:`committed` asked for, on ``conn``, after the one the thread
        may be running (SQLite runs one checkpoint at a time: started during the thread's, this
        one would copy nothing, and a writer that never lets go of the GIL could keep missing
        the thread's pauses). Nothing is committed meanwhile: the caller holds the write path."""
        if not self.in_sqlite.acquire(timeout=self.busy_timeout):
            return
        try:
            self.checkpoint(conn)
        finally:
            self.in_sqlite.release()

    @staticmethod
    def checkpoint(conn: sqlite3.Connection) -> int:
        """One PASSIVE checkpoint; the frames the WAL held (0: none, or it failed)."""
        try:
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            return 0
        return max(row[1], 0) if row is not None else 0

    @staticmethod
    def restart(conn: sqlite3.Connection) -> bool:
        """A RESTART checkpoint that waits at most :data:`_RESTART_WAIT` seconds; whether it
        copied everything (the next write then starts the WAL over)."""
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(_RESTART_WAIT * 1000)}")
            row = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        except sqlite3.Error:
            return False
        return row is not None and row[0] == 0

    def _run(self) -> None:
        try:
            with self.in_sqlite:
                conn = sqlite3.connect(
                    self.path,
                    timeout=self.busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
        except sqlite3.Error:
            return  # commits fall back to checkpointing inline
        try:
            while not self._stop.is_set():
                self._wake.wait(_CHECKPOINT_IDLE)
                self._wake.clear()
                if not self._stop.is_set():
                    self.pending = 0
                    with self.in_sqlite:
                        frames = self.checkpoint(conn)
                        restarted = frames >= _WAL_FORCE_RESTART_FRAMES and self.restart(conn)
                    # Commits made while it ran left frames behind it: once the WAL is large
                    # (and unless it was just started over), the next commit copies them, and
                    # the one after starts the WAL over.
                    self.tail = not restarted and self.pending > 0 and frames >= _WAL_RESTART_FRAMES
        finally:
            with self.in_sqlite:
                conn.close()
            _CHECKPOINTERS.discard(self)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self.busy_timeout)


class SqliteBackend(Backend):
    """Checkpoints in one SQLite file.

    Parameters
    ----------
    path:
        The database file (created if missing), or an open ``sqlite3.Connection`` to share. A
        shared connection is used behind a lock and configured the same way; it must not be in
        a transaction of its own when snapstate uses it.
    synchronous:
        SQLite's ``synchronous`` level in WAL mode. ``"normal"`` (the default): a committed
        transaction survives the process being killed at any point; after a power cut or an
        operating-system crash the last transactions before it may roll back, and the file stays
        consistent. ``"full"``: also survives power loss, at the price of an fsync per commit.
    busy_timeout:
        Seconds a writer waits for another process's write lock before giving up.

    WAL checkpoints (copying committed pages from the WAL into the database file) run in a
    background thread instead of inside whichever commit crosses SQLite's threshold, so a
    commit never waits for the checkpoint's fsyncs. A shared connection gets its
    ``wal_autocheckpoint`` setting back when the backend closes.
    """

    name = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str] | sqlite3.Connection,
        *,
        synchronous: Synchronous = "normal",
        busy_timeout: float = 30.0,
    ) -> None:
        if synchronous not in ("off", "normal", "full", "extra"):
            raise ConfigurationError(
                f"synchronous must be 'off', 'normal', 'full' or 'extra', got {synchronous!r}"
            )
        if (
            isinstance(busy_timeout, bool)
            or not isinstance(busy_timeout, (int, float))
            or not math.isfinite(busy_timeout)
            or busy_timeout < 0
        ):
            raise ConfigurationError(
                f"busy_timeout must be a finite number of seconds >= 0, got {busy_timeout!r}"
            )
        self.synchronous = synchronous
        self.busy_timeout = float(busy_timeout)
        self._shared: sqlite3.Connection | None = None
        self._shared_lock = threading.RLock()
        self._idle: list[sqlite3.Connection] = []
        self._all: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._closed = False
        self._checkpointer: _WalCheckpointer | None = None
        self._checkpointer_lock = threading.Lock()
        #: The shared connection's own ``wal_autocheckpoint``, restored by :meth:`close`.
        self._shared_autocheckpoint: int | None = None
        #: The database file (for a shared connection: the file behind it).
        self._file = ""
        #: The compiled connection small writes go through, and (without a shared connection)
        #: the lock that serializes its use.
        self._native: Any = None
        self._native_lock = threading.Lock()
        _forksafe.track(self)
        if isinstance(path, sqlite3.Connection):
            self._shared = path
            self._shared_autocheckpoint = path.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
            self._file = file_of(path)
            # Named in errors and repr: the file when there is one.
            self.path = f"<connection to {self._file}>" if self._file else "<connection>"
            self._configure(path)
        else:
            self.path = os.fspath(path)
            if self.path == ":memory:":
                raise ConfigurationError(
                    "an in-memory SQLite database is private to one connection",
                    hint="use 'memory://' for the in-memory backend, or a file (a temporary "
                    "one for tests): SQLite keeps checkpoints in WAL mode, which needs a file",
                )
            self._file = self.path

    # -- connections ---------------------------------------------------------------------------

    def _configure(self, conn: sqlite3.Connection) -> None:
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
            # Only an empty file can switch to incremental vacuum (retention gives space back
            # with PRAGMA incremental_vacuum), and switching to WAL below writes the header.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if mode.lower() != "wal":
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise ConfigurationError(
                    f"SQLite database {self.path!r} cannot use WAL journaling (got {mode!r})",
                    hint="an in-memory database has no WAL: pass a connection to a file, or use "
                    "'memory://' for the in-memory backend"
                    if mode.lower() == "memory"
                    else "WAL needs a local file system that supports shared memory",
                )
        conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        conn.execute("PRAGMA foreign_keys = OFF")
        if self._file:
            # Checkpoints run in the background (_WalCheckpointer), never inside a commit.
            conn.execute("PRAGMA wal_autocheckpoint = 0")

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreUnavailableError(
                f"cannot open SQLite database {self.path!r}: {exc}"
            ) from None
        # Configuring is idempotent, and on a file another connection is switching to WAL or
        # setting up, some of its lock waits fail at once with "database is locked" instead of
        # going through the busy handler: retry them within the busy timeout.
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.005
        while True:
            try:
                self._configure(conn)
                return conn
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                    conn.close()
                    raise _translate(exc, "configuring it", self.path) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.2)
            except sqlite3.Error as exc:
                conn.close()
                raise _translate(exc, "configuring it", self.path) from None

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise StoreUnavailableError(f"SQLite backend for {self.path!r} is closed")
        with _GATE:
            if self._shared is not None:
                with self._shared_lock:
                    yield self._shared
                return
            with self._pool_lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._connect()
                with self._pool_lock:
                    self._all.append(conn)
            try:
                yield conn
            finally:
                if conn.in_transaction:  # never hand out a connection mid-transaction
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                with self._pool_lock:
                    self._idle.append(conn)

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._conn() as conn:
            if _in_transaction(conn, what, self.path):
                raise ConfigurationError(
                    f"the SQLite connection given to snapstate is inside a transaction ({what})",
                    hint="commit or roll back before handing the connection to snapstate",
                )
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _translate(exc, what, self.path) from None
            with _rolled_back_on_error(lambda: conn.execute("ROLLBACK"), what, self.path):
                yield conn
                conn.execute("COMMIT")
            if self._file:
                self._committed(conn)

    def _committed(self, conn: sqlite3.Connection | None) -> None:
        """Count a commit for the WAL checkpointer, and run the catch-up checkpoint it may ask
        for on ``conn`` (None: a pooled ``sqlite3`` connection)."""
        cp = self._wal_checkpointer()
        if not cp.committed():
            return
        if conn is not None:
            cp.catch_up(conn)
            return
        with self._conn() as pooled:
            cp.catch_up(pooled)

    @property
    def _native_guard(self) -> Any:
        """The lock that serializes the compiled connection: the shared connection's, else its
        own."""
        return self._shared_lock if self._shared is not None else self._native_lock

    def _wal_checkpointer(self) -> _WalCheckpointer:
        cp = self._checkpointer
        if cp is not None:
            return cp
        with self._checkpointer_lock:
            if self._checkpointer is None:
                self._checkpointer = _WalCheckpointer(self._file, self.busy_timeout)
            return self._checkpointer

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[sqlite3.Connection]:
        """A connection to read on; its errors become snapstate's, naming ``what``."""
        with self._conn() as conn:
            try:
                yield conn
            except sqlite3.Error as exc:
                raise _translate(exc, what, self.path) from None

    def _read(self, what: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._reading(what) as conn:
            return conn.execute(sql, params).fetchall()

    # -- schema --------------------------------------------------------------------------------

    def setup(self) -> None:
        with self._transaction("applying schema migrations") as conn:
            conn.execute(_CREATE_MIGRATIONS_TABLE)
            applied = {r[0] for r in conn.execute("SELECT id FROM schema_migrations")}
            _refuse_newer(self.path, applied)
            if 1 not in applied and _has_langgraph_tables(conn):
                raise ConfigurationError(
                    f"SQLite database {self.path!r} holds LangGraph's own checkpoint tables; "
                    "snapstate keeps its checkpoints in tables of its own with the same names",
                    hint="give snapstate a new database file; LangGraph's saver still reads "
                    "the old one",
                )
            for mid, name, sql in MIGRATIONS:
                if mid in applied:
                    continue
                try:
                    for statement in _statements(sql):
                        conn.execute(statement)
                except sqlite3.Error as exc:
                    raise MigrationError(
                        f"schema migration {mid} ({name}) failed on {self.path!r}: {exc}"
                    ) from None
                conn.execute(
                    "INSERT INTO schema_migrations (id, name, applied_at) VALUES (?, ?, ?)",
                    (mid, name, time.time()),
                )

    def migration_status(self) -> list[MigrationStatus]:
        with self._reading("reading applied migrations") as conn:
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            ).fetchone()
            applied = (
                dict(conn.execute("SELECT id, applied_at FROM schema_migrations").fetchall())
                if exists
                else {}
            )
        _refuse_newer(self.path, set(applied))
        return [MigrationStatus(mid, name, applied.get(mid)) for mid, name, _ in MIGRATIONS]

    # -- writes --------------------------------------------------------------------------------

    @property
    def native_writes(self) -> bool:
        """Whether small writes go through the compiled connection (see the module's doc)."""
        return _NATIVE is not None and bool(self._file) and self.synchronous in ("off", "normal")

    def write(self, batch: WriteBatch) -> None:
        if (
            self.native_writes
            and len(batch) <= _HOLD_MAX_ROWS
            and batch_bytes(batch) <= _HOLD_MAX_BYTES
            and self._write_native(batch)
        ):
            return
        with self._transaction("writing a batch") as conn:
            _store(_PyStatements(conn), batch)

    def _write_native(self, batch: WriteBatch) -> bool:
        """Store ``batch`` through the compiled connection; False, with nothing written, when
        that would wait (another connection holds the write lock) or when a shared connection
        is inside a transaction (``sqlite3``'s path then waits, or reports it)."""
        with _GATE, self._native_guard:
            if self._closed or (
                self._shared is not None
                and _in_transaction(self._shared, "writing a batch", self.path)
            ):
                return False
            try:
                conn = self._native_connection()
                if not conn.begin():
                    return False
            except sqlite3.Error as exc:
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
                    return False  # opening it met a lock (WAL recovery, say): sqlite3 waits
                raise _translate(exc, "writing a batch", self.path) from None
            with _rolled_back_on_error(conn.rollback, "writing a batch", self.path):
                _store(conn, batch)
                conn.commit()
            self._committed(self._shared)
        return True

    def _native_connection(self) -> Any:
        """The compiled connection, opened on first use (its owner's lock held)."""
        if self._native is None:
            assert _NATIVE is not None
            self._native = _NATIVE.Connection(self._file, self.synchronous)
        return self._native

    def _start_in_child(self) -> None:
        """In a forked child, while it has one thread: locks of its own (the parent's may be
        held, at the fork, by a thread the child does not have, and would then never be let
        go), and none of the parent's connections or WAL checkpointer thread: the child opens
        its own on first use. The parent's connections are dropped unclosed (they belong to the
        parent; the compiled one does nothing when dropped in another process)."""
        self._shared_lock = threading.RLock()
        self._pool_lock = threading.Lock()
        self._idle, self._all = [], []
        self._checkpointer_lock = threading.Lock()
        self._checkpointer = None
        self._native_lock = threading.Lock()
        self._native = None

    def delete_threads(self, thread_ids: Sequence[str]) -> None:
        with self._transaction("deleting threads") as conn:
            _delete_threads(conn, list(thread_ids))

    def delete_idle_threads(self, thread_ids: Sequence[str], idle_before: float) -> list[str]:
        idle: list[str] = []
        # The write lock is held from the look to the delete: no checkpoint lands in between.
        with self._transaction("deleting idle threads") as conn:
            for chunk in _chunks(list(thread_ids), _CHUNK):
                marks = ",".join("?" * len(chunk))
                idle += [
                    r[0]
                    for r in conn.execute(
                        f"SELECT thread_id FROM checkpoints WHERE thread_id IN ({marks}) "
                        "GROUP BY thread_id HAVING max(created_at) < ? ORDER BY thread_id",
                        [*chunk, idle_before],
                    )
                ]
            _delete_threads(conn, idle)
        return idle

    def purge_tombstones(self, deleted_before: float) -> int:
        with self._transaction("purging tombstones") as conn:
            cur = conn.execute("DELETE FROM tombstones WHERE deleted_at < ?", (deleted_before,))
            return cur.rowcount

    def delete_rows(
        self,
        thread_id: str,
        checkpoints: Collection[tuple[str, str]],
        blobs: Collection[tuple[str, str, str]],
    ) -> int:
        # BEGIN IMMEDIATE waits for the write lock: nothing is ever skipped here.
        cps = list(checkpoints)
        with self._transaction("deleting checkpoints and blobs") as conn:
            conn.executemany(
                "DELETE FROM writes WHERE thread_id = ? AND namespace = ? AND checkpoint_id = ?",
                [(thread_id, ns, cid) for ns, cid in cps],
            )
            conn.executemany(
                "DELETE FROM checkpoints WHERE thread_id = ? AND namespace = ? "
                "AND checkpoint_id = ?",
                [(thread_id, ns, cid) for ns, cid in cps],
            )
            conn.executemany(
                "UPDATE checkpoints SET parent_id = NULL "
                "WHERE thread_id = ? AND namespace = ? AND parent_id = ?",
                [(thread_id, ns, cid) for ns, cid in cps],
            )
            gone = conn.executemany(
                "DELETE FROM blobs WHERE thread_id = ? AND namespace = ? AND channel = ? "
                "AND version = ?",
                [(thread_id, ns, ch, v) for ns, ch, v in blobs],
            ).rowcount
            # One writer at a time holds the database: no write can be about to name a payload.
            conn.execute(_COLLECT_PAYLOADS, (thread_id,) * 3)
        return len(cps) + max(gone, 0)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        with self._transaction("copying a thread") as conn:
            # Copying into a thread id is a deliberate new history for it.
            conn.execute("DELETE FROM tombstones WHERE thread_id = ?", (target_thread_id,))
            conn.execute(
                f"INSERT OR REPLACE INTO checkpoints ({_CHECKPOINT_COLUMNS}) "
                "SELECT ?, namespace, checkpoint_id, parent_id, run_id, created_at, metadata, "
                "skeleton FROM checkpoints WHERE thread_id = ?",
                (target_thread_id, source_thread_id),
            )
            conn.execute(
                "INSERT OR IGNORE INTO payloads (thread_id, digest, data) "
                "SELECT ?, digest, data FROM payloads WHERE thread_id = ?",
                (target_thread_id, source_thread_id),
            )
            conn.execute(
                f"INSERT OR IGNORE INTO blobs ({_BLOB_STORED}) "
                "SELECT ?, namespace, channel, version, kind, base, data, payload FROM blobs "
                "WHERE thread_id = ?",
                (target_thread_id, source_thread_id),
            )
            conn.execute(
                f"INSERT OR IGNORE INTO writes ({_WRITE_STORED}) "
                "SELECT ?, namespace, checkpoint_id, task_id, idx, channel, task_path, data, "
                "payload FROM writes WHERE thread_id = ?",
                (target_thread_id, source_thread_id),
            )

    # -- reads ---------------------------------------------------------------------------------

    def get_checkpoint(
        self, thread_id: str, namespace: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        what = "reading the latest checkpoint" if checkpoint_id is None else "reading a checkpoint"
        rows = self._read(what, *_checkpoint_query(thread_id, namespace, checkpoint_id))
        return _checkpoint_row(rows[0]) if rows else None

    def load(
        self, thread_id: str, namespace: str, checkpoint_id: str | None
    ) -> tuple[CheckpointRow, list[BlobRow], list[WriteRow]] | None:
        """The row and its writes in one read transaction: retention deleting the checkpoint
        (with its writes) in between cannot leave the row without them."""
        with self._reading("reading a checkpoint") as conn:
            own = not conn.in_transaction  # a shared connection's own one reads alike
            if own:
                conn.execute("BEGIN")
            try:
                found = conn.execute(*_checkpoint_query(thread_id, namespace, checkpoint_id))
                rows = found.fetchall()
                if not rows:
                    return None
                row = _checkpoint_row(rows[0])
                writes = _select_writes(conn, thread_id, namespace, [row.checkpoint_id])
            finally:
                if own:
                    conn.execute("COMMIT")  # ends the read; there is nothing to write
        return row, [], check_payloads(writes)

    def list_checkpoints(self, query: ListQuery) -> Iterator[CheckpointRow]:
        conditions = key_conditions(query)
        where: list[str] = [f"{column} {op} ?" for column, op, _ in conditions]
        params: list[Any] = [value for _, _, value in conditions]
        for key, value in query.filter.items():
            clause, args = _filter_clause(key, value)
            where.append(clause)
            params.extend(args)
        sql = f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY checkpoint_id DESC"
        if query.limit is not None:
            sql += " LIMIT ?"
            params.append(query.limit)
        # Rows hold no state bytes, so materializing them keeps no read transaction open while
        # the caller consumes the iterator.
        for r in self._read("listing checkpoints", sql, params):
            yield _checkpoint_row(r)

    def get_blobs(
        self, thread_id: str, namespace: str, keys: Collection[tuple[str, str]]
    ) -> list[BlobRow]:
        out: list[BlobRow] = []
        for chunk in _chunks(list(keys), _CHUNK):
            values = ",".join(["(?,?)"] * len(chunk))
            params: list[Any] = []
            for channel, version in chunk:
                params.extend((channel, version))
            params.extend((thread_id, namespace) * 2)  # the two joins' placeholders
            # Follow append-delta bases in the same query: keys first (cheap to de-duplicate),
            # then each blob's bytes once.
            sql = (
                f"WITH RECURSIVE want(channel, version) AS (VALUES {values}), "
                "chain(channel, version) AS ("
                " SELECT channel, version FROM want"
                " UNION"
                " SELECT b.channel, b.base FROM blobs b JOIN chain c"
                "  ON b.thread_id = ? AND b.namespace = ?"
                "  AND b.channel = c.channel AND b.version = c.version"
                "  WHERE b.kind = 1 AND b.base IS NOT NULL) "
                f"SELECT b.channel, b.version, b.kind, b.base, {_BLOB_VALUE} FROM chain c "
                "JOIN blobs b ON b.thread_id = ? AND b.namespace = ?"
                " AND b.channel = c.channel AND b.version = c.version"
            )
            for r in self._read("reading channel values", sql, params):
                out.append(BlobRow(thread_id, namespace, r[0], r[1], r[2], r[3], r[4]))
        return check_payloads(out)

    def blob_index(self, thread_id: str) -> list[BlobRef]:
        rows = self._read(
            "indexing blobs",
            "SELECT namespace, channel, version, kind, base FROM blobs WHERE thread_id = ?",
            (thread_id,),
        )
        return [BlobRef(*r) for r in rows]

    def blob_counts(self, thread_ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for chunk in _chunks(list(thread_ids), _CHUNK):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT thread_id, count(*) FROM blobs WHERE thread_id IN ({marks})"
            out.update(self._read("counting blobs", sql + " GROUP BY thread_id", chunk))
        return out

    def get_writes(
        self, thread_id: str, namespace: str, checkpoint_ids: Collection[str]
    ) -> list[WriteRow]:
        with self._reading("reading pending writes") as conn:
            out = _select_writes(conn, thread_id, namespace, list(checkpoint_ids))
        return check_payloads(out)

    def threads(self, *, idle_before: float | None = None) -> list[ThreadInfo]:
        sql = "SELECT thread_id, count(*), max(created_at) FROM checkpoints GROUP BY thread_id"
        params: list[Any] = []
        if idle_before is not None:
            sql += " HAVING max(created_at) < ?"
            params.append(idle_before)
        rows = self._read("listing threads", sql + " ORDER BY thread_id", params)
        return [ThreadInfo(r[0], r[1], r[2]) for r in rows]

    def stats(self) -> TableStats:
        with self._conn() as conn:
            try:
                q = conn.execute
                threads, checkpoints, cbytes = q(
                    "SELECT count(DISTINCT thread_id), count(*), "
                    "coalesce(sum(length(metadata) + length(skeleton)), 0) FROM checkpoints"
                ).fetchone()
                # Bytes as the rows hold them: a payload a write and a blob share counts twice.
                writes, wbytes = q(
                    f"SELECT count(*), coalesce(sum(length({_WRITE_VALUE})), 0) FROM writes w"
                ).fetchone()
                channels = {
                    r[0]: (r[1], r[2])
                    for r in q(
                        f"SELECT b.channel, count(*), coalesce(sum(length({_BLOB_VALUE})), 0) "
                        "FROM blobs b GROUP BY b.channel ORDER BY b.channel"
                    )
                }
                raw = sum(
                    raw_size(bytes(head), size)
                    for head, size in q(
                        "SELECT substr(d, 1, 10), length(d) FROM "
                        f"(SELECT {_BLOB_VALUE} AS d FROM blobs b WHERE b.kind != 2)"
                    )
                )
                payloads, payload_bytes = q(
                    "SELECT count(*), coalesce(sum(length(data)), 0) FROM payloads"
                ).fetchone()
                ((shared,),) = q(shared_payload_bytes_sql()).fetchall()
                page_size = q("PRAGMA page_size").fetchone()[0]
                pages = q("PRAGMA page_count").fetchone()[0]
                free = q("PRAGMA freelist_count").fetchone()[0]
            except sqlite3.Error as exc:
                raise _translate(exc, "gathering statistics", self.path) from None
        return TableStats(
            threads=threads,
            checkpoints=checkpoints,
            checkpoint_bytes=cbytes,
            blobs=sum(n for n, _ in channels.values()),
            blob_bytes=sum(b for _, b in channels.values()),
            writes=writes,
            write_bytes=wbytes,
            channels=channels,
            file_bytes=page_size * pages,
            free_bytes=page_size * free,
            raw_blob_bytes=raw,
            payloads=payloads,
            payload_bytes=payload_bytes,
            shared_bytes=shared,
        )

    def reclaim(self) -> int:
        """Return free pages to the file system (``PRAGMA incremental_vacuum``)."""
        with self._conn() as conn:
            try:
                page_size = conn.execute("PRAGMA page_size").fetchone()[0]
                before = conn.execute("PRAGMA page_count").fetchone()[0]
                # executescript steps the pragma to completion (execute would free one page).
                conn.executescript("PRAGMA incremental_vacuum;")
                after = conn.execute("PRAGMA page_count").fetchone()[0]
            except sqlite3.Error as exc:
                raise _translate(exc, "reclaiming free space", self.path) from None
        return int((before - after) * page_size)

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections this backend opened (a shared connection stays open, with its
        ``wal_autocheckpoint`` setting back)."""
        self._closed = True
        with self._native_guard:
            native, self._native = self._native, None
        if native is not None:
            native.close()
        with self._pool_lock:
            conns, self._all, self._idle = self._all, [], []
        with self._checkpointer_lock:
            cp, self._checkpointer = self._checkpointer, None
        if cp is not None:
            cp.stop()
        if self._shared is not None and self._shared_autocheckpoint is not None:
            with self._shared_lock, contextlib.suppress(sqlite3.Error):
                self._shared.execute(
                    f"PRAGMA wal_autocheckpoint = {int(self._shared_autocheckpoint)}"
                )
        with _GATE:
            for conn in conns:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()

    def __repr__(self) -> str:
        return f"SqliteBackend({self.path!r}, synchronous={self.synchronous!r})"


def _in_transaction(conn: sqlite3.Connection, what: str, where: str) -> bool:
    """Whether ``conn`` is inside a transaction; a closed connection is the store's error."""
    try:
        return conn.in_transaction
    except sqlite3.Error as exc:
        raise _translate(exc, what, where) from None


class _rolled_back_on_error:
    """Run the block of a write transaction; on any error roll back (a failed rollback is left
    to the error at hand) and raise it, a SQLite error as the store's. (A class, not a
    generator: it wraps every write, and costs about a quarter as much.)"""

    __slots__ = ("_rollback", "_what", "_where")

    def __init__(self, rollback: Callable[[], Any], what: str, where: str) -> None:
        self._rollback = rollback
        self._what = what
        self._where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if exc is None:
            return
        with contextlib.suppress(sqlite3.Error):
            self._rollback()
        if isinstance(exc, sqlite3.Error):
            raise _translate(exc, self._what, self._where) from None


_TOMBSTONES_IN = "SELECT thread_id, max_checkpoint_id FROM tombstones WHERE thread_id IN "
_TOMBSTONE_OF = f"{_TOMBSTONES_IN}(?)"
_HAS_BLOB = (
    "SELECT 1 FROM blobs WHERE thread_id = ? AND namespace = ? AND channel = ? AND version = ?"
)


def _delete_threads(conn: sqlite3.Connection, ids: list[str]) -> None:
    """Tombstones for those threads, then every row of them, in the caller's transaction."""
    now = time.time()
    for chunk in _chunks(ids, _CHUNK):
        marks = ",".join("?" * len(chunk))
        conn.execute(
            "INSERT INTO tombstones (thread_id, max_checkpoint_id, deleted_at) "
            "SELECT thread_id, max(checkpoint_id), ? FROM ("
            " SELECT thread_id, checkpoint_id FROM checkpoints"
            f" WHERE thread_id IN ({marks})"
            " UNION ALL"
            f" SELECT thread_id, checkpoint_id FROM writes WHERE thread_id IN ({marks})"
            ") GROUP BY thread_id "
            "ON CONFLICT (thread_id) DO UPDATE SET "
            "max_checkpoint_id = max(max_checkpoint_id, excluded.max_checkpoint_id), "
            "deleted_at = excluded.deleted_at",
            [now, *chunk, *chunk],
        )
        for table in ("writes", "blobs", "payloads", "checkpoints"):
            conn.execute(f"DELETE FROM {table} WHERE thread_id IN ({marks})", chunk)


def _store(db: _Statements, batch: WriteBatch) -> None:
    """The statements of one write, inside the transaction its caller opened and commits."""
    threads = list(batch_threads(batch))
    tombstones: dict[str, str] = {}
    if len(threads) == 1:  # a lone caller's write: one statement, the same text every time
        tombstones.update(db.query(_TOMBSTONE_OF, threads))
    else:
        for chunk in _chunks(threads, _CHUNK):
            marks = ",".join("?" * len(chunk))
            tombstones.update(db.query(f"{_TOMBSTONES_IN}({marks})", chunk))
    check_tombstones(batch, tombstones)
    bases = delta_bases(batch)
    if bases:
        missing = [k for k in bases if not db.query(_HAS_BLOB, k)]
        if missing:
            raise missing_base(missing)
    # Large values go to payloads, once per thread and content. INSERT OR IGNORE finds one
    # already stored in its index before writing anything.
    payloads: dict[tuple[str, bytes], Any] = {}
    if batch.writes:
        db.executemany(
            f"INSERT OR IGNORE INTO writes ({_WRITE_STORED}) VALUES (?,?,?,?,?,?,?,?,?)",
            [stored_row(payloads, w) for w in batch.writes],
        )
    if batch.replace_writes:
        db.executemany(
            f"INSERT OR REPLACE INTO writes ({_WRITE_STORED}) VALUES (?,?,?,?,?,?,?,?,?)",
            [stored_row(payloads, w) for w in batch.replace_writes],
        )
    if batch.blobs:
        db.executemany(
            f"INSERT OR IGNORE INTO blobs ({_BLOB_STORED}) VALUES (?,?,?,?,?,?,?,?)",
            [stored_row(payloads, b) for b in batch.blobs],
        )
    if payloads:
        db.executemany(
            "INSERT OR IGNORE INTO payloads (thread_id, digest, data) VALUES (?,?,?)",
            [(t, d, data) for (t, d), data in payloads.items()],
        )
    if batch.checkpoints:
        db.executemany(
            f"INSERT OR REPLACE INTO checkpoints ({_CHECKPOINT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
            [checkpoint_values(c, c.metadata.decode()) for c in batch.checkpoints],
        )


def file_of(conn: sqlite3.Connection) -> str:
    """The file behind a connection's main database; "" for an in-memory or temporary one."""
    for _, name, file in conn.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return str(file or "")
    return ""


def _has_langgraph_tables(conn: sqlite3.Connection) -> bool:
    """Whether LangGraph's SqliteSaver made this file (its tables have ``checkpoint_ns``)."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(checkpoints)")}
    return "checkpoint_ns" in cols


def _refuse_newer(path: str, applied: set[int]) -> None:
    known = {m[0] for m in MIGRATIONS}
    newer = sorted(applied - known)
    if newer:
        raise SchemaVersionError(
            f"SQLite database {path!r} has schema migrations {newer} that this version of "
            f"snapstate does not know (it knows up to {max(known)})",
            hint="upgrade snapstate, or use a database written by this version",
        )


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


def _filter_clause(key: str, value: Any) -> tuple[str, list[Any]]:
    """A WHERE clause matching metadata key ``key`` equal to the JSON value ``value``.

    The JSON path is bound as a parameter (the key is quoted inside it), never interpolated.
    """
    path = '$."' + key + '"'
    if value is None:
        return "json_type(metadata, ?) = 'null'", [path]
    if isinstance(value, bool):
        return "json_type(metadata, ?) = ?", [path, "true" if value else "false"]
    if isinstance(value, (int, float)):
        return (
            "json_type(metadata, ?) IN ('integer', 'real') AND json_extract(metadata, ?) = ?",
            [path, path, value],
        )
    if isinstance(value, str):
        return (
            "json_type(metadata, ?) = 'text' AND json_extract(metadata, ?) = ?",
            [path, path, value],
        )
    # Objects and arrays: compare minified JSON text (key order matters, as stored).
    return "json_extract(metadata, ?) = json(?)", [path, msgspec.json.encode(value).decode()]


def _translate(exc: sqlite3.Error, what: str, where: str) -> StorageError:
    """A ``sqlite3`` error as the store's, naming the database (``where``: its path) and what
    was being done."""
    text = str(exc)
    db = f"SQLite database {where!r}"
    if isinstance(exc, sqlite3.ProgrammingError) and "closed" in text:
        return StoreUnavailableError(
            f"{db}: the connection is closed while {what}: {text}",
            hint="keep the connection given to snapstate open while it is in use, or give "
            "snapstate a path and let it open and close its own",
        )
    if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
        return StoreUnavailableError(
            f"{db} is locked while {what}: {text}",
            hint="another process held the write lock longer than busy_timeout",
        )
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in text:
        return StoreUnavailableError(f"cannot open {db} while {what}: {text}")
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_FULL or "disk is full" in text:
        return StorageError(
            f"SQLite ran out of space in {where!r} while {what}: {text}",
            hint="free space on the database's disk (or raise PRAGMA max_page_count), or let "
            "retention delete old checkpoints (docs/retention.md). A write that fails this way "
            "stores nothing, and everything stored before is intact",
        )
    if isinstance(exc, sqlite3.OperationalError) and "no such table" in text:
        return MigrationError(
            f"the schema of {db} is missing while {what}: {text}",
            hint="call setup() (or leave auto_setup on) before using the store",
        )
    return StorageError(f"{db}: error while {what}: {text}")
