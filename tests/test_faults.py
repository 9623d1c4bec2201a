"""Faults: connections killed by the server mid-batch, a server that hangs, and writers killed
with SIGKILL.

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
from tests.freezable import freezable
from tests.pg_hold import HeldMidBatch, wait_for_mid_batch_waiter


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
    held = HeldMidBatch(pg_dsn, pg_schema, "victim")
    try:
        put = _put_in_thread(cp, "victim", 0)
        first = wait_for_mid_batch_waiter(pg_dsn, pg_schema, set())
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            assert conn.execute("SELECT pg_terminate_backend(%s)", [first]).fetchone() == (True,)
        # The put runs again on a fresh connection and waits for the lock again.
        wait_for_mid_batch_waiter(pg_dsn, pg_schema, {first})
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
    held = HeldMidBatch(pg_dsn, pg_schema, "victim")
    try:
        put = _put_in_thread(cp, "victim", 0)
        pid = wait_for_mid_batch_waiter(pg_dsn, pg_schema, set())
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
    import sys, time
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
        print("put", i, flush=True)  # in sync mode: stored; in batched mode: queued
        if {durability!r} == "batched":
            time.sleep(0.01)  # a stream of steps, several in each window
        i += 1
    """
)

#: The batched writer's window in the killed writer, and how long its commit may take on a
#: loaded machine: a step put longer than both before the kill must be stored.
_MAX_DELAY = 0.02
_COMMIT_SLACK = 1.0


def _kill_while_writing(url: str, durability: str, kwargs: dict[str, Any]) -> int:
    """Run a writer and SIGKILL it mid-stream. Return the last step it must have stored: in
    ``sync`` mode the last one whose put returned; in ``batched`` mode the last one put more
    than a window (and a commit's time) before the kill, without any flush."""
    writer = {"max_delay": _MAX_DELAY} if durability == "batched" else {}
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
    # When this process read each step's line: never before the child had put that step.
    seen: list[float] = []
    window = _MAX_DELAY + _COMMIT_SLACK
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(time.monotonic())
            assert int(line.split()[1]) == len(seen) - 1, line
            if len(seen) > 60 and (durability == "sync" or seen[-1] - seen[0] > 2 * window):
                break
        else:
            raise AssertionError(f"writer died on its own: {proc.stderr.read()}")  # type: ignore[union-attr]
        killed_at = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    if durability == "sync":
        return len(seen) - 1
    due = [i for i, at in enumerate(seen) if at < killed_at - window]
    assert due, "no step was put a whole window before the kill"
    return due[-1]


def _check_after_kill(cp: Checkpointer, acked: int) -> None:
    stored = sorted(int(s.checkpoint.id) for s in cp.list("t"))
    # Every stored checkpoint is whole: its row, every blob it names and its values.
    for i in stored:
        snap = cp.get("t", checkpoint_id=f"{i:08d}")
        assert snap is not None
        assert snap.checkpoint.channel_values == values(i), f"checkpoint {i} is not whole"
    # Nothing acknowledged is lost, and what is stored is a prefix of what was put.
    assert stored == list(range(len(stored)))
    assert len(stored) - 1 >= acked, f"stored up to step {len(stored) - 1}, must have {acked}"
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
        _check_after_kill(cp, acked)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("durability", ["sync", "batched"])
def test_sigkill_sqlite_writer(tmp_path: Path, durability: str) -> None:
    db = str(tmp_path / "killed.db")
    acked = _kill_while_writing(db, durability, {})
    with Checkpointer(db) as cp:
        _check_after_kill(cp, acked)


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
        killed = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND query LIKE %s",
            [f'%"{pg_schema}".%'],
        ).fetchone()
    assert killed is not None and killed[0] >= 1
    for i in range(5):
        snap = await cp.get("t", checkpoint_id=f"{i:08d}")
        assert snap is not None and snap.checkpoint.channel_values == values(i)
    await cp.put(step(5), thread_id="t")
    assert (await cp.get("t")).checkpoint.id == "00000005"
    await cp.aclose()


# -- a server that hangs -------------------------------------------------------------------------
#
# The relay of tests/freezable.py stands in for a server that stops answering: connections stay
# open and accept what is sent, but no reply comes (a stopped server process, a frozen host, a
# network that drops packets).

_HUNG = {"server_timeout": 0.5, "connect_timeout": 2}


def _assert_silence_reported(err: BaseException | None, what: str) -> None:
    assert isinstance(err, StoreUnavailableError), err
    text = str(err)
    assert "stopped answering while " + what in text, text
    assert "no reply within 0.5 s" in text and "a new connection got none either" in text, text


@pytest.mark.postgres
@pytest.mark.timeout(60)
@pytest.mark.parametrize("durability", ["sync", "batched"])
def test_hung_server_fails_calls_instead_of_hanging(
    pg_dsn: str, pg_schema: str, durability: str
) -> None:
    with freezable(pg_dsn) as (relay, via):
        cp = Checkpointer(PostgresBackend(via, schema=pg_schema, **_HUNG), durability=durability)
        for i in range(5):
            cp.put(step(i), thread_id="acked")
        cp.flush()
        relay.freeze()
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError) as caught:
            cp.put(step(0), thread_id="victim")
            cp.flush()  # batched: the put was queued; its commit meets the silence
        elapsed = time.monotonic() - start
        # server_timeout, then a new connection's connect_timeout; no retry after that.
        assert elapsed < 6, elapsed
        _assert_silence_reported(caught.value, "writing a batch")
        relay.thaw()
        _acknowledged_intact(cp, "acked", 5)
        cp.put(step(1), thread_id="victim")  # the broken connection was replaced
        cp.flush()
        snap = cp.get("victim", checkpoint_id=f"{1:08d}")
        assert snap is not None and snap.checkpoint.channel_values == values(1)
        cp.close()


@pytest.mark.postgres
@pytest.mark.timeout(60)
async def test_hung_server_fails_calls_instead_of_hanging_async(
    pg_dsn: str, pg_schema: str
) -> None:
    from snapstate import AsyncCheckpointer
    from snapstate.backends.postgres import AsyncPostgresBackend

    with freezable(pg_dsn) as (relay, via):
        cp = AsyncCheckpointer(AsyncPostgresBackend(via, schema=pg_schema, **_HUNG))
        for i in range(5):
            await cp.put(step(i), thread_id="acked")
        relay.freeze()
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError) as caught:
            await cp.get("acked")
        assert time.monotonic() - start < 6
        _assert_silence_reported(caught.value, "reading a checkpoint")
        relay.thaw()
        for i in range(5):
            snap = await cp.get("acked", checkpoint_id=f"{i:08d}")
            assert snap is not None and snap.checkpoint.channel_values == values(i)
        await cp.aclose()


@pytest.mark.postgres
@pytest.mark.timeout(60)
def test_given_connection_on_a_hung_server(pg_dsn: str, pg_schema: str) -> None:
    with freezable(pg_dsn) as (relay, via):
        conn = psycopg.connect(via, autocommit=True)
        cp = Checkpointer(PostgresBackend(conn, schema=pg_schema, **_HUNG))
        cp.put(step(0), thread_id="t")
        relay.freeze()
        with pytest.raises(StoreUnavailableError) as caught:
            cp.put(step(1), thread_id="t")
        _assert_silence_reported(caught.value, "writing a batch")
        relay.thaw()
        assert conn.broken  # its socket was shut down: the caller's to replace
        conn.close()
    with Checkpointer(PostgresBackend(pg_dsn, schema=pg_schema)) as again:
        _acknowledged_intact(again, "t", 1)


@pytest.mark.postgres
@pytest.mark.timeout(60)
def test_long_call_on_a_working_server_is_not_cut_short(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snapstate.backends import _pg_watchdog

    probes: list[str | None] = []
    real_probe = _pg_watchdog.probe

    def counted(params: dict[str, str], connect_timeout: float) -> str | None:
        probes.append(real_probe(params, connect_timeout))
        return probes[-1]

    monkeypatch.setattr(_pg_watchdog, "probe", counted)
    cp = Checkpointer(PostgresBackend(pg_dsn, schema=pg_schema, server_timeout=0.3))
    cp.put(step(0), thread_id="other")  # tables exist before the lock is taken
    held = HeldMidBatch(pg_dsn, pg_schema, "slow")
    try:
        put = _put_in_thread(cp, "slow", 0)
        wait_for_mid_batch_waiter(pg_dsn, pg_schema, set())
        deadline = time.monotonic() + 20
        while len(probes) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        held.release()
    put["thread"].join(30)
    assert put.get("done") and "error" not in put, put.get("error")
    # The call waited through several checks, each of which found the server answering.
    assert len(probes) >= 3 and set(probes) == {None}, probes
    snap = cp.get("slow")
    assert snap is not None and snap.checkpoint.channel_values == values(0)
    cp.close()


@pytest.mark.postgres
@pytest.mark.timeout(60)
def test_no_server_timeout_waits_for_the_server(pg_dsn: str, pg_schema: str) -> None:
    with freezable(pg_dsn) as (relay, via):
        cp = Checkpointer(PostgresBackend(via, schema=pg_schema, server_timeout=None))
        cp.put(step(0), thread_id="t")
        relay.freeze()
        put = _put_in_thread(cp, "t", 1)
        put["thread"].join(2)
        assert not put.get("done")  # still waiting, well past any server_timeout above
        relay.thaw()
        put["thread"].join(30)
        assert put.get("done") and "error" not in put, put.get("error")
        _acknowledged_intact(cp, "t", 2)
        cp.close()


@pytest.mark.postgres
def test_probe_tells_an_answering_server_from_a_silent_one(pg_dsn: str) -> None:
    from psycopg.conninfo import conninfo_to_dict

    from snapstate.backends._pg_watchdog import probe

    params = {k: str(v) for k, v in conninfo_to_dict(pg_dsn).items()}
    assert probe(params, 2) is None
    # The server refusing (a database that does not exist) is an answer.
    assert probe({**params, "dbname": "no_such_database_here"}, 2) is None
    with freezable(pg_dsn) as (relay, via):
        relay.freeze()
        silent = {k: str(v) for k, v in conninfo_to_dict(via).items()}
        start = time.monotonic()
        reason = probe(silent, 1)
        assert reason is not None and "timeout" in reason, reason
        assert time.monotonic() - start < 5


@pytest.mark.postgres
def test_watchdog_leaves_a_connection_whose_call_finished(pg_dsn: str) -> None:
    """A verdict that comes after the call returned must not touch the connection, which may
    already serve another call."""
    from snapstate.backends import _pg_watchdog

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        with _pg_watchdog.Watch(conn, 0.01, 1) as w:
            pass
        original = _pg_watchdog.probe
        try:
            _pg_watchdog.probe = lambda params, timeout: "no answer"  # type: ignore[assignment]
            _pg_watchdog._check([w])
        finally:
            _pg_watchdog.probe = original  # type: ignore[assignment]
        assert w.reason is None
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("bad", [0, -1, "5", True, float("nan")])
def test_server_timeout_is_validated(bad: Any) -> None:
    from snapstate.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="server_timeout must be seconds > 0 or None"):
        PostgresBackend("postgresql://localhost/none", server_timeout=bad)


@pytest.mark.postgres
@pytest.mark.timeout(60)
def test_pool_check_of_an_idle_connection_on_a_hung_server(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool pings a connection that idled before handing it out; on a hung server that
    ping is watched too."""
    from snapstate.backends import postgres

    monkeypatch.setattr(postgres, "IDLE_CHECK_AFTER", 0.0)  # ping at every checkout
    with freezable(pg_dsn) as (relay, via):
        cp = Checkpointer(PostgresBackend(via, schema=pg_schema, max_connections=1, **_HUNG))
        cp.put(step(0), thread_id="t")
        relay.freeze()
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="while reading a checkpoint"):
            cp.get("t")
        # The ping's server_timeout and probe, then the pool's new connection and ours.
        assert time.monotonic() - start < 15
        relay.thaw()
        _acknowledged_intact(cp, "t", 1)
        cp.close()


@pytest.mark.postgres
@pytest.mark.timeout(60)
def test_probe_with_descriptors_beyond_select_limit(pg_dsn: str) -> None:
    """A busy process may hold more than 1024 descriptors; the check must still work there."""
    import resource

    from psycopg.conninfo import conninfo_to_dict

    from snapstate.backends._pg_watchdog import _ask, probe

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2048
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"the descriptor limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        assert max(held) > 1024
        params = {k: str(v) for k, v in conninfo_to_dict(pg_dsn).items()}
        assert probe(params, 2) is None
        with freezable(pg_dsn) as (relay, via):
            # Logged in, then frozen: the query's wait is what meets the silence.
            relay_params = {k: str(v) for k, v in conninfo_to_dict(via).items()}
            conn = psycopg.connect(via)
            relay.freeze()
            reason = _ask(conn.pgconn, 1)
            assert reason is not None and "no reply within 1 s" in reason, reason
            assert probe(relay_params, 1) is not None
            relay.thaw()
            conn.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
