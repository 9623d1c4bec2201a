"""Where a chat step's write goes inside a store: the phases of the backends' writes, timed.

``bench_calls`` times whole saver calls. This splits the store's part of them, on the write
batches one thread of the chat graph makes (the engine's batches for its 102 puts and 101
put_writes, captured once and replayed on a fresh store each round):

* SQLite, on the compiled connection the backend writes small batches through: ``BEGIN
  IMMEDIATE``, the statements, and the ``COMMIT`` that writes the pages to the WAL, with the
  connection's WAL buffer (a commit's frames in one write, as the backend runs it) and without
  (each frame's header and page written as SQLite writes them), rounds alternating; beside them,
  a transaction committing one 4-byte row (the committing floor's work in ``bench_langgraph``).
* PostgreSQL, each batch's one statement as the backend prepares and sends it (libpq, past the
  cursor), wall and CPU time of the round trip with its commit: as stored; with the check of
  deleted threads and delta bases replaced by a plain expression of the same arguments (no lock,
  no lookups); with ``synchronous_commit=off`` (no wait for the WAL flush); and a prepared
  4-byte insert with and without the flush (the committing floor's statement); and the
  backend's own work for each write with the server's reply stubbed out, converting the batch in
  one pass (``_pg_sql.direct_write``) and by the general path.

Rounds alternate the variants; round 0 warms up and is dropped. Medians in microseconds.

    python -m benchmarks.bench_split             # both; PostgreSQL when reachable
    python -m benchmarks.bench_split --sqlite    # SQLite only
    python -m benchmarks.bench_split --client    # the PostgreSQL backend's own work only
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import bench_calls, bench_postgres

__all__ = ["capture", "sqlite_split", "postgres_split", "client_split", "main"]

ROUNDS = 5
#: Which calls a batch came from, in the order the graph made them.
KINDS = bench_calls.KINDS


def capture(turns: int = bench_calls.TURNS) -> list[tuple[str, Any]]:
    """The write batches (with the kind of call that made each) of one chat thread."""
    from snapstate.langgraph import SqliteSaver

    calls = bench_calls.record(turns)
    out: list[tuple[str, Any]] = []
    with tempfile.TemporaryDirectory() as directory:
        with SqliteSaver.from_conn_string(os.path.join(directory, "capture.db")) as saver:
            backend = saver._engine.backend
            write = backend.write
            kind = ""

            def capturing(batch: Any) -> None:
                out.append((kind, batch))
                write(batch)

            backend.write = capturing
            for call in calls:
                kind = call.kind
                method = saver.put if kind == "put" else saver.put_writes
                method(bench_calls._with_thread(call.config, "capture"), *call.args)
    return out


def _median_us(values: Sequence[float]) -> float:
    return statistics.median(values) * 1e6 if values else float("nan")


# -- SQLite ------------------------------------------------------------------------------------


def sqlite_split(
    batches: Sequence[tuple[str, Any]], rounds: int = ROUNDS, directory: str | None = None
) -> dict[str, float]:
    """Medians (µs) per call kind of ``begin``, ``statements``, ``commit`` and ``total`` (keys
    ``"put commit"``, ...; ``"put commit, unbuffered"``, ... without the WAL buffer), and of
    ``floor`` (a transaction committing a 4-byte row). Each round writes a store ``r<n>.db`` in
    ``directory`` (a temporary one, removed after, when None), and one ``r<n>u.db`` without the
    buffer."""
    from snapstate.backends import sqlite as backend_module

    native = backend_module._NATIVE
    if native is None:
        raise RuntimeError("the compiled SQLite connection is not available (SNAPSTATE_IMPL)")
    phases: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        phases.setdefault(name, []).append(seconds)

    with contextlib.ExitStack() as stack:
        where = directory or stack.enter_context(tempfile.TemporaryDirectory())
        for r in range(rounds + 1):
            for buffered in (True, False) if r % 2 else (False, True):
                suffix = "" if buffered else ", unbuffered"
                path = os.path.join(where, f"r{r}{'' if buffered else 'u'}.db")
                store = backend_module.SqliteBackend(path)
                store.setup()
                conn = native.Connection(path, "normal", buffered)
                if conn.wal_buffer != buffered:
                    conn.close()
                    store.close()
                    raise RuntimeError("the compiled connection has no WAL buffer here")
                try:
                    _timed_writes(conn, batches, backend_module._store, add if r else None, suffix)
                finally:
                    conn.close()
                    store.close()
    return {name: _median_us(values) for name, values in phases.items()}


def _timed_writes(
    conn: Any,
    batches: Sequence[tuple[str, Any]],
    store: Callable[[Any, Any], None],
    add: Callable[[str, float], None] | None,
    suffix: str,
) -> None:
    clock = time.perf_counter
    conn.query("CREATE TABLE floor_commits (x integer NOT NULL)", ())
    for kind, batch in batches:
        t0 = clock()
        if not conn.begin():
            raise RuntimeError(f"{conn.path}: the write lock is held elsewhere")
        t1 = clock()
        store(conn, batch)
        t2 = clock()
        conn.commit()
        t3 = clock()
        if not conn.begin():
            raise RuntimeError(f"{conn.path}: the write lock is held elsewhere")
        conn.query("INSERT INTO floor_commits VALUES (1)", ())
        conn.commit()
        t4 = clock()
        if add is not None:
            add(f"{kind} begin{suffix}", t1 - t0)
            add(f"{kind} statements{suffix}", t2 - t1)
            add(f"{kind} commit{suffix}", t3 - t2)
            add(f"{kind} total{suffix}", t3 - t0)
            add(f"floor{suffix}", t4 - t3)


# -- PostgreSQL --------------------------------------------------------------------------------

#: The statement's result: the check function's call, replaced by a plain expression of its
#: arguments in the "no check" variant.
_CHECK_CALL = re.compile(r'SELECT "[^"]+"\.check_(write|tombstones)\(')

VARIANTS = ("as stored", "no check", "no flush", "floor", "floor, no flush")


def postgres_split(
    batches: Sequence[tuple[str, Any]], rounds: int = ROUNDS, dsn: str = bench_postgres.DSN
) -> dict[str, tuple[float, float]]:
    """Per variant (:data:`VARIANTS`): the median wall and CPU µs of one statement's round trip
    and commit. A batch the direct path cannot send (a large value's payload, sent as a binary
    array) is written through the backend, untimed, so the batches after it find what it
    stored."""
    import psycopg

    from snapstate.backends import _pg_direct as direct
    from snapstate.backends import _pg_sql as sql
    from snapstate.backends.postgres import PostgresBackend

    wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}

    def timed(conn: Any, stmt: Any, params: list[bytes | None], variant: str, keep: bool) -> None:
        c, w = time.thread_time(), time.perf_counter()
        direct.run(conn, stmt, params, prepare=True)
        w, c = time.perf_counter() - w, time.thread_time() - c
        if keep:
            wall[variant].append(w)
            cpu[variant].append(c)

    with bench_postgres.fresh_schema(dsn) as schema:
        backend = PostgresBackend(dsn, schema=schema)
        conn = psycopg.connect(dsn, autocommit=True)
        try:
            backend.setup()
            statements = sql.Statements(schema)
            conn.execute(f'CREATE TABLE "{schema}".floor_commits (x integer NOT NULL)')
            insert = direct.statement(f'INSERT INTO "{schema}".floor_commits VALUES (%s)')
            assert insert is not None
            one = direct.encode(insert, [1])
            assert one is not None
            rewrites: dict[str, Callable[[str], str]] = {
                "as stored": lambda s: s,
                "no check": lambda s: _CHECK_CALL.sub("SELECT pg_catalog.num_nonnulls(", s),
                "no flush": lambda s: s,
            }
            for r in range(rounds + 1):
                for variant in VARIANTS:
                    flush = "off" if "no flush" in variant else "on"
                    conn.execute(f"SET synchronous_commit = {flush}")
                    if variant.startswith("floor"):
                        for _ in batches:
                            timed(conn, insert, one, variant, r > 0)
                        continue
                    thread = f"{variant}-{r}"
                    for _, batch in batches:
                        batch = bench_postgres._retarget(batch, thread)
                        key, params, _ = sql.write_params(batch)
                        stmt = direct.statement(rewrites[variant](statements.write_sql(key)))
                        encoded = None if stmt is None else direct.encode(stmt, params)
                        if stmt is None or encoded is None:
                            backend.write(batch)
                            continue
                        timed(conn, stmt, encoded, variant, r > 0)
                conn.execute("SET synchronous_commit = on")
        finally:
            conn.close()
            backend.close()
    return {v: (_median_us(wall[v]), _median_us(cpu[v])) for v in VARIANTS}


def client_split(
    batches: Sequence[tuple[str, Any]], rounds: int = ROUNDS, dsn: str = bench_postgres.DSN
) -> dict[str, float]:
    """Median CPU µs per call kind of the PostgreSQL backend's own work for a write: all that
    ``PostgresBackend.write`` does but the exchange with the server (the direct path's ``run``
    answers at once and sends nothing), converting a step's batch in one pass (keys ``"put"``,
    ``"put_writes"``) and by the general path (``"put, general"``, ...), rounds alternating."""
    from snapstate.backends import _pg_direct as direct
    from snapstate.backends import _pg_sql as sql
    from snapstate.backends.postgres import PostgresBackend

    def answered(*args: Any, **kwargs: Any) -> object:
        return object()  # a result of a statement that returns no rows

    def general(q: Any, batch: Any) -> None:
        return None

    cpu: dict[str, list[float]] = {}
    with bench_postgres.fresh_schema(dsn) as schema:
        backend = PostgresBackend(dsn, schema=schema)
        real_run, one_pass = direct.run, sql.direct_write
        try:
            backend.setup()
            backend.write(bench_postgres._retarget(batches[0][1], "opening the pool"))
            direct.run = answered
            for r in range(rounds + 1):
                for variant, convert in (("", one_pass), (", general", general)):
                    sql.direct_write = convert  # type: ignore[assignment]
                    for kind, batch in batches:
                        c = time.thread_time()
                        backend.write(batch)
                        c = time.thread_time() - c
                        if r:
                            cpu.setdefault(f"{kind}{variant}", []).append(c)
        finally:
            direct.run, sql.direct_write = real_run, one_pass
            backend.close()
    return {k: _median_us(v) for k, v in cpu.items()}


# -- report ------------------------------------------------------------------------------------


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table under its title; every column after the first aligned right."""
    lines = [title, "", "| " + " | ".join(header) + " |"]
    lines.append("| --- |" + " ---: |" * (len(header) - 1))
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def sqlite_table(result: dict[str, float]) -> str:
    rows: list[list[str]] = []
    for suffix, how in (("", ""), (", unbuffered", ", each frame written as SQLite writes it")):
        for kind in KINDS:
            phases = ("begin", "statements", "commit", "total")
            rows.append(
                [f"`{kind}`{how}", *(f"{result[f'{kind} {p}{suffix}']:.1f}" for p in phases)]
            )
    for suffix, how in (("", " (the floor)"), (", unbuffered", ", each frame as SQLite writes it")):
        rows.append([f"a 4-byte row{how}", "", "", "", f"{result[f'floor{suffix}']:.1f}"])
    return _table(
        "SQLite, compiled connection: medians in µs per batch",
        ("call", "BEGIN", "statements", "COMMIT", "total"),
        rows,
    )


def postgres_table(result: dict[str, tuple[float, float]]) -> str:
    rows = [[v, f"{result[v][0]:.0f}", f"{result[v][1]:.0f}"] for v in VARIANTS]
    return _table(
        "PostgreSQL, one statement with its commit: medians in µs",
        ("statement", "wall", "CPU"),
        rows,
    )


def client_table(result: dict[str, float]) -> str:
    rows = [[f"`{k}`", f"{result[k]:.1f}", f"{result[f'{k}, general']:.1f}"] for k in KINDS]
    return _table(
        "PostgreSQL backend, its own work for a write (the server's reply stubbed): medians of "
        "CPU µs",
        ("call", "one pass", "general path"),
        rows,
    )


def main(argv: Sequence[str] = ()) -> None:
    batches = capture()
    if "--client" not in argv:
        print(sqlite_table(sqlite_split(batches)))
    if "--sqlite" in argv:
        return
    if not bench_postgres.server_available(bench_postgres.DSN):
        print(f"\nPostgreSQL at {bench_postgres.DSN} is not reachable: skipped")
        return
    if "--client" not in argv:
        print()
        print(postgres_table(postgres_split(batches)))
    print()
    print(client_table(client_split(batches)))


if __name__ == "__main__":
    main(sys.argv[1:])
