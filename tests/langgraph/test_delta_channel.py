"""``DeltaChannel`` graphs: state rebuilt from ancestor writes must equal LangGraph's own.

The oracle is LangGraph's ``InMemorySaver`` running the same graph; the fast
``get_delta_channel_history`` is checked against ``BaseCheckpointSaver``'s default walk over
``get_tuple`` on every checkpoint, forks included.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, TypedDict

from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver as Upstream
from langgraph.graph import END, START, StateGraph

from .conftest import MakeSaver, kinds


def extend(state: list[Any], writes: list[list[Any]]) -> list[Any]:
    out = list(state)
    for w in writes:
        out.extend(w)
    return out


class State(TypedDict):
    log: Annotated[list[Any], DeltaChannel(extend, snapshot_frequency=3)]
    n: int


def step(state: State) -> dict[str, Any]:
    return {"log": [f"item-{state['n']}"], "n": state["n"] + 1}


def side(name: str) -> Any:
    def node(state: State) -> dict[str, Any]:
        return {"log": [f"{name}-{state['n']}"]}

    return node


def build() -> Any:
    """``step`` loops; every other step two branches also write the delta channel at once."""
    b = StateGraph(State)
    b.add_node("step", step)
    b.add_node("left", side("left"))
    b.add_node("right", side("right"))
    b.add_edge(START, "step")
    b.add_conditional_edges(
        "step",
        lambda s: END if s["n"] % 4 == 0 else (["left", "right"] if s["n"] % 2 else "step"),
        ["step", "left", "right", END],
    )
    b.add_edge(["left", "right"], "step")
    return b


async def run(graph: Any, cfg: dict[str, Any], is_async: bool) -> list[Any]:
    """Three turns, then a fork from an early checkpoint; the values of every checkpoint."""
    for i in range(3):
        inp = {"log": [f"in-{i}"], "n": i * 4}
        if is_async:
            await graph.ainvoke(inp, cfg)
        else:
            graph.invoke(inp, cfg)
    history = (
        [s async for s in graph.aget_state_history(cfg)]
        if is_async
        else list(graph.get_state_history(cfg))
    )
    fork_from = history[len(history) // 2].config
    if is_async:
        forked = await graph.aupdate_state(fork_from, {"log": ["forked"]}, as_node="step")
        await graph.ainvoke(None, forked)
        history = [s async for s in graph.aget_state_history(cfg)]
    else:
        forked = graph.update_state(fork_from, {"log": ["forked"]}, as_node="step")
        graph.invoke(None, forked)
        history = list(graph.get_state_history(cfg))
    return [(s.metadata["step"], s.values) for s in history]


@kinds("memory", "sqlite", "sqlite-async", "postgres", "postgres-async")
async def test_delta_channel_state_matches_langgraph(kind: str, make_saver: MakeSaver) -> None:
    saver = await make_saver(kind)
    is_async = kind.endswith("-async")
    thread = str(uuid.uuid4())
    cfg = {"configurable": {"thread_id": thread}}
    ours = await run(build().compile(checkpointer=saver), cfg, is_async)
    theirs = await run(build().compile(checkpointer=Upstream()), cfg, False)
    assert ours == theirs
    assert any("forked" in values.get("log", []) for _, values in ours)

    # A second saver on the same store rebuilds the same state from scratch (the in-memory
    # saver has no second store: it reads back through itself).
    again = saver if kind == "memory" else await make_saver(kind)
    graph = build().compile(checkpointer=again)
    state = await graph.aget_state(cfg) if is_async else graph.get_state(cfg)
    assert (state.metadata["step"], state.values) == ours[0]

    # The fast path answers what the default ancestor walk answers, on every checkpoint.
    tuples = [t async for t in saver.alist(cfg)] if is_async else list(saver.list(cfg))
    for t in tuples:
        for channels in (["log"], ["log", "n", "absent"]):
            if is_async:
                fast = await saver.aget_delta_channel_history(config=t.config, channels=channels)
                slow = await BaseCheckpointSaver.aget_delta_channel_history(
                    saver, config=t.config, channels=channels
                )
            else:
                fast = saver.get_delta_channel_history(config=t.config, channels=channels)
                slow = BaseCheckpointSaver.get_delta_channel_history(
                    saver, config=t.config, channels=channels
                )
            assert fast == slow, t.config
    # The latest checkpoint when the config names none; nothing asked, nothing answered.
    latest = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    if is_async:
        assert await saver.aget_delta_channel_history(config=latest, channels=[]) == {}
        missing = {"configurable": {"thread_id": "no-such-thread"}}
        assert await saver.aget_delta_channel_history(config=missing, channels=["log"]) == {
            "log": {"writes": []}
        }
    else:
        assert saver.get_delta_channel_history(config=latest, channels=[]) == {}
        missing = {"configurable": {"thread_id": "no-such-thread"}}
        assert saver.get_delta_channel_history(config=missing, channels=["log"]) == {
            "log": {"writes": []}
        }
