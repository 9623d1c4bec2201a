"""pytest-benchmark: the agent and 1 MB-value LangGraph workloads, ours beside LangGraph's."""

from __future__ import annotations

import os
from typing import Any

from .bench_agent import agent_graph, big_value_graph, compare, overhead_ratios

ROUNDS = int(os.environ.get("SNAPSTATE_BENCH_ROUNDS", "5"))


def _record(benchmark: Any, group: str, builder: Any) -> None:
    benchmark.group = group
    result: list[dict[str, float]] = []
    benchmark.pedantic(
        lambda: result.append(compare(builder, {"step": 0}, rounds=ROUNDS)),
        rounds=1,
        iterations=1,
    )
    (ms,) = result
    info: dict[str, Any] = {"role": "ours"}
    for name, value in ms.items():
        info[f"{name.replace('-', '_')}_ms_per_step"] = value
    info.update(overhead_ratios(ms))
    benchmark.extra_info.update(info)


def test_agent_overhead(benchmark: Any) -> None:
    """Twelve channels, one or two changed per step, three parallel tool calls per iteration."""
    _record(
        benchmark, "LangGraph agent graph: per-step overhead, snapstate vs LangGraph", agent_graph()
    )


def test_big_value_overhead(benchmark: Any) -> None:
    """A 1 MB value rewritten every step."""
    _record(
        benchmark,
        "LangGraph 1 MB value per step: overhead, snapstate vs LangGraph",
        big_value_graph(),
    )
