"""The keyframe trade-off benchmark (``benchmarks.bench_keyframes``).

Timings are not asserted (benchmarks prove speed): these check that each setting stores what
its name says and that every thread reads back whole.
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks import bench_keyframes as bk

TURNS = 20


def test_each_setting_stores_its_full_copies_and_reads_back(tmp_path: Any) -> None:
    result = bk.compare(TURNS, every=(4, 0), rounds=1, directory=str(tmp_path))
    # The messages channel has a version per node and one for the input's empty list.
    versions = 2 * TURNS + 1
    assert result[4]["full_copies"] == math.ceil(versions / 4)
    assert result[0]["full_copies"] == versions
    # A full copy at every version stores each message again at every later step.
    assert result[0]["stored_kb"] > 1.5 * result[4]["stored_kb"]
    for costs in result.values():
        assert set(costs) == set(bk.COLUMNS)
        assert all(v > 0 for v in costs.values())
    text = bk.table(result, TURNS)
    assert "A chat thread of 40 steps" in text
    assert "| 4 |" in text and "| 0 |" in text


def test_a_thread_that_reads_back_short_is_reported(tmp_path: Any, monkeypatch: Any) -> None:
    from snapstate.langgraph import SqliteSaver

    real = SqliteSaver.get_tuple

    def short(self: Any, config: Any) -> Any:
        tup = real(self, config)
        if tup is not None:  # None: the graph's own read, before its thread has a checkpoint
            tup.checkpoint["channel_values"]["messages"].pop()
        return tup

    monkeypatch.setattr(SqliteSaver, "get_tuple", short)
    graph = bk.bench_langgraph.chat_graph(2)
    try:
        bk.thread_costs(graph, 2, 4, str(tmp_path))
    except AssertionError as exc:
        assert "delta_keyframe_every=4 reads back wrong" in str(exc)
    else:
        raise AssertionError("a short read went unreported")
