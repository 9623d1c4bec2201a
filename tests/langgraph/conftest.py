"""Saver fixtures for the LangGraph tests: every saver, with readable ids.

``make_saver`` opens a saver of the requested kind on a fresh store and closes it (and whatever
the fixture opened for it) at teardown. Kinds: ``memory``; ``sqlite`` (on a ``sqlite3``
connection), ``sqlite-path``; ``sqlite-async`` (on a path), ``sqlite-aiosqlite`` (on an
``aiosqlite`` connection); ``postgres``, ``postgres-async``. The Postgres kinds need the server
(see tests/fix_backends.py).
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from snapstate.langgraph import AsyncSqliteSaver, InMemorySaver, SqliteSaver
from snapstate.langgraph._base import AsyncSaver

from ..fix_backends import new_schema

SYNC_KINDS = ["memory", "sqlite", "postgres"]
ASYNC_KINDS = ["sqlite-async", "sqlite-aiosqlite", "postgres-async"]
ALL_KINDS = SYNC_KINDS + ASYNC_KINDS

MakeSaver = Callable[..., Awaitable[Any]]


def skip_async_interrupt_before_311(kind: str) -> None:
    """Skip an async kind on Python 3.10 in a test whose graph calls ``interrupt()`` in a
    subgraph: LangGraph finds the run's config there through the context asyncio tasks carry
    only from 3.11, and raises on 3.10 with every saver, its own included."""
    if kind in ASYNC_KINDS and sys.version_info < (3, 11):
        pytest.skip("LangGraph's interrupt() in a subgraph run by ainvoke needs Python 3.11")


@contextlib.contextmanager
def langgraph_postgres(dsn: str) -> Iterator[Any]:
    """LangGraph's own ``PostgresSaver``, set up in a schema of its own (``saver.schema``)."""
    from langgraph.checkpoint.postgres import PostgresSaver as LangGraphPostgresSaver
    from psycopg import Connection
    from psycopg.rows import dict_row

    with (
        new_schema(dsn, "lg_") as schema,
        Connection.connect(
            dsn, autocommit=True, row_factory=dict_row, options=f"-c search_path={schema}"
        ) as conn,
    ):
        saver = LangGraphPostgresSaver(conn)  # type: ignore[arg-type]
        saver.setup()
        saver.schema = schema  # type: ignore[attr-defined]
        yield saver


def _postgres(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")


@pytest.fixture
async def make_saver(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeSaver]:
    """``await make_saver(kind, **options)``: a saver on a fresh store (one per kind and test).

    Two savers of one kind in one test share the store, like two processes would.
    """
    opened: list[Any] = []
    extra: list[Any] = []

    async def make(kind: str, **options: Any) -> Any:
        if kind == "memory":
            saver: Any = InMemorySaver(**options)
        elif kind == "sqlite":
            conn = sqlite3.connect(tmp_path / "store.db", check_same_thread=False)
            extra.append(conn)
            saver = SqliteSaver(conn, **options)
        elif kind == "sqlite-path":
            saver = SqliteSaver(tmp_path / "store.db", **options)
        elif kind == "sqlite-async":
            saver = AsyncSqliteSaver(tmp_path / "store.db", **options)
        elif kind == "sqlite-aiosqlite":
            import aiosqlite

            aconn = await aiosqlite.connect(tmp_path / "store.db")
            extra.append(aconn)
            saver = AsyncSqliteSaver(aconn, **options)
        elif kind in ("postgres", "postgres-async"):
            dsn, schema = _postgres(request)
            from snapstate.langgraph import AsyncPostgresSaver, PostgresSaver

            cls = PostgresSaver if kind == "postgres" else AsyncPostgresSaver
            saver = cls(dsn, schema=schema, **options)
        else:  # pragma: no cover - a typo in a test
            raise ValueError(kind)
        opened.append(saver)
        return saver

    yield make
    for saver in reversed(opened):
        if isinstance(saver, AsyncSaver):
            await saver.aclose()
        else:
            saver.close()
    for conn in extra:
        closing = conn.close()
        if closing is not None:
            await closing


def kinds(*names: str) -> Any:
    """Parametrize a test over saver kinds, marking the Postgres ones."""
    return pytest.mark.parametrize(
        "kind",
        [
            pytest.param(n, marks=pytest.mark.postgres) if n.startswith("postgres") else n
            for n in names
        ],
    )
