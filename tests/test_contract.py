"""The storage contract, run against every backend through the engine.

Each test gets a fresh store from ``backend_factory`` (memory, sqlite, postgres).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from snapstate import (
    AsyncCheckpointer,
    Checkpoint,
    Checkpointer,
    EncodeError,
    InvalidArgumentError,
    SnapstateError,
)
from snapstate.backends import BLOB_DELTA, BLOB_EMPTY, BLOB_FULL, BlobRow, CheckpointRow, WriteBatch
from snapstate.errors import DeltaBaseMissingError, ThreadDeletedError

from .fix_backends import BackendFactory


def cp(i: int, values: dict[str, Any], versions: dict[str, Any] | None = None, **kw: Any):
    return Checkpoint(
        id=f"{i:08d}",
        channel_values=values,
        channel_versions=versions if versions is not None else {k: i + 1 for k in values},
        **kw,
    )


@pytest.fixture
def saver(backend_factory: BackendFactory) -> Checkpointer:
    c = Checkpointer(backend_factory())
    yield c
    c.close()


# -- round trips ---------------------------------------------------------------------------------


def test_round_trip_every_field(saver: Checkpointer) -> None:
    c = cp(
        1,
        {"a": 1, "b": {"nested": [1, 2.5, "x", None, True]}, "c": "text"},
        versions={"a": "v1", "b": "v1", "c": "v1"},
        versions_seen={"node": {"a": "v1"}, "__input__": {}},
        ts="2026-01-01T00:00:00+00:00",
        extra={"v": 4, "updated_channels": ["a", "b"]},
    )
    saver.put(c, thread_id="t1", metadata={"source": "loop", "step": 3, "run_id": "r1"})
    got = saver.get("t1")
    assert got is not None
    assert got.thread_id == "t1" and got.namespace == ""
    assert got.checkpoint == c
    assert got.metadata == {"source": "loop", "step": 3, "run_id": "r1"}
    assert got.parent_id is None
    assert got.pending_writes == []
    assert got.created_at > 0


def test_latest_and_by_id(saver: Checkpointer) -> None:
    for i in range(3):
        saver.put(cp(i, {"x": i}), thread_id="t", parent_id=f"{i - 1:08d}" if i else None)
    latest = saver.get("t")
    assert latest is not None
    assert latest.checkpoint.id == "00000002"
    assert latest.parent_id == "00000001"
    first = saver.get("t", checkpoint_id="00000000")
    assert first is not None and first.checkpoint.channel_values == {"x": 0}
    assert saver.get("t", checkpoint_id="nope") is None
    assert saver.get("missing-thread") is None


def test_put_same_id_overwrites(saver: Checkpointer) -> None:
    saver.put(cp(1, {"x": 1}), thread_id="t", metadata={"n": 1})
    saver.put(cp(1, {"x": 1}), thread_id="t", metadata={"n": 2})
    assert [s.metadata["n"] for s in saver.list("t")] == [2]


def test_only_changed_channels_are_stored(saver: Checkpointer) -> None:
    saver.put(cp(1, {"big": "B" * 1000, "small": 1}, {"big": 1, "small": 1}), thread_id="t")
    saver.put(
        cp(2, {"big": "B" * 1000, "small": 2}, {"big": 1, "small": 2}),
        thread_id="t",
        changed={"small": 2},
    )
    saver.put(
        cp(3, {"big": "B" * 1000, "small": 3}, {"big": 1, "small": 3}),
        thread_id="t",
        changed=["small"],
    )
    index = saver.backend.blob_index("t")
    assert sorted((b.channel, b.version) for b in index) == [
        ("big", "1"),
        ("small", "1"),
        ("small", "2"),
        ("small", "3"),
    ]
    for i in (1, 2, 3):
        got = saver.get("t", checkpoint_id=f"{i:08d}")
        assert got is not None
        assert got.checkpoint.channel_values == {"big": "B" * 1000, "small": i}


def test_changed_channel_without_value_is_empty(saver: Checkpointer) -> None:
    saver.put(
        cp(1, {"a": 1}, {"a": 1, "branch:to:x": 1}),
        thread_id="t",
        changed={"a": 1, "branch:to:x": 1},
    )
    got = saver.get("t")
    assert got is not None
    assert got.checkpoint.channel_values == {"a": 1}
    assert got.checkpoint.channel_versions == {"a": 1, "branch:to:x": 1}
    kinds = {b.channel: b.kind for b in saver.backend.blob_index("t")}
    assert kinds == {"a": BLOB_FULL, "branch:to:x": BLOB_EMPTY}


def test_channel_removed_from_versions_is_not_returned(saver: Checkpointer) -> None:
    saver.put(cp(1, {"a": 1, "b": 2}), thread_id="t")
    saver.put(cp(2, {"a": 1}, {"a": 2}), thread_id="t", changed={"a": 2})
    got = saver.get("t")
    assert got is not None and got.checkpoint.channel_values == {"a": 1}


def test_versions_of_each_type(saver: Checkpointer) -> None:
    saver.put(cp(1, {"a": "x"}, {"a": 1}), thread_id="int")
    saver.put(cp(1, {"a": "y"}, {"a": 1.5}), thread_id="float")
    saver.put(cp(1, {"a": "z"}, {"a": "00000000000000000000000000000001.0.5"}), thread_id="str")
    for tid, val in (("int", "x"), ("float", "y"), ("str", "z")):
        got = saver.get(tid)
        assert got is not None and got.checkpoint.channel_values == {"a": val}
    got = saver.get("float")
    assert got is not None and got.checkpoint.channel_versions == {"a": 1.5}


def test_reopened_store_reads_the_same(backend_factory: BackendFactory) -> None:
    with Checkpointer(backend_factory()) as a:
        a.put(cp(1, {"x": [1, 2, 3]}), thread_id="t", metadata={"k": "v"})
        a.put_writes([("ch", "w")], thread_id="t", checkpoint_id="00000001", task_id="task")
    with Checkpointer(backend_factory()) as b:
        got = b.get("t")
        assert got is not None
        assert got.checkpoint.channel_values == {"x": [1, 2, 3]}
        assert got.metadata == {"k": "v"}
        assert [(w.channel, w.value) for w in got.pending_writes] == [("ch", "w")]


# -- namespaces ----------------------------------------------------------------------------------


def test_namespaces_are_isolated(saver: Checkpointer) -> None:
    saver.put(cp(1, {"x": "root"}), thread_id="t")
    saver.put(cp(2, {"x": "child"}), thread_id="t", namespace="node:abc")
    root = saver.get("t")
    child = saver.get("t", "node:abc")
    assert root is not None and root.checkpoint.channel_values == {"x": "root"}
    assert child is not None and child.checkpoint.channel_values == {"x": "child"}
    assert child.namespace == "node:abc"
    assert saver.get("t", "other") is None
    assert [s.namespace for s in saver.list("t")] == ["node:abc", ""]
    assert [s.namespace for s in saver.list("t", namespace="")] == [""]
    assert [s.namespace for s in saver.list("t", namespace="node:abc")] == ["node:abc"]


# -- list ----------------------------------------------------------------------------------------


@pytest.fixture
def history(saver: Checkpointer) -> Checkpointer:
    for t in ("a", "b"):
        for i in range(5):
            saver.put(
                cp(i * 2 + (t == "b"), {"x": i, "t": t}),
                thread_id=t,
                metadata={
                    "step": i,
                    "source": "input" if i == 0 else "loop",
                    "even": i % 2 == 0,
                    "thread": t,
                    "maybe": None if i == 3 else "set",
                    "parents": {"": "p"} if i == 4 else {},
                },
            )
    return saver


def ids(snaps: Any) -> list[str]:
    return [s.checkpoint.id for s in snaps]


def test_list_newest_first(history: Checkpointer) -> None:
    assert ids(history.list("a")) == [f"{i:08d}" for i in (8, 6, 4, 2, 0)]


def test_list_all_threads(history: Checkpointer) -> None:
    assert ids(history.list()) == [f"{i:08d}" for i in range(9, -1, -1)]
    assert {s.thread_id for s in history.list(limit=2)} == {"a", "b"}


def test_list_before_and_limit(history: Checkpointer) -> None:
    assert ids(history.list("a", before="00000006")) == ["00000004", "00000002", "00000000"]
    assert ids(history.list("a", before="00000006", limit=2)) == ["00000004", "00000002"]
    assert ids(history.list("a", limit=1)) == ["00000008"]
    assert ids(history.list("a", limit=0)) == []
    assert ids(history.list(before="00000003")) == ["00000002", "00000001", "00000000"]


def test_list_by_checkpoint_id(history: Checkpointer) -> None:
    assert ids(history.list("a", checkpoint_id="00000004")) == ["00000004"]
    assert ids(history.list("b", checkpoint_id="00000004")) == []


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"step": 2}, ["00000004"]),
        ({"source": "input"}, ["00000000"]),
        ({"source": "loop", "step": 1}, ["00000002"]),
        ({"even": True}, ["00000008", "00000004", "00000000"]),
        ({"even": False}, ["00000006", "00000002"]),
        ({"maybe": None}, ["00000006"]),
        ({"parents": {"": "p"}}, ["00000008"]),
        ({"step": 99}, []),
        ({"no-such-key": 1}, []),
        ({"step": True}, []),  # a bool is not the number 1
        ({"even": 1}, []),  # nor is 1 a bool
    ],
)
def test_list_metadata_filter(history: Checkpointer, flt: dict[str, Any], expected: list[str]):
    assert ids(history.list("a", filter=flt)) == expected


def test_list_filter_across_threads(history: Checkpointer) -> None:
    assert ids(history.list(filter={"step": 0})) == ["00000001", "00000000"]
    assert ids(history.list(filter={"thread": "b", "step": 0})) == ["00000001"]


@pytest.mark.parametrize("key", ["x') OR 1=1 --", 'a"b', "$.x", "", "a b", "k\x00", "ключ"])
def test_filter_key_is_validated(history: Checkpointer, key: str) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid metadata filter key"):
        list(history.list("a", filter={key: 1}))


def test_filter_value_must_be_json(history: Checkpointer) -> None:
    with pytest.raises(InvalidArgumentError, match="'step' is not a JSON value: object"):
        list(history.list("a", filter={"step": object()}))


def test_list_shares_unchanged_channels(saver: Checkpointer) -> None:
    saver.put(cp(1, {"doc": "D" * 100, "n": 1}, {"doc": 1, "n": 1}), thread_id="t")
    for i in range(2, 6):
        saver.put(
            cp(i, {"doc": "D" * 100, "n": i}, {"doc": 1, "n": i}), thread_id="t", changed=["n"]
        )
    snaps = list(saver.list("t"))
    assert [s.checkpoint.channel_values["n"] for s in snaps] == [5, 4, 3, 2, 1]
    assert all(s.checkpoint.channel_values["doc"] == "D" * 100 for s in snaps)


# -- pending writes ------------------------------------------------------------------------------


def test_pending_writes_sorted_by_path_task_idx(saver: Checkpointer) -> None:
    saver.put(cp(1, {"x": 1}), thread_id="t")
    saver.put_writes(
        [("c", 3), ("d", 4)],
        thread_id="t",
        checkpoint_id="00000001",
        task_id="t2",
        task_path="~a",
    )
    saver.put_writes(
        [("a", 1), ("b", 2)],
        thread_id="t",
        checkpoint_id="00000001",
        task_id="t1",
        task_path="~a",
    )
    saver.put_writes(
        [("e", 5)], thread_id="t", checkpoint_id="00000001", task_id="t9", task_path=""
    )
    got = saver.get("t")
    assert got is not None
    assert [(w.task_path, w.task_id, w.idx, w.channel, w.value) for w in got.pending_writes] == [
        ("", "t9", 0, "e", 5),
        ("~a", "t1", 0, "a", 1),
        ("~a", "t1", 1, "b", 2),
        ("~a", "t2", 0, "c", 3),
        ("~a", "t2", 1, "d", 4),
    ]


def test_put_writes_first_write_wins(saver: Checkpointer) -> None:
    saver.put(cp(1, {"x": 1}), thread_id="t")
    saver.put_writes([("a", "first")], thread_id="t", checkpoint_id="00000001", task_id="k")
    saver.put_writes([("a", "second")], thread_id="t", checkpoint_id="00000001", task_id="k")
    got = saver.get("t")
    assert got is not None and [w.value for w in got.pending_writes] == ["first"]


def test_put_writes_replace_and_explicit_indices(saver: Checkpointer) -> None:
    saver.put(cp(1, {"x": 1}), thread_id="t")
    kw = {"thread_id": "t", "checkpoint_id": "00000001", "task_id": "k"}
    saver.put_writes([("__error__", "boom")], indices=[-1], replace=True, **kw)
    saver.put_writes([("__error__", "boom2")], indices=[-1], replace=True, **kw)
    saver.put_writes([("a", 1)], **kw)
    got = saver.get("t")
    assert got is not None
    assert [(w.idx, w.channel, w.value) for w in got.pending_writes] == [
        (-1, "__error__", "boom2"),
        (0, "a", 1),
    ]


def test_writes_may_arrive_before_their_checkpoint(saver: Checkpointer) -> None:
    saver.put_writes([("a", 1)], thread_id="t", checkpoint_id="00000002", task_id="k")
    assert saver.get("t") is None
    saver.put(cp(2, {"x": 1}), thread_id="t")
    got = saver.get("t")
    assert got is not None and [w.value for w in got.pending_writes] == [1]


def test_writes_belong_to_their_checkpoint_and_namespace(saver: Checkpointer) -> None:
    saver.put(cp(1, {"x": 1}), thread_id="t")
    saver.put(cp(1, {"x": 1}), thread_id="t", namespace="sub")
    saver.put(cp(2, {"x": 2}), thread_id="t")
    saver.put_writes(
        [("a", "ns")], thread_id="t", namespace="sub", checkpoint_id="00000001", task_id="k"
    )
    saver.put_writes([("a", "old")], thread_id="t", checkpoint_id="00000001", task_id="k")
    latest = saver.get("t")
    assert latest is not None and latest.pending_writes == []
    old = saver.get("t", checkpoint_id="00000001")
    assert old is not None and [w.value for w in old.pending_writes] == ["old"]
    sub = saver.get("t", "sub")
    assert sub is not None and [w.value for w in sub.pending_writes] == ["ns"]
    assert [len(s.pending_writes) for s in saver.list("t", namespace="")] == [0, 1]


# -- deletes and retention -----------------------------------------------------------------------


def test_delete_thread(saver: Checkpointer) -> None:
    for t in ("a", "b"):
        saver.put(cp(1, {"x": t}), thread_id=t)
        saver.put(cp(1, {"x": t}), thread_id=t, namespace="sub")
        saver.put_writes([("w", 1)], thread_id=t, checkpoint_id="00000001", task_id="k")
    saver.delete_thread("a")
    saver.delete_thread("never-existed")
    assert saver.get("a") is None and saver.get("a", "sub") is None
    assert list(saver.list("a")) == []
    assert saver.backend.blob_index("a") == []
    b = saver.get("b")
    assert b is not None and b.checkpoint.channel_values == {"x": "b"}
    assert len(b.pending_writes) == 1


def test_delete_runs_keeps_shared_blobs(saver: Checkpointer) -> None:
    saver.put(
        cp(1, {"doc": "shared", "n": 1}, {"doc": 1, "n": 1}),
        thread_id="t",
        metadata={"run_id": "r1"},
    )
    saver.put(
        cp(2, {"doc": "shared", "n": 2}, {"doc": 1, "n": 2}),
        thread_id="t",
        metadata={"run_id": "r2"},
        changed=["n"],
        parent_id="00000001",
    )
    saver.put_writes([("a", 1)], thread_id="t", checkpoint_id="00000001", task_id="k")
    saver.put(cp(1, {"n": 0}), thread_id="other", metadata={"run_id": "r1"})
    saver.delete_runs(["r1"])
    assert ids(saver.list("t")) == ["00000002"]
    assert saver.get("other") is None
    got = saver.get("t")
    assert got is not None
    assert got.checkpoint.channel_values == {"doc": "shared", "n": 2}
    assert got.parent_id is None  # its parent is gone
    assert sorted((b.channel, b.version) for b in saver.backend.blob_index("t")) == [
        ("doc", "1"),
        ("n", "2"),
    ]
    assert saver.get("t", checkpoint_id="00000001") is None
    saver.delete_runs([])
    saver.delete_runs(["no-such-run"])
    with pytest.raises(InvalidArgumentError):
        saver.delete_runs("r2")  # type: ignore[arg-type]


def test_copy_thread_keeps_ids_and_everything(saver: Checkpointer) -> None:
    saver.put(cp(1, {"m": [1]}), thread_id="src")
    saver.put(cp(2, {"m": [1, 2]}), thread_id="src", parent_id="00000001")
    saver.put(cp(3, {"m": [9]}), thread_id="src", namespace="sub")
    saver.put_writes([("a", 1)], thread_id="src", checkpoint_id="00000002", task_id="k")
    saver.copy_thread("src", "dst")
    src = [
        (s.namespace, s.checkpoint, s.metadata, s.parent_id, s.pending_writes)
        for s in saver.list("src")
    ]
    dst = [
        (s.namespace, s.checkpoint, s.metadata, s.parent_id, s.pending_writes)
        for s in saver.list("dst")
    ]
    assert dst == src and len(dst) == 3
    saver.delete_thread("src")
    got = saver.get("dst")
    assert got is not None and got.checkpoint.channel_values == {"m": [1, 2]}
    saver.copy_thread("missing", "empty")
    assert list(saver.list("empty")) == []


def test_prune_keep_latest(saver: Checkpointer) -> None:
    msgs: list[str] = []
    for i in range(6):
        msgs = [*msgs, f"m{i}"]
        saver.put(cp(i, {"m": msgs, "n": i}), thread_id="t", parent_id=None)
        saver.put_writes([("w", i)], thread_id="t", checkpoint_id=f"{i:08d}", task_id="k")
    saver.put(cp(3, {"s": 1}), thread_id="t", namespace="sub")
    saver.put(cp(4, {"s": 2}), thread_id="t", namespace="sub")
    saver.put(cp(0, {"x": 1}), thread_id="untouched")
    saver.prune(["t", "missing"], strategy="keep_latest")
    assert ids(saver.list("t")) == ["00000005", "00000004"]
    got = saver.get("t")
    assert got is not None
    assert got.checkpoint.channel_values == {"m": [f"m{i}" for i in range(6)], "n": 5}
    assert [w.value for w in got.pending_writes] == [5]
    sub = saver.get("t", "sub")
    assert sub is not None and sub.checkpoint.channel_values == {"s": 2}
    # What remains is only what the kept checkpoints reach (delta bases included).
    kept = {(b.namespace, b.channel) for b in saver.backend.blob_index("t")}
    assert kept == {("", "m"), ("", "n"), ("sub", "s")}
    assert saver.get("untouched") is not None
    saver.prune([])


def test_prune_delete(saver: Checkpointer) -> None:
    saver.put(cp(1, {"x": 1}), thread_id="a")
    saver.put(cp(1, {"x": 1}), thread_id="b")
    saver.prune(["a"], strategy="delete")
    saver.prune(["b"], strategy="delete_all")
    assert saver.get("a") is None and saver.get("b") is None
    with pytest.raises(InvalidArgumentError, match="unknown prune strategy"):
        saver.prune(["a"], strategy="bogus")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="not a single str"):
        saver.prune("a")  # type: ignore[arg-type]


def test_blob_counts_match_each_thread_s_index(saver: Checkpointer) -> None:
    """``blob_counts`` counts a thread's values in every namespace, for many threads at once
    (more than one SQL chunk), and leaves out or zeroes a thread with none."""
    backend = saver.ready()
    many = [f"t{i:04d}" for i in range(450)]
    batch = WriteBatch()
    for i, t in enumerate(many):
        for v in range(i % 4):
            batch.blobs.append(BlobRow(t, "", "m", str(v), BLOB_FULL, None, b"x"))
        if i % 3 == 0:
            batch.blobs.append(BlobRow(t, "sub:1", "m", "9", BLOB_FULL, None, b"y"))
    backend.write(batch)
    asked = [*many, "never-written"]
    counts = backend.blob_counts(asked)
    assert set(counts) <= set(asked)
    for t in asked:
        assert counts.get(t, 0) == len(backend.blob_index(t)), t
    assert counts["t0003"] == 4 and counts["t0002"] == 2
    assert backend.blob_counts([]) == {}


def test_delete_idle_threads_looks_again_as_it_deletes(saver: Checkpointer) -> None:
    """Of the threads named, only those whose newest checkpoint is still older than the cutoff
    go (with a tombstone each); one written since it was listed stays, whole."""
    backend = saver.ready()

    def row(t: str, cid: str, at: float) -> CheckpointRow:
        return CheckpointRow(t, "", cid, None, None, at, b"{}", b"")

    backend.write(WriteBatch(checkpoints=[row("old", "0001", 10.0), row("old", "0002", 20.0)]))
    backend.write(WriteBatch(checkpoints=[row("busy", "0001", 10.0)]))
    backend.write(WriteBatch(checkpoints=[row("other", "0001", 10.0)]))
    backend.write(WriteBatch(checkpoints=[row("busy", "0002", 500.0)]))  # taken up again
    assert backend.delete_idle_threads(["old", "busy", "none"], 100.0) == ["old"]
    assert backend.get_checkpoint("old", "", None) is None
    assert backend.get_checkpoint("busy", "", None) is not None
    assert backend.get_checkpoint("other", "", None) is not None  # not named
    with pytest.raises(ThreadDeletedError):
        backend.write(WriteBatch(checkpoints=[row("old", "0002", 30.0)]))
    assert backend.delete_idle_threads([], 100.0) == []


def test_retention_deletes_values_a_killed_run_left(saver: Checkpointer) -> None:
    """A run killed after deleting checkpoints and before the values only they reached leaves
    those values; the next run deletes them, though no checkpoint is left to delete."""
    msgs: list[Any] = []
    for i in range(6):
        msgs = [*msgs, {"i": i}]
        saver.put(cp(i, {"m": msgs, "step": i}), thread_id="t")
    backend = saver.ready()
    kept = [f"{i:08d}" for i in (4, 5)]
    doomed = [("", s.checkpoint.id) for s in saver.list("t") if s.checkpoint.id not in kept]
    assert backend.delete_rows("t", doomed, []) == 4  # the checkpoints went; the run died
    left = len(backend.blob_index("t"))
    dry = saver.retain(keep_last=2, dry_run=True)
    report = saver.retain(keep_last=2)
    assert dry.checkpoints_deleted == report.checkpoints_deleted == 0
    assert dry.blobs_deleted == report.blobs_deleted > 0
    assert len(backend.blob_index("t")) == left - report.blobs_deleted
    assert [s.checkpoint.channel_values for s in saver.list("t")] == [
        {"m": msgs, "step": 5},
        {"m": msgs[:5], "step": 4},
    ]
    assert saver.retain(keep_last=2).blobs_deleted == 0


# -- append-deltas -------------------------------------------------------------------------------


def test_append_deltas_read_back_every_version(saver: Checkpointer) -> None:
    msgs: list[Any] = []
    expected = {}
    for i in range(80):
        msgs = [*msgs, {"id": i, "content": f"message {i}"}]
        if i == 40:
            msgs = msgs[:10]  # truncation: not an append, so a keyframe
        saver.put(cp(i, {"messages": msgs}), thread_id="t")
        expected[f"{i:08d}"] = list(msgs)
    kinds = [b.kind for b in saver.backend.blob_index("t")]
    assert kinds.count(BLOB_DELTA) > kinds.count(BLOB_FULL) > 1
    for s in saver.list("t"):
        assert s.checkpoint.channel_values["messages"] == expected[s.checkpoint.id]
    for cid, want in list(expected.items())[::7]:
        got = saver.get("t", checkpoint_id=cid)
        assert got is not None and got.checkpoint.channel_values["messages"] == want


def test_fresh_process_starts_with_a_keyframe(backend_factory: BackendFactory) -> None:
    with Checkpointer(backend_factory()) as a:
        a.put(cp(1, {"m": [1, 2]}), thread_id="t")
        a.put(cp(2, {"m": [1, 2, 3]}), thread_id="t")
    with Checkpointer(backend_factory()) as b:
        b.put(cp(3, {"m": [1, 2, 3, 4]}), thread_id="t")
        got = b.get("t")
        assert got is not None and got.checkpoint.channel_values == {"m": [1, 2, 3, 4]}
        index = {b.version: b.kind for b in b.backend.blob_index("t")}
        assert index == {"2": BLOB_FULL, "3": BLOB_DELTA, "4": BLOB_FULL}


def test_a_delta_on_a_value_not_stored_is_refused(saver: Checkpointer) -> None:
    """The backend contract: a batch whose append-delta builds on a value that is stored
    neither already nor in the batch is refused whole (retention elsewhere deleted the base)."""
    backend = saver.ready()
    row = CheckpointRow("t", "", "0001", None, None, 0.0, b"{}", b"")

    def delta(version: str, base: str) -> BlobRow:
        return BlobRow("t", "", "m", version, BLOB_DELTA, base, b"x")

    with pytest.raises(DeltaBaseMissingError, match=r"channel 'm', version '1', thread 't'"):
        backend.write(WriteBatch(checkpoints=[row], blobs=[delta("2", "1")]))
    assert backend.get_checkpoint("t", "", None) is None
    assert backend.blob_index("t") == []
    # In the same batch, or stored before: accepted.
    keyframe = BlobRow("t", "", "m", "1", BLOB_FULL, None, b"x")
    backend.write(WriteBatch(blobs=[keyframe, delta("2", "1")]))
    backend.write(WriteBatch(checkpoints=[row], blobs=[delta("3", "2")]))
    assert sorted(b.version for b in backend.blob_index("t")) == ["1", "2", "3"]
    # Several bases at once: all must be stored.
    other = BlobRow("t", "", "n", "7", BLOB_DELTA, "6", b"x")
    with pytest.raises(DeltaBaseMissingError, match=r"channel 'n', version '6'"):
        backend.write(WriteBatch(blobs=[delta("4", "3"), other]))
    assert sorted(b.version for b in backend.blob_index("t")) == ["1", "2", "3"]
    backend.write(WriteBatch(blobs=[BlobRow("t", "", "n", "6", BLOB_FULL, None, b"x")]))
    backend.write(WriteBatch(blobs=[delta("4", "3"), other]))
    assert sorted(b.version for b in backend.blob_index("t")) == ["1", "2", "3", "4", "6", "7"]
    # A large batch (PostgreSQL binds it as column arrays) is checked alike.
    rows = [CheckpointRow("t", "", f"1{i:03d}", None, None, 0.0, b"{}", b"") for i in range(40)]
    with pytest.raises(DeltaBaseMissingError, match=r"channel 'm', version '8'"):
        backend.write(WriteBatch(checkpoints=rows, blobs=[delta("9", "8")]))
    assert backend.get_checkpoint("t", "", "1000") is None
    backend.write(WriteBatch(checkpoints=rows, blobs=[delta("5", "4")]))
    assert backend.get_checkpoint("t", "", "1039") is not None


def test_deltas_off(backend_factory: BackendFactory) -> None:
    with Checkpointer(backend_factory(), delta_keyframe_every=0) as c:
        for i in range(5):
            c.put(cp(i, {"m": list(range(i + 1))}), thread_id="t")
        assert {b.kind for b in c.backend.blob_index("t")} == {BLOB_FULL}


# -- bad input -----------------------------------------------------------------------------------


def test_errors_share_one_root() -> None:
    assert issubclass(InvalidArgumentError, SnapstateError)
    assert issubclass(InvalidArgumentError, ValueError)
    assert issubclass(EncodeError, TypeError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"thread_id": 5}, "thread_id must be a str, got int"),
        ({"thread_id": ""}, "thread_id must not be empty"),
        ({"thread_id": "t", "namespace": None}, "namespace must be a str, got NoneType"),
    ],
)
def test_bad_ids(saver: Checkpointer, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        saver.put(cp(1, {"x": 1}), **kwargs)


def test_bad_checkpoint(saver: Checkpointer) -> None:
    with pytest.raises(InvalidArgumentError, match=r"must be a snapstate\.Checkpoint, got dict"):
        saver.put({"id": "1"}, thread_id="t")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="checkpoint id must not be empty"):
        saver.put(Checkpoint(id=""), thread_id="t")
    with pytest.raises(InvalidArgumentError, match="changed channel 'zz' has no version"):
        saver.put(cp(1, {"x": 1}), thread_id="t", changed=["zz"])


def test_metadata_must_be_json(saver: Checkpointer) -> None:
    with pytest.raises(EncodeError, match=r"metadata of checkpoint '00000001' \(thread 't'.*'bad'"):
        saver.put(cp(1, {"x": 1}), thread_id="t", metadata={"ok": 1, "bad": object()})
    assert saver.get("t") is None  # nothing half-written


def test_bad_list_arguments(saver: Checkpointer) -> None:
    with pytest.raises(InvalidArgumentError, match="limit must be a non-negative int"):
        list(saver.list("t", limit=-1))
    with pytest.raises(InvalidArgumentError, match="thread_id must be a str"):
        list(saver.list(3))  # type: ignore[arg-type]


def test_bad_writes(saver: Checkpointer) -> None:
    with pytest.raises(InvalidArgumentError, match="is not a \\(channel, value\\) pair"):
        saver.put_writes(["oops"], thread_id="t", checkpoint_id="1", task_id="k")  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="got 1 writes but 2 indices"):
        saver.put_writes([("a", 1)], thread_id="t", checkpoint_id="1", task_id="k", indices=[0, 1])


def test_failed_batch_leaves_nothing(saver: Checkpointer) -> None:
    class Unencodable:
        pass

    with pytest.raises(EncodeError):
        saver.put(cp(1, {"ok": 1, "bad": Unencodable()}), thread_id="t")
    assert saver.get("t") is None
    assert saver.backend.blob_index("t") == []


# -- the asyncio engine --------------------------------------------------------------------------


def test_async_engine_same_contract(backend_factory: BackendFactory) -> None:
    async def main() -> None:
        async with AsyncCheckpointer(backend_factory()) as a:
            msgs: list[int] = []
            for i in range(5):
                msgs = [*msgs, i]
                await a.put(
                    cp(i, {"m": msgs}),
                    thread_id="t",
                    metadata={"step": i},
                    parent_id=f"{i - 1:08d}" if i else None,
                )
            await a.put_writes([("w", "x")], thread_id="t", checkpoint_id="00000004", task_id="k")
            got = await a.get("t")
            assert got is not None
            assert got.checkpoint.channel_values == {"m": [0, 1, 2, 3, 4]}
            assert [w.value for w in got.pending_writes] == ["x"]
            listed = [s.checkpoint.id async for s in a.list("t", filter={"step": 2})]
            assert listed == ["00000002"]
            await a.copy_thread("t", "u")
            await a.prune(["u"])
            assert [s.checkpoint.id async for s in a.list("u")] == ["00000004"]
            await a.delete_runs([])
            await a.delete_thread("t")
            assert await a.get("t") is None

    asyncio.run(main())


# -- tombstones ----------------------------------------------------------------------------------


def test_late_writes_cannot_bring_a_deleted_thread_back(saver: Checkpointer) -> None:
    from snapstate.errors import ThreadDeletedError

    saver.put(cp(1, {"x": 1}), thread_id="t")
    saver.put(cp(2, {"x": 2}), thread_id="t", parent_id="00000001")
    saver.delete_thread("t")
    # A run still in flight elsewhere: its next checkpoint, and writes for an old one.
    with pytest.raises(ThreadDeletedError, match=r"thread 't' was deleted; checkpoint '00000003'"):
        saver.put(cp(3, {"x": 3}), thread_id="t", parent_id="00000002")
    with pytest.raises(ThreadDeletedError, match="writes of task 'k' for checkpoint '00000002'"):
        saver.put_writes([("a", 1)], thread_id="t", checkpoint_id="00000002", task_id="k")
    with pytest.raises(ThreadDeletedError):
        saver.put(cp(2, {"x": 2}), thread_id="t")
    assert saver.get("t") is None and saver.backend.blob_index("t") == []
    # A new history on the same thread id is welcome.
    saver.put(cp(10, {"x": "new"}), thread_id="t")
    saver.put_writes([("a", 1)], thread_id="t", checkpoint_id="00000010", task_id="k")
    got = saver.get("t")
    assert got is not None and got.checkpoint.channel_values == {"x": "new"}
    # Other threads are unaffected; copying into a deleted id is a deliberate new history.
    saver.put(cp(1, {"y": 1}), thread_id="src")
    saver.delete_thread("dst-never-existed")
    saver.put(cp(1, {"z": 1}), thread_id="gone")
    saver.delete_thread("gone")
    saver.copy_thread("src", "gone")
    copied = saver.get("gone")
    assert copied is not None and copied.checkpoint.channel_values == {"y": 1}


def test_tombstones_are_purged(saver: Checkpointer) -> None:
    saver.put(cp(1, {"x": 1}), thread_id="t")
    saver.delete_thread("t")
    assert saver.backend.purge_tombstones(0.0) == 0
    assert saver.backend.purge_tombstones(float("inf")) == 1
    saver.put(cp(1, {"x": 1}), thread_id="t")  # accepted again
    assert saver.get("t") is not None


def test_large_immutable_values_are_encoded_once(saver: Checkpointer, monkeypatch: Any) -> None:
    # A node's write and the next checkpoint's channel value are often the same object.
    doc = bytes(range(256)) * 1024  # 256 KiB
    calls: list[int] = []
    real = saver.codec.encode

    def counting(value: Any, *, where: str = "") -> bytes:
        calls.append(len(value) if isinstance(value, (bytes, str)) else 0)
        return real(value, where=where)

    monkeypatch.setattr(
        saver._plan.encoder, "codec", type("C", (), {"encode": staticmethod(counting)})
    )
    saver.put_writes([("doc", doc)], thread_id="t", checkpoint_id="00000001", task_id="k")
    saver.put(cp(2, {"doc": doc, "n": 1}), thread_id="t")
    other = bytes(bytearray(doc))  # equal, but another object
    assert other is not doc
    saver.put(cp(3, {"doc": other, "n": 2}), thread_id="t")
    assert calls.count(len(doc)) == 2
    got = saver.get("t")
    assert got is not None and got.checkpoint.channel_values["doc"] == doc
    first = saver.get("t", checkpoint_id="00000002")
    assert first is not None and first.checkpoint.channel_values["doc"] == doc


class _GatedCodec:
    """Encodes through the real codec, the first call waiting at a gate; counts calls."""

    def __init__(self, fail_first: bool = False) -> None:
        from snapstate.codec import default_codec

        self.real = default_codec
        self.calls = 0
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.fail_first = fail_first

    def encode(self, value: Any, *, where: str = "") -> bytes:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            assert self.gate.wait(10)
            if self.fail_first:
                raise EncodeError(f"first caller failed ({where})")
        return self.real.encode(value, where=where)


@pytest.mark.parametrize("fail_first", [False, True], ids=["shared", "first-fails"])
def test_a_value_encoded_by_two_threads_at_once_is_encoded_once(fail_first: bool) -> None:
    # LangGraph calls put_writes and the next put at the same time with the same object.
    from snapstate._engine import _ReusingEncoder

    codec = _GatedCodec(fail_first)
    encoder = _ReusingEncoder(codec)  # type: ignore[arg-type]
    doc = bytes(range(256)) * 1024
    first: list[Any] = []

    def encode_first() -> None:
        try:
            first.append(encoder.encode(doc, where="write"))
        except EncodeError as exc:
            first.append(exc)

    t = threading.Thread(target=encode_first)
    t.start()
    assert codec.entered.wait(10)
    second: list[bytes] = []
    waiter = threading.Thread(target=lambda: second.append(encoder.encode(doc, where="put")))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()  # waits for the first caller's bytes instead of encoding
    codec.gate.set()
    t.join(10)
    waiter.join(10)
    assert second and codec.real.decode(second[0]) == doc
    if fail_first:
        assert isinstance(first[0], EncodeError)
        assert codec.calls == 2  # the second caller encoded it itself
    else:
        assert first == second and codec.calls == 1
        assert encoder.encode(doc) is second[0] and codec.calls == 1  # kept for reuse
