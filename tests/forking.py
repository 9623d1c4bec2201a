"""Running a check in a forked child (for the tests of what a fork leaves to the child)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest


def fork_child(body: Callable[[], bool]) -> int:
    """Fork; the child runs ``body`` and exits with 0 if it returned True, else 1 (also when
    it raised). Returns the child's pid, in the parent. Skips where there is no ``fork``."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            code = 0 if body() else 1
        finally:
            os._exit(code)
    return pid


def child_succeeded(pid: int, timeout: float = 20.0) -> bool:
    """Wait for the child and say whether its ``body`` returned True. A child still running
    after ``timeout`` seconds (hung: say, on a lock held at the fork) is killed: False."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return False
        time.sleep(0.005)


@contextlib.contextmanager
def held_elsewhere(lock: Any) -> Iterator[None]:
    """``lock`` held, for the block, by another thread: one that a child forked in the block
    does not have, as a thread of an application's would be."""
    held, done = threading.Event(), threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            done.wait()

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait()
    try:
        yield
    finally:
        done.set()
        thread.join()


def child_ok(body: Callable[[], bool], *, held: Any = None) -> bool:
    """Fork (``held``, a lock or None, held by another thread meanwhile) and say whether the
    child's ``body`` returned True (see :func:`fork_child`, :func:`child_succeeded`)."""
    with held_elsewhere(held) if held is not None else contextlib.nullcontext():
        pid = fork_child(body)
    return child_succeeded(pid)
