"""Results of costly functions of immutable objects, computed once per object.

LangGraph hands the same object to ``put_writes`` (a node's write) and to the next ``put`` (the
channel's new value), and with ``durability="sync"`` it makes both calls at the same time from
two threads. A large value is encoded once (:class:`snapstate._engine._ReusingEncoder`) and its
payload digest computed once (:func:`snapstate.backends._base.payload_digest`) for both: the
second caller finds the first's result, or waits for it while the first computes it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from . import _forksafe

__all__ = ["OncePerObject"]

R = TypeVar("R")


class OncePerObject(Generic[R]):
    """Keeps the results computed for the last ``size`` objects, and shares a result being
    computed with the callers that ask for it meanwhile.

    Only objects that cannot change belong here (``bytes``, ``str``): an entry is found by the
    object's identity. Entries hold the object itself, so its id cannot be reused by another
    object while cached or being computed.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._recent: OrderedDict[int, tuple[Any, R]] = OrderedDict()
        self._start_in_child()
        _forksafe.track(self)

    def _start_in_child(self) -> None:
        """A fresh lock and nothing being computed: at the start, and in a forked child, where
        the parent's computations in progress would never finish (see snapstate._forksafe).
        The results kept stay: each is complete."""
        self._lock = threading.Lock()
        self._running: dict[int, tuple[Any, Future[R | None]]] = {}

    def get(self, obj: Any, compute: Callable[[], R]) -> R:
        """``compute()``'s result (never None) for ``obj``: kept, being computed by another
        caller (this one then waits for it), or computed here. When the caller computing it
        fails, a caller that waited computes it in turn, so that an error is raised with that
        caller's own context."""
        key = id(obj)
        while True:
            with self._lock:
                hit = self._recent.get(key)
                if hit is not None and hit[0] is obj:
                    self._recent.move_to_end(key)
                    return hit[1]
                running = self._running.get(key)
                if running is None:
                    future: Future[R | None] = Future()
                    self._running[key] = (obj, future)
                    break
            shared = running[1].result()
            if shared is not None:
                return shared
        try:
            result = compute()
        except BaseException:
            with self._lock:
                del self._running[key]
            future.set_result(None)
            raise
        with self._lock:
            del self._running[key]
            self._recent[key] = (obj, result)
            while len(self._recent) > self.size:
                self._recent.popitem(last=False)
        future.set_result(result)
        return result
