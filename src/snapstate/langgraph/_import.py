"""Bring the history another LangGraph saver stored into a snapstate saver.

Switching savers otherwise starts every thread afresh: snapstate's savers keep their own
tables and do not read LangGraph's. :func:`import_history` reads each thread through the
source saver's own API (so whatever it stored, and however it decodes it, comes across as the
graph would see it) and writes it through the target's, keeping thread ids, checkpoint ids,
parents, metadata and pending writes. It can be run again: checkpoints the target already holds
are skipped.
"""

from __future__ import annotations

import asyncio
import sqlite3
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    CheckpointTuple,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.types import TASKS

from .._engine import Progress
from ..errors import ImportMismatchError, InvalidArgumentError, SnapstateError, StorageError
from ._base import AsyncSaver, SyncSaver
from ._convert import next_version

__all__ = ["ImportReport", "aimport_history", "import_history", "source_threads"]


_Encode = Callable[[Any], bytes] | None


@dataclass(frozen=True)
class ImportReport:
    """What :func:`import_history` did."""

    threads: int
    """Threads read from the source."""
    checkpoints: int
    """Checkpoints written to the target."""
    skipped: int
    """Checkpoints the target already held (from an earlier import), left as they were."""
    writes: int
    """Pending writes written to the target (those of skipped checkpoints included: writing
    them again changes nothing)."""
    migrated: int
    """Checkpoints of LangGraph's format before version 4 whose pending sends were moved into
    the ``__pregel_tasks`` channel, as LangGraph's Postgres saver does when it reads them."""
    verified: int
    """Checkpoints read back from the target and found equal to the source's."""


def import_history(
    source: BaseCheckpointSaver[Any],
    target: BaseCheckpointSaver[Any],
    *,
    thread_ids: Iterable[str] | None = None,
    verify: bool = True,
    progress: Callable[[Progress], None] | None = None,
) -> ImportReport:
    """Copy threads from ``source`` to ``target``, every namespace, checkpoint and pending write.

    Parameters
    ----------
    source:
        Any LangGraph saver: LangGraph's ``SqliteSaver``, ``PostgresSaver`` or
        ``InMemorySaver``, a third-party one, or one of snapstate's. It is only read, through
        its sync API (``list``); an async saver's sync methods work from a thread other than
        its event loop's.
    target:
        The saver to write to, usually one of snapstate's (through ``put`` and
        ``put_writes``). For a SQLite file or a PostgreSQL schema that LangGraph's savers
        already use, snapstate's ``setup()`` refuses: import into a new file or schema.
    thread_ids:
        The threads to copy; all of the source's by default (see :func:`source_threads`).
    verify:
        Read every imported checkpoint back from the target and compare it with the source's:
        values, versions, metadata, parent and pending writes. A difference raises
        :class:`ImportMismatchError` naming the thread, checkpoint and field.
    progress:
        Called with ``Progress("import", done, total)`` after each thread.

    Each thread is read whole, then written oldest checkpoint first, so that snapstate stores
    a growing message list as what each step appended. Only the channels whose version differs
    from the parent's are written with a checkpoint, as a graph does. Thread ids, checkpoint ids,
    timestamps, parents and metadata are kept; a task's pending writes keep their order and
    their task id (their task path, which LangGraph does not return, is a number giving the
    source's order). Checkpoints the target already holds are skipped and their pending writes
    written again, which changes nothing, so an interrupted import can simply be run again.

    A channel keeps one value per version, the first met, as savers that store values by
    version do (LangGraph's SQLite saver stores whole states, whose copies of one version of a
    join barrier can differ).

    Checkpoints saved by LangGraph before its checkpoint format 4 get their pending sends in
    the ``__pregel_tasks`` channel, the way LangGraph's Postgres saver and graph runtime move
    them when they load such a checkpoint; LangGraph's SQLite saver leaves that to the graph.
    """
    if not isinstance(source, BaseCheckpointSaver) or not isinstance(target, BaseCheckpointSaver):
        raise InvalidArgumentError(
            "import_history() copies from one LangGraph saver to another; got "
            f"{type(source).__name__} and {type(target).__name__}"
        )
    if source is target:
        raise InvalidArgumentError("import_history() needs two different savers")
    if isinstance(thread_ids, (str, bytes)):
        raise InvalidArgumentError("thread_ids must be a sequence of thread ids, not a str")
    threads = list(source_threads(source) if thread_ids is None else thread_ids)
    totals = dict.fromkeys(("checkpoints", "skipped", "writes", "migrated", "verified"), 0)
    for done, thread_id in enumerate(threads, 1):
        for key, n in _import_thread(source, target, str(thread_id), verify).items():
            totals[key] += n
        if progress is not None:
            progress(Progress("import", done, len(threads)))
    return ImportReport(threads=len(threads), **totals)


async def aimport_history(
    source: BaseCheckpointSaver[Any],
    target: BaseCheckpointSaver[Any],
    *,
    thread_ids: Iterable[str] | None = None,
    verify: bool = True,
    progress: Callable[[Progress], None] | None = None,
) -> ImportReport:
    """:func:`import_history` from async code: it runs in a worker thread, and async savers
    (LangGraph's or snapstate's) are driven through their sync methods on the running loop."""
    return await asyncio.to_thread(
        import_history,
        source,
        target,
        thread_ids=thread_ids,
        verify=verify,
        progress=progress,
    )


def source_threads(source: BaseCheckpointSaver[Any]) -> list[str]:
    """The thread ids a saver holds, sorted.

    LangGraph's SQLite and Postgres savers are asked with one query on their tables, its
    ``InMemorySaver`` through its storage, snapstate's sync savers through their backend. Any
    other saver, or one of those whose insides are not what this expects, is listed whole
    (``list(None)``), which reads every checkpoint once.
    """
    if isinstance(source, SyncSaver):
        engine = source.checkpointer
        engine.flush()
        return sorted({t.thread_id for t in engine.ready().threads()})
    try:
        found = _langgraph_threads(source)
    except Exception:  # another release of LangGraph's savers: list them through the API
        found = None
    if found is not None:
        return sorted(found)
    return sorted({str(t.config["configurable"]["thread_id"]) for t in source.list(None)})


def _langgraph_threads(source: Any) -> set[str] | None:
    """The thread ids of LangGraph's own savers, read from their storage (None: not one)."""
    module = type(source).__module__
    if module.startswith("langgraph.checkpoint.sqlite") and isinstance(
        getattr(source, "conn", None), sqlite3.Connection
    ):
        with source.lock:
            rows = source.conn.execute("SELECT DISTINCT thread_id FROM checkpoints").fetchall()
        return {str(r[0]) for r in rows}
    if (
        module.startswith("langgraph.checkpoint.postgres")
        and not type(source).__name__.startswith("Async")  # its cursor is async
        and hasattr(source, "_cursor")
    ):
        with source._cursor() as cur:
            cur.execute("SELECT DISTINCT thread_id FROM checkpoints")
            rows = cur.fetchall()
        return {str(r["thread_id"] if isinstance(r, dict) else r[0]) for r in rows}
    if module.startswith("langgraph.checkpoint.memory") and hasattr(source, "storage"):
        return {str(t) for t in source.storage}
    return None


# -- one thread ---------------------------------------------------------------------------------


def _conf(thread_id: str, namespace: str, checkpoint_id: str | None = None) -> RunnableConfig:
    conf: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": namespace}
    if checkpoint_id is not None:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def _key(t: CheckpointTuple) -> tuple[str, str]:
    return t.config["configurable"].get("checkpoint_ns", ""), t.checkpoint["id"]


def _parent_id(t: CheckpointTuple) -> str | None:
    if t.parent_config is None:
        return None
    parent = t.parent_config["configurable"].get("checkpoint_id")
    return str(parent) if parent else None


def _import_thread(
    source: BaseCheckpointSaver[Any], target: BaseCheckpointSaver[Any], thread_id: str, verify: bool
) -> dict[str, int]:
    counts = dict.fromkeys(("checkpoints", "skipped", "writes", "migrated", "verified"), 0)
    # Namespace by namespace, oldest first (checkpoint ids sort by time): a parent before its
    # children, and a growing list's earlier versions before the versions that extend them.
    try:
        tuples = sorted(source.list({"configurable": {"thread_id": thread_id}}), key=_key)
    except SnapstateError:
        raise
    except Exception as exc:  # the source's own error, whatever it is: say where it happened
        raise StorageError(
            f"cannot read thread {thread_id!r} from the source ({type(source).__name__}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not tuples:
        return counts
    by_key = {_key(t): t for t in tuples}
    held = {_key(t) for t in target.list({"configurable": {"thread_id": thread_id}})}
    written: list[tuple[CheckpointTuple, dict[str, Any]]] = []
    encode = _encoder(target)
    lists: dict[tuple[str, str], list[Any]] = {}  # the list put last, by namespace and channel
    first: dict[tuple[str, str, Any], Any] = {}  # (namespace, channel, version) -> its value
    for t in tuples:
        namespace, checkpoint_id = _key(t)
        parent_id = _parent_id(t)
        parent = by_key.get((namespace, parent_id)) if parent_id else None
        checkpoint, migrated = _current_format(t, parent)
        counts["migrated"] += migrated
        # One value per channel version: the first met. LangGraph's SQLite saver stores the
        # whole state at every step, and LangGraph changes the barriers that join parallel
        # branches without giving them a new version, so its copies of one version can differ.
        # Savers that store a value per version (LangGraph's Postgres and in-memory savers,
        # snapstate's) keep the value the version was first stored with, and so does this.
        versions = checkpoint["channel_versions"]
        checkpoint["channel_values"] = {
            ch: value
            if versions.get(ch) is None
            else first.setdefault((namespace, ch, versions[ch]), value)
            for ch, value in checkpoint["channel_values"].items()
        }
        if (namespace, checkpoint_id) in held:
            counts["skipped"] += 1
        else:
            # A channel whose version is the parent's holds the parent's value, which the
            # target stored with the parent; a fork's parent may be missing from the source.
            before = parent.checkpoint["channel_versions"] if parent is not None else {}
            changed = {
                ch: v for ch, v in checkpoint["channel_versions"].items() if before.get(ch) != v
            }
            if migrated:
                changed[TASKS] = checkpoint["channel_versions"][TASKS]
            values = checkpoint["channel_values"]
            for ch in changed:
                value = values.get(ch)
                if type(value) is list:
                    last = lists.get((namespace, ch))
                    if last is not None:
                        values[ch] = value = _reuse(last, value, encode)
                    lists[(namespace, ch)] = value
            target.put(
                _conf(thread_id, namespace, parent_id),
                checkpoint,  # type: ignore[arg-type]
                t.metadata,
                changed,
            )
            counts["checkpoints"] += 1
        counts["writes"] += _put_writes(target, _conf(thread_id, namespace, checkpoint_id), t)
        written.append((t, checkpoint))
    _flush(target)
    if verify:
        for t, checkpoint in written:
            _verify(target, thread_id, t, checkpoint, encode)
            counts["verified"] += 1
    return counts


def _flush(target: BaseCheckpointSaver[Any]) -> None:
    """Wait until what the target queued (``durability="batched"``) has committed."""
    if isinstance(target, AsyncSaver):
        target._bridge("flush", target.flush)
    elif isinstance(target, SyncSaver):
        target.flush()


def _encoder(target: BaseCheckpointSaver[Any]) -> _Encode:
    codec = getattr(target, "codec", None)
    encode = getattr(codec, "encode", None)
    return encode if callable(encode) else None


def _reuse(last: list[Any], value: list[Any], encode: _Encode) -> list[Any]:
    """``value`` with the items it shares with ``last`` (the same list put before, read from
    the source again as new objects) replaced by ``last``'s own objects.

    snapstate stores a list that starts with the very items of the list it stored last as the
    items it appended (see snapstate._delta). A graph hands it the same objects step after
    step; a source decodes every checkpoint afresh. Items are taken as the same only when
    they would be stored as the same: equal and of the same types all the way down (``1 ==
    1.0`` is not enough), or encoded to the same bytes.
    """
    out = list(value)
    for i, (old, new) in enumerate(zip(last, value)):
        if not _alike(old, new, encode):
            break
        out[i] = old
    return out


_EXACT = frozenset((str, bytes, int, bool, type(None)))


def _alike(a: Any, b: Any, encode: _Encode) -> bool:
    if a is b:
        return True
    t = type(a)
    if t is not type(b):
        return False
    if t in _EXACT:
        return bool(a == b)
    if t is float:
        return struct.pack("<d", a) == struct.pack("<d", b)
    if t is list or t is tuple:
        return len(a) == len(b) and all(_alike(x, y, encode) for x, y in zip(a, b))
    if t is dict:
        return len(a) == len(b) and all(
            _alike(ka, kb, encode) and _alike(va, vb, encode)
            for (ka, va), (kb, vb) in zip(a.items(), b.items())
        )
    try:
        if not a == b:
            return False
    except Exception:  # a value's own __eq__ may raise (numpy arrays): let the bytes decide
        pass
    if encode is None:
        return False
    try:
        return encode(a) == encode(b)
    except Exception:  # not encodable: the put will say so
        return False


def _current_format(
    t: CheckpointTuple, parent: CheckpointTuple | None
) -> tuple[dict[str, Any], bool]:
    """The checkpoint in LangGraph's format 4: pending sends live in the ``__pregel_tasks``
    channel, not in a ``pending_sends`` field (format 1) or in the parent's pending writes
    (formats 2 and 3). Returns a shallow copy, and whether sends were moved."""
    checkpoint: dict[str, Any] = dict(t.checkpoint)
    if checkpoint.get("v", 4) >= 4 or TASKS in checkpoint["channel_values"]:
        return checkpoint, False
    sends = checkpoint.get("pending_sends")
    if not sends and parent is not None:
        sends = [value for _task, ch, value in parent.pending_writes or () if ch == TASKS]
    if not sends:
        return checkpoint, False
    checkpoint.pop("pending_sends", None)
    versions = dict(checkpoint["channel_versions"])
    version = max(versions.values()) if versions else None
    if version is None or (
        parent is not None and parent.checkpoint["channel_versions"].get(TASKS) == version
    ):
        # A version the parent's sends already have would name the parent's value.
        version = _next_version(version)
    versions[TASKS] = version
    checkpoint["channel_versions"] = versions
    checkpoint["channel_values"] = {**checkpoint["channel_values"], TASKS: list(sends)}
    return checkpoint, True


def _next_version(current: Any) -> Any:
    if isinstance(current, int):
        return current + 1
    if isinstance(current, float):
        return current + 1.0
    return next_version(current)


def _put_writes(
    target: BaseCheckpointSaver[Any], config: RunnableConfig, t: CheckpointTuple
) -> int:
    """Write a checkpoint's pending writes, task by task in the source's order.

    A task's special writes (errors, interrupts, resumes, scheduled) go in a call of their own,
    as LangGraph makes them, so they keep LangGraph's fixed indices; its other writes go in one
    call, in order.
    """
    tasks: dict[str, list[tuple[str, Any]]] = {}
    for task_id, channel, value in t.pending_writes or ():
        tasks.setdefault(task_id, []).append((channel, value))
    n = 0
    for rank, (task_id, writes) in enumerate(tasks.items()):
        path = f"{rank:08d}"
        special = [w for w in writes if w[0] in WRITES_IDX_MAP]
        plain = [w for w in writes if w[0] not in WRITES_IDX_MAP]
        for part in (special, plain):
            if part:
                target.put_writes(config, part, task_id, path)
                n += len(part)
    return n


# -- verification --------------------------------------------------------------------------------


def _verify(
    target: BaseCheckpointSaver[Any],
    thread_id: str,
    source: CheckpointTuple,
    checkpoint: dict[str, Any],
    encode: _Encode,
) -> None:
    namespace, checkpoint_id = _key(source)
    got = target.get_tuple(_conf(thread_id, namespace, checkpoint_id))
    where = f"checkpoint {checkpoint_id!r} of thread {thread_id!r}, namespace {namespace!r}"
    if got is None:
        raise ImportMismatchError(f"{where} is missing from the target after the import")
    mine = dict(got.checkpoint)
    for key in ("channel_values", "channel_versions", "versions_seen"):
        _same(where, key, checkpoint[key], mine.get(key), encode)
    for key in sorted(set(checkpoint) - {"channel_values", "channel_versions", "versions_seen"}):
        _same(where, f"checkpoint[{key!r}]", checkpoint[key], mine.get(key), encode)
    # As LangGraph's savers store metadata today: without the "writes" older releases recorded.
    expected = get_serializable_checkpoint_metadata({}, source.metadata)
    _same(where, "metadata", dict(expected), dict(got.metadata), encode)
    _same(where, "parent", _parent_id(source), _parent_id(got), encode)
    _same(where, "pending writes", _writes(source), _writes(got), encode)


def _writes(t: CheckpointTuple) -> list[tuple[str, str, Any]]:
    return [tuple(w) for w in t.pending_writes or ()]  # type: ignore[misc]


def _same(where: str, what: str, expected: Any, got: Any, encode: _Encode) -> None:
    if _equal(expected, got, encode):
        return
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in sorted(set(expected) | set(got), key=str):
            if key not in got or key not in expected or not _equal(expected[key], got[key], encode):
                what = f"{what}[{key!r}]"
                expected, got = expected.get(key, "<absent>"), got.get(key, "<absent>")
                break
    raise ImportMismatchError(
        f"{where}: {what} differs after the import: the source has {expected!r:.200}, "
        f"the target {got!r:.200}"
    )


def _equal(a: Any, b: Any, encode: _Encode) -> bool:
    """Equal, or, for values whose ``==`` says nothing (no ``__eq__``, numpy arrays), encoded
    to the same bytes."""
    try:
        if a == b:
            return True
    except Exception:  # a value's own __eq__ may raise (numpy arrays)
        pass
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k], encode) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y, encode) for x, y in zip(a, b))
    if encode is None:
        return False
    try:
        return bool(encode(a) == encode(b))
    except Exception:  # not encodable: then not shown equal
        return False
