"""CI's performance check: ratios against LangGraph's savers, measured side by side.

Run by ``.ci/run`` (``make bench-check``). Each check runs ours and the anchor alternately in
one process, takes medians, and fails when a ratio falls below its floor. Floors sit well under
the targets: the machines are shared and noisy, so noise must not trip a floor, but a real
regression (a lost fast path, quadratic storage coming back) does.

    python -m benchmarks.check            # exit status 1 when a ratio is below its floor
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from .workloads import open_saver, read_history, run_chat, sqlite_bytes

#: Turns per chat thread in the check: long enough that the anchor's quadratic cost shows.
TURNS = 120
ROUNDS = 3


@dataclass
class Result:
    name: str
    ratio: float
    floor: float
    target: str

    @property
    def ok(self) -> bool:
        return self.ratio >= self.floor


def _median_pair(ours: Callable[[], float], anchor: Callable[[], float]) -> tuple[float, float]:
    """Alternate ours and the anchor ROUNDS times; return both medians."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(ROUNDS):
        a.append(ours())
        b.append(anchor())
    return statistics.median(a), statistics.median(b)


def _puts(impl: str) -> float:
    with tempfile.TemporaryDirectory() as d, open_saver(impl, "sqlite", d) as (saver, _):
        return run_chat(saver, TURNS).total


def _history(impl: str) -> float:
    with tempfile.TemporaryDirectory() as d, open_saver(impl, "sqlite", d) as (saver, _):
        run_chat(saver, TURNS)
        start = time.perf_counter()
        read_history(saver)
        return time.perf_counter() - start


def _bytes(impl: str) -> float:
    with tempfile.TemporaryDirectory() as d, open_saver(impl, "sqlite", d) as (saver, path):
        run_chat(saver, TURNS)
        return float(sqlite_bytes(path))


def storage_checks() -> list[Result]:
    # Warm the message cache before timing anything.
    with tempfile.TemporaryDirectory() as d, open_saver("snapstate", "memory", d) as (s, _):
        run_chat(s, 2, thread_id="warm")
    ours, anchor = _median_pair(lambda: _puts("snapstate"), lambda: _puts("langgraph"))
    puts = Result("SQLite saver: chat-thread puts (time)", anchor / ours, 2.0, ">= 3x end to end")
    ours, anchor = _median_pair(lambda: _history("snapstate"), lambda: _history("langgraph"))
    hist = Result("SQLite saver: read whole history (time)", anchor / ours, 3.0, ">= 10x")
    size = Result(
        "SQLite saver: bytes stored per checkpoint",
        _bytes("langgraph") / _bytes("snapstate"),
        5.0,
        ">= 20x",
    )
    return [puts, hist, size]


def main() -> int:
    results = storage_checks()
    width = max(len(r.name) for r in results)
    print(f"performance check ({TURNS}-turn chat thread, medians of {ROUNDS} alternating runs)")
    for r in results:
        flag = "ok  " if r.ok else "FAIL"
        print(
            f"{flag} {r.name:<{width}}  {r.ratio:7.2f}x  (floor {r.floor:.1f}x, target {r.target})"
        )
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"{len(failed)} ratio(s) below their floor", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
