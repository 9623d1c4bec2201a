"""A LangGraph chat graph on each saver: what a checkpoint costs per step, end to end.

The graph alternates a ``human`` node and an ``ai`` node over ``MessagesState``; each appends
one LangChain message of 500 to 2000 characters (``datagen.langchain_messages``). A thread is
one ``invoke`` of 50 turns: 100 steps (supersteps), each saving a checkpoint.

*Per-step overhead* is the time per step with a saver minus the time per step with no
checkpointer. Part of it is LangGraph's own bookkeeping for any saver (building checkpoints,
versions, pending writes); :class:`RefSaver` measures that floor: it keeps references and
encodes nothing. A saver's *share* is its overhead minus the floor's. :class:`BlockingRefSaver`
is the floor waiting once per call, as any saver that returns only once its data is stored
must: its share bounds from below the share of every such saver (see :func:`ceilings`).
:class:`CommittingRefSaver` is the floor committing one 4-byte row per call in the store a
saver writes to: its share bounds from below the share of every saver that commits each call
there, and what a real saver pays above it is the cost of the rows it writes.

Used by ASV (the classes below), by ``test_bench_langgraph.py`` (pytest-benchmark, ``make
bench``) and by ``python -m snapstate.demo`` (a smaller version of the same comparison).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
)
from langgraph.graph import END, START, MessagesState, StateGraph

from . import datagen

__all__ = [
    "TURNS",
    "RefSaver",
    "BlockingRefSaver",
    "CommittingRefSaver",
    "SqliteCommittingSaver",
    "SAVERS",
    "PAIRS",
    "StepClock",
    "compare_chat_on",
    "chat_graph",
    "open_saver",
    "info_prefix",
    "run_thread",
    "compare",
    "Comparison",
    "interleaved",
    "cpu_and_seconds",
    "medians",
    "BLOCKING_FLOOR",
    "COMMITTING_FLOOR",
    "CEILING",
    "COMMIT_CEILING",
    "ceilings",
    "share_over",
    "drain",
    "timed_runs",
    "delta_thread",
    "delta_history",
]

#: Turns per thread (two steps each), as the targets are stated.
TURNS = 50

# -- the floor: a saver that keeps references --------------------------------------------------


class RefSaver(BaseCheckpointSaver[str]):
    """Keeps what it is given by reference and encodes nothing: LangGraph's own cost floor.

    Complete enough for a graph to run, resume and read its history; not a real saver (values
    are shared with the running graph, nothing survives the process).
    """

    def __init__(self) -> None:
        super().__init__()
        # (thread, ns) -> checkpoint id -> (checkpoint, metadata, parent id)
        self.checkpoints: dict[tuple[str, str], dict[str, tuple[Any, Any, str | None]]] = {}
        self.writes: dict[tuple[str, str, str], dict[tuple[str, int], tuple[str, str, Any]]] = {}

    def get_next_version(self, current: Any, channel: None) -> str:
        n = 0 if current is None else int(str(current).split(".")[0])
        return f"{n + 1:032}.{random.random():016}"

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        conf = config["configurable"]
        key = (str(conf["thread_id"]), conf.get("checkpoint_ns", ""))
        self.checkpoints.setdefault(key, {})[checkpoint["id"]] = (
            checkpoint,
            metadata,
            conf.get("checkpoint_id"),
        )
        return {
            "configurable": {
                "thread_id": conf["thread_id"],
                "checkpoint_ns": key[1],
                "checkpoint_id": checkpoint["id"],
            }
        }

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        conf = config["configurable"]
        key = (str(conf["thread_id"]), conf.get("checkpoint_ns", ""), conf["checkpoint_id"])
        stored = self.writes.setdefault(key, {})
        for i, (channel, value) in enumerate(writes):
            stored.setdefault((task_id, i), (task_id, channel, value))

    def _tuple(self, key: tuple[str, str], cid: str) -> CheckpointTuple:
        checkpoint, metadata, parent = self.checkpoints[key][cid]

        def cfg(i: str) -> RunnableConfig:
            return {
                "configurable": {"thread_id": key[0], "checkpoint_ns": key[1], "checkpoint_id": i}
            }

        return CheckpointTuple(
            cfg(cid),
            checkpoint,
            metadata,
            cfg(parent) if parent else None,
            list(self.writes.get((*key, cid), {}).values()),
        )

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        conf = config["configurable"]
        key = (str(conf["thread_id"]), conf.get("checkpoint_ns", ""))
        stored = self.checkpoints.get(key)
        if not stored:
            return None
        cid = get_checkpoint_id(config) or max(stored)
        return self._tuple(key, cid) if cid in stored else None

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        assert config is not None
        conf = config["configurable"]
        key = (str(conf["thread_id"]), conf.get("checkpoint_ns", ""))
        ids = sorted(self.checkpoints.get(key, {}), reverse=True)
        if before is not None:
            ids = [i for i in ids if i < before["configurable"]["checkpoint_id"]]
        for cid in ids[:limit]:
            yield self._tuple(key, cid)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.get_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for t in self.list(config, filter=filter, before=before, limit=limit):
            yield t

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self.put_writes(config, writes, task_id, task_path)


class BlockingRefSaver(RefSaver):
    """:class:`RefSaver` that waits once in every ``put`` and ``put_writes``.

    A saver whose calls return only once their data is stored waits at least once per call
    for its store (a database round trip, a file write, a lock), and every such wait gives up
    the GIL, which the busy graph thread then holds. ``time.sleep(0)`` is the shortest wait
    there is, so this saver's share is the least any such saver pays in the same graph, and an
    anchor's share over it is the best share ratio such a saver could show against that anchor.
    """

    def put(self, *args: Any, **kwargs: Any) -> RunnableConfig:
        time.sleep(0)
        return super().put(*args, **kwargs)

    def put_writes(self, *args: Any, **kwargs: Any) -> None:
        time.sleep(0)
        super().put_writes(*args, **kwargs)


class CommittingRefSaver(RefSaver):
    """:class:`RefSaver` that commits one 4-byte row in every ``put`` and ``put_writes``.

    A ``sync`` saver returns from each call only after its transaction commits, so it pays at
    least one commit per call in its store (LangGraph chains each ``put`` after the previous
    one, so puts cannot share a commit). This saver pays exactly that and stores nothing else:
    its share bounds from below the share of every saver that commits each call in the same
    store, and an anchor's share over it is the best share ratio such a saver could show. The
    rest of a real saver's share is the cost of the rows it writes.
    """

    #: Rows committed so far: one per call.
    commits: int

    def __init__(self) -> None:
        super().__init__()
        self.commits = 0

    def _commit(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Close the store."""

    def put(self, *args: Any, **kwargs: Any) -> RunnableConfig:
        self._commit()
        return super().put(*args, **kwargs)

    def put_writes(self, *args: Any, **kwargs: Any) -> None:
        self._commit()
        super().put_writes(*args, **kwargs)


class SqliteCommittingSaver(CommittingRefSaver):
    """:class:`CommittingRefSaver` on a SQLite file, set up as snapstate's SQLite backend sets
    its own up (WAL, ``synchronous=NORMAL``): one autocommit ``INSERT`` per call, behind a lock
    (SQLite runs one writer at a time)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS floor_commits (x INTEGER NOT NULL)")

    def _commit(self) -> None:
        with self._lock:
            self._conn.execute("INSERT INTO floor_commits VALUES (1)")
            self.commits += 1

    def close(self) -> None:
        self._conn.close()


# -- the graph -----------------------------------------------------------------------------------


_CONVERSATIONS: dict[tuple[int, int], list[Any]] = {}


def conversation(turns: int = TURNS, seed: int = 0) -> list[Any]:
    """``2 * turns`` LangChain messages, human and AI alternating (cached per process)."""
    key = (turns, seed)
    if key not in _CONVERSATIONS:
        _CONVERSATIONS[key] = datagen.langchain_messages(2 * turns, seed=seed)
    return _CONVERSATIONS[key]


class StepClock:
    """When a thread's last node returned, and when its ``invoke`` did.

    With LangGraph's ``durability="async"`` a saver's calls run in background threads while
    the graph goes on, and ``invoke`` waits for those still queued before it returns. The
    *tail* is that wait: from the return of the last node to the return of ``invoke``.
    """

    def __init__(self) -> None:
        #: Node calls so far.
        self.nodes = 0
        self.last_node = 0.0
        self.returned = 0.0

    def node_done(self) -> None:
        self.nodes += 1
        self.last_node = time.perf_counter()

    @property
    def tail(self) -> float:
        """Seconds from the last node's return to ``invoke``'s (see :func:`run_thread`)."""
        return self.returned - self.last_node


def chat_graph(turns: int = TURNS, seed: int = 0, clock: StepClock | None = None) -> StateGraph:
    """``human`` and ``ai`` nodes taking turns until the conversation has ``turns`` turns.

    Each node appends the next message of a fixed conversation (a deterministic stand-in for
    a user and a model), so every saver sees exactly the same state. Each node tells
    ``clock`` when it returns.
    """
    messages = conversation(turns, seed)
    total = len(messages)

    def turn(state: MessagesState) -> dict[str, Any]:
        out = {"messages": [messages[len(state["messages"])]]}
        if clock is not None:
            clock.node_done()
        return out

    b = StateGraph(MessagesState)
    b.add_node("human", turn)
    b.add_node("ai", turn)
    b.add_edge(START, "human")
    b.add_edge("human", "ai")
    b.add_conditional_edges("ai", lambda s: END if len(s["messages"]) >= total else "human")
    return b


# -- savers --------------------------------------------------------------------------------------

#: name -> (role for the ratio tables, description)
SAVERS: dict[str, tuple[str, str]] = {
    "none": ("limit", "no checkpointer"),
    "floor": ("limit", "RefSaver: references, no encoding"),
    "floor-blocking": ("limit", "BlockingRefSaver: the floor, waiting once per call"),
    "floor-committing": ("limit", "SqliteCommittingSaver: the floor, one SQLite commit per call"),
    "snapstate-memory": ("ours", "snapstate.langgraph.InMemorySaver"),
    "langgraph-memory": ("anchor", "langgraph.checkpoint.memory.InMemorySaver"),
    "snapstate-sqlite": ("ours", "snapstate.langgraph.SqliteSaver"),
    "snapstate-sqlite-batched": ("ours", 'snapstate.langgraph.SqliteSaver(durability="batched")'),
    # A batched saver may still hold the thread's last checkpoints when ``invoke`` returns;
    # this one is timed until they are committed too (its ``flush()``).
    "snapstate-sqlite-batched-drained": ("ours", "the same, timed until its queue is committed"),
    "langgraph-sqlite": ("anchor", "langgraph.checkpoint.sqlite.SqliteSaver"),
}


def info_prefix(name: str) -> str:
    """A saver's name as the prefix of its keys in a benchmark's ``extra_info``
    (``snapstate-sqlite`` -> ``ours_sqlite``)."""
    return name.replace("snapstate", "ours").replace("langgraph", "lg").replace("-", "_")


#: The limit whose share no saver that waits for its store in every call can go below.
BLOCKING_FLOOR = "floor-blocking"
#: The limit whose share no saver that commits every call in the same store can go below.
COMMITTING_FLOOR = "floor-committing"

#: (name of the ratio, our saver, LangGraph's) for the ratios the targets are stated in.
PAIRS = (
    ("sqlite", "snapstate-sqlite", "langgraph-sqlite"),
    ("sqlite_batched", "snapstate-sqlite-batched", "langgraph-sqlite"),
    ("sqlite_batched_drained", "snapstate-sqlite-batched-drained", "langgraph-sqlite"),
    ("memory", "snapstate-memory", "langgraph-memory"),
)

#: (name, LangGraph's saver) for the ceilings: an anchor's share over each floor's.
CEILINGS = (("sqlite", "langgraph-sqlite"),)


@contextlib.contextmanager
def open_saver(name: str, directory: str | None = None) -> Iterator[Any]:
    """A fresh saver by name (None for "none"), its store in ``directory`` (a temp dir)."""
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory())
        os.makedirs(directory, exist_ok=True)
        if name == "none":
            yield None
        elif name == "floor":
            yield RefSaver()
        elif name == BLOCKING_FLOOR:
            yield BlockingRefSaver()
        elif name == COMMITTING_FLOOR:
            floor = SqliteCommittingSaver(os.path.join(directory, f"{name}.db"))
            stack.callback(floor.close)
            yield floor
        elif name == "snapstate-memory":
            from snapstate.langgraph import InMemorySaver

            yield InMemorySaver()
        elif name == "langgraph-memory":
            from langgraph.checkpoint.memory import InMemorySaver as Upstream

            yield Upstream()
        elif name.startswith(("snapstate-sqlite", "langgraph-sqlite")):
            # Exactly what each library's documentation shows: a connection, then the saver.
            conn = sqlite3.connect(os.path.join(directory, f"{name}.db"), check_same_thread=False)
            stack.callback(conn.close)
            if name.startswith("snapstate"):
                from snapstate.langgraph import SqliteSaver

                options = {"durability": "batched"} if "batched" in name else {}
                saver: Any = SqliteSaver(conn, **options)
                stack.callback(saver.close)
            else:
                from langgraph.checkpoint.sqlite import SqliteSaver as UpstreamSqlite

                saver = UpstreamSqlite(conn)
            saver.setup()
            yield saver
        else:
            raise ValueError(f"unknown saver {name!r}")


def run_thread(graph: Any, *, durability: str = "async", clock: StepClock | None = None) -> float:
    """Seconds for one thread: a single ``invoke`` that runs every turn. ``clock`` (the one
    the graph's nodes tell) learns when ``invoke`` returned."""
    cfg: dict[str, Any] = {
        "configurable": {"thread_id": str(uuid.uuid4())},
        "recursion_limit": 10_000,
    }
    kwargs = {} if graph.checkpointer is None else {"durability": durability}
    start = time.perf_counter()
    graph.invoke({"messages": []}, cfg, **kwargs)
    end = time.perf_counter()
    if clock is not None:
        clock.returned = end
    return end - start


#: Names of savers timed until their queue is committed.
DRAINED = "-drained"


def drain(name: str, saver: Any) -> float:
    """Seconds a ``-drained`` saver takes to commit what it still holds after a thread (its
    ``flush()``); 0 for any other saver."""
    if not name.endswith(DRAINED):
        return 0.0
    start = time.perf_counter()
    saver.flush()
    return time.perf_counter() - start


def timed_runs(names: Sequence[str]) -> list[str]:
    """The savers a run of their own can time (a ``-drained`` saver needs :func:`drain`)."""
    return [n for n in names if not n.endswith(DRAINED)]


@dataclass
class Comparison:
    """Medians of interleaved runs, and what follows from them."""

    turns: int
    durability: str
    seconds: dict[str, float]  # name -> median seconds per thread
    #: name -> median CPU seconds per thread of the thread that ran the graph: what the saver
    #: adds to it is work done on the graph's thread; the rest of its overhead is waiting.
    graph_cpu: dict[str, float] = field(default_factory=dict)
    #: name -> median seconds per thread from the last node's return to ``invoke``'s
    #: (:class:`StepClock`): the saver's calls LangGraph still had queued when the graph was done.
    tail: dict[str, float] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return 2 * self.turns

    def per_step_ms(self, name: str) -> float:
        return self.seconds[name] / self.steps * 1e3

    def graph_cpu_ms(self, name: str) -> float:
        """CPU time per step of the graph's own thread."""
        return self.graph_cpu[name] / self.steps * 1e3

    def tail_ms(self, name: str) -> float:
        """The thread's tail (:class:`StepClock`) per step."""
        return self.tail[name] / self.steps * 1e3

    def overhead_ms(self, name: str) -> float:
        """Per-step time with this saver minus per-step time with no checkpointer."""
        return self.per_step_ms(name) - self.per_step_ms("none")

    def share_ms(self, name: str) -> float:
        """The saver's own part: its overhead minus the floor's (LangGraph's bookkeeping)."""
        return self.overhead_ms(name) - self.overhead_ms("floor")

    def ratios(
        self,
        pairs: Sequence[tuple[str, str, str]] = PAIRS,
        anchors: Sequence[tuple[str, str]] = CEILINGS,
    ) -> dict[str, float]:
        """LangGraph's share and overhead over ours for each of ``pairs`` that ran, and the
        ceilings (:func:`ceilings`) of ``anchors``.

        A share or overhead ratio whose divisor, our share or overhead, came out under
        :data:`MIN_FLOOR_SHARE_MS` is NaN (:func:`share_over`): that run measured none for our
        saver.
        """
        out: dict[str, float] = {}
        for label, ours, theirs in pairs:
            if ours in self.seconds and theirs in self.seconds:
                out[f"{label}_share_ratio"] = share_over(self.share_ms(theirs), self.share_ms(ours))
                out[f"{label}_overhead_ratio"] = share_over(
                    self.overhead_ms(theirs), self.overhead_ms(ours)
                )
        out.update(ceilings(self, anchors))
        return out

    def table(self) -> str:
        header = f"{'saver':<34} {'ms/step':>9} {'overhead':>9} {'share':>9} {'graph CPU':>9}"
        lines = [
            f"chat graph: {self.turns} turns ({self.steps} steps) per thread, "
            f"durability={self.durability!r}; medians of interleaved runs",
            "",
            header + (f" {'tail':>9}" if self.tail else ""),
        ]
        for name in self.seconds:
            overhead = "" if name == "none" else f"{self.overhead_ms(name):9.3f}"
            share = "" if name in ("none", "floor") else f"{self.share_ms(name):9.3f}"
            cpu = f"{self.graph_cpu_ms(name):9.3f}" if name in self.graph_cpu else ""
            row = f"{name:<34} {self.per_step_ms(name):9.3f} {overhead:>9} {share:>9} {cpu:>9}"
            if name in self.tail:
                row += f" {self.tail_ms(name):9.3f}"
            lines.append(row.rstrip())
        if self.tail:
            lines += [
                "",
                "tail: per step, from the last node's return to invoke's: the wait for the "
                "saver's calls still queued",
            ]
        lines.append("")
        for key, value in self.ratios().items():
            whose = next((w for _, suffix, w in FLOORS if key.endswith(suffix)), "snapstate's")
            if math.isnan(value):
                under = f"{MIN_FLOOR_SHARE_MS} ms a step"
                what = "overhead" if "_overhead_" in key else "share"
                lines.append(f"{key}: none ({whose} {what} was under {under})")
            else:
                lines.append(f"{key}: {value:.1f}x (LangGraph's / {whose})")
        return "\n".join(lines)


#: Suffix of the names of the ceilings the blocking floor gives.
CEILING = "_share_ceiling"
#: Suffix of the names of the ceilings the committing floor gives.
COMMIT_CEILING = "_commit_ceiling"

#: The smallest share (ms per step) a ratio divides by: a floor's for a ceiling, ours for a share
#: ratio. Shares are differences of medians of runs that each move by tens of microseconds a step
#: on a shared machine; a share under this (0.000 ms was seen for a floor, -0.023 ms for ours)
#: measured nothing, and dividing by it gives nonsense.
MIN_FLOOR_SHARE_MS = 0.01


def share_over(share: float, divisor: float) -> float:
    """``share`` over ``divisor`` (both ms a step); NaN when ``divisor`` is under
    :data:`MIN_FLOOR_SHARE_MS`, a share that measured nothing (the quotient would be negative or
    arbitrarily large)."""
    return share / divisor if divisor >= MIN_FLOOR_SHARE_MS else math.nan


#: Each limit that bounds a saver's share from below, the suffix of the ceilings it gives, and
#: how the ratio tables name it.
FLOORS = (
    (BLOCKING_FLOOR, CEILING, "the blocking floor's"),
    (COMMITTING_FLOOR, COMMIT_CEILING, "the committing floor's"),
)


def ceilings(comparison: Comparison, anchors: Sequence[tuple[str, str]]) -> dict[str, float]:
    """Each anchor's share over each floor's that ran: the best share ratio a saver bounded by
    that floor could reach against the anchor in this run.

    ``..._share_ceiling`` divides by :class:`BlockingRefSaver`'s share and bounds every saver
    that waits for its store in every call (a ``sync`` saver is one; a batched or in-memory one
    is not). ``..._commit_ceiling`` divides by a :class:`CommittingRefSaver`'s share and bounds
    every saver that commits each call in that store.

    A floor's share is a difference of medians, so on a noisy machine it can come out near or
    below zero; under :data:`MIN_FLOOR_SHARE_MS` the run bounds nothing and that ceiling is NaN.
    """
    out: dict[str, float] = {}
    for floor_name, suffix, _ in FLOORS:
        if floor_name not in comparison.seconds:
            continue
        floor = comparison.share_ms(floor_name)
        for label, theirs in anchors:
            if theirs in comparison.seconds:
                out[f"{label}{suffix}"] = share_over(comparison.share_ms(theirs), floor)
    return out


def compare(
    names: Sequence[str] = tuple(SAVERS),
    *,
    turns: int = TURNS,
    rounds: int = 7,
    durability: str = "async",
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Run one thread per saver per round, savers interleaved, and take medians.

    Interleaving spreads drifts of a shared machine over every saver alike. The first round
    is a warm-up (imports, caches) and is dropped.
    """
    with tempfile.TemporaryDirectory() as directory:
        return compare_chat_on(
            names,
            lambda name, r: open_saver(name, os.path.join(directory, f"{name}-{r}")),
            turns=turns,
            rounds=rounds,
            durability=durability,
            progress=progress,
        )


def compare_chat_on(
    names: Sequence[str],
    open_one: Callable[[str, int], contextlib.AbstractContextManager[Any]],
    *,
    turns: int,
    rounds: int,
    durability: str,
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """The chat graph on each saver ``open_one(name, round)`` opens, interleaved
    (:func:`interleaved`), with each saver's tail (:class:`StepClock`)."""
    clock = StepClock()
    seconds, cpu, tail = interleaved(
        names,
        chat_graph(turns, clock=clock),
        lambda graph: run_thread(graph, durability=durability, clock=clock),
        open_one,
        rounds,
        progress,
        clock,
    )
    return Comparison(turns, durability, seconds, cpu, tail)


def interleaved(
    names: Sequence[str],
    graph_builder: StateGraph,
    run: Callable[[Any], float],
    open_one: Callable[[str, int], contextlib.AbstractContextManager[Any]],
    rounds: int,
    progress: Callable[[str], None] | None = None,
    clock: StepClock | None = None,
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Median seconds per ``run`` of the graph on each saver (``open_one(name, round)``),
    median CPU seconds of the graph's thread per run, and, given the ``clock`` the graph and
    ``run`` tell, the median tail per run (else no tails); a ``-drained`` saver's
    :func:`drain` counts in its seconds. Round 0 warms up (imports, caches) and is dropped."""
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    tails: dict[str, list[float]] = {n: [] for n in names} if clock is not None else {}
    for r in range(rounds + 1):
        for name in names:
            with open_one(name, r) as saver:
                graph = graph_builder.compile(checkpointer=saver)
                c, t = cpu_and_seconds(run, graph)
                t += drain(name, saver)
            if r:
                times[name].append(t)
                cpu[name].append(c)
                if clock is not None:
                    tails[name].append(clock.tail)
        if progress is not None:
            progress(f"round {r}/{rounds}")
    return medians(times), medians(cpu), medians(tails)


def cpu_and_seconds(run: Callable[..., float], *args: Any, **kwargs: Any) -> tuple[float, float]:
    """The CPU time this thread spends in ``run(*args, **kwargs)``, and its result (seconds)."""
    start = time.thread_time()
    seconds = run(*args, **kwargs)
    return time.thread_time() - start, seconds


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {n: statistics.median(v) for n, v in samples.items()}


# -- ASV -----------------------------------------------------------------------------------------


class ChatGraph:
    """Seconds per thread (50 turns, 100 steps) of the chat graph, per saver."""

    params = (timed_runs(SAVERS), ["async", "sync"])
    param_names = ["saver", "durability"]
    number = 1
    repeat = (3, 10, 60.0)
    timeout = 300

    def setup(self, saver: str, durability: str) -> None:
        self._stack = contextlib.ExitStack()
        directory = self._stack.enter_context(tempfile.TemporaryDirectory())
        self._graph = chat_graph().compile(
            checkpointer=self._stack.enter_context(open_saver(saver, directory))
        )

    def teardown(self, saver: str, durability: str) -> None:
        self._stack.close()

    def time_thread(self, saver: str, durability: str) -> None:
        run_thread(self._graph, durability=durability)


class ChatGraphRatios:
    """How many times less LangGraph's savers cost than snapstate's, per step (higher is better).

    ``share``: the saver's own part (overhead minus the floor); ``overhead``: end to end;
    ``ceiling``: LangGraph's share over the blocking floor's, the best share ratio a saver that
    waits for its store in every call could reach; ``commit ceiling``: the same over the
    committing floor's, the best a saver that commits every call in SQLite could reach.
    """

    timeout = 600
    unit = "x"

    def setup_cache(self) -> dict[str, float]:
        return compare(rounds=5).ratios()

    def track_sqlite_share_ratio(self, ratios: dict[str, float]) -> float:
        return ratios["sqlite_share_ratio"]

    def track_sqlite_overhead_ratio(self, ratios: dict[str, float]) -> float:
        return ratios["sqlite_overhead_ratio"]

    def track_sqlite_batched_share_ratio(self, ratios: dict[str, float]) -> float:
        return ratios["sqlite_batched_share_ratio"]

    def track_sqlite_batched_overhead_ratio(self, ratios: dict[str, float]) -> float:
        return ratios["sqlite_batched_overhead_ratio"]

    def track_sqlite_batched_drained_share_ratio(self, ratios: dict[str, float]) -> float:
        return ratios["sqlite_batched_drained_share_ratio"]

    def track_memory_share_ratio(self, ratios: dict[str, float]) -> float:
        return ratios["memory_share_ratio"]

    def track_sqlite_share_ceiling(self, ratios: dict[str, float]) -> float:
        return ratios["sqlite_share_ceiling"]

    def track_sqlite_commit_ceiling(self, ratios: dict[str, float]) -> float:
        return ratios["sqlite_commit_ceiling"]


# -- DeltaChannel history ------------------------------------------------------------------------

#: Steps of the DeltaChannel thread, and its snapshot frequency: the latest checkpoint replays
#: the writes of the steps since the last snapshot.
DELTA_STEPS = 190
DELTA_SNAPSHOT_EVERY = 100


def _extend(state: list[Any], writes: list[list[Any]]) -> list[Any]:
    out = list(state)
    for w in writes:
        out.extend(w)
    return out


class DeltaState(TypedDict):
    messages: Annotated[list[Any], DeltaChannel(_extend, snapshot_frequency=DELTA_SNAPSHOT_EVERY)]
    n: int


def delta_thread(saver: Any, steps: int = DELTA_STEPS) -> Any:
    """Run a DeltaChannel chat thread on ``saver``; the config of its latest checkpoint."""
    messages = conversation(steps // 2 + 1)

    def step(state: DeltaState) -> dict[str, Any]:
        return {"messages": [messages[state["n"]]], "n": state["n"] + 1}

    b = StateGraph(DeltaState)
    b.add_node("step", step)
    b.add_edge(START, "step")
    b.add_conditional_edges("step", lambda s: END if s["n"] >= steps else "step")
    cfg: dict[str, Any] = {"configurable": {"thread_id": "delta"}, "recursion_limit": 10 * steps}
    b.compile(checkpointer=saver).invoke({"messages": [], "n": 0}, cfg)
    return saver.get_tuple(cfg).config


def delta_history(saver: Any, config: Any, *, default_walk: bool = False) -> int:
    """One ``get_delta_channel_history`` of the messages channel; the number of writes."""
    fn = BaseCheckpointSaver.get_delta_channel_history if default_walk else None
    if fn is not None:
        out = fn(saver, config=config, channels=["messages"])
    else:
        out = saver.get_delta_channel_history(config=config, channels=["messages"])
    return len(out["messages"]["writes"])


class DeltaChannelHistory:
    """``get_delta_channel_history`` at the head of a 190-step DeltaChannel thread.

    ``default-walk`` is ``BaseCheckpointSaver``'s walk over ``get_tuple`` on snapstate's saver.
    """

    params = (["snapstate-sqlite", "langgraph-sqlite", "snapstate-memory", "default-walk"],)
    param_names = ["saver"]
    timeout = 300

    def setup(self, saver: str) -> None:
        self._stack = contextlib.ExitStack()
        directory = self._stack.enter_context(tempfile.TemporaryDirectory())
        name = "snapstate-sqlite" if saver == "default-walk" else saver
        self._saver = self._stack.enter_context(open_saver(name, directory))
        self._config = delta_thread(self._saver)

    def teardown(self, saver: str) -> None:
        self._stack.close()

    def time_history(self, saver: str) -> None:
        delta_history(self._saver, self._config, default_walk=saver == "default-walk")


if __name__ == "__main__":
    print(compare(progress=print).table())
