"""The split of a store's writes into phases (``benchmarks.bench_split``).

Timings are not asserted (benchmarks prove speed): these check that the captured batches are
the graph's, that the timed SQLite writes store exactly what the saver would, and that the
PostgreSQL variants send what their names say.
"""

from __future__ import annotations

import collections
import math
from typing import Any

import pytest
from benchmarks import bench_calls as bc
from benchmarks import bench_langgraph as bl
from benchmarks import bench_split as bs

from snapstate.backends import sqlite as sqlite_backend

TURNS = 2


@pytest.fixture(scope="module")
def batches() -> list[tuple[str, Any]]:
    return bs.capture(turns=TURNS)


def test_capture_keeps_one_batch_per_call(batches: list[tuple[str, Any]]) -> None:
    # As many of each kind as a recording makes. Not their order: from Python 3.13 LangGraph's
    # put and put_writes calls, made from different threads, interleave differently from one
    # recording to the next, even with durability="sync".
    made = collections.Counter(c.kind for c in bc.record(turns=TURNS))
    assert collections.Counter(kind for kind, _ in batches) == made
    for kind, batch in batches:
        if kind == "put":
            assert len(batch.checkpoints) == 1 and not batch.writes
        else:
            assert batch.writes and not batch.checkpoints


@pytest.mark.skipif(sqlite_backend._NATIVE is None, reason="the compiled connection is off")
def test_sqlite_split_stores_what_the_saver_stores(
    batches: list[tuple[str, Any]], tmp_path: Any
) -> None:
    from snapstate.langgraph import SqliteSaver

    result = bs.sqlite_split(batches, rounds=1, directory=str(tmp_path))
    for suffix in ("", ", unbuffered"):
        for kind in bs.KINDS:
            for phase in ("begin", "statements", "commit", "total"):
                assert result[f"{kind} {phase}{suffix}"] > 0
        assert result[f"floor{suffix}"] > 0
    # Round 1's stores hold the thread the graph made: its latest checkpoint and its history.
    for name in ("r1.db", "r1u.db"):
        with SqliteSaver.from_conn_string(str(tmp_path / name)) as saver:
            cfg: dict[str, Any] = {"configurable": {"thread_id": "capture"}}
            latest = saver.get_tuple(cfg)
            assert latest is not None
            assert [m.content for m in latest.checkpoint["channel_values"]["messages"]] == [
                m.content for m in bl.conversation(TURNS)
            ]
            assert len(list(saver.list(cfg))) == [k for k, _ in batches].count("put")
    table = bs.sqlite_table(result)
    assert "| `put` |" in table and "| `put_writes`, each frame written as" in table


def test_no_check_variant_replaces_the_check_call() -> None:
    from snapstate.backends import _pg_sql as sql

    statements = sql.Statements("s")
    checked = [statements.write_sql((1, 0, 0, 2, 1, 0, 1, b, 0)) for b in (0, 1)]
    for text in checked:
        assert ".check_" in text
        replaced = bs._CHECK_CALL.sub("SELECT pg_catalog.num_nonnulls(", text)
        assert ".check_" not in replaced
        assert "pg_catalog.num_nonnulls(ARRAY[" in replaced


def test_postgres_split_times_every_variant(batches: list[tuple[str, Any]], pg_dsn: str) -> None:
    result = bs.postgres_split(batches, rounds=1, dsn=pg_dsn)
    assert set(result) == set(bs.VARIANTS)
    for wall, cpu in result.values():
        assert math.isfinite(wall) and math.isfinite(cpu)
        assert wall > 0 and cpu >= 0
    assert "| no flush |" in bs.postgres_table(result)


def test_client_split_times_both_conversions_and_puts_the_backend_back(
    batches: list[tuple[str, Any]], pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snapstate.backends import _pg_direct as direct
    from snapstate.backends import _pg_sql as sql

    real_run = direct.run
    one_pass = sql.direct_write
    converted: list[Any] = []

    def spying(q: Any, batch: Any) -> Any:
        converted.append(batch)
        return one_pass(q, batch)

    monkeypatch.setattr(sql, "direct_write", spying)
    result = bs.client_split(batches, rounds=1, dsn=pg_dsn)
    assert set(result) == {f"{k}{v}" for k in bs.KINDS for v in ("", ", general")}
    assert all(math.isfinite(v) and v > 0 for v in result.values())
    # The pool's opening write and both rounds of the one-pass variant went through the
    # one-pass conversion; the general variant's writes did not.
    assert len(converted) == 1 + 2 * len(batches)
    assert direct.run is real_run and sql.direct_write is spying  # put back as found
    assert "| `put_writes` |" in bs.client_table(result)
