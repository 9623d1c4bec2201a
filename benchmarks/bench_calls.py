"""What each saver call costs on its own: the chat graph's calls, replayed outside the graph.

A saver's share of a graph's step (``bench_langgraph``, ``bench_postgres``) mixes two things:
what its calls cost, and how LangGraph runs them (in background threads that take turns with
the graph's thread for the GIL). This suite separates the first. It records the ``put`` and
``put_writes`` calls that one thread of the chat graph makes (50 turns: 102 puts and 101
put_writes, each put_writes a node's message and its branch), then replays them on each saver,
one call after another on one thread, and reports per call kind:

* the median wall time of a call, and the median CPU time of the calling thread (the rest of
  the wall time is waiting: for the disk, the server, a lock);
* for SQLite files, how many pages (WAL frames) a call's commit writes: the median growth of
  the ``-wal`` file per call, in pages.

Each round replays the calls on a fresh store (as the graph benchmarks use one), savers
interleaved; round 0 warms up and is dropped. The floors are ``bench_langgraph``'s: the saver
that keeps references (``floor``) and the one that commits a 4-byte row per call
(``floor-committing``, in SQLite or in Postgres).

A second measurement, :func:`stream`, replays the same calls as many graph threads one after
another on one SQLite store, as a busy process writes: commits keep coming for seconds, so the
store's WAL checkpoints happen during the stream and their cost lands on the calls. It reports
the mean, median, 99th percentile and slowest call, and the WAL file's size at the end.

    python -m benchmarks.bench_calls           # SQLite and memory; Postgres when reachable
    python -m benchmarks.bench_calls --stream  # the stream, on both SQLite savers
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import bench_langgraph, bench_postgres
from .bench_langgraph import TURNS, RefSaver, chat_graph, run_thread

__all__ = [
    "SAVERS",
    "POSTGRES",
    "Call",
    "Calls",
    "record",
    "replay",
    "compare",
    "ratios",
    "table",
    "Stream",
    "stream",
    "compare_streams",
    "stream_ratios",
    "stream_table",
    "SaverCalls",
    "SaverStream",
]

#: The savers replayed, by ``bench_langgraph``'s names; ``pg-`` names ``bench_postgres``'s.
SAVERS = (
    "floor",
    "floor-committing",
    "snapstate-memory",
    "langgraph-memory",
    "snapstate-sqlite",
    "langgraph-sqlite",
    "pg-floor-committing",
    "pg-snapstate-postgres",
    "pg-langgraph-postgres",
)
POSTGRES = tuple(n for n in SAVERS if n.startswith("pg-"))
#: (ratio name, ours, LangGraph's): LangGraph's time per step (a put and a put_writes) over ours.
PAIRS = (
    ("memory", "snapstate-memory", "langgraph-memory"),
    ("sqlite", "snapstate-sqlite", "langgraph-sqlite"),
    ("postgres", "pg-snapstate-postgres", "pg-langgraph-postgres"),
)
KINDS = ("put", "put_writes")


@dataclass(frozen=True)
class Call:
    """One recorded call: its kind and its arguments after the config."""

    kind: str
    config: dict[str, Any]
    args: tuple[Any, ...]


class _Recorder(RefSaver):
    """The floor saver, also keeping every ``put`` and ``put_writes`` call it receives.

    LangGraph hands ``put`` a copy of its checkpoint and never changes a value it has handed
    over (a channel's new value is a new object), so the arguments are kept as they are: the
    replay then sees the same objects a saver sees in the graph, from one step to the next.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []

    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        self.calls.append(Call("put", config, (checkpoint, metadata, dict(new_versions))))
        return super().put(config, checkpoint, metadata, new_versions)

    def put_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        self.calls.append(Call("put_writes", config, (list(writes), task_id, task_path)))
        super().put_writes(config, writes, task_id, task_path)


def record(turns: int = TURNS) -> list[Call]:
    """The calls one thread of the chat graph makes (``durability="sync"``, so in order up to
    Python 3.12; from 3.13 LangGraph's put and put_writes calls, made from different threads,
    may interleave differently from one recording to the next)."""
    recorder = _Recorder()
    run_thread(chat_graph(turns).compile(checkpointer=recorder), durability="sync")
    return recorder.calls


def _with_thread(config: dict[str, Any], thread_id: str) -> dict[str, Any]:
    return {**config, "configurable": {**config["configurable"], "thread_id": thread_id}}


@dataclass
class Calls:
    """Per call kind: wall seconds, CPU seconds of the calling thread, WAL pages written."""

    wall: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    pages: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})

    def extend(self, other: Calls) -> None:
        for mine, theirs in (
            (self.wall, other.wall),
            (self.cpu, other.cpu),
            (self.pages, other.pages),
        ):
            for kind in KINDS:
                mine[kind].extend(theirs[kind])

    def median(self, what: str, kind: str) -> float:
        """The median of ``what`` ("wall", "cpu" or "pages") for calls of ``kind``."""
        values = getattr(self, what)[kind]
        return statistics.median(values) if values else float("nan")

    def median_us(self, what: str, kind: str) -> float:
        return self.median(what, kind) * 1e6

    def step_us(self) -> float:
        """A put and a put_writes: the chat graph's calls per step."""
        return sum(self.median_us("wall", k) for k in KINDS)


#: A WAL file starts with a 32-byte header; each frame is a 24-byte header and a page.
_WAL_HEADER = 32
_FRAME_HEADER = 24


def _wal_size(wal: str | None) -> int:
    return os.path.getsize(wal) if wal is not None and os.path.exists(wal) else 0


def _wal_page_size(wal: str) -> int:
    """The page size a WAL file's header records."""
    with open(wal, "rb") as f:
        return int.from_bytes(f.read(_WAL_HEADER)[8:12], "big")


def replay(saver: Any, calls: Sequence[Call], thread_id: str, wal: str | None = None) -> Calls:
    """Run ``calls`` on ``saver`` as thread ``thread_id``, timing each; ``wal``: the SQLite
    WAL file whose growth per call is counted in frames (pages)."""
    out = Calls()
    configs = [_with_thread(c.config, thread_id) for c in calls]
    frame = 0
    for call, config in zip(calls, configs):
        method = saver.put if call.kind == "put" else saver.put_writes
        before = _wal_size(wal)
        cpu = time.thread_time()
        start = time.perf_counter()
        method(config, *call.args)
        wall = time.perf_counter() - start
        out.cpu[call.kind].append(time.thread_time() - cpu)
        out.wall[call.kind].append(wall)
        after = _wal_size(wal)
        # No growth: the WAL started over after a checkpoint (its frames then overwrite the
        # file's first ones), or nothing was written.
        if wal is not None and after > max(before, _WAL_HEADER):
            frame = frame or _wal_page_size(wal) + _FRAME_HEADER
            out.pages[call.kind].append((after - max(before, _WAL_HEADER)) / frame)
    return out


@contextlib.contextmanager
def _open(name: str, directory: str, dsn: str) -> Iterator[tuple[Any, str | None]]:
    """A fresh saver by name, and the WAL file of its SQLite store (None: not SQLite)."""
    if name.startswith("pg-"):
        with bench_postgres.open_saver(name[3:], dsn) as saver:
            yield saver, None
        return
    with bench_langgraph.open_saver(name, directory) as saver:
        path = os.path.join(directory, f"{name}.db")
        yield saver, (path + "-wal" if os.path.exists(path) else None)


def compare(
    names: Sequence[str] | None = None,
    *,
    rounds: int = 5,
    turns: int = TURNS,
    dsn: str = bench_postgres.DSN,
) -> dict[str, Calls]:
    """Each saver's calls over ``rounds`` replays (savers interleaved, round 0 dropped). By
    default every saver, the Postgres ones (on ``dsn``) only when the server can be reached."""
    if names is None:
        reachable = bench_postgres.server_available(dsn)
        names = [n for n in SAVERS if n not in POSTGRES or reachable]
    calls = record(turns)
    out = {n: Calls() for n in names}
    with tempfile.TemporaryDirectory() as directory:
        for r in range(rounds + 1):
            for name in names:
                where = os.path.join(directory, f"r{r}")
                os.makedirs(where, exist_ok=True)
                with _open(name, where, dsn) as (saver, wal):
                    measured = replay(saver, calls, f"replay-{r}", wal)
                if r:
                    out[name].extend(measured)
    return out


def ratios(result: dict[str, Calls]) -> dict[str, float]:
    """LangGraph's time per step (a put and a put_writes, medians) over ours, per pair."""
    return {
        f"{label}_calls_ratio": result[anchor].step_us() / result[ours].step_us()
        for label, ours, anchor in PAIRS
        if ours in result and anchor in result
    }


def _pages(c: Calls, kind: str) -> str:
    return f"{c.median('pages', kind):.1f}" if c.pages[kind] else "-"


def table(result: dict[str, Calls]) -> str:
    lines = [
        f"the chat graph's calls ({TURNS} turns), replayed one after another on one thread; "
        "medians in µs (CPU: the calling thread's); pages: WAL frames a commit writes",
        "",
        f"{'saver':24s} {'put':>8s} {'CPU':>7s} {'writes':>8s} {'CPU':>7s} {'per step':>9s}"
        f" {'pages/put':>10s} {'pages/writes':>13s}",
    ]
    for name, c in result.items():
        lines.append(
            f"{name:24s} {c.median_us('wall', 'put'):8.1f} {c.median_us('cpu', 'put'):7.1f}"
            f" {c.median_us('wall', 'put_writes'):8.1f} {c.median_us('cpu', 'put_writes'):7.1f}"
            f" {c.step_us():9.1f} {_pages(c, 'put'):>10s} {_pages(c, 'put_writes'):>13s}"
        )
    lines.append("")
    lines += [
        f"{k}: {v:.2f}x (LangGraph's per step / snapstate's)" for k, v in ratios(result).items()
    ]
    return "\n".join(lines)


#: Graph threads :func:`stream` replays one after another on one store (about 4000 calls).
STREAM_THREADS = 20
#: The savers :func:`compare_streams` runs by default.
STREAM_SAVERS = ("snapstate-sqlite", "langgraph-sqlite")


@dataclass
class Stream:
    """Every call of a stream: wall seconds per call, the whole stream's seconds, and the
    bytes of the store's WAL file at its end."""

    wall: list[float] = field(default_factory=list)
    seconds: float = 0.0
    wal_bytes: int = 0

    def extend(self, other: Stream) -> None:
        """Add another stream's calls and time; the WAL: the larger of the two."""
        self.wall.extend(other.wall)
        self.seconds += other.seconds
        self.wal_bytes = max(self.wal_bytes, other.wal_bytes)

    def mean_us(self) -> float:
        """The stream's time per call: what the calls cost together, stalls included."""
        return self.seconds / len(self.wall) * 1e6

    def quantile_us(self, q: float) -> float:
        """The ``q`` quantile (0 to 1) of one call's wall time."""
        ordered = sorted(self.wall)
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1e6


def stream(
    name: str, calls: Sequence[Call], directory: str, threads: int = STREAM_THREADS
) -> Stream:
    """Replay ``calls`` as ``threads`` graph threads, one after another, on one fresh SQLite
    store of saver ``name`` (``bench_langgraph``'s names) in ``directory``."""
    out = Stream()
    with _open(name, directory, "") as (saver, wal):
        start = time.perf_counter()
        for i in range(threads):
            measured = replay(saver, calls, f"stream-{i}")
            for kind in KINDS:
                out.wall.extend(measured.wall[kind])
        out.seconds = time.perf_counter() - start
        out.wal_bytes = _wal_size(wal)
    return out


def compare_streams(
    names: Sequence[str] = STREAM_SAVERS,
    *,
    rounds: int = 1,
    threads: int = STREAM_THREADS,
    turns: int = TURNS,
) -> dict[str, Stream]:
    """Each saver's stream, ``rounds`` times (savers interleaved; each round a fresh store;
    every round counts: a stream warms up within its first thread)."""
    calls = record(turns)
    out = {n: Stream() for n in names}
    with tempfile.TemporaryDirectory() as directory:
        for r in range(rounds):
            for name in names:
                where = os.path.join(directory, f"s{r}-{name}")
                os.makedirs(where)
                out[name].extend(stream(name, calls, where, threads))
    return out


def stream_ratios(result: dict[str, Stream]) -> dict[str, float]:
    """LangGraph's mean time per call over ours, for the SQLite savers that ran."""
    if not {"snapstate-sqlite", "langgraph-sqlite"} <= result.keys():
        return {}
    ours, theirs = result["snapstate-sqlite"], result["langgraph-sqlite"]
    return {"sqlite_stream_mean_ratio": theirs.mean_us() / ours.mean_us()}


def stream_table(result: dict[str, Stream], threads: int = STREAM_THREADS) -> str:
    lines = [
        f"{threads} chat graph threads' calls replayed one after another on one SQLite store;"
        " µs per call; WAL: the file's size at the end",
        "",
        f"{'saver':20s} {'calls':>6s} {'mean':>8s} {'median':>8s} {'p99':>8s} {'slowest':>9s}"
        f" {'WAL MB':>7s}",
    ]
    for name, s in result.items():
        lines.append(
            f"{name:20s} {len(s.wall):6d} {s.mean_us():8.1f} {s.quantile_us(0.5):8.1f}"
            f" {s.quantile_us(0.99):8.1f} {s.quantile_us(1.0):9.1f} {s.wal_bytes / 1e6:7.1f}"
        )
    return "\n".join(lines)


class SaverCalls:
    """ASV: the replayed chat calls, LangGraph's time per step over ours (higher is better),
    and our time per step in µs."""

    timeout = 600

    def setup_cache(self) -> dict[str, float]:
        result = compare(rounds=3)
        out = ratios(result)
        for name in ("snapstate-memory", "snapstate-sqlite", "pg-snapstate-postgres"):
            if name in result:
                out[name] = result[name].step_us()
        return out

    def _get(self, values: dict[str, float], key: str) -> float:
        if key not in values:
            raise NotImplementedError(f"{key} was not measured (no PostgreSQL server?)")
        return values[key]

    def track_memory_calls_ratio(self, values: dict[str, float]) -> float:
        return self._get(values, "memory_calls_ratio")

    def track_sqlite_calls_ratio(self, values: dict[str, float]) -> float:
        return self._get(values, "sqlite_calls_ratio")

    def track_postgres_calls_ratio(self, values: dict[str, float]) -> float:
        return self._get(values, "postgres_calls_ratio")

    def track_sqlite_step_us(self, values: dict[str, float]) -> float:
        return self._get(values, "snapstate-sqlite")

    def track_postgres_step_us(self, values: dict[str, float]) -> float:
        return self._get(values, "pg-snapstate-postgres")

    track_memory_calls_ratio.unit = "x"  # type: ignore[attr-defined]
    track_sqlite_calls_ratio.unit = "x"  # type: ignore[attr-defined]
    track_postgres_calls_ratio.unit = "x"  # type: ignore[attr-defined]
    track_sqlite_step_us.unit = "us"  # type: ignore[attr-defined]
    track_postgres_step_us.unit = "us"  # type: ignore[attr-defined]


class SaverStream:
    """ASV: 20 chat threads' calls on one SQLite store (:func:`compare_streams`): LangGraph's
    mean time per call over ours (higher is better), and our mean and 99th percentile in µs."""

    timeout = 600

    def setup_cache(self) -> dict[str, float]:
        result = compare_streams()
        ours = result["snapstate-sqlite"]
        return {
            "ratio": stream_ratios(result)["sqlite_stream_mean_ratio"],
            "mean": ours.mean_us(),
            "p99": ours.quantile_us(0.99),
        }

    def track_sqlite_stream_mean_ratio(self, values: dict[str, float]) -> float:
        return values["ratio"]

    def track_sqlite_stream_mean_us(self, values: dict[str, float]) -> float:
        return values["mean"]

    def track_sqlite_stream_p99_us(self, values: dict[str, float]) -> float:
        return values["p99"]

    track_sqlite_stream_mean_ratio.unit = "x"  # type: ignore[attr-defined]
    track_sqlite_stream_mean_us.unit = "us"  # type: ignore[attr-defined]
    track_sqlite_stream_p99_us.unit = "us"  # type: ignore[attr-defined]


def main(argv: Sequence[str] = ()) -> None:
    if "--stream" in argv:
        print(stream_table(compare_streams()))
        return
    print(table(compare()))


if __name__ == "__main__":
    main(sys.argv[1:])
