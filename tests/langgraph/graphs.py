"""Small real graphs shared by the graph tests, the crash test and its child process.

No network: the "model" is a deterministic function of the conversation so far.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command, Send, interrupt

# -- a tool-calling loop over messages -----------------------------------------------------------


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def fake_model(state: MessagesState) -> dict[str, Any]:
    """Calls ``add`` for each question, then answers with the tool's result."""
    last = state["messages"][-1]
    turn = sum(isinstance(m, HumanMessage) for m in state["messages"])
    if isinstance(last, HumanMessage):
        return {
            "messages": [
                AIMessage(
                    content="",
                    id=f"ai-call-{turn}",
                    tool_calls=[
                        {"name": "add", "args": {"a": turn, "b": 10}, "id": f"call-{turn}"}
                    ],
                )
            ]
        }
    assert isinstance(last, ToolMessage)
    return {"messages": [AIMessage(content=f"the sum is {last.content}", id=f"ai-{turn}")]}


def tool_loop() -> StateGraph:
    b = StateGraph(MessagesState)
    b.add_node("agent", fake_model)
    b.add_node("tools", ToolNode([add]))
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", tools_condition)
    b.add_edge("tools", "agent")
    return b


# -- parallel branches with Send -----------------------------------------------------------------


class MapState(TypedDict):
    items: list[str]
    results: Annotated[list[str], operator.add]
    summary: str


def fan_out(state: MapState) -> list[Send]:
    return [Send("work", {"item": item}) for item in state["items"]]


def work(state: dict[str, Any]) -> dict[str, Any]:
    return {"results": [state["item"].upper()]}


def summarize(state: MapState) -> dict[str, Any]:
    return {"summary": ",".join(sorted(state["results"]))}


def map_reduce() -> StateGraph:
    b = StateGraph(MapState)
    b.add_node("work", work)
    b.add_node("summarize", summarize)
    b.add_conditional_edges(START, fan_out, ["work"])
    b.add_edge("work", "summarize")
    b.add_edge("summarize", END)
    return b


# -- a subgraph that asks a human, inside a parent graph -----------------------------------------


class Draft(TypedDict):
    text: str
    approved: bool


def write(state: Draft) -> dict[str, Any]:
    return {"text": state["text"] + " (drafted)"}


def review(state: Draft) -> dict[str, Any]:
    answer = interrupt({"question": "approve?", "text": state["text"]})
    return {"approved": answer == "yes"}


def reviewer() -> Any:
    b = StateGraph(Draft)
    b.add_node("write", write)
    b.add_node("review", review)
    b.add_edge(START, "write")
    b.add_edge("write", "review")
    return b.compile()


def publish(state: Draft) -> dict[str, Any]:
    return {"text": state["text"] + (" [published]" if state["approved"] else " [rejected]")}


def with_subgraph() -> StateGraph:
    b = StateGraph(Draft)
    b.add_node("draft", reviewer())
    b.add_node("publish", publish)
    b.add_edge(START, "draft")
    b.add_edge("draft", "publish")
    return b


# -- a chain of steps, for history, forks, durability and crashes -------------------------------


class Steps(TypedDict):
    log: Annotated[list[str], operator.add]
    count: int


def step_node(name: str) -> Any:
    def node(state: Steps) -> dict[str, Any]:
        return {"log": [name], "count": state["count"] + 1}

    node.__name__ = name
    return node


def chain(names: tuple[str, ...] = ("a", "b", "c", "d")) -> StateGraph:
    b = StateGraph(Steps)
    prev = START
    for name in names:
        b.add_node(name, step_node(name))
        b.add_edge(prev, name)
        prev = name
    b.add_edge(prev, END)
    return b


__all__ = [
    "Command",
    "HumanMessage",
    "chain",
    "map_reduce",
    "tool_loop",
    "with_subgraph",
]
