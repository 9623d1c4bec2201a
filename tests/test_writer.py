"""Writers: group commit in ``sync`` mode, and the ``batched`` writer's guarantees.

Ordering is asserted through events (a backend whose ``write`` waits on a gate and records what
it was given), never through elapsed time. Where a test shows that a waiting caller does not
wait for the batching timer, the timer is an hour long: the test could only pass by committing
at once.
"""

from __future__ import annotations

import asyncio
import gc
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from snapstate import AsyncCheckpointer, Checkpoint, Checkpointer
from snapstate.backends import (
    Backend,
    ListQuery,
    MemoryBackend,
    ThreadedAsyncBackend,
    WriteBatch,
)
from snapstate.errors import (
    ConfigurationError,
    DeltaBaseMissingError,
    StorageError,
    StoreUnavailableError,
)
from snapstate.writer import (
    AsyncBatchedWriter,
    AsyncSyncWriter,
    BatchedWriter,
    SyncWriter,
    make_async_writer,
    make_writer,
)

HOUR = 3600.0


def ck(i: int, **values: Any) -> Checkpoint:
    values = values or {"x": i}
    return Checkpoint(
        id=f"{i:08d}", channel_values=values, channel_versions={k: i + 1 for k in values}
    )


def checkpoint_ids(backend: Backend, thread_id: str) -> list[str]:
    """The ids of a thread's stored checkpoints, newest first."""
    return [r.checkpoint_id for r in backend.list_checkpoints(ListQuery(thread_id=thread_id))]


class GatedBackend(MemoryBackend):
    """Records each ``write``; holds writes while the gate is closed; fails chosen threads."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[WriteBatch] = []
        self.entered = threading.Semaphore(0)
        self.fail_threads: set[str] = set()
        self.unavailable = False

    def write(self, batch: WriteBatch) -> None:
        self.calls.append(batch)
        self.entered.release()
        self.gate.wait()
        if self.unavailable:
            raise StoreUnavailableError("server gone")
        bad = {c.thread_id for c in batch.checkpoints} & self.fail_threads
        if bad:
            raise StorageError(f"refused thread {min(bad)!r}")
        super().write(batch)

    def stored(self, thread_id: str) -> list[str]:
        return checkpoint_ids(self, thread_id)


@pytest.fixture
def backend() -> GatedBackend:
    b = GatedBackend()
    b.setup()
    return b


# -- options -------------------------------------------------------------------------------------


def test_unknown_and_bad_options_are_refused(backend: GatedBackend) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown writer options.*'max_dealy'"):
        make_writer(backend, "batched", max_dealy=1)
    with pytest.raises(ConfigurationError, match=r"durability='sync'.*'max_delay'"):
        make_writer(backend, "sync", max_delay=1)
    with pytest.raises(ConfigurationError, match=r"max_batch must be an int >= 1"):
        make_writer(backend, "batched", max_batch=0)
    with pytest.raises(ConfigurationError, match="max_delay must be seconds"):
        make_writer(backend, "batched", max_delay=-1)
    with pytest.raises(ConfigurationError, match="durability must be"):
        make_writer(backend, "eventually")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unknown writer options"):
        Checkpointer(backend, durability="batched", max_bach=3)
    assert isinstance(make_writer(backend, "batched"), BatchedWriter)
    assert isinstance(make_writer(backend, "sync"), SyncWriter)
    async_backend = ThreadedAsyncBackend(backend, offload=False)
    assert isinstance(make_async_writer(async_backend, "batched"), AsyncBatchedWriter)
    assert isinstance(make_async_writer(async_backend, "sync"), AsyncSyncWriter)


# -- sync: group commit ----------------------------------------------------------------------------


def test_sync_group_commit_merges_concurrent_puts(backend: GatedBackend) -> None:
    cp = Checkpointer(backend)
    cp.setup()
    backend.gate.clear()
    leader = threading.Thread(target=cp.put, args=(ck(0),), kwargs={"thread_id": "t0"})
    leader.start()
    backend.entered.acquire()  # the leader's transaction is running
    others = [
        threading.Thread(target=cp.put, args=(ck(0),), kwargs={"thread_id": f"t{i}"})
        for i in range(1, 6)
    ]
    for t in others:
        t.start()
    # Wait until all five are queued behind the running commit.
    while len(cp._writer._queue) < 5:  # type: ignore[attr-defined]
        threading.Event().wait(0.001)
    backend.gate.set()
    for t in [leader, *others]:
        t.join()
    assert [len(b.checkpoints) for b in backend.calls] == [1, 5]
    assert all(backend.stored(f"t{i}") == ["00000000"] for i in range(6))


class CallGatedBackend(MemoryBackend):
    """Runs two transactions at once; each ``write`` waits for its own gate."""

    write_concurrency = 2

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.gates: list[threading.Event] = []
        self.sizes: list[int] = []
        self.entered = threading.Semaphore(0)

    def write(self, batch: WriteBatch) -> None:
        gate = threading.Event()
        with self.lock:
            self.gates.append(gate)
            self.sizes.append(len(batch.checkpoints))
        self.entered.release()
        gate.wait()
        super().write(batch)

    def stored(self, thread_id: str) -> list[str]:
        return checkpoint_ids(self, thread_id)


def _queued(cp: Checkpointer, n: int) -> None:
    while len(cp._writer._queue) < n:  # type: ignore[attr-defined]
        threading.Event().wait(0.001)


def test_sync_runs_up_to_write_concurrency_transactions_at_once() -> None:
    backend = CallGatedBackend()
    backend.setup()
    cp = Checkpointer(backend)
    first = [
        threading.Thread(target=cp.put, args=(ck(0),), kwargs={"thread_id": f"t{i}"})
        for i in range(2)
    ]
    for t in first:
        t.start()
    # Both commits run at once: neither waits for the other's gate.
    assert backend.entered.acquire(timeout=30) and backend.entered.acquire(timeout=30)
    later = [
        threading.Thread(target=cp.put, args=(ck(0),), kwargs={"thread_id": f"t{i}"})
        for i in (2, 3)
    ]
    for t in later:
        t.start()
    _queued(cp, 2)  # a third transaction does not start while two run
    assert backend.sizes == [1, 1]
    backend.gates[0].set()
    assert backend.entered.acquire(timeout=30)
    assert backend.sizes == [1, 1, 2]  # the next leader commits both waiting puts together
    for gate in backend.gates[1:]:
        gate.set()
    for t in first + later:
        t.join()
    assert all(backend.stored(f"t{i}") == ["00000000"] for i in range(4))


def test_sync_put_returns_only_after_the_commit_carrying_it() -> None:
    # A put taken into another caller's commit must wait for that commit, even when a different
    # transaction finishes first and frees a slot.
    backend = CallGatedBackend()
    backend.setup()
    cp = Checkpointer(backend)
    seen: dict[str, list[str]] = {}

    def put(thread_id: str) -> None:
        cp.put(ck(0), thread_id=thread_id)
        seen[thread_id] = backend.stored(thread_id)  # what the store holds when put returns

    threads = {name: threading.Thread(target=put, args=(name,)) for name in ("a", "b", "c", "d")}
    threads["a"].start()
    threads["b"].start()
    assert backend.entered.acquire(timeout=30) and backend.entered.acquire(timeout=30)
    threads["c"].start()
    threads["d"].start()
    _queued(cp, 2)
    first = backend.gates[0]
    first.set()  # one slot frees: c or d leads a commit of both, and waits at its gate
    assert backend.entered.acquire(timeout=30)
    assert backend.sizes[2] == 2
    second = next(g for g in backend.gates[:2] if g is not first)
    second.set()  # the other slot frees while the c+d commit is still running
    for name in ("a", "b", "c", "d"):
        threads[name].join(timeout=0.5 if name in ("c", "d") else 30)
    backend.gates[2].set()
    for t in threads.values():
        t.join()
    assert seen == {name: ["00000000"] for name in ("a", "b", "c", "d")}


def batch_of(thread_id: str) -> WriteBatch:
    """The rows of checkpoint ``ck(0)`` of a thread, as the engine hands them to a writer."""
    return Checkpointer(MemoryBackend())._plan.put(  # type: ignore[attr-defined,no-any-return]
        ck(0), thread_id=thread_id, namespace="", parent_id=None, metadata=None, changed=None
    )


def behind_a_held_commit(
    backend: GatedBackend, writer: SyncWriter, call: Any, rest: Sequence[str]
) -> dict[str, BaseException | None]:
    """``call("first")`` commits while its commit is held at the gate; ``call(t)`` for each of
    ``rest`` queues behind it; then the gate opens. What each call raised (None if nothing)."""
    results: dict[str, BaseException | None] = {}

    def run(thread_id: str) -> None:
        try:
            call(thread_id)
            results[thread_id] = None
        except BaseException as exc:
            results[thread_id] = exc

    backend.gate.clear()
    first = threading.Thread(target=run, args=("first",))
    first.start()
    backend.entered.acquire()  # the first commit runs; the others queue behind it
    others = [threading.Thread(target=run, args=(t,)) for t in rest]
    for t in others:
        t.start()
    while len(writer._queue) < len(rest):
        threading.Event().wait(0.001)
    backend.gate.set()
    for t in [first, *others]:
        t.join()
    return results


def test_sync_group_failure_isolates_the_bad_batch(backend: GatedBackend) -> None:
    failed: list[WriteBatch] = []
    writer = SyncWriter(backend, failed.append)
    backend.fail_threads = {"bad"}
    cp = Checkpointer(backend)
    cp.setup()
    cp._writer = writer  # type: ignore[attr-defined]
    results = behind_a_held_commit(
        backend, writer, lambda t: cp.put(ck(0), thread_id=t), ("good", "bad", "fine")
    )
    assert results["first"] is None and results["good"] is None and results["fine"] is None
    assert isinstance(results["bad"], StorageError)
    assert "refused thread 'bad'" in str(results["bad"])
    assert [b.checkpoints[0].thread_id for b in failed] == ["bad"]
    assert backend.stored("good") == ["00000000"] and backend.stored("bad") == []


def test_sync_lone_failure_is_raised_reported_and_frees_its_slot(backend: GatedBackend) -> None:
    failed: list[WriteBatch] = []
    writer = SyncWriter(backend, failed.append)
    backend.fail_threads = {"bad"}
    bad = batch_of("bad")
    with pytest.raises(StorageError, match="refused thread 'bad'"):
        writer.submit(bad)
    assert failed == [bad]
    # The failed commit gave its slot back: the next caller commits at once.
    writer.submit(batch_of("good"))
    assert backend.stored("good") == ["00000000"] and backend.stored("bad") == []
    assert writer._running == 0 and writer._queue == []


def test_sync_lone_write_refused_for_a_missing_base_goes_again_as_replanned(
    backend: GatedBackend,
) -> None:
    """A lone caller's write refused with DeltaBaseMissingError is written again as its batch
    replans it; what that second write raises (or the replanning itself) is the caller's."""
    failed: list[WriteBatch] = []
    writer = SyncWriter(backend, failed.append)
    real_write = backend.write

    def refusing_stale(batch: WriteBatch) -> None:
        if any(c.thread_id.startswith("stale") for c in batch.checkpoints):
            backend.calls.append(batch)
            raise DeltaBaseMissingError("the base is gone")
        real_write(batch)

    backend.write = refusing_stale  # type: ignore[method-assign]

    stale = batch_of("stale")
    stale.replan = lambda: batch_of("whole")
    writer.submit(stale)
    assert [c.checkpoints[0].thread_id for c in backend.calls] == ["stale", "whole"]
    assert backend.stored("whole") == ["00000000"] and failed == []

    backend.fail_threads = {"whole"}
    with pytest.raises(StorageError, match="refused thread 'whole'"):
        writer.submit(stale)  # the replanned write fails in its turn
    assert failed == [stale]

    def broken() -> WriteBatch:
        raise ValueError("cannot replan")

    stale.replan = broken
    with pytest.raises(ValueError, match="cannot replan"):
        writer.submit(stale)
    stale.replan = None
    with pytest.raises(DeltaBaseMissingError):
        writer.submit(stale)  # nothing to replan: the refusal itself
    assert failed == [stale, stale, stale]
    assert writer._running == 0 and writer._sleeping == 0


class _Interrupt(BaseException):
    """Stands for an interruption (say KeyboardInterrupt) escaping a commit."""


def test_sync_interrupted_commit_fails_every_ticket_it_carried(
    backend: GatedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import snapstate.writer as writer_module

    failed: list[WriteBatch] = []
    writer = SyncWriter(backend, failed.append)
    real_drive = writer_module._drive_sync
    drives: list[int] = []

    def drive(b: Backend, batches: list[WriteBatch]) -> list[BaseException | None]:
        drives.append(len(batches))
        if len(batches) == 2:  # the commit carrying both waiting batches
            raise _Interrupt()
        return real_drive(b, batches)

    monkeypatch.setattr(writer_module, "_drive_sync", drive)
    results = behind_a_held_commit(
        backend, writer, lambda t: writer.submit(batch_of(t)), ("a", "b")
    )
    assert drives[-1] == 2
    assert results["first"] is None and backend.stored("first") == ["00000000"]
    # The caller that led the interrupted commit sees the interruption itself; the caller whose
    # batch it carried is told its write may or may not be stored, never that it succeeded.
    errors = sorted((type(results[t]).__name__, str(results[t])) for t in ("a", "b"))
    assert errors[0][0] == "StorageError" and "may or may not be stored" in errors[0][1]
    assert errors[1][0] == "_Interrupt"
    # Neither batch may be built on (the engine forgets its delta bases).
    assert sorted(b.checkpoints[0].thread_id for b in failed) == ["a", "b"]


async def test_async_sync_group_commit_merges_concurrent_tasks() -> None:
    release = asyncio.Event()
    sizes: list[int] = []
    inner = MemoryBackend()
    inner.setup()

    class Slow(ThreadedAsyncBackend):
        async def write(self, batch: WriteBatch) -> None:
            sizes.append(len(batch.checkpoints))
            await release.wait()
            inner.write(batch)

    cp = AsyncCheckpointer(Slow(inner, offload=False))
    await cp.setup()
    tasks = [asyncio.create_task(cp.put(ck(0), thread_id=f"t{i}")) for i in range(6)]
    while not sizes:
        await asyncio.sleep(0)
    for _ in range(10):  # let every other task queue behind the first commit
        await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*tasks)
    assert sizes == [1, 5]
    for i in range(6):
        assert (await cp.get(f"t{i}")) is not None


class AsyncCallGated(ThreadedAsyncBackend):
    """Two asyncio commits at once; each ``write`` awaits its own gate."""

    write_concurrency = 2

    def __init__(self) -> None:
        inner = MemoryBackend()
        inner.setup()
        super().__init__(inner, offload=False)
        self.gates: list[asyncio.Event] = []
        self.sizes: list[int] = []

    async def write(self, batch: WriteBatch) -> None:
        gate = asyncio.Event()
        self.gates.append(gate)
        self.sizes.append(len(batch.checkpoints))
        await gate.wait()
        self.sync.write(batch)

    def stored(self, thread_id: str) -> list[str]:
        return checkpoint_ids(self.sync, thread_id)


async def _until(condition: Any) -> None:
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def test_async_sync_runs_up_to_write_concurrency_commits_at_once() -> None:
    backend = AsyncCallGated()
    cp = AsyncCheckpointer(backend)
    seen: dict[str, list[str]] = {}

    async def put(thread_id: str) -> None:
        await cp.put(ck(0), thread_id=thread_id)
        seen[thread_id] = backend.stored(thread_id)  # what the store holds when put returns

    tasks = {name: asyncio.create_task(put(name)) for name in ("a", "b")}
    await _until(lambda: len(backend.gates) == 2)  # both commits run; neither waits
    tasks.update({name: asyncio.create_task(put(name)) for name in ("c", "d")})
    await _until(lambda: len(cp._writer._queue) == 2)  # type: ignore[attr-defined]
    # Both running commits finish at once: c and d are each handed a turn, and the first to
    # run commits both batches. The other must still wait for that commit.
    backend.gates[0].set()
    backend.gates[1].set()
    await _until(lambda: len(backend.gates) == 3)
    assert backend.sizes == [1, 1, 2]
    for _ in range(100):
        await asyncio.sleep(0)
    assert not tasks["c"].done() and not tasks["d"].done()
    backend.gates[2].set()
    await asyncio.gather(*tasks.values())
    assert seen == {name: ["00000000"] for name in ("a", "b", "c", "d")}
    assert cp._writer._running == 0  # type: ignore[attr-defined]


async def _two_commits_running() -> tuple[AsyncCallGated, AsyncCheckpointer, list[Any]]:
    """A writer with both its commit slots taken (threads "a" and "b", held at their gates)."""
    backend = AsyncCallGated()
    cp = AsyncCheckpointer(backend)
    running = [asyncio.create_task(cp.put(ck(0), thread_id=t)) for t in ("a", "b")]
    await _until(lambda: len(backend.gates) == 2)
    return backend, cp, running


async def test_async_sync_cancelled_waiter_is_still_committed() -> None:
    backend, cp, running = await _two_commits_running()
    waiter = asyncio.create_task(cp.put(ck(0), thread_id="c"))
    await _until(lambda: len(cp._writer._queue) == 1)  # type: ignore[attr-defined]
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    for gate in backend.gates:
        gate.set()
    await asyncio.gather(*running)
    # The cancelled caller's batch stays queued: a commit of the writer's own stores it.
    await _until(lambda: len(backend.gates) == 3)
    backend.gates[2].set()
    await _until(lambda: backend.stored("c") == ["00000000"])
    await _until(lambda: cp._writer._running == 0)  # type: ignore[attr-defined]


async def test_async_sync_lead_handed_to_a_cancelled_task_passes_on() -> None:
    backend, cp, running = await _two_commits_running()
    third = asyncio.create_task(cp.put(ck(0), thread_id="c"))
    fourth = asyncio.create_task(cp.put(ck(0), thread_id="d"))
    await _until(lambda: len(cp._writer._queue) == 2)  # type: ignore[attr-defined]
    backend.gates[0].set()
    # The first commit ends and hands its turn to the first waiter; cancel that task before it
    # runs: the turn must pass to the next waiter, which commits both queued batches.
    await _until(lambda: cp._writer._queue[0].future.done())  # type: ignore[attr-defined]
    third.cancel()
    await _until(lambda: len(backend.gates) == 3)
    assert backend.sizes[2] == 2
    for gate in backend.gates:
        gate.set()
    await asyncio.gather(*running, fourth)
    with pytest.raises(asyncio.CancelledError):
        await third
    assert backend.stored("c") == ["00000000"] and backend.stored("d") == ["00000000"]
    assert cp._writer._running == 0  # type: ignore[attr-defined]


async def test_async_sync_writer_reports_errors_to_their_task() -> None:
    inner = GatedBackend()
    inner.setup()
    inner.fail_threads = {"bad"}
    cp = AsyncCheckpointer(ThreadedAsyncBackend(inner, offload=False))
    results = await asyncio.gather(
        *(cp.put(ck(0), thread_id=t) for t in ("a", "bad", "b")), return_exceptions=True
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], StorageError)
    assert inner.stored("a") == ["00000000"] and inner.stored("bad") == []


# -- batched ---------------------------------------------------------------------------------------


def test_batched_put_returns_before_its_commit(backend: GatedBackend) -> None:
    cp = Checkpointer(backend, durability="batched", max_delay=0.0)
    cp.setup()
    backend.gate.clear()
    cp.put(ck(1), thread_id="t")
    backend.entered.acquire()  # the commit has started and is held
    assert backend.stored("t") == []  # acknowledged, not yet stored
    backend.gate.set()
    cp.flush()
    assert backend.stored("t") == ["00000001"]
    cp.close()


@pytest.mark.timeout(60)
def test_batched_commits_on_its_own_within_max_delay(backend: GatedBackend) -> None:
    # No flush, no read, no full batch: only the delay bound makes these items due.
    cp = Checkpointer(backend, durability="batched", max_delay=0.05)
    cp.setup()
    for i in range(3):
        cp.put(ck(i), thread_id="t")
    assert backend.entered.acquire(timeout=30), "queued items were never committed by time"
    deadline = time.monotonic() + 30
    while len(backend.stored("t")) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert backend.stored("t") == ["00000002", "00000001", "00000000"]
    cp.close()


@pytest.mark.timeout(60)
def test_batched_read_sees_queued_items_without_waiting_for_the_timer(
    backend: GatedBackend,
) -> None:
    cp = Checkpointer(backend, durability="batched", max_delay=HOUR)
    cp.setup()
    for i in range(5):
        cp.put(ck(i), thread_id="t")
    cp.put(ck(0), thread_id="other")
    assert backend.calls == []  # nothing is due for an hour
    snap = cp.get("t")  # a waiting reader makes the writer commit now
    assert snap is not None and snap.checkpoint.id == "00000004"
    assert [len(b.checkpoints) for b in backend.calls] == [6]  # one transaction for all
    assert [s.checkpoint.id for s in cp.list("t")] == [f"{i:08d}" for i in range(4, -1, -1)]
    cp.close()


@pytest.mark.timeout(60)
def test_batched_sync_thread_skips_threads_with_nothing_queued(backend: GatedBackend) -> None:
    cp = Checkpointer(backend, durability="batched", max_delay=HOUR)
    cp.setup()
    cp.put(ck(1), thread_id="a")
    assert cp.get("b") is None  # nothing queued for b: no commit forced
    assert backend.calls == []
    cp.close()
    assert backend.stored("a") == ["00000001"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["flush", "close"])
def test_batched_flush_and_close_drain(backend: GatedBackend, how: str) -> None:
    cp = Checkpointer(backend, durability="batched", max_delay=HOUR)
    cp.setup()
    for i in range(20):
        cp.put(ck(i), thread_id=f"t{i % 3}")
        cp.put_writes([("ch", i)], thread_id=f"t{i % 3}", checkpoint_id=f"{i:08d}", task_id="k")
    assert backend.calls == []
    getattr(cp, how)()
    assert sum(len(backend.stored(f"t{k}")) for k in range(3)) == 20
    assert len(backend.calls) == 1
    if how == "flush":
        cp.close()


def test_batched_commits_when_the_batch_is_full(backend: GatedBackend) -> None:
    cp = Checkpointer(backend, durability="batched", max_delay=HOUR, max_batch=3)
    cp.setup()
    for i in range(3):
        cp.put(ck(i), thread_id="t")
    backend.entered.acquire()  # committed because three items are queued, not by time
    cp.close()
    assert [len(b.checkpoints) for b in backend.calls] == [3]


@pytest.mark.timeout(60)
def test_batched_queue_is_bounded_and_holds_back_submitters(backend: GatedBackend) -> None:
    writer = BatchedWriter(backend, max_delay=HOUR, max_batch=4)
    cp = Checkpointer(backend)
    cp.setup()
    cp._writer = writer  # type: ignore[attr-defined]
    backend.gate.clear()
    done: list[int] = []

    def produce() -> None:
        for i in range(12):
            cp.put(ck(i), thread_id="t")
            done.append(i)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        backend.entered.acquire()  # the first items are in a commit that cannot finish
        while True:  # until the producer is held back by a full queue
            with writer._cv:
                if writer._w.waiting and len(writer._w.queue) == 4:
                    break
            threading.Event().wait(0.001)
        # The stuck commit took up to max_batch items; exactly four more wait in the queue.
        committing = len(backend.calls[0].checkpoints)
        assert 1 <= committing <= 4
        assert len(done) == committing + 4
        assert len(writer._w.queue) == 4
        assert producer.is_alive()
    finally:
        backend.gate.set()  # never leave the producer blocked, even when an assert fails
    producer.join(30)
    writer.close()
    assert backend.stored("t") == [f"{i:08d}" for i in range(11, -1, -1)]
    assert all(len(b.checkpoints) <= 4 for b in backend.calls)


def test_batched_byte_bound_commits_large_items(backend: GatedBackend) -> None:
    cp = Checkpointer(backend, durability="batched", max_delay=HOUR, max_bytes=10_000)
    cp.setup()
    # Incompressible, over the bound alone: committed at once.
    cp.put(ck(1, big=random.Random(0).randbytes(20_000)), thread_id="t")
    backend.entered.acquire()
    cp.close()
    assert backend.stored("t") == ["00000001"]


def test_batched_background_error_reaches_the_next_caller(backend: GatedBackend) -> None:
    failed: list[WriteBatch] = []
    writer = BatchedWriter(backend, failed.append, max_delay=HOUR)
    cp = Checkpointer(backend)
    cp.setup()
    cp._writer = writer  # type: ignore[attr-defined]
    backend.fail_threads = {"bad"}
    cp.put(ck(1), thread_id="good")
    cp.put(ck(1), thread_id="bad")
    cp.put(ck(2), thread_id="bad")  # builds on the failed one: not stored either
    cp.put(ck(1), thread_id="fine")
    with pytest.raises(StorageError, match=r"failed in the background \(2 queued item"):
        writer.flush()
    writer.flush()  # reported once
    assert backend.stored("good") == ["00000001"] and backend.stored("fine") == ["00000001"]
    assert backend.stored("bad") == []
    assert sorted(b.checkpoints[0].checkpoint_id for b in failed) == ["00000001", "00000002"]
    # The store works again for the thread once the failure has been reported.
    backend.fail_threads = set()
    cp.put(ck(3), thread_id="bad")
    writer.close()
    assert backend.stored("bad") == ["00000003"]


def test_batched_error_is_raised_by_submit_too(backend: GatedBackend) -> None:
    cp = Checkpointer(backend, durability="batched", max_delay=0.0)
    cp.setup()
    backend.unavailable = True
    cp.put(ck(1), thread_id="t")
    backend.entered.acquire()
    while not cp._writer._w.error:  # type: ignore[attr-defined]
        threading.Event().wait(0.001)
    backend.unavailable = False
    with pytest.raises(StoreUnavailableError, match="server gone"):
        cp.put(ck(2), thread_id="u")
    cp.close()


def test_batched_store_down_fails_the_window_at_once(backend: GatedBackend) -> None:
    writer = BatchedWriter(backend, max_delay=HOUR)
    backend.unavailable = True
    for t in ("a", "b", "c"):
        writer.submit(WriteBatch(checkpoints=[_row(t)]))
    with pytest.raises(StoreUnavailableError, match=r"\(3 queued item"):
        writer.flush()
    assert len(backend.calls) == 1  # not retried item by item against a dead store
    writer.close()


def test_batched_closed_writer_refuses_work(backend: GatedBackend) -> None:
    cp = Checkpointer(backend, durability="batched")
    cp.setup()
    cp.close()
    with pytest.raises(StorageError, match="writer is closed"):
        cp.put(ck(1), thread_id="t")


def test_batched_drains_at_interpreter_exit(tmp_path: Path) -> None:
    db = tmp_path / "exit.db"
    script = textwrap.dedent(
        f"""
        from snapstate import Checkpoint, Checkpointer
        cp = Checkpointer({str(db)!r}, durability="batched", max_delay=3600)
        for i in range(50):
            cp.put(Checkpoint(id=f"{{i:08d}}", channel_values={{"x": i}},
                              channel_versions={{"x": i + 1}}), thread_id="t")
        print("queued", flush=True)
        # no flush, no close: the interpreter exits with everything queued
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "queued" in out.stdout
    with Checkpointer(db) as cp:
        assert [s.checkpoint.id for s in cp.list("t")] == [f"{i:08d}" for i in range(49, -1, -1)]


# -- batched, asyncio --------------------------------------------------------------------------


@pytest.fixture
def async_backend(backend: GatedBackend) -> ThreadedAsyncBackend:
    return ThreadedAsyncBackend(backend, offload=False)


@pytest.mark.timeout(60)
async def test_async_batched_read_your_writes_and_flush(
    backend: GatedBackend, async_backend: ThreadedAsyncBackend
) -> None:
    cp = AsyncCheckpointer(async_backend, durability="batched", max_delay=HOUR)
    await cp.setup()
    for i in range(5):
        await cp.put(ck(i), thread_id="t")
    await cp.put(ck(0), thread_id="u")
    assert backend.calls == []
    snap = await cp.get("t")
    assert snap is not None and snap.checkpoint.id == "00000004"
    assert [len(b.checkpoints) for b in backend.calls] == [6]
    await cp.put(ck(9), thread_id="u")
    await cp.flush()
    assert backend.stored("u") == ["00000009", "00000000"]
    await cp.aclose()


@pytest.mark.timeout(60)
async def test_async_batched_commits_on_its_own_within_max_delay(
    backend: GatedBackend, async_backend: ThreadedAsyncBackend
) -> None:
    cp = AsyncCheckpointer(async_backend, durability="batched", max_delay=0.05)
    await cp.setup()
    for i in range(3):
        await cp.put(ck(i), thread_id="t")
    deadline = time.monotonic() + 30
    while len(backend.stored("t")) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # no flush, no read: only the delay bound commits them
    assert backend.stored("t") == ["00000002", "00000001", "00000000"]
    await cp.aclose()


@pytest.mark.timeout(60)
async def test_async_batched_close_drains_and_reports_errors(
    backend: GatedBackend, async_backend: ThreadedAsyncBackend
) -> None:
    failed: list[WriteBatch] = []
    writer = AsyncBatchedWriter(async_backend, failed.append, max_delay=HOUR)
    backend.fail_threads = {"bad"}
    await writer.submit(WriteBatch(checkpoints=[_row("ok")]))
    await writer.submit(WriteBatch(checkpoints=[_row("bad")]))
    with pytest.raises(StorageError, match="refused thread 'bad'"):
        await writer.close()
    assert backend.stored("ok") == ["00000001"]
    assert len(failed) == 1


@pytest.mark.timeout(60)
async def test_async_batched_queue_is_bounded(
    backend: GatedBackend, async_backend: ThreadedAsyncBackend
) -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    class Held(ThreadedAsyncBackend):
        async def write(self, batch: WriteBatch) -> None:
            entered.set()
            await release.wait()
            backend.write(batch)

    writer = AsyncBatchedWriter(Held(backend, offload=False), max_delay=HOUR, max_batch=2)
    done: list[int] = []

    async def produce() -> None:
        for i in range(8):
            await writer.submit(WriteBatch(checkpoints=[_row("t", i)]))
            done.append(i)

    producer = asyncio.create_task(produce())
    try:
        await entered.wait()  # the first two are in a commit that cannot finish
        while not (writer._w.waiting and len(writer._w.queue) == 2):
            await asyncio.sleep(0)  # until the producer is held back by a full queue
        assert len(done) == 4  # two in the held commit, two queued
        assert len(writer._w.queue) == 2
    finally:
        release.set()
    await producer
    await writer.close()
    assert len(backend.stored("t")) == 8


def test_async_batched_drains_when_the_loop_shuts_down(backend: GatedBackend) -> None:
    async def main() -> None:
        cp = AsyncCheckpointer(
            ThreadedAsyncBackend(backend, offload=False), durability="batched", max_delay=HOUR
        )
        await cp.setup()
        for i in range(3):
            await cp.put(ck(i), thread_id="t")
        # returns without aclose(): asyncio.run cancels the committer, which drains

    asyncio.run(main())
    assert backend.stored("t") == ["00000002", "00000001", "00000000"]


def _row(thread_id: str, i: int = 1) -> Any:
    from snapstate.backends import CheckpointRow

    return CheckpointRow(thread_id, "", f"{i:08d}", None, None, 0.0, b"{}", b"\x01\x93\xa0\x80\x80")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("held", [False, True])
def test_a_forked_child_starts_with_an_empty_queue(tmp_path: Path, held: bool) -> None:
    """The parent's queued checkpoints stay the parent's: the child neither stores them nor
    waits for them, and stores its own. ``held``: the writer's lock is held at the fork, as by
    a thread of the parent's that the child does not have."""
    from snapstate.backends.sqlite import SqliteBackend

    from .forking import child_ok

    backend = SqliteBackend(tmp_path / "fork.db")
    with Checkpointer(backend, durability="batched", max_delay=HOUR) as cp:
        cp.put(ck(1), thread_id="parent")  # queued: nothing commits for an hour
        writer = cp._writer
        assert isinstance(writer, BatchedWriter)

        def in_child() -> bool:
            # Two threads' first calls in the child find one queue between them.
            threads = [
                threading.Thread(target=cp.put, args=(ck(i),), kwargs={"thread_id": "child"})
                for i in (2, 3)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            cp.flush()
            return (
                checkpoint_ids(backend, "child") == ["00000003", "00000002"]
                and checkpoint_ids(backend, "parent") == []
            )

        assert child_ok(in_child, held=writer._cv if held else None)
        assert checkpoint_ids(backend, "parent") == []  # still queued here
        cp.flush()
        assert checkpoint_ids(backend, "parent") == ["00000001"]
        assert checkpoint_ids(backend, "child") == ["00000003", "00000002"]


# The loop closed below without cancelling its tasks drops its committer's pending wait.
@pytest.mark.filterwarnings("ignore:coroutine 'Condition.wait' was never awaited")
def test_a_batched_async_checkpointer_outlives_its_event_loop(tmp_path: Path) -> None:
    """``asyncio.run`` twice with one checkpointer: the second loop gets a committer of its
    own, and what the first loop's shutdown left queued is committed, not lost."""
    from snapstate.backends.sqlite import SqliteBackend

    path = tmp_path / "loops.db"
    cp = AsyncCheckpointer(path, durability="batched", max_delay=HOUR)

    async def put_and_read(i: int) -> str:
        await cp.put(ck(i), thread_id="t")
        got = await cp.get("t")
        assert got is not None
        return got.checkpoint.id

    assert asyncio.run(put_and_read(1)) == "00000001"
    assert asyncio.run(put_and_read(2)) == "00000002"

    # A loop closed without cancelling its tasks (no asyncio.run): its committer never ran.
    loop = asyncio.new_event_loop()
    loop.run_until_complete(cp.put(ck(3), thread_id="t"))
    loop.close()
    reader = SqliteBackend(path)
    assert checkpoint_ids(reader, "t") == ["00000002", "00000001"]  # 3 is still queued
    asyncio.run(cp.flush())
    gc.collect()  # the closed loop's dropped wait is reported here, under this test's filter
    assert checkpoint_ids(reader, "t") == ["00000003", "00000002", "00000001"]
    asyncio.run(cp.aclose())
    reader.close()


@pytest.mark.parametrize("durability", ["sync", "batched"])
def test_two_running_loops_cannot_share_a_writer(tmp_path: Path, durability: str) -> None:
    options: dict[str, Any] = {"max_delay": HOUR} if durability == "batched" else {}
    cp = AsyncCheckpointer(tmp_path / "two.db", durability=durability, **options)
    other = asyncio.new_event_loop()
    ready = threading.Event()

    async def hold() -> None:
        await cp.put(ck(1), thread_id="a")
        ready.set()
        await asyncio.sleep(3600)

    task = other.create_task(hold())
    runner = threading.Thread(target=other.run_forever)
    runner.start()
    try:
        assert ready.wait(10)
        with pytest.raises(StorageError, match="another running event loop"):
            asyncio.run(cp.put(ck(2), thread_id="b"))
    finally:

        async def finish() -> None:
            task.cancel()
            await cp.aclose()  # the first loop's: it stores what it queued

        asyncio.run_coroutine_threadsafe(finish(), other).result(10)
        other.call_soon_threadsafe(other.stop)
        runner.join()
        other.close()
    from snapstate.backends.sqlite import SqliteBackend

    reader = SqliteBackend(tmp_path / "two.db")
    assert checkpoint_ids(reader, "a") == ["00000001"]
    assert checkpoint_ids(reader, "b") == []
    reader.close()


def test_an_async_sync_writer_outlives_a_loop_closed_mid_commit(backend: GatedBackend) -> None:
    """A loop closed (without its shutdown) while a commit held the only slot: the next loop's
    callers get the slot, instead of waiting forever for a hand-off that cannot come."""
    writer = AsyncSyncWriter(ThreadedAsyncBackend(backend))  # writes in a worker thread
    backend.gate.clear()
    loop = asyncio.new_event_loop()
    first = loop.create_task(writer.submit(batch_of("first")))
    # Run the loop until the commit holds the slot, inside the (gated) backend.
    loop.run_until_complete(loop.run_in_executor(None, backend.entered.acquire))
    loop.close()
    backend.gate.set()  # the commit ends; its loop is gone
    assert not first.done()  # its caller never returned: the batch was never acknowledged

    async def second() -> None:
        await asyncio.wait_for(writer.submit(batch_of("second")), 10)

    asyncio.run(second())
    assert backend.stored("second") == ["00000000"]
    del first
    gc.collect()  # the closed loop's task is dropped here, inside this test
