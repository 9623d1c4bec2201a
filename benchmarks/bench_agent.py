"""LangGraph workloads beyond chat: an agent state, and a 1 MB value rewritten every step.

*Agent*: twelve state channels of which one or two change per step (``datagen.agent_state``),
and three parallel tool calls (``Send``) per iteration whose results accumulate. *Big value*: a
1 MB semi-compressible ``bytes`` value replaced at every step. Each runs per saver with the
savers interleaved; per-step overhead is the time per superstep minus the time without a
checkpointer (as in ``bench_langgraph``).

``asv run --python=same --quick -b bench_agent``; ``make bench BENCH_ARGS="-k agent"``.
"""

from __future__ import annotations

import operator
import os
import statistics
import tempfile
import time
import uuid
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from . import datagen
from .bench_langgraph import open_saver

SAVER_NAMES = (
    "none",
    "snapstate-memory",
    "langgraph-memory",
    "snapstate-sqlite",
    "langgraph-sqlite",
)
ITERATIONS = int(os.environ.get("SNAPSTATE_BENCH_AGENT_ITERATIONS", "30"))
CHANNELS = 12


class AgentState(TypedDict, total=False):
    step: int
    tool_results: Annotated[list[Any], operator.add]
    ch_00: Any
    ch_01: Any
    ch_02: Any
    ch_03: Any
    ch_04: Any
    ch_05: Any
    ch_06: Any
    ch_07: Any
    ch_08: Any
    ch_09: Any
    ch_10: Any
    ch_11: Any


def agent_graph(iterations: int = ITERATIONS) -> StateGraph:
    """plan -> three parallel tools -> merge, ``iterations`` times (3 supersteps each)."""
    base = datagen.agent_state(0)

    def plan(state: AgentState) -> dict[str, Any]:
        step = state.get("step", 0) + 1
        now = datagen.agent_state(step)
        # One or two channels change per step: those that differ from the base state.
        return {"step": step, **{k: v for k, v in now.items() if v != base[k]}}

    def fan_out(state: AgentState) -> list[Send]:
        return [Send("tool", {"call": f"{state['step']}-{i}"}) for i in range(3)]

    def tool(args: dict[str, Any]) -> dict[str, Any]:
        return {"tool_results": [{"call": args["call"], "output": "result " * 20}]}

    def merge(state: AgentState) -> dict[str, Any]:
        return {"ch_00": {"value": f"merged {len(state['tool_results'])}", "n": state["step"]}}

    def more(state: AgentState) -> str:
        return "plan" if state["step"] < iterations else END

    g = StateGraph(AgentState)
    g.add_node("plan", plan)
    g.add_node("tool", tool)
    g.add_node("merge", merge)
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", fan_out, ["tool"])
    g.add_edge("tool", "merge")
    g.add_conditional_edges("merge", more, ["plan", END])
    return g


class BigState(TypedDict, total=False):
    step: int
    doc: bytes


def big_value_graph(steps: int = 20) -> StateGraph:
    """One node rewriting a 1 MB value every step.

    Every step's value is a new object with new content (its first bytes are the step number),
    as a real node's output is: a saver can neither reuse an earlier step's encoding nor find
    its bytes already stored. The copy costs the same with every saver and without one.
    """
    blobs = [datagen.semi_compressible_blob(1 << 20, seed=i) for i in range(4)]

    def rewrite(state: BigState) -> dict[str, Any]:
        step = state.get("step", 0) + 1
        return {"step": step, "doc": b"%08d" % step + blobs[step % len(blobs)][8:]}

    def more(state: BigState) -> str:
        return "rewrite" if state["step"] < steps else END

    g = StateGraph(BigState)
    g.add_node("rewrite", rewrite)
    g.add_edge(START, "rewrite")
    g.add_conditional_edges("rewrite", more, ["rewrite", END])
    return g


def run(graph: Any, initial: dict[str, Any]) -> tuple[float, int]:
    """Seconds for one thread, and its number of supersteps."""
    cfg = {"configurable": {"thread_id": str(uuid.uuid4())}, "recursion_limit": 10_000}
    start = time.perf_counter()
    steps = 0
    for _ in graph.stream(initial, cfg, stream_mode="updates"):
        steps += 1
    return time.perf_counter() - start, steps


def compare(
    builder: StateGraph,
    initial: dict[str, Any],
    names: tuple[str, ...] = SAVER_NAMES,
    rounds: int = 5,
) -> dict[str, float]:
    """Median milliseconds per superstep for each saver, savers interleaved, warm-up dropped."""
    per_step: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as directory:
        for r in range(rounds + 1):
            for name in names:
                with open_saver(name, os.path.join(directory, f"{name}-{r}")) as saver:
                    seconds, steps = run(builder.compile(checkpointer=saver), initial)
                if r:
                    per_step[name].append(seconds / steps * 1e3)
    return {n: statistics.median(v) for n, v in per_step.items()}


def overhead_ratios(ms: dict[str, float]) -> dict[str, float]:
    """LangGraph's per-step overhead over ours, per kind of saver."""
    out = {}
    for kind in ("memory", "sqlite"):
        ours = ms[f"snapstate-{kind}"] - ms["none"]
        theirs = ms[f"langgraph-{kind}"] - ms["none"]
        out[f"{kind}_overhead_ratio"] = theirs / ours
    return out


# -- ASV -----------------------------------------------------------------------------------------


class _GraphThread:
    """One thread of ``build()`` per saver: time and peak memory."""

    params = list(SAVER_NAMES)
    param_names = ["saver"]
    timeout = 600

    def build(self) -> StateGraph:
        raise NotImplementedError

    def setup(self, name: str) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.builder = self.build()

    def teardown(self, name: str) -> None:
        self.dir.cleanup()

    def _thread(self, name: str) -> None:
        with open_saver(name, tempfile.mkdtemp(dir=self.dir.name)) as saver:
            run(self.builder.compile(checkpointer=saver), {"step": 0})

    def time_thread(self, name: str) -> None:
        self._thread(name)

    def peakmem_thread(self, name: str) -> None:
        self._thread(name)


class Agent(_GraphThread):
    """The agent workload."""

    def build(self) -> StateGraph:
        return agent_graph()


class BigValue(_GraphThread):
    """A 1 MB value rewritten every step."""

    def build(self) -> StateGraph:
        return big_value_graph()
