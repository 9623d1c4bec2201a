"""Writers: how batches of rows reach the backend, and when ``put`` returns.

``sync`` (the default)
    ``submit`` returns after the batch's transaction commits. Concurrent submitters share
    commits (group commit): while one transaction runs, the batches that arrive queue up, and
    the next transaction carries all of them. A lone caller commits at once; there is no timer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Literal, Protocol

from .backends._async import AsyncBackend
from .backends._base import Backend, WriteBatch
from .errors import ConfigurationError

__all__ = ["Durability", "Writer", "AsyncWriter", "SyncWriter", "make_writer", "make_async_writer"]

Durability = Literal["sync", "batched"]

#: Called with a batch whose transaction failed, before the error reaches the caller.
FailureHook = Callable[[WriteBatch], None]


class Writer(Protocol):
    """What the engine needs of a writer."""

    durability: Durability

    def submit(self, batch: WriteBatch) -> None: ...
    def sync_thread(self, thread_id: str | None) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class AsyncWriter(Protocol):
    durability: Durability

    async def submit(self, batch: WriteBatch) -> None: ...
    async def sync_thread(self, thread_id: str | None) -> None: ...
    async def flush(self) -> None: ...
    async def close(self) -> None: ...


class _Ticket:
    __slots__ = ("batch", "done", "error")

    def __init__(self, batch: WriteBatch) -> None:
        self.batch = batch
        self.done = False
        self.error: BaseException | None = None


class SyncWriter:
    """Commit before returning; concurrent callers share one transaction (group commit)."""

    durability: Durability = "sync"

    def __init__(self, backend: Backend, on_failure: FailureHook | None = None) -> None:
        self._backend = backend
        self._on_failure = on_failure
        self._cv = threading.Condition()
        self._queue: list[_Ticket] = []
        self._leader = False

    def submit(self, batch: WriteBatch) -> None:
        ticket = _Ticket(batch)
        with self._cv:
            self._queue.append(ticket)
            while not ticket.done and self._leader:
                self._cv.wait()
            if ticket.done:
                if ticket.error is not None:
                    raise ticket.error
                return
            # No transaction is running: this caller commits everything queued so far.
            self._leader = True
            group, self._queue = self._queue, []
        try:
            self._commit(group)
        finally:
            with self._cv:
                self._leader = False
                self._cv.notify_all()
        if ticket.error is not None:
            raise ticket.error

    def _commit(self, group: list[_Ticket]) -> None:
        if len(group) == 1:
            self._commit_one(group[0])
            return
        merged = WriteBatch()
        for t in group:
            merged.extend(t.batch)
        try:
            self._backend.write(merged)
        except Exception:
            # One bad batch must not fail its neighbours: commit each alone to find it.
            for t in group:
                self._commit_one(t)
        else:
            for t in group:
                t.done = True

    def _commit_one(self, ticket: _Ticket) -> None:
        try:
            self._backend.write(ticket.batch)
        except BaseException as exc:
            ticket.error = exc
            if self._on_failure is not None:
                self._on_failure(ticket.batch)
        finally:
            ticket.done = True

    def sync_thread(self, thread_id: str | None) -> None:
        """Nothing is ever queued past a ``submit`` in this mode."""

    def flush(self) -> None:
        """Nothing is ever queued past a ``submit`` in this mode."""

    def close(self) -> None:
        """Nothing to drain."""


class AsyncSyncWriter:
    """The asyncio twin of :class:`SyncWriter`: each ``submit`` awaits its commit."""

    durability: Durability = "sync"

    def __init__(self, backend: AsyncBackend, on_failure: FailureHook | None = None) -> None:
        self._backend = backend
        self._on_failure = on_failure

    async def submit(self, batch: WriteBatch) -> None:
        try:
            await self._backend.write(batch)
        except BaseException:
            if self._on_failure is not None:
                self._on_failure(batch)
            raise

    async def sync_thread(self, thread_id: str | None) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass


def _check_durability(durability: Any) -> None:
    if durability not in ("sync", "batched"):
        raise ConfigurationError(
            f"durability must be 'sync' or 'batched', got {durability!r}"
        )


def make_writer(
    backend: Backend, durability: Durability, on_failure: FailureHook | None = None, **options: Any
) -> Writer:
    """The writer for a durability mode."""
    _check_durability(durability)
    if durability == "batched":
        raise ConfigurationError("durability='batched' is not available yet")
    if options:
        raise ConfigurationError(f"unknown writer options for durability='sync': {sorted(options)}")
    return SyncWriter(backend, on_failure)


def make_async_writer(
    backend: AsyncBackend,
    durability: Durability,
    on_failure: FailureHook | None = None,
    **options: Any,
) -> AsyncWriter:
    """The asyncio writer for a durability mode."""
    _check_durability(durability)
    if durability == "batched":
        raise ConfigurationError("durability='batched' is not available yet")
    if options:
        raise ConfigurationError(f"unknown writer options for durability='sync': {sorted(options)}")
    return AsyncSyncWriter(backend, on_failure)


_ = asyncio  # the batched async writer uses asyncio primitives
