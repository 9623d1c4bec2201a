"""Backend fixtures: every contract test runs once per backend, with readable ids.

PostgreSQL comes from ``SNAPSTATE_TEST_PG_DSN`` (or ``--pg-dsn``). When it is not reachable, the
Postgres cases skip with the reason on a developer's machine and fail under CI (``CI=true``),
where the server is part of the environment.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from snapstate import codec
from snapstate.backends import Backend, MemoryBackend
from snapstate.backends.sqlite import SqliteBackend

BACKENDS = ["memory", "sqlite", "postgres"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--pg-dsn", default=None, help="PostgreSQL DSN for the postgres backend tests")


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"snapstate codec implementation: {codec.IMPL}", f"postgres dsn: {_dsn(config)}"]


def _dsn(config: pytest.Config) -> str:
    return (
        config.getoption("--pg-dsn")
        or os.environ.get("SNAPSTATE_TEST_PG_DSN")
        or "postgresql://postgres@127.0.0.1:5432/test"
    )


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


_pg_status: dict[str, str | None] = {}


@pytest.fixture(scope="session")
def pg_dsn(pytestconfig: pytest.Config) -> str:
    """A reachable PostgreSQL DSN, or skip (fail under CI)."""
    dsn = _dsn(pytestconfig)
    if dsn not in _pg_status:
        try:
            import psycopg

            with psycopg.connect(dsn, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            _pg_status[dsn] = None
        except Exception as exc:  # any failure means "not reachable" here
            _pg_status[dsn] = f"{type(exc).__name__}: {exc}"
    reason = _pg_status[dsn]
    if reason is not None:
        message = f"PostgreSQL at {dsn} is not reachable ({reason})"
        if in_ci():
            pytest.fail(message + "; under CI the server is required")
        pytest.skip(message)
    return dsn


@contextlib.contextmanager
def new_schema(dsn: str, prefix: str = "t_") -> Iterator[str]:
    """A fresh, empty schema, dropped with everything in it at the end."""
    import psycopg

    name = prefix + uuid.uuid4().hex[:16]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh, empty schema for one test; dropped afterwards."""
    with new_schema(pg_dsn) as name:
        yield name


BackendFactory = Callable[[], Backend]


@pytest.fixture(params=BACKENDS)
def backend_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendFactory]:
    """Makes backends that share one store (a second call opens the same store again)."""
    kind = request.param
    made: list[Backend] = []
    if kind == "memory":
        shared = MemoryBackend()

        def factory() -> Backend:
            return shared

    elif kind == "sqlite":
        path = tmp_path / "store.db"

        def factory() -> Backend:
            b = SqliteBackend(path)
            made.append(b)
            return b

    else:
        dsn = request.getfixturevalue("pg_dsn")
        schema = request.getfixturevalue("pg_schema")
        from snapstate.backends.postgres import PostgresBackend

        def factory() -> Backend:
            b = PostgresBackend(dsn, schema=schema)
            made.append(b)
            return b

    yield factory
    for b in made:
        b.close()


@pytest.fixture
def backend(backend_factory: BackendFactory) -> Backend:
    return backend_factory()


@pytest.fixture
def backend_name(backend: Backend) -> str:
    return backend.name


def make_checkpoint(i: int, values: dict[str, Any], **kw: Any) -> Any:
    from snapstate import Checkpoint

    return Checkpoint(
        id=f"{i:08d}",
        channel_values=values,
        channel_versions=kw.pop("versions", {k: i + 1 for k in values}),
        **kw,
    )
