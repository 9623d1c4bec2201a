"""A fork while another thread is inside snapstate: the child must not hang or build on the
parent's unfinished work.

At ``fork()`` the child gets a copy of every lock, held or not, and none of the threads that
held them. Each case below holds one of snapstate's locks (or leaves work in progress) in the
parent at the fork, as a thread of the parent would; the child then writes and reads a thread
with an append-delta list, a large value (stored once as a payload) and pending writes, and
registers a class. Without snapstate starting that state over in the child, the child hangs
(and is killed after 20 s) or fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from snapstate import Checkpoint, Checkpointer, codec
from snapstate.backends import MemoryBackend
from snapstate.backends import _base as backend_base
from snapstate.backends import sqlite as mod
from snapstate.backends.sqlite import SqliteBackend
from snapstate.codec import _registry

from .forking import child_succeeded, fork_child, held_elsewhere

BIG = os.urandom(backend_base.PAYLOAD_MIN_BYTES + 1000)
#: The child's large value: one the parent has not encoded (so the child cannot reuse its bytes).
CHILDS = os.urandom(backend_base.PAYLOAD_MIN_BYTES + 1000)


def ck(i: int, big: bytes = BIG) -> Checkpoint:
    items = [f"item {j}" for j in range(i + 1)]
    return Checkpoint(
        id=f"{i:08d}",
        channel_values={"items": items, "big": big},
        channel_versions={"items": i + 1, "big": 1},
    )


def _lock(
    get: Callable[[Checkpointer], Any],
) -> Callable[[Checkpointer], contextlib.AbstractContextManager[None]]:
    """A case where another thread holds the lock ``get`` finds."""
    return lambda cp: held_elsewhere(get(cp))


@contextlib.contextmanager
def _commit_in_progress(cp: Checkpointer) -> Iterator[None]:
    # A parent's thread is committing: it holds the sync writer's only transaction slot.
    writer: Any = cp._writer
    with writer._cv:
        writer._running += 1
    try:
        yield
    finally:
        with writer._cv:
            writer._running -= 1
            writer._cv.notify_all()


@contextlib.contextmanager
def _computing(once: Any, obj: Any) -> Iterator[None]:
    # A parent's thread is computing ``obj``'s result: another caller would wait for it, which
    # never comes in the child.
    with once._lock:
        once._running[id(obj)] = (obj, Future())
    try:
        yield
    finally:
        with once._lock:
            _, future = once._running.pop(id(obj))
        future.set_result(None)


@contextlib.contextmanager
def _digest_in_progress(cp: Checkpointer) -> Iterator[None]:
    # The bytes the child will store for its large value, encoded in the parent and kept for
    # reuse, are being digested by a parent's thread.
    encoded = cp._plan.encoder.encode(CHILDS)
    with _computing(backend_base._digests, encoded):
        yield


#: case -> what the parent holds (a context manager) while it forks.
CASES: dict[str, Callable[[Checkpointer], contextlib.AbstractContextManager[None]]] = {
    "sync writer's lock": _lock(lambda cp: cp._writer._cv),
    "a commit in progress": _commit_in_progress,
    "encoder's lock": _lock(lambda cp: cp._plan.encoder._encoded._lock),
    # The child's large value, being encoded in the parent (so the child cannot reuse its bytes).
    "an encoding in progress": lambda cp: _computing(cp._plan.encoder._encoded, CHILDS),
    "delta policy's lock": _lock(lambda cp: cp._plan.delta._lock),
    "payload digests' lock": _lock(lambda cp: backend_base._digests._lock),
    "a digest in progress": _digest_in_progress,
    "type registry's lock": _lock(lambda cp: _registry._lock),
    "memory backend's lock": _lock(lambda cp: cp.backend._lock),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_child_starts_over_what_the_parent_held(tmp_path: Path, case: str) -> None:
    memory = case.startswith("memory")
    backend = MemoryBackend() if memory else SqliteBackend(tmp_path / "fork.db")
    with Checkpointer(backend) as cp:
        cp.put(ck(0), thread_id="parent")
        cp.put(ck(1), thread_id="parent")  # "items" is now an append-delta

        def in_child() -> bool:
            @dataclasses.dataclass
            class Note:
                text: str

            codec.register(Note)
            for i in range(3):
                cp.put(ck(i, CHILDS), thread_id="child")
                cp.put_writes(
                    [("note", Note(f"n{i}"))],
                    thread_id="child",
                    checkpoint_id=f"{i:08d}",
                    task_id="task",
                )
            got = cp.get("child")
            return (
                got is not None
                and got.checkpoint.channel_values == ck(2, CHILDS).channel_values
                and [w.value for w in got.pending_writes] == [Note("n2")]
                and cp.get("parent") is not None
            )

        with CASES[case](cp):
            pid = fork_child(in_child)
        assert child_succeeded(pid)
        # The parent goes on as before the fork.
        cp.put(ck(2), thread_id="parent")
        got = cp.get("parent")
        assert got is not None and got.checkpoint.channel_values == ck(2).channel_values


@pytest.mark.parametrize("big", [False, True])
def test_a_fork_waits_for_a_write_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, big: bool
) -> None:
    """A fork while another thread's SQLite transaction holds the write lock would leave the
    child believing a connection of its own holds it: the child's writes would wait for it
    until their busy timeout, and fail. The fork waits for the transaction instead. ``big``:
    the write goes through ``sqlite3`` (too large for the compiled connection)."""
    backend = SqliteBackend(tmp_path / "busy.db", busy_timeout=2)
    with Checkpointer(backend) as cp:
        cp.put(ck(0), thread_id="parent")
        entered, release = threading.Event(), threading.Event()
        real = mod._store

        def slow(db: Any, batch: Any) -> None:
            if any(c.thread_id == "slow" for c in batch.checkpoints):
                entered.set()
                release.wait(10)
            real(db, batch)

        monkeypatch.setattr(mod, "_store", slow)
        if big:
            monkeypatch.setattr(mod, "_HOLD_MAX_BYTES", 0)
        writer = threading.Thread(target=cp.put, args=(ck(1),), kwargs={"thread_id": "slow"})
        writer.start()
        assert entered.wait(10)
        ends = threading.Timer(0.3, release.set)  # the write in progress ends a little later
        ends.start()

        def in_child() -> bool:
            cp.put(ck(2, CHILDS), thread_id="child")
            return cp.get("child") is not None

        pid = fork_child(in_child)
        assert child_succeeded(pid)
        writer.join()
        ends.join()
        assert cp.get("slow") is not None
