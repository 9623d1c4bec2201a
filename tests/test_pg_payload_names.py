"""PostgreSQL: a large value the backend stored a moment before is named by its digest, not sent
again; the statement checks that it is still stored, and a write naming one that retention or a
deleted thread removed is sent again with the bytes (migration 6, ``check_payloads``)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from snapstate.backends import BLOB_FULL, BlobRow, CheckpointRow, WriteBatch, WriteRow, _pg_sql
from snapstate.backends._base import PAYLOAD_MIN_BYTES, payload_digest
from snapstate.backends.postgres import AsyncPostgresBackend, PostgresBackend
from snapstate.errors import MigrationError

from .test_postgres import Awaitable

pytestmark = pytest.mark.postgres

BIG = random.Random(5).randbytes(PAYLOAD_MIN_BYTES + 10)


def row(cid: str, parent: str | None = None) -> CheckpointRow:
    return CheckpointRow("t", "", cid, parent, None, 1.5, b"{}", b"\x01skeleton")


def node_write(cid: str, data: bytes = BIG) -> WriteBatch:
    """A node's pending write of a large value (as ``put_writes`` stores it)."""
    return WriteBatch(writes=[WriteRow("t", "", cid, "task", 0, "v", "", data)])


def checkpoint(cid: str, parent: str | None, data: bytes = BIG) -> WriteBatch:
    """The next checkpoint, whose blob holds the same value (as ``put`` stores it)."""
    return WriteBatch(
        checkpoints=[row(cid, parent)],
        blobs=[BlobRow("t", "", "v", cid, BLOB_FULL, None, data)],
    )


class Sent:
    """What each write's statement carried: its shape and whether the large value was in it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, bool]] = []  # (payloads named, BIG among the parameters)
        original = _pg_sql._write_params

        def spy(batch: WriteBatch, stored: Any = ()) -> Any:
            key, params, threads, payloads = original(batch, stored)
            values = params if isinstance(params, list) else list(params.values())
            carried = any(v is BIG or (isinstance(v, list) and BIG in v) for v in values)
            self.calls.append((key[-1], carried))
            return key, params, threads, payloads

        monkeypatch.setattr(_pg_sql, "_write_params", spy)


def sql(dsn: str, schema: str, text: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(text.format(s=f'"{schema}".'))
        return cur.fetchall() if cur.description else []


@pytest.fixture(params=["sync", "async"])
async def backend(
    request: pytest.FixtureRequest, pg_dsn: str, pg_schema: str
) -> AsyncIterator[Any]:
    cls = PostgresBackend if request.param == "sync" else AsyncPostgresBackend
    b = Awaitable(cls(pg_dsn, schema=pg_schema))
    await b.setup()
    yield b
    await b.close()


async def test_a_payload_just_stored_is_named_not_sent_again(
    backend: Any, monkeypatch: pytest.MonkeyPatch, pg_dsn: str, pg_schema: str
) -> None:
    sent = Sent(monkeypatch)
    await backend.write(node_write("0001"))
    await backend.write(checkpoint("0002", "0001"))
    # The first write carries the bytes; the second names them by digest alone.
    assert sent.calls == [(0, True), (1, False)]
    assert [x.data for x in await backend.get_blobs("t", "", [("v", "0002")])] == [BIG]
    assert [w.data for w in await backend.get_writes("t", "", ["0001"])] == [BIG]
    assert sql(pg_dsn, pg_schema, "SELECT thread_id, digest FROM {s}payloads") == [
        ("t", payload_digest(BIG))
    ]


async def test_a_named_payload_removed_meanwhile_is_sent_again(
    backend: Any, monkeypatch: pytest.MonkeyPatch, pg_dsn: str, pg_schema: str
) -> None:
    await backend.write(node_write("0001"))
    # Another process deletes the thread (its payloads with it) before the next checkpoint,
    # which starts the thread over with an id past the tombstone.
    other = PostgresBackend(pg_dsn, schema=pg_schema)
    try:
        other.delete_threads(["t"])
    finally:
        other.close()
    assert sql(pg_dsn, pg_schema, "SELECT count(*) FROM {s}payloads") == [(0,)]
    sent = Sent(monkeypatch)
    await backend.write(checkpoint("0002", None))
    # Named, refused by check_payloads with nothing written, then sent with the bytes.
    assert sent.calls == [(1, False), (0, True)]
    assert [x.data for x in await backend.get_blobs("t", "", [("v", "0002")])] == [BIG]
    assert sql(pg_dsn, pg_schema, "SELECT count(*) FROM {s}payloads") == [(1,)]
    # Known stored again: the next write naming it sends only its digest.
    await backend.write(node_write("0002"))
    assert sent.calls[2:] == [(1, False)]
    assert [w.data for w in await backend.get_writes("t", "", ["0002"])] == [BIG]


async def test_a_schema_without_check_payloads_asks_for_setup(
    monkeypatch: pytest.MonkeyPatch, pg_dsn: str, pg_schema: str
) -> None:
    every = _pg_sql.MIGRATIONS
    assert [m[0] for m in every][-1] == 6
    monkeypatch.setattr(_pg_sql, "MIGRATIONS", every[:5])
    old = PostgresBackend(pg_dsn, schema=pg_schema)
    old.setup()
    old.close()
    monkeypatch.setattr(_pg_sql, "MIGRATIONS", every)
    b = PostgresBackend(pg_dsn, schema=pg_schema)
    try:
        b.write(node_write("0001"))  # carries its bytes: no new function needed
        with pytest.raises(MigrationError, match="lacks a migration") as info:
            b.write(checkpoint("0002", "0001"))
        assert "setup()" in (info.value.hint or "")
        assert b.get_blobs("t", "", [("v", "0002")]) == []  # nothing half-written
        b.setup()
        b.write(checkpoint("0002", "0001"))
        assert [x.data for x in b.get_blobs("t", "", [("v", "0002")])] == [BIG]
    finally:
        b.close()


def test_stored_payloads_keeps_the_newest_few() -> None:
    stored = _pg_sql.StoredPayloads(size=3)
    assert stored.keys() == frozenset()
    stored.add([("t", b"1"), ("t", b"2"), ("t", b"3")])
    stored.add([("t", b"1")])  # used again: now the newest
    stored.add([("u", b"4")])
    assert stored.keys() == {("t", b"3"), ("t", b"1"), ("u", b"4")}
    stored.clear()
    assert stored.keys() == frozenset()
