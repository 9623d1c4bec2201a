"""Points of LangGraph's saver contract that the other saver tests leave unchecked.

Each test says which point it pins. Where LangGraph's own savers agree on a behaviour, the test
also makes the same calls on one of them (``InMemorySaver``, or ``SqliteSaver`` where the
in-memory one differs from the persistent ones) and compares the answers, so that the test
checks LangGraph's behaviour and not only ours. Tests parametrized with ``api`` run once through
the async methods and once through the sync ones (see ``test_saver_api.SyncDriven``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import (
    ERROR,
    EXCLUDED_METADATA_KEYS,
    INTERRUPT,
    RESUME,
    SCHEDULED,
    BaseCheckpointSaver,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint
from langgraph.checkpoint.memory import InMemorySaver as LangGraphMemory
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.serde.types import _DeltaSnapshot

from snapstate import SnapstateError
from snapstate.langgraph import LoopThreadError, SqliteSaver

from .conftest import ALL_KINDS, MakeSaver, kinds
from .test_differential import loop_thread, on_loop
from .test_saver_api import XorCipher, config, listed, open_saver, put, tid


@pytest.fixture(params=["async", "sync"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def langgraph_sqlite() -> Iterator[Any]:
    """LangGraph's own ``SqliteSaver`` on a private in-memory database, closed afterwards."""
    from langgraph.checkpoint.sqlite import SqliteSaver as LangGraphSqlite

    with contextlib.closing(sqlite3.connect(":memory:", check_same_thread=False)) as conn:
        yield LangGraphSqlite(conn)


# -- metadata ------------------------------------------------------------------------------------


@kinds(*ALL_KINDS)
async def test_metadata_is_merged_by_langgraphs_rules(
    kind: str, api: str, make_saver: MakeSaver
) -> None:
    """Gap: precedence (the metadata given, then ``config["metadata"]``, then
    ``configurable``), NUL stripped from config values too, every excluded key, and the legacy
    ``"writes"`` key dropped wherever it comes from (as ``get_serializable_checkpoint_metadata``,
    which LangGraph's Postgres saver uses)."""
    saver = await open_saver(make_saver, kind, api)
    t = tid()
    own = {"thread_id", "checkpoint_ns", "checkpoint_id"}  # the config's addressing keys
    excluded = {k: f"excluded {k}" for k in EXCLUDED_METADATA_KEYS}
    cfg: Any = {
        "configurable": {
            "thread_id": t,
            "checkpoint_ns": "",
            **{k: v for k, v in excluded.items() if k not in own},
            "__pregel_scratch": "internal",
            "shared": "from configurable",
            "only_configurable": "c\x00onf",
            "step": 99,
            "count": 7,
            "ratio": 0.25,
            "flag": False,
            "none": None,
            "listed": [1],
            "raw": b"bytes",
        },
        "metadata": {
            **excluded,
            "__hidden": "internal",
            "shared": "from metadata",
            "run_id": "r\x00un",
            "source": "not the caller's",
            "nested": {"not": "plain"},
        },
    }
    given = {"source": "loop", "step": 1, "writes": {"node": {"x": 1}}, "note": "a\x00b"}
    first = generate_checkpoint()
    await saver.aput(cfg, first, given, {})
    expected = {
        "source": "loop",
        "step": 1,
        "note": "ab",
        "shared": "from metadata",
        "run_id": "run",
        "only_configurable": "conf",
        "count": 7,
        "ratio": 0.25,
        "flag": False,
    }
    assert get_serializable_checkpoint_metadata(cfg, given) == expected  # LangGraph's rule
    got = await saver.aget_tuple(config(t, checkpoint_id=first["id"]))
    assert got.metadata == expected

    # "writes" from the config is dropped too, after the merge that brought it in.
    cfg["metadata"]["writes"] = "from the config"
    second = generate_checkpoint()
    await saver.aput(cfg, second, {"source": "loop", "step": 2}, {})
    got = await saver.aget_tuple(config(t, checkpoint_id=second["id"]))
    assert "writes" not in got.metadata and got.metadata["shared"] == "from metadata"
    # Filters see the merged values, as stored.
    found = await listed(saver, config(t), filter={"run_id": "run", "only_configurable": "conf"})
    assert [x.checkpoint["id"] for x in found] == [second["id"], first["id"]]


# -- pending writes ------------------------------------------------------------------------------

T_RESUME, T_SCHEDULED, T_ERROR = "task-resume", "task-scheduled", "task-error"

#: put_writes calls (task, writes), half made before their checkpoint is put.
WRITE_CALLS: list[tuple[str, list[tuple[str, Any]]]] = [
    # Two writes to one special channel in one call: the later one is kept.
    (T_RESUME, [(RESUME, "r1"), (RESUME, "r2")]),
    # A call made only of special writes replaces.
    (T_RESUME, [(RESUME, "r3")]),
    (T_SCHEDULED, [(SCHEDULED, "s1")]),
    # A call with a regular write keeps what exists, its special writes included; a regular
    # write's index is its position in its call, so ("x", 1) is index 1 and ("y", 3) meets it.
    (T_SCHEDULED, [(SCHEDULED, "s2"), ("x", 1)]),
    (T_SCHEDULED, [("x", 2), ("y", 3)]),
    (T_ERROR, [(ERROR, "e1"), (INTERRUPT, "i1")]),
    (T_ERROR, [(INTERRUPT, "i2")]),
    (T_ERROR, [("x", "v"), (ERROR, "e2")]),
]


@kinds(*ALL_KINDS)
async def test_special_channel_writes_replace_as_in_langgraphs_persistent_savers(
    kind: str, api: str, make_saver: MakeSaver, langgraph_sqlite: Any
) -> None:
    """Gap: ``RESUME`` and ``SCHEDULED`` (only ``ERROR`` and ``INTERRUPT`` were checked), two
    writes to one special channel in one call, a special write inside a mixed call not
    replacing, all across a checkpoint that is put half-way; compared with LangGraph's
    ``SqliteSaver`` (its ``InMemorySaver`` replaces special writes in any call)."""
    saver = await open_saver(make_saver, kind, api)
    theirs = langgraph_sqlite
    t = tid()
    cp = generate_checkpoint(channel_values={"x": 0}, channel_versions={"x": 1})
    cfg = config(t, checkpoint_id=cp["id"])
    half = len(WRITE_CALLS) // 2
    for task, writes in WRITE_CALLS[:half]:  # before the checkpoint exists
        await saver.aput_writes(cfg, writes, task)
        theirs.put_writes(cfg, writes, task)
    await saver.aput(config(t), cp, {"source": "loop", "step": 0}, {"x": 1})
    theirs.put(config(t), cp, {"source": "loop", "step": 0}, {"x": 1})
    for task, writes in WRITE_CALLS[half:]:
        await saver.aput_writes(cfg, writes, task)
        theirs.put_writes(cfg, writes, task)
    expected = [
        (T_ERROR, INTERRUPT, "i2"),
        (T_ERROR, ERROR, "e1"),
        (T_ERROR, "x", "v"),
        (T_RESUME, RESUME, "r3"),
        (T_SCHEDULED, SCHEDULED, "s1"),
        (T_SCHEDULED, "x", 2),
        (T_SCHEDULED, "x", 1),
    ]
    assert theirs.get_tuple(cfg).pending_writes == expected
    assert (await saver.aget_tuple(cfg)).pending_writes == expected
    (item,) = await listed(saver, config(t))
    assert item.pending_writes == expected


# -- put -----------------------------------------------------------------------------------------


@kinds(*ALL_KINDS)
async def test_put_of_a_stored_checkpoint_id_replaces_it(
    kind: str, api: str, make_saver: MakeSaver
) -> None:
    """Gap: ``put`` is an upsert on (thread, namespace, checkpoint id): values and metadata are
    the new ones, the thread still holds one checkpoint, and its pending writes stay (as in
    every LangGraph saver)."""
    saver = await open_saver(make_saver, kind, api)
    theirs = LangGraphMemory()
    t = tid()
    first = generate_checkpoint(channel_values={"x": 1}, channel_versions={"x": f"{1:032}.1"})
    again = dict(first)
    again["channel_values"] = {"x": 2, "y": "new"}
    again["channel_versions"] = {"x": f"{2:032}.1", "y": f"{1:032}.2"}
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("aput", (config(t), first, {"source": "loop", "step": 1}, {"x": f"{1:032}.1"})),
        ("aput_writes", (config(t, checkpoint_id=first["id"]), [("x", 5)], "task")),
        ("aput", (config(t), again, {"source": "update", "step": 2}, again["channel_versions"])),
    ]
    for method, args in calls:
        await getattr(saver, method)(*args)
        await getattr(theirs, method)(*args)
    mine = await listed(saver, config(t))
    expected = list(theirs.list(config(t)))
    assert len(mine) == len(expected) == 1
    for got, want in zip(mine, expected):
        assert got.checkpoint["channel_values"] == want.checkpoint["channel_values"]
        assert got.checkpoint["channel_values"] == {"x": 2, "y": "new"}
        assert got.checkpoint["channel_versions"] == again["channel_versions"]
        assert got.metadata == want.metadata == {"source": "update", "step": 2}
        assert got.pending_writes == want.pending_writes == [("task", "x", 5)]


# -- list ----------------------------------------------------------------------------------------


@kinds(*ALL_KINDS)
async def test_list_namespace_none_limit_zero_and_numeric_filters(
    kind: str, api: str, make_saver: MakeSaver
) -> None:
    """Gap: ``checkpoint_ns: None`` lists every namespace (as an absent key does), ``limit=0``
    lists nothing, a filter value ``1`` matches a stored ``1.0`` (all three of LangGraph's
    savers agree on these), and ``before`` with ``limit`` within a namespace; compared with
    LangGraph's ``InMemorySaver``."""
    saver = await open_saver(make_saver, kind, api)
    theirs = LangGraphMemory()
    t = tid()
    made = []
    for ns, score in [("", 1.0), ("child:1", 2), ("", 1), ("child:1", 1.0), ("", 3)]:
        cp = generate_checkpoint()
        args = (config(t, ns), cp, {"source": "loop", "step": len(made), "score": score}, {})
        await saver.aput(*args)
        theirs.put(*args)
        made.append(cp["id"])

    async def both(cfg: Any, **kw: Any) -> list[str]:
        got = [x.checkpoint["id"] for x in await listed(saver, cfg, **kw)]
        want = [x.checkpoint["id"] for x in theirs.list(cfg, **kw)]
        assert sorted(got) == sorted(want), (cfg, kw)
        return got

    every = {"configurable": {"thread_id": t, "checkpoint_ns": None}}
    assert await both(every) == made[::-1]
    assert await both({"configurable": {"thread_id": t}}) == made[::-1]
    assert await both(every, limit=0) == []
    assert await both(None, filter={"score": 1}, limit=0) == []
    assert await both(every, filter={"score": 1}) == [made[3], made[2], made[0]]
    assert await both(every, filter={"score": 2.0}) == [made[1]]
    root = config(t, "")
    assert await both(root, before=config(t, "", made[4]), limit=1) == [made[2]]
    assert await both(root, before=config(t, "", made[2])) == [made[0]]


# -- DeltaChannel history ------------------------------------------------------------------------

#: Task ids whose order is the reverse of their task paths'.
SORTS_FIRST = "00000000-0000-0000-0000-000000000000"
SORTS_LAST = "ffffffff-ffff-ffff-ffff-ffffffffffff"
SORTS_LATE = "ffffffff-ffff-ffff-ffff-fffffffffffe"

#: One step of a hand-built history: the values stored, the writes made to it afterwards as
#: (task id, task path, [(channel, value)]), and the index of its parent (default: the step
#: before).
Step = tuple[dict[str, Any], list[tuple[str, str, list[tuple[str, Any]]]], int | None]


def step(values: dict[str, Any] | None = None, *writes: Any, parent: int | None = -1) -> Step:
    return (values or {}, list(writes), parent)


def w(value: Any, channel: str = "ch", task: str = SORTS_FIRST, path: str = "") -> Any:
    return (task, path, [(channel, value)])


#: Histories, one thread each: (steps, namespace, queries). A query is (index of the step
#: asked about, channels, {channel: (the values of its writes, oldest first; its seed's value,
#: or None)}). From the clauses LangGraph's next conformance release checks
#: (``delta_channel_history``), plus a fork and a subgraph namespace.
STORIES: dict[str, tuple[list[Step], str, list[tuple[int, list[str], dict[str, Any]]]]] = {
    "oldest first": (
        [step({"ch": _DeltaSnapshot("s0")})] + [step(None, w(i)) for i in range(1, 5)],
        "",
        [(4, ["ch"], {"ch": ([1, 2, 3], "s0")}), (0, ["ch"], {"ch": ([], None)})],
    ),
    "nearest snapshot, own writes excluded": (
        [
            step({"ch": _DeltaSnapshot("s0")}),
            step(None, w(1)),
            step(None, w(2)),
            step({"ch": _DeltaSnapshot("s3")}),
            step(None, w(4)),
            step(None, w("pending at the target")),
        ],
        "",
        [(5, ["ch"], {"ch": ([4], "s3")}), (3, ["ch"], {"ch": ([1, 2], "s0")})],
    ),
    "channels end apart": (
        [
            step({"a": _DeltaSnapshot("a0")}, w(0, "a"), w(0, "b", SORTS_LAST)),
            *(step(None, w(i, "a"), w(i, "b", SORTS_LAST)) for i in (1, 2)),
            step({"b": _DeltaSnapshot("b3")}, w(3, "a"), w(3, "b", SORTS_LAST)),
            step(None, w(4, "a"), w(4, "b", SORTS_LAST)),
        ],
        "",
        [
            (
                4,
                ["a", "b", "absent"],
                {"a": ([0, 1, 2, 3], "a0"), "b": ([3], "b3"), "absent": ([], None)},
            )
        ],
    ),
    "no seed up to the root": (
        [step(None, w(i)) for i in range(4)],
        "",
        [(3, ["ch"], {"ch": ([0, 1, 2], None)})],
    ),
    "a plain value seeds, its own writes replay": (
        [
            step({"ch": [10]}, w("older than the seed")),
            step({"ch": [10, 20]}, w("at the seed")),
            step(None, w("after the seed")),
            step(None, w("pending at the target")),
        ],
        "",
        [(3, ["ch"], {"ch": (["at the seed", "after the seed"], [10, 20])})],
    ),
    "task path order, pathless first": (
        [
            step({"ch": _DeltaSnapshot("s0")}),
            step(
                None,
                (SORTS_FIRST, "~__pregel_pull, 02", [("ch", "second"), ("ch", "third")]),
                (SORTS_LATE, "~__pregel_pull, 01", [("ch", "first")]),
                (SORTS_LAST, "", [("ch", "input")]),
            ),
            step(None),
        ],
        "",
        [(2, ["ch"], {"ch": (["input", "first", "second", "third"], "s0")})],
    ),
    "a fork follows its parents": (
        [
            step({"ch": _DeltaSnapshot("s0")}, w("a0")),
            step(None, w("a1")),
            step(None, w("left")),
            step(None, w("right"), parent=1),
            step(None, parent=3),
        ],
        "",
        [
            (4, ["ch"], {"ch": (["a0", "a1", "right"], "s0")}),
            (2, ["ch"], {"ch": (["a0", "a1"], "s0")}),
        ],
    ),
    "subgraph namespace": (
        [step({"ch": _DeltaSnapshot("sub")}, w("sub-0")), step(None, w("sub-1")), step(None)],
        "child:1",
        [(2, ["ch"], {"ch": (["sub-0", "sub-1"], "sub")})],
    ),
}


async def build(saver: Any, thread: str, ns: str, steps: list[Step], ids: list[str]) -> list[Any]:
    """Put a story's checkpoints and writes (with the given ids); their stored configs."""
    stored: list[Any] = []
    for i, (values, writes, parent) in enumerate(steps):
        parent_id = None
        if parent is not None and i > 0:
            parent_id = stored[i - 1 if parent == -1 else parent]["configurable"]["checkpoint_id"]
        versions = {ch: i + 1 for ch in values}
        cp = {
            "v": 1,
            "id": ids[i],
            "ts": "",
            "channel_values": dict(values),
            "channel_versions": versions,
            "versions_seen": {},
            "updated_channels": None,
        }
        done = await saver.aput(config(thread, ns, parent_id), cp, {"step": i}, versions)
        stored.append(done)
        for task, path, ws in writes:
            await saver.aput_writes(done, ws, task, path)
    return stored


def seed_of(history: Any) -> Any:
    if "seed" not in history:
        return None
    seed = history["seed"]
    return seed.value if isinstance(seed, _DeltaSnapshot) else seed


@kinds(*ALL_KINDS)
async def test_delta_channel_history_on_hand_built_histories(
    kind: str, api: str, make_saver: MakeSaver
) -> None:
    """Gap: ``get_delta_channel_history`` was only compared with the default ancestor walk on
    one graph, where parallel writers' task ids order at random against their task paths, and
    never in a subgraph namespace or through the other API of each saver. Here: the clauses
    of LangGraph's ``delta_channel_history`` conformance capability (not released yet), a
    fork, and a namespace, each compared with LangGraph's ``InMemorySaver``."""
    saver = await open_saver(make_saver, kind, api)
    theirs = LangGraphMemory()
    thread = tid()
    # A root chain in the same thread as the subgraph one: histories must not mix them.
    root_ids = [str(uuid6(clock_seq=-1)) for _ in range(3)]
    root = [step({"ch": _DeltaSnapshot("root")}, w("root-0")), step(None, w("root-1")), step()]
    for s in (saver, theirs):
        await build(s, thread, "", root, root_ids)
    for name, (steps, ns, queries) in STORIES.items():
        t = thread if ns else tid()
        ids = [str(uuid6(clock_seq=-1)) for _ in steps]
        mine = await build(saver, t, ns, steps, ids)
        await build(theirs, t, ns, steps, ids)
        for index, channels, expected in queries:
            got = await saver.aget_delta_channel_history(config=mine[index], channels=channels)
            want = theirs.get_delta_channel_history(config=mine[index], channels=channels)
            assert got == want, (name, index)
            simple = {c: ([x[2] for x in h["writes"]], seed_of(h)) for c, h in got.items()}
            assert simple == expected, (name, index)


# -- the sync API of the async savers ------------------------------------------------------------


def _async_saver_factory(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    from snapstate.langgraph import AsyncPostgresSaver, AsyncSqliteSaver

    if kind == "sqlite-async":
        return lambda: AsyncSqliteSaver(tmp_path / "store.db")
    dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")
    return lambda: AsyncPostgresSaver(dsn, schema=schema)


def _sync_calls(saver: Any) -> list[tuple[str, Callable[[], Any]]]:
    t = "loop-thread"
    return [
        ("get_tuple", lambda: saver.get_tuple(config(t))),
        ("list", lambda: list(saver.list(None))),
        ("put", lambda: saver.put(config(t), generate_checkpoint(), {}, {})),
        ("put_writes", lambda: saver.put_writes(config(t, checkpoint_id="c"), [("x", 1)], "k")),
        ("delete_thread", lambda: saver.delete_thread(t)),
        ("delete_for_runs", lambda: saver.delete_for_runs(["run"])),
        ("copy_thread", lambda: saver.copy_thread(t, "other")),
        ("prune", lambda: saver.prune([t])),
        ("delta", lambda: saver.get_delta_channel_history(config=config(t), channels=["x"])),
    ]


#: Seconds a sync call on the loop's own thread may take before the test calls it a deadlock.
#: Correct code raises at once; the bound matters only when it is wrong.
DEADLOCK_AFTER = 20.0


@kinds("sqlite-async", "postgres-async")
def test_sync_calls_on_the_loop_thread_fail_instead_of_hanging(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Gap: the existing check calls the sync methods on the loop's thread directly, so if
    the error were swallowed the test itself would deadlock until pytest's timeout. Here the
    loop runs in a thread of its own and a watchdog fails the test in seconds."""
    make = _async_saver_factory(kind, tmp_path, request)
    outcomes: dict[str, BaseException | None] = {}
    problems: list[BaseException] = []
    started, finished = threading.Event(), threading.Event()

    async def body() -> None:
        saver = make()
        try:
            await put(saver, tid(), {"x": 1})  # binds the saver to this loop
            started.set()
            for name, call in _sync_calls(saver):
                try:
                    call()
                    outcomes[name] = None
                except BaseException as exc:
                    outcomes[name] = exc
            finished.set()
        finally:
            await saver.aclose()

    def main() -> None:
        try:
            asyncio.run(body())
        except BaseException as exc:
            problems.append(exc)
        finally:
            started.set()
            finished.set()

    worker = threading.Thread(target=main, daemon=True)
    worker.start()
    assert started.wait(120)
    if not finished.wait(DEADLOCK_AFTER):
        pytest.fail(f"a sync call on the event loop's own thread hung; done: {sorted(outcomes)}")
    worker.join(60)
    assert not problems, problems
    assert set(outcomes) == {name for name, _ in _sync_calls(None)}
    for name, exc in outcomes.items():
        assert isinstance(exc, LoopThreadError), (name, exc)
        assert isinstance(exc, asyncio.InvalidStateError)
        assert "event loop" in str(exc) and "await saver.a" in str(exc), str(exc)


@kinds("sqlite-async", "postgres-async")
async def test_sync_calls_from_another_running_loop_work(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Gap: a sync call made inside a *different* running loop (a synchronous graph run from
    an async handler, say) is not a call on the saver's loop thread: it must work, not be
    refused as one. The saver's loop runs in a thread of its own; this test's loop calls."""
    make = _async_saver_factory(kind, tmp_path, request)
    with loop_thread() as loop:

        async def create() -> Any:
            return make()

        saver = on_loop(loop, create())
        try:
            assert asyncio.get_running_loop() is not loop
            t = tid()
            cp = generate_checkpoint(channel_values={"x": 1}, channel_versions={"x": 1})
            stored = saver.put(config(t), cp, {"source": "loop", "step": 0}, {"x": 1})
            saver.put_writes(stored, [("x", 2)], "task")
            got = saver.get_tuple(config(t))
            assert got.checkpoint["id"] == cp["id"] and got.pending_writes == [("task", "x", 2)]
            assert [x.checkpoint["id"] for x in saver.list(config(t))] == [cp["id"]]
            saver.delete_thread(t)
            assert saver.get_tuple(config(t)) is None
        finally:
            on_loop(loop, saver.aclose())


# -- LangGraph serializers and with_allowlist ----------------------------------------------------


@dataclasses.dataclass
class Note:
    text: str


class PlainSerde:
    """A LangGraph serializer that is no ``JsonPlusSerializer`` (it has no allowlist)."""

    def __init__(self) -> None:
        self.inner = JsonPlusSerializer()

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        return self.inner.dumps_typed(obj)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        return self.inner.loads_typed(data)


@kinds("memory", "sqlite", "sqlite-async", "postgres")
@pytest.mark.parametrize("wrapped", ["jsonplus", "encrypted"])
async def test_with_allowlist_widens_a_langgraph_serializer(
    kind: str, wrapped: str, make_saver: MakeSaver, tmp_path: Path
) -> None:
    """Gap: ``with_allowlist`` on a saver made with ``serde=`` (only snapstate's codec was
    checked). A strict ``JsonPlusSerializer`` is widened; an ``EncryptedSerializer`` around one
    is unwrapped, widened and wrapped again, so the copy still encrypts. Compared with
    LangGraph's ``InMemorySaver`` given the same serializer."""
    from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

    def serde() -> Any:
        strict = JsonPlusSerializer(allowed_msgpack_modules=None)
        return strict if wrapped == "jsonplus" else EncryptedSerializer(XorCipher(), strict)

    saver = await make_saver(kind, serde=serde())
    theirs = LangGraphMemory(serde=serde())
    allow = [(Note.__module__, Note.__qualname__)]
    clone, their_clone = saver.with_allowlist(allow), theirs.with_allowlist(allow)
    assert clone is not saver and type(clone.serde) is type(saver.serde)
    secret = "plaintext the store must not show"
    t = tid()
    values = {"note": Note(secret)}
    for writer in (clone, their_clone):
        await put(writer, t, values)
    for reader, their_reader in ((saver, theirs), (clone, their_clone)):
        got = (await reader.aget_tuple(config(t))).checkpoint["channel_values"]["note"]
        want = (await their_reader.aget_tuple(config(t))).checkpoint["channel_values"]["note"]
        assert type(got) is type(want) and got == want
    assert got == Note(secret)  # the widened copy loads the class; the strict saver does not
    if wrapped == "encrypted" and kind == "sqlite":
        raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
        assert secret.encode() not in raw


def test_with_allowlist_leaves_other_serializers_alone(caplog: pytest.LogCaptureFixture) -> None:
    """Gap: a serializer with no allowlist: the saver itself comes back, with a warning, as
    LangGraph's savers do."""
    from snapstate.langgraph import InMemorySaver

    saver = InMemorySaver(serde=PlainSerde())
    theirs = LangGraphMemory(serde=PlainSerde())
    with caplog.at_level(logging.WARNING):
        assert saver.with_allowlist([("a.b", "C")]) is saver
        assert theirs.with_allowlist([("a.b", "C")]) is theirs
    assert any(
        "PlainSerde" in r.getMessage() and r.name.startswith("snapstate") for r in caplog.records
    )


# -- LangGraph's and LangChain's types -----------------------------------------------------------


def safe_values() -> dict[str, Any]:
    """A value of each LangChain and LangGraph type that LangGraph's strict mode loads."""
    import datetime

    from langchain_core.documents import Document
    from langchain_core.messages import (
        AIMessage,
        AIMessageChunk,
        ChatMessage,
        ChatMessageChunk,
        FunctionMessage,
        FunctionMessageChunk,
        HumanMessageChunk,
        SystemMessage,
        SystemMessageChunk,
        ToolMessageChunk,
    )
    from langgraph.store.base import GetOp, Item
    from langgraph.types import (
        Command,
        Interrupt,
        Overwrite,
        PregelTask,
        Send,
        StateSnapshot,
        TimeoutPolicy,
    )

    when = datetime.datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=datetime.timezone.utc)
    return {
        "system": SystemMessage("be brief", id="m1"),
        "chat": ChatMessage("hello", role="critic", id="m2"),
        "function": FunctionMessage("42", name="f", id="m3"),
        "ai": AIMessage(
            "done",
            id="m4",
            usage_metadata={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
            response_metadata={"model_name": "m"},
            additional_kwargs={"k": [1]},
        ),
        "ai_chunk": AIMessageChunk(
            "par",
            id="m5",
            tool_call_chunks=[{"name": "t", "args": '{"a": 1', "id": "c1", "index": 0}],
        ),
        "human_chunk": HumanMessageChunk("hi", id="m6"),
        "system_chunk": SystemMessageChunk("s", id="m7"),
        "tool_chunk": ToolMessageChunk("t", tool_call_id="c1", id="m8"),
        "chat_chunk": ChatMessageChunk("c", role="r", id="m9"),
        "function_chunk": FunctionMessageChunk("f", name="n", id="m10"),
        "document": Document("text", metadata={"page": 1}, id="d1"),
        "command": Command(
            graph=Command.PARENT,
            update={"x": 1},
            goto=[Send("a", {"n": 1}), Send("b", 2)],
            resume={"i1": "yes"},
        ),
        "interrupts": [Interrupt(value="why?", id="i1"), Interrupt(value={"q": 1}, id="i2")],
        "task": PregelTask("task-id", "node", ("__pregel_pull", "node")),
        "snapshot": StateSnapshot(
            values={"a": 1},
            next=("node",),
            config={"configurable": {"thread_id": "t"}},
            metadata=None,
            created_at=None,
            parent_config=None,
            tasks=(),
            interrupts=(),
        ),
        "item": Item(
            namespace=("a", "b"), key="k", value={"v": 1}, created_at=when, updated_at=when
        ),
        "get_op": GetOp(namespace=("a",), key="k"),
        "overwrite": Overwrite({"a": 1}),
        "timeout": TimeoutPolicy(run_timeout=1.5),
        "when": when,
    }


@pytest.fixture
def strict_msgpack(monkeypatch: pytest.MonkeyPatch) -> None:
    from langgraph._internal import _serde as langgraph_serde

    monkeypatch.setenv("LANGGRAPH_STRICT_MSGPACK", "true")
    monkeypatch.setattr(langgraph_serde, "STRICT_MSGPACK_ENABLED", True)


@kinds(*ALL_KINDS)
async def test_langgraph_types_load_as_themselves_in_strict_mode(
    kind: str, strict_msgpack: None, make_saver: MakeSaver
) -> None:
    """Gap: under ``LANGGRAPH_STRICT_MSGPACK`` only two message classes were checked, and
    without it dataclasses and pydantic models load anyway (``Command``, ``Document``, ... would
    pass without being built in). Every LangChain and LangGraph type LangGraph's strict mode
    loads must come back as itself, read through a second saver, as LangGraph's own strict
    serializer brings it back."""
    values = safe_values()
    writer = await make_saver(kind)
    assert writer.codec.strict
    reader = writer if kind == "memory" else await make_saver(kind)
    theirs = LangGraphMemory(serde=JsonPlusSerializer(allowed_msgpack_modules=None))
    t = tid()
    for s in (writer, theirs):
        cid = await put(s, t, values)
        await s.aput_writes(config(t, checkpoint_id=cid), list(values.items()), "task")
    got = await reader.aget_tuple(config(t))
    want = await theirs.aget_tuple(config(t))
    written = {channel: value for _, channel, value in got.pending_writes}
    for key, value in values.items():
        for loaded in (got.checkpoint["channel_values"][key], written[key]):
            assert loaded == value, key
            assert type(loaded) is type(value), key
        assert type(want.checkpoint["channel_values"][key]) is type(value), key
    for loaded, value in zip(written["interrupts"], values["interrupts"]):
        assert type(loaded) is type(value)
    assert [type(s) for s in got.checkpoint["channel_values"]["command"].goto] == [
        type(s) for s in values["command"].goto
    ]


def test_stdlib_types_langgraph_stores() -> None:
    """ipaddress values and ``re.Pattern`` round-trip through LangGraph's savers and ours."""
    import ipaddress
    import re

    from snapstate.langgraph import InMemorySaver

    values = {
        "address": ipaddress.IPv4Address("10.0.0.1"),
        "network": ipaddress.IPv6Network("2001:db8::/32"),
        "interface": ipaddress.IPv4Interface("10.0.0.1/24"),
        "pattern": re.compile("a+", re.I),
        "bytes pattern": re.compile(b"x.*y", re.S),
    }
    theirs = LangGraphMemory()
    versions = dict.fromkeys(values, 1)
    cp = generate_checkpoint(channel_values=values, channel_versions=versions)
    cfg = theirs.put(config("t"), cp, {}, versions)
    assert theirs.get_tuple(cfg).checkpoint["channel_values"] == values
    saver = InMemorySaver()
    cfg = saver.put(config("t"), cp, {}, versions)
    loaded = saver.get_tuple(cfg).checkpoint["channel_values"]
    assert loaded == values
    assert {k: type(v) for k, v in loaded.items()} == {k: type(v) for k, v in values.items()}


# -- constructors and factories ------------------------------------------------------------------


def _pairs() -> list[tuple[type, type]]:
    from langgraph.checkpoint.postgres import PostgresSaver as LGPostgres
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver as LGAsyncPostgres
    from langgraph.checkpoint.sqlite import SqliteSaver as LGSqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver as LGAsyncSqlite

    from snapstate import langgraph as ours

    return [
        (ours.InMemorySaver, LangGraphMemory),
        (ours.MemorySaver, LangGraphMemory),
        (ours.SqliteSaver, LGSqlite),
        (ours.AsyncSqliteSaver, LGAsyncSqlite),
        (ours.PostgresSaver, LGPostgres),
        (ours.AsyncPostgresSaver, LGAsyncPostgres),
    ]


def _incompatible(ours: Any, theirs: Any) -> list[str]:
    """How a call that works on ``theirs`` could fail on ``ours`` (by signature alone)."""
    p = inspect.Parameter
    mine, their = inspect.signature(ours).parameters, inspect.signature(theirs).parameters
    problems = []
    positional = [
        n for n, x in their.items() if x.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    my_positional = [
        n for n, x in mine.items() if x.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if my_positional[: len(positional)] != positional:
        problems.append(f"positional parameters {my_positional} for {positional}")
    for name, x in their.items():
        if x.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            if not any(y.kind is x.kind for y in mine.values()):
                problems.append(f"no {x}")
            continue
        y = mine.get(name)
        if y is None:
            if not any(z.kind is p.VAR_KEYWORD for z in mine.values()):
                problems.append(f"no parameter {name!r}")
            continue
        if x.kind is p.POSITIONAL_OR_KEYWORD and y.kind is not p.POSITIONAL_OR_KEYWORD:
            problems.append(f"{name!r} is {y.kind.description}, not positional or keyword")
        if x.kind is p.KEYWORD_ONLY and y.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            problems.append(f"{name!r} cannot be passed by keyword")
        if x.default is not y.default and x.default != y.default:
            problems.append(f"{name!r} defaults to {y.default!r}, not {x.default!r}")
    for name, y in mine.items():
        if (
            name not in their
            and y.default is p.empty
            and y.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ):
            problems.append(f"{name!r} is required")
    return problems


def _kind_of(fn: Any) -> str:
    fn = getattr(fn, "__wrapped__", fn)
    if inspect.isasyncgenfunction(fn):
        return "async generator"
    if inspect.iscoroutinefunction(fn):
        return "coroutine"
    return "generator" if inspect.isgeneratorfunction(fn) else "function"


def test_constructors_factories_and_methods_take_langgraphs_calls() -> None:
    """Gap: drift from LangGraph's signatures (a parameter made keyword-only, renamed, given
    another default, a new required one; ``setup`` or ``from_conn_string`` changing between
    sync and async) was caught only where a test happened to call that form."""
    methods = [
        n for n, f in vars(BaseCheckpointSaver).items() if callable(f) and not n.startswith("_")
    ]
    names = ["__init__", "from_conn_string", "setup", *methods]
    problems = {}
    for ours, theirs in _pairs():
        for name in names:
            their_fn = getattr(theirs, name, None)
            if their_fn is None:
                continue
            our_fn = getattr(ours, name)
            found = _incompatible(our_fn, their_fn)
            if _kind_of(our_fn) != _kind_of(their_fn) and not (
                # LangGraph's SqliteSaver has no working async methods; ours has them.
                name.startswith("a") and theirs.__name__ == "SqliteSaver"
            ):
                found.append(f"a {_kind_of(our_fn)}, not a {_kind_of(their_fn)}")
            if found:
                problems[f"{ours.__name__}.{name}"] = found
    assert not problems, problems


async def test_a_given_sqlite_connection_stays_open(tmp_path: Path) -> None:
    """Gap: LangGraph's savers never close a connection they were given; nothing checked ours
    (the conformance runs close it themselves afterwards, which hides a saver closing it)."""
    import aiosqlite

    from snapstate.langgraph import AsyncSqliteSaver

    conn = sqlite3.connect(tmp_path / "given.db", check_same_thread=False)
    try:
        saver = SqliteSaver(conn)
        await put(saver, tid(), {"x": 1})
        saver.close()
        assert conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0] == 1
    finally:
        conn.close()
    aconn = await aiosqlite.connect(tmp_path / "given.db")
    try:
        asaver = AsyncSqliteSaver(aconn)
        await put(asaver, tid(), {"x": 1})
        await asaver.aclose()
        async with aconn.execute("SELECT count(*) FROM checkpoints") as cursor:
            assert (await cursor.fetchone())[0] == 2
    finally:
        await aconn.close()


@pytest.mark.postgres
async def test_a_given_postgres_connection_or_pool_stays_open(pg_dsn: str, pg_schema: str) -> None:
    """Gap: as above, for ``PostgresSaver(conn or pool)`` and their async twins."""
    import psycopg
    import psycopg_pool

    from snapstate.langgraph import AsyncPostgresSaver, PostgresSaver

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        saver = PostgresSaver(conn, schema=pg_schema)
        await put(saver, tid(), {"x": 1})
        saver.close()
        assert not conn.closed and conn.execute("SELECT 1").fetchone() == (1,)
    with psycopg_pool.ConnectionPool(pg_dsn, min_size=1, max_size=2) as pool:
        saver = PostgresSaver(pool, schema=pg_schema)
        await put(saver, tid(), {"x": 1})
        saver.close()
        assert not pool.closed
        with pool.connection() as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as aconn:
        asaver = AsyncPostgresSaver(aconn, schema=pg_schema)
        await put(asaver, tid(), {"x": 1})
        await asaver.aclose()
        assert not aconn.closed and await (await aconn.execute("SELECT 1")).fetchone() == (1,)
    async with psycopg_pool.AsyncConnectionPool(
        pg_dsn, min_size=1, max_size=2, open=False
    ) as apool:
        asaver = AsyncPostgresSaver(apool, schema=pg_schema)
        await put(asaver, tid(), {"x": 1})
        await asaver.aclose()
        assert not apool.closed


class Boom(Exception):
    pass


def _factories(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Callable[[], Any]]:
    from snapstate.langgraph import AsyncPostgresSaver, AsyncSqliteSaver, PostgresSaver

    def pg() -> tuple[str, str]:
        return request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")

    return {
        "sqlite": lambda: SqliteSaver.from_conn_string(str(tmp_path / "f.db")),
        "sqlite-memory": lambda: SqliteSaver.from_conn_string(":memory:"),
        "sqlite-async": lambda: AsyncSqliteSaver.from_conn_string(str(tmp_path / "f.db")),
        "postgres": lambda: PostgresSaver.from_conn_string(pg()[0], schema=pg()[1]),
        "postgres-async": lambda: AsyncPostgresSaver.from_conn_string(pg()[0], schema=pg()[1]),
    }


@pytest.mark.parametrize(
    "factory",
    [
        "sqlite",
        "sqlite-memory",
        "sqlite-async",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("postgres-async", marks=pytest.mark.postgres),
    ],
)
async def test_from_conn_string_closes_the_saver_when_the_block_raises(
    factory: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Gap: the factories were checked on a block that ends normally, and only for SQLite.
    Leaving the block by an exception closes the saver too and lets the exception through."""
    made = _factories(tmp_path, request)[factory]()
    t = tid()
    saver: Any = None
    with pytest.raises(Boom):
        if isinstance(made, contextlib.AbstractAsyncContextManager):
            async with made as saver:
                await put(saver, t, {"x": 1})
                raise Boom
        else:
            with made as saver:
                await put(saver, t, {"x": 1})
                raise Boom
    with pytest.raises(SnapstateError, match="closed"):
        await saver.aget_tuple(config(t))


# -- channel versions ----------------------------------------------------------------------------


@kinds(*ALL_KINDS)
async def test_next_version_on_every_saver(kind: str, make_saver: MakeSaver) -> None:
    """Gap: only ``InMemorySaver``'s ``get_next_version`` was checked. Every saver: None, ints
    and the strings LangGraph's savers (and ours) store continue the 32-digit counter, each
    version greater than the one it follows."""
    saver = await make_saver(kind)
    theirs = LangGraphMemory()
    current: Any = None
    for expected in range(1, 4):
        nxt = saver.get_next_version(current, None)
        assert nxt.startswith(f"{expected:032}.") and (current is None or nxt > current)
        assert len(nxt.split(".", 1)[0]) == len(
            theirs.get_next_version(current, None).split(".")[0]
        )
        current = nxt
    for given, counter in [(9, 10), (theirs.get_next_version(f"{98:032}.5", None), 100)]:
        nxt = saver.get_next_version(given, None)
        assert nxt.startswith(f"{counter:032}.")
        if isinstance(given, str):
            assert nxt > given
