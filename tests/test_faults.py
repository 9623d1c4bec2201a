"""Faults: connections killed by the server mid-batch, and writers killed with SIGKILL.

What must hold: a put either raises a clear error or is retried safely; nothing is ever
half-written (a checkpoint row without its blobs); everything acknowledged before a fault is
intact after it; in ``sync`` mode nothing a returned ``put`` stored is lost; in ``batched``
mode what a returned ``flush`` stored is never lost and what is stored is a prefix of what was
put (at most the last window is lost).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from snapstate import Checkpoint, Checkpointer
from snapstate.backends.postgres import PostgresBackend
from snapstate.errors import StoreUnavailableError


def values(i: int) -> dict[str, Any]:
    """Deterministic state of step ``i``: a growing list (append-deltas), bytes, a counter."""
    return {
        "msgs": [f"message {j}" for j in range(i + 1)],
        "blob": random.Random(i).randbytes(3000),
        "n": i,
    }


def step(i: int) -> Checkpoint:
    return Checkpoint(
        id=f"{i:08d}",
        channel_values=values(i),
        channel_versions={"msgs": i + 1, "blob": i + 1, "n": i + 1},
    )


def _wait_for_lock_waiter(dsn: str, schema: str, exclude: set[int]) -> int:
    """The pid of a session of ours blocked on a thread lock inside a write statement."""
    deadline = time.monotonic() + 30
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND wait_event = 'advisory' AND query LIKE %s",
                [f'%"{schema}".check_tombstones%'],
            ).fetchall()
            pids = [r[0] for r in rows if r[0] not in exclude]
            if pids:
                return int(pids[0])
            time.sleep(0.01)
    raise AssertionError("no write statement ever waited on the thread lock")


class _HeldThread:
    """Holds a thread's write lock in a session of its own, so a write to it blocks mid-batch
    (its rows inserted, its statement not finished)."""

    def __init__(self, dsn: str, schema: str, thread_id: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.key = f"{schema}:{thread_id}"
        self.conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [self.key])

    def release(self) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [self.key])
        self.conn.close()


def _put_in_thread(cp: Checkpointer, thread_id: str, i: int) -> dict[str, Any]:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            cp.put(step(i), thread_id=thread_id, metadata={"step": i})
        except BaseException as exc:
            result["error"] = exc
        result["done"] = True

    t = threading.Thread(target=run)
    t.start()
    result["thread"] = t
    return result


def _acknowledged_intact(cp: Checkpointer, thread_id: str, n: int) -> None:
    for i in range(n):
        snap = cp.get(thread_id, checkpoint_id=f"{i:08d}")
        assert snap is not None, f"acknowledged checkpoint {i} is missing"
        assert snap.checkpoint.channel_values == values(i)


@pytest.mark.postgres
@pytest.mark.timeout(60)
def test_connection_killed_mid_batch_is_retried_safely(pg_dsn: str, pg_schema: str) -> None:
    cp = Checkpointer(PostgresBackend(pg_dsn, schema=pg_schema))
    for i in range(10):
        cp.put(step(i), thread_id="acked")
    held = _HeldThread(pg_dsn, pg_schema, "victim")
    try:
        put = _put_in_thread(cp, "victim", 0)
        first = _wait_for_lock_waiter(pg_dsn, pg_schema, set())
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            assert conn.execute("SELECT pg_terminate_backend(%s)", [first]).fetchone() == (True,)
        # The put runs again on a fresh connection and waits for the lock again.
        _wait_for_lock_waiter(pg_dsn, pg_schema, {first})
    finally:
        held.release()
    put["thread"].join(30)
    assert put.get("done") and "error" not in put, put.get("error")
    snap = cp.get("victim")
    assert snap is not None and snap.checkpoint.channel_values == values(0)
    assert len(list(cp.list("victim"))) == 1
    _acknowledged_intact(cp, "acked", 10)
    cp.close()


@pytest.mark.postgres
@pytest.mark.timeout(60)
def test_connection_killed_mid_batch_without_retry_raises_and_writes_nothing(
    pg_dsn: str, pg_schema: str
) -> None:
    cp = Checkpointer(PostgresBackend(pg_dsn, schema=pg_schema, retry=False))
    for i in range(10):
        cp.put(step(i), thread_id="acked")
    held = _HeldThread(pg_dsn, pg_schema, "victim")
    try:
        put = _put_in_thread(cp, "victim", 0)
        pid = _wait_for_lock_waiter(pg_dsn, pg_schema, set())
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            # Rows of the batch are inserted but not committed when the session ends.
            conn.execute("SELECT pg_terminate_backend(%s)", [pid])
        put["thread"].join(30)
    finally:
        held.release()
    err = put.get("error")
    assert isinstance(err, StoreUnavailableError), err
    assert "lost the connection to PostgreSQL at" in str(err)
    assert "while writing a batch" in str(err)
    with psycopg.connect(pg_dsn) as conn:
        for table in ("checkpoints", "blobs", "writes"):
            (n,) = conn.execute(
                f"SELECT count(*) FROM \"{pg_schema}\".{table} WHERE thread_id = 'victim'"
            ).fetchone()
            assert n == 0, f"half a batch left in {table}"
    _acknowledged_intact(cp, "acked", 10)
    cp.put(step(0), thread_id="victim")  # the pool replaced the connection
    assert cp.get("victim") is not None
    cp.close()


@pytest.mark.postgres
@pytest.mark.timeout(60)
def test_idle_pooled_connections_killed_between_calls(pg_dsn: str, pg_schema: str) -> None:
    cp = Checkpointer(PostgresBackend(pg_dsn, schema=pg_schema, max_connections=2))
    for i in range(5):
        cp.put(step(i), thread_id="t")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND query LIKE %s",
            [f'%"{pg_schema}".%'],
        ).fetchone()
    assert killed is not None and killed[0] >= 1
    _acknowledged_intact(cp, "t", 5)  # reads retry on a fresh connection
    cp.put(step(5), thread_id="t")
    _acknowledged_intact(cp, "t", 6)
    cp.close()


# -- SIGKILL -------------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_faults import step
    from snapstate import Checkpointer
    from snapstate.backends import open_backend

    kwargs = {kwargs!r}
    backend = open_backend({url!r}, **kwargs)
    cp = Checkpointer(backend, durability={durability!r}, **{writer!r})
    i = 0
    while True:
        cp.put(step(i), thread_id="t", metadata={{"step": i}})
        cp.put_writes([("out", i)], thread_id="t", checkpoint_id=f"{{i:08d}}", task_id="k")
        if {durability!r} == "sync":
            print("acked", i, flush=True)
        elif i % 10 == 9:
            cp.flush()
            print("acked", i, flush=True)
        i += 1
    """
)


def _kill_while_writing(url: str, durability: str, kwargs: dict[str, Any]) -> int:
    """Run a writer, SIGKILL it mid-stream; return the last step it acknowledged."""
    writer = {"max_delay": 0.02} if durability == "batched" else {}
    script = _CHILD.format(
        tests=str(Path(__file__).parent),
        url=url,
        kwargs=kwargs,
        durability=durability,
        writer=writer,
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    last = -1
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            last = int(line.split()[1])
            if last >= 60:
                break
        else:
            raise AssertionError(f"writer died on its own: {proc.stderr.read()}")  # type: ignore[union-attr]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return last


def _check_after_kill(cp: Checkpointer, acked: int, durability: str) -> None:
    stored = sorted(int(s.checkpoint.id) for s in cp.list("t"))
    # Every stored checkpoint is whole: its row, every blob it names and its values.
    for i in stored:
        snap = cp.get("t", checkpoint_id=f"{i:08d}")
        assert snap is not None
        assert snap.checkpoint.channel_values == values(i), f"checkpoint {i} is not whole"
    # Nothing acknowledged is lost, and what is stored is a prefix of what was put.
    assert stored == list(range(len(stored)))
    assert len(stored) - 1 >= acked
    if durability == "sync":
        for i in range(acked + 1):
            snap = cp.get("t", checkpoint_id=f"{i:08d}")
            assert snap is not None and [w.value for w in snap.pending_writes] == [i]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(120)
@pytest.mark.parametrize("durability", ["sync", "batched"])
def test_sigkill_postgres_writer(pg_dsn: str, pg_schema: str, durability: str) -> None:
    PostgresBackend(pg_dsn, schema=pg_schema).setup()
    acked = _kill_while_writing(pg_dsn, durability, {"schema": pg_schema})
    with Checkpointer(PostgresBackend(pg_dsn, schema=pg_schema)) as cp:
        _check_after_kill(cp, acked, durability)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("durability", ["sync", "batched"])
def test_sigkill_sqlite_writer(tmp_path: Path, durability: str) -> None:
    db = str(tmp_path / "killed.db")
    acked = _kill_while_writing(db, durability, {})
    with Checkpointer(db) as cp:
        _check_after_kill(cp, acked, durability)


@pytest.mark.postgres
@pytest.mark.timeout(60)
async def test_idle_pooled_connections_killed_between_calls_async(
    pg_dsn: str, pg_schema: str
) -> None:
    from snapstate import AsyncCheckpointer
    from snapstate.backends.postgres import AsyncPostgresBackend

    cp = AsyncCheckpointer(AsyncPostgresBackend(pg_dsn, schema=pg_schema, max_connections=2))
    for i in range(5):
        await cp.put(step(i), thread_id="t")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND query LIKE %s",
            [f'%"{pg_schema}".%'],
        )
    for i in range(5):
        snap = await cp.get("t", checkpoint_id=f"{i:08d}")
        assert snap is not None and snap.checkpoint.channel_values == values(i)
    await cp.put(step(5), thread_id="t")
    assert (await cp.get("t")).checkpoint.id == "00000005"
    await cp.aclose()
