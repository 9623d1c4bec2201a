"""What a forked child starts over: the locks, queues and per-process state of the parent.

A thread of the parent may hold one of snapstate's locks at the moment of ``fork()``. The child
has no such thread, so that lock would never be let go and the child's first call would hang.
Objects and modules that keep locks or per-process state register here. In the child, right
after the fork and while it still has one thread (``os.register_at_fork``), each module's
function runs and each object's ``_start_in_child()`` is called: fresh locks, and none of the
parent's queues, connections or in-flight work.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["track", "on_fork"]

F = TypeVar("F", bound=Callable[[], None])

_objects: weakref.WeakSet[Any] = weakref.WeakSet()
_functions: list[Callable[[], None]] = []


def track(obj: Any) -> None:
    """Call ``obj._start_in_child()`` in every forked child while ``obj`` lives."""
    _objects.add(obj)


def on_fork(fn: F) -> F:
    """Run ``fn()`` in every forked child (a module's own locks and state)."""
    _functions.append(fn)
    return fn


def _in_child() -> None:
    # Every one of them starts over even if another fails; the first failure is then raised
    # (Python prints it: an at-fork hook has no caller to report to).
    first: BaseException | None = None
    for start in [*_functions, *(obj._start_in_child for obj in list(_objects))]:
        try:
            start()
        except BaseException as exc:  # pragma: no cover - the starts only make locks
            first = first or exc
    if first is not None:  # pragma: no cover
        raise first


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_child)
