"""Append-deltas: store only what a list channel gained since its previous version.

Chat state grows by appending, so storing the whole list at every step costs O(steps^2) bytes.
When a list channel's new value starts with the items of the version this process last stored
for that channel, only the new items are encoded, with a reference to that base version. Every
``keyframe_every`` versions a full copy is stored, so a read replays a bounded chain.

The prefix test compares items by identity against the very list this process stored last.
Frameworks build a new list for each step from the old item objects (LangGraph's reducers do), so
the test costs a pointer comparison per item. Equality is not enough: ``1 == 1.0 == True`` and
``{"a": 1} == {"a": True}``, yet they encode differently. A list rebuilt from equal copies is
stored as a keyframe, which is correct, only larger. An item mutated *in place* after it was
stored is not seen as changed: treat checkpointed values as immutable.

Nothing here is trusted across processes: a process that has not stored a version of a channel
yet stores a keyframe first.
"""

from __future__ import annotations

import operator
import threading
from collections import OrderedDict
from typing import Any, Protocol

from . import _forksafe
from .backends._base import BLOB_DELTA, BLOB_FULL
from .errors import DecodeError


class Encoder(Protocol):
    """What the policy needs of a codec."""

    def encode(self, value: Any, *, where: str = "") -> bytes: ...


__all__ = ["DEFAULT_KEYFRAME_EVERY", "DeltaPolicy", "apply"]

#: Versions between two full copies of a list channel. A read of the latest version decodes the
#: keyframe and at most this many deltas; see benchmarks/bench_storage.py for the trade-off.
DEFAULT_KEYFRAME_EVERY = 32

#: Channels whose last stored list is remembered (least recently used are forgotten first).
MAX_TRACKED_CHANNELS = 4096


class _Last:
    __slots__ = ("chain", "items", "version")

    def __init__(self, version: str, items: list[Any], chain: int) -> None:
        self.version = version
        self.items = items
        self.chain = chain


class DeltaPolicy:
    """Decides, per changed channel, between a full blob and an append-delta."""

    def __init__(self, keyframe_every: int = DEFAULT_KEYFRAME_EVERY) -> None:
        if not isinstance(keyframe_every, int) or keyframe_every < 0:
            raise ValueError(f"keyframe_every must be an int >= 0, got {keyframe_every!r}")
        self.keyframe_every = keyframe_every
        self._start_in_child()
        _forksafe.track(self)

    def _start_in_child(self) -> None:
        """A fresh lock and nothing remembered: at the start, and in a forked child. A write of
        the parent's may be in progress at the fork and fail there: a delta in the child must
        not name its version as a base (see snapstate._forksafe)."""
        self._lock = threading.Lock()
        self._last: OrderedDict[tuple[str, str, str], _Last] = OrderedDict()

    def encode(
        self,
        codec: Encoder,
        thread_id: str,
        namespace: str,
        channel: str,
        version: str,
        value: Any,
        where: str,
    ) -> tuple[int, str | None, bytes]:
        """Encode ``value`` as (kind, base version, data)."""
        key = (thread_id, namespace, channel)
        if self.keyframe_every == 0 or type(value) is not list:
            if self.keyframe_every:
                with self._lock:
                    self._last.pop(key, None)
            return BLOB_FULL, None, codec.encode(value, where=where)
        with self._lock:
            last = self._last.get(key)
        if (
            last is not None
            and last.version != version
            and last.chain + 1 < self.keyframe_every
            and len(value) >= len(last.items)
            and all(map(operator.is_, value, last.items))
        ):
            data = codec.encode(value[len(last.items) :], where=f"{where} (appended items)")
            self._remember(key, _Last(version, list(value), last.chain + 1))
            return BLOB_DELTA, last.version, data
        data = codec.encode(value, where=where)
        self._remember(key, _Last(version, list(value), 0))
        return BLOB_FULL, None, data

    def _remember(self, key: tuple[str, str, str], last: _Last) -> None:
        with self._lock:
            self._last[key] = last
            self._last.move_to_end(key)
            while len(self._last) > MAX_TRACKED_CHANNELS:
                self._last.popitem(last=False)

    def forget(self, thread_id: str | None = None) -> None:
        """Drop what is remembered of a thread (all threads when None).

        Called when a write fails or a thread is deleted: a delta must never name a base that
        was not stored.
        """
        with self._lock:
            if thread_id is None:
                self._last.clear()
            else:
                for key in [k for k in self._last if k[0] == thread_id]:
                    del self._last[key]


def apply(base: Any, items: Any, where: str) -> list[Any]:
    """The list a delta stands for: its base's items followed by the appended ones."""
    if type(base) is not list or type(items) is not list:
        raise DecodeError(
            f"append-delta of {where} does not apply: base is {type(base).__name__}, "
            f"delta is {type(items).__name__}"
        )
    return base + items
