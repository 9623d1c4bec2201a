"""Backend fixtures: every contract test runs once per backend, with readable ids.

PostgreSQL comes from ``SNAPSTATE_TEST_PG_DSN`` (or ``--pg-dsn``). When it is not reachable, the
Postgres cases skip with the reason on a developer's machine and fail under CI (``CI=true``),
where the server is part of the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Collection, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from snapstate import codec
from snapstate.backends import (
    AsyncBackend,
    Backend,
    BlobRef,
    BlobRow,
    CheckpointRow,
    ListQuery,
    MemoryBackend,
    WriteBatch,
    WriteRow,
)
from snapstate.backends.sqlite import SqliteBackend

#: ``postgres-async`` is :class:`AsyncPostgresBackend`, the natively asyncio twin, driven through
#: :class:`AsyncOnALoop` so that every contract test runs against its own SQL path too.
BACKENDS = ["memory", "sqlite", "postgres", "postgres-async"]


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
        from snapstate.backends.postgres import AsyncPostgresBackend, PostgresBackend

        def factory() -> Backend:
            b: Backend
            if kind == "postgres":
                b = PostgresBackend(dsn, schema=schema)
            else:
                b = AsyncOnALoop(lambda: AsyncPostgresBackend(dsn, schema=schema))
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


class AsyncOnALoop(Backend):
    """The synchronous backend contract over an asyncio backend: every call is awaited on an
    event loop of this object's own, running in a thread of its own, while the caller waits.
    The asyncio backend's code is what runs: only the waiting is adapted."""

    def __init__(self, make: Callable[[], AsyncBackend]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="async-backend-loop", daemon=True
        )
        self._thread.start()

        async def build() -> AsyncBackend:
            return make()

        self.inner = self._await(build())
        self.name = self.inner.name
        self.write_concurrency = getattr(self.inner, "write_concurrency", 1)
        self._closed = False

    def _await(self, coro: Coroutine[Any, Any, Any]) -> Any:
        if threading.get_ident() == self._thread.ident:
            raise AssertionError("a call from the backend's own loop would wait for itself")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def setup(self) -> None:
        self._await(self.inner.setup())

    def write(self, batch: WriteBatch) -> None:
        self._await(self.inner.write(batch))

    def get_checkpoint(
        self, thread_id: str, namespace: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        return self._await(  # type: ignore[no-any-return]
            self.inner.get_checkpoint(thread_id, namespace, checkpoint_id)
        )

    def list_checkpoints(self, query: ListQuery) -> Iterator[CheckpointRow]:
        return iter(self._await(self.inner.list_checkpoints(query)))

    def get_blobs(
        self, thread_id: str, namespace: str, keys: Collection[tuple[str, str]]
    ) -> list[BlobRow]:
        return self._await(self.inner.get_blobs(thread_id, namespace, keys))  # type: ignore[no-any-return]

    def get_writes(
        self, thread_id: str, namespace: str, checkpoint_ids: Collection[str]
    ) -> list[WriteRow]:
        return self._await(self.inner.get_writes(thread_id, namespace, checkpoint_ids))  # type: ignore[no-any-return]

    def load(
        self, thread_id: str, namespace: str, checkpoint_id: str | None
    ) -> tuple[CheckpointRow, list[BlobRow], list[WriteRow]] | None:
        return self._await(self.inner.load(thread_id, namespace, checkpoint_id))  # type: ignore[no-any-return]

    def delete_threads(self, thread_ids: Sequence[str]) -> None:
        self._await(self.inner.delete_threads(thread_ids))

    def blob_index(self, thread_id: str) -> list[BlobRef]:
        return self._await(self.inner.blob_index(thread_id))  # type: ignore[no-any-return]

    def delete_idle_threads(self, thread_ids: Sequence[str], idle_before: float) -> list[str]:
        if not hasattr(self.inner, "delete_idle_threads"):  # a backend without its own
            return super().delete_idle_threads(thread_ids, idle_before)
        return self._await(self.inner.delete_idle_threads(thread_ids, idle_before))  # type: ignore[no-any-return]

    def blob_counts(self, thread_ids: Sequence[str]) -> dict[str, int]:
        if not hasattr(self.inner, "blob_counts"):  # a backend without the fast path
            return super().blob_counts(thread_ids)
        return self._await(self.inner.blob_counts(thread_ids))  # type: ignore[no-any-return]

    def delete_rows(
        self,
        thread_id: str,
        checkpoints: Collection[tuple[str, str]],
        blobs: Collection[tuple[str, str, str]],
    ) -> int:
        return self._await(self.inner.delete_rows(thread_id, checkpoints, blobs))  # type: ignore[no-any-return]

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._await(self.inner.copy_thread(source_thread_id, target_thread_id))

    def purge_tombstones(self, deleted_before: float) -> int:
        return self._await(self.inner.purge_tombstones(deleted_before))  # type: ignore[no-any-return]

    def migration_status(self) -> Any:
        return self._await(self.inner.migration_status())

    def threads(self, *, idle_before: float | None = None) -> Any:
        return self._await(self.inner.threads(idle_before=idle_before))  # type: ignore[attr-defined]

    def stats(self) -> Any:
        return self._await(self.inner.stats())  # type: ignore[attr-defined]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._await(self.inner.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()
