"""Property tests: append-deltas read back exactly what a naive full store would.

For any sequence of list edits (appends, removals, replacement of an item by id, truncation,
forks back to an older version, process restarts), every stored version reads back equal to the
list that was put, on every backend, through ``get`` and through ``list``.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapstate import Checkpoint, Checkpointer
from snapstate.backends import BLOB_DELTA

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


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(edits=st.lists(edit, max_size=40), keyframe_every=st.sampled_from([2, 3, 5, 32]))
def test_any_edit_sequence_reads_back_exactly(
    backend_factory: BackendFactory, edits: list[tuple[Any, ...]], keyframe_every: int
) -> None:
    backend = backend_factory()
    thread = uuid.uuid4().hex
    saver = Checkpointer(backend, delta_keyframe_every=keyframe_every)
    current: list[Any] = []
    history: list[list[Any]] = []
    expected: dict[str, list[Any]] = {}
    for step, op in enumerate(itertools.chain([("append", [])], edits)):
        if op[0] == "restart":
            saver = Checkpointer(backend, delta_keyframe_every=keyframe_every)
        current = _apply(op, current, history)
        cid = f"{step:06d}"
        saver.put(
            Checkpoint(
                id=cid,
                channel_values={"messages": current, "step": step},
                channel_versions={"messages": step + 1, "step": step + 1},
            ),
            thread_id=thread,
        )
        history.append(list(current))
        expected[cid] = list(current)

    for cid, want in expected.items():
        got = Checkpointer(backend).get(thread, checkpoint_id=cid)
        assert got is not None
        assert got.checkpoint.channel_values["messages"] == want, cid
    listed = {s.checkpoint.id: s.checkpoint.channel_values["messages"] for s in saver.list(thread)}
    assert listed == expected


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
