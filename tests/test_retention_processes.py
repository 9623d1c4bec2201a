"""Retention run by ``snapstate prune`` in OS processes of their own, as cron runs it, on SQLite
(a file) and PostgreSQL (a schema per test): beside a process that keeps writing, SIGKILLed
part-way through a large prune, and sweeping idle threads while one is busy. Three tests hold
a process at a chosen point, where retention and another process once met wrongly.

Runs of ``prune`` beside a writer are ``snapstate.cli.main`` called again and again by one
process (a new interpreter for each would only add its start-up); the others run the command
once in a process of their own, on SQLite as ``python -m snapstate.cli``. On PostgreSQL these
processes put every backend ``main`` opens in the test's schema (``--schema`` would too; this
also covers the backends opened without it). Every child gets this process's ``sys.path``: all
of them import the same snapstate as the test.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import pytest

from snapstate import Checkpoint, Checkpointer, Snapshot
from snapstate.backends import BLOB_DELTA, Backend, open_backend

#: A full copy of the list every 4 versions: retention keeps checkpoints whose deltas build on
#: values of checkpoints it deletes, in every run.
KEYFRAME = 4
KEEP = 3
#: Runs of ``prune`` that deleted something while the writer wrote, before it stops.
SWEEPS = 10
#: A writer stores at least ``MIN_STEPS``, and ``STEPS_PER_RUN`` more each time a run of
#: ``prune`` reports: it stays busy through every run without running far ahead of them.
MIN_STEPS, STEPS_PER_RUN = 40, 64
#: How long a test waits for any one thing another process does before it fails: a hang guard,
#: far above what the slowest machine takes.
WAIT = 60.0

_REPORT = re.compile(r"deleted: (\d+) idle thread\(s\), (\d+) checkpoint\(s\), (\d+) blob\(s\)")

#: Start of the scripts below: ``snapstate.cli.main``, with every backend it opens put in the
#: schema given as the first argument (nothing changes when it is empty).
_IN_SCHEMA = """
import functools, os, sys
import snapstate.backends
from snapstate.cli import main

schema = sys.argv.pop(1)
if schema:
    snapstate.backends.open_backend = functools.partial(
        snapstate.backends.open_backend, schema=schema
    )
"""

#: ``snapstate ARGS`` (``-c`` script; arguments: SCHEMA ARGS).
_CLI = _IN_SCHEMA + "raise SystemExit(main(sys.argv[1:]))\n"

#: ``snapstate ARGS`` again and again, as cron runs it, until the file STOP exists (arguments:
#: SCHEMA STOP ARGS).
_CLI_LOOP = (
    _IN_SCHEMA
    + """
stop = sys.argv.pop(1)
while True:
    code = main(sys.argv[1:])
    sys.stdout.flush()
    if code or os.path.exists(stop):
        raise SystemExit(code)
"""
)

#: ``snapstate ARGS``, held at a point of its work until a line arrives on its standard input
#: (arguments: SCHEMA POINT ARGS). POINT ``listed``: the idle sweep has listed the threads it
#: deletes (and counts their values next). POINT ``values``: ``--keep-last`` has deleted a
#: thread's checkpoints and deletes the values only they reached next. It prints ``held POINT
#: THREAD(S)`` there.
_CLI_HELD = (
    _IN_SCHEMA
    + """
from snapstate.backends.postgres import PostgresBackend
from snapstate.backends.sqlite import SqliteBackend

point = sys.argv.pop(1)
name = {"listed": "blob_counts", "values": "delete_rows"}[point]

def held(method):
    def hold(self, *args):
        if point == "listed" or args[2]:  # delete_rows(thread_id, checkpoints, blobs)
            print("held", point, args[0], flush=True)
            sys.stdin.readline()
        return method(self, *args)
    return hold

for cls in (SqliteBackend, PostgresBackend):
    setattr(cls, name, held(getattr(cls, name)))
raise SystemExit(main(sys.argv[1:]))
"""
)


class Store(NamedTuple):
    """Where a test's store is, in terms every process can use (it is passed to them)."""

    kind: str  # "sqlite" or "postgres"
    url: str  # the file, or the DSN
    schema: str = ""

    def backend(self) -> Backend:
        return open_backend(self.url, **({"schema": self.schema} if self.schema else {}))

    def cli(self, *args: str) -> list[str]:
        """The command line running ``snapstate ARGS`` on this store once."""
        if self.kind == "sqlite":
            return [sys.executable, "-m", "snapstate.cli", *args]
        return [sys.executable, "-c", _CLI, self.schema, *args]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty store with snapstate's tables."""
    if request.param == "sqlite":
        where = Store("sqlite", str(tmp_path / "store.db"))
    else:
        where = Store(
            "postgres",
            request.getfixturevalue("pg_dsn"),
            request.getfixturevalue("pg_schema"),
        )
    with Checkpointer(where.backend()) as cp:
        cp.setup()
    return where


def item(i: int) -> str:
    return f"message number {i}"


_ITEMS: list[str] = []


def values(i: int) -> dict[str, Any]:
    """The channel values of step ``i``: a list that grew by one item a step, and the step."""
    while len(_ITEMS) <= i:
        _ITEMS.append(item(len(_ITEMS)))
    return {"messages": _ITEMS[: i + 1], "step": i}


def put_step(cp: Checkpointer, thread: str, i: int, msgs: list[Any], *, first: bool) -> None:
    """Step ``i``: ``msgs`` is the previous step's list (the same item objects) plus one, so
    the list is stored as an append-delta on the previous version."""
    cp.put(
        Checkpoint(
            id=f"{i:08d}",
            channel_values={"messages": msgs, "step": i},
            channel_versions={"messages": i + 1, "step": i + 1},
        ),
        thread_id=thread,
        parent_id=f"{i - 1:08d}" if i else None,
        metadata={"step": i},
        changed=None if first else ["messages", "step"],
    )


def grow(cp: Checkpointer, thread: str, steps: int, *, writes: bool = True) -> None:
    """Steps 0 to ``steps - 1`` of ``thread``, each with one pending write."""
    msgs: list[Any] = []
    for i in range(steps):
        msgs = [*msgs, item(i)]
        put_step(cp, thread, i, msgs, first=i == 0)
        if writes:
            cp.put_writes([("out", i)], thread_id=thread, checkpoint_id=f"{i:08d}", task_id="k")


def write_process(
    store: Store, thread: str, durability: str, start: int, stop: Any, steps: Any, q: Any
) -> None:
    """A worker process: writes ``thread`` from step ``start`` on, a step for each permit it
    takes from the semaphore ``steps``, until ``stop`` is set; every few steps it reads its
    latest checkpoint back, as a graph does at the start of a turn. Reports ``("writing",
    start)`` once the first step is stored, then ``("ok", last step)`` or ``("error",
    traceback)``."""
    try:
        last = start - 1
        with Checkpointer(
            store.backend(), durability=durability, delta_keyframe_every=KEYFRAME
        ) as cp:
            msgs = [item(k) for k in range(start)]
            for i in itertools.count(start):
                if stop.is_set() and i - start >= MIN_STEPS:
                    break
                if not steps.acquire(timeout=WAIT):
                    raise AssertionError(f"no permit for step {i} in {WAIT} s")
                msgs = [*msgs, item(i)]
                put_step(cp, thread, i, msgs, first=i == start)
                last = i
                if i == start:
                    cp.flush()
                    q.put(("writing", i))
                if i % 4 == 3:
                    got = cp.get(thread)
                    if got is None or (got.checkpoint.id, got.checkpoint.channel_values) != (
                        f"{i:08d}",
                        values(i),
                    ):
                        raise AssertionError(f"step {i} read back as {got!r:.500}")
        q.put(("ok", last))
    except BaseException:
        q.put(("error", traceback.format_exc()))


def _env() -> dict[str, str]:
    """The environment of a child: this process's, with its ``sys.path``."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def _lines(pipe: IO[str]) -> queue.Queue[str | None]:
    """The lines of ``pipe`` as they come, read by a thread of their own; None at the end."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in pipe:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def run_cli(store: Store, *args: str) -> str:
    """``snapstate ARGS`` in a process of its own; its standard output. It must succeed."""
    proc = subprocess.run(
        store.cli(*args), capture_output=True, text=True, timeout=WAIT, env=_env(), check=False
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr)
    return proc.stdout


class Sweeper:
    """``snapstate prune ARGS`` run again and again by one process of its own until stopped;
    each run's counts are read as it reports them."""

    def __init__(self, store: Store, tmp_path: Path, *args: str) -> None:
        self.stop_file = tmp_path / f"stop-{uuid.uuid4().hex}"
        self.err = (tmp_path / f"sweeper-{uuid.uuid4().hex}.err").open("w+")
        argv = [store.schema, str(self.stop_file), "prune", store.url, *args]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CLI_LOOP, *argv],
            stdout=subprocess.PIPE,
            stderr=self.err,
            text=True,
            env=_env(),
        )
        assert self.proc.stdout is not None
        self.out = self.proc.stdout
        self.lines = _lines(self.out)
        self.reports: list[tuple[int, int, int]] = []

    def next_report(self) -> tuple[int, int, int]:
        """The counts (idle threads, checkpoints, blobs) of its next run of ``prune``."""
        while True:
            line = self.lines.get(timeout=WAIT)
            if line is None:
                pytest.fail(f"the prune process exited: {self.errors()}")
            m = _REPORT.match(line)
            if m:
                report = (int(m[1]), int(m[2]), int(m[3]))
                self.reports.append(report)
                return report

    def poll(self) -> int:
        """Take the counts of the runs reported since, without waiting; how many there are."""
        n = len(self.reports)
        with contextlib.suppress(queue.Empty):
            while (line := self.lines.get_nowait()) is not None:
                if m := _REPORT.match(line):
                    self.reports.append((int(m[1]), int(m[2]), int(m[3])))
        return len(self.reports) - n

    def deleting(self) -> int:
        """How many of its runs have deleted checkpoints."""
        return sum(1 for _, n, _ in self.reports if n)

    def errors(self) -> str:
        self.err.seek(0)
        return self.err.read()[-3000:]

    def stop(self) -> None:
        """Stop after the run in progress; it must exit cleanly, having met no error."""
        self.stop_file.touch()
        try:
            code = self.proc.wait(timeout=WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(WAIT)
        while (line := self.lines.get(timeout=WAIT)) is not None:
            if m := _REPORT.match(line):
                self.reports.append((int(m[1]), int(m[2]), int(m[3])))
        self.out.close()  # its reading thread is done with it: it put the None above
        text = self.errors()
        self.err.close()
        assert code == 0 and "Traceback" not in text and "error" not in text, (code, text)


class Writer:
    """A spawned process running :func:`write_process`."""

    def __init__(self, proc: Any, stop: Any, steps: Any, q: Any) -> None:
        self.proc, self.stop, self.steps, self.q = proc, stop, steps, q

    def allow(self, n: int = STEPS_PER_RUN) -> None:
        """Let it write ``n`` more steps (it never waits for them to be written)."""
        for _ in range(n):
            self.steps.release()

    def alive(self) -> bool:
        """Still writing: neither exited nor reported an end."""
        return bool(self.proc.is_alive()) and self.q.empty()

    def finish(self) -> int:
        """Stop it; the last step it stored. It must have met no error."""
        self.stop.set()
        self.allow(MIN_STEPS)
        status, detail = self.q.get(timeout=WAIT)
        assert status == "ok", detail
        self.proc.join(WAIT)
        assert self.proc.exitcode == 0
        return int(detail)


@contextlib.contextmanager
def writer(store: Store, thread: str, durability: str, start: int = 0) -> Iterator[Writer]:
    """A writer process allowed ``STEPS_PER_RUN`` steps, entered once it has stored its first;
    stopped on exit."""
    ctx = mp.get_context("spawn")
    stop, steps, q = ctx.Event(), ctx.Semaphore(STEPS_PER_RUN), ctx.Queue()
    proc = ctx.Process(
        target=write_process, args=(store, thread, durability, start, stop, steps, q)
    )
    proc.start()
    w = Writer(proc, stop, steps, q)
    try:
        first = q.get(timeout=WAIT)
        assert first == ("writing", start), first[1]
        yield w
    finally:
        stop.set()
        w.allow(MIN_STEPS)
        proc.join(WAIT)
        if proc.exitcode is None:
            proc.kill()
            proc.join(WAIT)


def assert_step(snap: Snapshot, *, writes: bool) -> None:
    """A checkpoint of :func:`grow` or a writer reads back exactly as it was written."""
    i = int(snap.checkpoint.id)
    assert snap.checkpoint.channel_values == values(i), f"checkpoint {i} reads back wrong"
    assert snap.metadata == {"step": i}
    if writes:
        assert [(w.channel, w.value) for w in snap.pending_writes] == [("out", i)], i


def assert_newest_whole(reader: Checkpointer, thread: str) -> None:
    """The newest checkpoint of ``thread`` reads back exactly as written, unless retention
    deleted it between the reads of its row and of its values (see
    test_a_history_read_across_a_prune_shows_only_whole_checkpoints): wrong values are a
    failure when it is still stored after the read."""
    snap = reader.get(thread)
    assert snap is not None
    if snap.checkpoint.channel_values != values(int(snap.checkpoint.id)):
        stored = reader.backend.get_checkpoint(thread, "", snap.checkpoint.id)
        assert stored is None, f"checkpoint {snap.checkpoint.id} is stored and reads back wrong"
    else:
        assert_step(snap, writes=False)


# -- 1. prune beside a writer process ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("durability", ["sync", "batched"])
def test_prune_processes_beside_a_writer_process(
    store: Store, tmp_path: Path, durability: str
) -> None:
    """A worker process keeps writing a thread whose list grows a step at a time (append-deltas
    on values retention deletes) and reading it back, while another process runs ``snapstate
    prune --keep-last`` again and again and this one reads the newest checkpoint. Nobody meets
    an error or a wrong value; the newest checkpoint is the last one written and every
    checkpoint still stored reads back exactly; one more prune leaves exactly the newest
    ``KEEP``."""
    with writer(store, "live", durability) as w, Checkpointer(store.backend()) as reader:
        sweeper = Sweeper(store, tmp_path, "--keep-last", str(KEEP), "--thread", "live")
        try:
            # Each run that deleted something saw steps the writer stored after the previous.
            deadline = time.monotonic() + WAIT  # a hang guard
            while sweeper.deleting() < SWEEPS and w.alive():
                # Meanwhile this process reads the newest checkpoint, as a service would.
                assert_newest_whole(reader, "live")
                w.allow(STEPS_PER_RUN * sweeper.poll())
                assert time.monotonic() < deadline, sweeper.reports
            last = w.finish()
        finally:
            sweeper.stop()
    assert sweeper.deleting() >= SWEEPS
    assert last >= MIN_STEPS

    with Checkpointer(store.backend()) as cp:
        snaps = list(cp.list("live"))
    ids = [int(s.checkpoint.id) for s in snaps]
    # Retention deleted only older checkpoints than the newest it saw: what is left runs without
    # a gap up to the last step stored.
    assert ids == list(range(last, last - len(ids), -1)) and len(ids) >= KEEP, ids
    for s in snaps:
        assert_step(s, writes=False)
        i = int(s.checkpoint.id)
        # The oldest left lost its parent to retention (or never had one).
        assert s.parent_id == (None if i == ids[-1] else f"{i - 1:08d}"), (i, s.parent_id)

    out = run_cli(store, "prune", store.url, "--keep-last", str(KEEP), "--thread", "live")
    assert f"deleted: 0 idle thread(s), {len(ids) - KEEP} checkpoint(s)" in out, out
    with Checkpointer(store.backend()) as cp:
        snaps = list(cp.list("live"))
        kinds = {b.kind for b in cp.backend.blob_index("live")}
    assert [int(s.checkpoint.id) for s in snaps] == list(range(last, last - KEEP, -1))
    for s in snaps:
        assert_step(s, writes=False)
    assert BLOB_DELTA in kinds  # the lists kept are stored as deltas on earlier versions


# -- 2. a prune SIGKILLed part-way ---------------------------------------------------------------

#: Four threads of 520 checkpoints: a thread's prune deletes its checkpoints in two transactions
#: (the command's chunk is 500 rows) and its values in three.
KILL_THREADS, KILL_STEPS, KILL_KEEP = 4, 520, 5


class Rows:
    """A client of the store of its own, which counts rows as any client would."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.conn: Any
        if store.kind == "sqlite":
            self.conn = sqlite3.connect(store.url, timeout=WAIT, isolation_level=None)
            self.prefix = ""
        else:
            import psycopg

            self.conn = psycopg.connect(store.url, autocommit=True)
            self.prefix = f'"{store.schema}".'

    def count(self) -> tuple[int, int, int]:
        """Rows of checkpoints, blobs and pending writes."""
        p = self.prefix
        row = self.conn.execute(
            f"SELECT (SELECT count(*) FROM {p}checkpoints), (SELECT count(*) FROM {p}blobs), "
            f"(SELECT count(*) FROM {p}writes)"
        ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def sessions_gone(self, app: str) -> None:
        """Wait until the server has ended the sessions of a killed process (their
        transactions rolled back, their locks released)."""
        deadline = time.monotonic() + WAIT
        while self.store.kind == "postgres" and self.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app]
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, f"the sessions of {app} never ended"

    def __enter__(self) -> Rows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def _blob_keys(cp: Checkpointer, threads: list[str]) -> dict[str, list[tuple[str, str, str]]]:
    return {
        t: sorted((b.namespace, b.channel, b.version) for b in cp.backend.blob_index(t))
        for t in threads
    }


def assert_whole(cp: Checkpointer, threads: list[str]) -> None:
    """Every checkpoint still stored reads back whole, with its pending write and a parent that
    is stored or none; the newest ``KILL_KEEP`` of every thread are all there."""
    newest = [f"{i:08d}" for i in range(KILL_STEPS - 1, KILL_STEPS - 1 - KILL_KEEP, -1)]
    for t in threads:
        snaps = list(cp.list(t))
        ids = [s.checkpoint.id for s in snaps]
        assert ids[:KILL_KEEP] == newest, (t, ids[:KILL_KEEP])
        for s in snaps:
            assert_step(s, writes=True)
            assert s.parent_id is None or s.parent_id in ids, (t, s.checkpoint.id, s.parent_id)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_prune_killed_part_way_leaves_every_checkpoint_whole(
    store: Store, tmp_path: Path
) -> None:
    """``snapstate prune --keep-last`` over many threads of many checkpoints is SIGKILLed as
    soon as rows are seen gone, three times over. Each time, every checkpoint still stored
    reads back whole with its writes, and none of those to keep is gone. Run once more it
    completes: exactly the newest of each thread are left, whole, with their writes and every
    value an uninterrupted prune keeps, and no other checkpoint or pending write."""
    threads = [f"t{k}" for k in range(KILL_THREADS)]
    with Checkpointer(store.backend(), durability="batched", delta_keyframe_every=KEYFRAME) as cp:
        for t in threads:
            grow(cp, t, KILL_STEPS)
        cp.flush()  # the backend is read directly next
        assert all(BLOB_DELTA in {b.kind for b in cp.backend.blob_index(t)} for t in threads)
    # The same history, pruned without interruption in memory: the values that stay.
    with Checkpointer("memory://", delta_keyframe_every=KEYFRAME) as ref:
        for t in threads:
            grow(ref, t, KILL_STEPS)
        ref.retain(keep_last=KILL_KEEP)
        kept_values = _blob_keys(ref, threads)
    kept = KILL_THREADS * KILL_KEEP
    kills = []
    with Rows(store) as rows:
        total = rows.count()
        assert total[0] == total[2] == KILL_THREADS * KILL_STEPS
        for _ in range(3):
            before = sum(rows.count())
            app = f"snapstate-kill-{uuid.uuid4().hex[:12]}"
            with (tmp_path / f"{app}.err").open("w+") as err:
                proc = subprocess.Popen(
                    store.cli("prune", store.url, "--keep-last", str(KILL_KEEP)),
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    env={**_env(), "PGAPPNAME": app},
                )
                try:
                    deadline = time.monotonic() + WAIT  # a hang guard
                    while proc.poll() is None and sum(rows.count()) >= before:
                        assert time.monotonic() < deadline, "the prune deleted nothing"
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGKILL)
                    code = proc.wait(WAIT)
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait(WAIT)
                err.seek(0)
                assert "Traceback" not in err.read()
            if code == 0:  # it finished first: only once the earlier runs left it little to do
                break
            assert code == -signal.SIGKILL, code
            rows.sessions_gone(app)
            kills.append(rows.count())
            with Checkpointer(store.backend()) as cp:
                assert_whole(cp, threads)
        # The first kill came part-way: some rows were gone, some checkpoints to go were not.
        assert kills and kills[0][0] > kept and sum(kills[0]) < sum(total), (total, kills)

        out = run_cli(store, "prune", store.url, "--keep-last", str(KILL_KEEP))
        assert "deleted: 0 idle thread(s)" in out, out
        with Checkpointer(store.backend()) as cp:
            assert_whole(cp, threads)
            for t in threads:
                assert len(list(cp.list(t))) == KILL_KEEP
            stored = _blob_keys(cp, threads)
        # Every value an uninterrupted prune keeps is there; more may be (the values a killed
        # run did not get to delete: test_a_prune_after_a_killed_one_deletes_the_values_it_left).
        for t in threads:
            assert set(kept_values[t]) <= set(stored[t]), t
        checkpoints, _, writes = rows.count()
        assert (checkpoints, writes) == (kept, kept)


class Held:
    """``snapstate ARGS`` in a process of its own, held at ``point`` (see ``_CLI_HELD``).

    Its failures are ``pytest.fail``, not ``AssertionError``: the tests using it are expected to
    fail on an assertion (a known bug), and a failure of the set-up must not pass for that."""

    def __init__(self, store: Store, point: str, *args: str) -> None:
        self.app = f"snapstate-held-{uuid.uuid4().hex[:12]}"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CLI_HELD, store.schema, point, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**_env(), "PGAPPNAME": self.app},
        )
        assert self.proc.stdout is not None
        self.lines = _lines(self.proc.stdout)

    def wait_held(self, expected: str) -> None:
        line = self.lines.get(timeout=WAIT)
        if line != expected:  # not an AssertionError: the test no longer tests what it says
            pytest.fail(f"expected {expected!r} from the held process, got {line!r}")

    def go_on(self) -> None:
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.close()
        code = self.proc.wait(WAIT)
        err = self.proc.stderr.read()
        if code != 0 or "Traceback" in err:
            pytest.fail(f"the held process failed ({code}): {err[-3000:]}")

    def kill(self) -> None:
        self.proc.kill()
        if self.proc.wait(WAIT) != -signal.SIGKILL:
            pytest.fail(f"the held process exited with {self.proc.returncode} before the kill")

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.mark.timeout(120)
def test_a_prune_after_a_killed_one_deletes_the_values_it_left(store: Store) -> None:
    """A prune is SIGKILLed right after it deleted a thread's old checkpoints, before the values
    only they reached; every checkpoint left reads whole. The next prune deletes those values:
    the store holds what an uninterrupted prune leaves."""
    with Checkpointer(store.backend(), delta_keyframe_every=KEYFRAME) as cp:
        grow(cp, "t", 40)
    with Checkpointer("memory://", delta_keyframe_every=KEYFRAME) as ref:
        grow(ref, "t", 40)
        ref.retain(keep_last=KILL_KEEP)
        kept_values = _blob_keys(ref, ["t"])
    with Held(store, "values", "prune", store.url, "--keep-last", str(KILL_KEEP)) as held:
        held.wait_held("held values t")
        held.kill()
    with Rows(store) as rows:
        rows.sessions_gone(held.app)
    with Checkpointer(store.backend()) as cp:
        snaps = list(cp.list("t"))
        try:
            assert [s.checkpoint.id for s in snaps] == [f"{i:08d}" for i in range(39, 34, -1)]
            for s in snaps:
                assert_step(s, writes=True)
        except AssertionError as exc:  # not the failure this test expects
            pytest.fail(f"the killed prune left the checkpoints to keep broken: {exc}")
    run_cli(store, "prune", store.url, "--keep-last", str(KILL_KEEP))
    with Checkpointer(store.backend()) as cp:
        assert _blob_keys(cp, ["t"]) == kept_values


@pytest.mark.timeout(120)
def test_a_history_read_across_a_prune_shows_only_whole_checkpoints(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This process reads a thread's history; once it has read the checkpoints' rows, another
    process runs ``snapstate prune --keep-last 2`` to its end; then it reads their values. Each
    checkpoint it returns reads back exactly as written (those that went may be left out)."""
    with Checkpointer(store.backend(), delta_keyframe_every=KEYFRAME) as cp:
        grow(cp, "t", 10)
    pruned: list[subprocess.CompletedProcess[str]] = []
    with Checkpointer(store.backend()) as reader:
        get_blobs = reader.backend.get_blobs

        def prune_first(*args: Any) -> Any:
            if not pruned:
                pruned.append(
                    subprocess.run(
                        store.cli("prune", store.url, "--keep-last", "2"),
                        capture_output=True,
                        text=True,
                        timeout=WAIT,
                        env=_env(),
                        check=False,
                    )
                )
            return get_blobs(*args)

        monkeypatch.setattr(reader.backend, "get_blobs", prune_first)
        snaps = list(reader.list("t"))
    if not pruned or pruned[0].returncode != 0:  # not the failure this test expects
        pytest.fail(f"the prune did not run between the reads: {pruned}")
    assert "8 checkpoint(s)" in pruned[0].stdout
    for s in snaps:
        assert_step(s, writes=True)


# -- 3. idle threads expire; the busy one stays -----------------------------------------------


def _old_threads(
    store: Store, monkeypatch: pytest.MonkeyPatch, threads: list[str], steps: int
) -> None:
    """Histories of ``steps`` checkpoints, put under a clock set three days back (the engine
    stamps each checkpoint with ``time.time()``)."""
    then = time.time() - 3 * 86400
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: then)
        with Checkpointer(store.backend(), delta_keyframe_every=KEYFRAME) as cp:
            for t in threads:
                grow(cp, t, steps, writes=False)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_idle_sweeps_in_another_process_never_delete_the_busy_thread(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nine threads were last written three days ago; a worker process takes one of them up
    again and keeps writing it while another process runs ``snapstate prune --idle 1d`` over
    the whole store again and again. The eight idle threads go; the busy one, old history and
    new, stays whole, and its writer never finds it deleted."""
    idle = [f"idle-{k}" for k in range(8)]
    _old_threads(store, monkeypatch, [*idle, "busy"], 6)
    with writer(store, "busy", "sync", start=6) as w:
        sweeper = Sweeper(store, tmp_path, "--idle", "1d")
        try:
            while len(sweeper.reports) < 3 and w.alive():
                sweeper.next_report()
                w.allow()
            last = w.finish()
        finally:
            sweeper.stop()
    assert len(sweeper.reports) >= 3
    assert sum(n for n, _, _ in sweeper.reports) == len(idle), sweeper.reports
    with Checkpointer(store.backend()) as cp:
        for t in idle:
            assert cp.get(t) is None, t
        snaps = list(cp.list("busy"))
    assert [int(s.checkpoint.id) for s in snaps] == list(range(last, -1, -1))
    for s in snaps:
        assert_step(s, writes=False)


@pytest.mark.timeout(120)
def test_a_thread_taken_up_while_a_sweep_runs_keeps_its_new_checkpoint(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep process lists thread ``t`` as idle and is held there; this process stores a
    new checkpoint of ``t``; then the sweep goes on. The checkpoint was acknowledged, and ``t``
    is no longer idle: it must stay."""
    _old_threads(store, monkeypatch, ["t"], 3)
    with Held(store, "listed", "prune", store.url, "--idle", "1d") as held:
        held.wait_held("held listed ['t']")
        with Checkpointer(store.backend(), delta_keyframe_every=KEYFRAME) as cp:
            put_step(cp, "t", 3, [item(k) for k in range(4)], first=True)  # acknowledged
        held.go_on()
    with Checkpointer(store.backend()) as cp:
        got = cp.get("t")
    assert got is not None and got.checkpoint.id == "00000003", got
    assert got.checkpoint.channel_values == values(3)
