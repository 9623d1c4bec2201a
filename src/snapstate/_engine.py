"""The framework-agnostic engine: what to store for a checkpoint, and how to read it back.

The engine turns a :class:`~snapstate.Checkpoint` into rows (a checkpoint row, one blob per
changed channel, write rows) and rows back into a :class:`~snapstate.Snapshot`. It decides *what*
is stored: only channels that changed are encoded again, and list channels that grew by appending
store only the appended items (see :mod:`snapstate._delta`). Storage is the backend's business,
batching the writer's, bytes the codec's.

:class:`Checkpointer` is the synchronous engine and :class:`AsyncCheckpointer` its asyncio twin.
Both share every decision through :class:`_Planner`; only the calls to the backend differ.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections import OrderedDict
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, Literal

import msgspec

from . import _delta
from ._model import Checkpoint, PendingWrite, Snapshot, Version
from ._once import OncePerObject
from .backends._async import AsyncBackend, as_async_backend
from .backends._base import (
    BLOB_DELTA,
    BLOB_EMPTY,
    BLOB_FULL,
    UPGRADED_SEP,
    Backend,
    BlobRef,
    BlobRow,
    CheckpointRow,
    ListQuery,
    TableStats,
    WriteBatch,
    WriteRow,
    validate_filter,
    version_key,
)
from .codec import Codec, default_codec
from .errors import (
    ConfigurationError,
    DecodeError,
    EncodeError,
    InvalidArgumentError,
    StateVersionError,
)
from .upgrades import StateUpgrades
from .writer import AsyncWriter, Durability, Writer, make_async_writer, make_writer

__all__ = ["Checkpointer", "AsyncCheckpointer", "RetentionReport", "Progress"]

#: How many checkpoint rows ``list`` resolves together: their blobs and writes are fetched in one
#: call per (thread, namespace) and decoded once. Larger pages mean fewer round trips but more
#: memory held between yields.
LIST_PAGE_SIZE = 64

#: Decoded channel values kept while one ``list`` call walks a history. Consecutive checkpoints
#: mostly share versions, so a small cache avoids decoding the same blob again.
LIST_CACHE_ENTRIES = 512

#: Rows deleted per retention transaction. Small enough that a delete holds SQLite's write lock
#: for milliseconds, so live writers wait at most one chunk (their busy timeout is seconds).
RETENTION_CHUNK = 500

_SKELETON_FORMAT = 1


class RetentionReport(msgspec.Struct):
    """What a retention run deleted (or, with ``dry_run``, would delete)."""

    dry_run: bool = False
    threads_scanned: int = 0
    threads_deleted: int = 0
    checkpoints_deleted: int = 0
    blobs_deleted: int = 0
    """Values gone (with ``dry_run``: that would go). A backend may leave some for a later run
    (PostgreSQL does while a write of the thread is in progress)."""
    bytes_reclaimed: int = 0


class Progress(msgspec.Struct, frozen=True):
    """Reported to a ``progress`` callback during long operations."""

    phase: str
    done: int
    total: int


class _Skeleton(msgspec.Struct, array_like=True):
    """Everything of a checkpoint but its values. Appending fields needs defaults."""

    ts: str
    versions: dict[str, Version]
    seen: dict[str, dict[str, Version]]
    extra: dict[str, Any] = {}
    state: int = 0
    """The application's state version when saved (see snapstate.upgrades)."""


_skeleton_encoder = msgspec.msgpack.Encoder()
_skeleton_decoder = msgspec.msgpack.Decoder(_Skeleton)
_metadata_decoder = msgspec.json.Decoder(dict[str, Any])


def _where(thread_id: str, namespace: str, checkpoint_id: str | None = None) -> str:
    text = f"thread {thread_id!r}, namespace {namespace!r}"
    if checkpoint_id is not None:
        text = f"checkpoint {checkpoint_id!r} ({text})"
    return text


def _check_id(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name} must be a str, got {type(value).__name__}")
    if name == "thread_id" and not value:
        raise InvalidArgumentError("thread_id must not be empty")
    return value


#: Large immutable values whose encoding is kept for reuse, and the size from which a value
#: counts as large. LangGraph hands the same object to ``put_writes`` (the node's write) and to
#: the next ``put`` (the channel's new value); a 1 MB value was encoded and compressed twice per
#: step before this (benchmarks/bench_agent.py, BigValue).
REUSE_ENTRIES = 8
REUSE_MIN_BYTES = 64 * 1024


class _ReusingEncoder:
    """Encodes through a codec, reusing the bytes of recently encoded large immutable values.

    Only ``bytes`` and ``str`` qualify: they cannot change after being encoded, so the same
    object always encodes to the same bytes. LangGraph may call put_writes and the next put at
    the same time from two threads (durability="sync"): the second waits for the first's bytes
    instead of encoding the value again (see snapstate._once).
    """

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self._encoded: OncePerObject[bytes] = OncePerObject(REUSE_ENTRIES)

    def encode(self, value: Any, *, where: str = "") -> bytes:
        if type(value) not in (bytes, str) or len(value) < REUSE_MIN_BYTES:
            return self.codec.encode(value, where=where)
        return self._encoded.get(value, lambda: self.codec.encode(value, where=where))


class _Planner:
    """The decisions both engines share: rows out of checkpoints, snapshots out of rows."""

    def __init__(
        self, codec: Codec, delta: _delta.DeltaPolicy, upgrades: StateUpgrades | None = None
    ) -> None:
        if upgrades is not None and not isinstance(upgrades, StateUpgrades):
            raise ConfigurationError(
                "upgrades must be a snapstate.upgrades.StateUpgrades, "
                f"got {type(upgrades).__name__}"
            )
        self.codec = codec
        self.encoder = _ReusingEncoder(codec)
        self.delta = delta
        self.upgrades = upgrades
        self.state = upgrades.version if upgrades is not None else 0
        self._suffix = f"{UPGRADED_SEP}s{self.state}"

    # -- write side ----------------------------------------------------------------------------

    def put(
        self,
        checkpoint: Checkpoint,
        *,
        thread_id: str,
        namespace: str,
        parent_id: str | None,
        metadata: Mapping[str, Any] | None,
        changed: Mapping[str, Version] | Collection[str] | None,
    ) -> WriteBatch:
        _check_id("thread_id", thread_id)
        _check_id("namespace", namespace)
        if not isinstance(checkpoint, Checkpoint):
            raise InvalidArgumentError(
                f"checkpoint must be a snapstate.Checkpoint, got {type(checkpoint).__name__}"
            )
        cid = _check_id("checkpoint id", checkpoint.id)
        if not cid:
            raise InvalidArgumentError(
                f"checkpoint id must not be empty ({_where(thread_id, namespace)})"
            )
        where = _where(thread_id, namespace, cid)
        meta = dict(metadata or {})
        try:
            meta_bytes = msgspec.json.encode(meta)
        except (TypeError, msgspec.EncodeError) as exc:
            bad = _first_non_json_key(meta)
            raise EncodeError(
                f"metadata of {where} is not JSON: key {bad!r}: {exc}"
                if bad
                else f"metadata of {where} is not JSON: {exc}"
            ) from None
        try:
            skeleton = b"%c" % _SKELETON_FORMAT + _skeleton_encoder.encode(
                _Skeleton(
                    checkpoint.ts,
                    checkpoint.channel_versions,
                    checkpoint.versions_seen,
                    checkpoint.extra,
                    self.state,
                )
            )
        except (TypeError, msgspec.EncodeError) as exc:
            raise EncodeError(
                f"versions or extra fields of {where} cannot be stored: {exc}"
            ) from None

        if changed is None:
            changed_versions: Mapping[str, Version] = checkpoint.channel_versions
        elif isinstance(changed, Mapping):
            changed_versions = changed
        else:
            changed_versions = {}
            for channel in changed:
                if channel not in checkpoint.channel_versions:
                    raise InvalidArgumentError(
                        f"changed channel {channel!r} has no version in {where}"
                    )
                changed_versions[channel] = checkpoint.channel_versions[channel]

        blobs = []
        values = checkpoint.channel_values
        for channel, version in changed_versions.items():
            vkey = version_key(version)
            if channel in values:
                kind, base, data = self.delta.encode(
                    self.encoder,
                    thread_id,
                    namespace,
                    channel,
                    vkey,
                    values[channel],
                    f"channel {channel!r} of {where}",
                )
            else:
                kind, base, data = BLOB_EMPTY, None, b""
            blobs.append(BlobRow(thread_id, namespace, channel, vkey, kind, base, data))

        run_id = meta.get("run_id")
        row = CheckpointRow(
            thread_id=thread_id,
            namespace=namespace,
            checkpoint_id=cid,
            parent_id=parent_id,
            run_id=run_id if isinstance(run_id, str) else None,
            created_at=time.time(),
            metadata=meta_bytes,
            skeleton=skeleton,
        )
        batch = WriteBatch(checkpoints=[row], blobs=blobs)
        if any(b.kind == BLOB_DELTA for b in blobs):
            batch.replan = functools.partial(self._whole, row, blobs, values, where)
        return batch

    def _whole(
        self, row: CheckpointRow, blobs: list[BlobRow], values: Mapping[str, Any], where: str
    ) -> WriteBatch:
        """A put's batch again, its append-deltas encoded as whole values: the backend refused
        one (retention in another process deleted its base). What this process remembers of
        the thread's lists goes first."""
        self.delta.forget(row.thread_id)
        whole = []
        for b in blobs:
            if b.kind == BLOB_DELTA:
                kind, base, data = self.delta.encode(
                    self.encoder,
                    b.thread_id,
                    b.namespace,
                    b.channel,
                    b.version,
                    values[b.channel],
                    f"channel {b.channel!r} of {where}",
                )
                b = BlobRow(b.thread_id, b.namespace, b.channel, b.version, kind, base, data)
            whole.append(b)
        return WriteBatch(checkpoints=[row], blobs=whole)

    def put_writes(
        self,
        writes: Sequence[tuple[str, Any]],
        *,
        thread_id: str,
        namespace: str,
        checkpoint_id: str,
        task_id: str,
        task_path: str,
        indices: Sequence[int] | None,
        replace: bool,
    ) -> WriteBatch:
        _check_id("thread_id", thread_id)
        _check_id("namespace", namespace)
        _check_id("checkpoint_id", checkpoint_id)
        _check_id("task_id", task_id)
        if indices is not None and len(indices) != len(writes):
            raise InvalidArgumentError(
                f"put_writes got {len(writes)} writes but {len(indices)} indices"
            )
        where = _where(thread_id, namespace, checkpoint_id)
        rows = []
        for i, item in enumerate(writes):
            try:
                channel, value = item
            except (TypeError, ValueError):
                raise InvalidArgumentError(
                    f"write {i} of task {task_id!r} on {where} is not a (channel, value) pair"
                ) from None
            _check_id("channel", channel)
            data = self.encoder.encode(
                value, where=f"write {i} to channel {channel!r} by task {task_id!r} on {where}"
            )
            idx = i if indices is None else indices[i]
            rows.append(
                WriteRow(
                    thread_id, namespace, checkpoint_id, task_id, idx, channel, task_path, data
                )
            )
        if replace:
            return WriteBatch(replace_writes=rows)
        return WriteBatch(writes=rows)

    def write_failed(self, batch: WriteBatch) -> None:
        """A batch did not commit: later deltas must not name its blobs as their base."""
        for thread_id in {b.thread_id for b in batch.blobs}:
            self.delta.forget(thread_id)

    # -- read side -----------------------------------------------------------------------------

    def skeleton(self, row: CheckpointRow) -> _Skeleton:
        data = row.skeleton
        if not data or data[0] != _SKELETON_FORMAT:
            raise DecodeError(
                f"checkpoint skeleton of {_where(row.thread_id, row.namespace, row.checkpoint_id)} "
                f"has unknown format {data[:1].hex() or 'empty'}"
            )
        try:
            return _skeleton_decoder.decode(memoryview(data)[1:])
        except msgspec.DecodeError as exc:
            raise DecodeError(
                f"corrupt checkpoint skeleton of "
                f"{_where(row.thread_id, row.namespace, row.checkpoint_id)}: {exc}"
            ) from None

    def keys(self, skel: _Skeleton) -> list[tuple[str, str]]:
        """The blob keys a checkpoint reads: its versions, and for a checkpoint saved under the
        current state version, the upgraded copies of them that may exist."""
        keys = [(channel, version_key(v)) for channel, v in skel.versions.items()]
        if self.state and skel.state == self.state:
            keys += [(c, v + self._suffix) for c, v in keys]
        return keys

    def absent(self, skel: _Skeleton, have: Mapping[tuple[str, str], BlobRow]) -> bool:
        """Whether a channel version ``skel`` names has no blob in ``have``: its caller never
        declared it changed, or retention deleted the checkpoint after its row was read."""
        for channel, version in skel.versions.items():
            key = version_key(version)
            if (channel, key) not in have and (channel, key + self._suffix) not in have:
                return True
        return False

    def missing_keys(
        self, wanted: Iterable[tuple[str, str]], have: Mapping[tuple[str, str], BlobRow]
    ) -> list[tuple[str, str]]:
        """Keys still to fetch: wanted blobs not yet loaded, and bases of loaded deltas."""
        out: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        stack = list(wanted)
        while stack:
            key = stack.pop()
            if key in seen:
                continue
            seen.add(key)
            row = have.get(key)
            if row is None:
                out.append(key)
            elif row.kind == BLOB_DELTA and row.base is not None:
                stack.append((key[0], row.base))
        return out

    def value(
        self,
        key: tuple[str, str],
        have: Mapping[tuple[str, str], BlobRow],
        cache: _ValueCache,
        where: str,
    ) -> Any:
        """The decoded value of a blob, following delta bases. ``_EMPTY`` for empty blobs."""
        cached = cache.get(key, _MISSING)
        if cached is not _MISSING:
            return cached
        # Walk down to a keyframe (or a cached version) iteratively: chains can be long.
        chain: list[BlobRow] = []
        cur = key
        base_value: Any = _MISSING
        while True:
            row = have.get(cur)
            if row is None:
                raise DecodeError(
                    f"blob {cur[0]!r} version {cur[1]!r} of {where} is missing: it is the base of "
                    f"an append-delta of version {key[1]!r}"
                )
            if row.kind != BLOB_DELTA:
                break
            chain.append(row)
            if row.base is None:
                raise DecodeError(f"append-delta {cur!r} of {where} has no base")
            cur = (cur[0], row.base)
            base_value = cache.get(cur, _MISSING)
            if base_value is not _MISSING:
                break
        if base_value is _MISSING:
            row = have[cur]
            if row.kind == BLOB_EMPTY:
                base_value = _EMPTY
            elif row.kind == BLOB_FULL:
                base_value = self.codec.decode(
                    row.data, where=f"channel {cur[0]!r} version {cur[1]!r} of {where}"
                )
            else:
                raise DecodeError(f"blob {cur!r} of {where} has unknown kind {row.kind}")
            cache.put(cur, base_value)
        value = base_value
        for row in reversed(chain):
            value = _delta.apply(
                value,
                self.codec.decode(
                    row.data, where=f"channel {row.channel!r} version {row.version!r} of {where}"
                ),
                f"channel {row.channel!r} version {row.version!r} of {where}",
            )
            cache.put((row.channel, row.version), value)
        return value

    def snapshot(
        self,
        row: CheckpointRow,
        skel: _Skeleton,
        have: Mapping[tuple[str, str], BlobRow],
        writes: Iterable[WriteRow],
        cache: _ValueCache,
    ) -> Snapshot:
        where = _where(row.thread_id, row.namespace, row.checkpoint_id)
        values: dict[str, Any] = {}
        upgraded = bool(self.state) and skel.state == self.state
        for channel, version in skel.versions.items():
            key = (channel, version_key(version))
            if upgraded and (channel, key[1] + self._suffix) in have:
                key = (channel, key[1] + self._suffix)
            if key not in have:
                # A version with no blob: the caller never declared it changed. Like upstream
                # savers, such a channel reads as absent.
                continue
            value = self.value(key, have, cache, where)
            if value is not _EMPTY:
                values[channel] = value
        pending = sorted(writes, key=lambda w: (w.task_path, w.task_id, w.idx))
        try:
            metadata = _metadata_decoder.decode(row.metadata)
        except msgspec.DecodeError as exc:
            raise DecodeError(f"corrupt metadata of {where}: {exc}") from None
        return Snapshot(
            thread_id=row.thread_id,
            namespace=row.namespace,
            checkpoint=Checkpoint(
                id=row.checkpoint_id,
                channel_values=values,
                channel_versions=skel.versions,
                versions_seen=skel.seen,
                ts=skel.ts,
                extra=skel.extra,
            ),
            metadata=metadata,
            parent_id=row.parent_id,
            pending_writes=[
                PendingWrite(
                    w.task_id,
                    w.channel,
                    self.codec.decode(
                        w.data,
                        where=f"write {w.idx} to channel {w.channel!r} by task {w.task_id!r} "
                        f"on {where}",
                    ),
                    w.task_path,
                    w.idx,
                )
                for w in pending
            ],
            created_at=row.created_at,
        )

    def query(
        self,
        thread_id: str | None,
        namespace: str | None,
        checkpoint_id: str | None,
        filter: Mapping[str, Any] | None,
        before: str | None,
        limit: int | None,
    ) -> ListQuery:
        if thread_id is not None:
            _check_id("thread_id", thread_id)
        if namespace is not None:
            _check_id("namespace", namespace)
        if checkpoint_id is not None:
            _check_id("checkpoint_id", checkpoint_id)
        if before is not None:
            _check_id("before", before)
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 0
        ):
            raise InvalidArgumentError(f"limit must be a non-negative int, got {limit!r}")
        return ListQuery(
            thread_id=thread_id,
            namespace=namespace,
            checkpoint_id=checkpoint_id,
            before=before,
            limit=limit,
            filter=validate_filter(filter),
        )

    def upgrade(self, snap: Snapshot, skel: _Skeleton) -> tuple[Snapshot, list[BlobRow]]:
        """Bring a snapshot saved under an older state version up to date.

        Returns the upgraded snapshot and the blobs to store so that later checkpoints, which
        name the same channel versions, read the upgraded values: one per channel whose value
        or version the upgrade changed, keyed ``<version>\x1fs<state>``.
        """
        if self.upgrades is None or skel.state == self.state:
            if skel.state > self.state:
                raise StateVersionError(
                    f"checkpoint {snap.checkpoint.id!r} (thread {snap.thread_id!r}, namespace "
                    f"{snap.namespace!r}) was saved under state version {skel.state}, newer "
                    f"than this code's {self.state}",
                    hint="run the newer code, or configure StateUpgrades up to that version",
                )
            return snap, []
        before = snap.checkpoint
        after = self.upgrades.apply(snap, skel.state)
        blobs = []
        where = _where(snap.thread_id, snap.namespace, snap.checkpoint.id)
        for channel, value in after.checkpoint.channel_values.items():
            version = after.checkpoint.channel_versions.get(channel)
            if version is None:
                raise StateVersionError(
                    f"the upgrade of {where} gave channel {channel!r} a value but no version",
                    hint="use snapstate.upgrades.add_channel or rename_channel",
                )
            if (
                channel in before.channel_values
                and before.channel_values[channel] is value
                and before.channel_versions.get(channel) == version
            ):
                continue
            blobs.append(
                BlobRow(
                    snap.thread_id,
                    snap.namespace,
                    channel,
                    version_key(version) + self._suffix,
                    BLOB_FULL,
                    None,
                    self.codec.encode(value, where=f"upgraded channel {channel!r} of {where}"),
                )
            )
        return after, blobs

    def rewritten(self, row: CheckpointRow, snap: Snapshot) -> WriteBatch:
        """The rows that store an upgraded snapshot over its old checkpoint row."""
        cp = snap.checkpoint
        skeleton = b"%c" % _SKELETON_FORMAT + _skeleton_encoder.encode(
            _Skeleton(cp.ts, cp.channel_versions, cp.versions_seen, cp.extra, self.state)
        )
        new_row = msgspec.structs.replace(
            row, metadata=msgspec.json.encode(snap.metadata), skeleton=skeleton
        )
        writes = [
            WriteRow(
                row.thread_id,
                row.namespace,
                row.checkpoint_id,
                w.task_id,
                w.idx,
                w.channel,
                w.task_path,
                self.codec.encode(w.value, where=f"write {w.idx} of task {w.task_id!r}"),
            )
            for w in snap.pending_writes
        ]
        return WriteBatch(checkpoints=[new_row], replace_writes=writes)

    # -- retention -----------------------------------------------------------------------------

    def doomed(
        self,
        rows: Sequence[CheckpointRow],
        index: Sequence[BlobRef],
        keep: Callable[[CheckpointRow], bool],
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
        """Which checkpoints and blobs go when only the rows ``keep`` accepts stay.

        A blob stays when a kept checkpoint names it or it is the base (directly or through a
        chain) of an append-delta a kept checkpoint names. ``index`` must have been read
        *before* ``rows``: a checkpoint committed in between then only names blobs that are
        either in ``rows``' reach or absent from ``index`` (and so untouched).
        """
        kept = [r for r in rows if keep(r)]
        gone = [(r.namespace, r.checkpoint_id) for r in rows if not keep(r)]
        # With no checkpoint to delete, blobs may still go: those a run killed after deleting
        # their checkpoints left behind, which no checkpoint reaches.
        bases = {(b.namespace, b.channel, b.version): b.base for b in index}
        reach: set[tuple[str, str, str]] = set()
        for r in kept:
            for channel, vkey in self.keys(self.skeleton(r)):
                key: tuple[str, str, str] | None = (r.namespace, channel, vkey)
                while key is not None and key not in reach:
                    reach.add(key)
                    base = bases.get(key)
                    key = (key[0], key[1], base) if base is not None else None
        blobs = [
            k
            for k in bases
            if k not in reach and (k[0], k[1], k[2].split(UPGRADED_SEP, 1)[0]) not in reach
        ]
        return gone, blobs

    @staticmethod
    def run_ids(run_ids: Sequence[str]) -> set[str]:
        if isinstance(run_ids, str) or not all(isinstance(r, str) for r in run_ids):
            raise InvalidArgumentError("run_ids must be a sequence of str (not a single str)")
        return set(run_ids)

    @staticmethod
    def prune_args(thread_ids: Sequence[str], strategy: str) -> list[str]:
        if isinstance(thread_ids, str) or not all(isinstance(t, str) for t in thread_ids):
            raise InvalidArgumentError("thread_ids must be a sequence of str (not a single str)")
        if strategy not in ("keep_latest", "delete", "delete_all"):
            raise InvalidArgumentError(
                f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'"
            )
        return list(thread_ids)


def _newest_per_namespace(rows: Iterable[CheckpointRow], n: int) -> set[tuple[str, str]]:
    by_ns: dict[str, list[str]] = {}
    for r in rows:
        by_ns.setdefault(r.namespace, []).append(r.checkpoint_id)
    return {(ns, cid) for ns, cids in by_ns.items() for cid in sorted(cids, reverse=True)[:n]}


def _check_retention(keep_last: int | None, idle_for: float | None, chunk: int) -> None:
    if keep_last is None and idle_for is None:
        raise InvalidArgumentError("retain needs a policy: keep_last=N and/or idle_for=seconds")
    if keep_last is not None and (
        not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 1
    ):
        raise InvalidArgumentError(f"keep_last must be an int >= 1, got {keep_last!r}")
    if idle_for is not None and (
        not isinstance(idle_for, (int, float)) or isinstance(idle_for, bool) or idle_for <= 0
    ):
        raise InvalidArgumentError(f"idle_for must be seconds > 0, got {idle_for!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise InvalidArgumentError(f"chunk must be an int >= 1, got {chunk!r}")


#: Whether retention keeps a checkpoint row.
_Keep = Callable[[CheckpointRow], bool]

#: Given a thread's checkpoint rows, the namespaces to delete whole (see Checkpointer.prune).
DropNamespaces = Callable[[Sequence[CheckpointRow]], Collection[str]]


def _keeper(
    rows: Sequence[CheckpointRow],
    keep: _Keep | int | None,
    drop: DropNamespaces | None = None,
) -> _Keep:
    """``keep`` as a predicate: a callable as is, N = the newest N per namespace, None = 1;
    with ``drop``, none of the namespaces it names in ``rows``."""
    if callable(keep):
        return keep
    kept = _newest_per_namespace(rows, 1 if keep is None else keep)
    if drop is not None:
        dropped = set(drop(rows))
        kept = {k for k in kept if k[0] not in dropped}
    return lambda r: (r.namespace, r.checkpoint_id) in kept


def _first_non_json_key(meta: Mapping[str, Any]) -> str | None:
    for key, value in meta.items():
        try:
            msgspec.json.encode({key: value})
        except (TypeError, msgspec.EncodeError):
            return str(key)
    return None


_MISSING: Any = object()


class _EmptyType:
    def __repr__(self) -> str:
        return "<empty>"


_EMPTY: Any = _EmptyType()


class _ValueCache:
    """A small LRU of decoded channel values keyed by (channel, version)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def get(self, key: tuple[str, str], default: Any) -> Any:
        value = self._data.get(key, default)
        if value is not default:
            self._data.move_to_end(key)
        return value

    def put(self, key: tuple[str, str], value: Any) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self.size:
            self._data.popitem(last=False)


def _pages(rows: Iterable[CheckpointRow], size: int) -> Iterator[list[CheckpointRow]]:
    it = iter(rows)
    while page := list(itertools.islice(it, size)):
        yield page


def _group(page: list[CheckpointRow]) -> dict[tuple[str, str], list[CheckpointRow]]:
    groups: dict[tuple[str, str], list[CheckpointRow]] = {}
    for row in page:
        groups.setdefault((row.thread_id, row.namespace), []).append(row)
    return groups


def _resolve_backend(backend: Backend | str | os.PathLike[str]) -> Backend:
    if isinstance(backend, Backend):
        return backend
    if isinstance(backend, (str, os.PathLike)):
        from .backends import open_backend

        return open_backend(backend)
    raise InvalidArgumentError(
        f"backend must be a snapstate Backend, a URL or a path, got {type(backend).__name__}"
    )


class Checkpointer:
    """Saves and loads checkpoints of graph executions. Synchronous and thread-safe.

    Parameters
    ----------
    backend:
        A :class:`snapstate.backends.Backend`, or a URL: ``"memory://"``, ``"sqlite:///path.db"``,
        a plain file path (SQLite), or ``"postgresql://..."``.
    codec:
        The value codec; defaults to :data:`snapstate.codec.default_codec`.
    durability:
        ``"sync"`` (default): :meth:`put` returns once its transaction has committed.
        ``"batched"``: :meth:`put` returns once queued; queued items commit together within a
        bounded delay; reads of a thread, :meth:`flush` and :meth:`close` wait for them.
    delta_keyframe_every:
        For list channels that grow by appending, store a full copy every this many versions and
        only the appended items in between. ``0`` turns append-deltas off.
    upgrades:
        A :class:`snapstate.upgrades.StateUpgrades`: the application's state version and the
        steps that upgrade checkpoints saved under older ones when they are read.
    auto_setup:
        Create or upgrade the schema on first use.

    Examples
    --------
    >>> from snapstate import Checkpointer, Checkpoint
    >>> with Checkpointer("memory://") as cp:
    ...     cp.put(Checkpoint(id="1", channel_values={"x": 1}, channel_versions={"x": 1}),
    ...            thread_id="t")
    ...     cp.get("t").checkpoint.channel_values
    {'x': 1}
    """

    def __init__(
        self,
        backend: Backend | str | os.PathLike[str],
        *,
        codec: Codec | None = None,
        durability: Durability = "sync",
        delta_keyframe_every: int = _delta.DEFAULT_KEYFRAME_EVERY,
        upgrades: StateUpgrades | None = None,
        auto_setup: bool = True,
        **writer_options: Any,
    ) -> None:
        self.backend = _resolve_backend(backend)
        self.codec = codec or default_codec
        self._plan = _Planner(self.codec, _delta.DeltaPolicy(delta_keyframe_every), upgrades)
        self._writer: Writer = make_writer(
            self.backend, durability, self._plan.write_failed, **writer_options
        )
        self._auto_setup = auto_setup
        self._ready = False

    @property
    def durability(self) -> Durability:
        """The durability mode this checkpointer was made with."""
        return self._writer.durability

    def setup(self) -> None:
        """Create or upgrade the backend's schema; done on first use unless ``auto_setup=False``."""
        self.backend.setup()
        self._ready = True

    def _ensure(self) -> None:
        if not self._ready and self._auto_setup:
            self.setup()

    def ready(self) -> Backend:
        """The backend, with its schema set up first as any call does (unless
        ``auto_setup=False``): for reading its rows directly."""
        self._ensure()
        return self.backend

    # -- writing -------------------------------------------------------------------------------

    def put(
        self,
        checkpoint: Checkpoint,
        *,
        thread_id: str,
        namespace: str = "",
        parent_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        changed: Mapping[str, Version] | Collection[str] | None = None,
    ) -> None:
        """Store a checkpoint.

        Only channels named in ``changed`` (a collection of names, or a mapping of name to new
        version) are encoded and stored; other channels are reached through the versions of
        earlier checkpoints. ``None`` stores every channel. A changed channel missing from
        ``channel_values`` is stored as empty.

        Raises
        ------
        EncodeError
            A value or the metadata cannot be encoded; the message names the channel and path.
        InvalidArgumentError
            Malformed ids or arguments.
        """
        self._ensure()
        batch = self._plan.put(
            checkpoint,
            thread_id=thread_id,
            namespace=namespace,
            parent_id=parent_id,
            metadata=metadata,
            changed=changed,
        )
        self._writer.submit(batch)

    def put_writes(
        self,
        writes: Sequence[tuple[str, Any]],
        *,
        thread_id: str,
        checkpoint_id: str,
        task_id: str,
        namespace: str = "",
        task_path: str = "",
        indices: Sequence[int] | None = None,
        replace: bool = False,
    ) -> None:
        """Store a task's pending writes against a checkpoint (which need not exist yet).

        Each write is keyed by ``(task_id, index)``; ``indices`` default to positions. A write
        whose key exists is ignored (retries are harmless) unless ``replace`` is true.
        """
        self._ensure()
        batch = self._plan.put_writes(
            writes,
            thread_id=thread_id,
            namespace=namespace,
            checkpoint_id=checkpoint_id,
            task_id=task_id,
            task_path=task_path,
            indices=indices,
            replace=replace,
        )
        self._writer.submit(batch)

    def flush(self) -> None:
        """Wait until everything queued has committed (a no-op in ``sync`` mode)."""
        self._writer.flush()

    # -- reading -------------------------------------------------------------------------------

    def get(
        self, thread_id: str, namespace: str = "", checkpoint_id: str | None = None
    ) -> Snapshot | None:
        """The checkpoint with that id, else the latest in the thread's namespace; or None."""
        self._ensure()
        _check_id("thread_id", thread_id)
        _check_id("namespace", namespace)
        if checkpoint_id is not None:
            _check_id("checkpoint_id", checkpoint_id)
        self._writer.sync_thread(thread_id)
        while True:  # again only when retention elsewhere deleted the checkpoint just read
            loaded = self.backend.load(thread_id, namespace, checkpoint_id)
            if loaded is None:
                return None
            row, blobs, writes = loaded
            skel = self._plan.skeleton(row)
            have = {(b.channel, b.version): b for b in blobs}
            self._fetch(row.thread_id, row.namespace, self._plan.keys(skel), have)
            whole = self._whole(row, skel, have, writes, _ValueCache(LIST_CACHE_ENTRIES))
            if whole is not None:
                break
            if checkpoint_id is not None:
                return None
        snap, blobs = self._plan.upgrade(whole, skel)
        if blobs:
            self.backend.write(WriteBatch(blobs=blobs))
        return snap

    def _whole(
        self,
        row: CheckpointRow,
        skel: _Skeleton,
        have: Mapping[tuple[str, str], BlobRow],
        writes: Sequence[WriteRow],
        cache: _ValueCache,
        *,
        writes_apart: bool = False,
    ) -> Snapshot | None:
        """The snapshot of ``row``; None when the checkpoint is gone: retention (in another
        process, say) deleted it, and then values only it reached, after its row was read.
        Retention deletes a checkpoint before its values, so a value missing from a checkpoint
        still stored is one it never had. ``writes_apart``: ``writes`` were read apart from the
        row, so none coming back may also mean that the checkpoint went with them."""
        try:
            snap = self._plan.snapshot(row, skel, have, writes, cache)
        except DecodeError:
            if self._stored(row):
                raise
            return None
        doubt = self._plan.absent(skel, have) or (writes_apart and not writes)
        if doubt and not self._stored(row):
            return None
        return snap

    def _stored(self, row: CheckpointRow) -> bool:
        return (
            self.backend.get_checkpoint(row.thread_id, row.namespace, row.checkpoint_id) is not None
        )

    def _fetch(
        self,
        thread_id: str,
        namespace: str,
        wanted: Iterable[tuple[str, str]],
        have: dict[tuple[str, str], BlobRow],
    ) -> None:
        wanted = list(wanted)
        asked: set[tuple[str, str]] = set()
        # Loops once per level of append-delta bases a backend did not return up front.
        while missing := [k for k in self._plan.missing_keys(wanted, have) if k not in asked]:
            asked.update(missing)
            for b in self.backend.get_blobs(thread_id, namespace, missing):
                have.setdefault((b.channel, b.version), b)

    def list(
        self,
        thread_id: str | None = None,
        *,
        namespace: str | None = None,
        checkpoint_id: str | None = None,
        filter: Mapping[str, Any] | None = None,
        before: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Snapshot]:
        """Checkpoints, newest id first.

        ``thread_id=None`` lists every thread; ``namespace=None`` every namespace. ``filter``
        keeps checkpoints whose metadata has each key equal to the given JSON value. ``before``
        keeps ids lower than it. Values decoded once are shared by the snapshots of one call.
        """
        self._ensure()
        query = self._plan.query(thread_id, namespace, checkpoint_id, filter, before, limit)
        if thread_id is None:
            self._writer.flush()
        else:
            self._writer.sync_thread(thread_id)
        caches: dict[tuple[str, str], _ValueCache] = {}
        for page in _pages(self.backend.list_checkpoints(query), LIST_PAGE_SIZE):
            done: dict[int, Snapshot] = {}
            upgraded = WriteBatch()
            for (tid, ns), rows in _group(page).items():
                skels = [self._plan.skeleton(r) for r in rows]
                have: dict[tuple[str, str], BlobRow] = {}
                self._fetch(tid, ns, {k for s in skels for k in self._plan.keys(s)}, have)
                writes = _writes_by_checkpoint(
                    self.backend.get_writes(tid, ns, [r.checkpoint_id for r in rows])
                )
                cache = caches.setdefault((tid, ns), _ValueCache(LIST_CACHE_ENTRIES))
                for r, s in zip(rows, skels):
                    pending = writes.get(r.checkpoint_id, ())
                    snap = self._whole(r, s, have, pending, cache, writes_apart=True)
                    if snap is None:
                        continue  # deleted since its row was read: left out
                    done[id(r)], blobs = self._plan.upgrade(snap, s)
                    upgraded.blobs.extend(blobs)
            if upgraded.blobs:
                self.backend.write(upgraded)
            for r in page:
                if id(r) in done:
                    yield done[id(r)]

    # -- deleting ------------------------------------------------------------------------------

    def delete_thread(self, thread_id: str) -> None:
        """Delete a thread's checkpoints, blobs and writes in every namespace."""
        self._ensure()
        _check_id("thread_id", thread_id)
        self._writer.sync_thread(thread_id)
        self.backend.delete_threads([thread_id])
        self._plan.delta.forget(thread_id)

    def delete_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints whose metadata ``run_id`` is one of ``run_ids``, with their
        writes, in every thread and namespace. Blobs that kept checkpoints still reach stay."""
        self._ensure()
        ids = self._plan.run_ids(run_ids)
        self._writer.flush()
        threads: set[str] = set()
        for rid in ids:
            for row in self.backend.list_checkpoints(ListQuery(filter={"run_id": rid})):
                threads.add(row.thread_id)
        for tid in sorted(threads):
            self._retain(tid, lambda r: r.run_id not in ids)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, blob and write of a thread to another thread id.

        Checkpoint ids stay the same, so the copy's history reads exactly like the source's.
        """
        self._ensure()
        _check_id("thread_id", source_thread_id)
        _check_id("thread_id", target_thread_id)
        self._writer.sync_thread(source_thread_id)
        self._writer.sync_thread(target_thread_id)
        self.backend.copy_thread(source_thread_id, target_thread_id)

    def prune(
        self,
        thread_ids: Sequence[str],
        *,
        strategy: Literal["keep_latest", "delete", "delete_all"] = "keep_latest",
        drop_namespaces: DropNamespaces | None = None,
    ) -> None:
        """Shrink threads: ``"keep_latest"`` keeps each namespace's latest checkpoint (and its
        writes) and deletes the rest; ``"delete"`` (alias ``"delete_all"``) deletes the threads.

        ``drop_namespaces``, given a thread's checkpoint rows, names namespaces that
        ``"keep_latest"`` deletes whole (the LangGraph savers name finished subgraph calls).
        """
        self._ensure()
        ids = self._plan.prune_args(thread_ids, strategy)
        for tid in ids:
            self._writer.sync_thread(tid)
        if strategy != "keep_latest":
            if ids:
                self.backend.delete_threads(ids)
            for tid in ids:
                self._plan.delta.forget(tid)
            return
        for tid in ids:
            self._retain(tid, None, drop=drop_namespaces)

    def retain(
        self,
        *,
        keep_last: int | None = None,
        idle_for: float | None = None,
        thread_ids: Sequence[str] | None = None,
        dry_run: bool = False,
        chunk: int = RETENTION_CHUNK,
        progress: Callable[[Progress], None] | None = None,
    ) -> RetentionReport:
        """Apply retention policies and report what went.

        Parameters
        ----------
        keep_last:
            Keep the newest ``keep_last`` checkpoints of each thread and namespace; delete older
            ones with their writes, and the blobs only they reached.
        idle_for:
            Delete whole threads whose newest checkpoint is older than this many seconds.
        thread_ids:
            Only these threads (default: every thread in the store).
        dry_run:
            Count what would be deleted; delete nothing.
        chunk:
            Rows per delete transaction, so live writers are never locked out for long.
        progress:
            Called with a :class:`Progress` as threads are processed.
        """
        self._ensure()
        _check_retention(keep_last, idle_for, chunk)
        if thread_ids is not None:
            thread_ids = self._plan.prune_args(thread_ids, "keep_latest")
        self._writer.flush()
        report = RetentionReport(dry_run=dry_run)
        wanted = None if thread_ids is None else set(thread_ids)
        gone_threads: set[str] = set()
        if idle_for is not None:
            cutoff = time.time() - idle_for
            if not dry_run and wanted is None:
                # A run idle that long is not in flight: its tombstone has done its job.
                self.backend.purge_tombstones(cutoff)
            idle = [
                t
                for t in self.backend.threads(idle_before=cutoff)
                if wanted is None or t.thread_id in wanted
            ]
            for i in range(0, len(idle), chunk):
                part = idle[i : i + chunk]
                # Counted before they go: a whole thread's values go with it.
                ids = [t.thread_id for t in part]
                counts = self.backend.blob_counts(ids)
                if not dry_run:
                    # Looked at again as they go: a thread written since it was listed stays.
                    ids = self.backend.delete_idle_threads(ids, cutoff)
                    for tid in ids:
                        self._plan.delta.forget(tid)
                gone = set(ids)
                report.blobs_deleted += sum(counts.get(t, 0) for t in gone)
                report.threads_deleted += len(gone)
                report.checkpoints_deleted += sum(
                    t.checkpoints for t in part if t.thread_id in gone
                )
                gone_threads.update(gone)
                if progress is not None:
                    progress(Progress("idle threads", i + len(part), len(idle)))
        if keep_last is not None:
            targets = (
                sorted(wanted)
                if wanted is not None
                else [t.thread_id for t in self.backend.threads()]
            )
            targets = [t for t in targets if t not in gone_threads]
            for i, tid in enumerate(targets):
                n_cp, n_blobs = self._retain(tid, keep_last, dry_run=dry_run, chunk=chunk)
                report.checkpoints_deleted += n_cp
                report.blobs_deleted += n_blobs
                if progress is not None:
                    progress(Progress("keep last", i + 1, len(targets)))
            report.threads_scanned = len(targets)
        if not dry_run and (report.checkpoints_deleted or report.blobs_deleted):
            report.bytes_reclaimed = self.backend.reclaim()
        return report

    def upgrade_stored(
        self,
        *,
        thread_ids: Sequence[str] | None = None,
        chunk: int = 100,
        progress: Callable[[Progress], None] | None = None,
    ) -> int:
        """Rewrite stored checkpoints saved under older state versions to the current one.

        Optional: reads upgrade old checkpoints anyway. Rewriting once makes later reads cheap.
        Works thread by thread in transactions of ``chunk`` checkpoints; if interrupted, run it
        again: checkpoints already rewritten are skipped. Returns how many were rewritten.
        """
        self._ensure()
        if self._plan.upgrades is None:
            raise ConfigurationError("upgrade_stored needs upgrades=StateUpgrades(...)")
        if not isinstance(chunk, int) or chunk < 1:
            raise InvalidArgumentError(f"chunk must be an int >= 1, got {chunk!r}")
        self._writer.flush()
        targets = (
            self._plan.prune_args(thread_ids, "keep_latest")
            if thread_ids is not None
            else [t.thread_id for t in self.backend.threads()]
        )
        done = 0
        for i, tid in enumerate(targets):
            old = [
                r
                for r in self.backend.list_checkpoints(ListQuery(thread_id=tid))
                if self._plan.skeleton(r).state != self._plan.state
            ]
            for j in range(0, len(old), chunk):
                batch = WriteBatch()
                for r in old[j : j + chunk]:
                    snap = self.get(tid, r.namespace, r.checkpoint_id)  # stores upgraded blobs
                    if snap is not None:
                        batch.extend(self._plan.rewritten(r, snap))
                self.backend.write(batch)
                done += len(batch.checkpoints)
            if progress is not None:
                progress(Progress("upgrade", i + 1, len(targets)))
        return done

    def stats(self) -> TableStats:
        """Counts and bytes by table and by channel (see ``snapstate stats``)."""
        self._ensure()
        self._writer.flush()
        return self.backend.stats()

    def _retain(
        self,
        thread_id: str,
        keep: _Keep | int | None,
        *,
        drop: DropNamespaces | None = None,
        dry_run: bool = False,
        chunk: int = RETENTION_CHUNK,
    ) -> tuple[int, int]:
        index = self.backend.blob_index(thread_id)  # before the rows: see _Planner.doomed
        rows = list(self.backend.list_checkpoints(ListQuery(thread_id=thread_id)))
        gone, blobs = self._plan.doomed(rows, index, _keeper(rows, keep, drop))
        if dry_run:
            return len(gone), len(blobs)
        # Checkpoints before the blobs they reach: between chunks, every checkpoint still
        # present reads whole. A backend may skip checkpoints a live writer holds locked; then
        # their blobs wait for the next run too.
        deleted = 0
        for i in range(0, len(gone), chunk):
            deleted += self.backend.delete_rows(thread_id, gone[i : i + chunk], [])
        if deleted < len(gone):
            return deleted, 0
        # A backend may leave some blobs for a later run (PostgreSQL does while a write of the
        # thread is in progress): the count is of those gone.
        blobs_gone = 0
        for i in range(0, len(blobs), chunk):
            blobs_gone += self.backend.delete_rows(thread_id, [], blobs[i : i + chunk])
        if blobs:
            # A blob this process stored last for a channel may be gone: the next delta must
            # not name it as its base.
            self._plan.delta.forget(thread_id)
        return deleted, blobs_gone

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Drain queued writes and release the backend."""
        try:
            self._writer.close()
        finally:
            self.backend.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _writes_by_checkpoint(rows: Iterable[WriteRow]) -> dict[str, list[WriteRow]]:
    out: dict[str, list[WriteRow]] = {}
    for w in rows:
        out.setdefault(w.checkpoint_id, []).append(w)
    return out


class AsyncCheckpointer:
    """The asyncio twin of :class:`Checkpointer`: the same arguments and methods, awaited.

    ``backend`` may be an :class:`~snapstate.backends.AsyncBackend` (native async I/O) or a
    synchronous backend or URL, whose blocking calls then run in a worker thread.
    """

    def __init__(
        self,
        backend: AsyncBackend | Backend | str | os.PathLike[str],
        *,
        codec: Codec | None = None,
        durability: Durability = "sync",
        delta_keyframe_every: int = _delta.DEFAULT_KEYFRAME_EVERY,
        upgrades: StateUpgrades | None = None,
        auto_setup: bool = True,
        **writer_options: Any,
    ) -> None:
        if isinstance(backend, AsyncBackend):
            self.backend = backend
        else:
            self.backend = as_async_backend(_resolve_backend(backend))
        self.codec = codec or default_codec
        self._plan = _Planner(self.codec, _delta.DeltaPolicy(delta_keyframe_every), upgrades)
        self._writer: AsyncWriter = make_async_writer(
            self.backend, durability, self._plan.write_failed, **writer_options
        )
        self._auto_setup = auto_setup
        self._ready = False

    @property
    def durability(self) -> Durability:
        return self._writer.durability

    async def setup(self) -> None:
        await self.backend.setup()
        self._ready = True

    async def _ensure(self) -> None:
        if not self._ready and self._auto_setup:
            await self.setup()

    async def ready(self) -> AsyncBackend:
        """See :meth:`Checkpointer.ready`."""
        await self._ensure()
        return self.backend

    async def put(
        self,
        checkpoint: Checkpoint,
        *,
        thread_id: str,
        namespace: str = "",
        parent_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        changed: Mapping[str, Version] | Collection[str] | None = None,
    ) -> None:
        """See :meth:`Checkpointer.put`."""
        await self._ensure()
        batch = self._plan.put(
            checkpoint,
            thread_id=thread_id,
            namespace=namespace,
            parent_id=parent_id,
            metadata=metadata,
            changed=changed,
        )
        await self._writer.submit(batch)

    async def put_writes(
        self,
        writes: Sequence[tuple[str, Any]],
        *,
        thread_id: str,
        checkpoint_id: str,
        task_id: str,
        namespace: str = "",
        task_path: str = "",
        indices: Sequence[int] | None = None,
        replace: bool = False,
    ) -> None:
        """See :meth:`Checkpointer.put_writes`."""
        await self._ensure()
        batch = self._plan.put_writes(
            writes,
            thread_id=thread_id,
            namespace=namespace,
            checkpoint_id=checkpoint_id,
            task_id=task_id,
            task_path=task_path,
            indices=indices,
            replace=replace,
        )
        await self._writer.submit(batch)

    async def flush(self) -> None:
        await self._writer.flush()

    async def get(
        self, thread_id: str, namespace: str = "", checkpoint_id: str | None = None
    ) -> Snapshot | None:
        """See :meth:`Checkpointer.get`."""
        await self._ensure()
        _check_id("thread_id", thread_id)
        _check_id("namespace", namespace)
        if checkpoint_id is not None:
            _check_id("checkpoint_id", checkpoint_id)
        await self._writer.sync_thread(thread_id)
        while True:  # again only when retention elsewhere deleted the checkpoint just read
            loaded = await self.backend.load(thread_id, namespace, checkpoint_id)
            if loaded is None:
                return None
            row, blobs, writes = loaded
            skel = self._plan.skeleton(row)
            have = {(b.channel, b.version): b for b in blobs}
            await self._fetch(row.thread_id, row.namespace, self._plan.keys(skel), have)
            whole = await self._whole(row, skel, have, writes, _ValueCache(LIST_CACHE_ENTRIES))
            if whole is not None:
                break
            if checkpoint_id is not None:
                return None
        snap, blobs = self._plan.upgrade(whole, skel)
        if blobs:
            await self.backend.write(WriteBatch(blobs=blobs))
        return snap

    async def _whole(
        self,
        row: CheckpointRow,
        skel: _Skeleton,
        have: Mapping[tuple[str, str], BlobRow],
        writes: Sequence[WriteRow],
        cache: _ValueCache,
        *,
        writes_apart: bool = False,
    ) -> Snapshot | None:
        """See :meth:`Checkpointer._whole`."""
        try:
            snap = self._plan.snapshot(row, skel, have, writes, cache)
        except DecodeError:
            if await self._stored(row):
                raise
            return None
        doubt = self._plan.absent(skel, have) or (writes_apart and not writes)
        if doubt and not await self._stored(row):
            return None
        return snap

    async def _stored(self, row: CheckpointRow) -> bool:
        got = await self.backend.get_checkpoint(row.thread_id, row.namespace, row.checkpoint_id)
        return got is not None

    async def _fetch(
        self,
        thread_id: str,
        namespace: str,
        wanted: Iterable[tuple[str, str]],
        have: dict[tuple[str, str], BlobRow],
    ) -> None:
        wanted = list(wanted)
        asked: set[tuple[str, str]] = set()
        while missing := [k for k in self._plan.missing_keys(wanted, have) if k not in asked]:
            asked.update(missing)
            for b in await self.backend.get_blobs(thread_id, namespace, missing):
                have.setdefault((b.channel, b.version), b)

    async def list(
        self,
        thread_id: str | None = None,
        *,
        namespace: str | None = None,
        checkpoint_id: str | None = None,
        filter: Mapping[str, Any] | None = None,
        before: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Snapshot]:
        """See :meth:`Checkpointer.list`."""
        await self._ensure()
        query = self._plan.query(thread_id, namespace, checkpoint_id, filter, before, limit)
        if thread_id is None:
            await self._writer.flush()
        else:
            await self._writer.sync_thread(thread_id)
        caches: dict[tuple[str, str], _ValueCache] = {}
        rows_all = await self.backend.list_checkpoints(query)
        for page in _pages(rows_all, LIST_PAGE_SIZE):
            done: dict[int, Snapshot] = {}
            upgraded = WriteBatch()
            for (tid, ns), rows in _group(page).items():
                skels = [self._plan.skeleton(r) for r in rows]
                have: dict[tuple[str, str], BlobRow] = {}
                await self._fetch(tid, ns, {k for s in skels for k in self._plan.keys(s)}, have)
                writes = _writes_by_checkpoint(
                    await self.backend.get_writes(tid, ns, [r.checkpoint_id for r in rows])
                )
                cache = caches.setdefault((tid, ns), _ValueCache(LIST_CACHE_ENTRIES))
                for r, s in zip(rows, skels):
                    pending = writes.get(r.checkpoint_id, ())
                    snap = await self._whole(r, s, have, pending, cache, writes_apart=True)
                    if snap is None:
                        continue  # deleted since its row was read: left out
                    done[id(r)], blobs = self._plan.upgrade(snap, s)
                    upgraded.blobs.extend(blobs)
            if upgraded.blobs:
                await self.backend.write(upgraded)
            for r in page:
                if id(r) in done:
                    yield done[id(r)]

    async def delete_thread(self, thread_id: str) -> None:
        """See :meth:`Checkpointer.delete_thread`."""
        await self._ensure()
        _check_id("thread_id", thread_id)
        await self._writer.sync_thread(thread_id)
        await self.backend.delete_threads([thread_id])
        self._plan.delta.forget(thread_id)

    async def delete_runs(self, run_ids: Sequence[str]) -> None:
        """See :meth:`Checkpointer.delete_runs`."""
        await self._ensure()
        ids = self._plan.run_ids(run_ids)
        await self._writer.flush()
        threads: set[str] = set()
        for rid in ids:
            for row in await self.backend.list_checkpoints(ListQuery(filter={"run_id": rid})):
                threads.add(row.thread_id)
        for tid in sorted(threads):
            await self._retain(tid, lambda r: r.run_id not in ids)

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """See :meth:`Checkpointer.copy_thread`."""
        await self._ensure()
        _check_id("thread_id", source_thread_id)
        _check_id("thread_id", target_thread_id)
        await self._writer.sync_thread(source_thread_id)
        await self._writer.sync_thread(target_thread_id)
        await self.backend.copy_thread(source_thread_id, target_thread_id)

    async def prune(
        self,
        thread_ids: Sequence[str],
        *,
        strategy: Literal["keep_latest", "delete", "delete_all"] = "keep_latest",
        drop_namespaces: DropNamespaces | None = None,
    ) -> None:
        """See :meth:`Checkpointer.prune`."""
        await self._ensure()
        ids = self._plan.prune_args(thread_ids, strategy)
        for tid in ids:
            await self._writer.sync_thread(tid)
        if strategy != "keep_latest":
            if ids:
                await self.backend.delete_threads(ids)
            for tid in ids:
                self._plan.delta.forget(tid)
            return
        for tid in ids:
            await self._retain(tid, None, drop=drop_namespaces)

    async def _retain(
        self, thread_id: str, keep: _Keep | int | None, *, drop: DropNamespaces | None = None
    ) -> tuple[int, int]:
        index = await self.backend.blob_index(thread_id)
        rows = await self.backend.list_checkpoints(ListQuery(thread_id=thread_id))
        gone, blobs = self._plan.doomed(rows, index, _keeper(rows, keep, drop))
        deleted = 0
        for i in range(0, len(gone), RETENTION_CHUNK):
            deleted += await self.backend.delete_rows(thread_id, gone[i : i + RETENTION_CHUNK], [])
        if deleted < len(gone):
            return deleted, 0  # see Checkpointer._retain
        blobs_gone = 0  # see Checkpointer._retain
        for i in range(0, len(blobs), RETENTION_CHUNK):
            blobs_gone += await self.backend.delete_rows(
                thread_id, [], blobs[i : i + RETENTION_CHUNK]
            )
        if blobs:
            self._plan.delta.forget(thread_id)  # see Checkpointer._retain
        return deleted, blobs_gone

    async def aclose(self) -> None:
        """Drain queued writes and release the backend."""
        try:
            await self._writer.close()
        finally:
            await self.backend.close()

    async def __aenter__(self) -> AsyncCheckpointer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
