"""Large values are stored once per thread and content (SQLite and PostgreSQL, sync and async):
a node's pending write and the next checkpoint's blob of the same bytes share one payload row,
which goes only when no row names it any more."""

from __future__ import annotations

import contextlib
import random
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from snapstate import AsyncCheckpointer, Checkpoint, Checkpointer
from snapstate.backends import BLOB_FULL, BlobRow, CheckpointRow, WriteBatch, WriteRow
from snapstate.backends._base import PAYLOAD_MIN_BYTES
from snapstate.backends.sqlite import SqliteBackend
from snapstate.errors import DecodeError

from .test_postgres import Awaitable

LARGE = PAYLOAD_MIN_BYTES


def large(seed: int, n: int = LARGE) -> bytes:
    return random.Random(seed).randbytes(n)


def row(tid: str, cid: str, parent: str | None = None) -> CheckpointRow:
    return CheckpointRow(tid, "", cid, parent, None, 1.5, b"{}", b"\x01skeleton")


def big_write(tid: str, cid: str, data: bytes, idx: int = 0, channel: str = "v") -> WriteRow:
    return WriteRow(tid, "", cid, "task", idx, channel, "", data)


def big_blob(tid: str, channel: str, version: str, data: bytes) -> BlobRow:
    return BlobRow(tid, "", channel, version, BLOB_FULL, None, data)


class Store:
    """A backend behind awaitable methods, and SQL on its tables."""

    def __init__(self, backend: Any, sql: Callable[[str], list[tuple[Any, ...]]]) -> None:
        self.b = Awaitable(backend)
        self.sql = sql

    def payloads(self) -> list[tuple[str, int]]:
        """(thread, size) of every payload; checks that rows naming one hold no data."""
        for table in ("blobs", "writes"):
            ((bad,),) = self.sql(
                f"SELECT count(*) FROM {{s}}{table} WHERE payload IS NOT NULL AND length(data) > 0"
            )
            assert bad == 0, table
        return [
            (t, n)
            for t, n in self.sql("SELECT thread_id, length(data) FROM {s}payloads ORDER BY 1")
        ]


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("postgres-async", marks=pytest.mark.postgres),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        backend: Any = SqliteBackend(path)

        def sql(text: str) -> list[tuple[Any, ...]]:
            with contextlib.closing(sqlite3.connect(path)) as conn, conn:
                return conn.execute(text.format(s="")).fetchall()

    else:
        import psycopg

        from snapstate.backends.postgres import AsyncPostgresBackend, PostgresBackend

        dsn = request.getfixturevalue("pg_dsn")
        schema = request.getfixturevalue("pg_schema")
        cls = PostgresBackend if request.param == "postgres" else AsyncPostgresBackend
        backend = cls(dsn, schema=schema)

        def sql(text: str) -> list[tuple[Any, ...]]:
            with psycopg.connect(dsn, autocommit=True) as conn:
                cur = conn.execute(text.format(s=f'"{schema}".'))
                return cur.fetchall() if cur.description else []

    s = Store(backend, sql)
    await s.b.setup()
    yield s
    await s.b.close()


@pytest.mark.parametrize("n", [1, 40], ids=["few-rows", "many-rows"])
async def test_a_large_value_written_then_checkpointed_is_stored_once(store: Store, n: int) -> None:
    pg = store.b
    big, small = large(1), large(2, LARGE - 1)
    # The node's write, then the checkpoint whose blob holds the same value (as LangGraph does).
    # Postgres binds a batch of more than 32 rows as column arrays, fewer as values.
    await pg.write(
        WriteBatch(
            checkpoints=[row("t", "0001"), *(row("t", f"x{i:04d}") for i in range(n - 1))],
            writes=[big_write("t", "0001", big)],
        )
    )
    await pg.write(
        WriteBatch(
            checkpoints=[row("t", "0002", parent="0001")],
            blobs=[
                big_blob("t", "v", "2", big),
                big_blob("t", "s", "2", small),
                *(big_blob("t", "a", str(i), b"x") for i in range(n - 1)),
            ],
        )
    )
    assert store.payloads() == [("t", LARGE)]  # the small value stays in its row
    got = {b.channel: b.data for b in await pg.get_blobs("t", "", [("v", "2"), ("s", "2")])}
    assert got == {"v": big, "s": small}
    (w,) = await pg.get_writes("t", "", ["0001"])
    assert w.data == big
    _, _, loaded = await pg.load("t", "", "0001")
    assert [x.data for x in loaded] == [big]
    stats = await pg.stats()
    assert stats.channels["v"] == (1, LARGE) and stats.write_bytes == LARGE
    # Stored once; the two rows naming it count it twice.
    assert (stats.payloads, stats.payload_bytes, stats.shared_bytes) == (1, LARGE, 2 * LARGE)


def test_stats_command_shows_large_values_once(tmp_path: Path) -> None:
    import io

    from snapstate.cli import main

    path = tmp_path / "s.db"
    big = large(11)
    backend = SqliteBackend(path)
    backend.setup()
    backend.write(
        WriteBatch(
            checkpoints=[row("t", "1"), row("t", "2", parent="1")],
            writes=[big_write("t", "1", big)],
            blobs=[big_blob("t", "v", "2", big)],
        )
    )
    backend.close()
    out = io.StringIO()
    assert main(["stats", str(path)], out=out) == 0
    text = out.getvalue()
    assert (
        "large values          1      64.0 KiB  (each stored once; the rows above count 128.0 KiB"
        in text
    )
    # Per checkpoint: the two 11-byte rows and the value once, over two checkpoints.
    assert "per checkpoint              32.0 KiB" in text


async def test_payloads_go_only_when_no_row_names_them(store: Store) -> None:
    pg = store.b
    big = large(3)
    await pg.write(
        WriteBatch(
            checkpoints=[row("t", "1"), row("t", "2", parent="1")],
            writes=[big_write("t", "1", big)],
            blobs=[big_blob("t", "v", "2", big)],
        )
    )
    await pg.copy_thread("t", "copy")
    # Checkpoint 1 and its write go; checkpoint 2's blob still names the payload.
    await pg.delete_rows("t", [("", "1")], [])
    assert await pg.get_writes("t", "", ["1"]) == []
    assert store.payloads() == [("copy", LARGE), ("t", LARGE)]
    assert [b.data for b in await pg.get_blobs("t", "", [("v", "2")])] == [big]
    # The last row naming it goes: so does the payload.
    await pg.delete_rows("t", [("", "2")], [("", "v", "2")])
    assert store.payloads() == [("copy", LARGE)]
    # The copy kept its own, and deleting the thread takes it.
    assert [b.data for b in await pg.get_blobs("copy", "", [("v", "2")])] == [big]
    assert [w.data for w in await pg.get_writes("copy", "", ["1"])] == [big]
    await pg.delete_threads(["copy"])
    assert store.payloads() == []


async def test_replaced_large_write_reads_the_new_value(store: Store) -> None:
    pg = store.b
    first, second = large(5), large(6)
    for value in (first, second):
        await pg.write(WriteBatch(replace_writes=[big_write("t", "1", value, -1, "__error__")]))
    assert [w.data for w in await pg.get_writes("t", "", ["1"])] == [second]
    # The replaced value has no row left; retention collects it.
    await pg.write(WriteBatch(checkpoints=[row("t", "0")]))
    await pg.delete_rows("t", [("", "0")], [])
    assert store.payloads() == [("t", LARGE)]


async def test_a_missing_payload_is_a_clear_decode_error(store: Store) -> None:
    pg = store.b
    big = large(7)
    await pg.write(
        WriteBatch(
            checkpoints=[row("t", "1")],
            writes=[big_write("t", "1", big)],
            blobs=[big_blob("t", "v", "1", big)],
        )
    )
    store.sql("DELETE FROM {s}payloads")
    with pytest.raises(DecodeError, match=r"blob 'v' version '1' \(thread 't'.*payloads table"):
        await pg.get_blobs("t", "", [("v", "1")])
    with pytest.raises(DecodeError, match=r"write 0 of task 'task' on checkpoint '1'"):
        await pg.get_writes("t", "", ["1"])
    with pytest.raises(DecodeError, match="missing from the payloads table"):
        await pg.load("t", "", "1")


async def test_engine_stores_a_node_output_once_and_prunes_it(store: Store) -> None:
    """Through the engine and codec: a pending write and the next checkpoint's blob of the same
    large value share one payload, which survives pruning the first checkpoint."""
    backend = store.b.backend
    is_async = type(backend).__name__.startswith("Async")
    cp = Awaitable(AsyncCheckpointer(backend) if is_async else Checkpointer(backend))
    big = large(8, 1 << 20)
    try:
        await cp.put(Checkpoint(id="1", channel_values={}, channel_versions={}), thread_id="t")
        await cp.put_writes([("v", big)], thread_id="t", checkpoint_id="1", task_id="node")
        await cp.put(
            Checkpoint(id="2", channel_values={"v": big}, channel_versions={"v": 2}),
            thread_id="t",
            parent_id="1",
            changed=["v"],
        )
        ((n, size),) = store.sql("SELECT count(*), sum(length(data)) FROM {s}payloads")
        assert n == 1 and size > LARGE
        first = await cp.get("t", checkpoint_id="1")
        assert first is not None and [w.value for w in first.pending_writes] == [big]
        await cp.prune(["t"])
        latest = await cp.get("t")
        assert latest is not None and latest.checkpoint.channel_values == {"v": big}
        assert await cp.get("t", checkpoint_id="1") is None
        assert store.sql("SELECT count(*) FROM {s}payloads") == [(1,)]
        await cp.delete_thread("t")
        assert store.sql("SELECT count(*) FROM {s}payloads") == [(0,)]
    finally:
        await (cp.aclose() if is_async else cp.close())


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_writers_and_retention_at_once_never_lose_a_payload(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Four writers store rows of one thread, each alternating between two large values of its
    own, while retention deletes every row but the last of each writer as soon as the writer
    has read it back, and collects the payloads no row names. So a payload is often collected
    just as its writer names it again. Every row reads back its value while it exists."""
    import threading

    if kind == "sqlite":
        path = tmp_path / "race.db"

        def make() -> Any:
            return SqliteBackend(path)

    else:
        from snapstate.backends.postgres import PostgresBackend

        dsn = request.getfixturevalue("pg_dsn")
        schema = request.getfixturevalue("pg_schema")

        def make() -> Any:
            return PostgresBackend(dsn, schema=schema)

    values = [large(20 + i) for i in range(8)]
    backends = [make() for _ in range(5)]
    backends[0].setup()
    steps = 40
    doomed: list[str] = []
    lock = threading.Lock()
    done = threading.Event()
    errors: list[BaseException] = []
    deleted: list[str] = []

    def value_of(cid: str) -> bytes:
        i, k = int(cid[0]), int(cid[2:])
        return values[2 * i + k % 2]

    def writer(i: int) -> None:
        b = backends[i]
        try:
            for k in range(steps):
                cid = f"{i}-{k:03d}"
                value = value_of(cid)
                b.write(
                    WriteBatch(
                        checkpoints=[row("t", cid)],
                        writes=[big_write("t", cid, value)],
                        blobs=[big_blob("t", "v", cid, value)],
                    )
                )
                assert [w.data for w in b.get_writes("t", "", [cid])] == [value]
                assert [x.data for x in b.get_blobs("t", "", [("v", cid)])] == [value]
                if k < steps - 1:
                    with lock:
                        doomed.append(cid)
        except BaseException as exc:  # reported below
            errors.append(exc)

    def reaper() -> None:
        try:
            while not done.is_set() or doomed:
                with lock:
                    batch, doomed[:] = list(doomed), []
                if batch:
                    backends[4].delete_rows(
                        "t", [("", c) for c in batch], [("", "v", c) for c in batch]
                    )
                    deleted.extend(batch)
        except BaseException as exc:  # reported below
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    reaping = threading.Thread(target=reaper)
    reaping.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join(120)
    done.set()
    reaping.join(120)
    try:
        assert not errors, errors
        assert len(deleted) == 4 * (steps - 1)
        kept = [f"{i}-{steps - 1:03d}" for i in range(4)]
        want = {c: value_of(c) for c in kept}
        b = backends[0]
        assert {w.checkpoint_id: w.data for w in b.get_writes("t", "", kept)} == want
        assert {x.version: x.data for x in b.get_blobs("t", "", [("v", c) for c in kept])} == want
        assert b.get_writes("t", "", deleted) == []
    finally:
        for b in backends:
            b.close()
