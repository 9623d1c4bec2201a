"""The storage contract every backend implements.

A backend stores three kinds of rows and knows nothing of graphs, codecs or LangGraph:

``checkpoints``
    one row per checkpoint: where it lives, its parent, the run that made it, when, its metadata
    (a JSON document, kept apart from state bytes so listing never drags them) and its skeleton
    (the engine's encoding of versions and timestamps).
``blobs``
    one row per (thread, namespace, channel, version): the encoded channel value. A blob is shared
    by every checkpoint whose ``channel_versions`` name it. ``kind`` says whether ``data`` is the
    full value, an append-delta over the blob named by ``base``, or empty (the channel has a
    version but no value).
``writes``
    pending writes of a task against a checkpoint. No foreign key: writes may arrive before their
    checkpoint does.

The required operations are the abstract methods of :class:`Backend`. Everything else on the
class has a working default built from them, which a backend may override with a faster form.
"""

from __future__ import annotations

import abc
import hashlib
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import msgspec

from .._once import OncePerObject
from ..codec._format import raw_size
from ..errors import DecodeError, DeltaBaseMissingError, InvalidArgumentError, ThreadDeletedError

__all__ = [
    "BLOB_FULL",
    "BLOB_DELTA",
    "BLOB_EMPTY",
    "CheckpointRow",
    "BlobRow",
    "WriteRow",
    "WriteBatch",
    "ListQuery",
    "BlobRef",
    "ThreadInfo",
    "TableStats",
    "MigrationStatus",
    "Backend",
    "validate_filter",
    "key_conditions",
    "delta_bases",
    "missing_base",
    "first_line",
]

#: ``BlobRow.kind``: ``data`` is the whole encoded value.
BLOB_FULL = 0
#: ``BlobRow.kind``: ``data`` holds items appended to the list stored at version ``base``.
BLOB_DELTA = 1
#: ``BlobRow.kind``: the channel has this version but no value (``data`` is empty).
BLOB_EMPTY = 2


class CheckpointRow(msgspec.Struct, frozen=True):
    """A row of the ``checkpoints`` table."""

    thread_id: str
    namespace: str
    checkpoint_id: str
    parent_id: str | None
    run_id: str | None
    created_at: float
    metadata: bytes
    """The metadata as a UTF-8 JSON object."""
    skeleton: bytes
    """The engine's encoding of versions, versions_seen, ts and extra fields."""


class BlobRow(msgspec.Struct, frozen=True):
    """A row of the ``blobs`` table."""

    thread_id: str
    namespace: str
    channel: str
    version: str
    kind: int
    base: str | None
    data: bytes


class WriteRow(msgspec.Struct, frozen=True):
    """A row of the ``writes`` table."""

    thread_id: str
    namespace: str
    checkpoint_id: str
    task_id: str
    idx: int
    channel: str
    task_path: str
    data: bytes


class WriteBatch(msgspec.Struct):
    """Everything one transaction stores.

    ``writes`` are inserted unless a row with the same key exists (the first write wins, so a
    retried call is harmless); ``replace_writes`` overwrite. ``blobs`` are inserted unless present
    (a blob's key names its content). ``checkpoints`` overwrite.
    """

    checkpoints: list[CheckpointRow] = msgspec.field(default_factory=list)
    blobs: list[BlobRow] = msgspec.field(default_factory=list)
    writes: list[WriteRow] = msgspec.field(default_factory=list)
    replace_writes: list[WriteRow] = msgspec.field(default_factory=list)
    replan: Callable[[], WriteBatch] | None = None
    """For a write refused with ``DeltaBaseMissingError``: the same write with whole values,
    which the writers store in its place (a merged batch has none)."""

    def extend(self, other: WriteBatch) -> None:
        """Append another batch's rows to this one (used to group commits)."""
        self.checkpoints.extend(other.checkpoints)
        self.blobs.extend(other.blobs)
        self.writes.extend(other.writes)
        self.replace_writes.extend(other.replace_writes)

    def __len__(self) -> int:
        return len(self.checkpoints) + len(self.blobs) + len(self.writes) + len(self.replace_writes)


class BlobRef(msgspec.Struct, frozen=True):
    """A blob's key and delta base, without its bytes (for reachability and retention)."""

    namespace: str
    channel: str
    version: str
    kind: int
    base: str | None


class ThreadInfo(msgspec.Struct, frozen=True):
    """A thread's size and last activity (for retention and ``snapstate stats``)."""

    thread_id: str
    checkpoints: int
    last_created_at: float


class TableStats(msgspec.Struct):
    """Row counts and stored bytes, for ``snapstate stats``.

    ``channels`` maps a channel name to ``(blobs, bytes)``; ``file_bytes`` and ``free_bytes`` are
    the store's on-disk size and reusable space where the backend knows them.
    """

    threads: int = 0
    checkpoints: int = 0
    checkpoint_bytes: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    writes: int = 0
    write_bytes: int = 0
    channels: dict[str, tuple[int, int]] = msgspec.field(default_factory=dict)
    file_bytes: int | None = None
    free_bytes: int | None = None
    raw_blob_bytes: int | None = None
    """What the blobs' payloads would take uncompressed (None where not gathered)."""
    payloads: int | None = None
    """Large values stored once per thread and content (SQL backends; None elsewhere). The
    blob and write byte counts above count such a value for every row that names it."""
    payload_bytes: int | None = None
    """What those values take, each stored once."""
    shared_bytes: int | None = None
    """What the rows naming those values count for them (in ``blob_bytes`` and
    ``write_bytes``): the stored total is the row bytes minus this plus ``payload_bytes``."""


class MigrationStatus(msgspec.Struct, frozen=True):
    """A schema migration this code knows, and when it was applied (None: pending)."""

    id: int
    name: str
    applied_at: float | None


class ListQuery(msgspec.Struct, frozen=True):
    """Which checkpoint rows :meth:`Backend.list_checkpoints` yields, newest id first.

    ``None`` in ``thread_id`` or ``namespace`` means "any". ``filter`` maps top-level metadata
    keys to the JSON value they must equal; keys were checked by :func:`validate_filter`.
    """

    thread_id: str | None = None
    namespace: str | None = None
    checkpoint_id: str | None = None
    before: str | None = None
    limit: int | None = None
    filter: Mapping[str, Any] = msgspec.field(default_factory=dict)


def key_conditions(query: ListQuery) -> list[tuple[str, str, str]]:
    """A query's conditions other than its metadata filter, as (column, operator, value).

    SQL backends format them in their own dialect; the semantics live here once.
    """
    out: list[tuple[str, str, str]] = []
    if query.thread_id is not None:
        out.append(("thread_id", "=", query.thread_id))
    if query.namespace is not None:
        out.append(("namespace", "=", query.namespace))
    if query.checkpoint_id is not None:
        out.append(("checkpoint_id", "=", query.checkpoint_id))
    if query.before is not None:
        out.append(("checkpoint_id", "<", query.before))
    return out


_FILTER_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,256}")


def validate_filter(filter: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check a metadata filter and return it as a plain dict.

    Keys are top-level metadata keys made of letters, digits, ``_``, ``.`` and ``-``; values must
    be JSON values. Backends bind both as query parameters; the key check is a second line of
    defence and gives a clear error early.
    """
    if not filter:
        return {}
    if not isinstance(filter, Mapping):
        raise InvalidArgumentError(
            f"filter must be a mapping of metadata keys to values, got {type(filter).__name__}"
        )
    out: dict[str, Any] = {}
    for key, value in filter.items():
        if not isinstance(key, str) or not _FILTER_KEY.fullmatch(key):
            raise InvalidArgumentError(
                f"invalid metadata filter key {key!r}: keys may contain only letters, digits, "
                "'_', '.' and '-' (1 to 256 characters)"
            )
        try:
            msgspec.json.encode(value)
        except (TypeError, msgspec.EncodeError):
            raise InvalidArgumentError(
                f"metadata filter value for {key!r} is not a JSON value: {type(value).__name__}"
            ) from None
        out[key] = value
    return out


def metadata_matches(metadata: Mapping[str, Any], filter: Mapping[str, Any]) -> bool:
    """Whether decoded metadata satisfies a filter: every key present with an equal JSON value.

    Booleans only equal booleans (JSON ``true`` is not ``1``), as in the SQL backends.
    """
    for key, want in filter.items():
        if key not in metadata:
            return False
        if not _json_equal(metadata[key], want):
            return False
    return True


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


class Backend(abc.ABC):
    """Storage for checkpoint, blob and write rows.

    Implementations must be safe to call from several threads at once. ``write`` is atomic: either
    every row of the batch is stored or none is.
    """

    #: A short name for messages and reports ("memory", "sqlite", "postgres", ...).
    name: str = "backend"

    #: How many ``write`` transactions the ``sync`` writer may run at once. Callers who submit
    #: while that many run wait and share the next commit (group commit). 1 suits a store with
    #: one writer at a time (SQLite) or a single connection; a server with a pool of
    #: connections runs independent transactions side by side.
    write_concurrency: int = 1

    # -- required ------------------------------------------------------------------------------

    @abc.abstractmethod
    def setup(self) -> None:
        """Create or upgrade the schema. Idempotent and safe to call concurrently."""

    @abc.abstractmethod
    def write(self, batch: WriteBatch) -> None:
        """Store a batch in one transaction, rolled back whole on any error."""

    @abc.abstractmethod
    def get_checkpoint(
        self, thread_id: str, namespace: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        """The row with that id, or the one with the greatest id when ``checkpoint_id`` is None."""

    @abc.abstractmethod
    def list_checkpoints(self, query: ListQuery) -> Iterator[CheckpointRow]:
        """Rows matching ``query``, ordered by checkpoint id, greatest first."""

    @abc.abstractmethod
    def get_blobs(
        self, thread_id: str, namespace: str, keys: Collection[tuple[str, str]]
    ) -> list[BlobRow]:
        """The blobs with these (channel, version) keys that exist.

        A backend may return more rows than asked for (for example the bases of append-deltas,
        fetched in the same round trip); the engine asks again for any base still missing.
        """

    @abc.abstractmethod
    def get_writes(
        self, thread_id: str, namespace: str, checkpoint_ids: Collection[str]
    ) -> list[WriteRow]:
        """Pending writes of these checkpoints, in any order."""

    @abc.abstractmethod
    def delete_threads(self, thread_ids: Sequence[str]) -> None:
        """Delete every row of these threads, in every namespace, in one transaction.

        Leaves a tombstone per thread that had rows: the greatest checkpoint id among its
        checkpoints and writes, and the time. From then on ``write`` must refuse, with
        :func:`check_tombstones`, rows that belong to the deleted history.
        """

    @abc.abstractmethod
    def blob_index(self, thread_id: str) -> list[BlobRef]:
        """Every blob of a thread, in every namespace, without its bytes."""

    @abc.abstractmethod
    def delete_rows(
        self,
        thread_id: str,
        checkpoints: Collection[tuple[str, str]],
        blobs: Collection[tuple[str, str, str]],
    ) -> int:
        """Delete some rows of one thread in one transaction; return how many of the named
        checkpoints, and of the named blobs, are gone (the engine names one kind per call).

        ``checkpoints`` are (namespace, checkpoint_id): each goes with its pending writes, and
        checkpoints of the thread left behind whose ``parent_id`` named one of them get
        ``parent_id`` NULL. ``blobs`` are (namespace, channel, version). The engine only names
        blobs that no kept checkpoint reaches, and only once every doomed checkpoint is gone.

        A backend may skip rows another transaction holds locked, so that retention never
        waits on a live writer (PostgreSQL uses ``SKIP LOCKED``, and deletes a thread's blobs
        only under its lock); skipped rows stay for the next run, and the count says so.
        """

    @abc.abstractmethod
    def purge_tombstones(self, deleted_before: float) -> int:
        """Forget tombstones of threads deleted before that Unix time; return how many."""

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections. The default does nothing."""

    # -- optional fast paths -------------------------------------------------------------------

    def load(
        self, thread_id: str, namespace: str, checkpoint_id: str | None
    ) -> tuple[CheckpointRow, list[BlobRow], list[WriteRow]] | None:
        """A checkpoint row with the blobs its skeleton names and its writes.

        The row and its writes must be as of one moment: never a row whose writes were deleted
        with it (by retention elsewhere) between two reads. The default reads them apart, so when
        no writes come back it looks the row up again; SQL backends read both in one statement
        or read transaction. ``blob_keys`` are not known before the skeleton is decoded, so the
        default returns no blobs and lets the engine fetch them; a backend that can join them in
        returns them here.
        """
        while True:
            row = self.get_checkpoint(thread_id, namespace, checkpoint_id)
            if row is None:
                return None
            writes = self.get_writes(thread_id, namespace, [row.checkpoint_id])
            if writes or self.get_checkpoint(thread_id, namespace, row.checkpoint_id):
                return row, [], writes
            if checkpoint_id is not None:
                return None  # deleted between the two reads

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every row of a thread to another thread id, keeping checkpoint ids.

        The default reads the rows and writes them in one batch; SQL backends copy server-side.
        """
        rows = list(self.list_checkpoints(ListQuery(thread_id=source_thread_id)))
        index = self.blob_index(source_thread_id)
        batch = WriteBatch()
        by_ns: dict[str, list[tuple[str, str]]] = {}
        for ref in index:
            by_ns.setdefault(ref.namespace, []).append((ref.channel, ref.version))
        for ns, keys in by_ns.items():
            for b in self.get_blobs(source_thread_id, ns, keys):
                batch.blobs.append(
                    BlobRow(
                        target_thread_id, b.namespace, b.channel, b.version, b.kind, b.base, b.data
                    )
                )
        ids_by_ns: dict[str, list[str]] = {}
        for r in rows:
            ids_by_ns.setdefault(r.namespace, []).append(r.checkpoint_id)
            batch.checkpoints.append(
                CheckpointRow(
                    target_thread_id,
                    r.namespace,
                    r.checkpoint_id,
                    r.parent_id,
                    r.run_id,
                    r.created_at,
                    r.metadata,
                    r.skeleton,
                )
            )
        for ns, ids in ids_by_ns.items():
            for w in self.get_writes(source_thread_id, ns, ids):
                batch.writes.append(
                    WriteRow(
                        target_thread_id,
                        w.namespace,
                        w.checkpoint_id,
                        w.task_id,
                        w.idx,
                        w.channel,
                        w.task_path,
                        w.data,
                    )
                )
        if len(batch):
            self.write(batch)

    def delete_idle_threads(self, thread_ids: Sequence[str], idle_before: float) -> list[str]:
        """Delete those of ``thread_ids`` whose newest checkpoint is still older than
        ``idle_before`` (a Unix time), as :meth:`delete_threads` does; return their ids. A thread
        written since it was listed as idle stays. SQL and in-memory backends look again in the
        deleting transaction, under the lock writes take; the default looks with
        :meth:`threads` and then deletes, so a checkpoint stored in between goes too.
        """
        wanted = set(thread_ids)
        still = [
            t.thread_id for t in self.threads(idle_before=idle_before) if t.thread_id in wanted
        ]
        if still:
            self.delete_threads(still)
        return still

    def blob_counts(self, thread_ids: Sequence[str]) -> dict[str, int]:
        """How many blobs each of ``thread_ids`` holds, in every namespace; a thread with none
        may be left out. Retention counts what it deletes with this. The default reads each
        thread's :meth:`blob_index`; SQL backends count server-side, many threads a statement.
        """
        return {t: len(self.blob_index(t)) for t in thread_ids}

    def threads(self, *, idle_before: float | None = None) -> list[ThreadInfo]:
        """Every thread, or those whose newest checkpoint was created before ``idle_before``
        (a Unix time). The default scans checkpoint rows; SQL backends aggregate server-side."""
        info: dict[str, list[float]] = {}
        for row in self.list_checkpoints(ListQuery()):
            acc = info.setdefault(row.thread_id, [0, 0.0])
            acc[0] += 1
            acc[1] = max(acc[1], row.created_at)
        return [
            ThreadInfo(tid, int(n), last)
            for tid, (n, last) in sorted(info.items())
            if idle_before is None or last < idle_before
        ]

    def stats(self) -> TableStats:
        """Counts and bytes per table and per channel. The default reads every row."""
        out = TableStats()
        threads = self.threads()
        out.threads = len(threads)
        for t in threads:
            rows = list(self.list_checkpoints(ListQuery(thread_id=t.thread_id)))
            out.checkpoints += len(rows)
            out.checkpoint_bytes += sum(len(r.metadata) + len(r.skeleton) for r in rows)
            by_ns: dict[str, list[str]] = {}
            for r in rows:
                by_ns.setdefault(r.namespace, []).append(r.checkpoint_id)
            refs: dict[str, list[tuple[str, str]]] = {}
            for ref in self.blob_index(t.thread_id):
                refs.setdefault(ref.namespace, []).append((ref.channel, ref.version))
            for ns, keys in refs.items():
                for b in self.get_blobs(t.thread_id, ns, keys):
                    if (b.channel, b.version) not in keys:
                        continue
                    out.blobs += 1
                    out.blob_bytes += len(b.data)
                    out.raw_blob_bytes = (out.raw_blob_bytes or 0) + raw_size(
                        b.data[:10], len(b.data)
                    )
                    n, size = out.channels.get(b.channel, (0, 0))
                    out.channels[b.channel] = (n + 1, size + len(b.data))
            for ns, cids in by_ns.items():
                ws = self.get_writes(t.thread_id, ns, cids)
                out.writes += len(ws)
                out.write_bytes += sum(len(w.data) for w in ws)
        return out

    def migration_status(self) -> list[MigrationStatus]:
        """The schema migrations this backend knows, applied or pending, oldest first.

        Reads only: applying is :meth:`setup`'s job. Raises
        :class:`~snapstate.errors.SchemaVersionError` for a store newer than this code. A backend
        without a schema (the in-memory one) has none.
        """
        return []

    def reclaim(self) -> int:
        """Give space freed by deletes back to the file system where the store can.

        Returns the bytes given back (0 when the backend does not know or need it)."""
        return 0

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_tombstones(batch: WriteBatch, tombstones: Mapping[str, str]) -> None:
    """Refuse a batch that writes into the deleted history of a thread.

    ``tombstones`` maps thread ids to the greatest checkpoint id they had when deleted. A
    checkpoint row belongs to that history when its id, or its parent's, is not greater; a write
    row when its checkpoint id is not greater. Backends call this inside the write transaction.
    """
    if not tombstones:
        return
    for c in batch.checkpoints:
        last = tombstones.get(c.thread_id)
        if last is not None and (
            c.checkpoint_id <= last or (c.parent_id is not None and c.parent_id <= last)
        ):
            raise ThreadDeletedError(
                f"thread {c.thread_id!r} was deleted; checkpoint {c.checkpoint_id!r} "
                f"(parent {c.parent_id!r}, namespace {c.namespace!r}) belongs to its deleted "
                "history and was not stored",
                hint="a new history on this thread id starts with a checkpoint without a parent",
            )
    for w in (*batch.writes, *batch.replace_writes):
        last = tombstones.get(w.thread_id)
        if last is not None and w.checkpoint_id <= last:
            raise ThreadDeletedError(
                f"thread {w.thread_id!r} was deleted; writes of task {w.task_id!r} for "
                f"checkpoint {w.checkpoint_id!r} (namespace {w.namespace!r}) belong to its "
                "deleted history and were not stored"
            )


def delta_bases(batch: WriteBatch) -> list[tuple[str, str, str, str]]:
    """``(thread_id, namespace, channel, version)`` of the stored values the append-deltas of
    ``batch`` build on, the batch's own blobs excepted, sorted.

    Backends check, inside the write transaction, that each is stored, and refuse the batch
    with ``DeltaBaseMissingError`` otherwise: retention in another process may have deleted a
    value the engine that planned the batch still remembers.
    """
    if not batch.blobs:
        return []
    own = {(b.thread_id, b.namespace, b.channel, b.version) for b in batch.blobs}
    return sorted(
        {
            key
            for b in batch.blobs
            if b.kind == BLOB_DELTA and b.base is not None
            for key in ((b.thread_id, b.namespace, b.channel, b.base),)
            if key not in own
        }
    )


def missing_base(keys: Sequence[tuple[str, str, str, str]]) -> DeltaBaseMissingError:
    """The error for a batch whose delta bases ``keys`` (the first is named) are not stored."""
    t, ns, channel, version = keys[0]
    return DeltaBaseMissingError(
        f"the value an append-delta builds on is no longer stored (channel {channel!r}, version "
        f"{version!r}, thread {t!r}, namespace {ns!r}); the write was not stored",
        hint="retention in another process deleted it; the checkpoint is stored again with "
        "whole values",
    )


def batch_threads(batch: WriteBatch) -> set[str]:
    """The thread ids a batch touches."""
    return {
        r.thread_id
        for rows in (batch.checkpoints, batch.writes, batch.replace_writes, batch.blobs)
        for r in rows
    }


def checkpoint_values(c: CheckpointRow, metadata: str) -> tuple[Any, ...]:
    """A checkpoint row's columns in the order of the ``checkpoints`` table, with its metadata
    as the text given."""
    return (
        c.thread_id,
        c.namespace,
        c.checkpoint_id,
        c.parent_id,
        c.run_id,
        c.created_at,
        metadata,
        c.skeleton,
    )


def batch_bytes(batch: WriteBatch) -> int:
    """Bytes a batch holds, roughly: its values plus a fixed cost per row."""
    n = 64 * len(batch)
    for c in batch.checkpoints:
        n += len(c.metadata) + len(c.skeleton)
    for b in batch.blobs:
        n += len(b.data)
    for w in batch.writes:
        n += len(w.data)
    for w in batch.replace_writes:
        n += len(w.data)
    return n


def blob_keys_of(versions: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The blob keys a checkpoint's ``channel_versions`` name."""
    return [(channel, version_key(v)) for channel, v in versions.items()]


#: Separates a version from the state version of an upgraded copy of its blob
#: (``"<version>\x1fs<state>"``, see :mod:`snapstate.upgrades`). Versions may not contain it.
UPGRADED_SEP = "\x1f"


def version_key(version: Any) -> str:
    """The text form of a channel version used in blob keys."""
    if isinstance(version, str):
        if UPGRADED_SEP in version:
            raise InvalidArgumentError(f"channel version {version!r} contains the byte 0x1f")
        return version
    if isinstance(version, bool) or not isinstance(version, (int, float)):
        raise InvalidArgumentError(
            f"channel versions must be str, int or float, got {type(version).__name__}"
        )
    return repr(version)


#: SQL backends store a value of at least this many bytes once per thread and content, in a
#: ``payloads`` table keyed by its SHA-256, and the write or blob row names the digest. LangGraph
#: hands a node's output to ``put_writes`` and again, as the channel's new value, to the next
#: ``put``: the same bytes. Smaller values stay in their row, where a second copy costs less than
#: the extra row and index entry.
PAYLOAD_MIN_BYTES = 64 * 1024

#: Payload digests kept for reuse (see :func:`payload_digest`).
_DIGESTS = 4
_digests: OncePerObject[bytes] = OncePerObject(_DIGESTS)


def payload_digest(data: Any) -> bytes:
    """SHA-256 of a payload. The engine hands the same bytes object to a node's pending write
    and to the next checkpoint's blob, often from two threads at once: the digest of a
    ``bytes`` object is computed once for both and kept for the last few (snapstate._once)."""
    if not isinstance(data, bytes):
        return hashlib.sha256(data).digest()
    return _digests.get(data, lambda: hashlib.sha256(data).digest())


def store_value(
    payloads: dict[tuple[str, bytes], Any], thread_id: str, data: Any
) -> tuple[Any, bytes | None]:
    """What a write or blob row of ``thread_id`` stores for ``data``: ``(data, None)`` for a
    small value; for a large one ``(b"", digest)``, with the value added to ``payloads``
    (keyed by thread and digest, so a batch stores each once)."""
    if len(data) < PAYLOAD_MIN_BYTES:
        return data, None
    digest = payload_digest(data)
    payloads.setdefault((thread_id, digest), data)
    return b"", digest


def stored_row(payloads: dict[tuple[str, bytes], Any], row: WriteRow | BlobRow) -> tuple[Any, ...]:
    """The columns a write or blob row stores, in its fields' order, then ``payload``: its value
    split by :func:`store_value` (which adds a large one to ``payloads``)."""
    columns = msgspec.structs.astuple(row)
    stored, digest = store_value(payloads, row.thread_id, columns[-1])
    if digest is None:  # most rows: the columns as they are
        return (*columns, None)
    return (*columns[:-1], stored, digest)


def payload_value_sql(alias: str, prefix: str = "") -> str:
    """SQL for a write's or blob's value (``alias`` names its row): its own data, or the
    payload it names, NULL if that is missing (:func:`check_payloads` reports it). ``prefix``
    qualifies the payloads table (a PostgreSQL schema)."""
    return (
        f"CASE WHEN {alias}.payload IS NULL THEN {alias}.data ELSE (SELECT p.data "
        f"FROM {prefix}payloads p WHERE p.thread_id = {alias}.thread_id "
        f"AND p.digest = {alias}.payload) END"
    )


def shared_payload_bytes_sql(prefix: str = "") -> str:
    """SQL for what the rows naming payloads count for them (``TableStats.shared_bytes``)."""
    return (
        "SELECT coalesce(sum(length(p.data)), 0) FROM ("
        f" SELECT thread_id, payload FROM {prefix}blobs WHERE payload IS NOT NULL"
        " UNION ALL"
        f" SELECT thread_id, payload FROM {prefix}writes WHERE payload IS NOT NULL) r"
        f" JOIN {prefix}payloads p ON p.thread_id = r.thread_id AND p.digest = r.payload"
    )


RowT = TypeVar("RowT", WriteRow, BlobRow)


def check_payloads(rows: list[RowT]) -> list[RowT]:
    """The rows read back, after checking that each found its payload (a row whose payload is
    missing comes back with ``data`` None)."""
    for r in rows:
        if r.data is None:
            if isinstance(r, WriteRow):
                what = f"write {r.idx} of task {r.task_id!r} on checkpoint {r.checkpoint_id!r}"
            else:
                what = f"blob {r.channel!r} version {r.version!r}"
            raise DecodeError(
                f"the stored value of {what} (thread {r.thread_id!r}, namespace "
                f"{r.namespace!r}) is missing from the payloads table"
            )
    return rows


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (a driver's may run on with detail and context),
    or its type's name when it has none: what the store's own error quotes."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
