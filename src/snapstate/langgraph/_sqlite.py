"""``SqliteSaver`` and ``AsyncSqliteSaver``: checkpoints in one SQLite file.

Both store through :class:`snapstate.backends.sqlite.SqliteBackend`, which configures the
connections it uses itself (WAL, busy timeout, ``synchronous``). A database that lives only in
memory (``":memory:"``, or a connection to one) is private to its saver and gone with it, so it
is kept in snapstate's memory backend: same behaviour, no file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.serde.base import SerializerProtocol

from ..backends import Backend, MemoryBackend
from ..backends.sqlite import SqliteBackend, Synchronous, file_of
from ..codec import Codec
from ..errors import ConfigurationError, StoreUnavailableError
from ._base import AsyncSaver, SyncSaver

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["SqliteSaver", "AsyncSqliteSaver"]

_MEMORY_NAMES = ("", ":memory:")


class _PrivateMemory(MemoryBackend):
    """The store of a saver on an in-memory SQLite database: its rows go when the saver is
    closed, and every call after that raises, as with LangGraph's saver, whose connection is
    then closed. (Calls while open cost what the memory backend's do.)"""

    def close(self) -> None:
        with self._lock:
            self._checkpoints.clear()
            self._blobs.clear()
            self._writes.clear()
            self._tombstones.clear()
            for name in _STORE_CALLS:  # shadow each method of the contract on this instance
                setattr(self, name, _closed_call)


def _closed_call(*args: Any, **kwargs: Any) -> Any:
    raise StoreUnavailableError(
        "the in-memory SQLite database of this saver is closed: its checkpoints are gone"
    )


#: Every call of the backend contract but ``close``.
_STORE_CALLS = frozenset(
    name
    for name in dir(Backend)
    if not name.startswith("_") and name != "close" and callable(getattr(Backend, name))
)


def _open(path: str) -> sqlite3.Connection:
    # One connection, shared by the saver's threads behind the backend's lock, as LangGraph's
    # saver does. Measured on the chat benchmark, it beats a pool of connections: writers of
    # one file serialize anyway, and SQLite's busy handler waits by sleeping.
    try:
        return sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreUnavailableError(f"cannot open SQLite database {path!r}: {exc}") from None


def _backend_for(
    target: sqlite3.Connection | str | os.PathLike[str],
    synchronous: Synchronous,
    busy_timeout: float,
) -> tuple[Backend, sqlite3.Connection | None]:
    """The backend for a connection or path, and the connection opened for it (if any)."""
    if isinstance(target, sqlite3.Connection):
        if file_of(target) == "":
            return _PrivateMemory(), None
        return SqliteBackend(target, synchronous=synchronous, busy_timeout=busy_timeout), None
    path = os.fspath(target)
    if path in _MEMORY_NAMES:
        return _PrivateMemory(), None
    conn = _open(path)
    try:
        backend = SqliteBackend(conn, synchronous=synchronous, busy_timeout=busy_timeout)
    except BaseException:
        conn.close()
        raise
    return backend, conn


class SqliteSaver(SyncSaver):
    """A drop-in for LangGraph's ``SqliteSaver``, with the async API too.

    Parameters
    ----------
    conn:
        An open ``sqlite3.Connection`` (as with LangGraph: made with
        ``check_same_thread=False``; snapstate serializes its use), or a path, in which case
        the saver opens its own connection (``saver.conn``) and closes it in :meth:`close`.
    serde:
        A LangGraph serializer to encode values with instead of snapstate's codec (for
        example an ``EncryptedSerializer``).
    codec:
        A :class:`snapstate.codec.Codec` to encode values with.
    synchronous:
        SQLite's ``synchronous`` level: ``"normal"`` (default) keeps every committed checkpoint
        when the process is killed; ``"full"`` also across power loss, at an fsync per commit.
    busy_timeout:
        Seconds to wait for another process's write lock.
    **options:
        Engine options: ``durability`` (``"sync"`` or ``"batched"``), ``delta_keyframe_every``.

    Examples
    --------
    >>> with SqliteSaver.from_conn_string(":memory:") as saver:  # doctest: +SKIP
    ...     graph = builder.compile(checkpointer=saver)
    """

    def __init__(
        self,
        conn: sqlite3.Connection | str | os.PathLike[str],
        *,
        serde: SerializerProtocol | None = None,
        codec: Codec | None = None,
        synchronous: Synchronous = "normal",
        busy_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        if not isinstance(conn, (sqlite3.Connection, str, os.PathLike)):
            raise ConfigurationError(
                f"SqliteSaver needs a sqlite3.Connection or a path, got {type(conn).__name__}",
                hint="for an aiosqlite connection use AsyncSqliteSaver",
            )
        backend, opened = _backend_for(conn, synchronous, busy_timeout)
        self.conn = conn if isinstance(conn, sqlite3.Connection) else opened
        self._init_engine(backend, serde=serde, codec=codec, options=options)
        if opened is not None:
            self._shared.on_close.append(opened.close)

    @classmethod
    @contextlib.contextmanager
    def from_conn_string(cls, conn_string: str, **kwargs: Any) -> Iterator[SqliteSaver]:
        """A saver on a database file (or ``":memory:"``), closed when the block exits.

        Keyword arguments are those of the constructor.
        """
        saver = cls(conn_string, **kwargs)
        try:
            yield saver
        finally:
            saver.close()


class AsyncSqliteSaver(AsyncSaver):
    """A drop-in for LangGraph's ``AsyncSqliteSaver``, with the sync API too.

    Parameters
    ----------
    conn:
        An ``aiosqlite.Connection``, or a path. With a connection, the saver stores in the
        database file behind it through a connection of its own (aiosqlite's is bound to its
        worker thread), so the connection itself stays free for the application.
    serde, codec, synchronous, busy_timeout, **options:
        As for :class:`SqliteSaver`.
    """

    def __init__(
        self,
        conn: aiosqlite.Connection | str | os.PathLike[str],
        *,
        serde: SerializerProtocol | None = None,
        codec: Codec | None = None,
        synchronous: Synchronous = "normal",
        busy_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        self._synchronous: Synchronous = synchronous
        self._busy_timeout = busy_timeout
        backend: Backend | None = None
        opened = None
        if isinstance(conn, (str, os.PathLike)):
            self.conn = None
            backend, opened = _backend_for(conn, synchronous, busy_timeout)
        else:
            self.conn = conn
        self._init_async(serde=serde, codec=codec, options=options, backend=backend)
        if opened is not None:
            self._shared.on_close.append(opened.close)

    async def _open_backend(self) -> Backend:
        conn = self.conn
        assert conn is not None
        if not _started(conn):
            await conn
        async with conn.execute("PRAGMA database_list") as cursor:
            rows = await cursor.fetchall()
        file = next((str(r[2] or "") for r in rows if r[1] == "main"), "")
        backend, opened = _backend_for(file, self._synchronous, self._busy_timeout)
        if opened is not None:
            self._shared.on_close.append(opened.close)
        return backend

    @classmethod
    @contextlib.asynccontextmanager
    async def from_conn_string(
        cls, conn_string: str, **kwargs: Any
    ) -> AsyncIterator[AsyncSqliteSaver]:
        """A saver on a database file (or ``":memory:"``), closed when the block exits.

        Keyword arguments are those of the constructor.
        """
        saver = cls(conn_string, **kwargs)
        try:
            yield saver
        finally:
            await saver.aclose()


def _started(conn: aiosqlite.Connection) -> bool:
    alive = getattr(conn, "is_alive", None)
    if callable(alive):
        return bool(alive())
    thread = getattr(conn, "_thread", None)
    return thread is not None and thread.is_alive()
