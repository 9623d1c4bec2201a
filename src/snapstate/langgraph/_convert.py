"""Conversion between LangGraph's checkpoint shapes and the engine's.

LangGraph hands a saver a ``Checkpoint`` TypedDict and a ``RunnableConfig``; the engine takes a
:class:`snapstate.Checkpoint` and plain ids. Everything here is a pure function, shared by every
saver, sync and async.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

import msgspec
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.base import Checkpoint as LGCheckpoint

from .._model import Checkpoint, Snapshot
from ..backends import CheckpointRow, WriteRow
from ..errors import InvalidArgumentError

__all__ = [
    "next_version",
    "to_engine",
    "to_tuple",
    "saved_config",
    "merged_metadata",
    "write_indices",
    "thread_of",
    "target_of",
    "list_scope",
    "DeltaHistory",
    "DELTA_COUNTERS",
]

#: Metadata key LangGraph's loop sets on a checkpoint for the ``DeltaChannel``s not
#: snapshotted there (channel -> [updates, supersteps] since their last snapshot).
DELTA_COUNTERS = "counters_since_delta_snapshot"

#: The checkpoint keys the engine keeps in typed fields; any other key travels in ``extra``.
_CHECKPOINT_KEYS = ("id", "ts", "channel_values", "channel_versions", "versions_seen")
_TYPED_KEYS = frozenset(_CHECKPOINT_KEYS)


def next_version(current: str | int | float | None) -> str:
    """The version after ``current``: a 32-digit counter, a dot and a random fraction.

    This is the scheme LangGraph's own savers use, so threads written by them keep increasing
    here. The random part keeps two forks of one thread from naming different values alike.
    """
    if current is None:
        n = 0
    elif isinstance(current, str):
        n = int(current.split(".", 1)[0])
    else:
        n = int(current)
    return f"{n + 1:032}.{random.random():016}"


def thread_text(thread_id: Any, what: str = "thread_id") -> str:
    """A thread id as stored: its text (LangGraph's savers accept ints too); None is refused,
    where ``str()`` would quietly name a thread "None"."""
    if thread_id is None:
        raise InvalidArgumentError(f"{what} is None", hint="name the thread with a str or int")
    return str(thread_id)


def thread_of(config: RunnableConfig) -> tuple[Any, str, str]:
    """(thread id as given, thread id as text, namespace) of a config."""
    try:
        conf = config["configurable"]
        thread_id = conf["thread_id"]
    except (KeyError, TypeError):
        thread_id = None
    if thread_id is None:
        raise InvalidArgumentError(
            "config has no configurable.thread_id",
            hint='pass {"configurable": {"thread_id": ...}} when you invoke the graph',
        )
    return thread_id, str(thread_id), conf.get("checkpoint_ns") or ""


def writes_target(config: RunnableConfig) -> tuple[str, str, str]:
    """(thread id, namespace, checkpoint id) that ``put_writes`` stores pending writes under."""
    _, thread_id, namespace = thread_of(config)
    checkpoint_id = config["configurable"].get("checkpoint_id")
    if checkpoint_id is None:
        raise InvalidArgumentError(
            f"put_writes needs configurable.checkpoint_id: the checkpoint the writes belong to "
            f"(thread {thread_id!r}, namespace {namespace!r})",
            hint="pass the config that put() returned, or one naming a stored checkpoint",
        )
    return thread_id, namespace, checkpoint_id


def target_of(config: RunnableConfig) -> tuple[str, str, str | None]:
    """(thread id, namespace, checkpoint id or None for the latest) a read addresses."""
    _, thread_id, namespace = thread_of(config)
    return thread_id, namespace, config["configurable"].get("checkpoint_id") or None


def to_engine(checkpoint: LGCheckpoint) -> Checkpoint:
    """The engine's checkpoint for a LangGraph one. Values are not copied."""
    try:
        return Checkpoint(
            id=checkpoint["id"],
            channel_values=checkpoint["channel_values"],
            channel_versions=checkpoint["channel_versions"],
            versions_seen=checkpoint["versions_seen"],
            ts=checkpoint["ts"],
            extra={k: v for k, v in checkpoint.items() if k not in _TYPED_KEYS},
        )
    except (KeyError, TypeError, AttributeError):
        raise _malformed_checkpoint(checkpoint) from None


def _malformed_checkpoint(checkpoint: Any) -> InvalidArgumentError:
    if not isinstance(checkpoint, Mapping):
        what = f"a {type(checkpoint).__name__}"
    else:
        missing = [k for k in _CHECKPOINT_KEYS if k not in checkpoint]
        what = f"missing {', '.join(repr(k) for k in missing)}" if missing else "malformed"
    return InvalidArgumentError(
        f"put() needs a LangGraph checkpoint (a dict with {', '.join(_CHECKPOINT_KEYS)}); "
        f"got {what}",
        hint="build checkpoints with langgraph.checkpoint.base.empty_checkpoint() or "
        "create_checkpoint()",
    )


def merged_metadata(config: RunnableConfig, metadata: CheckpointMetadata) -> dict[str, Any]:
    """The metadata LangGraph's savers store: the given metadata without NUL characters, plus
    the plain values of ``config["metadata"]`` and ``config["configurable"]`` (run_id, user
    keys, ...) that are not already set, internal, or LangGraph's own."""
    if not isinstance(metadata, Mapping):
        raise InvalidArgumentError(
            f"checkpoint metadata must be a dict, got {type(metadata).__name__}"
        )
    return cast(dict[str, Any], get_serializable_checkpoint_metadata(config, metadata))


def saved_config(thread_id: Any, namespace: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": namespace,
            "checkpoint_id": checkpoint_id,
        }
    }


def write_indices(writes: Sequence[tuple[str, Any]]) -> tuple[list[int], bool]:
    """Row indices of a task's writes and whether they replace existing rows.

    Special channels (errors, interrupts, resumes, scheduled) get LangGraph's fixed negative
    indices, so they never collide with positional writes. A call made only of special writes
    overwrites (a task's latest error or interrupt wins); any other call keeps rows that exist,
    so a retried call is harmless.
    """
    try:
        indices = [WRITES_IDX_MAP.get(channel, i) for i, (channel, _) in enumerate(writes)]
    except (TypeError, ValueError):
        raise _malformed_writes(writes) from None
    return indices, all(channel in WRITES_IDX_MAP for channel, _ in writes)


def _malformed_writes(writes: Any) -> InvalidArgumentError:
    what = "put_writes() needs a sequence of (channel, value) pairs"
    try:
        items = list(writes)
    except TypeError:
        return InvalidArgumentError(f"{what}, got {type(writes).__name__}")
    for i, w in enumerate(items):
        if not isinstance(w, (tuple, list)) or len(w) != 2:
            return InvalidArgumentError(f"{what}; write {i} is {w!r:.80}")
        if not isinstance(w[0], str):
            return InvalidArgumentError(
                f"{what}; the channel of write {i} is a {type(w[0]).__name__}, not a str"
            )
    return InvalidArgumentError(what)


def to_tuple(snap: Snapshot) -> CheckpointTuple:
    """A LangGraph checkpoint tuple for a snapshot the engine read."""
    c = snap.checkpoint
    checkpoint: dict[str, Any] = {"v": 1, "updated_channels": None}
    checkpoint.update(c.extra)
    checkpoint["id"] = c.id
    checkpoint["ts"] = c.ts
    checkpoint["channel_values"] = c.channel_values
    checkpoint["channel_versions"] = c.channel_versions
    checkpoint["versions_seen"] = c.versions_seen
    return CheckpointTuple(
        config=saved_config(snap.thread_id, snap.namespace, c.id),
        checkpoint=cast(LGCheckpoint, checkpoint),
        metadata=cast(CheckpointMetadata, snap.metadata),
        parent_config=(
            saved_config(snap.thread_id, snap.namespace, snap.parent_id) if snap.parent_id else None
        ),
        pending_writes=[(w.task_id, w.channel, w.value) for w in snap.pending_writes],
    )


def list_scope(config: RunnableConfig | None, before: RunnableConfig | None) -> dict[str, Any]:
    """Engine ``list`` arguments for LangGraph's ``list(config, before=...)``.

    No config lists every thread. A config's ``checkpoint_ns``, when present, keeps that
    namespace only (``""`` is the root graph); without it every namespace is listed.
    """
    scope: dict[str, Any] = {}
    if config is not None:
        _, scope["thread_id"], _ = thread_of(config)
        conf = config["configurable"]
        if conf.get("checkpoint_ns") is not None:
            scope["namespace"] = conf["checkpoint_ns"]
        if conf.get("checkpoint_id"):
            scope["checkpoint_id"] = conf["checkpoint_id"]
    if before is not None:
        before_id = (before.get("configurable") or {}).get("checkpoint_id")
        if before_id:
            scope["before"] = before_id
    return scope


class DeltaHistory:
    """Plans and assembles ``get_delta_channel_history`` from stored rows, decoding little.

    The ancestors of the target come from checkpoint rows alone (ids, parents, metadata: no
    state bytes). For each channel the seed is the nearest ancestor that stores a value for
    it; LangGraph's loop records in each checkpoint's metadata the delta channels *not*
    snapshotted there (``counters_since_delta_snapshot``), so only ancestors missing a channel
    from those counters can hold its value, and only their values are read. Then the writes
    of the ancestors up to each seed are read in one query, and only the requested channels'
    are decoded. The seed ancestor's own writes are included (they produced the next
    checkpoint on the path); the target's are not (they are pending).
    """

    def __init__(
        self,
        channels: Sequence[str],
        target: CheckpointRow | None,
        older: Iterable[CheckpointRow],
    ) -> None:
        self.channels = list(channels)
        by_id = {r.checkpoint_id: r for r in older}
        self.chain: list[CheckpointRow] = []  # the target's ancestors, nearest first
        cursor = target.parent_id if target is not None else None
        while cursor is not None and cursor in by_id:
            row = by_id.pop(cursor)
            self.chain.append(row)
            cursor = row.parent_id
        self.seeds: dict[str, Any] = {}
        self.seed_at: dict[str, int] = {}  # channel -> index of its seed in ``chain``

    def candidates(self) -> Iterator[tuple[int, CheckpointRow, list[str]]]:
        """Ancestors whose values must be read, nearest first, with the channels they may seed.

        Stops once every channel has its seed; :meth:`found` records them.
        """
        for i, row in enumerate(self.chain):
            open_channels = [c for c in self.channels if c not in self.seed_at]
            if not open_channels:
                return
            counters = _delta_counters(row)
            maybe = [c for c in open_channels if not counters.get(c)]
            if maybe:
                yield i, row, maybe

    def found(self, index: int, channels: list[str], values: Mapping[str, Any]) -> None:
        for channel in channels:
            if channel in values:
                self.seeds[channel] = values[channel]
                self.seed_at[channel] = index

    def write_ids(self) -> list[str]:
        """The ancestors whose writes are replayed (for some channel)."""
        depth = len(self.chain)
        if self.channels and all(c in self.seed_at for c in self.channels):
            depth = max(self.seed_at.values()) + 1
        return [r.checkpoint_id for r in self.chain[:depth]]

    def result(
        self, rows: Iterable[WriteRow], decode: Callable[[WriteRow], Any]
    ) -> Mapping[str, DeltaChannelHistory]:
        position = {r.checkpoint_id: i for i, r in enumerate(self.chain)}
        wanted = set(self.channels)
        depth = {c: self.seed_at.get(c, len(self.chain)) for c in self.channels}
        kept = [
            w
            for w in rows
            if w.channel in wanted
            and w.checkpoint_id in position
            and position[w.checkpoint_id] <= depth[w.channel]
        ]
        # Oldest ancestor first; within one, the order live execution applied them in.
        kept.sort(key=lambda w: (-position[w.checkpoint_id], w.task_path, w.task_id, w.idx))
        out: dict[str, DeltaChannelHistory] = {c: {"writes": []} for c in self.channels}
        for w in kept:
            out[w.channel]["writes"].append((w.task_id, w.channel, decode(w)))
        for channel, seed in self.seeds.items():
            out[channel]["seed"] = seed
        return out


def _delta_counters(row: CheckpointRow) -> Mapping[str, Any]:
    meta = msgspec.json.decode(row.metadata)
    counters = meta.get(DELTA_COUNTERS) if isinstance(meta, dict) else None
    return counters if isinstance(counters, dict) else {}
