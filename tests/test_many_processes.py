"""Many processes, each running many threads, through one database: nothing lost, nothing raised.

Each process shares one Checkpointer between its threads; each thread writes its own graph
thread (checkpoints with append-delta lists, bytes, pending writes). Half the processes use
``batched`` durability. Afterwards every checkpoint of every thread is read back whole.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from snapstate import Checkpointer
from snapstate.backends.postgres import PostgresBackend

from .test_faults import values

THREADS = 4
STEPS = 40

_CHILD = textwrap.dedent(
    """
    import sys, threading
    sys.path.insert(0, {tests!r})
    from test_faults import step
    from snapstate import Checkpointer
    from snapstate.backends import open_backend

    proc = {proc}
    cp = Checkpointer(open_backend({url!r}, **{kwargs!r}), durability={durability!r})
    errors = []

    def work(k):
        tid = f"p{{proc}}-t{{k}}"
        try:
            for i in range({steps}):
                cp.put(step(i), thread_id=tid, metadata={{"step": i, "proc": proc}})
                cp.put_writes([("out", i)], thread_id=tid, checkpoint_id=f"{{i:08d}}",
                              task_id="task")
                if i % 5 == 4:
                    assert cp.get(tid).checkpoint.id == f"{{i:08d}}"
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(k,)) for k in range({threads})]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cp.close()
    if errors:
        print("\\n".join(errors), file=sys.stderr)
        sys.exit(1)
    print("ok")
    """
)


def _run_processes(url: str, kwargs: dict[str, Any], processes: int) -> None:
    procs = []
    for p in range(processes):
        script = _CHILD.format(
            tests=str(Path(__file__).parent),
            proc=p,
            url=url,
            kwargs=kwargs,
            durability="batched" if p % 2 else "sync",
            steps=STEPS,
            threads=THREADS,
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", script],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
        )
    failures = []
    for p, proc in enumerate(procs):
        out, err = proc.communicate(timeout=120)
        if proc.returncode != 0 or out.strip() != "ok" or "Traceback" in err:
            failures.append(f"process {p} (exit {proc.returncode}): {err.strip()[-2000:]}")
    assert not failures, "\n".join(failures)


def _verify(cp: Checkpointer, processes: int) -> None:
    for p in range(processes):
        for k in range(THREADS):
            tid = f"p{p}-t{k}"
            snaps = list(cp.list(tid))
            assert [s.checkpoint.id for s in snaps] == [f"{i:08d}" for i in reversed(range(STEPS))]
            for s in snaps:
                i = int(s.checkpoint.id)
                assert s.checkpoint.channel_values == values(i)
                assert s.metadata == {"step": i, "proc": p}
                assert [w.value for w in s.pending_writes] == [i]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(150)
def test_eight_processes_on_postgres(pg_dsn: str, pg_schema: str) -> None:
    kwargs = {"schema": pg_schema, "max_connections": 4}
    _run_processes(pg_dsn, kwargs, 8)
    with Checkpointer(PostgresBackend(pg_dsn, schema=pg_schema)) as cp:
        _verify(cp, 8)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_four_processes_on_one_sqlite_file(tmp_path: Path) -> None:
    db = str(tmp_path / "shared.db")
    _run_processes(db, {}, 4)
    with Checkpointer(db) as cp:
        _verify(cp, 4)
