"""An old thread resumes after the graph's state schema changed, through the upgrade hooks.

Version 1 of the graph keeps ``messages`` (user turns as ``ChatMessage(role="user")``) and is
paused before its assistant runs. Version 2 renamed the channel to ``chat``, expects user turns as
``HumanMessage`` and has a new required field ``user_id``. The same thread resumes under version
2 with no other help than the registered upgrade step.
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

import msgspec
import pytest
from langchain_core.messages import AIMessage, ChatMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from snapstate import Snapshot
from snapstate.upgrades import StateUpgrades, add_channel, rename_channel

from .conftest import MakeSaver

ran: list[str] = []


class StateV1(TypedDict):
    messages: Annotated[list[Any], add_messages]


class StateV2(TypedDict):
    chat: Annotated[list[Any], add_messages]
    user_id: str


def graph_v1() -> Any:
    def user(state: StateV1) -> dict[str, Any]:
        ran.append("v1 user")
        return {"messages": [ChatMessage(role="user", content="what is the weather?", id="u1")]}

    def assistant(state: StateV1) -> dict[str, Any]:  # pragma: no cover - paused before it
        ran.append("v1 assistant")
        return {"messages": [AIMessage(content="v1 answer", id="a1")]}

    g = StateGraph(StateV1)
    g.add_node("user", user)
    g.add_node("assistant", assistant)
    g.add_edge(START, "user")
    g.add_edge("user", "assistant")
    g.add_edge("assistant", END)
    return g


def graph_v2() -> Any:
    def user(state: StateV2) -> dict[str, Any]:  # pragma: no cover - already ran under v1
        ran.append("v2 user")
        return {"chat": [HumanMessage(content="again", id="u2")]}

    def assistant(state: StateV2) -> dict[str, Any]:
        ran.append("v2 assistant")
        question = state["chat"][-1]
        assert isinstance(question, HumanMessage), type(question)  # the changed message type
        return {"chat": [AIMessage(content=f"{state['user_id']}: sunny", id="a1")]}

    g = StateGraph(StateV2)
    g.add_node("user", user)
    g.add_node("assistant", assistant)
    g.add_edge(START, "user")
    g.add_edge("user", "assistant")
    g.add_edge("assistant", END)
    return g


def upgrades() -> StateUpgrades:
    up = StateUpgrades(version=1)

    @up.step(0)
    def v1_to_v2(snap: Snapshot) -> Snapshot:
        snap = rename_channel(snap, "messages", "chat")
        cp = snap.checkpoint
        if "chat" in cp.channel_values:
            chat = [
                HumanMessage(content=m.content, id=m.id)
                if isinstance(m, ChatMessage) and m.role == "user"
                else m
                for m in cp.channel_values["chat"]
            ]
            cp = msgspec.structs.replace(cp, channel_values={**cp.channel_values, "chat": chat})
            snap = msgspec.structs.replace(snap, checkpoint=cp)
        return add_channel(snap, "user_id", "anonymous")

    return up


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_old_thread_resumes_after_schema_change(make_saver: MakeSaver, kind: str) -> None:
    ran.clear()
    config = {"configurable": {"thread_id": "old-thread"}}
    old = await make_saver(kind)
    app1 = graph_v1().compile(checkpointer=old, interrupt_before=["assistant"])
    app1.invoke({"messages": []}, config)
    assert app1.get_state(config).next == ("assistant",)
    assert ran == ["v1 user"]

    new = await make_saver(kind, upgrades=upgrades())
    app2 = graph_v2().compile(checkpointer=new)
    state = app2.get_state(config)
    assert state.next == ("assistant",)
    assert state.values["user_id"] == "anonymous"
    assert [type(m) for m in state.values["chat"]] == [HumanMessage]

    final = app2.invoke(None, config)
    assert ran == ["v1 user", "v2 assistant"]  # the finished node did not run again
    assert final["user_id"] == "anonymous"
    assert [(type(m).__name__, m.content) for m in final["chat"]] == [
        ("HumanMessage", "what is the weather?"),
        ("AIMessage", "anonymous: sunny"),
    ]
    # The resumed thread reads the same from a fresh saver with the hooks...
    again = await make_saver(kind, upgrades=upgrades())
    assert graph_v2().compile(checkpointer=again).get_state(config).values == final
    # ...and its whole history, old checkpoints included, reads under the new schema.
    history = list(graph_v2().compile(checkpointer=again).get_state_history(config))
    assert len(history) >= 4
    assert all("messages" not in h.values for h in history)
    assert all(h.values.get("user_id") == "anonymous" for h in history)
