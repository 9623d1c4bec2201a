"""The process the crash test kills: runs a graph on a saver, and can stop in the middle.

    python -m tests.langgraph.crash_child KIND STORE THREAD WORKDIR run|resume [--arm]

``STORE`` is a SQLite file or ``postgresql://...#schema``. Every node appends its name to
``WORKDIR/runs.log`` when it starts, so the test can count executions. With ``--arm``, the
``slow`` branch waits until the ``fast`` branch's writes are stored, creates ``WORKDIR/reached``
and sleeps: the test kills the process there. The final state goes to ``WORKDIR/final.json``.
"""

from __future__ import annotations

import asyncio
import json
import operator
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph


class State(TypedDict):
    log: Annotated[list[str], operator.add]
    fast: str
    slow: str


def main(argv: list[str]) -> None:
    kind, store, thread, workdir, mode = argv[:5]
    armed = "--arm" in argv
    work = Path(workdir)
    cfg: dict[str, Any] = {"configurable": {"thread_id": thread}}

    def ran(name: str) -> None:
        with open(work / "runs.log", "a") as f:
            f.write(name + "\n")
            f.flush()
            os.fsync(f.fileno())

    def node(name: str) -> Any:
        def run(state: State) -> dict[str, Any]:
            ran(name)
            return {"log": [name]}

        return run

    def fast(state: State) -> dict[str, Any]:
        ran("fast")
        return {"log": ["fast"], "fast": "done"}

    def slow(state: State) -> dict[str, Any]:
        ran("slow")
        if armed:
            # Wait until the parallel branch's writes are stored, so the kill lands after one
            # branch of the step completed and before the step did.
            probe = open_saver(kind.removesuffix("-async"), store)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                latest = probe.get_tuple({"configurable": {"thread_id": thread}})
                if latest and any(w[1] == "fast" for w in latest.pending_writes or ()):
                    break
                time.sleep(0.01)
            (work / "reached").touch()
            time.sleep(120)
        return {"log": ["slow"], "slow": "done"}

    b = StateGraph(State)
    for name in ("one", "two", "join"):
        b.add_node(name, node(name))
    b.add_node("fast", fast)
    b.add_node("slow", slow)
    b.add_edge(START, "one")
    b.add_edge("one", "two")
    b.add_edge("two", "fast")
    b.add_edge("two", "slow")
    b.add_edge(["fast", "slow"], "join")
    b.add_edge("join", END)

    inp = None if mode == "resume" else {"log": ["start"], "fast": "", "slow": ""}
    if kind.endswith("-async"):
        final = asyncio.run(_arun(b, kind, store, inp, cfg))
    else:
        saver = open_saver(kind, store)
        final = b.compile(checkpointer=saver).invoke(inp, cfg, durability="sync")
    (work / "final.json").write_text(json.dumps(final))


async def _arun(b: Any, kind: str, store: str, inp: Any, cfg: dict[str, Any]) -> Any:
    saver = open_saver(kind, store)
    try:
        return await b.compile(checkpointer=saver).ainvoke(inp, cfg, durability="sync")
    finally:
        await saver.aclose()


def open_saver(kind: str, store: str) -> Any:
    from snapstate.langgraph import AsyncSqliteSaver, SqliteSaver

    if kind == "sqlite":
        return SqliteSaver(store)
    if kind == "sqlite-async":
        return AsyncSqliteSaver(store)
    from snapstate.langgraph import AsyncPostgresSaver, PostgresSaver

    dsn, _, schema = store.partition("#")
    if kind == "postgres":
        return PostgresSaver(dsn, schema=schema)
    if kind == "postgres-async":
        return AsyncPostgresSaver(dsn, schema=schema)
    raise ValueError(kind)


if __name__ == "__main__":
    main(sys.argv[1:])
