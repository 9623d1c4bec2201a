"""The PostgreSQL backends: connection modes, configuration, schema, SQL semantics, errors.

Every behaviour test runs against both :class:`PostgresBackend` and
:class:`AsyncPostgresBackend` (the ``pg`` fixture awaits either), so the twins cannot drift.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import inspect
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import psycopg
import psycopg_pool
import pytest
from psycopg.rows import dict_row, tuple_row

from snapstate import AsyncCheckpointer, Checkpoint, Checkpointer
from snapstate.backends import (
    BLOB_DELTA,
    BLOB_FULL,
    BlobRow,
    CheckpointRow,
    ListQuery,
    WriteBatch,
    WriteRow,
)
from snapstate.backends import _pg_direct as direct
from snapstate.backends import _pg_sql as pg_sql
from snapstate.backends._base import PAYLOAD_MIN_BYTES
from snapstate.backends.postgres import MIGRATIONS, AsyncPostgresBackend, PostgresBackend
from snapstate.errors import (
    ConfigurationError,
    EncodeError,
    InvalidArgumentError,
    MigrationError,
    SchemaVersionError,
    StorageError,
    StoreUnavailableError,
    ThreadDeletedError,
)
from tests.pg_hold import HeldMidBatch, wait_for_mid_batch_waiter

pytestmark = pytest.mark.postgres

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/test"


class Awaitable:
    """Either backend behind awaitable methods: the shared suite awaits both the same way."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.backend, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            if inspect.isgenerator(result) or type(result).__name__ == "list_iterator":
                result = list(result)
            return result

        return call


@pytest.fixture(params=["sync", "async"])
async def pg(request: pytest.FixtureRequest, pg_dsn: str, pg_schema: str) -> AsyncIterator[Any]:
    cls = PostgresBackend if request.param == "sync" else AsyncPostgresBackend
    b = Awaitable(cls(pg_dsn, schema=pg_schema))
    await b.setup()
    yield b
    await b.close()


@pytest.fixture
async def async_backend_factory(
    pg_dsn: str, pg_schema: str
) -> AsyncIterator[Callable[[], AsyncPostgresBackend]]:
    """Makes asyncio backends on one fresh schema (for asyncio contract tests)."""
    made: list[AsyncPostgresBackend] = []

    def factory() -> AsyncPostgresBackend:
        b = AsyncPostgresBackend(pg_dsn, schema=pg_schema)
        made.append(b)
        return b

    yield factory
    for b in made:
        await b.close()


def row(tid: str, cid: str, parent: str | None = None, meta: bytes = b"{}") -> CheckpointRow:
    return CheckpointRow(tid, "", cid, parent, None, 1.5, meta, b"\x01skeleton")


def blob(tid: str, ch: str, v: str, kind: int = BLOB_FULL, base: str | None = None) -> BlobRow:
    return BlobRow(tid, "", ch, v, kind, base, f"{ch}@{v}".encode())


def write(tid: str, cid: str, idx: int, data: bytes = b"w") -> WriteRow:
    return WriteRow(tid, "", cid, "task", idx, "ch", "", data)


# -- storage semantics, both twins -------------------------------------------------------------


async def test_write_and_load_in_one_batch(pg: Any) -> None:
    await pg.write(
        WriteBatch(
            checkpoints=[row("t", "1")],
            blobs=[blob("t", "a", "1")],
            writes=[write("t", "1", 0), write("t", "1", 1)],
        )
    )
    loaded = await pg.load("t", "", None)
    assert loaded is not None
    got, blobs, writes = loaded
    assert got == row("t", "1") and blobs == []
    assert sorted(w.idx for w in writes) == [0, 1]
    assert await pg.load("t", "", "nope") is None
    assert (await pg.load("t", "", "1"))[0] == got
    assert await pg.get_checkpoint("t", "", None) == got


async def test_get_blobs_follows_delta_bases_in_one_call(pg: Any) -> None:
    rows = [blob("t", "m", "1")]
    rows += [blob("t", "m", str(v), BLOB_DELTA, str(v - 1)) for v in range(2, 40)]
    rows.append(blob("t", "other", "1"))
    await pg.write(WriteBatch(blobs=rows))
    got = await pg.get_blobs("t", "", [("m", "39")])
    assert sorted(int(b.version) for b in got) == list(range(1, 40))
    assert {b.channel for b in got} == {"m"}
    assert await pg.get_blobs("t", "", []) == []
    assert await pg.get_blobs("t", "", [("m", "99")]) == []


async def test_merged_batch_keeps_sequential_semantics(pg: Any) -> None:
    # A batch that names a key twice (group commit merges puts) stores what applying its
    # parts in order would: the last checkpoint, the first plain write, a replacing write.
    await pg.write(
        WriteBatch(
            checkpoints=[row("t", "1", meta=b'{"v":1}'), row("t", "1", meta=b'{"v":2}')],
            blobs=[blob("t", "a", "1"), blob("t", "a", "1")],
            writes=[write("t", "1", 0, b"first"), write("t", "1", 0, b"second")],
            replace_writes=[write("t", "1", 1, b"r1"), write("t", "1", 1, b"r2")],
        )
    )
    got = await pg.get_checkpoint("t", "", "1")
    assert got.metadata == b'{"v": 2}'
    writes = {w.idx: w.data for w in await pg.get_writes("t", "", ["1"])}
    assert writes == {0: b"first", 1: b"r2"}
    await pg.write(WriteBatch(writes=[write("t", "1", 0, b"again")]))  # insert-or-ignore
    await pg.write(WriteBatch(replace_writes=[write("t", "1", 0, b"replaced")]))
    writes = {w.idx: w.data for w in await pg.get_writes("t", "", ["1"])}
    assert writes == {0: b"replaced", 1: b"r2"}


async def test_list_filter_has_json_equality(pg: Any) -> None:
    metas = {
        "1": b'{"flag": true, "n": 1, "obj": {"a": 1, "b": [1, 2]}, "s": "x", "z": null}',
        "2": b'{"flag": 1, "n": 1.0, "obj": {"b": [1, 2], "a": 1}, "s": "1"}',
        "3": b'{"other": 0}',
    }
    await pg.write(WriteBatch(checkpoints=[row("t", k, meta=v) for k, v in metas.items()]))

    async def ids(**filter: Any) -> list[str]:
        rows = await pg.list_checkpoints(ListQuery(thread_id="t", filter=filter))
        return [r.checkpoint_id for r in rows]

    assert await ids(flag=True) == ["1"]  # true is not 1
    assert await ids(flag=1) == ["2"]
    assert await ids(n=1) == ["2", "1"]  # 1 == 1.0
    assert await ids(obj={"b": [1, 2], "a": 1}) == ["2", "1"]  # key order is irrelevant
    assert await ids(obj={"a": 1}) == []  # equality, not containment
    assert await ids(z=None) == ["1"]  # null matches a present null, not a missing key
    assert await ids(s=1) == []
    assert await ids(s="1") == ["2"]
    assert await ids(**{"it's": "x"}) == []  # bound, never interpolated
    rows = await pg.list_checkpoints(ListQuery(thread_id="t", before="3", limit=1))
    assert [r.checkpoint_id for r in rows] == ["2"]


async def test_checkpoint_ids_order_bytewise(pg: Any) -> None:
    ids = ["a-1", "a1", "B", "b", "a_2", "Z"]
    await pg.write(WriteBatch(checkpoints=[row("t", i) for i in ids]))
    rows = await pg.list_checkpoints(ListQuery(thread_id="t"))
    assert [r.checkpoint_id for r in rows] == sorted(ids, reverse=True)
    assert (await pg.get_checkpoint("t", "", None)).checkpoint_id == "b"


async def test_nul_in_metadata_names_the_key(pg: Any) -> None:
    with pytest.raises(EncodeError, match=r"metadata key 'note' of checkpoint '1'.*NUL"):
        await pg.write(WriteBatch(checkpoints=[row("t", "1", meta=b'{"ok":1,"note":"a\\u0000"}')]))
    # An escaped backslash followed by "u0000" is no NUL and is stored as is.
    await pg.write(WriteBatch(checkpoints=[row("t", "2", meta=b'{"p":"C:\\\\u0000"}')]))
    assert (await pg.get_checkpoint("t", "", "2")).metadata == b'{"p": "C:\\\\u0000"}'
    with pytest.raises(InvalidArgumentError, match=r"0x00.*text cannot hold NUL"):
        await pg.write(WriteBatch(checkpoints=[row("t\x00", "1")]))
    assert await pg.get_checkpoint("t", "", "1") is None


async def test_delete_threads_leaves_tombstones(pg: Any) -> None:
    await pg.write(WriteBatch(checkpoints=[row("t", "5")], writes=[write("t", "7", 0)]))
    await pg.write(WriteBatch(checkpoints=[row("keep", "1")]))
    await pg.delete_threads(["t", "never-written"])
    assert await pg.get_checkpoint("t", "", None) is None
    assert await pg.get_checkpoint("keep", "", None) is not None
    with pytest.raises(ThreadDeletedError, match=r"checkpoint '6'"):
        await pg.write(WriteBatch(checkpoints=[row("t", "6")], blobs=[blob("t", "a", "6")]))
    assert await pg.get_blobs("t", "", [("a", "6")]) == []  # refused whole
    with pytest.raises(ThreadDeletedError, match="writes of task 'task'"):
        await pg.write(WriteBatch(writes=[write("t", "7", 1)]))
    await pg.write(WriteBatch(checkpoints=[row("t", "8")]))  # a new history
    assert await pg.purge_tombstones(0.0) == 0
    assert await pg.purge_tombstones(float("inf")) == 1


async def test_delete_rows_copy_thread_and_stats(pg: Any) -> None:
    await pg.write(
        WriteBatch(
            checkpoints=[row("t", "1"), row("t", "2", parent="1"), row("t", "3", parent="2")],
            blobs=[blob("t", "a", "1"), blob("t", "a", "2")],
            writes=[write("t", "1", 0), write("t", "2", 0)],
        )
    )
    await pg.copy_thread("t", "copy")
    await pg.delete_rows("t", [("", "1"), ("", "2")], [("", "a", "1")])
    left = await pg.list_checkpoints(ListQuery(thread_id="t"))
    assert [(r.checkpoint_id, r.parent_id) for r in left] == [("3", None)]
    assert [(b.channel, b.version) for b in await pg.blob_index("t")] == [("a", "2")]
    assert await pg.get_writes("t", "", ["1", "2"]) == []
    copied = await pg.list_checkpoints(ListQuery(thread_id="copy"))
    assert [r.checkpoint_id for r in copied] == ["3", "2", "1"]
    assert len(await pg.get_writes("copy", "", ["1", "2"])) == 2
    stats = await pg.stats()
    assert (stats.threads, stats.checkpoints, stats.blobs, stats.writes) == (2, 4, 3, 2)
    assert stats.channels == {"a": (3, 9)} and stats.file_bytes > 0
    threads = await pg.threads()
    assert [(t.thread_id, t.checkpoints) for t in threads] == [("copy", 3), ("t", 1)]


async def test_engine_round_trip_sync_and_async(pg_dsn: str, pg_schema: str) -> None:
    with Checkpointer(PostgresBackend(pg_dsn, schema=pg_schema)) as cp:
        msgs: list[str] = []
        for i in range(40):
            msgs = [*msgs, f"m{i}"]
            cp.put(
                Checkpoint(id=f"{i:04d}", channel_values={"m": msgs}, channel_versions={"m": i}),
                thread_id="t",
            )
    async with AsyncCheckpointer(AsyncPostgresBackend(pg_dsn, schema=pg_schema)) as acp:
        snap = await acp.get("t")
        assert snap is not None and snap.checkpoint.channel_values["m"] == msgs
        await acp.put(
            Checkpoint(id="9999", channel_values={"m": [*msgs, "x"]}, channel_versions={"m": 99}),
            thread_id="t",
        )
        assert len([s async for s in acp.list("t")]) == 41


async def test_async_contract_factory(async_backend_factory: Callable[[], Any]) -> None:
    async with AsyncCheckpointer(async_backend_factory(), durability="batched") as cp:
        for i in range(10):
            await cp.put(
                Checkpoint(id=f"{i:02d}", channel_values={"x": i}, channel_versions={"x": i}),
                thread_id=f"t{i % 2}",
            )
        assert (await cp.get("t1")).checkpoint.channel_values == {"x": 9}


# -- connections ---------------------------------------------------------------------------------


def _prepared(conn: psycopg.Connection[Any]) -> int:
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute("SELECT count(*) FROM pg_prepared_statements")
        return int(cur.fetchone()[0])


@pytest.mark.parametrize("prepare", [True, False], ids=["prepare=on", "prepare=off"])
def test_given_connection_is_configured_and_restored(
    pg_dsn: str, pg_schema: str, prepare: bool
) -> None:
    conn = psycopg.connect(pg_dsn, autocommit=False, row_factory=dict_row)
    try:
        with Checkpointer(PostgresBackend(conn, schema=pg_schema, prepare=prepare)) as cp:
            for i in range(12):
                cp.put(
                    Checkpoint(id=f"{i:02d}", channel_values={"x": i}, channel_versions={"x": i}),
                    thread_id="t",
                )
                assert cp.get("t") is not None
            assert conn.autocommit is False  # switched for each call, then back
            assert cp.backend.write_concurrency == 1  # one connection: one transaction at a time
            conn.rollback()
            # Without prepared statements nothing is left in the session for a PgBouncer in
            # transaction mode to lose.
            assert (_prepared(conn) > 0) is prepare
            conn.rollback()
        assert not conn.closed  # a given connection belongs to the caller
    finally:
        conn.close()


def test_given_connection_inside_a_transaction_is_refused(pg_dsn: str, pg_schema: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("SELECT 1")  # opens a transaction (autocommit off)
        backend = PostgresBackend(conn, schema=pg_schema)
        with pytest.raises(ConfigurationError, match=r"not idle.*commit or roll back"):
            backend.setup()


def _small(i: int) -> Checkpoint:
    return Checkpoint(id=f"{i:02d}", channel_values={"x": i}, channel_versions={"x": i})


@pytest.mark.timeout(90)
@pytest.mark.parametrize("pool_from", ["given", "owned"])
def test_a_call_held_in_the_server_holds_up_no_other_call(
    pg_dsn: str, pg_schema: str, pool_from: str
) -> None:
    with contextlib.ExitStack() as stack:
        if pool_from == "given":
            pool = stack.enter_context(
                psycopg_pool.ConnectionPool(
                    pg_dsn, min_size=2, max_size=4, kwargs={"row_factory": dict_row}, open=True
                )
            )
            backend = PostgresBackend(pool, schema=pg_schema)
        else:
            backend = PostgresBackend(pg_dsn, schema=pg_schema, max_connections=4)
        # LangGraph's pending writes and checkpoint commit side by side, not one after the other.
        assert backend.write_concurrency == 2
        cp = stack.enter_context(Checkpointer(backend))
        cp.put(_small(0), thread_id="other")  # the tables exist before the hold is set up
        held = HeldMidBatch(pg_dsn, pg_schema, "held")
        try:
            stuck: dict[str, BaseException | None] = {}
            a = threading.Thread(
                target=lambda: _record(stuck, lambda: cp.put(_small(1), thread_id="held"))
            )
            a.start()
            wait_for_mid_batch_waiter(pg_dsn, pg_schema, set())
            # Meanwhile a write and reads of another thread go through the same saver.
            done: dict[str, BaseException | None] = {}

            def other_calls() -> None:
                cp.put(_small(2), thread_id="other")
                snap = cp.get("other")
                assert snap is not None and snap.checkpoint.id == "02"
                assert [s.checkpoint.id for s in cp.list("other")] == ["02", "00"]

            b = threading.Thread(target=lambda: _record(done, other_calls))
            b.start()
            b.join(30)
            assert done == {"error": None}, "calls of another thread waited for a held one"
            assert a.is_alive() and not stuck  # the held put is still held
        finally:
            held.release()
        a.join(30)
        assert stuck == {"error": None}
        assert cp.get("held").checkpoint.id == "01"
        if pool_from == "given":
            assert not pool.closed


def _record(into: dict[str, BaseException | None], call: Callable[[], Any]) -> None:
    try:
        call()
    except BaseException as exc:
        into["error"] = exc
    else:
        into["error"] = None


@pytest.mark.timeout(90)
async def test_an_async_call_held_in_the_server_holds_up_no_other_call(
    pg_dsn: str, pg_schema: str
) -> None:
    cp = AsyncCheckpointer(AsyncPostgresBackend(pg_dsn, schema=pg_schema, max_connections=4))
    await cp.put(_small(0), thread_id="other")
    held = HeldMidBatch(pg_dsn, pg_schema, "held")
    try:
        stuck = asyncio.ensure_future(cp.put(_small(1), thread_id="held"))
        await asyncio.to_thread(wait_for_mid_batch_waiter, pg_dsn, pg_schema, set())

        async def other_calls() -> None:
            await cp.put(_small(2), thread_id="other")
            snap = await cp.get("other")
            assert snap is not None and snap.checkpoint.id == "02"

        await asyncio.wait_for(other_calls(), 30)
        assert not stuck.done()
    finally:
        await asyncio.to_thread(held.release)
    await asyncio.wait_for(stuck, 30)
    snap = await cp.get("held")
    assert snap is not None and snap.checkpoint.id == "01"
    await cp.aclose()


def test_threads_first_using_an_owned_pool_wait_until_it_is_open(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A backend given a conninfo opens its pool on first use. Threads arriving while one of
    # them opens it must wait for it, never take it before it is open (psycopg_pool then
    # reports it closed). Opening is slowed down here so that they all arrive meanwhile.
    real_open = psycopg_pool.ConnectionPool.open

    def slow_open(self: Any, *args: Any, **kwargs: Any) -> None:
        time.sleep(0.2)
        real_open(self, *args, **kwargs)

    monkeypatch.setattr(psycopg_pool.ConnectionPool, "open", slow_open)
    backend = PostgresBackend(pg_dsn, schema=pg_schema, max_connections=4)
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def first_call() -> None:
        start.wait()
        try:
            backend.setup()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert [m.applied_at is not None for m in backend.migration_status()] == [True] * len(
            MIGRATIONS
        )
    finally:
        backend.close()


@pytest.mark.parametrize("held", [False, True])
def test_a_forked_child_opens_a_pool_of_its_own(pg_dsn: str, pg_schema: str, held: bool) -> None:
    """The child neither uses nor closes the parent's pool (their sessions are the parent's)
    and works through its own. ``held``: the lock that guards the pool is held at the fork, as
    by a thread the child does not have."""
    from .forking import child_ok

    def ck(i: int) -> Checkpoint:
        return Checkpoint(id=f"{i:02d}", channel_values={"x": i}, channel_versions={"x": i})

    backend = PostgresBackend(pg_dsn, schema=pg_schema, max_connections=2)
    with Checkpointer(backend) as cp:
        cp.put(ck(1), thread_id="parent")
        parents = backend._pool

        def in_child() -> bool:
            cp.put(ck(2), thread_id="child")
            got = cp.get("child")
            return got is not None and backend._pool is not parents

        assert child_ok(in_child, held=backend._pool_lock if held else None)
        assert backend._pool is parents
        cp.put(ck(3), thread_id="parent")  # the parent's sessions are intact
        assert cp.get("parent").checkpoint.id == "03"
        assert cp.get("child").checkpoint.id == "02"


async def test_async_connection_and_pool(pg_dsn: str, pg_schema: str) -> None:
    conn = await psycopg.AsyncConnection.connect(pg_dsn)
    try:
        async with AsyncCheckpointer(AsyncPostgresBackend(conn, schema=pg_schema)) as cp:
            commits = _count_commits(cp.backend)
            await asyncio.gather(
                *(
                    cp.put(
                        Checkpoint(id="1", channel_values={"x": i}, channel_versions={"x": 1}),
                        thread_id=f"t{i}",
                    )
                    for i in range(8)
                )
            )
            # One connection: one commit at a time, the puts that arrive meanwhile grouped.
            assert sum(commits) == 8 and len(commits) < 8, commits
        assert conn.autocommit is False and not conn.closed
    finally:
        await conn.close()
    async with psycopg_pool.AsyncConnectionPool(pg_dsn, min_size=1, max_size=3, open=False) as p:
        async with AsyncCheckpointer(AsyncPostgresBackend(p, schema=pg_schema)) as cp:
            assert cp.backend.write_concurrency == 2
            snaps = await asyncio.gather(*(cp.get(f"t{i}") for i in range(8)))
            assert sorted(s.checkpoint.channel_values["x"] for s in snaps) == list(range(8))
            # Two commits at a time, the rest grouped: every concurrent put is stored.
            commits = _count_commits(cp.backend)
            await asyncio.gather(
                *(
                    cp.put(
                        Checkpoint(id="2", channel_values={"x": -i}, channel_versions={"x": 2}),
                        thread_id=f"t{i}",
                    )
                    for i in range(8)
                )
            )
            snaps = await asyncio.gather(*(cp.get(f"t{i}") for i in range(8)))
            assert sorted(s.checkpoint.channel_values["x"] for s in snaps) == [
                -i for i in range(7, -1, -1)
            ]
            assert sum(commits) == 8 and len(commits) < 8, commits


def _count_commits(backend: Any) -> list[int]:
    """The checkpoints in each of ``backend``'s writes from now on, one entry a write."""
    commits: list[int] = []
    real = backend.write

    async def write(batch: WriteBatch) -> None:
        commits.append(len(batch.checkpoints))
        await real(batch)

    backend.write = write
    return commits


def test_write_concurrency_follows_the_pool_size(pg_dsn: str) -> None:
    assert PostgresBackend(pg_dsn).write_concurrency == 2
    assert PostgresBackend(pg_dsn, write_concurrency=1).write_concurrency == 1
    assert PostgresBackend(pg_dsn, write_concurrency=4).write_concurrency == 4
    assert PostgresBackend(pg_dsn, max_connections=3, write_concurrency=4).write_concurrency == 3
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ConfigurationError, match="write_concurrency must be an int >= 1"):
            PostgresBackend(pg_dsn, write_concurrency=bad)  # type: ignore[arg-type]
    with psycopg.connect(pg_dsn) as conn:
        with pytest.raises(ConfigurationError, match="write_concurrency=2 needs a pool"):
            PostgresBackend(conn, write_concurrency=2)
        assert PostgresBackend(conn, write_concurrency=1).write_concurrency == 1
    assert AsyncPostgresBackend(pg_dsn, max_connections=1).write_concurrency == 1
    assert PostgresBackend(pg_dsn, max_connections=1).write_concurrency == 1
    assert (
        PostgresBackend(
            psycopg_pool.ConnectionPool(pg_dsn, min_size=1, max_size=1, open=False)
        ).write_concurrency
        == 1
    )


def test_wrong_connection_types_are_refused(pg_dsn: str) -> None:
    with pytest.raises(ConfigurationError, match="use AsyncPostgresBackend"):
        PostgresBackend(psycopg_pool.AsyncConnectionPool(pg_dsn, open=False))
    with pytest.raises(ConfigurationError, match="use PostgresBackend"):
        AsyncPostgresBackend(psycopg_pool.ConnectionPool(pg_dsn, open=False))
    with pytest.raises(ConfigurationError, match="takes a conninfo string"):
        PostgresBackend(42)
    with pytest.raises(ConfigurationError, match="prepare must be True or False"):
        PostgresBackend(pg_dsn, prepare="no")  # type: ignore[arg-type]


# -- schema and migrations ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "1abc", 'a"b', "a;drop", "x" * 64, "a b"])
def test_schema_name_is_validated(pg_dsn: str, name: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid PostgreSQL schema name"):
        PostgresBackend(pg_dsn, schema=name)


def test_schema_option_isolates_stores(pg_dsn: str, pg_schema: str) -> None:
    other = pg_schema + "_b"
    try:
        with (
            Checkpointer(PostgresBackend(pg_dsn, schema=pg_schema)) as a,
            Checkpointer(PostgresBackend(pg_dsn, schema=other)) as b,
        ):
            a.put(
                Checkpoint(id="1", channel_values={"x": 1}, channel_versions={"x": 1}),
                thread_id="t",
            )
            assert b.get("t") is None  # created its own schema, sees nothing of the other
        with psycopg.connect(pg_dsn) as conn:
            tables = {
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    [other],
                )
            }
        assert {"checkpoints", "blobs", "writes", "settings", "schema_migrations"} <= tables
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')


def test_setup_records_named_migrations_and_stores_blobs_uncompressed(
    pg_dsn: str, pg_schema: str
) -> None:
    conn = psycopg.connect(pg_dsn)  # autocommit off: setup uses its own transaction anyway
    try:
        backend = PostgresBackend(conn, schema=pg_schema)
        backend.setup()
        backend.setup()  # idempotent
        rows = conn.execute(
            f'SELECT id, name FROM "{pg_schema}".schema_migrations ORDER BY id'
        ).fetchall()
        assert rows == [(m[0], m[1]) for m in MIGRATIONS]
        storage = conn.execute(
            "SELECT a.attstorage FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = 'blobs' AND a.attname = 'data'",
            [pg_schema],
        ).fetchone()
        assert storage == ("e",)  # EXTERNAL: out of line, never pglz-compressed again
        conn.rollback()
    finally:
        conn.close()


def test_unknown_migration_raises_schema_version_error(pg_dsn: str, pg_schema: str) -> None:
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    backend.setup()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO \"{pg_schema}\".schema_migrations (id, name) VALUES (999, 'future')"
        )
    with pytest.raises(
        SchemaVersionError, match=rf"migrations \[999\].*knows up to {MIGRATIONS[-1][0]}"
    ):
        backend.setup()
    backend.close()


def test_missing_schema_is_a_migration_error_with_a_hint(pg_dsn: str, pg_schema: str) -> None:
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    with pytest.raises(MigrationError, match=r"tables are missing.*call setup"):
        backend.get_checkpoint("t", "", None)
    backend.close()


def test_concurrent_setup_from_four_processes(pg_dsn: str, pg_schema: str) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from snapstate.backends.postgres import PostgresBackend
        start = float(sys.argv[1])
        while time.time() < start:
            time.sleep(0.001)
        PostgresBackend({pg_dsn!r}, schema={pg_schema!r}).setup()
        print("ok")
        """
    )
    import time

    start = str(time.time() + 1.5)  # all four begin together
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, start], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
        assert out.strip() == b"ok"
    with psycopg.connect(pg_dsn) as conn:
        ids = [r[0] for r in conn.execute(f'SELECT id FROM "{pg_schema}".schema_migrations')]
    assert sorted(ids) == [m[0] for m in MIGRATIONS]


# -- unavailable servers -------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_unreachable_server_fails_fast_with_a_clear_error() -> None:
    # pool_timeout is far longer than the test may run: the error cannot come from waiting it out.
    backend = PostgresBackend(UNREACHABLE, pool_timeout=600)
    with pytest.raises(StoreUnavailableError) as info:
        backend.setup()
    text = str(info.value)
    assert "cannot connect to PostgreSQL at 127.0.0.1:1/test while applying schema" in text
    assert "refused" in text.lower() or "connect" in text.lower()
    with pytest.raises(StoreUnavailableError):
        backend.get_checkpoint("t", "", None)
    backend.close()


@pytest.mark.timeout(30)
async def test_unreachable_server_fails_fast_async() -> None:
    backend = AsyncPostgresBackend(UNREACHABLE, pool_timeout=600)
    with pytest.raises(StoreUnavailableError, match=r"cannot connect to PostgreSQL at 127.0.0.1:1"):
        await backend.setup()
    await backend.close()


@pytest.mark.timeout(30)
def test_a_busy_pool_with_a_server_that_answers_times_out_after_one_look(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pool that once failed to connect (its count of failures is not zero) and whose
    connections are all taken: the first wait looks whether the server answers, finds it does,
    and from then on the caller waits out ``pool_timeout``; no look at the next call either."""
    pool = psycopg_pool.ConnectionPool(pg_dsn, min_size=1, max_size=1, open=True)
    pool.wait()
    backend = PostgresBackend(pool, schema=pg_schema, pool_timeout=0.6)
    backend.setup()
    real_stats = pool.get_stats
    monkeypatch.setattr(pool, "get_stats", lambda: {**real_stats(), "connections_errors": 3})
    probes: list[str | None] = []
    real_probe = backend._probe

    def probe(p: Any) -> str | None:
        probes.append(real_probe(p))
        return probes[-1]

    monkeypatch.setattr(backend, "_probe", probe)
    held = pool.getconn()
    try:
        for _ in range(2):
            start = time.monotonic()
            with pytest.raises(StoreUnavailableError, match=r"no connection .* became free"):
                backend.get_checkpoint("t", "", None)
            assert time.monotonic() - start >= 0.6
        assert probes == [None]  # one look, which found the server answering
    finally:
        pool.putconn(held)
        backend.close()
        pool.close()


def test_closed_given_connection_and_closed_backend(pg_dsn: str, pg_schema: str) -> None:
    conn = psycopg.connect(pg_dsn, autocommit=True)
    backend = PostgresBackend(conn, schema=pg_schema)
    backend.setup()
    conn.close()
    with pytest.raises(StoreUnavailableError, match="given to snapstate is closed"):
        backend.get_checkpoint("t", "", None)
    owned = PostgresBackend(pg_dsn, schema=pg_schema)
    owned.close()
    with pytest.raises(StoreUnavailableError, match="is closed"):
        owned.get_checkpoint("t", "", None)


def test_other_server_errors_are_storage_errors(pg_dsn: str, pg_schema: str) -> None:
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    backend.setup()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'ALTER TABLE "{pg_schema}".checkpoints ADD CHECK (created_at < 0)')
    with pytest.raises(StorageError, match=r"error while writing a batch.*check constraint"):
        backend.write(WriteBatch(checkpoints=[row("t", "1")]))
    backend.close()


def test_a_full_server_disk_is_a_clear_error_that_stores_nothing(
    pg_dsn: str, pg_schema: str
) -> None:
    # The shared test server's disk cannot be filled; a trigger makes the server report what
    # it reports then (SQLSTATE 53100, "could not extend file ...") from inside the write's
    # one statement, which also inserts its blobs.
    cp = Checkpointer(PostgresBackend(pg_dsn, schema=pg_schema))
    for i in range(3):
        cp.put(
            Checkpoint(id=f"{i:02d}", channel_values={"x": [i] * 50}, channel_versions={"x": i}),
            thread_id="t",
        )
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            f'CREATE FUNCTION "{pg_schema}".full_disk() RETURNS trigger LANGUAGE plpgsql AS '
            "$$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' "
            "USING ERRCODE = '53100'; END $$"
        )
        conn.execute(
            f'CREATE TRIGGER full_disk BEFORE INSERT ON "{pg_schema}".checkpoints '
            f'FOR EACH ROW EXECUTE FUNCTION "{pg_schema}".full_disk()'
        )
        blobs_before = conn.execute(f'SELECT count(*) FROM "{pg_schema}".blobs').fetchone()
        failed = Checkpoint(id="03", channel_values={"x": [3] * 50}, channel_versions={"x": 3})
        with pytest.raises(StorageError) as caught:
            cp.put(failed, thread_id="t")
        err = caught.value
        assert not isinstance(err, StoreUnavailableError)  # the server answered: no retry
        assert "ran out of disk space while writing a batch" in err.message, err
        assert "No space left on device" in err.message
        assert err.hint is not None and "stores nothing" in err.hint
        # Nothing of the write: its blobs went with the rolled-back statement.
        assert conn.execute(f'SELECT count(*) FROM "{pg_schema}".blobs').fetchone() == blobs_before
        assert cp.get("t", checkpoint_id="03") is None
        for i in range(3):
            snap = cp.get("t", checkpoint_id=f"{i:02d}")
            assert snap is not None and snap.checkpoint.channel_values == {"x": [i] * 50}
        conn.execute(f'DROP TRIGGER full_disk ON "{pg_schema}".checkpoints')
    cp.put(failed, thread_id="t")  # space again
    snap = cp.get("t")
    assert snap is not None and snap.checkpoint.id == "03"
    cp.close()


@pytest.mark.parametrize("n", [3, 200], ids=["values", "arrays"])
async def test_small_and_large_batches_store_alike(pg: Any, n: int) -> None:
    # Small batches bind one parameter per value, large ones one array per column.
    batch = WriteBatch(
        checkpoints=[row("t", f"{i:04d}", parent=f"{i - 1:04d}" if i else None) for i in range(n)],
        blobs=[blob("t", "a", str(i)) for i in range(n)],
        writes=[write("t", f"{i:04d}", 0) for i in range(n)],
        replace_writes=[write("t", f"{i:04d}", 1, b"r") for i in range(n)],
    )
    await pg.write(batch)
    rows = await pg.list_checkpoints(ListQuery(thread_id="t"))
    assert rows == sorted(batch.checkpoints, key=lambda r: r.checkpoint_id, reverse=True)
    got = await pg.get_blobs("t", "", [("a", str(i)) for i in range(n)])
    assert sorted(got, key=lambda b: int(b.version)) == batch.blobs
    writes = await pg.get_writes("t", "", [f"{i:04d}" for i in range(n)])
    assert len(writes) == 2 * n
    await pg.delete_threads(["t"])
    with pytest.raises(ThreadDeletedError):
        await pg.write(batch)


# -- large values (the shared cases are in test_payloads.py) --------------------------------


def waits_for_advisory_lock(
    holder: psycopg.Connection[Any], work: Callable[[], None], release: Callable[[], None]
) -> None:
    """Run ``work`` in a thread while ``holder`` holds an advisory lock it needs: assert that
    it waits for the lock (within 10 s), then ``release`` the lock and assert that ``work``
    finishes without an error."""
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # reported below
            errors.append(exc)
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        waited = False
        for _ in range(200):
            (n,) = holder.execute(  # type: ignore[misc]
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            if n:
                waited = not done.is_set()
                break
            done.wait(0.05)
        assert waited
    finally:
        release()
        thread.join(30)
    assert done.is_set() and not errors, errors


def test_a_write_waits_for_another_storing_the_same_payload(pg_dsn: str, pg_schema: str) -> None:
    """While one transaction holds a payload's lock, a write carrying that payload waits for
    it (then finds the payload stored instead of writing it out of line again)."""
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    backend.setup()
    big = random.Random(9).randbytes(PAYLOAD_MIN_BYTES)
    digest = hashlib.sha256(big).digest()
    q = backend._q

    def write() -> None:
        backend.write(
            WriteBatch(
                checkpoints=[row("t", "1")],
                blobs=[BlobRow("t", "", "v", "1", BLOB_FULL, None, big)],
            )
        )

    try:
        with psycopg.connect(pg_dsn) as other:
            other.execute(
                f"SELECT pg_advisory_xact_lock(hashtext({q.lock_prefix} || 't'), "
                "hashtext(encode(%s::bytea, 'hex')))",
                [digest],
            )
            waits_for_advisory_lock(other, write, other.rollback)
        assert [b.data for b in backend.get_blobs("t", "", [("v", "1")])] == [big]
    finally:
        backend.close()


def test_retention_leaves_the_values_of_a_thread_a_write_holds(pg_dsn: str, pg_schema: str) -> None:
    """A write holds its threads' locks from its check that the values its deltas build on
    are stored until it commits; retention deletes a thread's values only holding that lock,
    so it leaves them while the write runs, and the write never commits a delta on a deleted
    base."""
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    backend.setup()
    try:
        backend.write(WriteBatch(blobs=[BlobRow("t", "", "m", "1", BLOB_FULL, None, b"x")]))
        with psycopg.connect(pg_dsn) as writer:
            writer.execute(  # a write of thread t, between its check and its commit
                f"SELECT {pg_schema}.check_write(ARRAY['t'], ARRAY['0001'], ARRAY['t'], "
                "ARRAY[''], ARRAY['m'], ARRAY['1'])"
            )
            # Does not wait, deletes nothing, and says so.
            assert backend.delete_rows("t", [], [("", "m", "1")]) == 0
            assert [b.version for b in backend.blob_index("t")] == ["1"]
            writer.commit()
        # The write has committed: now it goes.
        assert backend.delete_rows("t", [], [("", "m", "1")]) == 1
        assert backend.blob_index("t") == []
    finally:
        backend.close()


def test_retention_reports_the_values_it_left_for_the_next_run(pg_dsn: str, pg_schema: str) -> None:
    """While a write of the thread holds its lock, retention deletes the checkpoints but not
    their values, and says so; the next run that deletes checkpoints of the thread takes them."""
    with Checkpointer(PostgresBackend(pg_dsn, schema=pg_schema)) as cp:
        for i in range(4):
            cp.put(
                Checkpoint(
                    id=f"000{i}", channel_values={"v": f"value {i}"}, channel_versions={"v": i}
                ),
                thread_id="t",
            )
        with psycopg.connect(pg_dsn) as writer:
            writer.execute(  # a write of thread t in progress
                "SELECT pg_advisory_xact_lock_shared(hashtextextended(%s || 't', 0))",
                [f"{pg_schema}:"],
            )
            first = cp.retain(keep_last=1, thread_ids=["t"])
        assert (first.checkpoints_deleted, first.blobs_deleted) == (3, 0)
        assert len(cp.backend.blob_index("t")) == 4
        # The next run that deletes checkpoints of the thread takes them too.
        cp.put(
            Checkpoint(id="0004", channel_values={"v": "value 4"}, channel_versions={"v": 4}),
            thread_id="t",
        )
        second = cp.retain(keep_last=1, thread_ids=["t"])
        assert (second.checkpoints_deleted, second.blobs_deleted) == (1, 4)
        assert [b.version for b in cp.backend.blob_index("t")] == ["4"]


def test_a_write_whose_base_retention_is_deleting_waits_and_stores_whole_values(
    pg_dsn: str, pg_schema: str
) -> None:
    """Retention deleting the base first: the write waits for the thread's lock, finds the
    base gone, and the checkpoint is stored again with whole values."""
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    with Checkpointer(backend) as cp:
        first = Checkpoint(id="0001", channel_values={"m": [1]}, channel_versions={"m": 1})
        cp.put(first, thread_id="t")

        def put() -> None:
            cp.put(
                Checkpoint(id="0002", channel_values={"m": [1, 2]}, channel_versions={"m": 2}),
                thread_id="t",
            )

        with psycopg.connect(pg_dsn) as retention:
            retention.execute(  # as delete_rows does: the thread's lock, then the values
                "SELECT pg_advisory_xact_lock(hashtextextended(%s || 't', 0))",
                [f"{pg_schema}:"],
            )
            retention.execute(
                f"DELETE FROM {pg_schema}.blobs WHERE thread_id = 't' AND version = '1'"
            )
            waits_for_advisory_lock(retention, put, retention.commit)
        got = cp.get("t", checkpoint_id="0002")
        assert got is not None and got.checkpoint.channel_values == {"m": [1, 2]}
        assert [(b.version, b.kind) for b in backend.blob_index("t")] == [("2", BLOB_FULL)]


# -- writes sent through libpq (backends/_pg_direct.py) ----------------------------------------


def test_direct_statements_convert_placeholders_once() -> None:
    s = direct.statement("INSERT INTO t VALUES (%s, %b::bytea, '100%%', %s::int4)")
    assert s is not None
    assert s.sql == b"INSERT INTO t VALUES ($1, $2::bytea, '100%', $3::int4)"
    assert s.formats == [0, 1, 0]
    assert s.name.startswith(b"snapstate_") and len(s.name) < 64  # NAMEDATALEN
    assert direct.statement("INSERT INTO t VALUES (%s, %b::bytea, '100%%', %s::int4)") is s
    # Named by content: another text (another schema's statement, say) has another name.
    assert direct.statement("SELECT %s") is not None
    assert direct.statement("SELECT %s").name != s.name  # type: ignore[union-attr]
    # Placeholders of other kinds stay with the cursor.
    assert direct.statement("SELECT %(a)s") is None
    assert direct.statement("SELECT %t") is None


@pytest.mark.parametrize(
    ("value", "fmt", "sent"),
    [
        ("é", 0, "é".encode()),
        (-3, 0, b"-3"),
        (0.1 + 0.2, 0, repr(0.1 + 0.2).encode()),
        (None, 0, None),
        (b"\x00\xff", 1, b"\x00\xff"),
        (None, 1, None),
    ],
)
def test_direct_parameters_are_sent_as_libpq_takes_them(value: Any, fmt: int, sent: Any) -> None:
    s = direct.statement("SELECT %b" if fmt else "SELECT %s")
    assert s is not None
    assert direct.encode(s, [value]) == [sent]


@pytest.mark.parametrize(
    "value",
    ["nul\x00", "\udcff", True, float("nan"), float("inf"), [1], bytearray(b"x")],
    ids=["nul", "surrogate", "bool", "nan", "inf", "list", "bytearray"],
)
def test_direct_path_leaves_other_values_to_the_cursor(value: Any) -> None:
    s = direct.statement("SELECT %s")
    assert s is not None
    assert direct.encode(s, [value]) is None
    assert direct.encode(direct.statement("SELECT %b"), [value]) is None  # type: ignore[arg-type]
    assert direct.encode(s, []) is None  # a count that does not match


@pytest.mark.parametrize(
    "items",
    [
        [],
        ["a"],
        ["", None, "x"],
        ['quo"te', "back\\slash", "{brace}", "com,ma", " spaced ", "NULL", "é中\U0001f600"],
    ],
    ids=["empty", "one", "null", "special"],
)
def test_direct_text_arrays_read_back_as_sent(pg_dsn: str, items: list[Any]) -> None:
    s = direct.statement("SELECT %s::text[]")
    assert s is not None
    encoded = direct.encode(s, [items])
    assert encoded is not None
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        result = direct.run(conn, s, encoded, prepare=False)
        assert direct.rows(conn, result) == [(items,)]
        # What psycopg's own cursor returns for the same statement, binary as ours.
        cur = conn.cursor(binary=True, row_factory=tuple_row)
        assert cur.execute("SELECT %s::text[]", [items]).fetchall() == [(items,)]


@pytest.mark.parametrize("items", [["nul\x00"], [1], ["\udcff"], [b"x"]])
def test_direct_path_leaves_other_arrays_to_the_cursor(items: list[Any]) -> None:
    s = direct.statement("SELECT %s::text[]")
    assert s is not None
    assert direct.encode(s, [items]) is None


async def _one_session(pg_dsn: str, pg_schema: str, kind: str) -> tuple[Any, Awaitable]:
    """A backend (sync or async) on one connection, so on one server session, set up."""
    cls = PostgresBackend if kind == "sync" else AsyncPostgresBackend
    backend = cls(pg_dsn, schema=pg_schema, max_connections=1)
    pg = Awaitable(backend)
    await pg.setup()
    return backend, pg


@pytest.mark.parametrize(
    "items",
    [[b""], [b"\x00\xff"], [b"a", None, b"bc" * 5000]],
    ids=["empty-bytes", "binary", "null-and-long"],
)
def test_direct_bytea_arrays_read_back_as_sent(pg_dsn: str, items: list[Any]) -> None:
    # A list of bytes under %b goes as a binary bytea[], as psycopg's binary dumper sends it:
    # the payloads' digests of a write that stores a large value.
    s = direct.statement("SELECT %b::bytea[]")
    assert s is not None
    encoded = direct.encode(s, [items])
    assert encoded == [direct.binary_array(items, "bytea")]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        result = direct.run(conn, s, encoded, prepare=False)
        assert direct.rows(conn, result) == [(items,)]
        cur = conn.cursor(binary=True, row_factory=tuple_row)
        assert cur.execute("SELECT %b::bytea[]", [items]).fetchall() == [(items,)]


@pytest.mark.parametrize("items", [[], [None], [b"x", "s"], [b"x", bytearray(b"y")], [b"x", 1]])
def test_direct_path_leaves_other_binary_lists_to_the_cursor(items: list[Any]) -> None:
    # No bytes to say the array's type, or an element of another type: psycopg decides.
    s = direct.statement("SELECT %b::bytea[]")
    assert s is not None
    assert direct.encode(s, [items]) is None


def _step_values(i: int) -> dict[str, Any]:
    # A growing list (stored as append-deltas), a value large enough for payloads, a counter.
    return {
        "msgs": [f"message {j}" for j in range(i + 1)],
        "big": random.Random(i).randbytes(PAYLOAD_MIN_BYTES + 1),
        "n": i,
    }


def _step(i: int) -> Checkpoint:
    return Checkpoint(
        id=f"{i:04d}",
        channel_values=_step_values(i),
        channel_versions={"msgs": i + 1, "big": i + 1, "n": i + 1},
    )


class _NoThreads(concurrent.futures.ThreadPoolExecutor):
    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"work handed to a thread: {args[:1]}")


async def test_the_async_backend_never_hands_work_to_a_thread(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(_NoThreads())  # asyncio.to_thread and run_in_executor(None)
    loop_thread = threading.get_ident()
    elsewhere: list[str] = []
    real_wait = psycopg.AsyncConnection.wait

    async def wait(self: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() != loop_thread:
            elsewhere.append(threading.current_thread().name)
        return await real_wait(self, *args, **kwargs)

    def sync_wait(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a blocking connection used by the asyncio backend")

    monkeypatch.setattr(psycopg.AsyncConnection, "wait", wait)
    monkeypatch.setattr(psycopg.Connection, "wait", sync_wait)
    cp = AsyncCheckpointer(AsyncPostgresBackend(pg_dsn, schema=pg_schema, max_connections=2))
    await cp.setup()
    for i in range(3):
        await cp.put(_step(i), thread_id="t")
        await cp.put_writes([("out", i)], thread_id="t", checkpoint_id=f"{i:04d}", task_id="k")
    snap = await cp.get("t")
    assert snap is not None and snap.checkpoint.channel_values == _step_values(2)
    assert [s.checkpoint.id async for s in cp.list("t")] == ["0002", "0001", "0000"]
    await cp.delete_thread("t")
    assert await cp.get("t") is None
    await cp.aclose()
    assert elsewhere == []


@pytest.mark.parametrize("prepare", [True, False], ids=["prepare=on", "prepare=off"])
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_put_is_one_round_trip(
    pg_dsn: str, pg_schema: str, kind: str, prepare: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # psycopg drives every exchange with the server (a statement, BEGIN, COMMIT, SET) through
    # its connection's wait(); the direct path's exchange may send a prepare first, in the same
    # wait(). Count both while a checkpoint with its changed values (a delta and a payload
    # among them) and then its pending writes are stored.
    waits: list[str] = []
    exchanges: list[str] = []
    real_exchange = direct._execute

    def exchange(pgconn: Any) -> Any:
        exchanges.append("direct")
        return (yield from real_exchange(pgconn))

    monkeypatch.setattr(direct, "_execute", exchange)
    for cls in (psycopg.Connection, psycopg.AsyncConnection):
        real = cls.wait

        def counted(self: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            waits.append(type(self).__name__)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(cls, "wait", counted)
    if kind == "sync":
        cp: Any = Awaitable(
            Checkpointer(PostgresBackend(pg_dsn, schema=pg_schema, prepare=prepare))
        )
    else:
        cp = AsyncCheckpointer(AsyncPostgresBackend(pg_dsn, schema=pg_schema, prepare=prepare))
    for i in range(8):  # the statements are prepared by now, where they are prepared at all
        await cp.put(_step(i), thread_id="t")
        await cp.put_writes([("out", i)], thread_id="t", checkpoint_id=f"{i:04d}", task_id="k")
    for i in range(8, 11):
        for call in (
            lambda i=i: cp.put(_step(i), thread_id="t"),
            lambda i=i: cp.put_writes(
                [("out", i)], thread_id="t", checkpoint_id=f"{i:04d}", task_id="k"
            ),
        ):
            waits.clear()
            exchanges.clear()
            await call()
            assert len(waits) == 1 and len(exchanges) <= 1, (waits, exchanges)
    snap = await cp.get("t")
    assert snap is not None and snap.checkpoint.channel_values == _step_values(10)
    assert [w.value for w in snap.pending_writes] == [10]
    await (cp.aclose() if kind == "async" else cp.close())


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_writes_of_large_values_are_prepared(pg_dsn: str, pg_schema: str, kind: str) -> None:
    # A write whose value goes to payloads names the payloads' digests in a bytea[]: the
    # statement goes through the direct path and is prepared on the session like any other.
    backend, pg = await _one_session(pg_dsn, pg_schema, kind)
    sent: list[str] = []
    real = direct.run if kind == "sync" else direct.run_async

    def spy(conn: Any, stmt: Any, params: Any, **kw: Any) -> Any:
        sent.append(stmt.sql.decode())
        return real(conn, stmt, params, **kw)  # the coroutine, for run_async

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(direct, "run" if kind == "sync" else "run_async", spy)
            rng = random.Random(3)
            values = [rng.randbytes(PAYLOAD_MIN_BYTES + i) for i in range(3)]
            for i, value in enumerate(values):
                await pg.write(WriteBatch(writes=[write("t", str(i), 0, value)]))
        payload_writes = [q for q in sent if ".payloads" in q]
        assert len(payload_writes) == 3
        names = {
            r[0]: r[1]
            for r in await _on_session(
                backend, "SELECT name, statement FROM pg_prepared_statements"
            )
        }
        assert any(".payloads" in text for text in names.values()), names
        for i, value in enumerate(values):
            stored = await pg.get_writes("t", "", [str(i)])
            assert [w.data for w in stored] == [value]
    finally:
        await pg.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_reads_are_prepared_by_snapstate_only(pg_dsn: str, pg_schema: str, kind: str) -> None:
    # psycopg numbers its prepared statements per connection (_pg3_0, _pg3_1, ...): behind a
    # pooler a client could run another client's statement under its name. Reads are prepared
    # as writes are, under names made of their text, and psycopg prepares nothing.
    backend, pg = await _one_session(pg_dsn, pg_schema, kind)
    try:
        await pg.write(
            WriteBatch(
                checkpoints=[row("t", "1")],
                blobs=[blob("t", "a", "1")],
                writes=[write("t", "1", 0)],
            )
        )
        for _ in range(8):
            assert (await pg.get_checkpoint("t", "", None)).checkpoint_id == "1"
            assert len(await pg.get_blobs("t", "", [("a", "1")])) == 1
            assert len(await pg.get_writes("t", "", ["1"])) == 1
        names = [
            r[0] for r in await _on_session(backend, "SELECT name FROM pg_prepared_statements")
        ]
        assert names and all(n.startswith("snapstate_") for n in names)
        assert len(names) >= 3  # the three reads, besides the write
    finally:
        await pg.close()


def test_a_statement_missing_twice_is_sent_unnamed(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pooler may run a client's prepare and its execution on different server sessions, again
    # after the retry: the statement then goes unnamed, and runs once.
    real = direct._execute

    def losing_execute(pgconn: Any) -> Any:
        results = yield from real(pgconn)
        if results and results[-1].status == psycopg.pq.ExecStatus.COMMAND_OK:  # the prepare
            pgconn.send_query(b"DEALLOCATE ALL")
            yield from real(pgconn)
        return results

    monkeypatch.setattr(direct, "_execute", losing_execute)
    s = direct.statement("SELECT %s::int4 + 1")
    assert s is not None
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for i in range(4):
            result = direct.run(conn, s, [str(i).encode()], prepare=True)
            assert direct.rows(conn, result) == [(i + 1,)]
        assert s.name not in direct._sessions[conn].prepared
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)


@contextlib.asynccontextmanager
async def _session(backend: Any) -> AsyncIterator[Any]:
    """A connection of the backend's pool (sync or async): with ``max_connections=1``, the
    session its writes run on."""
    if isinstance(backend, AsyncPostgresBackend):
        async with backend._connection("test") as conn:
            yield conn
    else:
        with backend._connection("test") as conn:
            yield conn


async def _resolved(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _on_session(backend: Any, query: str) -> list[tuple[Any, ...]]:
    """Run ``query`` on the backend's session; its rows."""
    async with _session(backend) as conn:
        cur = await _resolved(conn.execute(query))
        return list(await _resolved(cur.fetchall())) if cur.description else []


async def _session_statements(backend: Any) -> list[str]:
    rows = await _on_session(
        backend, "SELECT name FROM pg_prepared_statements WHERE name LIKE 'snapstate\\_%'"
    )
    return sorted(r[0] for r in rows)


async def _deallocate(backend: Any, what: str = "ALL") -> None:
    await _on_session(backend, f"DEALLOCATE {what}")


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("prepare", [True, False], ids=["prepare=on", "prepare=off"])
async def test_writes_are_prepared_once_per_session_and_again_when_it_loses_them(
    pg_dsn: str, pg_schema: str, kind: str, prepare: bool
) -> None:
    cls = PostgresBackend if kind == "sync" else AsyncPostgresBackend
    backend = cls(pg_dsn, schema=pg_schema, max_connections=1, prepare=prepare)
    pg = Awaitable(backend)
    await pg.setup()
    try:

        def step(i: int) -> WriteBatch:  # one shape: a checkpoint, a blob and a write
            return WriteBatch(
                checkpoints=[row("t", f"{i}")],
                blobs=[blob("t", "a", f"{i}")],
                writes=[write("t", f"{i}", 0)],
            )

        await pg.write(step(0))
        assert await _session_statements(backend) == []  # used once: sent unnamed
        for i in (1, 2):
            await pg.write(step(i))
        names = await _session_statements(backend)
        assert len(names) == (1 if prepare else 0)  # prepared at its second use, once
        # A session that dropped its prepared statements (DISCARD ALL, a pooler): the next
        # write of that shape prepares it again and is stored once.
        await _deallocate(backend)
        await pg.write(step(3))
        assert await _session_statements(backend) == names
        assert [c.checkpoint_id for c in await pg.list_checkpoints(ListQuery(thread_id="t"))] == [
            "3",
            "2",
            "1",
            "0",
        ]
        assert len(await pg.get_writes("t", "", ["3"])) == 1
        if not prepare:
            return
        # One statement dropped while another stays: each shape still runs, none twice.
        for _ in range(2):
            await pg.write(WriteBatch(writes=[write("t", "3", 1)]))  # insert-or-ignore
        first, second = await _session_statements(backend)
        await _deallocate(backend, first)
        for i in (2, 3):
            await pg.write(step(4 + i))
            await pg.write(WriteBatch(writes=[write("t", "3", i)]))
        assert await _session_statements(backend) == [first, second]
        # A record of the session's statements lost on our side: preparing one that exists
        # finds it there and runs it.
        async with _session(backend) as conn:
            direct._sessions[conn].prepared.clear()
        await pg.write(WriteBatch(writes=[write("t", "3", 4)]))
        assert await _session_statements(backend) == [first, second]
        assert sorted(w.idx for w in await pg.get_writes("t", "", ["3"])) == [0, 1, 2, 3, 4]
    finally:
        await pg.close()


async def test_direct_and_cursor_writes_store_the_same_rows(
    pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values sent as text by the direct path read back exactly as the cursor's binary ones:
    floats to the last bit, negative indices, NULLs, empty and binary data."""

    def batch(tid: str) -> WriteBatch:
        return WriteBatch(
            checkpoints=[
                CheckpointRow(tid, "ns", "2", "1", "run", 0.1 + 0.2, b'{"a":"\\u00e9"}', b"\x00sk"),
                CheckpointRow(tid, "ns", "1", None, None, 1e-300, b"{}", b""),
            ],
            blobs=[
                BlobRow(tid, "ns", "c", "1", BLOB_FULL, None, b""),
                BlobRow(tid, "ns", "c", "2", BLOB_DELTA, "1", bytes(range(256))),
            ],
            writes=[WriteRow(tid, "ns", "2", "task", -3, "__interrupt__", "p", b"\x00")],
            replace_writes=[WriteRow(tid, "ns", "2", "task", -1, "__error__", "p", b"e")],
        )

    await pg.write(batch("direct"))
    monkeypatch.setattr(direct, "AVAILABLE", False)
    await pg.write(batch("cursor"))
    stored = {}
    for tid in ("direct", "cursor"):
        expected = batch(tid)
        rows = await pg.list_checkpoints(ListQuery(thread_id=tid))
        # JSONB keeps its own text of the metadata; everything else reads back as written.
        assert [msgspec.json.decode(r.metadata) for r in rows] == [{"a": "é"}, {}]
        assert [msgspec.structs.replace(r, metadata=b"") for r in rows] == [
            msgspec.structs.replace(r, metadata=b"") for r in expected.checkpoints
        ]
        got = await pg.get_blobs(tid, "ns", [("c", "1"), ("c", "2")])
        assert sorted(got, key=lambda b: b.version) == expected.blobs
        writes = await pg.get_writes(tid, "ns", ["2"])
        assert sorted(writes, key=lambda w: w.idx) == [*expected.writes, *expected.replace_writes]
        stored[tid] = [msgspec.structs.replace(r, thread_id="") for r in rows]
    assert stored["direct"] == stored["cursor"]


def _step_batches(tid: str = "t") -> list[WriteBatch]:
    """Batches of the shapes a graph's steps make: a checkpoint with its changed values (whole
    and append-delta, subgraph namespace, no parent, a run id, a metadata of non-ASCII text),
    and a task's writes (negative indices, empty and binary data, an empty task path)."""
    meta = '{"source":"loop","step":3,"n":"\u00e9\u20ac"}'.encode()
    return [
        WriteBatch(  # the values the append-deltas below build on
            blobs=[
                BlobRow(tid, "", "messages", "2", BLOB_FULL, None, b"m"),
                BlobRow(tid, "", "c", "8", BLOB_FULL, None, b"c"),
            ]
        ),
        WriteBatch(
            checkpoints=[CheckpointRow(tid, "", "3", "2", "run-1", 0.1 + 0.2, meta, b"\x01s")],
            blobs=[
                BlobRow(tid, "", "messages", "3", BLOB_DELTA, "2", b"\x00delta"),
                BlobRow(tid, "", "branch:to:ai", "3", BLOB_FULL, None, b""),
                BlobRow(tid, "", "__start__", "3", BLOB_FULL, None, bytes(range(256))),
            ],
        ),
        WriteBatch(checkpoints=[CheckpointRow(tid, "sub:1", "1", None, None, 2.0, b"{}", b"")]),
        WriteBatch(
            writes=[
                WriteRow(tid, "", "3", "task-b", 1, "messages", "~__pregel_pull, ai", b"m"),
                WriteRow(tid, "", "3", "task-b", -3, "__interrupt__", "", b""),
                WriteRow(tid, "", "3", "task-a", 0, "branch:to:ai", "", b"\x00"),
            ]
        ),
        WriteBatch(blobs=[BlobRow(tid, "", "c", "9", BLOB_DELTA, "8", b"d")]),
    ]


def _general_call(q: Any, batch: WriteBatch) -> Any:
    key, params, _ = pg_sql.write_params(batch)
    return q.write_sql(key), params, direct.prepared_call(q.write_sql(key), params)


def test_a_step_s_batch_is_converted_in_one_pass_to_what_the_general_path_sends() -> None:
    q = pg_sql.Statements("s")
    for batch in _step_batches():
        fast = pg_sql.direct_write(q, batch)
        assert fast is not None, batch
        text, params, call = _general_call(q, batch)
        assert call is not None
        assert fast.sql == text and fast.call is not None
        assert fast.call[0] is call[0]  # the same statement (one name on every session)
        assert fast.call[1] == call[1]
        assert fast.cursor_params() == params  # what a cursor sends, made only when asked


def test_batches_the_one_pass_conversion_leaves_to_the_general_path() -> None:
    q = pg_sql.Statements("s")
    _, put, _, writes, _ = _step_batches()
    big = b"x" * PAYLOAD_MIN_BYTES
    others = {
        "two threads": WriteBatch(checkpoints=put.checkpoints, blobs=[blob("other", "a", "1")]),
        "two checkpoints": WriteBatch(checkpoints=[row("t", "1"), row("t", "2", "1")]),
        "replaced writes": WriteBatch(replace_writes=[write("t", "1", -1)]),
        "one key twice": WriteBatch(writes=[write("t", "1", 0), write("t", "1", 0, b"2")]),
        "one blob twice": WriteBatch(blobs=[blob("t", "a", "1"), blob("t", "a", "1")]),
        "a large value": WriteBatch(writes=[write("t", "1", 0, big)]),
        "a NUL in an id": WriteBatch(writes=[write("t", "1\x00", 0)]),
        "a lone surrogate": WriteBatch(writes=[write("t", "\udc80", 0)]),
        "NUL in metadata": WriteBatch(checkpoints=[row("t", "1", meta=b'{"a":"\\u0000"}')]),
        "a memoryview": WriteBatch(writes=[write("t", "1", 0, memoryview(b"w"))]),  # type: ignore[arg-type]
        "a bool index": WriteBatch(writes=[write("t", "1", True)]),
        "too many rows": WriteBatch(
            writes=[write("t", "1", i) for i in range(pg_sql.SMALL_BATCH_ROWS + 1)]
        ),
        "nothing": WriteBatch(),
    }
    for what, batch in others.items():
        assert pg_sql.direct_write(q, batch) is None, what
    assert pg_sql.direct_write(q, writes) is not None


async def test_one_pass_general_and_cursor_writes_store_the_same_rows(
    pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step's batches stored three ways read back the same: converted in one pass, by the
    general path, and through a cursor after the direct path refused the connection (the
    one-pass statement then makes its parameters for the cursor)."""

    async def store(tid: str) -> None:
        for batch in _step_batches(tid):
            await pg.write(batch)

    def refused(*args: Any, **kwargs: Any) -> None:
        return None

    async def refused_async(*args: Any, **kwargs: Any) -> None:
        return None

    await store("fast")
    with monkeypatch.context() as m:
        m.setattr(pg_sql, "direct_write", lambda q, batch: None)
        await store("general")
    with monkeypatch.context() as m:
        m.setattr(direct, "run", refused)
        m.setattr(direct, "run_async", refused_async)
        await store("cursor")
    stored = {}
    for tid in ("fast", "general", "cursor"):
        rows = {
            ns: await pg.list_checkpoints(ListQuery(thread_id=tid, namespace=ns))
            for ns in ("", "sub:1")
        }
        blobs = await pg.get_blobs(
            tid, "", [("messages", "3"), ("branch:to:ai", "3"), ("__start__", "3"), ("c", "9")]
        )
        writes = await pg.get_writes(tid, "", ["3"])
        stored[tid] = msgspec.json.encode(
            [
                [msgspec.structs.replace(r, thread_id="") for ns in rows for r in rows[ns]],
                sorted((msgspec.structs.replace(b, thread_id="") for b in blobs), key=str),
                sorted((msgspec.structs.replace(w, thread_id="") for w in writes), key=str),
            ]
        )
    assert stored["fast"] == stored["general"] == stored["cursor"]
    assert len(msgspec.json.decode(stored["fast"])[1]) == 6  # the deltas' bases come along


@pytest.mark.parametrize(
    ("element", "values"),
    [
        ("text", ["a", None, "é€😀", "", "x" * 5000, '"quoted", {braces}\\']),
        ("bytea", [b"", None, bytes(range(256)), b"\x00" * 3]),
        ("int2", [0, -1, 32767, -32768, None]),
        ("int4", [0, -3, 2**31 - 1, -(2**31), None]),
        ("float8", [0.1 + 0.2, -0.0, 1e-300, float("inf"), None]),
        ("text", []),
    ],
)
def test_binary_arrays_read_back_as_the_values(
    pg_dsn: str, element: str, values: list[Any]
) -> None:
    array = direct.binary_array(values, element)
    assert array is not None
    s = direct.statement(f"SELECT %b::{element}[]")
    assert s is not None
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        result = direct.run(conn, s, [array], prepare=False)
        (got,) = direct.rows(conn, result)[0]
    if element == "float8":
        assert [None if v is None else v.hex() for v in got] == [
            None if v is None else v.hex() for v in values
        ]
    else:
        assert got == values


def test_binary_arrays_leave_what_psycopg_reports_to_it() -> None:
    for element, values in [
        ("text", ["a\x00b"]),
        ("text", ["\udc80"]),
        ("text", [b"bytes"]),
        ("bytea", ["str"]),
        ("bytea", [memoryview(b"m")]),
        ("int2", [2**15]),
        ("int4", [2**31]),
        ("int4", [True]),
        ("int4", [1.0]),
        ("float8", [1]),
    ]:
        assert direct.binary_array(values, element) is None, (element, values)


def _random_elements(rng: random.Random, element: str) -> list[Any]:
    """A list of values for ``element``, now and then one the builders refuse."""
    chars = ["a", "Z", "0", " ", '"', "\\", "{", "é", "€", "😀", "\x00", "\udc80"]
    out: list[Any] = []
    for _ in range(rng.randrange(0, 12)):
        pick = rng.random()
        if pick < 0.1:
            out.append(None)
        elif element == "text":
            # A NUL or a lone surrogate in about one string in 25.
            weights = [10] * 10 + [0.1, 0.1]
            out.append("".join(rng.choices(chars, weights, k=rng.randrange(0, 40))))
        elif element == "bytea":
            out.append(rng.randbytes(rng.randrange(0, 300)) if pick < 0.98 else "text")
        elif element == "float8":
            special = [float("nan"), float("inf"), -0.0, 5e-324]
            out.append(rng.choice(special) if pick < 0.2 else rng.uniform(-1e9, 1e9))
        else:
            bound = 2**15 if element == "int2" else 2**31
            edges = [bound - 1, -bound, bound, -bound - 1, True, 1.5]
            out.append(rng.choice(edges) if pick < 0.15 else rng.randrange(-bound, bound))
    return out


def test_the_compiled_array_builder_matches_the_python_one() -> None:
    """The arrays a large batch binds come from ``ext/_pg.pyx`` when it is built: the same
    bytes as the Python loop, and None for the same values."""
    from snapstate.codec._api import IMPL, IMPLEMENTATIONS

    # One switch chooses every compiled part.
    assert direct.BINARY_ARRAY_IMPL == IMPL
    if "native" not in IMPLEMENTATIONS:
        pytest.skip("the compiled extensions are not built (SNAPSTATE_NO_EXT)")
    from snapstate.backends import _pg_native

    class Text(str):
        pass

    rng = random.Random(20261201)
    cases: list[tuple[str, Any]] = [
        ("text", ("a", None, "é")),  # any sequence
        ("text", [Text("subclass")]),
        ("int4", [2**80]),
        ("int2", [-(2**63)]),
        ("text", ["ascii\x00nul", "ascii"]),
        ("bytea", [bytearray(b"b")]),
    ]
    for element in ("text", "bytea", "int2", "int4", "float8"):
        cases += [(element, _random_elements(rng, element)) for _ in range(300)]
    refused = 0
    for element, values in cases:
        native = _pg_native.binary_array(values, element)
        assert native == direct.binary_array_py(values, element), (element, values)
        refused += native is None
    assert 0 < refused < len(cases) // 2  # both outcomes were compared
    for builder in (_pg_native.binary_array, direct.binary_array_py):
        with pytest.raises(KeyError):
            builder(["x"], "uuid")


def _large_batch(tid: str) -> WriteBatch:
    """More rows than SMALL_BATCH_ROWS, of every kind and column: two threads, namespaces,
    NULLs, negative indices, replaced writes, deltas on stored bases, a large value."""
    big = bytes(range(256)) * (PAYLOAD_MIN_BYTES // 256 + 1)
    rows = max(pg_sql.SMALL_BATCH_ROWS, 40)
    return WriteBatch(
        checkpoints=[
            CheckpointRow(
                t,
                ns,
                f"{i:03}",
                None if i == 0 else f"{i - 1:03}",
                "r" if i % 2 else None,
                i + 0.1,
                b'{"step":%d,"n":"\\u00e9"}' % i,
                b"\x01sk",
            )
            for t in (tid, tid + "-2")
            for ns in ("", "sub")
            for i in range(rows // 4)
        ],
        blobs=[
            BlobRow(
                tid,
                "",
                "m",
                f"{i:03}",
                BLOB_DELTA if i else BLOB_FULL,
                f"{i - 1:03}" if i else None,
                f"delta {i}".encode(),
            )
            for i in range(rows)
        ]
        + [BlobRow(tid, "", "big", "001", BLOB_FULL, None, big)],
        writes=[
            WriteRow(tid, "", "001", f"task-{i % 3}", i - 5, "ch", "p", b"" if i % 4 else b"\x00")
            for i in range(rows)
        ],
        replace_writes=[WriteRow(tid, "", "001", "task-0", -1, "__error__", "p", b"e")],
    )


async def test_large_batches_store_the_same_rows_through_binary_arrays_and_the_cursor(
    pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    q = pg_sql.Statements("s")
    key, params, _ = pg_sql.write_params(_large_batch("x"))
    assert key[0] == 0 and pg_sql.direct_arrays(q, key, params) is not None  # the arrays shape

    await pg.write(_large_batch("arrays"))
    with monkeypatch.context() as m:
        m.setattr(pg_sql, "direct_arrays", lambda q, key, params: None)
        await pg.write(_large_batch("cursor"))
    stored = {}
    for tid in ("arrays", "cursor"):
        checkpoints = []
        for t in (tid, tid + "-2"):
            for ns in ("", "sub"):
                got = await pg.list_checkpoints(ListQuery(thread_id=t, namespace=ns))
                checkpoints += [
                    (
                        msgspec.json.decode(r.metadata),
                        msgspec.structs.replace(r, thread_id="", metadata=b""),
                    )
                    for r in got
                ]
        keys = [("m", f"{i:03}") for i in range(40)] + [("big", "001")]
        blobs = await pg.get_blobs(tid, "", keys)
        writes = await pg.get_writes(tid, "", ["001"])
        stored[tid] = (
            checkpoints,
            sorted((msgspec.structs.replace(b, thread_id="") for b in blobs), key=str),
            sorted((msgspec.structs.replace(w, thread_id="") for w in writes), key=str),
        )
    assert stored["arrays"] == stored["cursor"]
    assert len(stored["arrays"][0]) == 40 and len(stored["arrays"][1]) == 41
    assert any(w.idx == -1 and w.data == b"e" for w in stored["arrays"][2])


@pytest.mark.parametrize("kind", ["sync", "async", "given connection"])
async def test_text_is_stored_as_written_under_another_client_encoding(
    pg_dsn: str, pg_schema: str, kind: str
) -> None:
    """A connection whose client encoding is not UTF-8 (LATIN1 here) stores non-ASCII ids and
    metadata as written: another client, on UTF-8, reads the same characters."""
    latin1 = pg_dsn + ("&" if "?" in pg_dsn else "?") + "client_encoding=LATIN1"
    given = None
    if kind == "sync":
        pg = Awaitable(PostgresBackend(latin1, schema=pg_schema))
    elif kind == "async":
        pg = Awaitable(AsyncPostgresBackend(latin1, schema=pg_schema))
    else:
        given = psycopg.connect(latin1, autocommit=True)
        assert given.info.encoding == "iso8859-1"
        pg = Awaitable(PostgresBackend(given, schema=pg_schema))
    try:
        await pg.setup()
        for i in range(3):  # prepared at the second use: both ways of sending
            await pg.write(
                WriteBatch(
                    checkpoints=[
                        CheckpointRow("té", "", f"{i}", None, None, 1.0, b'{"n":"\xc3\xa9"}', b"s")
                    ],
                    writes=[WriteRow("té", "", f"{i}", "tâsk", 0, "ch", "", b"w")],
                )
            )
        rows = await pg.list_checkpoints(ListQuery(thread_id="té"))
        assert [(r.thread_id, msgspec.json.decode(r.metadata)) for r in rows] == [
            ("té", {"n": "é"})
        ] * 3
        assert [w.task_id for w in await pg.get_writes("té", "", ["0"])] == ["tâsk"]
        with psycopg.connect(pg_dsn) as utf8:
            stored = utf8.execute(
                f"SELECT DISTINCT thread_id, metadata->>'n' FROM \"{pg_schema}\".checkpoints"
            ).fetchall()
        assert stored == [("té", "é")]
    finally:
        await pg.close()
        if given is not None:
            given.close()


async def test_a_nul_in_an_id_is_refused_with_a_clear_error(pg: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="NUL"):
        await pg.write(WriteBatch(checkpoints=[row("t\x00", "1")]))


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_session_prepares_only_repeated_statements_and_a_bounded_number(
    pg_dsn: str, pg_schema: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(direct, "MAX_PREPARED", 2)
    backend, pg = await _one_session(pg_dsn, pg_schema, kind)
    try:
        # Four shapes (1 to 4 writes per batch); each used once is sent unnamed.
        for n in range(1, 5):
            await pg.write(WriteBatch(writes=[write("t", "1", i) for i in range(n)]))
        assert await _session_statements(backend) == []
        # Used again, the first two are prepared; the other two stay unnamed past the bound.
        for round_ in range(3):
            for n in range(1, 5):
                await pg.write(
                    WriteBatch(writes=[write("t", f"{round_ + 2}", i) for i in range(n)])
                )
        assert len(await _session_statements(backend)) == 2
        for cid in ("1", "2", "3", "4"):
            assert sorted(w.idx for w in await pg.get_writes("t", "", [cid])) == [0, 1, 2, 3]
    finally:
        await pg.close()
