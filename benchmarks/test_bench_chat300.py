"""pytest-benchmark: a LangGraph chat graph of 300 turns, storage measured on the real graph.

For each saver (ours and LangGraph's, SQLite and PostgreSQL) one thread of 300 turns (600
steps, LangGraph's default ``async`` durability) runs through ``graph.stream``. Recorded:

- bytes stored per checkpoint (SQLite: live pages of the file; PostgreSQL: total relation size of
  the saver's tables in its own schema);
- the saver's own cost per step, timed inside its ``put`` and ``put_writes`` (what the graph
  runtime does around them grows with the thread for every saver, so it is left out), over the
  first five turns and the last five;
- reading the whole history with ``get_state_history`` (timed as the benchmark).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from .bench_langgraph import chat_graph
from .workloads import sqlite_bytes

TURNS = int(os.environ.get("SNAPSTATE_BENCH_CHAT_TURNS", "300"))
SAVERS = ["snapstate-sqlite", "langgraph-sqlite", "snapstate-postgres", "langgraph-postgres"]


@contextlib.contextmanager
def _saver(name: str, tmp: str, request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any]]:
    """The saver and a function returning the bytes it stores."""
    if name.endswith("sqlite"):
        path = os.path.join(tmp, f"{name}.db")
        conn = sqlite3.connect(path, check_same_thread=False)
        try:
            if name.startswith("snapstate"):
                from snapstate.langgraph import SqliteSaver

                saver: Any = SqliteSaver(conn)
            else:
                from langgraph.checkpoint.sqlite import SqliteSaver as Upstream

                saver = Upstream(conn)
            saver.setup()
            yield saver, lambda: sqlite_bytes(path)
        finally:
            conn.close()
        return
    import psycopg

    from .bench_postgres import DSN as dsn
    from .bench_postgres import _in_schema, server_available

    if not server_available(dsn):
        pytest.skip(f"PostgreSQL at {dsn} is not reachable")

    schema = "chat300_" + uuid.uuid4().hex[:10]
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:

        def size() -> int:
            with psycopg.connect(dsn, autocommit=True) as c:
                row = c.execute(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = %s AND c.relkind = 'r'",
                    (schema,),
                ).fetchone()
                return int(row[0]) if row else 0

        if name.startswith("snapstate"):
            from snapstate.langgraph import PostgresSaver

            with PostgresSaver.from_conn_string(dsn, schema=schema) as saver:
                saver.setup()
                yield saver, size
        else:
            from langgraph.checkpoint.postgres import PostgresSaver as Upstream

            with Upstream.from_conn_string(_in_schema(dsn, schema)) as saver:
                saver.setup()
                yield saver, size
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


class _Timed:
    """Adds up the seconds spent inside a saver's put and put_writes."""

    def __init__(self, saver: Any) -> None:
        self.seconds = 0.0
        for method in ("put", "put_writes"):
            inner = getattr(saver, method)

            def timed(*args: Any, _inner: Any = inner, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return _inner(*args, **kwargs)
                finally:
                    self.seconds += time.perf_counter() - start

            setattr(saver, method, timed)


@pytest.mark.parametrize("name", SAVERS)
def test_chat_graph_300_turns(
    benchmark: Any, name: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    benchmark.group = f"LangGraph chat graph, {TURNS} turns: storage and history"
    with _saver(name, str(tmp_path), request) as (saver, stored_bytes):
        timer = _Timed(saver)
        graph = chat_graph(TURNS).compile(checkpointer=saver)
        cfg = {"configurable": {"thread_id": "chat"}, "recursion_limit": 10_000}
        per_step: list[float] = []
        last = 0.0
        for _ in graph.stream({"messages": []}, cfg, stream_mode="updates", durability="sync"):
            per_step.append(timer.seconds - last)
            last = timer.seconds
        checkpoints = sum(1 for _ in saver.list(cfg))

        def history() -> int:
            return sum(1 for _ in graph.get_state_history(cfg))

        n = benchmark.pedantic(history, rounds=3, iterations=1)
        assert n == checkpoints
        first, final = per_step[:10], per_step[-10:]  # five turns = ten steps
        benchmark.extra_info.update(
            role="ours" if name.startswith("snapstate") else "anchor",
            checkpoints=checkpoints,
            bytes_per_checkpoint=stored_bytes() / checkpoints,
            first5_saver_ms=sum(first) / len(first) * 1e3,
            last5_saver_ms=sum(final) / len(final) * 1e3,
            last5_over_first5=sum(final) / sum(first),
        )
