"""The arithmetic of the benchmark scripts ``bench_split`` and ``bench_keyframes``, on made-up
timings: which rounds count, medians (not means), which measurements each figure comes from,
and the units the tables print.

A made-up clock stands in for the module's ``time``: it moves only when a stand-in for the
timed work spends its phase's cost, so each figure can only come from the work it names.
The work itself is real wherever that is cheap (the stores, the statements, the graph).
"""

from __future__ import annotations

import math
import os
import re
import types
from collections.abc import Iterator
from typing import Any

import pytest
from benchmarks import bench_keyframes as bk
from benchmarks import bench_split as bs
from benchmarks.workloads import sqlite_bytes

from snapstate.backends import sqlite as sqlite_backend

#: Every cost of round 0 (the warm-up), in the unit of what it stands for: far off every kept one.
WARM_UP = 10_000.0


class _Clock:
    """Wall and CPU seconds that pass only when :meth:`spend` says so."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def spend(self, wall: float, cpu: float = 0.0) -> None:
        self.wall += wall
        self.cpu += cpu

    def module(self) -> Any:
        """What the benchmark module sees as ``time``."""
        return types.SimpleNamespace(perf_counter=lambda: self.wall, thread_time=lambda: self.cpu)


def _cost(call: int, per_round: int, base: float) -> float:
    """The cost of a variant's ``call``-th timed call when each round makes ``per_round`` of
    them (two kept rounds): the warm-up round slow; round 1 at ``base``; round 2 at ``base + 2``
    but for its last call, an outlier. The median of the kept calls is then ``base + 1``; their
    mean is far off, and so is the median with the warm-up kept."""
    r, i = divmod(call, per_round)
    if r == 0:
        return WARM_UP
    if r == 1:
        return base
    if r == 2:
        return base + 2 if i < per_round - 1 else 5_000.0
    raise AssertionError(f"call {call}: more than three rounds of {per_round} timed calls")


# -- bench_split, SQLite -----------------------------------------------------------------------

#: µs of a batch's BEGIN, statements, COMMIT and the floor's transaction after it, in kept
#: rounds 1, 2 and 3 with the WAL buffer; without it each phase takes three times as long.
SQLITE_PHASES = {
    "put": [(1.0, 10.0, 100.0, 7.0), (2.0, 20.0, 1.0, 8.0), (30.0, 1.0, 50.0, 900.0)],
    "put_writes": [(4.0, 40.0, 5.0, 1.0), (5.0, 3.0, 6.0, 2.0), (6.0, 50.0, 700.0, 3.0)],
}
UNBUFFERED = 3.0


class _Connection:
    """Stands in for the compiled connection of store ``r<round>[u].db``: its BEGIN, COMMIT and
    the floor's INSERT spend their made-up cost; ``_store`` spends the statements'."""

    def __init__(
        self, clock: _Clock, batches: list[tuple[str, Any]], path: str, sync: str, buffered: bool
    ) -> None:
        match = re.fullmatch(r"r(\d+)(u?)\.db", os.path.basename(path))
        assert match is not None and (match[2] == "u") != buffered, path
        assert sync == "normal"
        self.clock, self.path, self.wal_buffer = clock, path, buffered
        self.round = int(match[1])
        self.pending = iter(batches)
        self.batch: tuple[str, Any] | None = None
        self.state = "idle"  # -> "batch" -> "stored" -> "committed" -> "floor" -> "idle"

    def phase(self, index: int) -> float:
        assert self.batch is not None
        if self.round == 0:
            return WARM_UP * 1e-6
        us = SQLITE_PHASES[self.batch[0]][self.round - 1][index]
        return us * (1.0 if self.wal_buffer else UNBUFFERED) * 1e-6

    def begin(self) -> bool:
        if self.state == "idle":
            self.batch = next(self.pending)
            self.clock.spend(self.phase(0))
            self.state = "batch"
        else:
            assert self.state == "committed", self.state
            self.state = "floor"
        return True

    def store(self, batch: Any) -> None:
        assert self.state == "batch" and self.batch is not None and batch is self.batch[1]
        self.clock.spend(self.phase(1))
        self.state = "stored"

    def query(self, sql: str, params: Any) -> None:
        if sql.startswith("INSERT INTO floor_commits"):
            assert self.state == "floor", self.state
            self.clock.spend(self.phase(3))

    def commit(self) -> None:
        if self.state == "stored":
            self.clock.spend(self.phase(2))
            self.state = "committed"
        else:
            assert self.state == "floor", self.state
            self.state = "idle"

    def close(self) -> None:
        assert self.state == "idle" and next(self.pending, None) is None  # every batch, once


@pytest.fixture
def sqlite_split(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> dict[str, float]:
    """``sqlite_split`` over a ``put`` and a ``put_writes`` batch (three kept rounds), with the
    made-up phases of :data:`SQLITE_PHASES`. The stores are real; only the connection that
    writes the batches is a stand-in."""
    clock = _Clock()
    batches = [("put", object()), ("put_writes", object())]

    def connection(path: str, sync: str, buffered: bool) -> _Connection:
        return _Connection(clock, batches, path, sync, buffered)

    monkeypatch.setattr(bs, "time", clock.module())
    monkeypatch.setattr(sqlite_backend, "_NATIVE", types.SimpleNamespace(Connection=connection))
    monkeypatch.setattr(sqlite_backend, "_store", lambda conn, batch: conn.store(batch))
    return bs.sqlite_split(batches, rounds=3, directory=str(tmp_path))


def test_sqlite_split_takes_each_phase_s_median_of_its_own_batches(
    sqlite_split: dict[str, float],
) -> None:
    expected = {
        # put: BEGIN 1, 2, 30 (the mean would be 11, with the warm-up 16); statements 10, 20,
        # 1; COMMIT 100, 1, 50. Its totals 111, 23 and 81: the median total is 81, not the
        # medians' sum (62).
        "put begin": 2.0,
        "put statements": 10.0,
        "put commit": 50.0,
        "put total": 81.0,
        # put_writes: 4, 5, 6; 40, 3, 50; 5, 6, 700; totals 49, 14, 756 (medians' sum 51).
        "put_writes begin": 5.0,
        "put_writes statements": 40.0,
        "put_writes commit": 6.0,
        "put_writes total": 49.0,
        # The floor after both kinds' batches: 7, 8, 900 and 1, 2, 3 (the mean would be 153.5).
        "floor": 5.0,
    }
    for name, us in list(expected.items()):
        expected[f"{name}, unbuffered"] = us * UNBUFFERED
    assert sqlite_split == pytest.approx(expected)


def test_sqlite_table_prints_the_medians_in_us(sqlite_split: dict[str, float]) -> None:
    assert bs.sqlite_table(sqlite_split) == "\n".join(
        [
            "SQLite, compiled connection: medians in µs per batch",
            "",
            "| call | BEGIN | statements | COMMIT | total |",
            "| --- | ---: | ---: | ---: | ---: |",
            "| `put` | 2.0 | 10.0 | 50.0 | 81.0 |",
            "| `put_writes` | 5.0 | 40.0 | 6.0 | 49.0 |",
            "| `put`, each frame written as SQLite writes it | 6.0 | 30.0 | 150.0 | 243.0 |",
            "| `put_writes`, each frame written as SQLite writes it"
            " | 15.0 | 120.0 | 18.0 | 147.0 |",
            "| a 4-byte row (the floor) |  |  |  | 5.0 |",
            "| a 4-byte row, each frame as SQLite writes it |  |  |  | 15.0 |",
        ]
    )


def test_median_us_is_the_median_in_microseconds() -> None:
    assert bs._median_us([1e-6, 2e-6, 30e-6]) == pytest.approx(2.0)
    assert bs._median_us([1e-6, 2e-6, 4e-6, 30e-6]) == pytest.approx(3.0)
    assert math.isnan(bs._median_us([]))


# -- bench_split, PostgreSQL -------------------------------------------------------------------


@pytest.fixture(scope="module")
def batches() -> list[tuple[str, Any]]:
    return bs.capture(turns=1)


#: Wall and CPU µs (round 1's; see :func:`_cost`) of each variant's statement with its commit.
PG_COSTS = {
    "as stored": (200.0, 30.0),
    "no check": (150.0, 20.0),
    "no flush": (100.0, 25.0),
    "floor": (60.0, 10.0),
    "floor, no flush": (40.0, 8.0),
}


def test_postgres_split_takes_each_variant_s_medians_of_wall_and_cpu(
    batches: list[tuple[str, Any]], pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snapstate.backends import _pg_direct as direct

    clock = _Clock()
    real_run = direct.run
    calls = dict.fromkeys(bs.VARIANTS, 0)

    def variant(conn: Any, stmt: Any) -> str | None:
        """Which variant ``stmt`` belongs to, by its text and the session's flush setting."""
        text = stmt.sql.decode()
        if "floor_commits" in text:
            name = "floor"
        elif "num_nonnulls(" in text:
            name = "no check"
        elif bs._CHECK_CALL.search(text):
            name = "as stored"
        else:
            return None  # not a statement the split times
        (flush,) = conn.execute("SHOW synchronous_commit").fetchone()
        if flush == "off":
            return {"floor": "floor, no flush", "as stored": "no flush"}.get(name, f"{name}, off")
        return name

    def run(conn: Any, stmt: Any, params: Any, *, prepare: bool) -> Any:
        name = variant(conn, stmt)
        if name is not None:
            call, calls[name] = calls[name], calls[name] + 1
            wall, cpu = PG_COSTS[name]
            per_round = len(batches)
            clock.spend(_cost(call, per_round, wall) * 1e-6, _cost(call, per_round, cpu) * 1e-6)
        return real_run(conn, stmt, params, prepare=prepare)

    monkeypatch.setattr(bs, "time", clock.module())
    monkeypatch.setattr(direct, "run", run)
    result = bs.postgres_split(batches, rounds=2, dsn=pg_dsn)
    # Every batch went through the direct path, in every variant and round.
    assert calls == dict.fromkeys(bs.VARIANTS, 3 * len(batches))
    assert result == {
        v: (pytest.approx(wall + 1), pytest.approx(cpu + 1)) for v, (wall, cpu) in PG_COSTS.items()
    }
    assert bs.postgres_table(result).splitlines()[4:] == [
        "| as stored | 201 | 31 |",
        "| no check | 151 | 21 |",
        "| no flush | 101 | 26 |",
        "| floor | 61 | 11 |",
        "| floor, no flush | 41 | 9 |",
    ]


#: CPU µs (round 1's; see :func:`_cost`) of the backend's own work per call kind, converting in
#: one pass and by the general path. Wall time passes ten times as fast: it must not count.
CLIENT_COSTS = {("put", ""): 20.0, ("put", ", general"): 45.0}
CLIENT_COSTS |= {("put_writes", ""): 12.0, ("put_writes", ", general"): 30.0}


def test_client_split_takes_medians_of_each_kind_and_conversion(
    batches: list[tuple[str, Any]], pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snapstate.backends import _pg_direct as direct
    from snapstate.backends import _pg_sql as sql

    clock = _Clock()
    real_run, one_pass, real_op_write = direct.run, sql.direct_write, sql.op_write
    calls = dict.fromkeys(CLIENT_COSTS, 0)
    per_round = {kind: [k for k, _ in batches].count(kind) for kind in bs.KINDS}

    def op_write(q: Any, batch: Any, stored: Any = None) -> Any:
        if direct.run is not real_run:  # not the write that opens the pool
            kind = "put" if batch.checkpoints else "put_writes"
            key = (kind, "" if sql.direct_write is one_pass else ", general")
            call, calls[key] = calls[key], calls[key] + 1
            cpu = _cost(call, per_round[kind], CLIENT_COSTS[key]) * 1e-6
            clock.spend(10 * cpu, cpu)
        return real_op_write(q, batch, stored)

    monkeypatch.setattr(bs, "time", clock.module())
    monkeypatch.setattr(sql, "op_write", op_write)
    result = bs.client_split(batches, rounds=2, dsn=pg_dsn)
    assert calls == {(kind, v): 3 * per_round[kind] for kind, v in CLIENT_COSTS}
    assert result == {f"{kind}{v}": pytest.approx(us + 1) for (kind, v), us in CLIENT_COSTS.items()}
    assert bs.client_table(result).splitlines()[4:] == [
        "| `put` | 21.0 | 46.0 |",
        "| `put_writes` | 13.0 | 31.0 |",
    ]


# -- bench_keyframes ---------------------------------------------------------------------------


class _Compiled:
    """A compiled graph whose ``invoke`` also spends made-up seconds, inside which the saver's
    reads are the graph's own (they spend nothing of their own)."""

    def __init__(self, compiled: Any, clock: _Clock, seconds: float) -> None:
        self.compiled, self.clock, self.seconds = compiled, clock, seconds
        self.inside = False

    def invoke(self, *args: Any, **kwargs: Any) -> Any:
        self.inside = True
        try:
            return self.compiled.invoke(*args, **kwargs)
        finally:
            self.inside = False
            self.clock.spend(self.seconds)


class _Graph:
    """The real graph; compiling it spends a second, which ``thread_costs`` must not time."""

    def __init__(self, graph: Any, clock: _Clock, invoke: float) -> None:
        self.graph, self.clock, self.invoke = graph, clock, invoke
        self.compiled: list[_Compiled] = []

    def compile(self, checkpointer: Any) -> _Compiled:
        self.clock.spend(1.0)
        compiled = self.graph.compile(checkpointer=checkpointer)
        self.compiled.append(_Compiled(compiled, self.clock, self.invoke))
        return self.compiled[-1]

    def inside(self) -> bool:
        return any(c.inside for c in self.compiled)


def test_thread_costs_times_each_part_in_ms(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from snapstate.langgraph import SqliteSaver

    turns = 2
    clock = _Clock()
    graph = _Graph(bk.bench_langgraph.chat_graph(turns), clock, invoke=0.5)
    real_get_tuple, real_list = SqliteSaver.get_tuple, SqliteSaver.list

    def get_tuple(self: Any, config: Any) -> Any:
        tup = real_get_tuple(self, config)
        if not graph.inside():
            clock.spend(0.003)
        return tup

    def listing(self: Any, config: Any, **kwargs: Any) -> Iterator[Any]:
        yield from real_list(self, config, **kwargs)
        if not graph.inside():
            clock.spend(0.05)

    monkeypatch.setattr(bk, "time", clock.module())
    monkeypatch.setattr(SqliteSaver, "get_tuple", get_tuple)
    monkeypatch.setattr(SqliteSaver, "list", listing)
    costs = bk.thread_costs(graph, turns, 4, str(tmp_path))
    (path,) = tmp_path.glob("keyframes-4-*.db")
    assert costs == pytest.approx(
        {
            "step_ms": 500 / (2 * turns),  # the thread's 0.5 s over its 4 steps
            "stored_kb": sqlite_bytes(str(path)) / 1024,
            "full_copies": math.ceil((2 * turns + 1) / 4),  # versions 1 and 5 of 5
            "latest_ms": 3.0,
            "history_ms": 50.0,
        }
    )
    assert costs["stored_kb"] > 0


#: Costs of the kept rounds 1, 2 and 3 of each setting; each column's median comes from a
#: different round than its neighbours', so no one round's costs make the result.
KEYFRAME_ROUNDS = {
    4: {
        "step_ms": (0.2, 0.1, 0.9),
        "stored_kb": (320.0, 300.0, 310.0),
        "full_copies": (11.0, 11.0, 11.0),
        "latest_ms": (5.0, 2.0, 1.0),
        "history_ms": (20.0, 40.0, 30.0),
    },
    0: {
        "step_ms": (0.3, 0.35, 0.32),
        "stored_kb": (900.0, 950.0, 1000.0),
        "full_copies": (41.0, 41.0, 41.0),
        "latest_ms": (0.5, 0.7, 9.0),
        "history_ms": (10.0, 12.0, 11.0),
    },
}


def test_compare_takes_each_setting_s_medians_per_column_without_the_warm_up(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    turns = 3
    runs = dict.fromkeys(KEYFRAME_ROUNDS, 0)

    def thread_costs(graph: Any, t: int, every: int, directory: str) -> dict[str, float]:
        assert t == turns and os.path.dirname(directory) == str(tmp_path)
        r, runs[every] = runs[every], runs[every] + 1
        if r == 0:
            return dict.fromkeys(bk.COLUMNS, WARM_UP)
        return {c: values[r - 1] for c, values in KEYFRAME_ROUNDS[every].items()}

    monkeypatch.setattr(bk, "thread_costs", thread_costs)
    result = bk.compare(turns, every=(4, 0), rounds=3, directory=str(tmp_path))
    assert runs == {4: 4, 0: 4}
    assert list(result) == [4, 0]
    assert result == {
        4: pytest.approx(
            {
                "step_ms": 0.2,  # the mean would be 0.4, with the warm-up 0.55
                "stored_kb": 310.0,
                "full_copies": 11.0,
                "latest_ms": 2.0,
                "history_ms": 30.0,
            }
        ),
        0: pytest.approx(
            {
                "step_ms": 0.32,
                "stored_kb": 950.0,
                "full_copies": 41.0,
                "latest_ms": 0.7,
                "history_ms": 11.0,
            }
        ),
    }


def test_keyframes_table_prints_each_column_in_its_unit() -> None:
    result = {
        32: {
            "step_ms": 0.12345,
            "stored_kb": 1536.4,
            "full_copies": 12.0,
            "latest_ms": 0.456,
            "history_ms": 12.34,
        },
        0: {
            "step_ms": 1.5,
            "stored_kb": 20480.0,
            "full_copies": 301.0,
            "latest_ms": 0.04,
            "history_ms": 250.0,
        },
    }
    assert bk.table(result, 150) == "\n".join(
        [
            "A chat thread of 300 steps, SQLite (medians)",
            "",
            "| `delta_keyframe_every` | ms a step | stored | full copies | latest | history |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
            "| 32 | 0.123 | 1,536 KB | 12 | 0.46 ms | 12.3 ms |",
            "| 0 | 1.500 | 20,480 KB | 301 | 0.04 ms | 250.0 ms |",
        ]
    )
