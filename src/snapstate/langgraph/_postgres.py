"""``PostgresSaver`` and ``AsyncPostgresSaver``: checkpoints in PostgreSQL.

They store through :class:`snapstate.backends.postgres.PostgresBackend` and its asyncio twin,
which set up every connection they use themselves (autocommit per call, their own row
factories), so a connection or pool configured for LangGraph's savers works unchanged, and so
does one configured otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol

from ..backends.postgres import AsyncPostgresBackend, PostgresBackend
from ..codec import Codec
from ..errors import ConfigurationError
from ._base import AsyncSaver, SyncSaver

__all__ = ["PostgresSaver", "AsyncPostgresSaver"]

#: Keyword arguments that configure the backend; the others go to the engine.
_BACKEND_OPTIONS = frozenset(
    {
        "schema",
        "prepare",
        "max_connections",
        "pool_timeout",
        "connect_timeout",
        "retry",
        "write_concurrency",
        "server_timeout",
    }
)


def _split(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    backend = {k: v for k, v in options.items() if k in _BACKEND_OPTIONS}
    engine = {k: v for k, v in options.items() if k not in _BACKEND_OPTIONS}
    return backend, engine


def _check_pipe(pipe: Any) -> None:
    # A connection held in pipeline mode has results pending between the statements of a
    # call, so it is never idle when the next call starts; snapstate needs no pipeline (a
    # checkpoint and its values are one statement), so refuse it clearly at once.
    if pipe is not None:
        raise ConfigurationError(
            "snapstate's Postgres savers do not use a psycopg pipeline",
            hint="pass the connection (or a pool) without opening a pipeline on it; "
            "from_conn_string(..., pipeline=True) is accepted and opens none",
        )


class PostgresSaver(SyncSaver):
    """A drop-in for LangGraph's ``PostgresSaver``, with the async API too.

    Parameters
    ----------
    conn:
        A ``psycopg.Connection`` (used one statement at a time), a
        ``psycopg_pool.ConnectionPool`` (used without a lock), or a conninfo string (the saver
        then owns a small pool).
    pipe:
        Must be None: a checkpoint and its values are one statement here, so there is
        nothing for a pipeline to batch (passing one raises ``ConfigurationError``).
    serde:
        A LangGraph serializer to encode values with instead of snapstate's codec.
    codec:
        A :class:`snapstate.codec.Codec` to encode values with.
    **options:
        Backend options (``schema``, ``prepare``, ``max_connections``, ``pool_timeout``,
        ``connect_timeout``, ``retry``, ``write_concurrency``, ``server_timeout``) and engine
        options (``durability``, ``delta_keyframe_every``).
    """

    def __init__(
        self,
        conn: Any,
        pipe: Any = None,
        serde: SerializerProtocol | None = None,
        *,
        codec: Codec | None = None,
        **options: Any,
    ) -> None:
        _check_pipe(pipe)
        backend_options, engine_options = _split(options)
        self.conn = conn
        self.pipe = pipe
        backend = PostgresBackend(conn, **backend_options)
        self._init_engine(backend, serde=serde, codec=codec, options=engine_options)

    @classmethod
    @contextlib.contextmanager
    def from_conn_string(
        cls, conn_string: str, *, pipeline: bool = False, **kwargs: Any
    ) -> Iterator[PostgresSaver]:
        """A saver on its own connection pool, closed when the block exits.

        ``pipeline`` is accepted for compatibility and opens no pipeline (see ``pipe``). Other
        keyword arguments are those of the constructor.
        """
        saver = cls(conn_string, **kwargs)
        try:
            yield saver
        finally:
            saver.close()


class AsyncPostgresSaver(AsyncSaver):
    """A drop-in for LangGraph's ``AsyncPostgresSaver``, with the sync API too.

    Parameters
    ----------
    conn:
        A ``psycopg.AsyncConnection``, a ``psycopg_pool.AsyncConnectionPool`` or a conninfo
        string (the saver then owns a pool, opened in the event loop on first use).
    pipe, serde, codec, **options:
        As for :class:`PostgresSaver`.
    """

    def __init__(
        self,
        conn: Any,
        pipe: Any = None,
        serde: SerializerProtocol | None = None,
        *,
        codec: Codec | None = None,
        **options: Any,
    ) -> None:
        _check_pipe(pipe)
        backend_options, engine_options = _split(options)
        self.conn = conn
        self.pipe = pipe
        backend = AsyncPostgresBackend(conn, **backend_options)
        self._init_async(serde=serde, codec=codec, options=engine_options, backend=backend)

    @classmethod
    @contextlib.asynccontextmanager
    async def from_conn_string(
        cls,
        conn_string: str,
        *,
        pipeline: bool = False,
        serde: SerializerProtocol | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AsyncPostgresSaver]:
        """A saver on its own connection pool, closed when the block exits.

        ``pipeline`` is accepted for compatibility and opens no pipeline (see ``pipe``). Other
        keyword arguments are those of the constructor.
        """
        saver = cls(conn_string, serde=serde, **kwargs)
        try:
            yield saver
        finally:
            await saver.aclose()
