"""Running a function in several fresh (spawned) processes at once."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from typing import Any


def run_together(
    target: Callable[..., None], args: Sequence[tuple[Any, ...]], timeout: float = 240
) -> list[str]:
    """One spawned process per tuple of ``args``, each calling ``target(*a, barrier, q)``: all
    share ``barrier``, to start their work at once, and each puts one report on ``q`` ("ok",
    or the error it met). The reports, after every process has exited; a process that exits
    other than cleanly (a crash at exit, an exit code of its own) fails the caller."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(args))
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, barrier, q)) for a in args]
    for p in procs:
        p.start()
    results = [q.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(60)
    codes = [p.exitcode for p in procs]
    assert codes == [0] * len(procs), f"processes exited with {codes} (reports: {results})"
    return results
