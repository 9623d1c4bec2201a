"""Retention: keep-last-N, idle-thread expiry, dry runs, space reclaimed, and a live writer."""

from __future__ import annotations

import asyncio
import inspect
import random
import threading
import time
from typing import Any

import pytest

from snapstate import AsyncCheckpointer, Checkpoint, Checkpointer, InvalidArgumentError, Progress
from snapstate.backends import BLOB_DELTA, BLOB_FULL, WriteBatch
from snapstate.backends import sqlite as sqlite_backend
from snapstate.backends._async import AsyncBackend, ThreadedAsyncBackend
from snapstate.backends._base import Backend, version_key
from snapstate.backends.memory import MemoryBackend
from snapstate.backends.sqlite import SqliteBackend
from snapstate.errors import DeltaBaseMissingError, ThreadDeletedError

from .fix_backends import BackendFactory


def grow(saver: Checkpointer, thread: str, n: int, *, ns: str = "", start: int = 0) -> list[Any]:
    msgs: list[Any] = []
    for i in range(start, start + n):
        # Incompressible text, so stored sizes follow the number of items.
        msgs = [*msgs, {"i": i, "text": random.Random(i).randbytes(100).hex()}]
        saver.put(
            Checkpoint(
                id=f"{i:08d}",
                channel_values={"messages": msgs, "step": i, "doc": "constant"},
                channel_versions={"messages": i + 1, "step": i + 1, "doc": 1},
            ),
            thread_id=thread,
            namespace=ns,
            changed=["messages", "step"] if i > start else None,
            parent_id=f"{i - 1:08d}" if i > start else None,
            metadata={"step": i},
        )
    return msgs


def grow_idle(
    saver: Checkpointer, monkeypatch: pytest.MonkeyPatch, threads: list[str], n: int = 4
) -> dict[str, list[Any]]:
    """Histories of ``n`` checkpoints per thread, put under a clock set three days back (the
    engine stamps each checkpoint with ``time.time()``)."""
    real = time.time
    then = real() - 3 * 86400
    monkeypatch.setattr(time, "time", lambda: then)
    msgs = {t: grow(saver, t, n) for t in threads}
    monkeypatch.setattr(time, "time", real)
    return msgs


def grown(i: int, msgs: list[Any]) -> dict[str, Any]:
    """The values ``grow`` put at step ``i`` of a thread whose messages grew to ``msgs``."""
    return {"messages": msgs[: i + 1], "step": i, "doc": "constant"}


def assert_whole(saver: Checkpointer, thread: str, msgs: list[Any]) -> None:
    """Every checkpoint ``grow`` put on ``thread`` is stored and reads back exactly."""
    got = list(saver.list(thread))
    assert [s.checkpoint.id for s in got] == [f"{i:08d}" for i in range(len(msgs) - 1, -1, -1)]
    for s in got:
        assert s.checkpoint.channel_values == grown(int(s.checkpoint.id), msgs)


@pytest.fixture
def saver(backend_factory: BackendFactory) -> Checkpointer:
    c = Checkpointer(backend_factory(), delta_keyframe_every=4)
    yield c
    c.close()


def test_keep_last_keeps_history_whole(saver: Checkpointer) -> None:
    msgs = grow(saver, "t", 30)
    grow(saver, "t", 5, ns="sub")
    grow(saver, "other", 3)
    report = saver.retain(keep_last=3, thread_ids=["t"])
    assert report.checkpoints_deleted == 27 + 2
    assert report.blobs_deleted > 0
    assert [s.checkpoint.id for s in saver.list("t", namespace="")] == [
        "00000029",
        "00000028",
        "00000027",
    ]
    for s in saver.list("t", namespace=""):
        i = int(s.checkpoint.id)
        assert s.checkpoint.channel_values == {
            "messages": msgs[: i + 1],
            "step": i,
            "doc": "constant",
        }
    assert len(list(saver.list("t", namespace="sub"))) == 3
    assert len(list(saver.list("other"))) == 3  # not named, untouched
    # Every remaining blob is reachable: another pass finds nothing to delete.
    again = saver.retain(keep_last=3, thread_ids=["t"])
    assert (again.checkpoints_deleted, again.blobs_deleted) == (0, 0)


@pytest.mark.parametrize("how", ["delete_runs", "keep_last", "prune"])
def test_a_delta_never_builds_on_a_value_retention_deleted(
    saver: Checkpointer, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The list this process stored last may belong to a checkpoint that retention deletes
    (a run's, or one older by id than the latest): the next put must not build on it."""
    refused: list[DeltaBaseMissingError] = []
    write = saver.backend.write

    def spy(batch: WriteBatch) -> None:
        try:
            write(batch)
        except DeltaBaseMissingError as exc:
            refused.append(exc)
            raise

    monkeypatch.setattr(saver.backend, "write", spy)
    m1 = [{"i": 1}]
    m2 = [*m1, {"i": 2}]
    m3 = [*m2, {"i": 3}]

    def put(cid: str, value: list[Any], version: int, run: str) -> None:
        saver.put(
            Checkpoint(id=cid, channel_values={"m": value}, channel_versions={"m": version}),
            thread_id="t",
            metadata={"run_id": run},
        )

    put("0002", m1, 1, "r1")
    put("0001", m2, 2, "r2")  # stored last, with the smaller id
    if how == "delete_runs":
        saver.delete_runs(["r2"])
    elif how == "keep_last":
        saver.retain(keep_last=1, thread_ids=["t"])
    else:
        saver.prune(["t"])
    put("0003", m3, 3, "r3")
    # Not built on the deleted list and then stored again whole: never refused at all.
    assert refused == []
    got = Checkpointer(saver.backend).get("t", checkpoint_id="0003")
    assert got is not None and got.checkpoint.channel_values == {"m": m3}


@pytest.mark.parametrize("durability", ["sync", "batched"])
@pytest.mark.parametrize("how", ["delete_runs", "keep_last", "prune"])
def test_another_process_s_retention_never_leaves_a_delta_without_its_base(
    backend_factory: BackendFactory, how: str, durability: str
) -> None:
    """A writer remembers the lists it stored; retention elsewhere (another checkpointer on
    the store, as another process) deletes them. The writer's next put stores whole values
    in place of a delta on a deleted base, and loses nothing."""
    m1 = [{"i": 1}]
    m2 = [*m1, {"i": 2}]
    m3 = [*m2, {"i": 3}]
    with (
        Checkpointer(backend_factory(), durability=durability) as writer,
        Checkpointer(backend_factory()) as other,
    ):

        def put(cid: str, value: list[Any], version: int, run: str, parent: str | None) -> None:
            writer.put(
                Checkpoint(id=cid, channel_values={"m": value}, channel_versions={"m": version}),
                thread_id="t",
                parent_id=parent,
                metadata={"run_id": run},
            )

        put("0002", m1, 1, "r1", None)
        put("0001", m2, 2, "r2", "0002")  # its list is a delta on m1; stored last, smaller id
        writer.flush()
        if how == "delete_runs":
            other.delete_runs(["r1", "r2"])
        elif how == "keep_last":
            other.retain(keep_last=1, thread_ids=["t"])
            other.delete_runs(["r2"])
        else:
            other.prune(["t"])
            other.delete_runs(["r2"])
        put("0003", m3, 3, "r3", "0001")
        writer.flush()
        got = other.get("t", checkpoint_id="0003")
        assert got is not None and got.checkpoint.channel_values == {"m": m3}
        assert got.metadata == {"run_id": "r3"} and got.parent_id == "0001"
        # It was stored whole, and later puts build on it again.
        (row,) = [b for b in other.backend.blob_index("t") if b.version == version_key(3)]
        assert row.kind == BLOB_FULL
        put("0004", [*m3, {"i": 4}], 4, "r3", "0003")
        writer.flush()
        (row,) = [b for b in other.backend.blob_index("t") if b.version == version_key(4)]
        assert row.kind == BLOB_DELTA and row.base == version_key(3)
        assert other.get("t").checkpoint.channel_values == {"m": [*m3, {"i": 4}]}


@pytest.mark.parametrize("durability", ["sync", "batched"])
def test_the_async_engine_stores_whole_values_when_a_base_is_gone(
    backend_factory: BackendFactory, durability: str
) -> None:
    async def main() -> None:
        writer = AsyncCheckpointer(backend_factory(), durability=durability)
        try:
            items = [{"i": 1}, {"i": 2}, {"i": 3}]  # the same objects: the second is a delta
            for i in (1, 2):
                await writer.put(
                    Checkpoint(
                        id=f"000{i}", channel_values={"m": items[:i]}, channel_versions={"m": i}
                    ),
                    thread_id="t",
                    metadata={"run_id": "r1"},
                )
            await writer.flush()
            with Checkpointer(backend_factory()) as other:
                assert [b.kind for b in other.ready().blob_index("t")] == [BLOB_FULL, BLOB_DELTA]
                other.delete_runs(["r1"])
            m3 = items
            await writer.put(
                Checkpoint(id="0003", channel_values={"m": m3}, channel_versions={"m": 3}),
                thread_id="t",
            )
            await writer.flush()
            got = await writer.get("t")
            assert got is not None and got.checkpoint.channel_values == {"m": m3}
        finally:
            await writer.aclose()

    asyncio.run(main())


def test_keep_last_every_thread_and_dry_run(saver: Checkpointer) -> None:
    for t in ("a", "b", "c"):
        grow(saver, t, 6)
    seen: list[Progress] = []
    dry = saver.retain(keep_last=2, dry_run=True, progress=seen.append)
    assert dry.dry_run and dry.threads_scanned == 3 and dry.checkpoints_deleted == 12
    assert sum(1 for _ in saver.list()) == 18  # nothing deleted
    assert [(p.done, p.total) for p in seen] == [(1, 3), (2, 3), (3, 3)]
    real = saver.retain(keep_last=2, chunk=1)
    assert (real.checkpoints_deleted, real.blobs_deleted) == (
        dry.checkpoints_deleted,
        dry.blobs_deleted,
    )
    assert sum(1 for _ in saver.list()) == 6


def test_idle_threads_expire(saver: Checkpointer, monkeypatch: pytest.MonkeyPatch) -> None:
    grow_idle(saver, monkeypatch, ["old"])
    grow(saver, "fresh", 4)
    dry = saver.retain(idle_for=86400, dry_run=True)
    assert (dry.threads_deleted, dry.checkpoints_deleted) == (1, 4)
    assert saver.get("old") is not None
    report = saver.retain(idle_for=86400)
    assert (report.threads_deleted, report.checkpoints_deleted) == (1, 4)
    assert saver.get("old") is None and saver.backend.blob_index("old") == []
    assert saver.get("fresh") is not None


def test_idle_sweep_touches_only_the_named_threads(
    saver: Checkpointer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``thread_ids``, the idle sweep deletes only those threads: another thread just as
    idle stays, whole."""
    msgs = grow_idle(saver, monkeypatch, ["a", "b"])
    values = len(saver.backend.blob_index("a"))
    assert values > 0
    dry = saver.retain(idle_for=86400, thread_ids=["a"], dry_run=True)
    report = saver.retain(idle_for=86400, thread_ids=["a"])
    for r in (dry, report):  # the thread's values are counted with it
        assert (r.threads_deleted, r.checkpoints_deleted, r.blobs_deleted) == (1, 4, values)
    assert saver.backend.blob_index("a") == []
    assert saver.get("a") is None
    assert_whole(saver, "b", msgs["b"])


def test_tombstones_outlive_an_idle_sweep(
    saver: Checkpointer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle sweep (dry or real) purges only tombstones older than its cutoff: a thread
    deleted just now still refuses a late checkpoint of its old history."""
    grow_idle(saver, monkeypatch, ["old"])  # so that the sweep has work to do

    def put(cid: str, parent: str | None) -> None:
        saver.put(
            Checkpoint(id=cid, channel_values={"x": cid}, channel_versions={"x": int(cid)}),
            thread_id="t",
            parent_id=parent,
        )

    put("0001", None)
    put("0002", "0001")
    saver.delete_thread("t")
    assert saver.retain(idle_for=86400, dry_run=True).threads_deleted == 1
    assert saver.retain(idle_for=86400).threads_deleted == 1
    assert saver.get("old") is None
    with pytest.raises(ThreadDeletedError, match=r"thread 't' was deleted; checkpoint '0003'"):
        put("0003", "0002")
    assert saver.get("t") is None


def test_batched_retain_sees_the_writer_s_own_queued_puts(
    backend_factory: BackendFactory,
) -> None:
    """A batched checkpointer commits what it queued before retention reads the store."""
    with Checkpointer(backend_factory(), durability="batched", max_delay=3600) as saver:
        grow(saver, "t", 6)
        report = saver.retain(keep_last=2)
        assert report.checkpoints_deleted == 4
        assert [s.checkpoint.id for s in saver.list("t")] == ["00000005", "00000004"]


def test_retention_deletes_in_chunks(saver: Checkpointer, monkeypatch: pytest.MonkeyPatch) -> None:
    """``chunk`` bounds each delete: checkpoints first, then blobs, never more than ``chunk``
    rows of either per call."""
    msgs = grow(saver, "t", 7)
    calls: list[tuple[int, int]] = []
    delete_rows = saver.backend.delete_rows

    def spy(thread_id: str, checkpoints: Any, blobs: Any) -> int:
        calls.append((len(checkpoints), len(blobs)))
        return delete_rows(thread_id, checkpoints, blobs)

    monkeypatch.setattr(saver.backend, "delete_rows", spy)
    report = saver.retain(keep_last=1, chunk=2)
    assert report.checkpoints_deleted == 6 and report.blobs_deleted > 2
    assert [c for c, _ in calls if c] == [2, 2, 2]
    blob_calls = [b for _, b in calls if b]
    assert sum(blob_calls) == report.blobs_deleted
    assert all(b <= 2 for b in blob_calls)
    latest = saver.get("t")
    assert latest is not None and latest.checkpoint.channel_values["messages"] == msgs


def test_idle_sweep_counts_values_a_chunk_at_a_time(
    saver: Checkpointer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The idle sweep counts the values it deletes with one call per chunk of threads, not by
    reading each thread's index; the count is what the threads held."""
    threads = ["a", "b", "c", "d", "e"]
    grow_idle(saver, monkeypatch, threads)
    held = sum(len(saver.backend.blob_index(t)) for t in threads)
    counted: list[list[str]] = []
    blob_counts = saver.backend.blob_counts

    def counts(thread_ids: Any) -> dict[str, int]:
        counted.append(list(thread_ids))
        return blob_counts(thread_ids)

    def index(thread_id: str) -> Any:
        raise AssertionError(f"the idle sweep read the index of {thread_id!r}")

    monkeypatch.setattr(saver.backend, "blob_counts", counts)
    monkeypatch.setattr(saver.backend, "blob_index", index)
    report = saver.retain(idle_for=86400, chunk=2)
    assert (report.threads_deleted, report.blobs_deleted) == (5, held)
    assert counted == [["a", "b"], ["c", "d"], ["e"]]
    monkeypatch.undo()
    assert all(saver.backend.blob_index(t) == [] for t in threads)


def _pruning(read: Any, other: Checkpointer) -> tuple[Any, list[int]]:
    """``read`` (a backend method or function, sync or async), first running
    ``other.retain(keep_last=2)`` once; the list it returns gets how many checkpoints that
    deleted (marked before retention runs, which may call ``read`` itself)."""
    pruned: list[int] = []

    def prune() -> None:
        if not pruned:
            pruned.append(-1)
            pruned[0] = other.retain(keep_last=2).checkpoints_deleted

    if inspect.iscoroutinefunction(read):

        async def aread(*args: Any) -> Any:
            prune()
            return await read(*args)

        return aread, pruned

    def sread(*args: Any) -> Any:
        prune()
        return read(*args)

    return sread, pruned


def test_reads_leave_out_checkpoints_retention_deletes_meanwhile(
    backend_factory: BackendFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention elsewhere deletes checkpoints, and the values only they reached, between a
    read of their rows and of their values: ``list`` leaves them out, ``get`` of one by id
    finds none, ``get`` of the latest reads it whole; nothing comes back with values missing.
    A value a stored checkpoint never had still reads as absent."""
    with Checkpointer(backend_factory()) as saver, Checkpointer(backend_factory()) as other:
        msgs = grow(saver, "t", 6)
        prune_first, pruned = _pruning(saver.backend.get_blobs, other)
        monkeypatch.setattr(saver.backend, "get_blobs", prune_first)
        snaps = list(saver.list("t"))
        assert pruned == [4]
        assert [s.checkpoint.id for s in snaps] == ["00000005", "00000004"]
        for s in snaps:
            assert s.checkpoint.channel_values == grown(int(s.checkpoint.id), msgs)
        grow(saver, "u", 3)
        pruned.clear()
        assert saver.get("u", checkpoint_id="00000000") is None  # pruned before its values
        pruned.clear()
        latest = saver.get("u")
        assert latest is not None and latest.checkpoint.id == "00000002"
        assert latest.checkpoint.channel_values["messages"] == msgs[:3]
        monkeypatch.undo()
        # A version no value was stored for (never declared changed): absent, as before.
        saver.put(
            Checkpoint(
                id="00000009",
                channel_values={"a": 1, "b": 2},
                channel_versions={"a": 1, "b": 1},
            ),
            thread_id="v",
            changed=["a"],
        )
        got = saver.get("v")
        assert got is not None and got.checkpoint.channel_values == {"a": 1}
        assert [s.checkpoint.channel_values for s in saver.list("v")] == [{"a": 1}]


def test_async_reads_leave_out_checkpoints_retention_deletes_meanwhile(
    backend_factory: BackendFactory,
) -> None:
    async def main() -> None:
        with Checkpointer(backend_factory()) as other:
            msgs = grow(other, "t", 6)
            reader = AsyncCheckpointer(backend_factory())
            try:
                prune_first, pruned = _pruning(reader.backend.get_blobs, other)
                reader.backend.get_blobs = prune_first  # type: ignore[method-assign]
                snaps = [s async for s in reader.list("t")]
                assert pruned == [4]
                assert [s.checkpoint.channel_values["step"] for s in snaps] == [5, 4]
                assert snaps[0].checkpoint.channel_values["messages"] == msgs
                grow(other, "u", 3)
                pruned.clear()
                assert await reader.get("u", checkpoint_id="00000000") is None
                pruned.clear()
                latest = await reader.get("u")
                assert latest is not None and latest.checkpoint.id == "00000002"
                # Deleted after its values were read, before its pending writes: left out.
                grow(other, "w", 6)
                _written(other, "w", 5)
                prune_writes, pruned = _pruning(reader.backend.get_writes, other)
                reader.backend.get_writes = prune_writes  # type: ignore[method-assign]
                snaps = [s async for s in reader.list("w")]
                assert pruned == [4]
                assert [[w.value for w in s.pending_writes] for s in snaps] == [[], ["w4"]]
            finally:
                await reader.aclose()

    asyncio.run(main())


def _written(saver: Checkpointer, thread: str, n: int) -> None:
    """A pending write on each of the first ``n`` checkpoints ``grow`` put on ``thread``."""
    for i in range(n):
        saver.put_writes(
            [("messages", f"w{i}")], thread_id=thread, checkpoint_id=f"{i:08d}", task_id="k"
        )


def test_list_leaves_out_checkpoints_deleted_before_their_writes_were_read(
    backend_factory: BackendFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention elsewhere deletes checkpoints (with their pending writes) after ``list`` read
    their rows and values but before their writes: they are left out, not listed without the
    writes they had. Checkpoints that never had writes still list."""
    with Checkpointer(backend_factory()) as saver, Checkpointer(backend_factory()) as other:
        msgs = grow(saver, "t", 6)
        _written(saver, "t", 5)
        prune_first, pruned = _pruning(saver.backend.get_writes, other)
        monkeypatch.setattr(saver.backend, "get_writes", prune_first)
        snaps = list(saver.list("t"))
        assert pruned == [4]
        assert [s.checkpoint.id for s in snaps] == ["00000005", "00000004"]
        assert [[w.value for w in s.pending_writes] for s in snaps] == [[], ["w4"]]
        assert snaps[1].checkpoint.channel_values == grown(4, msgs)
        monkeypatch.undo()
        assert [s.checkpoint.id for s in saver.list("t")] == ["00000005", "00000004"]


class _LoadsApart(MemoryBackend):
    """The memory backend reading a checkpoint through the contract's default ``load``."""

    load = Backend.load


class _LoadsApartAsync(ThreadedAsyncBackend):
    load = AsyncBackend.load


def _unchanging(saver: Checkpointer, thread: str, n: int) -> None:
    """``n`` checkpoints sharing one value (so retention deletes none of it), each with a
    pending write."""
    for i in range(n):
        saver.put(
            Checkpoint(
                id=f"{i:08d}", channel_values={"doc": "constant"}, channel_versions={"doc": 1}
            ),
            thread_id=thread,
            changed=None if i == 0 else [],
            parent_id=f"{i - 1:08d}" if i else None,
        )
    _written(saver, thread, n)


def test_get_never_returns_a_checkpoint_without_the_writes_deleted_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Read apart (the default ``load``), a checkpoint retention deleted, with its writes,
    between the read of its row and of its writes is looked up again and not returned; its
    values, which kept checkpoints share, are all still there."""
    backend = _LoadsApart()
    with Checkpointer(backend) as saver, Checkpointer(backend) as other:
        _unchanging(saver, "t", 6)
        prune_first, pruned = _pruning(backend.get_writes, other)
        monkeypatch.setattr(backend, "get_writes", prune_first)
        assert saver.get("t", checkpoint_id="00000003") is None
        assert pruned == [4]
        latest = saver.get("t")
        assert latest is not None and latest.checkpoint.id == "00000005"
        assert [w.value for w in latest.pending_writes] == ["w5"]

    async def main() -> None:
        shared = _LoadsApart()
        with Checkpointer(shared) as writer:
            _unchanging(writer, "a", 6)
            reader = AsyncCheckpointer(_LoadsApartAsync(shared, offload=False))
            prune_later, pruned = _pruning(reader.backend.get_writes, writer)
            reader.backend.get_writes = prune_later  # type: ignore[method-assign]
            assert await reader.get("a", checkpoint_id="00000002") is None
            assert pruned == [4]

    asyncio.run(main())


def test_sqlite_reads_a_checkpoint_and_its_writes_in_one_transaction(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention committing right after ``get`` read a checkpoint's row does not reach the
    writes it reads next: the checkpoint comes back whole, as of the moment its row was read."""
    path = str(tmp_path / "s.db")
    with Checkpointer(SqliteBackend(path)) as saver, Checkpointer(SqliteBackend(path)) as other:
        _unchanging(saver, "t", 6)
        # Retention reads rows through this function too.
        prune_first, pruned = _pruning(sqlite_backend._checkpoint_row, other)
        monkeypatch.setattr(sqlite_backend, "_checkpoint_row", prune_first)
        got = saver.get("t", checkpoint_id="00000003")
        assert pruned == [4]
        assert got is not None and [w.value for w in got.pending_writes] == ["w3"]
        assert saver.backend.get_checkpoint("t", "", "00000003") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "retain needs a policy"),
        ({"keep_last": 0}, "keep_last must be an int >= 1, got 0"),
        ({"keep_last": True}, "keep_last must be an int >= 1, got True"),
        ({"idle_for": -1}, "idle_for must be seconds > 0, got -1"),
        ({"keep_last": 1, "thread_ids": "t"}, "not a single str"),
    ],
)
def test_retain_rejects_bad_policies(
    saver: Checkpointer, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        saver.retain(**kwargs)


def test_stats_count_rows_and_bytes(saver: Checkpointer) -> None:
    grow(saver, "a", 5)
    saver.put_writes([("w", "x" * 100)], thread_id="a", checkpoint_id="00000004", task_id="k")
    st = saver.stats()
    assert (st.threads, st.checkpoints, st.writes) == (1, 5, 1)
    assert set(st.channels) == {"messages", "step", "doc"}
    assert st.channels["doc"][0] == 1 and st.channels["messages"][0] == 5
    assert st.blobs == 11 and st.blob_bytes == sum(b for _, b in st.channels.values())
    assert st.write_bytes > 100 and st.checkpoint_bytes > 0


def test_sqlite_gives_space_back(tmp_path: Any) -> None:
    path = tmp_path / "s.db"
    with Checkpointer(SqliteBackend(path), delta_keyframe_every=0) as saver:
        grow(saver, "t", 120)
        before = saver.stats().file_bytes
        report = saver.retain(keep_last=1)
        assert report.bytes_reclaimed > 0
        after = saver.stats()
        assert after.file_bytes is not None and before is not None
        assert after.file_bytes < before / 4
        assert after.free_bytes == 0


def test_retention_alongside_a_live_writer(backend_factory: BackendFactory) -> None:
    writer = Checkpointer(backend_factory(), delta_keyframe_every=4)
    sweeper = Checkpointer(backend_factory())
    stop = threading.Event()
    sweeping = threading.Event()
    expected: dict[str, list[Any]] = {}
    errors: list[BaseException] = []

    def write() -> None:
        try:
            sweeping.wait(10)  # overlap with the sweeps for certain
            msgs: list[Any] = []
            for i in range(150):
                msgs = [*msgs, {"i": i}]
                writer.put(
                    Checkpoint(
                        id=f"{i:08d}",
                        channel_values={"messages": msgs, "doc": "same"},
                        channel_versions={"messages": i + 1, "doc": 1},
                    ),
                    thread_id="live",
                    changed=["messages"] if i else None,
                )
                expected[f"{i:08d}"] = list(msgs)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            stop.set()

    t = threading.Thread(target=write)
    t.start()
    sweeps = 0
    while not stop.is_set():
        sweeping.set()
        sweeper.retain(keep_last=5, thread_ids=["live"])
        sweeps += 1
    t.join()
    assert not errors, errors
    assert sweeps > 0
    # Everything still stored reads back exactly as written, and nothing of the newest is lost.
    remaining = list(sweeper.list("live"))
    assert remaining[0].checkpoint.id == "00000149"
    for s in remaining:
        assert s.checkpoint.channel_values == {
            "messages": expected[s.checkpoint.id],
            "doc": "same",
        }
    sweeper.retain(keep_last=5, thread_ids=["live"])
    assert [s.checkpoint.id for s in sweeper.list("live")] == [
        f"{i:08d}" for i in range(149, 144, -1)
    ]
    latest = sweeper.get("live")
    assert (
        latest is not None and latest.checkpoint.channel_values["messages"] == expected["00000149"]
    )


def test_postgres_retention_skips_rows_a_writer_holds(pg_dsn: str, pg_schema: str) -> None:
    """Retention never waits on a live writer: locked rows stay, and their blobs with them."""
    import psycopg

    from snapstate.backends.postgres import PostgresBackend

    saver = Checkpointer(PostgresBackend(pg_dsn, schema=pg_schema), delta_keyframe_every=4)
    try:
        msgs = grow(saver, "t", 10)
        with psycopg.connect(pg_dsn) as other:
            # A writer's open transaction holds checkpoint 00000002's row.
            other.execute(
                f'SELECT 1 FROM "{pg_schema}".checkpoints WHERE thread_id = %s '
                "AND checkpoint_id = %s FOR UPDATE",
                ("t", "00000002"),
            )
            start = time.monotonic()
            report = saver.retain(keep_last=2, thread_ids=["t"])
            assert time.monotonic() - start < 30  # did not wait for the writer
            assert report.checkpoints_deleted == 7 and report.blobs_deleted == 0
            ids = [s.checkpoint.id for s in saver.list("t")]
            assert ids == ["00000009", "00000008", "00000002"]
            # The skipped checkpoint still reads whole: its blobs were kept.
            kept = saver.get("t", checkpoint_id="00000002")
            assert kept is not None and kept.checkpoint.channel_values["messages"] == msgs[:3]
            other.rollback()
        report = saver.retain(keep_last=2, thread_ids=["t"])
        assert report.checkpoints_deleted == 1 and report.blobs_deleted > 0
        assert [s.checkpoint.id for s in saver.list("t")] == ["00000009", "00000008"]
        latest = saver.get("t")
        assert latest is not None and latest.checkpoint.channel_values["messages"] == msgs
    finally:
        saver.close()


def test_stats_report_compression(saver: Checkpointer) -> None:
    text = "the same words again and again " * 400  # about 12 KB, compresses well
    saver.put(
        Checkpoint(id="00000001", channel_values={"doc": text}, channel_versions={"doc": 1}),
        thread_id="t",
    )
    st = saver.stats()
    assert st.raw_blob_bytes is not None
    assert st.raw_blob_bytes > 5 * st.blob_bytes
    assert st.raw_blob_bytes >= len(text)
