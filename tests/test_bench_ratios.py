"""The benchmark machinery's arithmetic, on made-up timings: which rounds count, medians (not
means), which savers each ratio compares, and which way it divides."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pytest
from benchmarks import bench_calls as bc
from benchmarks import bench_langgraph as bl
from benchmarks import bench_postgres as bp


class _Graph:
    def compile(self, checkpointer: Any) -> Any:
        return checkpointer


def test_interleaved_drops_the_warm_up_round_and_takes_medians(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Seconds per run, round by round: 100 is round 0 (warming up), then 1, 2 and 9.
    runs = iter([100.0, 100.0, 1.0, 1.0, 2.0, 2.0, 9.0, 9.0])
    # A -drained saver's time until its queue is committed counts in its seconds.
    monkeypatch.setattr(bl, "drain", lambda name, saver: 5.0 if name.endswith("-drained") else 0.0)
    seconds, cpu, tails = bl.interleaved(
        ["a", "a-drained"],
        _Graph(),  # type: ignore[arg-type]
        lambda graph: next(runs),
        lambda name, r: contextlib.nullcontext(object()),
        rounds=3,
    )
    assert seconds == {"a": 2.0, "a-drained": 7.0}  # the mean would be 4, with round 0 5.5
    assert all(c < 0.5 for c in cpu.values())  # the graph's CPU time, not its seconds
    assert tails == {}


#: Seconds per thread (turns=1: two steps) of every saver a chat comparison runs.
SECONDS = {
    "none": 1.0,
    "floor": 1.1,
    "snapstate-sqlite": 1.2,
    "snapstate-sqlite-batched": 1.14,
    "snapstate-sqlite-batched-drained": 1.16,
    "langgraph-sqlite": 2.1,
    "snapstate-memory": 1.12,
    "langgraph-memory": 1.3,
}


def test_each_ratio_compares_its_own_pair_of_savers() -> None:
    # Shares: (seconds - 1.1) * 500 ms a step; overheads: (seconds - 1.0) * 500.
    r = bl.Comparison(1, "async", dict(SECONDS)).ratios()
    expected = {
        "sqlite_share_ratio": 500 / 50,
        "sqlite_overhead_ratio": 550 / 100,
        "sqlite_batched_share_ratio": 500 / 20,
        "sqlite_batched_overhead_ratio": 550 / 70,
        "sqlite_batched_drained_share_ratio": 500 / 30,
        "sqlite_batched_drained_overhead_ratio": 550 / 80,
        "memory_share_ratio": 100 / 10,
        "memory_overhead_ratio": 150 / 60,
    }
    assert r == pytest.approx(expected)


def test_postgres_ratios_compare_their_own_pairs() -> None:
    seconds = {
        "none": 1.0,
        "floor": 1.1,
        "snapstate-postgres": 1.3,
        "snapstate-postgres-batched": 1.12,
        "snapstate-postgres-batched-drained": 1.15,
        "langgraph-postgres": 3.1,
    }
    r = bp.ratios(bl.Comparison(1, "async", seconds))
    assert r == pytest.approx(
        {
            "postgres_share_ratio": 1000 / 100,
            "postgres_overhead_ratio": 1050 / 150,
            "postgres_batched_share_ratio": 1000 / 10,
            "postgres_batched_overhead_ratio": 1050 / 60,
            "postgres_batched_drained_share_ratio": 1000 / 25,
            "postgres_batched_drained_overhead_ratio": 1050 / 75,
        }
    )


def test_no_overhead_ratio_when_our_overhead_measured_nothing() -> None:
    seconds = {"none": 1.0, "floor": 1.2, "snapstate-memory": 1.0, "langgraph-memory": 1.4}
    r = bl.Comparison(1, "async", seconds).ratios()
    assert math.isnan(r["memory_overhead_ratio"]) and math.isnan(r["memory_share_ratio"])
    seconds["snapstate-memory"] = 0.99  # faster than no checkpointer: noise, not a ratio
    comparison = bl.Comparison(1, "async", seconds)
    assert math.isnan(comparison.ratios()["memory_overhead_ratio"])
    assert "memory_overhead_ratio: none (snapstate's overhead was under" in comparison.table()


def _calls(put_us: list[float], put_writes_us: list[float]) -> bc.Calls:
    c = bc.Calls()
    c.wall["put"] = [x / 1e6 for x in put_us]
    c.wall["put_writes"] = [x / 1e6 for x in put_writes_us]
    return c


def test_replayed_calls_take_medians_and_divide_langgraph_s_by_ours() -> None:
    ours = _calls([1, 2, 30], [1, 1, 1])  # median 2 + 1 (the mean would be 11 + 1)
    assert ours.step_us() == pytest.approx(3.0)
    result = {
        "snapstate-memory": ours,
        "langgraph-memory": _calls([10, 10, 10], [2, 2, 2]),
        "snapstate-sqlite": _calls([50], [25]),
        "langgraph-sqlite": _calls([300], [150]),
    }
    assert bc.ratios(result) == pytest.approx(
        {"memory_calls_ratio": 4.0, "sqlite_calls_ratio": 6.0}
    )


def test_the_report_divides_the_anchor_s_median_by_each_benchmark_s() -> None:
    from benchmarks import run

    def bench(name: str, role: str, median: float, mean: float) -> dict[str, Any]:
        return {
            "name": name,
            "group": "g",
            "stats": {"median": median, "mean": mean},
            "extra_info": {"role": role},
        }

    data = {
        "machine_info": {},
        "benchmarks": [
            bench("theirs", "anchor", 2.0, 20.0),
            bench("ours", "ours", 0.5, 0.6),
        ],
    }
    lines = run.tables(data).splitlines()
    assert "| ours | ours | 500.000 ms | 4.00x |" in lines  # medians: 2 s over 0.5 s
    assert "| theirs | anchor | 2.000 s | 1.00x |" in lines
