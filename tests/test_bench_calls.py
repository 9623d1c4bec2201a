"""The replay of a chat graph's saver calls (``benchmarks.bench_calls``).

Timings are not asserted (benchmarks prove speed): these check that the recorded calls are
the graph's, that replaying them stores the same history the graph would, that WAL pages are
counted per commit, and that the ratios and the table say what they measure.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from benchmarks import bench_calls as bc
from benchmarks import bench_langgraph as bl


@pytest.fixture(scope="module")
def calls() -> list[bc.Call]:
    return bc.record(turns=3)


def test_record_keeps_every_call_of_the_graph(calls: list[bc.Call]) -> None:
    kinds = [c.kind for c in calls]
    # The input checkpoint, the one after the input is applied, then one per node step.
    assert kinds.count("put") == 2 + 2 * 3
    assert kinds.count("put_writes") >= 2 * 3
    assert kinds[0] == "put"


def test_replay_stores_the_graph_history(calls: list[bc.Call]) -> None:
    from snapstate.langgraph import InMemorySaver

    saver = InMemorySaver()
    measured = bc.replay(saver, calls, "replayed")
    assert len(measured.wall["put"]) == [c.kind for c in calls].count("put")
    assert all(w >= 0 for w in measured.wall["put_writes"])
    assert not measured.pages["put"]  # no WAL to count
    cfg: dict[str, Any] = {"configurable": {"thread_id": "replayed"}}
    latest = saver.get_tuple(cfg)
    assert latest is not None
    expected = bl.conversation(3)
    assert [m.content for m in latest.checkpoint["channel_values"]["messages"]] == [
        m.content for m in expected
    ]
    assert len(list(saver.list(cfg))) == [c.kind for c in calls].count("put")


def test_replay_counts_wal_pages_per_commit(calls: list[bc.Call], tmp_path: Any) -> None:
    with bl.open_saver("floor-committing", str(tmp_path)) as floor:
        wal = os.path.join(tmp_path, "floor-committing.db-wal")
        measured = bc.replay(floor, calls, "t", wal)
    # One 4-byte row per call: every commit grows the WAL by whole frames, at least one.
    pages = measured.pages["put"] + measured.pages["put_writes"]
    assert len(pages) == len(calls)
    assert all(p >= 1 and p == int(p) for p in pages)


def test_compare_replays_each_saver_on_a_fresh_store() -> None:
    result = bc.compare(["snapstate-memory", "snapstate-sqlite"], rounds=2, turns=2)
    assert set(result) == {"snapstate-memory", "snapstate-sqlite"}
    puts = 2 + 2 * 2
    for c in result.values():
        assert len(c.wall["put"]) == 2 * puts  # round 0 dropped
    sqlite = result["snapstate-sqlite"]
    assert sqlite.pages["put"] and min(sqlite.pages["put"]) >= 1


def test_ratios_and_table() -> None:
    ours, theirs = bc.Calls(), bc.Calls()
    ours.wall = {"put": [10e-6, 30e-6, 20e-6], "put_writes": [5e-6]}
    theirs.wall = {"put": [100e-6], "put_writes": [25e-6]}
    ours.pages["put"] = [3.0, 5.0, 4.0]
    result = {"snapstate-sqlite": ours, "langgraph-sqlite": theirs}
    assert ours.step_us() == pytest.approx(25.0)
    assert bc.ratios(result) == {"sqlite_calls_ratio": pytest.approx(5.0)}
    text = bc.table(result)
    assert "sqlite_calls_ratio: 5.00x" in text
    row = next(line for line in text.splitlines() if line.startswith("snapstate-sqlite"))
    assert row.split()[-2:] == ["4.0", "-"]  # pages per put, none counted for put_writes


def test_compare_replays_on_postgres(pg_dsn: str) -> None:
    names = ["pg-floor-committing", "pg-snapstate-postgres"]
    result = bc.compare(names, rounds=1, turns=1, dsn=pg_dsn)
    for name in names:
        assert len(result[name].wall["put"]) == 2 + 2 * 1
        assert not result[name].pages["put"]  # no WAL file to count


def test_stream_replays_every_thread_on_one_store(calls: list[bc.Call]) -> None:
    result = bc.compare_streams(["snapstate-sqlite"], rounds=2, threads=3, turns=3)
    s = result["snapstate-sqlite"]
    assert len(s.wall) == 2 * 3 * len(calls)  # every call of every thread, both rounds
    assert s.seconds >= sum(s.wall)
    assert s.wal_bytes > 0  # measured before the store closed


def test_stream_statistics_and_table() -> None:
    s = bc.Stream(wall=[1e-6 * x for x in (5, 1, 3, 2, 4)], seconds=20e-6, wal_bytes=2_500_000)
    assert s.mean_us() == pytest.approx(4.0)  # the whole stream's time per call
    assert s.quantile_us(0.5) == pytest.approx(3.0)
    assert s.quantile_us(1.0) == pytest.approx(5.0)
    assert s.quantile_us(0.0) == pytest.approx(1.0)
    row = bc.stream_table({"snapstate-sqlite": s}).splitlines()[-1].split()
    assert row == ["snapstate-sqlite", "5", "4.0", "3.0", "5.0", "5.0", "2.5"]


def test_asv_stream_tracks_the_ratio_and_our_times(monkeypatch: pytest.MonkeyPatch) -> None:
    ours = bc.Stream(wall=[1e-6 * x for x in range(1, 101)], seconds=100 * 60e-6)
    theirs = bc.Stream(wall=[240e-6] * 100, seconds=100 * 240e-6)
    monkeypatch.setattr(
        bc, "compare_streams", lambda: {"snapstate-sqlite": ours, "langgraph-sqlite": theirs}
    )
    asv = bc.SaverStream()
    values = asv.setup_cache()
    assert asv.track_sqlite_stream_mean_ratio(values) == pytest.approx(4.0)
    assert asv.track_sqlite_stream_mean_us(values) == pytest.approx(60.0)
    assert asv.track_sqlite_stream_p99_us(values) == pytest.approx(100.0)
