"""pytest-benchmark: snapstate's PostgreSQL savers against langgraph-checkpoint-postgres.

Run by ``make bench`` (with the other suites). Each benchmark is one interleaved comparison in
one run; its ``extra_info`` holds the per-step numbers and the ratios the targets are stated
in (LangGraph's cost over snapstate's, or snapstate's throughput over LangGraph's). Needs the
server of ``SNAPSTATE_TEST_PG_DSN``; skips without it.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from .bench_langgraph import info_prefix
from .bench_postgres import compare_big, compare_chat, ratios, server_available, throughputs

ROUNDS = int(os.environ.get("SNAPSTATE_BENCH_COMPARE_ROUNDS", "7"))
#: Interleaved runs of the 8-process throughput (each a few seconds); medians are reported.
THROUGHPUT_ROUNDS = int(os.environ.get("SNAPSTATE_BENCH_THROUGHPUT_ROUNDS", "3"))

pytestmark = pytest.mark.skipif(not server_available(), reason="no PostgreSQL server")


def _info(comparison: Any) -> dict[str, Any]:
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
    return info


def test_postgres_chat_graph_share(benchmark: Any) -> None:
    """Chat graph, 100 steps per thread: each saver's share of the per-step overhead."""
    benchmark.group = "Postgres chat graph: per-step share, snapstate vs LangGraph"
    result: list[Any] = []
    benchmark.pedantic(lambda: result.append(compare_chat(rounds=ROUNDS)), rounds=1, iterations=1)
    (comparison,) = result
    print("\n" + comparison.table())
    info = _info(comparison)
    info.update(ratios(comparison))
    benchmark.extra_info.update(info)


def test_postgres_big_value_overhead(benchmark: Any) -> None:
    """A 1 MB value rewritten at every step: per-step overhead of each saver."""
    benchmark.group = "Postgres 1 MB value per step: overhead, snapstate vs LangGraph"
    result: list[Any] = []
    benchmark.pedantic(lambda: result.append(compare_big(rounds=ROUNDS)), rounds=1, iterations=1)
    (comparison,) = result
    print("\n" + comparison.table())
    info = _info(comparison)
    info["big_overhead_ratio"] = comparison.overhead_ms("langgraph-postgres") / (
        comparison.overhead_ms("snapstate-postgres")
    )
    benchmark.extra_info.update(info)


def test_postgres_eight_processes_throughput(benchmark: Any) -> None:
    """8 processes writing chat checkpoints at once: checkpoints per second (medians of
    interleaved runs)."""
    benchmark.group = "Postgres, 8 processes: checkpoints per second"
    rates: dict[str, float] = {}

    def run() -> None:
        rates.update(
            throughputs(
                ("snapstate-postgres", "snapstate-postgres-batched", "langgraph-postgres"),
                rounds=THROUGHPUT_ROUNDS,
            )
        )

    benchmark.pedantic(run, rounds=1, iterations=1)
    print(
        "\n8 processes, checkpoints/s: "
        + ", ".join(f"{name} {rate:.0f}" for name, rate in rates.items())
    )
    benchmark.extra_info.update(
        role="ours",
        ours_per_second=rates["snapstate-postgres"],
        ours_batched_per_second=rates["snapstate-postgres-batched"],
        lg_per_second=rates["langgraph-postgres"],
        processes_throughput_ratio=rates["snapstate-postgres"] / rates["langgraph-postgres"],
        processes_batched_throughput_ratio=rates["snapstate-postgres-batched"]
        / rates["langgraph-postgres"],
    )
