"""The benchmarks' limit savers and the ratios derived from them (``benchmarks.bench_langgraph``).

Timings are not asserted here (benchmarks prove speed); these check that the limits behave as
savers, that the blocking floor really waits in every call, that the committing floors really
commit once per call in their store, and that the ratio tables name the ceilings the ASV tracks
read.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time
from typing import Any

import pytest
from benchmarks import bench_langgraph as bl
from benchmarks import bench_postgres as bp


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
    # A share of a few microseconds a step is noise too, not a bound 10,000 times below.
    c.seconds[bl.BLOCKING_FLOOR] = 1.2 + 0.5 * bl.MIN_FLOOR_SHARE_MS * 2 / 1e3
    assert 0 < c.share_ms(bl.BLOCKING_FLOOR) < bl.MIN_FLOOR_SHARE_MS
    assert math.isnan(c.ratios()["sqlite" + bl.CEILING])
    c.seconds[bl.BLOCKING_FLOOR] = 1.2 + 2 * bl.MIN_FLOOR_SHARE_MS * 2 / 1e3
    assert c.ratios()["sqlite" + bl.CEILING] == pytest.approx(1000 / (2 * bl.MIN_FLOOR_SHARE_MS))


def test_no_share_ratio_when_our_share_measured_nothing() -> None:
    # Noise can put our saver's run under the floor's: its share is then negative, and LangGraph's
    # share divided by it would read as a negative ratio.
    c = bl.Comparison(
        1,
        "async",
        {"none": 1.0, "floor": 1.2, "snapstate-memory": 1.19, "langgraph-memory": 1.4},
    )
    assert c.share_ms("snapstate-memory") < 0
    ratios = c.ratios()
    assert math.isnan(ratios["memory_share_ratio"])
    # The overhead (over no checkpointer) is still measured.
    assert ratios["memory_overhead_ratio"] == pytest.approx(0.4 / 0.19)
    assert "memory_share_ratio: none (snapstate's share was under" in c.table()
    # A share of a few microseconds a step is noise too, not a ratio of thousands.
    c.seconds["snapstate-memory"] = 1.2 + 0.5 * bl.MIN_FLOOR_SHARE_MS * 2 / 1e3
    assert 0 < c.share_ms("snapstate-memory") < bl.MIN_FLOOR_SHARE_MS
    assert math.isnan(c.ratios()["memory_share_ratio"])
    c.seconds["snapstate-memory"] = 1.2 + 2 * bl.MIN_FLOOR_SHARE_MS * 2 / 1e3
    assert c.ratios()["memory_share_ratio"] == pytest.approx(100 / (2 * bl.MIN_FLOOR_SHARE_MS))
    assert "memory_share_ratio: 5000.0x (LangGraph's / snapstate's)" in c.table()


def test_no_ceiling_without_the_blocking_floor() -> None:
    c = bl.Comparison(1, "async", {"none": 1.0, "floor": 1.2, "langgraph-sqlite": 3.2})
    assert not any(k.endswith(bl.CEILING) for k in c.ratios())


def test_open_saver_knows_the_limits(tmp_path: Any) -> None:
    with bl.open_saver(bl.BLOCKING_FLOOR, str(tmp_path)) as saver:
        assert isinstance(saver, bl.BlockingRefSaver)
    with bl.open_saver("floor", str(tmp_path)) as saver:
        assert type(saver) is bl.RefSaver


def _run_committing(saver: bl.CommittingRefSaver, durability: str) -> tuple[int, int]:
    """Run a 2-turn chat graph on a committing floor; its puts and put_writes calls."""
    calls = {"put": 0, "put_writes": 0}
    real_put, real_put_writes = saver.put, saver.put_writes

    def put(*args: Any, **kwargs: Any) -> Any:
        calls["put"] += 1
        return real_put(*args, **kwargs)

    def put_writes(*args: Any, **kwargs: Any) -> None:
        calls["put_writes"] += 1
        real_put_writes(*args, **kwargs)

    saver.put, saver.put_writes = put, put_writes  # type: ignore[method-assign]
    graph = bl.chat_graph(turns=2).compile(checkpointer=saver)
    cfg: dict[str, Any] = {"configurable": {"thread_id": "t"}}
    state = graph.invoke({"messages": []}, cfg, durability=durability)
    assert len(state["messages"]) == 4
    # The history reads back through the floor's own bookkeeping.
    assert len(list(graph.get_state_history(cfg))) == calls["put"] == 6
    return calls["put"], calls["put_writes"]


@pytest.mark.parametrize("durability", ["sync", "async"])
def test_sqlite_committing_floor_commits_once_per_call(tmp_path: Any, durability: str) -> None:
    path = str(tmp_path / "floor.db")
    saver = bl.SqliteCommittingSaver(path)
    try:
        puts, writes = _run_committing(saver, durability)
    finally:
        saver.close()
    assert writes >= 4
    assert saver.commits == puts + writes
    # Each commit is durable on its own: a new connection sees one row per call.
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM floor_commits").fetchone()[0] == puts + writes
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_postgres_committing_floor_commits_once_per_call(pg_dsn: str, pg_schema: str) -> None:
    import psycopg

    saver = bp.PostgresCommittingSaver(pg_dsn, pg_schema)
    try:
        puts, writes = _run_committing(saver, "async")
    finally:
        saver.close()
    assert writes >= 4
    assert saver.commits == puts + writes
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{pg_schema}".floor_commits').fetchone()
    assert row is not None and row[0] == puts + writes


def test_ratios_name_the_commit_ceiling() -> None:
    c = bl.Comparison(
        turns=1,
        durability="async",
        seconds={
            "none": 1.0,
            "floor": 1.2,
            bl.BLOCKING_FLOOR: 1.4,
            bl.COMMITTING_FLOOR: 1.7,
            "langgraph-sqlite": 3.2,
        },
    )
    ratios = c.ratios()
    # LangGraph's share (3.2 - 1.2) over the committing floor's (1.7 - 1.2), and over the
    # blocking floor's (1.4 - 1.2).
    assert ratios["sqlite" + bl.COMMIT_CEILING] == pytest.approx(4.0)
    assert ratios["sqlite" + bl.CEILING] == pytest.approx(10.0)
    assert "the committing floor's" in c.table()
    # Postgres names its ceilings the same way, from its own anchor.
    pg = bl.Comparison(
        1,
        "async",
        {"none": 1.0, "floor": 1.2, bl.COMMITTING_FLOOR: 2.2, "langgraph-postgres": 7.2},
    )
    assert bp.ratios(pg) == {"postgres" + bl.COMMIT_CEILING: pytest.approx(6.0)}


def test_open_saver_knows_the_committing_floors(tmp_path: Any, pg_dsn: str) -> None:
    with bl.open_saver(bl.COMMITTING_FLOOR, str(tmp_path)) as saver:
        assert isinstance(saver, bl.SqliteCommittingSaver)
    with bp.open_saver(bl.COMMITTING_FLOOR, pg_dsn) as saver:
        assert isinstance(saver, bp.PostgresCommittingSaver)
    assert bl.SAVERS[bl.COMMITTING_FLOOR][0] == "limit"
    assert bl.COMMITTING_FLOOR in bp.SAVERS


@pytest.mark.parametrize("impl", ["snapstate", "raw_insert", "raw_copy"])
def test_postgres_backend_put_baselines_store_the_same_rows(pg_dsn: str, impl: str) -> None:
    """The raw baselines of ``BackendPut`` fill snapstate's own tables with the same rows."""
    import psycopg

    bench = bp.BackendPut()
    bench.setup(impl)
    try:
        bench.time_thread(impl)
        with psycopg.connect(bp.DSN) as conn:
            counts = [
                conn.execute(f'SELECT count(*) FROM "{bench.schema}".{table}').fetchone()
                for table in ("checkpoints", "blobs")
            ]
    finally:
        bench.teardown(impl)
    batches = bp.chat_batches()
    assert counts == [
        (sum(len(b.checkpoints) for b in batches),),
        (len({(b.channel, b.version) for x in batches for b in x.blobs}),),
    ]


class _LateSaver(bl.RefSaver):
    """Waits ``pause`` seconds in each ``put`` made after the graph's last node returned."""

    def __init__(self, clock: bl.StepClock, nodes: int, pause: float) -> None:
        super().__init__()
        self.clock, self.nodes, self.pause = clock, nodes, pause

    def put(self, *args: Any, **kwargs: Any) -> Any:
        if self.clock.nodes >= self.nodes:
            time.sleep(self.pause)
        return super().put(*args, **kwargs)


@pytest.mark.parametrize("durability", ["async", "sync"])
def test_the_tail_holds_what_the_saver_does_after_the_last_step(durability: str) -> None:
    clock = bl.StepClock()
    builder = bl.chat_graph(turns=2, clock=clock)
    # The last checkpoint is saved after the last node; invoke waits for it in either mode.
    saver = _LateSaver(clock, nodes=4, pause=0.05)
    seconds = bl.run_thread(builder.compile(checkpointer=saver), durability=durability, clock=clock)
    assert clock.nodes == 4
    assert 0.05 <= clock.tail <= seconds
    # Without a checkpointer nothing waits after the last node, and the tail is part of the run.
    clock = bl.StepClock()
    seconds = bl.run_thread(bl.chat_graph(turns=2, clock=clock).compile(), clock=clock)
    assert clock.nodes == 4
    assert 0 <= clock.tail < seconds


def test_the_table_shows_the_tail_per_step() -> None:
    c = bl.Comparison(
        turns=1,
        durability="async",
        seconds={"none": 1.0, "floor": 1.2},
        tail={"none": 0.0, "floor": 0.1},
    )
    assert c.tail_ms("floor") == pytest.approx(50.0)
    assert "tail" in c.table()
    assert "tail" not in bl.Comparison(1, "async", {"none": 1.0}).table()
