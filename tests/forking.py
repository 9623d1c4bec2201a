"""Running a check in a forked child (for the tests of what a fork leaves to the child)."""

from __future__ import annotations

import os
from collections.abc import Callable

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


def child_succeeded(pid: int) -> bool:
    """Wait for the child and say whether its ``body`` returned True."""
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
