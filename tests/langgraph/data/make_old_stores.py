"""Write the SQLite files of older LangGraph checkpoint formats that test_import.py imports.
Run with an old LangGraph installed, in a virtualenv of its own:

    python -m venv /tmp/lg020 && /tmp/lg020/bin/pip install langgraph==0.2.20 \
        langgraph-checkpoint-sqlite==1.0.3
    /tmp/lg020/bin/python make_old_stores.py langgraph-0.2.20.db     # checkpoint format 1

    python -m venv /tmp/lg034 && /tmp/lg034/bin/pip install langgraph==0.3.34 \
        langgraph-checkpoint-sqlite==2.0.10
    /tmp/lg034/bin/python make_old_stores.py langgraph-0.3.34.db     # checkpoint format 3

Each file holds one thread, "fan": a node fans out three ``Send`` packets to ``work``, and the
graph stops before running them (``interrupt_before``), so the stored checkpoint still carries
its pending sends in the way its format kept them.
"""

from __future__ import annotations

import operator
import sqlite3
import sys
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.constants import Send
from langgraph.graph import END, START, StateGraph


class FanState(TypedDict):
    items: list[str]
    results: Annotated[list[str], operator.add]


def plan(state: FanState) -> dict[str, Any]:
    return {"items": state["items"]}


def fan_out(state: FanState) -> list[Send]:
    return [Send("work", {"item": i}) for i in state["items"]]


def work(state: dict[str, Any]) -> dict[str, Any]:
    return {"results": [state["item"].upper()]}


def builder() -> StateGraph:
    b = StateGraph(FanState)
    b.add_node("plan", plan)
    b.add_node("work", work)
    b.add_edge(START, "plan")
    b.add_conditional_edges("plan", fan_out, ["work"])
    b.add_edge("work", END)
    return b


if __name__ == "__main__":
    conn = sqlite3.connect(sys.argv[1], check_same_thread=False)
    graph = builder().compile(checkpointer=SqliteSaver(conn), interrupt_before=["work"])
    graph.invoke({"items": ["x", "y", "z"], "results": []}, {"configurable": {"thread_id": "fan"}})
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
