"""How often a growing list is stored whole (``delta_keyframe_every``): a chat thread on each
setting, side by side.

A list channel that grows by appending is stored as append-deltas, with a full copy (a
*keyframe*) every ``delta_keyframe_every`` versions; ``0`` stores a full copy at every version.
Fewer full copies make writes cheaper and the file smaller, and make a read of the latest
checkpoint decode a longer chain of deltas. This shows the trade-off on the chat graph of
``bench_langgraph`` (each step appends one message of 500 to 2000 characters), stored by
``snapstate.langgraph.SqliteSaver`` in a fresh SQLite file per round and setting:

* *ms a step*: the thread's ``invoke`` (``durability="async"``, as in ``bench_langgraph``) per
  step;
* *stored*: the file's live pages after the thread (:func:`workloads.sqlite_bytes`);
* *full copies*: the messages channel's versions stored whole;
* *latest* and *history*: ``get_tuple`` and a whole ``list`` of the thread, each on a new saver
  (nothing decoded is cached from before).

Settings alternate within a round; round 0 warms up and is dropped. Medians.

    python -m benchmarks.bench_keyframes                       # 50 and 150 turns (about 12 s)
    python -m benchmarks.bench_keyframes --turns 150 --every 32,128 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from . import bench_langgraph
from .workloads import sqlite_bytes

__all__ = ["COLUMNS", "EVERY", "TURNS", "thread_costs", "compare", "table", "main"]

#: Settings compared by default: the default (32), two sparser ones, and no deltas at all.
EVERY = (32, 64, 128, 0)
#: Thread lengths compared by default, in turns (two steps each).
TURNS = (50, 150)
ROUNDS = 5

#: Columns of a result, in table order.
COLUMNS = ("step_ms", "stored_kb", "full_copies", "latest_ms", "history_ms")


@contextlib.contextmanager
def _saver(path: str, every: int) -> Iterator[Any]:
    """A new ``SqliteSaver`` on ``path`` (through a connection of its own), closed after."""
    from snapstate.langgraph import SqliteSaver

    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        saver = SqliteSaver(conn, delta_keyframe_every=every)
        try:
            yield saver
        finally:
            saver.close()
    finally:
        conn.close()


def thread_costs(graph: Any, turns: int, every: int, directory: str) -> dict[str, float]:
    """One chat thread of ``turns`` turns on a new file in ``directory``, stored with
    ``delta_keyframe_every=every``: its costs (the keys of :data:`COLUMNS`)."""
    path = os.path.join(directory, f"keyframes-{every}-{uuid.uuid4().hex}.db")
    thread = str(uuid.uuid4())
    cfg: dict[str, Any] = {"configurable": {"thread_id": thread}, "recursion_limit": 100_000}
    with _saver(path, every) as saver:
        compiled = graph.compile(checkpointer=saver)  # not timed, as in bench_langgraph
        start = time.perf_counter()
        compiled.invoke({"messages": []}, cfg, durability="async")
        seconds = time.perf_counter() - start
    stored = sqlite_bytes(path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        (full,) = db.execute(
            "SELECT count(*) FROM blobs WHERE thread_id = ? AND channel = 'messages' AND kind = 0",
            (thread,),
        ).fetchone()
    read_cfg: dict[str, Any] = {"configurable": {"thread_id": thread}}
    with _saver(path, every) as saver:
        start = time.perf_counter()
        latest = saver.get_tuple(read_cfg)
        latest_seconds = time.perf_counter() - start
    if latest is None or len(latest.checkpoint["channel_values"]["messages"]) != 2 * turns:
        raise AssertionError(f"a thread stored with delta_keyframe_every={every} reads back wrong")
    with _saver(path, every) as saver:
        start = time.perf_counter()
        checkpoints = sum(1 for _ in saver.list(read_cfg))
        history_seconds = time.perf_counter() - start
    # The input's checkpoint, the first step's (before a node ran), one per node.
    if checkpoints != 2 * turns + 2:
        raise AssertionError(f"{checkpoints} checkpoints listed, {2 * turns + 2} stored")
    return {
        "step_ms": seconds / (2 * turns) * 1e3,
        "stored_kb": stored / 1024,
        "full_copies": float(full),
        "latest_ms": latest_seconds * 1e3,
        "history_ms": history_seconds * 1e3,
    }


def compare(
    turns: int, every: Sequence[int] = EVERY, rounds: int = ROUNDS, directory: str | None = None
) -> dict[int, dict[str, float]]:
    """Medians of :func:`thread_costs` per setting, settings alternating in each round."""
    graph = bench_langgraph.chat_graph(turns)
    samples: dict[int, list[dict[str, float]]] = {e: [] for e in every}
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        for r in range(rounds + 1):
            for e in every:
                costs = thread_costs(graph, turns, e, tmp)
                if r:
                    samples[e].append(costs)
    return {e: {c: statistics.median(s[c] for s in samples[e]) for c in COLUMNS} for e in every}


def table(result: dict[int, dict[str, float]], turns: int) -> str:
    lines = [
        f"A chat thread of {2 * turns} steps, SQLite (medians)",
        "",
        "| `delta_keyframe_every` | ms a step | stored | full copies | latest | history |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for every, r in result.items():
        lines.append(
            f"| {every} | {r['step_ms']:.3f} | {r['stored_kb']:,.0f} KB | {r['full_copies']:.0f}"
            f" | {r['latest_ms']:.2f} ms | {r['history_ms']:.1f} ms |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_keyframes")
    parser.add_argument("--turns", default=",".join(map(str, TURNS)), help="e.g. 50,150")
    parser.add_argument("--every", default=",".join(map(str, EVERY)), help="e.g. 32,128,0")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args(argv)
    every = [int(e) for e in args.every.split(",")]
    for turns in (int(t) for t in args.turns.split(",")):
        print(table(compare(turns, every, args.rounds), turns))
        print()


if __name__ == "__main__":
    main()
