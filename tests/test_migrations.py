"""Schema migrations: named and recorded, atomic, concurrent-safe, refusing newer stores."""

from __future__ import annotations

import contextlib
import io
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from snapstate import Checkpoint, Checkpointer
from snapstate.backends import ListQuery, MemoryBackend
from snapstate.backends.sqlite import MIGRATIONS, SqliteBackend
from snapstate.cli import main
from snapstate.errors import MigrationError, SchemaVersionError

from .fix_backends import AsyncOnALoop
from .processes import run_together


def make_v1_store(path: Path, threads: int = 3, steps: int = 6) -> dict[tuple[str, str], object]:
    """A database as the first schema version made it: migration 1 only, with checkpoints.

    Rows are produced by the engine on a memory backend, then inserted with plain SQL into a
    file that has only migration 1's tables (the row format of migration 1 is unchanged)."""
    mem = Checkpointer(MemoryBackend())
    expected: dict[tuple[str, str], object] = {}
    for t in range(threads):
        msgs: list[str] = []
        for i in range(steps):
            msgs = [*msgs, f"t{t} message {i}"]
            mem.put(
                Checkpoint(
                    id=f"{i:04d}",
                    channel_values={"messages": msgs, "n": i},
                    channel_versions={"messages": i + 1, "n": i + 1},
                ),
                thread_id=f"thread-{t}",
                metadata={"step": i},
                parent_id=f"{i - 1:04d}" if i else None,
            )
            expected[(f"thread-{t}", f"{i:04d}")] = list(msgs)
        mem.put_writes(
            [("w", t)], thread_id=f"thread-{t}", checkpoint_id=f"{steps - 1:04d}", task_id="k"
        )
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN")
    conn.execute(
        "CREATE TABLE schema_migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "applied_at REAL NOT NULL)"
    )
    mid, name, sql = MIGRATIONS[0]
    for statement in filter(None, (x.strip() for x in sql.split(";"))):
        conn.execute(statement)
    conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (mid, name))
    backend = mem.backend
    for t in range(threads):
        tid = f"thread-{t}"
        for r in backend.list_checkpoints(ListQuery(thread_id=tid)):
            conn.execute(
                "INSERT INTO checkpoints VALUES (?,?,?,?,?,?,?,?)",
                (
                    r.thread_id,
                    r.namespace,
                    r.checkpoint_id,
                    r.parent_id,
                    r.run_id,
                    r.created_at,
                    r.metadata.decode(),
                    r.skeleton,
                ),
            )
        keys = [(b.channel, b.version) for b in backend.blob_index(tid)]
        for b in backend.get_blobs(tid, "", keys):
            conn.execute(
                "INSERT INTO blobs VALUES (?,?,?,?,?,?,?)",
                (b.thread_id, b.namespace, b.channel, b.version, b.kind, b.base, b.data),
            )
        for w in backend.get_writes(tid, "", [f"{steps - 1:04d}"]):
            conn.execute(
                "INSERT INTO writes VALUES (?,?,?,?,?,?,?,?)",
                (
                    w.thread_id,
                    w.namespace,
                    w.checkpoint_id,
                    w.task_id,
                    w.idx,
                    w.channel,
                    w.task_path,
                    w.data,
                ),
            )
    conn.execute("COMMIT")
    conn.close()
    return expected


def applied(path: Path) -> list[tuple[int, str]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT id, name FROM schema_migrations ORDER BY id").fetchall()


def test_migrations_are_numbered_and_named() -> None:
    ids = [m[0] for m in MIGRATIONS]
    assert ids == list(range(1, len(ids) + 1))
    assert all(name and not name.isspace() for _, name, _ in MIGRATIONS)


def test_first_schema_upgrades_with_every_checkpoint_intact(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    expected = make_v1_store(path)
    backend = SqliteBackend(path)
    status = backend.migration_status()
    assert [(m.id, m.applied_at is not None) for m in status] == [(1, True)] + [
        (m[0], False) for m in MIGRATIONS[1:]
    ]
    with Checkpointer(backend) as cp:
        for (tid, cid), msgs in expected.items():
            snap = cp.get(tid, checkpoint_id=cid)
            assert snap is not None
            assert snap.checkpoint.channel_values == {"messages": msgs, "n": int(cid)}
        assert [w.value for w in cp.get("thread-2").pending_writes] == [2]  # type: ignore[union-attr]
    assert applied(path) == [(m[0], m[1]) for m in MIGRATIONS]


def _setup_in_process(path: str, barrier: Any, q: Any) -> None:
    try:
        barrier.wait(30)
        with SqliteBackend(path) as backend:
            backend.setup()
        q.put("ok")
    except BaseException as exc:  # reported to the parent
        q.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("start", ["fresh", "old"])
def test_concurrent_setup_from_four_processes(tmp_path: Path, start: str) -> None:
    path = tmp_path / "shared.db"
    expected = make_v1_store(path) if start == "old" else {}
    results = run_together(_setup_in_process, [(str(path),)] * 4, timeout=120)
    assert results == ["ok"] * 4
    assert applied(path) == [(m[0], m[1]) for m in MIGRATIONS]
    with Checkpointer(path) as cp:
        for (tid, cid), msgs in expected.items():
            snap = cp.get(tid, checkpoint_id=cid)
            assert snap is not None and snap.checkpoint.channel_values["messages"] == msgs


def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    with SqliteBackend(path) as backend:
        backend.setup()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', 0)")
    with (
        SqliteBackend(path) as backend,
        pytest.raises(SchemaVersionError, match=r"has schema migrations \[999\]") as err,
    ):
        backend.setup()
    assert "upgrade snapstate" in str(err.value)
    with SqliteBackend(path) as backend, pytest.raises(SchemaVersionError):
        backend.migration_status()


def _store_state(kind: str, where: str, dsn: str | None) -> tuple[list[Any], set[str]]:
    """The recorded migrations (id, name) and the names of the store's tables."""
    if kind == "sqlite":
        with contextlib.closing(sqlite3.connect(where)) as conn:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
        return applied(Path(where)), tables
    import psycopg

    with psycopg.connect(dsn) as conn:  # type: ignore[arg-type]
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (where,))
        }
        rows = conn.execute(f'SELECT id, name FROM "{where}".schema_migrations ORDER BY id')
        return [tuple(r) for r in rows], tables


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "postgres-async"])
def test_a_failed_migration_rolls_back_the_whole_run(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migrations are all or nothing: when the last one of a run fails, the error names it,
    and the run's earlier migrations are rolled back with it (no record, no table)."""
    import snapstate.backends.sqlite as sqlite_module
    from snapstate.backends import _pg_sql

    dsn: str | None = None
    module: Any = sqlite_module if kind == "sqlite" else _pg_sql
    if kind == "sqlite":
        where = str(tmp_path / "m.db")
        broken: tuple[Any, ...] = (
            99,
            "a migration that fails half way",
            "CREATE TABLE made_by_99 (x INTEGER); SELECT x FROM no_such_table",
        )

        def make() -> Any:
            return SqliteBackend(where)

    else:
        from snapstate.backends.postgres import AsyncPostgresBackend, PostgresBackend

        dsn = request.getfixturevalue("pg_dsn")
        where = request.getfixturevalue("pg_schema")
        broken = (
            99,
            "a migration that fails half way",
            ("CREATE TABLE {s}.made_by_99 (x int)", "SELECT x FROM {s}.no_such_table"),
        )

        def make() -> Any:
            if kind == "postgres":
                return PostgresBackend(dsn, schema=where)
            return AsyncOnALoop(lambda: AsyncPostgresBackend(dsn, schema=where))

    def setup() -> None:
        backend = make()
        try:
            backend.setup()
        finally:
            backend.close()

    every = module.MIGRATIONS
    monkeypatch.setattr(module, "MIGRATIONS", every[:1])
    setup()  # a store at migration 1
    before = _store_state(kind, where, dsn)
    assert before[0] == [(1, every[0][1])]
    monkeypatch.setattr(module, "MIGRATIONS", (*every, broken))
    with pytest.raises(
        MigrationError, match=r"schema migration 99 \(a migration that fails half way\) failed"
    ):
        setup()
    assert _store_state(kind, where, dsn) == before
    # The same run without the broken migration does create tables: the check above has teeth.
    monkeypatch.setattr(module, "MIGRATIONS", every)
    setup()
    ids, tables = _store_state(kind, where, dsn)
    assert ids == [(m[0], m[1]) for m in every]
    assert tables > before[1] and "made_by_99" not in tables


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_migrate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.db"
    code, text = run("migrate", str(path), "--dry-run")
    assert code == 0 and "every migration is pending" in text
    assert not path.exists()
    make_v1_store(path, threads=1, steps=2)
    code, text = run("migrate", str(path), "--dry-run")
    assert code == 0
    assert "applied     1  create checkpoints, blobs and writes" in text
    assert "pending     2  tombstones of deleted threads" in text
    assert applied(path) == [(1, MIGRATIONS[0][1])]
    code, text = run("migrate", f"sqlite:///{path}")
    assert code == 0 and f"applied {len(MIGRATIONS) - 1} migration(s)" in text
    assert "applying    3  store each large value once per thread" in text
    assert applied(path) == [(m[0], m[1]) for m in MIGRATIONS]
    code, text = run("migrate", str(path))
    assert code == 0 and "schema is up to date" in text
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    code, _ = run("migrate", str(path))
    assert code == 2 and "[999]" in capsys.readouterr().err


def test_langgraph_sqlite_file_gets_a_clear_error(tmp_path: Path) -> None:
    from langgraph.checkpoint.sqlite import SqliteSaver as LangGraphSqliteSaver

    from snapstate.errors import ConfigurationError

    path = tmp_path / "langgraph.db"
    conn = sqlite3.connect(path, check_same_thread=False)
    LangGraphSqliteSaver(conn).setup()
    conn.close()
    with (
        SqliteBackend(path) as backend,
        pytest.raises(ConfigurationError, match="holds LangGraph's own checkpoint tables") as err,
    ):
        backend.setup()
    assert "new database file" in str(err.value)


def test_postgres_migration_status_and_newer_schema(pg_dsn: str, pg_schema: str) -> None:
    import psycopg

    from snapstate.backends.postgres import MIGRATIONS as PG_MIGRATIONS
    from snapstate.backends.postgres import PostgresBackend

    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    try:
        assert [m.applied_at for m in backend.migration_status()] == [None] * len(PG_MIGRATIONS)
        backend.setup()
        status = backend.migration_status()
        assert [(m.id, m.name) for m in status] == [(m[0], m[1]) for m in PG_MIGRATIONS]
        assert all(m.applied_at is not None for m in status)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(
                f"INSERT INTO \"{pg_schema}\".schema_migrations (id, name) VALUES (999, 'future')"
            )
        with pytest.raises(SchemaVersionError, match=r"\[999\]"):
            backend.migration_status()
        with pytest.raises(SchemaVersionError, match=r"\[999\]"):
            backend.setup()
    finally:
        backend.close()


def test_langgraph_postgres_schema_gets_a_clear_error(pg_dsn: str, pg_schema: str) -> None:
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver as LangGraphPostgresSaver
    from psycopg.rows import dict_row

    from snapstate.backends.postgres import PostgresBackend
    from snapstate.errors import ConfigurationError

    with psycopg.connect(
        pg_dsn, autocommit=True, row_factory=dict_row, options=f"-c search_path={pg_schema}"
    ) as conn:
        LangGraphPostgresSaver(conn).setup()  # type: ignore[arg-type]
    backend = PostgresBackend(pg_dsn, schema=pg_schema)
    try:
        with pytest.raises(ConfigurationError, match="holds LangGraph's own") as err:
            backend.setup()
        assert "schema='snapstate'" in str(err.value)
    finally:
        backend.close()


def _pg_setup_in_process(dsn: str, schema: str, barrier: Any, q: Any) -> None:
    try:
        from snapstate.backends.postgres import PostgresBackend

        barrier.wait(60)
        backend = PostgresBackend(dsn, schema=schema)
        backend.setup()
        backend.close()
        q.put("ok")
    except BaseException as exc:  # reported to the parent
        q.put(f"{type(exc).__name__}: {exc}")


def test_postgres_first_schema_upgrades_concurrently_with_checkpoints_intact(
    pg_dsn: str, pg_schema: str
) -> None:
    """A schema made by the first migration, with checkpoints, upgraded by four processes."""
    import psycopg

    from snapstate.backends import _pg_sql
    from snapstate.backends.postgres import PostgresBackend

    mem = Checkpointer(MemoryBackend())
    expected = {}
    msgs: list[str] = []
    for i in range(6):
        msgs = [*msgs, f"message {i}"]
        mem.put(
            Checkpoint(
                id=f"{i:04d}",
                channel_values={"messages": msgs},
                channel_versions={"messages": i + 1},
            ),
            thread_id="old",
            metadata={"step": i},
        )
        expected[f"{i:04d}"] = list(msgs)
    quoted = f'"{pg_schema}"'
    with psycopg.connect(pg_dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(
            f"CREATE TABLE {quoted}.schema_migrations (id int PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        mid, name, statements = _pg_sql.MIGRATIONS[0]
        for statement in statements:
            conn.execute(statement.format(s=quoted, lock_prefix=f"'{pg_schema}:'"))
        conn.execute(
            f"INSERT INTO {quoted}.schema_migrations (id, name) VALUES (%s, %s)", (mid, name)
        )
        backend = mem.backend
        for r in backend.list_checkpoints(ListQuery(thread_id="old")):
            conn.execute(
                f"INSERT INTO {quoted}.checkpoints VALUES (%s,%s,%s,%s,%s,%s,%s::jsonb,%s)",
                (
                    r.thread_id,
                    r.namespace,
                    r.checkpoint_id,
                    r.parent_id,
                    r.run_id,
                    r.created_at,
                    r.metadata.decode(),
                    r.skeleton,
                ),
            )
        keys = [(b.channel, b.version) for b in backend.blob_index("old")]
        for b in backend.get_blobs("old", "", keys):
            conn.execute(
                f"INSERT INTO {quoted}.blobs VALUES (%s,%s,%s,%s,%s,%s,%s)",
                (b.thread_id, b.namespace, b.channel, b.version, b.kind, b.base, b.data),
            )
    results = run_together(_pg_setup_in_process, [(pg_dsn, pg_schema)] * 4, timeout=120)
    assert results == ["ok"] * 4
    with psycopg.connect(pg_dsn) as conn:
        ids = sorted(r[0] for r in conn.execute(f"SELECT id FROM {quoted}.schema_migrations"))
    assert ids == [m[0] for m in _pg_sql.MIGRATIONS]
    with Checkpointer(PostgresBackend(pg_dsn, schema=pg_schema)) as cp:
        for cid, want in expected.items():
            snap = cp.get("old", checkpoint_id=cid)
            assert snap is not None and snap.checkpoint.channel_values == {"messages": want}
        cp.delete_thread("old")  # the new migration's tombstones work on the upgraded schema
        assert cp.get("old") is None


def test_postgres_stores_large_values_without_a_second_compression(
    pg_dsn: str, pg_schema: str
) -> None:
    """blobs.data (migration 1), writes.data (migration 3) and payloads.data (migration 4) are
    EXTERNAL: the server does not pglz what the codec already lz4-compressed."""
    import psycopg

    from snapstate.backends.postgres import PostgresBackend

    with Checkpointer(PostgresBackend(pg_dsn, schema=pg_schema)) as cp:
        cp.setup()
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "SELECT c.relname, a.attstorage FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND a.attname = 'data' ORDER BY c.relname",
            (pg_schema,),
        ).fetchall()
    assert rows == [("blobs", "e"), ("payloads", "e"), ("writes", "e")]
