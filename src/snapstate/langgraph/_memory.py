"""``InMemorySaver``: checkpoints in process memory, for tests and short-lived runs."""

from __future__ import annotations

from collections import defaultdict
from types import TracebackType
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol

from ..backends import MemoryBackend
from ..codec import Codec
from ..errors import ConfigurationError
from ._base import SyncSaver

__all__ = ["InMemorySaver", "MemorySaver"]


class InMemorySaver(SyncSaver):
    """A drop-in for LangGraph's ``InMemorySaver``: checkpoints live as long as the saver.

    Values are encoded as the persistent savers encode them (without compression), so a graph
    that works here stores the same way on SQLite or PostgreSQL, and state read back is never
    the very object the graph still holds (mutating one cannot change the other).

    Parameters
    ----------
    serde:
        A LangGraph serializer to encode values with instead of snapstate's codec.
    codec:
        A :class:`snapstate.codec.Codec` (for example one with application types registered).
    factory:
        Accepted for compatibility; only the default, ``defaultdict``, is supported.
    **options:
        Engine options, e.g. ``delta_keyframe_every``.
    """

    _inline_async = True  # the memory backend never blocks
    # Values stay in this process: lz4 would only cost time (about a third of this saver's
    # share per step on the chat benchmark, through python-lz4 releasing the GIL).
    _compress = False

    def __init__(
        self,
        *,
        serde: SerializerProtocol | None = None,
        codec: Codec | None = None,
        factory: type[defaultdict] = defaultdict,  # type: ignore[type-arg]
        **options: Any,
    ) -> None:
        if factory is not defaultdict:
            raise ConfigurationError(
                "InMemorySaver(factory=...) is not supported",
                hint="for checkpoints that survive the process, use snapstate.langgraph."
                "SqliteSaver.from_conn_string(path)",
            )
        self._init_engine(MemoryBackend(), serde=serde, codec=codec, options=options)

    def __enter__(self) -> InMemorySaver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.flush()

    async def __aenter__(self) -> InMemorySaver:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.flush()


#: LangGraph's older name for :class:`InMemorySaver`.
MemorySaver = InMemorySaver
