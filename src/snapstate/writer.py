"""Writers: how batches of rows reach the backend, and when ``put`` returns.

``sync`` (the default)
    ``submit`` returns after the batch's transaction commits. Concurrent submitters share
    commits (group commit): while one transaction runs, the batches that arrive queue up, and
    the next transaction carries all of them. A lone caller commits at once; there is no timer.

``batched``
    ``submit`` queues the batch and returns. A background committer stores everything queued
    in one transaction at most ``max_delay`` seconds after the oldest queued item arrived, or at
    once when ``max_batch`` items or ``max_bytes`` bytes are queued. Whenever a caller waits
    (``flush``, ``sync_thread`` before a read of a thread with queued items, ``close``, or a
    ``submit`` held back because the queue is full) the committer commits at once: batching
    never adds idle time to a caller that is blocked. The queue is bounded by ``max_batch``
    and ``max_bytes``, so at most one full queue waits while one commit runs. Queued items
    are committed at interpreter exit. A commit that fails in the background is reported to
    the next caller of ``submit``, ``flush``, ``sync_thread`` or ``close``.

In both modes a batch whose commit failed is handed to ``on_failure`` (the engine then stops
building append-deltas on what it had stored), and a later batch of the same graph thread that
was queued before the failure is not stored either: it may build on the lost one. A batch the
backend refused because a value one of its append-deltas builds on is no longer stored
(``DeltaBaseMissingError``: retention in another process deleted it) is stored again as its
``replan``, the same checkpoint with whole values, before anything is reported.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import weakref
from collections.abc import Callable, Generator
from time import monotonic
from typing import Any, Literal, Protocol

from . import _forksafe
from .backends._async import AsyncBackend
from .backends._base import Backend, WriteBatch, batch_bytes, batch_threads
from .errors import (
    ConfigurationError,
    DeltaBaseMissingError,
    SnapstateError,
    StorageError,
    StoreUnavailableError,
)

__all__ = [
    "Durability",
    "Writer",
    "AsyncWriter",
    "SyncWriter",
    "AsyncSyncWriter",
    "BatchedWriter",
    "AsyncBatchedWriter",
    "make_writer",
    "make_async_writer",
]

logger = logging.getLogger("snapstate")

Durability = Literal["sync", "batched"]

#: Called with a batch whose transaction failed, before the error reaches the caller.
FailureHook = Callable[[WriteBatch], None]

#: ``batched``: the longest a queued item waits before its commit starts (seconds). At 50 ms a
#: chat graph stepping every few milliseconds commits tens of steps per transaction; a crash
#: loses at most this window.
DEFAULT_MAX_DELAY = 0.05
#: ``batched``: items (puts and put_writes) per commit; a full queue holds back ``submit``.
DEFAULT_MAX_BATCH = 1000
#: ``batched``: queued bytes per commit; a full queue holds back ``submit``.
DEFAULT_MAX_BYTES = 64 << 20


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


# -- group commit, shared by every writer ------------------------------------------------------


def _dependent(thread_id: str) -> StorageError:
    return StorageError(
        f"a write of thread {thread_id!r} was not stored because an earlier write of that "
        "thread failed in the same commit (it may build on the lost one)"
    )


def _group_commit(
    batches: list[WriteBatch],
) -> Generator[WriteBatch, BaseException | None, list[BaseException | None]]:
    """Commit batches together: yields what to write, receives the error of each write.

    One transaction first. If it fails because of the data, each batch is retried alone so one
    bad batch does not fail its neighbours; a batch of a thread whose earlier batch failed is
    skipped. If the store itself is unavailable, every batch fails with that error.
    """
    if len(batches) <= 1:
        return [(yield from _alone(batches[0]))] if batches else []
    merged = WriteBatch()
    for b in batches:
        merged.extend(b)
    error = yield merged
    if error is None:
        return [None] * len(batches)
    if isinstance(error, StoreUnavailableError) or not isinstance(error, Exception):
        return [error] * len(batches)
    errors: list[BaseException | None] = []
    failed: set[str] = set()
    for b in batches:
        threads = batch_threads(b)
        lost = threads & failed
        if lost:
            errors.append(_dependent(min(lost)))
            failed |= threads
            continue
        err = yield from _alone(b)
        errors.append(err)
        if err is not None:
            failed |= threads
    return errors


def _alone(batch: WriteBatch) -> Generator[WriteBatch, BaseException | None, BaseException | None]:
    """Write one batch. Refused because retention (in another process) deleted the base of
    one of its append-deltas, the same write with whole values goes in its place."""
    error = yield batch
    if isinstance(error, DeltaBaseMissingError) and batch.replan is not None:
        try:
            again = batch.replan()
        except Exception as exc:  # handed to the submitter, like a write's error
            return exc
        error = yield again
    return error


def _drive_sync(
    backend: Backend, batches: list[WriteBatch], first: BaseException | None = None
) -> list[BaseException | None]:
    """Write ``batches`` as :func:`_group_commit` plans it; each one's error. ``first``: the
    error its first write already raised (that write is not made again)."""
    plan = _group_commit(batches)
    try:
        batch = next(plan)
        if first is not None:
            batch = plan.send(first)
        while True:
            try:
                backend.write(batch)
            except BaseException as exc:  # handed to the submitter, who re-raises it
                batch = plan.send(exc)
            else:
                batch = plan.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def _drive_async(
    backend: AsyncBackend, batches: list[WriteBatch]
) -> list[BaseException | None]:
    plan = _group_commit(batches)
    try:
        batch = next(plan)
        while True:
            try:
                await backend.write(batch)
            except BaseException as exc:  # handed to the submitter, who re-raises it
                batch = plan.send(exc)
            else:
                batch = plan.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def _interrupted() -> StorageError:
    return StorageError(
        "the commit carrying this write was interrupted; the write may or may not be stored"
    )


# -- sync ----------------------------------------------------------------------------------------


def _running_loop(bound: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    """The running loop, for an asyncio writer bound to ``bound`` (None: to no loop yet).

    A checkpointer may outlive its loop (``asyncio.run`` called twice), and then moves to the
    next one; two loops running at once cannot share it.
    """
    loop = asyncio.get_running_loop()
    if bound is not None and bound is not loop and bound.is_running():
        raise StorageError(
            "this checkpointer's writer is in use by another running event loop",
            hint="give each event loop a checkpointer of its own",
        )
    return loop


def _slots(backend: Backend | AsyncBackend) -> int:
    """How many commits a sync writer may run at once (``Backend.write_concurrency``)."""
    return max(1, int(getattr(backend, "write_concurrency", 1)))


class _Ticket:
    __slots__ = ("batch", "done", "error", "future", "taken")

    def __init__(self, batch: WriteBatch) -> None:
        self.batch = batch
        #: A leader took it into a commit that is running (or has run); sync writer only.
        self.taken = False
        self.done = False
        self.error: BaseException | None = None
        self.future: asyncio.Future[bool] | None = None


class SyncWriter:
    """Commit before returning; concurrent callers share one transaction (group commit).

    Up to the backend's ``write_concurrency`` transactions run at once, each led by one of the
    callers; a caller who arrives while that many run waits, and the first of the waiters to
    get a turn commits everything queued by then. A caller who finds a free slot and nobody
    queued commits its own batch at once, without the bookkeeping a group needs.
    """

    durability: Durability = "sync"

    def __init__(self, backend: Backend, on_failure: FailureHook | None = None) -> None:
        self._backend = backend
        self._on_failure = on_failure
        self._limit = _slots(backend)
        self._start_in_child()
        _forksafe.track(self)

    def _start_in_child(self) -> None:
        """No commit running and nobody queued: at the start, and in a forked child, whose
        parent's callers (and their commits) are not there (see :mod:`snapstate._forksafe`)."""
        self._cv = threading.Condition()
        self._queue: list[_Ticket] = []
        self._running = 0
        #: Callers waiting on the condition: a commit that ends wakes them only if there are any.
        self._sleeping = 0

    def submit(self, batch: WriteBatch) -> None:
        with self._cv:
            if not self._queue and self._running < self._limit:
                # Nobody is queued and a slot is free: the group would be this batch alone.
                self._running += 1
                group = None
            else:
                ticket = _Ticket(batch)
                self._queue.append(ticket)
                # A taken ticket is in another leader's commit: wait for that one, whatever
                # else finishes meanwhile.
                while not ticket.done and (ticket.taken or self._running >= self._limit):
                    self._sleeping += 1
                    try:
                        self._cv.wait()
                    finally:
                        self._sleeping -= 1
                if ticket.done:
                    if ticket.error is not None:
                        raise ticket.error
                    return
                # A transaction slot is free: this caller commits everything queued so far.
                self._running += 1
                group, self._queue = self._queue, []
                for t in group:
                    t.taken = True
        if group is None:
            self._commit_alone(batch)
            return
        try:
            self._commit(group)
        finally:
            self._release()
        if ticket.error is not None:
            raise ticket.error

    def _release(self) -> None:
        """Give back the commit slot this caller took, and wake the waiters."""
        with self._cv:
            self._running -= 1
            if self._sleeping:
                self._cv.notify_all()

    def _commit_alone(self, batch: WriteBatch) -> None:
        """Commit one batch that no other caller is waiting to join (its slot is taken), as a
        group of one (a write refused for a missing delta base goes again whole: see _alone).
        A write that succeeds at once needs none of the group's bookkeeping."""
        error: BaseException | None = None
        try:
            try:
                self._backend.write(batch)
            except BaseException as exc:  # the group of one takes it from its first write on
                (error,) = _drive_sync(self._backend, [batch], exc)
            if error is not None and self._on_failure is not None:
                self._on_failure(batch)
        finally:
            self._release()
        if error is not None:
            raise error

    def _commit(self, group: list[_Ticket]) -> None:
        errors: list[BaseException | None] | None = None
        try:
            errors = _drive_sync(self._backend, [t.batch for t in group])
        finally:
            # Never leave a ticket undone: its submitter would report success. A batch of an
            # interrupted commit may or may not be stored: nothing may build on it either.
            for i, t in enumerate(group):
                t.error = errors[i] if errors is not None else _interrupted()
                t.done = True
                if t.error is not None and self._on_failure is not None:
                    self._on_failure(t.batch)

    def sync_thread(self, thread_id: str | None) -> None:
        """Nothing is ever queued past a ``submit`` in this mode."""

    def flush(self) -> None:
        """Nothing is ever queued past a ``submit`` in this mode."""

    def close(self) -> None:
        """Nothing to drain."""


class AsyncSyncWriter:
    """The asyncio twin of :class:`SyncWriter`: each ``submit`` awaits its commit, up to the
    backend's ``write_concurrency`` commits run at once, and tasks that submit while that many
    run share the next one."""

    durability: Durability = "sync"

    def __init__(self, backend: AsyncBackend, on_failure: FailureHook | None = None) -> None:
        self._backend = backend
        self._on_failure = on_failure
        self._queue: list[_Ticket] = []
        self._limit = _slots(backend)
        #: Commits running, plus leads handed to a waiter that has not started yet.
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        #: The loop the queue and the slots belong to, and how many loops came before it.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._epoch = 0

    def _on_loop(self) -> int:
        """The epoch of the running loop (see :func:`_running_loop`). When a loop ended (even
        closed in the middle of a commit, without its shutdown), the next one starts with free
        slots and an empty queue; the ended loop's callers never returned, so nothing they
        submitted was acknowledged."""
        loop = _running_loop(self._loop)
        if self._loop is not loop:
            self._loop, self._epoch = loop, self._epoch + 1
            self._queue, self._running = [], 0
        return self._epoch

    async def submit(self, batch: WriteBatch) -> None:
        epoch = self._on_loop()
        ticket = _Ticket(batch)
        self._queue.append(ticket)
        if self._running >= self._limit:
            future = ticket.future = asyncio.get_running_loop().create_future()
            try:
                lead = await future
            except asyncio.CancelledError:
                # The batch stays queued and is committed by the next leader; if the lead had
                # just been handed to this task, pass it on.
                if future.done() and not future.cancelled() and future.result():
                    self._hand_off(epoch)
                raise
            if not lead:
                if ticket.error is not None:
                    raise ticket.error
                return
        else:
            self._running += 1
        await self._lead(epoch)
        if not ticket.done:
            # Another leader took this batch into its commit before this task got to lead:
            # wait for that commit.
            ticket.future = asyncio.get_running_loop().create_future()
            await ticket.future
        if ticket.error is not None:
            raise ticket.error

    async def _lead(self, epoch: int) -> None:
        """Commit everything queued as one group, then pass the lead on (on the loop of
        ``epoch``: a lead of an ended loop, closed late, passes nothing on)."""
        group, self._queue = self._queue, []
        errors: list[BaseException | None] | None = None
        try:
            errors = await _drive_async(self._backend, [t.batch for t in group])
        finally:
            live = epoch == self._epoch  # else the waiters' loop has ended: nobody to wake
            for i, t in enumerate(group):
                t.error = errors[i] if errors is not None else _interrupted()
                t.done = True
                if t.error is not None and self._on_failure is not None:
                    self._on_failure(t.batch)
                if live and t.future is not None and not t.future.done():
                    t.future.set_result(False)
            self._hand_off(epoch)

    def _hand_off(self, epoch: int) -> None:
        """Make the first live waiter the next leader, or free the slot."""
        if epoch != self._epoch:
            return  # the slots of an ended loop's were given back when the next loop came
        handed = False
        for t in self._queue:
            f = t.future
            if f is not None and not f.done():
                f.set_result(True)
                return
            if f is not None and not f.cancelled() and f.result():
                handed = True  # its task will lead, and take the whole queue
        if self._queue and not handed:
            # Only cancelled submitters are queued: commit their batches in a task of our own.
            task = asyncio.get_running_loop().create_task(self._lead(epoch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self._running -= 1

    async def sync_thread(self, thread_id: str | None) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass


# -- batched -------------------------------------------------------------------------------------


class _Item:
    __slots__ = ("at", "batch", "seq", "size", "threads")

    def __init__(self, batch: WriteBatch, seq: int, at: float) -> None:
        self.batch = batch
        self.seq = seq
        self.threads = batch_threads(batch)
        self.size = batch_bytes(batch)
        self.at = at


def _options(
    max_delay: Any = DEFAULT_MAX_DELAY,
    max_batch: Any = DEFAULT_MAX_BATCH,
    max_bytes: Any = DEFAULT_MAX_BYTES,
) -> tuple[float, int, int]:
    if isinstance(max_delay, bool) or not isinstance(max_delay, (int, float)) or max_delay < 0:
        raise ConfigurationError(f"max_delay must be seconds >= 0, got {max_delay!r}")
    for name, value in (("max_batch", max_batch), ("max_bytes", max_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
    return float(max_delay), max_batch, max_bytes


class _Window:
    """The queue state both batched writers share (no locking: the owner holds its lock)."""

    def __init__(self, max_delay: float, max_batch: int, max_bytes: int) -> None:
        self.max_delay = max_delay
        self.max_batch = max_batch
        self.max_bytes = max_bytes
        self.queue: list[_Item] = []
        self.queued_bytes = 0
        self.seq = 0  # last submitted
        self.done_seq = 0  # every item up to here is committed or failed
        self.last_seq: dict[str, int] = {}  # thread -> its last submitted item
        self.poison: dict[str, int] = {}  # thread -> items up to here must not be stored
        self.waiting = 0  # callers blocked on this writer: commit at once
        self.error: BaseException | None = None
        self.lost = 0  # items not stored since the last reported error
        self.stopping = False

    def full_for(self, item: _Item) -> bool:
        return bool(self.queue) and (
            len(self.queue) >= self.max_batch or self.queued_bytes + item.size > self.max_bytes
        )

    def add(self, item: _Item) -> None:
        self.queue.append(item)
        self.queued_bytes += item.size
        for t in item.threads:
            self.last_seq[t] = item.seq

    def due(self, now: float) -> float | None:
        """Seconds until the queue must be committed; None while it is empty."""
        if not self.queue:
            return None
        if (
            self.waiting
            or self.stopping
            or len(self.queue) >= self.max_batch
            or self.queued_bytes >= self.max_bytes
        ):
            return 0.0
        return max(0.0, self.queue[0].at + self.max_delay - now)

    def take(self) -> tuple[list[_Item], list[_Item]]:
        """Everything queued: the items to commit, and those poisoned by an earlier failure."""
        items, self.queue, self.queued_bytes = self.queue, [], 0
        keep: list[_Item] = []
        dropped: list[_Item] = []
        for item in items:
            if any(item.seq <= self.poison.get(t, 0) for t in item.threads):
                dropped.append(item)
            else:
                keep.append(item)
        return keep, dropped

    def finish(
        self, items: list[_Item], errors: list[BaseException | None], dropped: list[_Item]
    ) -> list[WriteBatch]:
        """Record a commit's outcome; returns the batches to hand to ``on_failure``."""
        failed: list[WriteBatch] = []
        for item, err in zip(items, errors):
            if err is not None:
                self._fail(item, err)
                failed.append(item.batch)
        for item in dropped:
            self._fail(item, _dependent(min(item.threads)))
            failed.append(item.batch)
        last = max((i.seq for i in (*items, *dropped)), default=self.done_seq)
        self.done_seq = max(self.done_seq, last)
        for t, seq in list(self.last_seq.items()):
            if seq <= self.done_seq:
                del self.last_seq[t]
        for t, seq in list(self.poison.items()):
            if seq <= self.done_seq:
                del self.poison[t]
        return failed

    def _fail(self, item: _Item, err: BaseException) -> None:
        # Whatever this thread queued until now may build on the lost batch.
        for t in item.threads:
            self.poison[t] = self.seq
        self.lost += 1
        if self.error is None:
            self.error = err

    def pop_error(self) -> BaseException | None:
        err, lost = self.error, self.lost
        if err is None:
            return None
        self.error, self.lost = None, 0
        message = getattr(err, "message", None) or str(err) or type(err).__name__
        text = (
            f"a batched write failed in the background ({lost} queued item(s) not stored): "
            f"{message}"
        )
        if isinstance(err, SnapstateError):
            return type(err)(text, hint=err.hint)
        return StorageError(f"{text} ({type(err).__name__})")


def _closed_error() -> StorageError:
    return StorageError("this checkpointer's writer is closed", hint="make a new Checkpointer")


_live_writers: weakref.WeakSet[BatchedWriter] = weakref.WeakSet()


@atexit.register
def _drain_at_exit() -> None:
    for writer in list(_live_writers):
        try:
            writer.close()
        except Exception as exc:
            logger.error("snapstate: queued checkpoints were not stored at exit: %s", exc)


class BatchedWriter:
    """``put`` returns once queued; a background thread commits queued items together.

    See the module docstring for the guarantees. ``max_delay`` seconds, ``max_batch`` items and
    ``max_bytes`` bytes bound each commit and the queue.
    """

    durability: Durability = "batched"

    def __init__(
        self,
        backend: Backend,
        on_failure: FailureHook | None = None,
        *,
        max_delay: float = DEFAULT_MAX_DELAY,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._backend = backend
        self._on_failure = on_failure
        self._limits = _options(max_delay, max_batch, max_bytes)
        self._start_in_child()
        self._closed = False
        _live_writers.add(self)
        _forksafe.track(self)

    def _start_in_child(self) -> None:
        """An empty queue and no committer yet: at the start, and in a forked child, where
        what the parent queued stays the parent's to commit (see :mod:`snapstate._forksafe`)."""
        self._cv = threading.Condition()
        self._w = _Window(*self._limits)
        self._thread: threading.Thread | None = None

    # -- callers -------------------------------------------------------------------------------

    def _ready(self) -> None:
        """Raise a background failure not reported yet (lock held)."""
        err = self._w.pop_error()
        if err is not None:
            raise err

    def submit(self, batch: WriteBatch) -> None:
        with self._cv:
            self._ready()
            if self._closed:
                raise _closed_error()
            w = self._w
            item = _Item(batch, w.seq + 1, monotonic())
            if w.full_for(item):
                w.waiting += 1
                self._cv.notify_all()
                try:
                    while w.full_for(item) and not self._closed:
                        self._cv.wait()
                finally:
                    w.waiting -= 1
                self._ready()
                if self._closed:
                    raise _closed_error()
                item.at = monotonic()
            w.seq += 1
            item.seq = w.seq
            w.add(item)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="snapstate-batched-writer", daemon=True
                )
                self._thread.start()
            if len(w.queue) == 1 or w.due(item.at) == 0.0:
                self._cv.notify_all()

    def _wait_for(self, seq: int) -> None:
        """Commit now and wait until every item up to ``seq`` is committed (lock held)."""
        w = self._w
        if w.done_seq >= seq:
            return
        w.waiting += 1
        self._cv.notify_all()
        try:
            while w.done_seq < seq and self._thread is not None:
                self._cv.wait()
        finally:
            w.waiting -= 1

    def sync_thread(self, thread_id: str | None) -> None:
        """Wait until the thread's queued items are committed (every item for ``None``)."""
        if thread_id is None:
            self.flush()
            return
        with self._cv:
            seq = self._w.last_seq.get(thread_id)
            if seq is not None:
                self._wait_for(seq)
            self._ready()

    def flush(self) -> None:
        """Commit everything queued now, and wait for it."""
        with self._cv:
            self._wait_for(self._w.seq)
            self._ready()

    def close(self) -> None:
        """Commit everything queued, then stop the background thread."""
        with self._cv:
            if self._closed:
                self._ready()
                return
            self._wait_for(self._w.seq)
            self._closed = True
            self._w.stopping = True
            self._cv.notify_all()
            thread = self._thread
        _live_writers.discard(self)
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._cv:
            self._thread = None
            self._ready()

    # -- the committer -------------------------------------------------------------------------

    def _run(self) -> None:
        w = self._w
        while True:
            with self._cv:
                while True:
                    delay = w.due(monotonic())
                    if delay == 0.0:
                        break
                    if delay is None and w.stopping:
                        self._cv.notify_all()
                        return
                    self._cv.wait(delay)
                items, dropped = w.take()
                self._cv.notify_all()  # room in the queue
            errors = _drive_sync(self._backend, [i.batch for i in items]) if items else []
            with self._cv:
                failed = w.finish(items, errors, dropped)
            for batch in failed:
                self._call_on_failure(batch)
            with self._cv:
                self._cv.notify_all()

    def _call_on_failure(self, batch: WriteBatch) -> None:
        if self._on_failure is not None:
            try:
                self._on_failure(batch)
            except Exception:  # never let the hook stop the committer
                logger.exception("snapstate: on_failure hook raised")


class AsyncBatchedWriter:
    """The asyncio twin of :class:`BatchedWriter`: a task of the running loop commits.

    ``await close()`` (or the checkpointer's ``aclose``) drains the queue; so does the loop's
    shutdown, which cancels the committer task (``asyncio.run`` does this).
    """

    durability: Durability = "batched"

    def __init__(
        self,
        backend: AsyncBackend,
        on_failure: FailureHook | None = None,
        *,
        max_delay: float = DEFAULT_MAX_DELAY,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._backend = backend
        self._on_failure = on_failure
        self._w = _Window(*_options(max_delay, max_batch, max_bytes))
        self._cv: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def _cond(self) -> asyncio.Condition:
        """The condition of the running loop (see :func:`_running_loop`): on a new loop the
        writer makes a condition and a committer there, and commits there what is still
        queued."""
        loop = _running_loop(self._loop)
        if self._cv is None or self._loop is not loop:
            self._cv = asyncio.Condition()
            self._loop = loop
            self._task = None  # the old loop's committer runs no more
        return self._cv

    def _ensure_committer(self) -> None:
        """Start the running loop's committer if items are queued and none runs."""
        if self._w.queue and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _ready(self) -> None:
        err = self._w.pop_error()
        if err is not None:
            raise err

    async def submit(self, batch: WriteBatch) -> None:
        cv = self._cond()
        async with cv:
            self._ready()
            if self._closed:
                raise _closed_error()
            w = self._w
            item = _Item(batch, w.seq + 1, monotonic())
            if w.full_for(item):
                w.waiting += 1
                cv.notify_all()
                try:
                    while w.full_for(item) and not self._closed:
                        await cv.wait()
                finally:
                    w.waiting -= 1
                self._ready()
                if self._closed:
                    raise _closed_error()
                item.at = monotonic()
            w.seq += 1
            item.seq = w.seq
            w.add(item)
            self._ensure_committer()
            if len(w.queue) == 1 or w.due(item.at) == 0.0:
                cv.notify_all()

    async def _wait_for(self, seq: int) -> None:
        w = self._w
        if w.done_seq >= seq:
            return
        cv = self._cond()
        self._ensure_committer()  # items queued on a loop that has ended
        w.waiting += 1
        cv.notify_all()
        try:
            while w.done_seq < seq and self._task is not None and not self._task.done():
                await cv.wait()
        finally:
            w.waiting -= 1

    async def sync_thread(self, thread_id: str | None) -> None:
        if thread_id is None:
            await self.flush()
            return
        async with self._cond():
            seq = self._w.last_seq.get(thread_id)
            if seq is not None:
                await self._wait_for(seq)
            self._ready()

    async def flush(self) -> None:
        async with self._cond():
            await self._wait_for(self._w.seq)
            self._ready()

    async def close(self) -> None:
        cv = self._cond()
        async with cv:
            if not self._closed:
                await self._wait_for(self._w.seq)
                self._closed = True
                self._w.stopping = True
                cv.notify_all()
            task = self._task
        if task is not None:
            await task
        async with cv:
            self._ready()

    async def _run(self) -> None:
        w = self._w
        cv = self._cond()
        try:
            while True:
                async with cv:
                    while True:
                        delay = w.due(monotonic())
                        if delay == 0.0:
                            break
                        if delay is None and w.stopping:
                            cv.notify_all()
                            return
                        try:
                            await asyncio.wait_for(cv.wait(), delay)
                        except asyncio.TimeoutError:
                            pass
                    items, dropped = w.take()
                    cv.notify_all()
                await self._commit(items, dropped)
        except asyncio.CancelledError:
            # The loop is shutting down: store what is queued before going.
            items, dropped = w.take()
            if items or dropped:
                await self._commit(items, dropped)
            raise

    async def _commit(self, items: list[_Item], dropped: list[_Item]) -> None:
        w = self._w
        errors: list[BaseException | None] = [_interrupted()] * len(items)
        try:
            if items:
                errors = await _drive_async(self._backend, [i.batch for i in items])
        finally:
            self._settle(w.finish(items, errors, dropped))
        cv = self._cond()
        async with cv:
            cv.notify_all()

    def _settle(self, failed: list[WriteBatch]) -> None:
        for batch in failed:
            if self._on_failure is not None:
                try:
                    self._on_failure(batch)
                except Exception:
                    logger.exception("snapstate: on_failure hook raised")


# -- choosing ------------------------------------------------------------------------------------


def _check_durability(durability: Any) -> None:
    if durability not in ("sync", "batched"):
        raise ConfigurationError(f"durability must be 'sync' or 'batched', got {durability!r}")


_BATCHED_OPTIONS = ("max_delay", "max_batch", "max_bytes")


def _check_options(durability: str, options: dict[str, Any]) -> None:
    allowed = _BATCHED_OPTIONS if durability == "batched" else ()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigurationError(
            f"unknown writer options for durability={durability!r}: {unknown}",
            hint=f"durability='batched' takes {', '.join(_BATCHED_OPTIONS)}; 'sync' takes none",
        )


def make_writer(
    backend: Backend, durability: Durability, on_failure: FailureHook | None = None, **options: Any
) -> Writer:
    """The writer for a durability mode."""
    _check_durability(durability)
    _check_options(durability, options)
    if durability == "batched":
        return BatchedWriter(backend, on_failure, **options)
    return SyncWriter(backend, on_failure)


def make_async_writer(
    backend: AsyncBackend,
    durability: Durability,
    on_failure: FailureHook | None = None,
    **options: Any,
) -> AsyncWriter:
    """The asyncio writer for a durability mode."""
    _check_durability(durability)
    _check_options(durability, options)
    if durability == "batched":
        return AsyncBatchedWriter(backend, on_failure, **options)
    return AsyncSyncWriter(backend, on_failure)
