"""Real LangGraph graphs on every saver: what a user's graph does, end to end.

Sync savers run ``invoke``; async savers run ``ainvoke``. State is always read back through a
second saver on the same store, so what is checked is what was stored, not objects still in
memory (the in-memory saver has no second store: it is read back through itself).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.types import Command, Interrupt, Send

from . import graphs
from .conftest import (
    ALL_KINDS,
    ASYNC_KINDS,
    MakeSaver,
    kinds,
    langgraph_postgres,
    skip_async_interrupt_before_311,
)


class Driver:
    """One graph, driven through the sync or the async API."""

    def __init__(self, builder: Any, saver: Any, is_async: bool) -> None:
        self.graph = builder.compile(checkpointer=saver)
        self.is_async = is_async

    async def invoke(self, inp: Any, cfg: dict[str, Any], **kw: Any) -> Any:
        if self.is_async:
            return await self.graph.ainvoke(inp, cfg, **kw)
        return self.graph.invoke(inp, cfg, **kw)

    async def state(self, cfg: dict[str, Any], **kw: Any) -> Any:
        if self.is_async:
            return await self.graph.aget_state(cfg, **kw)
        return self.graph.get_state(cfg, **kw)

    async def history(self, cfg: dict[str, Any], **kw: Any) -> list[Any]:
        if self.is_async:
            return [s async for s in self.graph.aget_state_history(cfg, **kw)]
        return list(self.graph.get_state_history(cfg, **kw))

    async def update(self, cfg: dict[str, Any], values: Any, **kw: Any) -> Any:
        if self.is_async:
            return await self.graph.aupdate_state(cfg, values, **kw)
        return self.graph.update_state(cfg, values, **kw)


async def drivers(make_saver: MakeSaver, kind: str, builder: Any) -> tuple[Driver, Driver]:
    """A driver that runs the graph and one that reads the store back through another saver."""
    is_async = kind in ASYNC_KINDS
    saver = await make_saver(kind)
    reader = saver if kind == "memory" else await make_saver(kind)
    return Driver(builder, saver, is_async), Driver(builder, reader, is_async)


def thread() -> dict[str, Any]:
    return {"configurable": {"thread_id": str(uuid.uuid4())}}


@kinds(*ALL_KINDS)
async def test_tool_calling_loop(kind: str, make_saver: MakeSaver) -> None:
    run, read = await drivers(make_saver, kind, graphs.tool_loop())
    cfg = thread()
    await run.invoke({"messages": [HumanMessage("what is 1 + 10?", id="h1")]}, cfg)
    await run.invoke({"messages": [HumanMessage("and 2 + 10?", id="h2")]}, cfg)
    messages = (await read.state(cfg)).values["messages"]
    kinds_seen = [type(m) for m in messages]
    assert kinds_seen == [HumanMessage, AIMessage, ToolMessage, AIMessage] * 2
    assert messages[1].tool_calls[0]["args"] == {"a": 1, "b": 10}
    assert messages[2].content == "11" and messages[2].tool_call_id == "call-1"
    assert messages[-1].content == "the sum is 12"
    assert messages[0].id == "h1"
    # The conversation continues from what was read back.
    await read.invoke({"messages": [HumanMessage("and 3 + 10?", id="h3")]}, cfg)
    final = (await run.state(cfg)).values["messages"]
    assert len(final) == 12 and final[-1].content == "the sum is 13"


@kinds(*ALL_KINDS)
async def test_parallel_branches_with_send(kind: str, make_saver: MakeSaver) -> None:
    run, read = await drivers(make_saver, kind, graphs.map_reduce())
    cfg = thread()
    out = await run.invoke({"items": ["x", "y", "z"], "results": []}, cfg)
    assert out["summary"] == "X,Y,Z"
    # The fan-out travels as Send packets in the pending writes of the first checkpoint.
    saver = read.graph.checkpointer
    tuples = [t async for t in saver.alist(cfg)] if read.is_async else list(saver.list(cfg))
    packets = [w[2] for t in tuples for w in t.pending_writes if w[1] == "__pregel_tasks"]
    assert sorted(p.arg["item"] for p in packets) == ["x", "y", "z"]
    assert all(type(p) is Send and p.node == "work" for p in packets)
    assert sorted((await read.state(cfg)).values["results"]) == ["X", "Y", "Z"]


@kinds(*ALL_KINDS)
async def test_subgraph_interrupt_and_resume(kind: str, make_saver: MakeSaver) -> None:
    skip_async_interrupt_before_311(kind)
    run, read = await drivers(make_saver, kind, graphs.with_subgraph())
    cfg = thread()
    out = await run.invoke({"text": "hello", "approved": False}, cfg)
    (pending,) = out["__interrupt__"]
    assert type(pending) is Interrupt
    assert pending.value == {"question": "approve?", "text": "hello (drafted)"}

    # The interrupted state, read back, with the subgraph's own namespace.
    state = await read.state(cfg, subgraphs=True)
    assert state.next == ("draft",)
    (task,) = state.tasks
    assert type(task.interrupts[0]) is Interrupt
    sub = task.state
    assert sub.values["text"] == "hello (drafted)" and sub.next == ("review",)
    ns = sub.config["configurable"]["checkpoint_ns"]
    assert ns.startswith("draft:")
    saver = read.graph.checkpointer
    every = {"configurable": {"thread_id": cfg["configurable"]["thread_id"]}}
    listed = [t async for t in saver.alist(every)] if read.is_async else list(saver.list(every))
    assert {t.config["configurable"]["checkpoint_ns"] for t in listed} == {"", ns}

    # Resume through the other saver: the answer reaches the subgraph's interrupt.
    out = await read.invoke(Command(resume="yes"), cfg)
    assert out["text"] == "hello (drafted) [published]" and out["approved"] is True
    assert (await run.state(cfg)).next == ()


@kinds(*ALL_KINDS)
async def test_update_state_and_fork_from_an_older_checkpoint(
    kind: str, make_saver: MakeSaver
) -> None:
    run, read = await drivers(make_saver, kind, graphs.chain())
    cfg = thread()
    await run.invoke({"log": ["start"], "count": 0}, cfg)
    history = await read.history(cfg)
    assert [s.metadata["step"] for s in history] == [4, 3, 2, 1, 0, -1]
    assert [s.metadata["source"] for s in history] == ["loop"] * 5 + ["input"]
    assert [s.next for s in history] == [(), ("d",), ("c",), ("b",), ("a",), ("__start__",)]
    latest = history[0]
    assert latest.values == {"log": ["start", "a", "b", "c", "d"], "count": 4}

    # Fork after "b": edit the state there and run on from it.
    after_b = history[2]
    assert after_b.values["log"] == ["start", "a", "b"]
    forked = await read.update(after_b.config, {"log": ["edited"]}, as_node="b")
    assert (
        forked["configurable"]["checkpoint_id"] != after_b.config["configurable"]["checkpoint_id"]
    )
    out = await run.invoke(None, forked)
    assert out == {"log": ["start", "a", "b", "edited", "c", "d"], "count": 4}

    # Both branches are in the history; the fork's checkpoints descend from "after b".
    history = await read.history(cfg)
    ids = {s.config["configurable"]["checkpoint_id"]: s for s in history}
    update = next(s for s in history if s.metadata["source"] == "update")
    assert (
        update.parent_config["configurable"]["checkpoint_id"]
        == (after_b.config["configurable"]["checkpoint_id"])
    )
    assert latest.config["configurable"]["checkpoint_id"] in ids  # the old branch is intact
    assert (await read.state(cfg)).values == out
    # A replay from an old checkpoint reads exactly what it stored then.
    old = await read.state(after_b.config)
    assert old.values == {"log": ["start", "a", "b"], "count": 2}

    # History honours limit and before.
    two = await read.history(cfg, limit=2)
    assert [s.config for s in two] == [s.config for s in history[:2]]
    older = await read.history(cfg, before=history[3].config)
    assert [s.config for s in older] == [s.config for s in history[4:]]


@kinds(*ALL_KINDS)
@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
async def test_durability_modes(kind: str, durability: str, make_saver: MakeSaver) -> None:
    run, read = await drivers(make_saver, kind, graphs.chain())
    cfg = thread()
    out = await run.invoke({"log": ["start"], "count": 0}, cfg, durability=durability)
    assert out == {"log": ["start", "a", "b", "c", "d"], "count": 4}
    state = await read.state(cfg)
    assert state.values == out and state.next == ()
    history = await read.history(cfg)
    # "exit" saves only the final checkpoint; the others save one per step.
    assert len(history) == (1 if durability == "exit" else 6)
    out = await read.invoke({"log": ["again"], "count": 10}, cfg, durability=durability)
    assert out["log"] == ["start", "a", "b", "c", "d", "again", "a", "b", "c", "d"]


@kinds("memory", "sqlite", "postgres")
async def test_sync_savers_under_ainvoke(kind: str, make_saver: MakeSaver) -> None:
    saver = await make_saver(kind)
    graph = graphs.tool_loop().compile(checkpointer=saver)
    cfg = thread()
    await graph.ainvoke({"messages": [HumanMessage("what is 1 + 10?")]}, cfg)
    state = graph.get_state(cfg)
    assert state.values["messages"][-1].content == "the sum is 11"


@kinds(*ALL_KINDS)
async def test_batched_durability(kind: str, make_saver: MakeSaver) -> None:
    is_async = kind in ASYNC_KINDS
    saver = await make_saver(kind, durability="batched")
    run = Driver(graphs.tool_loop(), saver, is_async)
    cfg = thread()
    await run.invoke({"messages": [HumanMessage("what is 1 + 10?")]}, cfg)
    # The saver reads what it queued at once ...
    assert (await run.state(cfg)).values["messages"][-1].content == "the sum is 11"
    await run.invoke({"messages": [HumanMessage("and 2 + 10?")]}, cfg)
    # ... and another saver on the store reads it once it is committed.
    if is_async:
        await saver.flush()
    else:
        saver.flush()
    if kind != "memory":
        read = Driver(graphs.tool_loop(), await make_saver(kind), is_async)
        messages = (await read.state(cfg)).values["messages"]
        assert len(messages) == 8 and messages[-1].content == "the sum is 12"
        assert len(await read.history(cfg)) == len(await run.history(cfg))


async def namespaces(saver: Any, cfg: dict[str, Any], is_async: bool) -> dict[str, int]:
    """How many checkpoints each namespace of the thread holds, the subgraph calls' task ids
    left out (they differ from run to run)."""
    every = {"configurable": {"thread_id": cfg["configurable"]["thread_id"]}}
    listed = [t async for t in saver.alist(every)] if is_async else list(saver.list(every))
    counts: dict[str, int] = {}
    for t in listed:
        ns = t.config["configurable"]["checkpoint_ns"].split(":")[0]
        counts[ns] = counts.get(ns, 0) + 1
    return counts


async def prune_subgraph_calls(saver: Any, is_async: bool) -> tuple[dict[str, int], ...]:
    """Three finished subgraph calls and a fourth interrupted, counted before and after
    ``prune(strategy="keep_latest")``; then the interrupted call resumes and finishes."""
    run = Driver(graphs.with_subgraph(), saver, is_async)
    cfg = thread()
    for answer in ("yes", "no", "yes"):
        await run.invoke({"text": "hello", "approved": False}, cfg)
        await run.invoke(Command(resume=answer), cfg)
    await run.invoke({"text": "again", "approved": False}, cfg)
    before = await namespaces(saver, cfg, is_async)
    if is_async:
        await saver.aprune([cfg["configurable"]["thread_id"]], strategy="keep_latest")
    else:
        saver.prune([cfg["configurable"]["thread_id"]], strategy="keep_latest")
    after = await namespaces(saver, cfg, is_async)
    out = await run.invoke(Command(resume="yes"), cfg)
    assert out["text"] == "again (drafted) [published]" and out["approved"] is True
    return before, after


@kinds(*ALL_KINDS)
async def test_keep_latest_drops_finished_subgraph_calls(
    kind: str, make_saver: MakeSaver, request: pytest.FixtureRequest
) -> None:
    """As LangGraph's Postgres saver does: a finished call's namespace goes whole, the
    interrupted call keeps its latest checkpoint and resumes."""
    skip_async_interrupt_before_311(kind)
    is_async = kind in ASYNC_KINDS
    before, after = await prune_subgraph_calls(await make_saver(kind), is_async)
    assert before == {"": 14, "draft": 15}  # four calls: 4 checkpoints each, 3 for the last
    assert after == {"": 1, "draft": 1}  # the interrupted call's latest
    if kind == "postgres":
        # The same graph on LangGraph's own saver, in a schema of its own.
        with langgraph_postgres(request.getfixturevalue("pg_dsn")) as upstream:
            assert await prune_subgraph_calls(upstream, is_async=False) == (before, after)
