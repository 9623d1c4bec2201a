"""pytest-benchmark: a LangGraph chat graph on each saver (run by ``make bench``).

Two groups:

* one benchmark per saver: seconds per thread (50 turns, 100 steps), ``extra_info`` holding
  the per-step time;
* one interleaved comparison of every saver, whose ``extra_info`` holds the per-step overhead
  and share of each, and the ratios the targets are stated in (see ``bench_langgraph``).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pytest

from .bench_langgraph import (
    SAVERS,
    TURNS,
    chat_graph,
    compare,
    delta_history,
    delta_thread,
    info_prefix,
    open_saver,
    run_thread,
    timed_runs,
)

ROUNDS = int(os.environ.get("SNAPSTATE_BENCH_ROUNDS", "5"))
#: Rounds of the interleaved comparison: the shares are differences of medians, so they need
#: more rounds than a single median to settle on a shared machine.
COMPARE_ROUNDS = int(os.environ.get("SNAPSTATE_BENCH_COMPARE_ROUNDS", "11"))
DURABILITY = os.environ.get("SNAPSTATE_BENCH_DURABILITY", "async")


@pytest.mark.parametrize("name", timed_runs(SAVERS))
def test_chat_graph_thread(benchmark: Any, name: str, tmp_path: Any) -> None:
    """One thread of the chat graph per round, on a fresh store."""
    benchmark.group = f"LangGraph chat graph, {TURNS} turns per thread ({DURABILITY})"
    graph_builder = chat_graph()
    made = 0

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        nonlocal made
        made += 1
        directory = tmp_path / f"r{made}"
        directory.mkdir()
        saver = stack.enter_context(open_saver(name, str(directory)))
        return (graph_builder.compile(checkpointer=saver),), {"durability": DURABILITY}

    with contextlib.ExitStack() as stack:
        benchmark.pedantic(run_thread, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(
        role=SAVERS[name][0],
        per_step_ms=benchmark.stats.stats.median / (2 * TURNS) * 1e3,
    )


def test_chat_graph_overhead_ratios(benchmark: Any) -> None:
    """Every saver in one interleaved run: per-step overhead, share and the target ratios."""
    benchmark.group = "LangGraph chat graph: per-step overhead, snapstate vs LangGraph"
    result: list[Any] = []
    benchmark.pedantic(
        lambda: result.append(compare(rounds=COMPARE_ROUNDS, durability=DURABILITY)),
        rounds=1,
        iterations=1,
    )
    (comparison,) = result
    print("\n" + comparison.table())
    info: dict[str, Any] = {"role": "ours"}
    for name in comparison.seconds:
        short = info_prefix(name)
        info[f"{short}_ms_per_step"] = comparison.per_step_ms(name)
        if name != "none":
            info[f"{short}_overhead_ms"] = comparison.overhead_ms(name)
        if name not in ("none", "floor"):
            info[f"{short}_share_ms"] = comparison.share_ms(name)
        if name in comparison.graph_cpu:
            info[f"{short}_graph_cpu_ms_per_step"] = comparison.graph_cpu_ms(name)
        if name in comparison.tail:
            info[f"{short}_tail_ms_per_step"] = comparison.tail_ms(name)
    info.update(comparison.ratios())
    benchmark.extra_info.update(info)


@pytest.mark.parametrize(
    "name", ["snapstate-sqlite", "langgraph-sqlite", "snapstate-memory", "default-walk"]
)
def test_delta_channel_history(benchmark: Any, name: str, tmp_path: Any) -> None:
    """``get_delta_channel_history`` at the head of a 190-step DeltaChannel thread."""
    benchmark.group = "DeltaChannel history at the head of a 190-step thread"
    walk = name == "default-walk"
    with open_saver("snapstate-sqlite" if walk else name, str(tmp_path)) as saver:
        config = delta_thread(saver)
        writes = benchmark(delta_history, saver, config, default_walk=walk)
    roles = {"langgraph-sqlite": "anchor", "default-walk": "limit"}
    benchmark.extra_info.update(role=roles.get(name, "ours"), writes=writes)
