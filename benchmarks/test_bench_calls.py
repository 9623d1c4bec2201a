"""pytest-benchmark: the chat graph's saver calls, replayed one by one on each saver (see
``bench_calls``): per-call medians, WAL pages per commit, and LangGraph's time per step over
ours."""

from __future__ import annotations

import os
from typing import Any

from .bench_calls import (
    KINDS,
    compare,
    compare_streams,
    ratios,
    stream_ratios,
    stream_table,
    table,
)
from .bench_langgraph import info_prefix

ROUNDS = int(os.environ.get("SNAPSTATE_BENCH_ROUNDS", "5"))


def test_saver_calls(benchmark: Any) -> None:
    """One interleaved replay of every saver (Postgres ones when the server is reachable)."""
    benchmark.group = "Saver calls of the chat graph, replayed outside it"
    result: list[Any] = []
    benchmark.pedantic(lambda: result.append(compare(rounds=ROUNDS)), rounds=1, iterations=1)
    (calls,) = result
    print("\n" + table(calls))
    info: dict[str, Any] = {"role": "ours"}
    for name, c in calls.items():
        short = info_prefix(name)
        for kind in KINDS:
            info[f"{short}_{kind}_us"] = c.median_us("wall", kind)
            info[f"{short}_{kind}_cpu_us"] = c.median_us("cpu", kind)
            if c.pages[kind]:
                info[f"{short}_{kind}_wal_pages"] = c.median("pages", kind)
        info[f"{short}_per_step_us"] = c.step_us()
    info.update(ratios(calls))
    benchmark.extra_info.update(info)


def test_saver_calls_stream(benchmark: Any) -> None:
    """The chat calls of many graph threads on one SQLite store, WAL checkpoints included."""
    benchmark.group = "Saver calls of many chat threads on one SQLite store"
    result: list[Any] = []
    benchmark.pedantic(lambda: result.append(compare_streams()), rounds=1, iterations=1)
    (streams,) = result
    print("\n" + stream_table(streams))
    info: dict[str, Any] = {"role": "ours"}
    for name, s in streams.items():
        short = info_prefix(name)
        info[f"{short}_stream_mean_us"] = s.mean_us()
        info[f"{short}_stream_median_us"] = s.quantile_us(0.5)
        info[f"{short}_stream_p99_us"] = s.quantile_us(0.99)
        info[f"{short}_stream_slowest_us"] = s.quantile_us(1.0)
        info[f"{short}_stream_wal_mb"] = s.wal_bytes / 1e6
    info.update(stream_ratios(streams))
    benchmark.extra_info.update(info)
