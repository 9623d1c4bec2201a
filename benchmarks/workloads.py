"""Saver-level workloads shared by the ASV suites, the pytest-benchmark suite and the CI check.

A *chat thread* drives a saver through LangGraph's saver API exactly as a graph would on each
turn: one ``put`` (the messages list grew by a human and an AI message, a counter changed) and
one ``put_writes``. The same calls go to snapstate's savers and to LangGraph's own, so the
numbers compare storage, encoding and bookkeeping, without the graph runtime around them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import datagen

__all__ = [
    "SAVERS",
    "ChatRun",
    "open_saver",
    "chat_messages",
    "run_chat",
    "read_history",
    "sqlite_bytes",
]

#: (implementation, kind) pairs every storage benchmark covers.
SAVERS = [
    ("snapstate", "memory"),
    ("langgraph", "memory"),
    ("snapstate", "sqlite"),
    ("langgraph", "sqlite"),
]

_MESSAGES: dict[tuple[int, int], list[Any]] = {}


def chat_messages(turns: int, seed: int = 0) -> list[Any]:
    """Two LangChain messages per turn, 500 to 2000 characters each (cached per process)."""
    key = (turns, seed)
    if key not in _MESSAGES:
        _MESSAGES[key] = datagen.langchain_messages(2 * turns, seed=seed)
    return _MESSAGES[key]


@contextlib.contextmanager
def open_saver(impl: str, kind: str, directory: str | None = None) -> Iterator[tuple[Any, str]]:
    """A fresh saver and the path of its file ("" for memory)."""
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory())
        path = os.path.join(directory, f"{impl}.db") if kind == "sqlite" else ""
        if impl == "snapstate":
            from snapstate import langgraph as ours

            if kind == "memory":
                yield ours.InMemorySaver(), path
            else:
                conn = sqlite3.connect(path, check_same_thread=False)
                stack.callback(conn.close)
                saver = ours.SqliteSaver(conn)
                saver.setup()
                yield saver, path
        else:
            if kind == "memory":
                from langgraph.checkpoint.memory import InMemorySaver

                yield InMemorySaver(), path
            else:
                from langgraph.checkpoint.sqlite import SqliteSaver

                conn = sqlite3.connect(path, check_same_thread=False)
                stack.callback(conn.close)
                saver = SqliteSaver(conn)
                saver.setup()
                yield saver, path


@dataclass
class ChatRun:
    """Per-turn seconds (put + put_writes) and the number of checkpoints stored."""

    turn_seconds: list[float]
    checkpoints: int

    @property
    def total(self) -> float:
        return sum(self.turn_seconds)

    def mean_of(self, turns: slice) -> float:
        part = self.turn_seconds[turns]
        return sum(part) / len(part)


def run_chat(saver: Any, turns: int, *, thread_id: str = "chat", seed: int = 0) -> ChatRun:
    """Drive ``turns`` chat turns through ``saver``; time each turn."""
    from langgraph.checkpoint.base import empty_checkpoint

    msgs = chat_messages(turns, seed)
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    versions: dict[str, Any] = {}
    seen: dict[str, Any] = {}
    messages: list[Any] = []
    out: list[float] = []
    for turn in range(turns):
        start = time.perf_counter()
        messages = [*messages, msgs[2 * turn], msgs[2 * turn + 1]]
        new_versions = {
            "messages": saver.get_next_version(versions.get("messages"), None),
            "turn": saver.get_next_version(versions.get("turn"), None),
        }
        versions.update(new_versions)
        cp = empty_checkpoint()
        cp["channel_values"] = {"messages": messages, "turn": turn}
        cp["channel_versions"] = dict(versions)
        seen = {"agent": dict(versions)}
        cp["versions_seen"] = seen
        cp["updated_channels"] = ["messages", "turn"]
        config = saver.put(config, cp, {"source": "loop", "step": turn}, new_versions)
        saver.put_writes(config, [("messages", [msgs[2 * turn + 1]])], task_id=f"task-{turn}")
        out.append(time.perf_counter() - start)
    return ChatRun(out, turns)


def read_history(saver: Any, thread_id: str = "chat") -> int:
    """Read a thread's whole history, as ``get_state_history`` does; returns its length."""
    config = {"configurable": {"thread_id": thread_id}}
    n = 0
    for tup in saver.list(config):
        n += len(tup.checkpoint["channel_values"].get("messages", ()))
    return n


def sqlite_bytes(path: str) -> int:
    """Bytes of live pages in a SQLite file (free pages and the WAL excluded)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        count = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int(page * (count - free))
    finally:
        conn.close()


def raw_insert_seconds(path: str, rows: list[list[bytes]]) -> float:
    """The machine's limit: insert the same bytes, one transaction per turn, raw sqlite3."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("CREATE TABLE IF NOT EXISTS raw (k INTEGER PRIMARY KEY, data BLOB)")
        start = time.perf_counter()
        for turn in rows:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO raw (data) VALUES (?)", [(b,) for b in turn])
            conn.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


def stored_rows_per_turn(path: str, turns: int) -> list[list[bytes]]:
    """The payloads a snapstate SQLite store holds, split into ``turns`` equal groups.

    Each turn stores one checkpoint row, its changed blobs and one write; grouping every row in
    insertion order reproduces what each turn wrote, for :func:`raw_insert_seconds`.
    """
    conn = sqlite3.connect(path)
    try:
        payloads = [
            bytes(r[0]) + r[1].encode()
            for r in conn.execute(
                "SELECT skeleton, metadata FROM checkpoints ORDER BY checkpoint_id"
            )
        ]
        blobs = [bytes(r[0]) for r in conn.execute("SELECT data FROM blobs ORDER BY rowid")]
        writes = [bytes(r[0]) for r in conn.execute("SELECT data FROM writes ORDER BY rowid")]
    finally:
        conn.close()
    per = max(1, len(blobs) // turns)
    return [
        [payloads[t], *blobs[t * per : (t + 1) * per], *writes[t : t + 1]]
        for t in range(min(turns, len(payloads)))
    ]
