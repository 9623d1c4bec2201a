"""The engine's data model: what a caller puts and what it gets back.

These are msgspec Structs: cheap to build, typed, and they evolve by msgspec's schema-evolution
rules (new fields get defaults and are appended).
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["Version", "Checkpoint", "PendingWrite", "Snapshot"]

#: A channel version. Versions of one thread are all of one type and strictly increasing.
Version = str | int | float


class Checkpoint(msgspec.Struct, kw_only=True):
    """One snapshot of a graph's state.

    Attributes
    ----------
    id:
        The checkpoint id. Ids of one thread must sort in creation order (LangGraph uses uuid6),
        because "latest" and ``before`` are decided by comparing them.
    channel_values:
        The full state: channel name to value. Only channels named in ``changed`` on
        :meth:`Checkpointer.put` are encoded and stored again; the rest are reached by version.
    channel_versions:
        Channel name to its current version.
    versions_seen:
        Node name to the channel versions that node has seen.
    ts:
        ISO-8601 timestamp of the checkpoint.
    extra:
        Further small, plain fields the framework keeps in its checkpoint (LangGraph's ``v`` and
        ``updated_channels``). Stored with the checkpoint's skeleton.
    """

    id: str
    channel_values: dict[str, Any] = msgspec.field(default_factory=dict)
    channel_versions: dict[str, Version] = msgspec.field(default_factory=dict)
    versions_seen: dict[str, dict[str, Version]] = msgspec.field(default_factory=dict)
    ts: str = ""
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


class PendingWrite(msgspec.Struct, frozen=True):
    """A write a task made against a checkpoint, not yet applied by a later checkpoint."""

    task_id: str
    channel: str
    value: Any
    task_path: str = ""
    idx: int = 0


class Snapshot(msgspec.Struct):
    """A stored checkpoint as read back: where it lives, its state, metadata and pending writes.

    ``pending_writes`` are sorted by ``(task_path, task_id, idx)``.
    """

    thread_id: str
    namespace: str
    checkpoint: Checkpoint
    metadata: dict[str, Any]
    parent_id: str | None
    pending_writes: list[PendingWrite]
    created_at: float = 0.0
