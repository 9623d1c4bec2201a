"""Conversion between LangGraph's checkpoint shapes and the engine's.

LangGraph hands a saver a ``Checkpoint`` TypedDict and a ``RunnableConfig``; the engine takes a
:class:`snapstate.Checkpoint` and plain ids. Everything here is a pure function, shared by every
saver, sync and async.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.base import Checkpoint as LGCheckpoint

from .._model import Checkpoint, PendingWrite, Snapshot
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
    "DeltaWalk",
]

#: The checkpoint keys the engine keeps in typed fields; any other key travels in ``extra``.
_TYPED_KEYS = frozenset({"id", "ts", "channel_values", "channel_versions", "versions_seen"})


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


def thread_of(config: RunnableConfig) -> tuple[Any, str, str]:
    """(thread id as given, thread id as text, namespace) of a config."""
    try:
        conf = config["configurable"]
        thread_id = conf["thread_id"]
    except (KeyError, TypeError):
        raise InvalidArgumentError(
            "config has no configurable.thread_id",
            hint='pass {"configurable": {"thread_id": ...}} when you invoke the graph',
        ) from None
    return thread_id, str(thread_id), conf.get("checkpoint_ns") or ""


def target_of(config: RunnableConfig) -> tuple[str, str, str | None]:
    """(thread id, namespace, checkpoint id or None for the latest) a read addresses."""
    _, thread_id, namespace = thread_of(config)
    return thread_id, namespace, config["configurable"].get("checkpoint_id") or None


def to_engine(checkpoint: LGCheckpoint) -> Checkpoint:
    """The engine's checkpoint for a LangGraph one. Values are not copied."""
    return Checkpoint(
        id=checkpoint["id"],
        channel_values=checkpoint["channel_values"],
        channel_versions=checkpoint["channel_versions"],
        versions_seen=checkpoint["versions_seen"],
        ts=checkpoint["ts"],
        extra={k: v for k, v in checkpoint.items() if k not in _TYPED_KEYS},
    )


def merged_metadata(config: RunnableConfig, metadata: CheckpointMetadata) -> dict[str, Any]:
    """The metadata LangGraph's savers store: the given metadata without NUL characters, plus
    the plain values of ``config["metadata"]`` and ``config["configurable"]`` (run_id, user
    keys, ...) that are not already set, internal, or LangGraph's own."""
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
    indices = [WRITES_IDX_MAP.get(channel, i) for i, (channel, _) in enumerate(writes)]
    return indices, all(channel in WRITES_IDX_MAP for channel, _ in writes)


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


class DeltaWalk:
    """Collects a ``DeltaChannel``'s history while walking a checkpoint's ancestors.

    Feed it the snapshots of one namespace newest first (as ``list(before=target)`` yields
    them); it follows parent ids, skips checkpoints off the path (other forks), and stops once
    every channel has found its seed: the nearest ancestor that stores a value for it. Writes
    are collected from each ancestor on the way, the seed ancestor's included (they produced
    the next checkpoint on the path); the target's own writes are not (they are pending).
    """

    def __init__(self, channels: Sequence[str], parent_id: str | None) -> None:
        self.channels = list(channels)
        self.remaining = set(channels)
        self.cursor = parent_id
        # Per channel, the writes of each ancestor, newest ancestor first.
        self._writes: dict[str, list[list[tuple[str, str, Any]]]] = {c: [] for c in channels}
        self._seeds: dict[str, Any] = {}

    @property
    def done(self) -> bool:
        return self.cursor is None or not self.remaining

    def feed(self, snap: Snapshot) -> bool:
        """Take the next older snapshot; True once the walk needs no more."""
        if self.done:
            return True
        cid = snap.checkpoint.id
        assert self.cursor is not None
        if cid > self.cursor:  # newer than the next ancestor: another branch
            return False
        if cid < self.cursor:  # the ancestor is gone (pruned or deleted): stop here
            self.cursor = None
            return True
        by_channel: dict[str, list[tuple[str, str, Any]]] = {}
        for w in snap.pending_writes:
            if w.channel in self.remaining:
                by_channel.setdefault(w.channel, []).append(_pending(w))
        for channel, writes in by_channel.items():
            self._writes[channel].append(writes)
        values = snap.checkpoint.channel_values
        for channel in [c for c in self.remaining if c in values]:
            self._seeds[channel] = values[channel]
            self.remaining.discard(channel)
        self.cursor = snap.parent_id
        return self.done

    def result(self) -> Mapping[str, DeltaChannelHistory]:
        out: dict[str, DeltaChannelHistory] = {}
        for channel in self.channels:
            entry: DeltaChannelHistory = {
                "writes": [w for step in reversed(self._writes[channel]) for w in step]
            }
            if channel in self._seeds:
                entry["seed"] = self._seeds[channel]
            out[channel] = entry
        return out


def _pending(w: PendingWrite) -> tuple[str, str, Any]:
    return (w.task_id, w.channel, w.value)
