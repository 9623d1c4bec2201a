"""Bringing a LangGraph SQLite file into snapstate: how long it takes and what it stores.

``python -m benchmarks.bench_import [THREADS] [TURNS]``: LangGraph's ``SqliteSaver`` stores
THREADS chat threads of TURNS turns each (the storage benchmarks' chat: two messages of 500 to
2000 characters a turn); then ``snapstate.langgraph.import_history`` copies them into
snapstate's ``SqliteSaver``, with and without verification. Prints the seconds, checkpoints per
second and both files' live bytes.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from .workloads import open_saver, run_chat, sqlite_bytes


def main(threads: int = 20, turns: int = 50) -> None:
    from snapstate.langgraph import SqliteSaver, import_history

    with tempfile.TemporaryDirectory() as directory:
        with open_saver("langgraph", "sqlite", directory) as (source, source_path):
            for i in range(threads):
                run_chat(source, turns, thread_id=f"thread-{i}", seed=i)
            print(f"LangGraph's SqliteSaver: {threads} threads of {turns} turns")
            print(f"  source file: {sqlite_bytes(source_path) / 2**20:.1f} MiB of live pages")
            for verify in (False, True):
                path = os.path.join(directory, f"snapstate-{verify}.db")
                with SqliteSaver.from_conn_string(path) as target:
                    start = time.perf_counter()
                    report = import_history(source, target, verify=verify)
                    seconds = time.perf_counter() - start
                size = sqlite_bytes(path)
                print(
                    f"  import{' and verify' if verify else ''}: {seconds:.2f} s, "
                    f"{report.checkpoints / seconds:,.0f} checkpoints/s "
                    f"({report.checkpoints} checkpoints, {report.writes} writes); "
                    f"target file: {size / 2**20:.1f} MiB"
                )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
