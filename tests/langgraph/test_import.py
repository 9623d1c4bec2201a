"""import_history: threads LangGraph's savers stored, brought into snapstate's.

Graphs run on LangGraph's own savers (in memory, a SQLite file, a PostgreSQL schema); the
history is imported into one of ours; then every thread's history, read through a graph on
each side, must be the same, and the graphs must carry on the same way from either store.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import operator
import os
import random
import re
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import rule
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver as LGMemory
from langgraph.checkpoint.serde.types import INTERRUPT, TASKS
from langgraph.checkpoint.sqlite import SqliteSaver as LGSqlite
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send

from snapstate import cli
from snapstate.errors import ImportMismatchError, InvalidArgumentError, StorageError
from snapstate.langgraph import (
    ImportReport,
    InMemorySaver,
    SqliteSaver,
    aimport_history,
    import_history,
)
from snapstate.langgraph import _import as import_module
from snapstate.langgraph._import import source_threads

from ..fix_backends import new_schema
from . import graphs
from . import test_delta_channel as delta_channel
from . import test_differential as differential
from .conftest import MakeSaver, langgraph_postgres
from .test_differential import Differential, same

DATA = Path(__file__).parent / "data"

BUILDERS = {
    "tools": graphs.tool_loop,
    "sends": graphs.map_reduce,
    "subgraph": graphs.with_subgraph,
    "fork": graphs.chain,
}


def cfg(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


def run_graphs(saver: Any) -> None:
    """What users leave in a store: a tool loop over two turns, a Send fan-out, a subgraph
    waiting at an interrupt, and a thread forked from an older checkpoint."""
    g = {name: build().compile(checkpointer=saver) for name, build in BUILDERS.items()}
    g["tools"].invoke({"messages": [HumanMessage("what is 1 + 10?", id="h1")]}, cfg("tools"))
    g["tools"].invoke({"messages": [HumanMessage("and 2 + 10?", id="h2")]}, cfg("tools"))
    g["sends"].invoke({"items": ["x", "y", "z"], "results": []}, cfg("sends"))
    g["subgraph"].invoke({"text": "hello", "approved": False}, cfg("subgraph"))
    g["fork"].invoke({"log": ["start"], "count": 0}, cfg("fork"))
    older = list(g["fork"].get_state_history(cfg("fork")))[2].config
    forked = g["fork"].update_state(older, {"log": ["edited"]})
    g["fork"].invoke(None, forked)


def history(saver: Any, name: str) -> list[Any]:
    graph = BUILDERS[name]().compile(checkpointer=saver)
    return list(graph.get_state_history(cfg(name)))


def assert_same_store(source: Any, target: Any) -> None:
    for name in BUILDERS:
        expected = history(source, name)
        assert expected, name
        assert history(target, name) == expected, name
    # The subgraph waiting at its interrupt, namespaces included.
    sub = BUILDERS["subgraph"]
    for saver in (source, target):
        state = sub().compile(checkpointer=saver).get_state(cfg("subgraph"), subgraphs=True)
        assert state.next == ("draft",) and state.tasks[0].state.next == ("review",)
    every = {"configurable": {"thread_id": "subgraph"}}
    assert sorted(t.checkpoint["id"] for t in target.list(every)) == sorted(
        t.checkpoint["id"] for t in source.list(every)
    )


def carry_on(saver: Any) -> tuple[Any, ...]:
    """Resume the interrupted subgraph and continue the conversation."""
    sub = BUILDERS["subgraph"]().compile(checkpointer=saver)
    resumed = sub.invoke(Command(resume="yes"), cfg("subgraph"))
    tools = BUILDERS["tools"]().compile(checkpointer=saver)
    out = tools.invoke({"messages": [HumanMessage("and 3 + 10?", id="h3")]}, cfg("tools"))
    return resumed, [(type(m), m.content) for m in out["messages"]]


@contextlib.contextmanager
def source_saver(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    if kind == "langgraph-memory":
        yield LGMemory()
    elif kind == "langgraph-sqlite":
        with LGSqlite.from_conn_string(str(tmp_path / "langgraph.db")) as saver:
            yield saver
    elif kind == "langgraph-postgres":
        with langgraph_postgres(request.getfixturevalue("pg_dsn")) as saver:
            yield saver
    elif kind == "snapstate-sqlite":
        with SqliteSaver.from_conn_string(str(tmp_path / "snapstate-source.db")) as saver:
            yield saver
    else:  # pragma: no cover - a typo in a test
        raise ValueError(kind)


PAIRS = [
    ("langgraph-memory", "sqlite"),
    ("langgraph-sqlite", "sqlite"),
    ("langgraph-sqlite", "memory"),
    pytest.param("langgraph-sqlite", "postgres", marks=pytest.mark.postgres),
    pytest.param("langgraph-postgres", "sqlite", marks=pytest.mark.postgres),
    pytest.param("langgraph-postgres", "postgres", marks=pytest.mark.postgres),
    # Outgrowing the embedded default: snapstate's SQLite file into PostgreSQL.
    pytest.param("snapstate-sqlite", "postgres", marks=pytest.mark.postgres),
]


@pytest.mark.parametrize(("source_kind", "target_kind"), PAIRS)
async def test_imported_history_reads_and_runs_as_the_source(
    source_kind: str,
    target_kind: str,
    make_saver: MakeSaver,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    target = await make_saver(target_kind)
    with source_saver(source_kind, tmp_path, request) as source:
        run_graphs(source)
        seen: list[tuple[int, int]] = []
        report = import_history(source, target, progress=lambda p: seen.append((p.done, p.total)))
        every = [t for name in BUILDERS for t in source.list(cfg(name))]
        writes = sum(len(t.pending_writes or ()) for t in every)
        assert report == ImportReport(
            threads=4,
            checkpoints=len(every),
            skipped=0,
            writes=writes,
            migrated=0,
            verified=len(every),
        )
        assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
        assert_same_store(source, target)

        # Run again: nothing new is written, nothing changes.
        again = import_history(source, target)
        assert (again.checkpoints, again.skipped, again.verified) == (0, len(every), len(every))
        assert_same_store(source, target)

        # Both stores carry on the same way.
        assert carry_on(target) == carry_on(source)


async def test_a_growing_conversation_is_stored_as_what_each_step_appended(
    make_saver: MakeSaver, tmp_path: Path
) -> None:
    """Imported oldest first, a message list costs what it costs when the graph runs on our
    saver itself: each step's new messages, not the whole list again."""
    rng = random.Random(7)

    def question(turn: int) -> HumanMessage:
        words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(300))
        return HumanMessage(f"what is {turn} + 10? {words}", id=f"h{turn}")

    questions = [question(turn) for turn in range(12)]
    with LGSqlite.from_conn_string(str(tmp_path / "langgraph.db")) as source:
        graph = graphs.tool_loop().compile(checkpointer=source)
        for q in questions:
            graph.invoke({"messages": [q]}, cfg("t"))
        target = await make_saver("sqlite")
        report = import_history(source, target)
        assert report.checkpoints == len(list(source.list(cfg("t")))) == 12 * 4 + 12
        mine = graphs.tool_loop().compile(checkpointer=target)
        assert list(mine.get_state_history(cfg("t"))) == list(graph.get_state_history(cfg("t")))
    with SqliteSaver.from_conn_string(str(tmp_path / "direct.db")) as direct:
        graph = graphs.tool_loop().compile(checkpointer=direct)
        for q in questions:
            graph.invoke({"messages": [q]}, cfg("t"))
        expected = direct.checkpointer.stats().blob_bytes
    assert target.checkpointer.stats().blob_bytes < 1.2 * expected


@contextlib.asynccontextmanager
async def async_source(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """LangGraph's async savers, on a file or a schema of their own."""
    if kind == "langgraph-sqlite-async":
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver as LGAsyncSqlite

        async with LGAsyncSqlite.from_conn_string(str(tmp_path / "langgraph.db")) as saver:
            yield saver
    else:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver as LGAsyncPostgres
        from psycopg import AsyncConnection
        from psycopg.rows import dict_row

        dsn = request.getfixturevalue("pg_dsn")
        with new_schema(dsn, "lg_") as schema:
            async with await AsyncConnection.connect(
                dsn, autocommit=True, row_factory=dict_row, options=f"-c search_path={schema}"
            ) as conn:
                saver = LGAsyncPostgres(conn)  # type: ignore[arg-type]
                await saver.setup()
                yield saver


@pytest.mark.parametrize(
    ("source_kind", "target_kind"),
    [
        ("langgraph-sqlite-async", "sqlite-async"),
        pytest.param("langgraph-postgres-async", "postgres-async", marks=pytest.mark.postgres),
    ],
)
async def test_between_async_savers(
    source_kind: str, target_kind: str, make_saver: MakeSaver, tmp_path: Path, request: Any
) -> None:
    """From async code, between async savers: each is driven through its sync methods, from a
    worker thread, on the loop it works on."""
    target = await make_saver(target_kind)
    async with async_source(source_kind, tmp_path, request) as source:
        await asyncio.to_thread(run_graphs, source)
        report = await aimport_history(source, target)
        assert report.threads == 4 and report.verified == report.checkpoints > 0
        for name in BUILDERS:
            theirs = BUILDERS[name]().compile(checkpointer=source)
            mine = BUILDERS[name]().compile(checkpointer=target)
            expected = [s async for s in theirs.aget_state_history(cfg(name))]
            assert [s async for s in mine.aget_state_history(cfg(name))] == expected


async def test_only_the_threads_asked_for(make_saver: MakeSaver) -> None:
    source = LGMemory()
    run_graphs(source)
    target = await make_saver("memory")
    report = import_history(source, target, thread_ids=["sends", "fork"])
    assert report.threads == 2
    assert source_threads(target) == ["fork", "sends"]
    assert history(target, "tools") == []
    assert history(target, "sends") == history(source, "sends")


def test_threads_of_any_saver_are_found_by_listing_it() -> None:
    class Elsewhere(LGMemory):
        """A saver snapstate knows nothing about (no storage to look into)."""

    source = Elsewhere()
    run_graphs(source)
    assert (
        source_threads(source) == sorted(BUILDERS) == source_threads(LGMemory()) + sorted(BUILDERS)
    )
    target = InMemorySaver()
    assert import_history(source, target).threads == 4
    assert source_threads(target) == sorted(BUILDERS)


def test_threads_of_a_langgraph_saver_unlike_this_release_are_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def changed_insides(source: Any) -> Any:
        raise sqlite3.OperationalError("no such table: checkpoints")

    with LGSqlite.from_conn_string(str(tmp_path / "langgraph.db")) as source:
        run_graphs(source)
        monkeypatch.setattr(import_module, "_langgraph_threads", changed_insides)
        assert source_threads(source) == sorted(BUILDERS)


def put_chain(saver: Any, thread_id: str, versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Checkpoints put straight into a saver, each the child of the one before."""
    configs = []
    parent: dict[str, Any] = cfg(thread_id)
    parent["configurable"]["checkpoint_ns"] = ""
    for step, fields in enumerate(versions):
        checkpoint: dict[str, Any] = {**empty_checkpoint(), **fields}
        checkpoint["id"] = f"1f000000-0000-6000-8000-{step + 1:012d}"
        meta = {"source": "loop", "step": step}
        parent = saver.put(parent, checkpoint, meta, dict(checkpoint["channel_versions"]))
        configs.append(parent)
    return configs


def test_pending_sends_of_old_checkpoints_move_into_the_tasks_channel() -> None:
    """LangGraph's format 1 kept sends in the checkpoint, formats 2 and 3 in the parent's
    pending writes; format 4 keeps them in the ``__pregel_tasks`` channel."""
    source = LGMemory()
    sends = [Send("work", {"item": "x"}), Send("work", {"item": "y"})]
    # Format 1: the sends are a field of the checkpoint itself.
    put_chain(
        source,
        "v1",
        [
            {
                "v": 1,
                "channel_values": {"items": ["x", "y"]},
                "channel_versions": {"items": 1},
                "pending_sends": sends,
            }
        ],
    )
    # Format 3: the parent's pending writes hold them.
    first, _ = put_chain(
        source,
        "v3",
        [
            {"v": 3, "channel_values": {"items": ["x", "y"]}, "channel_versions": {"items": 1}},
            {"v": 3, "channel_values": {"items": ["x", "y"]}, "channel_versions": {"items": 2}},
        ],
    )
    source.put_writes(first, [(TASKS, s) for s in sends], "task-1")
    target = InMemorySaver()
    report = import_history(source, target)
    assert report.migrated == 2
    for thread_id in ("v1", "v3"):
        latest = target.get_tuple(cfg(thread_id))
        assert latest is not None
        assert latest.checkpoint["channel_values"][TASKS] == sends
        assert latest.checkpoint["channel_versions"][TASKS] == max(
            v for c, v in latest.checkpoint["channel_versions"].items() if c != TASKS
        )
        assert "pending_sends" not in latest.checkpoint
        assert latest.checkpoint["v"] < 4  # task ids still follow the old scheme
    # The parent of the format-3 checkpoint had no sends before it: it is left as it was.
    parent = target.get_tuple(first)
    assert parent is not None and TASKS not in parent.checkpoint["channel_values"]
    assert [w[1] for w in parent.pending_writes] == [TASKS, TASKS]


def test_items_alike_but_stored_differently_are_not_taken_for_the_same() -> None:
    """``1 == 1.0`` and ``True == 1``: the import must not store the earlier item in place of
    a later one that merely compares equal to it."""
    source = LGMemory()
    put_chain(
        source,
        "t",
        [
            {"channel_values": {"items": [{"n": 1}, True]}, "channel_versions": {"items": 1}},
            {
                "channel_values": {"items": [{"n": 1.0}, 1, "new"]},
                "channel_versions": {"items": 2},
            },
            {
                "channel_values": {"items": [{"n": 1.0}, 1, "new", "newer"]},
                "channel_versions": {"items": 3},
            },
        ],
    )
    target = InMemorySaver()
    import_history(source, target)
    items = [t.checkpoint["channel_values"]["items"] for t in target.list(cfg("t"))]
    assert [[type(i["n"]), type(b)] for i, b, *_ in items] == [
        [float, int],
        [float, int],
        [int, bool],
    ]
    assert items[0] == [{"n": 1.0}, 1, "new", "newer"]


def test_addresses_and_patterns_langgraph_stored_come_across() -> None:
    """LangGraph's serializer stores ``ipaddress`` values and compiled patterns; the import
    brings them across as themselves."""
    values = {
        "hosts": [ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv6Interface("fe80::1%eth0/64")],
        "net": ipaddress.IPv4Network("10.0.0.0/8"),
        "rule": re.compile("^a+$", re.IGNORECASE | re.MULTILINE),
    }
    source = LGMemory()
    put_chain(
        source, "t", [{"channel_values": values, "channel_versions": dict.fromkeys(values, 1)}]
    )
    target = InMemorySaver()
    import_history(source, target)
    got = target.get_tuple(cfg("t"))
    assert got is not None
    loaded = got.checkpoint["channel_values"]
    assert loaded == values
    assert [type(h) for h in loaded["hosts"]] == [type(h) for h in values["hosts"]]
    assert type(loaded["net"]) is ipaddress.IPv4Network
    assert type(loaded["rule"]) is re.Pattern


@pytest.mark.parametrize(
    ("release", "fmt"), [("langgraph-0.2.20.db", 1), ("langgraph-0.3.34.db", 3)]
)
@pytest.mark.parametrize("target_kind", ["memory", "sqlite"])
# LangGraph's own serializer warns as it loads what its older releases stored.
@pytest.mark.filterwarnings("ignore:Importing Send from langgraph.constants is deprecated")
async def test_stores_older_langgraph_releases_wrote_resume_on_ours(
    release: str, fmt: int, target_kind: str, make_saver: MakeSaver, tmp_path: Path
) -> None:
    """Files written by LangGraph 0.2 and 0.3 (tests/langgraph/data/make_old_stores.py): a
    fan-out stopped before its three ``Send`` tasks ran. Imported, the graph resumes on our
    saver with the same tasks (the same ids) as on LangGraph's own saver, and finishes alike."""
    builder = fan_builder()
    fan = cfg("fan")
    original = tmp_path / "original.db"
    shutil.copy(DATA / release, original)
    with LGSqlite.from_conn_string(str(original)) as theirs:
        (latest, *_) = theirs.list(fan)
        assert latest.checkpoint["v"] == fmt
        target = await make_saver(target_kind)
        report = import_history(theirs, target)
        assert (report.checkpoints, report.migrated) == (3, 1)
        assert report.verified == 3
        graph = builder.compile(checkpointer=theirs, interrupt_before=["work"])
        expected = graph.get_state(fan)
        assert [t.name for t in expected.tasks] == ["work"] * 3
        expected_out = graph.invoke(None, fan)
    mine = builder.compile(checkpointer=target, interrupt_before=["work"])
    state = mine.get_state(fan)
    assert state.tasks == expected.tasks and state.next == expected.next
    assert (
        mine.invoke(None, fan)
        == expected_out
        == {
            "items": ["x", "y", "z"],
            "results": ["X", "Y", "Z"],
        }
    )


class FanState(TypedDict):
    items: list[str]
    results: Annotated[list[str], operator.add]


def fan_out(state: FanState) -> list[Send]:
    return [Send("work", {"item": i}) for i in state["items"]]


def fan_builder() -> Any:
    """The graph of tests/langgraph/data/make_old_stores.py, on today's LangGraph."""
    b = StateGraph(FanState)
    b.add_node("plan", lambda state: {"items": state["items"]})
    b.add_node("work", lambda state: {"results": [state["item"].upper()]})
    b.add_edge(START, "plan")
    b.add_conditional_edges("plan", fan_out, ["work"])
    b.add_edge("work", END)
    return b


@pytest.mark.parametrize("target_kind", ["memory", "sqlite"])
async def test_delta_channels_rebuild_the_same_state_after_an_import(
    target_kind: str, make_saver: MakeSaver, tmp_path: Path
) -> None:
    """A ``DeltaChannel`` rebuilds its value from its ancestors' writes, in LangGraph's order of
    tasks; two branches write it in the same step. The import keeps that order."""
    fan = cfg("delta")
    with LGSqlite.from_conn_string(str(tmp_path / "langgraph.db")) as source:
        expected = await delta_channel.run(delta_channel.build().compile(source), fan, False)
        target = await make_saver(target_kind)
        import_history(source, target)
        graph = delta_channel.build().compile(checkpointer=target)
        assert [(s.metadata["step"], s.values) for s in graph.get_state_history(fan)] == expected
        for t in target.list(fan):
            got = target.get_delta_channel_history(config=t.config, channels=["log"])
            slow = BaseCheckpointSaver.get_delta_channel_history(
                source, config=t.config, channels=["log"]
            )
            assert got == slow, t.config
        # Both carry on alike.
        more = {"log": ["more"], "n": 13}
        theirs = delta_channel.build().compile(checkpointer=source).invoke(more, fan)
    assert graph.invoke(more, fan) == theirs


def test_pending_writes_keep_the_order_of_their_task_paths() -> None:
    """LangGraph orders a step's writes by task path, then task id (``writes_sort_key``), as it
    applies them; the paths do not come back from a saver, but their order must survive."""
    source = LGMemory()
    (checkpoint,) = put_chain(source, "t", [{"channel_values": {}, "channel_versions": {}}])
    source.put_writes(checkpoint, [("log", "from b")], "task-b", "~__pregel_pull, 1")
    source.put_writes(checkpoint, [("log", "from a")], "task-a", "~__pregel_pull, 2")
    expected = [("task-b", "log", "from b"), ("task-a", "log", "from a")]
    assert list(source.get_tuple(checkpoint).pending_writes) == expected  # type: ignore[union-attr]
    target = InMemorySaver()
    import_history(source, target)
    got = target.get_tuple(checkpoint)
    assert got is not None and list(got.pending_writes) == expected


def test_a_second_import_brings_a_task_s_newer_interrupt() -> None:
    """Errors and interrupts are replaced when written again, as LangGraph's savers do: a task
    interrupted again at the same checkpoint since the last import shows its new interrupt."""
    source = LGMemory()
    (checkpoint,) = put_chain(source, "t", [{"channel_values": {}, "channel_versions": {}}])
    source.put_writes(checkpoint, [("a", 1)], "task-1")
    source.put_writes(checkpoint, [(INTERRUPT, "first question")], "task-1")
    target = InMemorySaver()
    import_history(source, target)
    source.put_writes(checkpoint, [(INTERRUPT, "second question")], "task-1")
    import_history(source, target)
    got = target.get_tuple(checkpoint)
    assert got is not None
    assert sorted(got.pending_writes) == [
        ("task-1", INTERRUPT, "second question"),
        ("task-1", "a", 1),
    ]


class ImportDifferential(Differential):
    """The differential state machine (test_differential.py), whose random calls also build
    histories in LangGraph's ``InMemorySaver``: forks, namespaces, growing lists, large values,
    writes of every kind, deletions. After each sequence, its threads are imported into a fresh
    saver of ours, which must list every namespace exactly as LangGraph's saver does."""

    target: Callable[[], Any] = InMemorySaver

    @rule(
        data=st.data(),
        writes=st.lists(
            st.tuples(differential.write_channels, differential.values), min_size=1, max_size=3
        ),
    )
    def every_task_writes(self, data: st.DataObject, writes: list[Any]) -> None:
        """Writes of both tasks on one checkpoint (their task paths sort them in the order
        opposite to their ids'), which the machine's own rule rarely makes."""
        targets = [(t, ns, i) for (t, ns), ids in self.ids.items() for i in ids]
        if targets:
            where = data.draw(st.sampled_from(targets))
            for task in differential.TASKS:
                self.write(*where, task, writes)

    def teardown(self) -> None:
        target = self.target()
        try:
            report = import_history(self.ref, target)
            assert report.skipped == report.migrated == 0
            for thread_id in source_threads(self.ref):
                for ns in ("", "child:1"):
                    conf = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}
                    assert [same(t) for t in target.list(conf)] == [
                        same(t) for t in self.ref.list(conf)
                    ]
        finally:
            target.close()


@pytest.mark.parametrize("target_kind", ["memory", "sqlite"])
def test_random_histories_import_exactly(target_kind: str, tmp_path: Path) -> None:
    files = iter(range(10**6))

    def sqlite_target() -> Any:
        return SqliteSaver(tmp_path / f"target-{next(files)}.db")

    make = InMemorySaver if target_kind == "memory" else sqlite_target
    ImportDifferential.target = staticmethod(make)  # type: ignore[assignment]
    with InMemorySaver() as saver:
        differential.run(saver, 25, ImportDifferential)


def test_verification_finds_what_the_target_lost() -> None:
    class Lossy(InMemorySaver):
        def put_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
            super().put_writes(config, list(writes)[:-1], task_id, task_path)

    source = LGMemory()
    run_graphs(source)
    with pytest.raises(ImportMismatchError, match=r"thread 'sends'.*pending writes differs"):
        import_history(source, Lossy(), thread_ids=["sends"])
    # Without verification the loss goes unnoticed: that is what verification is for.
    report = import_history(source, Lossy(), thread_ids=["sends"], verify=False)
    assert report.verified == 0


def test_a_source_that_fails_to_read_is_named() -> None:
    class Broken(LGMemory):
        broken = False

        def list(self, config: Any, **kwargs: Any) -> Any:
            if self.broken and config is not None:
                raise ValueError("cannot decode a value")
            return super().list(config, **kwargs)

    source = Broken()
    run_graphs(source)
    source.broken = True
    with pytest.raises(
        StorageError,
        match=r"cannot read thread 'fork' from the source \(Broken\): ValueError: cannot decode",
    ) as caught:
        import_history(source, InMemorySaver())
    assert isinstance(caught.value.__cause__, ValueError)


def test_bad_arguments_say_what_is_wrong() -> None:
    target = InMemorySaver()
    with pytest.raises(InvalidArgumentError, match="from one LangGraph saver to another"):
        import_history(object(), target)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="two different savers"):
        import_history(target, target)
    with pytest.raises(InvalidArgumentError, match="not a str"):
        import_history(LGMemory(), target, thread_ids="abc")


def test_the_command_line_imports_a_langgraph_sqlite_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = tmp_path / "langgraph.db", tmp_path / "snapstate.db"
    with LGSqlite.from_conn_string(str(old)) as source:
        run_graphs(source)
        expected = {name: history(source, name) for name in BUILDERS}
    before = old.read_bytes()
    assert cli.main(["import-langgraph", str(old), str(new)]) == 0
    out = capsys.readouterr()
    assert "imported 4 thread(s)" in out.out and "verified" in out.out
    assert "import: 4/4 threads" in out.err
    assert old.read_bytes() == before  # the source is only read
    with SqliteSaver.from_conn_string(str(new)) as target:
        assert {name: history(target, name) for name in BUILDERS} == expected


@pytest.mark.postgres
def test_the_command_line_imports_langgraph_postgres_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pg_dsn: str, pg_schema: str
) -> None:
    with langgraph_postgres(pg_dsn) as source:
        run_graphs(source)
        expected = {name: history(source, name) for name in BUILDERS}
        args = ["import-langgraph", pg_dsn, pg_dsn, "--source-schema", source.schema]
        assert cli.main([*args, "--schema", pg_schema, "--thread", "sends"]) == 0
        assert "imported 1 thread(s)" in capsys.readouterr().out
        # In a schema without LangGraph's tables (whatever the database's default schema
        # holds), they are not found: nothing is written.
        with new_schema(pg_dsn, prefix="empty_") as empty:
            no_tables = ["import-langgraph", pg_dsn, str(tmp_path / "new.db")]
            assert cli.main([*no_tables, "--source-schema", empty]) == 2
        assert "holds no LangGraph checkpoint tables" in capsys.readouterr().err
        assert not (tmp_path / "new.db").exists()
    from snapstate.langgraph import PostgresSaver

    with PostgresSaver.from_conn_string(pg_dsn, schema=pg_schema) as target:
        assert history(target, "sends") == expected["sends"]
        assert history(target, "tools") == []


def test_the_command_line_refuses_what_is_not_a_langgraph_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing.db"
    assert cli.main(["import-langgraph", str(missing), str(tmp_path / "new.db")]) == 2
    assert "no database at" in capsys.readouterr().err
    other = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(other)) as conn, conn:
        conn.execute("CREATE TABLE t (x)")
    assert cli.main(["import-langgraph", str(other), str(tmp_path / "new.db")]) == 2
    err = capsys.readouterr().err
    assert "holds no LangGraph checkpoint tables" in err
    with SqliteSaver.from_conn_string(str(tmp_path / "ours.db")) as ours:
        run_graphs(ours)
    assert cli.main(["import-langgraph", str(tmp_path / "ours.db"), str(tmp_path / "new.db")]) == 2
    assert "is a snapstate store, not LangGraph's" in capsys.readouterr().err
    assert not (tmp_path / "new.db").exists()
    # And the other way round: copy takes snapstate stores only.
    assert cli.main(["copy", str(tmp_path / "other.db"), str(tmp_path / "new.db")]) == 2
    assert "is not a snapstate store" in capsys.readouterr().err
    assert cli.main(["copy", str(tmp_path / "ours.db"), str(tmp_path / "." / "ours.db")]) == 2
    assert "the same store" in capsys.readouterr().err
    assert not (tmp_path / "new.db").exists()


@pytest.mark.postgres
def test_the_command_line_copies_a_snapstate_file_into_postgres(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pg_dsn: str, pg_schema: str
) -> None:
    """Outgrowing the embedded default: snapstate's SQLite file into PostgreSQL."""
    with SqliteSaver.from_conn_string(str(tmp_path / "laptop.db")) as laptop:
        run_graphs(laptop)
        expected = {name: history(laptop, name) for name in BUILDERS}
    assert cli.main(["copy", str(tmp_path / "laptop.db"), pg_dsn, "--schema", pg_schema]) == 0
    assert "copied 4 thread(s)" in capsys.readouterr().out
    from snapstate.langgraph import PostgresSaver

    with PostgresSaver.from_conn_string(pg_dsn, schema=pg_schema) as fleet:
        assert {name: history(fleet, name) for name in BUILDERS} == expected
    # And back.
    back = str(tmp_path / "back.db")
    assert cli.main(["copy", pg_dsn, back, "--source-schema", pg_schema, "--thread", "fork"]) == 0
    assert "copied 1 thread(s)" in capsys.readouterr().out
    with SqliteSaver.from_conn_string(back) as again:
        assert history(again, "fork") == expected["fork"] and history(again, "tools") == []
    # A schema without a snapstate store is refused, and nothing is created for it.
    none = str(tmp_path / "none.db")
    assert cli.main(["copy", pg_dsn, none, "--source-schema", "nowhere"]) == 2
    assert "holds no snapstate store" in capsys.readouterr().err
    assert not os.path.exists(none)
