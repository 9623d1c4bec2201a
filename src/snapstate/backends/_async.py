"""The asyncio side of the storage contract.

:class:`AsyncBackend` mirrors :class:`~snapstate.backends.Backend` with awaitable methods. A
backend with native async I/O (PostgreSQL) implements it directly; any synchronous backend is
adapted by :func:`as_async_backend`, which runs blocking calls in a worker thread.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Collection, Sequence
from typing import Any

from ._base import (
    Backend,
    BlobRef,
    BlobRow,
    CheckpointRow,
    ListQuery,
    MigrationStatus,
    WriteBatch,
    WriteRow,
)

__all__ = ["AsyncBackend", "ThreadedAsyncBackend", "as_async_backend"]


class AsyncBackend(abc.ABC):
    """Awaitable storage for checkpoint, blob and write rows (see ``Backend`` for semantics)."""

    name: str = "backend"

    #: See :attr:`Backend.write_concurrency`.
    write_concurrency: int = 1

    @abc.abstractmethod
    async def setup(self) -> None: ...

    @abc.abstractmethod
    async def write(self, batch: WriteBatch) -> None: ...

    @abc.abstractmethod
    async def get_checkpoint(
        self, thread_id: str, namespace: str, checkpoint_id: str | None
    ) -> CheckpointRow | None: ...

    @abc.abstractmethod
    async def list_checkpoints(self, query: ListQuery) -> list[CheckpointRow]: ...

    @abc.abstractmethod
    async def get_blobs(
        self, thread_id: str, namespace: str, keys: Collection[tuple[str, str]]
    ) -> list[BlobRow]: ...

    @abc.abstractmethod
    async def get_writes(
        self, thread_id: str, namespace: str, checkpoint_ids: Collection[str]
    ) -> list[WriteRow]: ...

    @abc.abstractmethod
    async def delete_threads(self, thread_ids: Sequence[str]) -> None: ...

    @abc.abstractmethod
    async def blob_index(self, thread_id: str) -> list[BlobRef]: ...

    @abc.abstractmethod
    async def delete_rows(
        self,
        thread_id: str,
        checkpoints: Collection[tuple[str, str]],
        blobs: Collection[tuple[str, str, str]],
    ) -> int: ...

    @abc.abstractmethod
    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None: ...

    @abc.abstractmethod
    async def purge_tombstones(self, deleted_before: float) -> int: ...

    async def migration_status(self) -> list[MigrationStatus]:
        """See ``Backend.migration_status``; none by default."""
        return []

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. The default does nothing."""

    async def load(
        self, thread_id: str, namespace: str, checkpoint_id: str | None
    ) -> tuple[CheckpointRow, list[BlobRow], list[WriteRow]] | None:
        """See :meth:`Backend.load`: the default reads apart, so looks again when no writes
        come back."""
        while True:
            row = await self.get_checkpoint(thread_id, namespace, checkpoint_id)
            if row is None:
                return None
            writes = await self.get_writes(thread_id, namespace, [row.checkpoint_id])
            if writes or await self.get_checkpoint(thread_id, namespace, row.checkpoint_id):
                return row, [], writes
            if checkpoint_id is not None:
                return None  # deleted between the two reads


class ThreadedAsyncBackend(AsyncBackend):
    """Adapts a synchronous backend: each call runs in a worker thread (or inline)."""

    def __init__(self, backend: Backend, *, offload: bool = True) -> None:
        self.sync = backend
        self.name = backend.name
        self._offload = offload

    async def _call(self, fn: Any, *args: Any) -> Any:
        if self._offload:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    async def setup(self) -> None:
        await self._call(self.sync.setup)

    async def write(self, batch: WriteBatch) -> None:
        await self._call(self.sync.write, batch)

    async def get_checkpoint(
        self, thread_id: str, namespace: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        return await self._call(self.sync.get_checkpoint, thread_id, namespace, checkpoint_id)  # type: ignore[no-any-return]

    async def list_checkpoints(self, query: ListQuery) -> list[CheckpointRow]:
        return await self._call(lambda: list(self.sync.list_checkpoints(query)))  # type: ignore[no-any-return]

    async def get_blobs(
        self, thread_id: str, namespace: str, keys: Collection[tuple[str, str]]
    ) -> list[BlobRow]:
        return await self._call(self.sync.get_blobs, thread_id, namespace, keys)  # type: ignore[no-any-return]

    async def get_writes(
        self, thread_id: str, namespace: str, checkpoint_ids: Collection[str]
    ) -> list[WriteRow]:
        return await self._call(self.sync.get_writes, thread_id, namespace, checkpoint_ids)  # type: ignore[no-any-return]

    async def delete_threads(self, thread_ids: Sequence[str]) -> None:
        await self._call(self.sync.delete_threads, thread_ids)

    async def blob_index(self, thread_id: str) -> list[BlobRef]:
        return await self._call(self.sync.blob_index, thread_id)  # type: ignore[no-any-return]

    async def delete_rows(
        self,
        thread_id: str,
        checkpoints: Collection[tuple[str, str]],
        blobs: Collection[tuple[str, str, str]],
    ) -> int:
        return await self._call(self.sync.delete_rows, thread_id, checkpoints, blobs)  # type: ignore[no-any-return]

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._call(self.sync.copy_thread, source_thread_id, target_thread_id)

    async def purge_tombstones(self, deleted_before: float) -> int:
        return await self._call(self.sync.purge_tombstones, deleted_before)  # type: ignore[no-any-return]

    async def migration_status(self) -> list[MigrationStatus]:
        return await self._call(self.sync.migration_status)  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self._call(self.sync.close)

    async def load(
        self, thread_id: str, namespace: str, checkpoint_id: str | None
    ) -> tuple[CheckpointRow, list[BlobRow], list[WriteRow]] | None:
        return await self._call(self.sync.load, thread_id, namespace, checkpoint_id)  # type: ignore[no-any-return]


def as_async_backend(backend: Backend) -> AsyncBackend:
    """An awaitable view of a synchronous backend.

    The in-memory backend never blocks, so its calls run inline; others run in a worker thread.
    """
    from .memory import MemoryBackend

    return ThreadedAsyncBackend(backend, offload=not isinstance(backend, MemoryBackend))
