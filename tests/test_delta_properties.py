"""Property tests: append-deltas read back exactly what a naive full store would.

For any sequence of list edits (appends, removals, replacement of an item by id, truncation,
forks back to an older version, process restarts), every stored version reads back equal to the
list that was put, on every backend, through ``get`` and through ``list``; and so does every
version that retention keeps.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapstate import Checkpoint, Checkpointer
from snapstate.backends import BLOB_DELTA, Backend

from .fix_backends import BackendFactory

item = st.fixed_dictionaries({"id": st.integers(0, 50), "text": st.text(max_size=8)})

edit = st.one_of(
    st.tuples(st.just("append"), st.lists(item, max_size=4)),
    st.tuples(st.just("remove"), st.integers(0, 100)),
    st.tuples(st.just("replace"), st.integers(0, 50), st.text(max_size=8)),
    st.tuples(st.just("truncate"), st.integers(0, 100)),
    st.tuples(st.just("fork"), st.integers(0, 100)),
    st.tuples(st.just("restart")),
    st.tuples(st.just("same")),
)


def _apply(op: tuple[Any, ...], current: list[Any], history: list[list[Any]]) -> list[Any]:
    kind = op[0]
    if kind == "append":
        return [*current, *op[1]]
    if kind == "remove" and current:
        i = op[1] % len(current)
        return current[:i] + current[i + 1 :]
    if kind == "replace":
        # Replace the item with that id (as a reducer merging by message id does).
        return [{"id": x["id"], "text": op[2]} if x["id"] == op[1] else x for x in current]
    if kind == "truncate" and current:
        return current[: op[1] % (len(current) + 1)]
    if kind == "fork" and history:
        return list(history[op[1] % len(history)])
    return current  # "same", "restart", or an edit that does not apply to []


class History:
    """A thread's ``messages`` channel put through a saver, one edit a step, and what each
    checkpoint must read back."""

    def __init__(self, backend: Any, keyframe_every: int) -> None:
        self.backend = backend
        self.keyframe_every = keyframe_every
        self.saver = Checkpointer(backend, delta_keyframe_every=keyframe_every)
        self.thread = uuid.uuid4().hex
        self.current: list[Any] = []
        self.history: list[list[Any]] = []
        self.expected: dict[str, list[Any]] = {}

    def put(self, edits: Iterable[tuple[Any, ...]]) -> None:
        for op in edits:
            if op[0] == "restart":
                self.saver = Checkpointer(self.backend, delta_keyframe_every=self.keyframe_every)
            self.current = _apply(op, self.current, self.history)
            step = len(self.history)
            cid = f"{step:06d}"
            self.saver.put(
                Checkpoint(
                    id=cid,
                    channel_values={"messages": self.current, "step": step},
                    channel_versions={"messages": step + 1, "step": step + 1},
                ),
                thread_id=self.thread,
            )
            self.history.append(list(self.current))
            self.expected[cid] = list(self.current)

    def check(self) -> None:
        """Every checkpoint expected reads back exactly, alone (in a new process's saver) and
        listed, and no other is left."""
        for cid, want in self.expected.items():
            got = Checkpointer(self.backend).get(self.thread, checkpoint_id=cid)
            assert got is not None, cid
            assert got.checkpoint.channel_values["messages"] == want, cid
        listed = {
            s.checkpoint.id: s.checkpoint.channel_values["messages"]
            for s in self.saver.list(self.thread)
        }
        assert listed == self.expected


PROPERTIES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTIES
@given(edits=st.lists(edit, max_size=40), keyframe_every=st.sampled_from([2, 3, 5, 32]))
def test_any_edit_sequence_reads_back_exactly(
    backend: Backend, edits: list[tuple[Any, ...]], keyframe_every: int
) -> None:
    # The examples share the test's backend (each writes a thread of its own), so a test of
    # many examples holds one store's connections, not one set per example.
    h = History(backend, keyframe_every)
    h.put([("append", []), *edits])
    h.check()


@PROPERTIES
@given(
    edits=st.lists(edit, min_size=1, max_size=30),
    more=st.lists(edit, max_size=10),
    keyframe_every=st.sampled_from([2, 3, 5, 32]),
    keep=st.integers(1, 4),
)
def test_retention_keeps_the_kept_checkpoints_whole(
    backend: Backend,
    edits: list[tuple[Any, ...]],
    more: list[tuple[Any, ...]],
    keyframe_every: int,
    keep: int,
) -> None:
    """``retain(keep_last=...)`` deletes older checkpoints whose values later deltas build on:
    what it keeps still reads back exactly, later puts build on it, and a second pass finds
    nothing more to delete."""
    h = History(backend, keyframe_every)
    h.put([("append", []), *edits])
    h.saver.retain(keep_last=keep, thread_ids=[h.thread])
    h.expected = {cid: h.expected[cid] for cid in sorted(h.expected)[-keep:]}
    h.check()
    h.put(more)
    h.check()
    h.saver.retain(keep_last=keep, thread_ids=[h.thread])
    h.expected = {cid: h.expected[cid] for cid in sorted(h.expected)[-keep:]}
    h.check()
    again = h.saver.retain(keep_last=keep, thread_ids=[h.thread])
    assert (again.checkpoints_deleted, again.blobs_deleted) == (0, 0)


def test_pure_appends_are_mostly_deltas(backend_factory: BackendFactory) -> None:
    saver = Checkpointer(backend_factory(), delta_keyframe_every=8)
    msgs: list[dict[str, Any]] = []
    for i in range(40):
        msgs = [*msgs, {"id": i, "text": "x" * 50}]
        saver.put(
            Checkpoint(id=f"{i:04d}", channel_values={"m": msgs}, channel_versions={"m": i + 1}),
            thread_id="t",
        )
    kinds = [b.kind for b in saver.backend.blob_index("t")]
    # One keyframe every 8 versions, deltas in between.
    assert kinds.count(BLOB_DELTA) == 35
    got = saver.get("t")
    assert got is not None and got.checkpoint.channel_values["m"] == msgs


def test_equal_but_different_items_are_not_a_prefix(backend_factory: BackendFactory) -> None:
    # 1 == 1.0 == True in Python, but they encode differently: only the same objects count.
    saver = Checkpointer(backend_factory())
    versions = [[1, {"a": 1}], [1.0, {"a": True}, "x"], [True, {"a": 1.0}, "x", "y"]]
    for i, value in enumerate(versions):
        saver.put(
            Checkpoint(id=f"{i:04d}", channel_values={"m": value}, channel_versions={"m": i + 1}),
            thread_id="t",
        )
    for i, value in enumerate(versions):
        got = saver.get("t", checkpoint_id=f"{i:04d}")
        assert got is not None
        back = got.checkpoint.channel_values["m"]
        assert back == value
        assert [type(x) for x in back] == [type(x) for x in value]
        assert type(back[1]["a"]) is type(value[1]["a"])
