"""ASV: storage of a chat thread, snapstate's savers beside LangGraph's and raw sqlite3.

``asv run --python=same --quick -b bench_storage``. Each class covers memory and SQLite, ours and
LangGraph's (the anchor). ``track_*`` record stored bytes; ``peakmem_*`` the peak RSS.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from .workloads import (
    SAVERS,
    open_saver,
    raw_insert_seconds,
    read_history,
    run_chat,
    sqlite_bytes,
    stored_rows_per_turn,
)

TURNS = int(os.environ.get("SNAPSTATE_BENCH_TURNS", "300"))


class ChatThread:
    """A chat thread of TURNS turns: put + put_writes per turn."""

    params = (sorted({i for i, _ in SAVERS}), sorted({k for _, k in SAVERS}))
    param_names = ["saver", "kind"]
    timeout = 600
    number = 1
    repeat = (1, 3, 60.0)

    def setup(self, impl: str, kind: str) -> None:
        self.dir = tempfile.TemporaryDirectory()
        # Generate the message data (cached per process) outside the timed region.
        with open_saver(impl, kind, self.dir.name) as (saver, _):
            run_chat(saver, 2, thread_id="warm")

    def teardown(self, impl: str, kind: str) -> None:
        self.dir.cleanup()

    def time_puts(self, impl: str, kind: str) -> None:
        with open_saver(impl, kind, tempfile.mkdtemp(dir=self.dir.name)) as (saver, _):
            run_chat(saver, TURNS)

    def peakmem_puts(self, impl: str, kind: str) -> None:
        with open_saver(impl, kind, tempfile.mkdtemp(dir=self.dir.name)) as (saver, _):
            run_chat(saver, TURNS)

    def track_bytes_per_checkpoint(self, impl: str, kind: str) -> float:
        if kind != "sqlite":
            return float("nan")
        with open_saver(impl, kind, tempfile.mkdtemp(dir=self.dir.name)) as (saver, path):
            run_chat(saver, TURNS)
            return sqlite_bytes(path) / TURNS

    track_bytes_per_checkpoint.unit = "bytes"  # type: ignore[attr-defined]

    def track_last5_over_first5(self, impl: str, kind: str) -> float:
        """How much a late turn costs relative to an early one (flat is 1)."""
        with open_saver(impl, kind, tempfile.mkdtemp(dir=self.dir.name)) as (saver, _):
            run = run_chat(saver, TURNS)
            return run.mean_of(slice(-5, None)) / run.mean_of(slice(0, 5))

    track_last5_over_first5.unit = "ratio"  # type: ignore[attr-defined]


class History:
    """Reading a finished thread's whole history (get_state_history)."""

    params = ChatThread.params
    param_names = ChatThread.param_names
    timeout = 600

    def setup(self, impl: str, kind: str) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.ctx = open_saver(impl, kind, self.dir.name)
        self.saver, _ = self.ctx.__enter__()
        run_chat(self.saver, TURNS)

    def teardown(self, impl: str, kind: str) -> None:
        self.ctx.__exit__(None, None, None)
        self.dir.cleanup()

    def time_read_history(self, impl: str, kind: str) -> None:
        read_history(self.saver)


class RawSqlite:
    """The machine's limit: the bytes snapstate stores, inserted with raw sqlite3."""

    timeout = 600

    def setup(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        with open_saver("snapstate", "sqlite", self.dir.name) as (saver, path):
            run_chat(saver, TURNS)
        self.rows: list[Any] = stored_rows_per_turn(path, TURNS)

    def teardown(self) -> None:
        self.dir.cleanup()

    def time_insert_same_bytes(self) -> None:
        d = tempfile.mkdtemp(dir=self.dir.name)
        raw_insert_seconds(os.path.join(d, "raw.db"), self.rows)
