"""An in-process backend for tests and short-lived runs. Nothing survives the process.

It stores the same encoded rows as the durable backends, so it exercises the codec and the
engine exactly as they run in production.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterator, Sequence

import msgspec

from .. import _forksafe
from ._base import (
    Backend,
    BlobRef,
    BlobRow,
    CheckpointRow,
    ListQuery,
    WriteBatch,
    WriteRow,
    check_tombstones,
    delta_bases,
    metadata_matches,
    missing_base,
)

__all__ = ["MemoryBackend"]

_Key = tuple[str, str]  # (thread_id, namespace)


class MemoryBackend(Backend):
    """Rows in dictionaries behind one lock."""

    name = "memory"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        _forksafe.track(self)
        self._checkpoints: dict[_Key, dict[str, CheckpointRow]] = {}
        self._blobs: dict[_Key, dict[tuple[str, str], BlobRow]] = {}
        self._writes: dict[_Key, dict[str, dict[tuple[str, int], WriteRow]]] = {}
        self._tombstones: dict[str, tuple[str, float]] = {}

    def _start_in_child(self) -> None:
        """In a forked child: a lock of its own; the rows are the child's copy of the parent's
        (see snapstate._forksafe)."""
        self._lock = threading.RLock()

    def setup(self) -> None:
        pass

    def write(self, batch: WriteBatch) -> None:
        with self._lock:
            check_tombstones(batch, {t: last for t, (last, _) in self._tombstones.items()})
            missing = [
                k for k in delta_bases(batch) if (k[2], k[3]) not in self._blobs.get(k[:2], {})
            ]
            if missing:
                raise missing_base(missing)
            # Nothing below can fail half-way: every step is a dict assignment.
            for w in batch.writes:
                per = self._writes.setdefault((w.thread_id, w.namespace), {}).setdefault(
                    w.checkpoint_id, {}
                )
                per.setdefault((w.task_id, w.idx), w)
            for w in batch.replace_writes:
                per = self._writes.setdefault((w.thread_id, w.namespace), {}).setdefault(
                    w.checkpoint_id, {}
                )
                per[(w.task_id, w.idx)] = w
            for b in batch.blobs:
                self._blobs.setdefault((b.thread_id, b.namespace), {}).setdefault(
                    (b.channel, b.version), b
                )
            for c in batch.checkpoints:
                self._checkpoints.setdefault((c.thread_id, c.namespace), {})[c.checkpoint_id] = c

    def get_checkpoint(
        self, thread_id: str, namespace: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        with self._lock:
            rows = self._checkpoints.get((thread_id, namespace))
            if not rows:
                return None
            if checkpoint_id is None:
                return rows[max(rows)]
            return rows.get(checkpoint_id)

    def list_checkpoints(self, query: ListQuery) -> Iterator[CheckpointRow]:
        with self._lock:
            candidates = [
                row
                for (thread_id, namespace), rows in self._checkpoints.items()
                if (query.thread_id is None or thread_id == query.thread_id)
                and (query.namespace is None or namespace == query.namespace)
                for row in rows.values()
            ]
        candidates.sort(key=lambda r: r.checkpoint_id, reverse=True)
        count = 0
        for row in candidates:
            if query.limit is not None and count >= query.limit:
                return
            if query.checkpoint_id is not None and row.checkpoint_id != query.checkpoint_id:
                continue
            if query.before is not None and not row.checkpoint_id < query.before:
                continue
            if query.filter and not metadata_matches(
                msgspec.json.decode(row.metadata), query.filter
            ):
                continue
            count += 1
            yield row

    def get_blobs(
        self, thread_id: str, namespace: str, keys: Collection[tuple[str, str]]
    ) -> list[BlobRow]:
        with self._lock:
            blobs = self._blobs.get((thread_id, namespace), {})
            return [blobs[k] for k in keys if k in blobs]

    def load(
        self, thread_id: str, namespace: str, checkpoint_id: str | None
    ) -> tuple[CheckpointRow, list[BlobRow], list[WriteRow]] | None:
        """The row and its writes under one hold of the lock, as of one moment."""
        with self._lock:
            row = self.get_checkpoint(thread_id, namespace, checkpoint_id)
            if row is None:
                return None
            return row, [], self.get_writes(thread_id, namespace, [row.checkpoint_id])

    def get_writes(
        self, thread_id: str, namespace: str, checkpoint_ids: Collection[str]
    ) -> list[WriteRow]:
        with self._lock:
            per_thread = self._writes.get((thread_id, namespace), {})
            return [w for cid in checkpoint_ids for w in per_thread.get(cid, {}).values()]

    def delete_threads(self, thread_ids: Sequence[str]) -> None:
        with self._lock:
            self._delete_threads(set(thread_ids))

    def delete_idle_threads(self, thread_ids: Sequence[str], idle_before: float) -> list[str]:
        wanted = set(thread_ids)
        with self._lock:
            newest: dict[str, float] = {}
            for (tid, _ns), rows in self._checkpoints.items():
                if tid in wanted and rows:
                    last = max(r.created_at for r in rows.values())
                    newest[tid] = max(newest.get(tid, last), last)
            idle = sorted(t for t, last in newest.items() if last < idle_before)
            self._delete_threads(set(idle))
            return idle

    def _delete_threads(self, doomed: set[str]) -> None:
        """Tombstones for those threads, then every row of them; the caller holds the lock."""
        last: dict[str, str] = {}
        for (tid, _ns), rows in self._checkpoints.items():
            if tid in doomed and rows:
                last[tid] = max(last.get(tid, ""), max(rows))
        for (tid, _ns), per in self._writes.items():
            if tid in doomed and per:
                last[tid] = max(last.get(tid, ""), max(per))
        now = time.time()
        for tid, cid in last.items():
            old = self._tombstones.get(tid)
            self._tombstones[tid] = (max(cid, old[0]) if old else cid, now)
        for table in (self._checkpoints, self._blobs, self._writes):
            for key in [k for k in table if k[0] in doomed]:
                del table[key]  # type: ignore[attr-defined]

    def purge_tombstones(self, deleted_before: float) -> int:
        with self._lock:
            old = [t for t, (_, at) in self._tombstones.items() if at < deleted_before]
            for t in old:
                del self._tombstones[t]
            return len(old)

    def blob_index(self, thread_id: str) -> list[BlobRef]:
        with self._lock:
            return [
                BlobRef(b.namespace, b.channel, b.version, b.kind, b.base)
                for (tid, _ns), blobs in self._blobs.items()
                if tid == thread_id
                for b in blobs.values()
            ]

    def blob_counts(self, thread_ids: Sequence[str]) -> dict[str, int]:
        wanted = set(thread_ids)
        out: dict[str, int] = {}
        with self._lock:  # one pass over the store, not one per thread
            for (tid, _ns), blobs in self._blobs.items():
                if tid in wanted:
                    out[tid] = out.get(tid, 0) + len(blobs)
        return out

    def delete_rows(
        self,
        thread_id: str,
        checkpoints: Collection[tuple[str, str]],
        blobs: Collection[tuple[str, str, str]],
    ) -> int:
        with self._lock:
            doomed: dict[str, set[str]] = {}
            for ns, cid in checkpoints:
                doomed.setdefault(ns, set()).add(cid)
            for ns, cids in doomed.items():
                rows = self._checkpoints.get((thread_id, ns), {})
                writes = self._writes.get((thread_id, ns), {})
                for cid in cids:
                    rows.pop(cid, None)
                    writes.pop(cid, None)
                for cid, row in list(rows.items()):
                    if row.parent_id in cids:
                        rows[cid] = msgspec.structs.replace(row, parent_id=None)
            gone = 0
            for ns, channel, version in blobs:
                gone += (
                    self._blobs.get((thread_id, ns), {}).pop((channel, version), None) is not None
                )
            return len(checkpoints) + gone

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        with self._lock:
            # Copying into a thread id is a deliberate new history for it.
            self._tombstones.pop(target_thread_id, None)
            super().copy_thread(source_thread_id, target_thread_id)
