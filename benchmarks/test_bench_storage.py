"""pytest-benchmark: the storage hot paths of a chat thread, ours beside LangGraph's savers.

Run by ``make bench`` (``benchmarks/run.py`` prints the ratio table). Each benchmark stores its
measurements in ``extra_info``: ``role`` (ours / anchor / limit), per-turn means of the first and
last five turns, bytes per checkpoint, and so on.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pytest

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
ROUNDS = int(os.environ.get("SNAPSTATE_BENCH_ROUNDS", "3"))


def role(impl: str) -> str:
    return "ours" if impl == "snapstate" else "anchor"


@pytest.mark.parametrize(("impl", "kind"), SAVERS, ids=[f"{i}-{k}" for i, k in SAVERS])
def test_chat_thread_puts(benchmark: Any, impl: str, kind: str, tmp_path: Any) -> None:
    """Every turn of a chat thread: put + put_writes. The whole thread is one round."""
    benchmark.group = f"chat thread, {TURNS} turns, put+put_writes ({kind})"
    stack = contextlib.ExitStack()
    runs: list[Any] = []
    paths: list[str] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        d = tmp_path / f"r{len(paths)}"
        d.mkdir()
        saver, path = stack.enter_context(open_saver(impl, kind, str(d)))
        paths.append(path)
        return (saver,), {}

    def target(saver: Any) -> None:
        runs.append(run_chat(saver, TURNS))

    with stack:
        benchmark.pedantic(target, setup=setup, rounds=ROUNDS, iterations=1)
        best = min(runs, key=lambda r: r.total)
        benchmark.extra_info.update(
            role=role(impl),
            kind=kind,
            turns=TURNS,
            first5_ms=best.mean_of(slice(0, 5)) * 1e3,
            last5_ms=best.mean_of(slice(-5, None)) * 1e3,
            per_turn_ms=best.total / TURNS * 1e3,
            series_ms=[round(t * 1e3, 4) for t in best.turn_seconds],
        )
        if kind == "sqlite":
            size = sqlite_bytes(paths[-1])
            benchmark.extra_info["bytes_per_checkpoint"] = size / TURNS
            if impl == "snapstate":
                rows = stored_rows_per_turn(paths[-1], TURNS)
                raw = raw_insert_seconds(str(tmp_path / "raw.db"), rows)
                benchmark.extra_info["raw_insert_per_turn_ms"] = raw / TURNS * 1e3


@pytest.mark.parametrize(("impl", "kind"), SAVERS, ids=[f"{i}-{k}" for i, k in SAVERS])
def test_history_read(benchmark: Any, impl: str, kind: str, tmp_path: Any) -> None:
    """Read a finished thread's whole history, newest first (get_state_history)."""
    benchmark.group = f"read history of a {TURNS}-turn thread ({kind})"
    with open_saver(impl, kind, str(tmp_path)) as (saver, _path):
        run_chat(saver, TURNS)
        expected = TURNS * (TURNS + 1)  # messages summed over every checkpoint
        n = benchmark.pedantic(read_history, args=(saver,), rounds=ROUNDS, iterations=1)
        assert n == expected
        benchmark.extra_info.update(role=role(impl), kind=kind, turns=TURNS)
