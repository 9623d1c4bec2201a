"""LangGraph's own conformance suite (``langgraph-checkpoint-conformance``), every saver.

The suite drives the async API only; ``test_sync_api.py`` runs the same ground through the sync
methods. Every capability must be detected, run every one of its cases, and pass them all: a
saver that silently lacks a capability reports "FULL" with nothing run, so the count is checked.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import Capability
from langgraph.checkpoint.conformance.spec import (
    test_copy_thread,
    test_delete_for_runs,
    test_delete_thread,
    test_get_tuple,
    test_list,
    test_prune,
    test_put,
    test_put_writes,
)

from snapstate.langgraph import AsyncSqliteSaver, InMemorySaver, SqliteSaver
from snapstate.langgraph._base import AsyncSaver

#: Every case of the suite, per capability, from the suite's own lists.
CASES = {
    Capability.PUT: len(test_put.ALL_PUT_TESTS),
    Capability.PUT_WRITES: len(test_put_writes.ALL_PUT_WRITES_TESTS),
    Capability.GET_TUPLE: len(test_get_tuple.ALL_GET_TUPLE_TESTS),
    Capability.LIST: len(test_list.ALL_LIST_TESTS),
    Capability.DELETE_THREAD: len(test_delete_thread.ALL_DELETE_THREAD_TESTS),
    Capability.DELETE_FOR_RUNS: len(test_delete_for_runs.ALL_DELETE_FOR_RUNS_TESTS),
    Capability.COPY_THREAD: len(test_copy_thread.ALL_COPY_THREAD_TESTS),
    Capability.PRUNE: len(test_prune.ALL_PRUNE_TESTS),
}


def test_the_suite_is_the_one_we_expect() -> None:
    # Eight capabilities and 81 cases in langgraph-checkpoint-conformance 0.0.2; a newer release
    # with more must not pass unnoticed with fewer cases run.
    assert set(CASES) == set(Capability)
    assert sum(CASES.values()) >= 81


Factory = Callable[[Path], Any]


def _memory(tmp: Path) -> Any:
    return InMemorySaver()


def _sqlite_path(tmp: Path) -> Any:
    return SqliteSaver(tmp / "store.db")


def _sqlite_conn(tmp: Path) -> Any:
    return SqliteSaver(sqlite3.connect(tmp / "store.db", check_same_thread=False))


def _async_sqlite_path(tmp: Path) -> Any:
    return AsyncSqliteSaver(tmp / "store.db")


async def _async_sqlite_aiosqlite(tmp: Path) -> Any:
    import aiosqlite

    conn = await aiosqlite.connect(tmp / "store.db")
    return AsyncSqliteSaver(conn)


SAVERS: dict[str, Factory] = {
    "InMemorySaver": _memory,
    "SqliteSaver(path)": _sqlite_path,
    "SqliteSaver(sqlite3.Connection)": _sqlite_conn,
    "AsyncSqliteSaver(path)": _async_sqlite_path,
    "AsyncSqliteSaver(aiosqlite.Connection)": _async_sqlite_aiosqlite,
}


async def _close(saver: Any) -> None:
    """Close the saver, then what the factory opened for it (the saver leaves given ones open)."""
    if isinstance(saver, AsyncSaver):
        await saver.aclose()
    else:
        saver.close()
    conn = getattr(saver, "conn", None)
    if conn is None or isinstance(conn, str):
        return
    closing = conn.close()
    if closing is not None:
        await closing


async def run_suite(name: str, make: Callable[[Path], Any], tmp_path: Path) -> None:
    made = 0

    async def factory() -> AsyncIterator[BaseCheckpointSaver]:
        nonlocal made
        made += 1
        store = tmp_path / f"capability-{made}"
        store.mkdir()
        saver = make(store)
        if not isinstance(saver, BaseCheckpointSaver):
            saver = await saver
        try:
            yield saver
        finally:
            await _close(saver)

    report = await validate(checkpointer_test(name=name)(factory))
    failures = {c: r.failures for c, r in report.results.items() if r.failures}
    assert report.passed_all(), failures
    for cap, expected in CASES.items():
        result = report.results[cap.value]
        assert result.detected, f"{name}: capability {cap.value} not detected"
        assert (result.tests_passed, result.tests_failed) == (expected, 0), (
            f"{name}: {cap.value} ran {result.tests_passed}+{result.tests_failed} of {expected}"
        )


@pytest.mark.parametrize("name", list(SAVERS))
async def test_conformance(name: str, tmp_path: Path) -> None:
    await run_suite(name, SAVERS[name], tmp_path)


def _postgres_savers(dsn: str, schema: str) -> dict[str, Factory]:
    import psycopg
    import psycopg_pool

    from snapstate.langgraph import AsyncPostgresSaver, PostgresSaver

    def sync_conn(tmp: Path) -> Any:
        return PostgresSaver(psycopg.connect(dsn), schema=schema)

    def sync_pool(tmp: Path) -> Any:
        pool = psycopg_pool.ConnectionPool(dsn, min_size=1, max_size=2, open=True)
        return PostgresSaver(pool, schema=schema)

    async def async_conn(tmp: Path) -> Any:
        return AsyncPostgresSaver(await psycopg.AsyncConnection.connect(dsn), schema=schema)

    async def async_pool(tmp: Path) -> Any:
        pool = psycopg_pool.AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False)
        await pool.open()
        return AsyncPostgresSaver(pool, schema=schema)

    def async_dsn(tmp: Path) -> Any:
        return AsyncPostgresSaver(dsn, schema=schema)

    return {
        "PostgresSaver(psycopg.Connection)": sync_conn,
        "PostgresSaver(ConnectionPool)": sync_pool,
        "AsyncPostgresSaver(psycopg.AsyncConnection)": async_conn,
        "AsyncPostgresSaver(AsyncConnectionPool)": async_pool,
        "AsyncPostgresSaver(conninfo)": async_dsn,
    }


POSTGRES = list(_postgres_savers("", "").keys())


@pytest.mark.postgres
@pytest.mark.parametrize("name", POSTGRES)
async def test_conformance_postgres(name: str, tmp_path: Path, pg_dsn: str, pg_schema: str) -> None:
    await run_suite(name, _postgres_savers(pg_dsn, pg_schema)[name], tmp_path)
