"""What is particular to the Postgres savers: the connections LangGraph users hand them."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

from snapstate import ConfigurationError

pytestmark = pytest.mark.postgres


def roundtrip(saver: Any) -> Any:
    thread = str(uuid.uuid4())
    cp = generate_checkpoint(channel_values={"x": [1, "two"]}, channel_versions={"x": 1})
    cfg = saver.put({"configurable": {"thread_id": thread, "checkpoint_ns": ""}}, cp, {}, {"x": 1})
    saver.put_writes(cfg, [("x", 3)], "task")
    return saver.get_tuple({"configurable": {"thread_id": thread}})


def test_langgraphs_connection_settings_and_plain_ones(pg_dsn: str, pg_schema: str) -> None:
    import psycopg
    from psycopg.rows import dict_row

    from snapstate.langgraph import PostgresSaver

    # As LangGraph's docs open it, and as psycopg opens it by default.
    with psycopg.connect(
        pg_dsn, autocommit=True, prepare_threshold=0, row_factory=dict_row
    ) as conn:
        got = roundtrip(PostgresSaver(conn, schema=pg_schema))
        assert got.checkpoint["channel_values"] == {"x": [1, "two"]}
    with psycopg.connect(pg_dsn) as conn:
        got = roundtrip(PostgresSaver(conn, schema=pg_schema))
        assert got.pending_writes == [("task", "x", 3)]
        assert conn.autocommit is False  # given back as it was


def test_pipelines(pg_dsn: str, pg_schema: str) -> None:
    import psycopg

    from snapstate.langgraph import PostgresSaver

    with PostgresSaver.from_conn_string(pg_dsn, pipeline=True, schema=pg_schema) as saver:
        assert roundtrip(saver).checkpoint["channel_values"] == {"x": [1, "two"]}
    # A backend option, not an engine one: it reaches the backend.
    with PostgresSaver.from_conn_string(pg_dsn, schema=pg_schema, write_concurrency=1) as saver:
        assert saver._shared.backend.write_concurrency == 1
        assert roundtrip(saver).checkpoint["channel_values"] == {"x": [1, "two"]}
    with PostgresSaver.from_conn_string(pg_dsn, schema=pg_schema, server_timeout=2.5) as saver:
        assert saver._shared.backend._cfg.server_timeout == 2.5
        assert roundtrip(saver).checkpoint["channel_values"] == {"x": [1, "two"]}
    with psycopg.connect(pg_dsn, autocommit=True) as conn, conn.pipeline() as pipe:
        with pytest.raises(ConfigurationError, match="pipeline"):
            PostgresSaver(conn, pipe, schema=pg_schema)


async def test_async_from_conn_string(pg_dsn: str, pg_schema: str) -> None:
    from snapstate.langgraph import AsyncPostgresSaver

    async with AsyncPostgresSaver.from_conn_string(
        pg_dsn, pipeline=True, schema=pg_schema
    ) as saver:
        await saver.setup()
        thread = str(uuid.uuid4())
        cp = generate_checkpoint(channel_values={"x": 1}, channel_versions={"x": 1})
        cfg = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        stored = await saver.aput(cfg, cp, {}, {"x": 1})
        got = await saver.aget_tuple(stored)
        assert got.checkpoint["id"] == cp["id"]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_connection_alone_stores_in_the_public_schema(pg_dsn: str, kind: str) -> None:
    # LangGraph's own call, PostgresSaver(conn) with nothing else, on a database of its own
    # (so that the test database's public schema stays empty).
    import psycopg
    from psycopg.conninfo import make_conninfo

    from snapstate.langgraph import AsyncPostgresSaver, PostgresSaver

    name = f"snapstate_ctor_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = make_conninfo(pg_dsn, dbname=name)
        if kind == "sync":
            with psycopg.connect(dsn, autocommit=True) as conn:
                saver = PostgresSaver(conn)
                saver.setup()
                got = roundtrip(saver)
                saver.close()
        else:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
                asaver = AsyncPostgresSaver(aconn)
                await asaver.setup()
                thread = str(uuid.uuid4())
                cp = generate_checkpoint(
                    channel_values={"x": [1, "two"]}, channel_versions={"x": 1}
                )
                cfg = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
                stored = await asaver.aput(cfg, cp, {}, {"x": 1})
                await asaver.aput_writes(stored, [("x", 3)], "task")
                got = await asaver.aget_tuple({"configurable": {"thread_id": thread}})
                await asaver.aclose()
        assert got.checkpoint["channel_values"] == {"x": [1, "two"]}
        assert got.pending_writes == [("task", "x", 3)]
        with psycopg.connect(dsn, autocommit=True) as conn:
            tables = {
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                )
            }
        assert {"checkpoints", "blobs", "writes"} <= tables
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
