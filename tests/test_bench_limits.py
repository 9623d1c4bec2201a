"""The benchmarks' limit savers and the ratios derived from them (``benchmarks.bench_langgraph``).

Timings are not asserted here (benchmarks prove speed); these check that the limits behave as
savers, that the blocking floor really waits in every call, and that the ratio tables name the
ceiling the ASV tracks read.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from benchmarks import bench_langgraph as bl


def test_blocking_floor_waits_once_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    real_sleep = time.sleep

    def counting_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(bl.time, "sleep", counting_sleep)
    graph = bl.chat_graph(turns=2).compile(checkpointer=bl.BlockingRefSaver())
    cfg: dict[str, Any] = {"configurable": {"thread_id": "t"}}
    state = graph.invoke({"messages": []}, cfg, durability="sync")
    assert len(state["messages"]) == 4
    saver = graph.checkpointer
    assert isinstance(saver, bl.BlockingRefSaver)
    puts = sum(len(v) for v in saver.checkpoints.values())
    writes = sum(len(v) for v in saver.writes.values())
    # One wait per put and one per put_writes call (each node's writes are one call).
    assert puts == 6  # the input checkpoint, then one per step
    assert writes >= 4
    assert sleeps and all(s == 0 for s in sleeps)
    assert len(sleeps) >= puts + 4
    # The history reads back through the floor's own bookkeeping.
    assert len(list(graph.get_state_history(cfg))) == puts


def test_ratios_name_the_ceiling() -> None:
    c = bl.Comparison(
        turns=1,
        durability="async",
        seconds={"none": 1.0, "floor": 1.2, bl.BLOCKING_FLOOR: 1.4, "langgraph-sqlite": 3.2},
        graph_cpu={"none": 0.9, "floor": 1.0},
    )
    ratios = c.ratios()
    # LangGraph's share (3.2 - 1.2) over the blocking floor's (1.4 - 1.2).
    assert ratios["sqlite" + bl.CEILING] == pytest.approx(10.0)
    assert c.graph_cpu_ms("floor") == pytest.approx(500.0)
    table = c.table()
    assert "the blocking floor's" in table
    assert "graph CPU" in table


def test_no_ceiling_when_the_blocking_floor_measured_nothing() -> None:
    # Noise can put the blocking floor at or under the floor: that run bounds nothing.
    c = bl.Comparison(
        1, "async", {"none": 1.0, "floor": 1.2, bl.BLOCKING_FLOOR: 1.1, "langgraph-sqlite": 3.2}
    )
    assert math.isnan(c.ratios()["sqlite" + bl.CEILING])


def test_no_ceiling_without_the_blocking_floor() -> None:
    c = bl.Comparison(1, "async", {"none": 1.0, "floor": 1.2, "langgraph-sqlite": 3.2})
    assert not any(k.endswith(bl.CEILING) for k in c.ratios())


def test_open_saver_knows_the_limits(tmp_path: Any) -> None:
    with bl.open_saver(bl.BLOCKING_FLOOR, str(tmp_path)) as saver:
        assert isinstance(saver, bl.BlockingRefSaver)
    with bl.open_saver("floor", str(tmp_path)) as saver:
        assert type(saver) is bl.RefSaver
