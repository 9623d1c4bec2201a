"""The SQLite backend: its own configuration, threads and processes sharing one file, misuse."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from snapstate import Checkpoint, Checkpointer, ConfigurationError, StoreUnavailableError
from snapstate.backends.sqlite import SqliteBackend

from .processes import run_together


def cp(i: int, values: dict[str, Any]) -> Checkpoint:
    return Checkpoint(
        id=f"{i:08d}", channel_values=values, channel_versions={k: i + 1 for k in values}
    )


def pragmas(conn: sqlite3.Connection) -> tuple[str, int, int]:
    return (
        conn.execute("PRAGMA journal_mode").fetchone()[0],
        conn.execute("PRAGMA synchronous").fetchone()[0],
        conn.execute("PRAGMA busy_timeout").fetchone()[0],
    )


def test_store_configures_its_connections(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path / "a.db", synchronous="full", busy_timeout=7)
    backend.setup()
    with backend._conn() as conn:
        assert pragmas(conn) == ("wal", 2, 7000)
    backend.close()


@pytest.mark.parametrize(("synchronous", "level"), [("off", 0), ("normal", 1), ("full", 2)])
def test_every_connection_that_writes_has_the_synchronous_level(
    tmp_path: Path, synchronous: Any, level: int
) -> None:
    # Small writes go through the compiled connection where there is one ("off" and "normal"):
    # it must flush as the setting says, as the pooled connections do.
    backend = SqliteBackend(tmp_path / "s.db", synchronous=synchronous)
    with Checkpointer(backend) as saver:
        saver.put(cp(1, {"x": 1}), thread_id="t")
        with backend._conn() as conn:
            assert pragmas(conn)[1] == level
        # The compiled connection writes when it is built and the setting allows it.
        assert (backend._native is not None) is backend.native_writes
        if backend._native is not None:
            assert backend._native.query("PRAGMA synchronous", ()) == [(level,)]


def test_given_connection_is_configured(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "b.db", check_same_thread=False)
    assert pragmas(conn)[0] == "delete"
    with Checkpointer(SqliteBackend(conn)) as saver:
        saver.put(cp(1, {"x": 1}), thread_id="t")
        assert pragmas(conn) == ("wal", 1, 30000)
    conn.execute("SELECT 1")  # a shared connection stays open: it belongs to the caller
    conn.close()


@pytest.mark.parametrize("page_size", [1024, 8192])
def test_a_new_file_keeps_the_page_size_its_connection_chose(
    tmp_path: Path, page_size: int
) -> None:
    """docs/backends.md: a page size set on a given connection before the first write is the
    file's; small values, values spilling into overflow pages (20,000 characters that do not
    compress) and a stored-once payload all read back, and a second store opening the file by
    its path sees the same."""
    path = tmp_path / "pages.db"
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute(f"PRAGMA page_size={page_size}")
    small = {"messages": ["hi"] * 3}
    spilling = {"messages": [os.urandom(10_000).hex()]}
    pending = os.urandom(5000).hex()
    payload = {"blob": os.urandom(300_000)}
    with Checkpointer(SqliteBackend(conn)) as saver:
        for i, values in enumerate((small, spilling, payload)):
            saver.put(cp(i, values), thread_id="t", namespace=str(i))
        saver.put_writes(
            [("messages", pending)],
            thread_id="t",
            namespace="0",
            checkpoint_id="00000000",
            task_id="a",
        )
        assert conn.execute("PRAGMA page_size").fetchone()[0] == page_size
        for i, values in enumerate((small, spilling, payload)):
            snap = saver.get("t", str(i))
            assert snap is not None and snap.checkpoint.channel_values == values
    conn.close()
    with Checkpointer(SqliteBackend(path)) as again:
        snap = again.get("t", "1")
        assert snap is not None and snap.checkpoint.channel_values == spilling
        first = again.get("t", "0")
        assert first is not None and [w.value for w in first.pending_writes] == [pending]
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA page_size").fetchone()[0] == page_size
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()


def test_given_connection_inside_a_transaction_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "c.db", check_same_thread=False, isolation_level=None)
    with contextlib.closing(conn), Checkpointer(SqliteBackend(conn)) as saver:
        saver.setup()
        conn.execute("BEGIN")
        with pytest.raises(ConfigurationError, match="inside a transaction") as err:
            saver.put(cp(1, {"x": 1}), thread_id="t")
        assert "commit or roll back" in str(err.value)
        conn.execute("ROLLBACK")
        saver.put(cp(1, {"x": 1}), thread_id="t")
        assert saver.get("t") is not None


def test_given_connection_closed_under_the_store(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "e.db", check_same_thread=False)
    saver = Checkpointer(SqliteBackend(conn))
    saver.setup()
    saver.put(cp(1, {"x": 1}), thread_id="t")
    conn.close()
    # Writes (the compiled path checks the connection first), reads, deletes: the store's error.
    for call in (
        lambda: saver.put(cp(2, {"x": 2}), thread_id="t"),
        lambda: saver.get("t"),
        lambda: saver.delete_thread("t"),
    ):
        with pytest.raises(StoreUnavailableError, match="connection is closed") as err:
            call()
        assert "keep the connection" in str(err.value)
    saver.close()
    # A closed store names the file behind the connection it was given.
    with pytest.raises(StoreUnavailableError, match="is closed") as err:
        saver.get("t")
    assert str(tmp_path / "e.db") in str(err.value)
    # Nothing was written or deleted.
    with contextlib.closing(sqlite3.connect(tmp_path / "e.db")) as check:
        assert check.execute("SELECT count(*) FROM checkpoints").fetchone() == (1,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"synchronous": "sometimes"}, "synchronous must be .*got 'sometimes'"),
        ({"synchronous": None}, "synchronous must be .*got None"),
        ({"busy_timeout": -1}, "busy_timeout must be .* >= 0, got -1"),
        ({"busy_timeout": "5"}, "busy_timeout must be .*got '5'"),
        ({"busy_timeout": float("nan")}, "busy_timeout must be a finite .*got nan"),
        ({"busy_timeout": float("inf")}, "busy_timeout must be a finite .*got inf"),
        ({"busy_timeout": True}, "busy_timeout must be .*got True"),
    ],
)
def test_bad_settings(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SqliteBackend(tmp_path / "d.db", **kwargs)


def test_a_connection_to_an_in_memory_database_is_refused_with_a_hint() -> None:
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    try:
        with pytest.raises(ConfigurationError, match="cannot use WAL journaling") as err:
            SqliteBackend(conn)
        assert "connection to a file" in str(err.value) and "memory://" in str(err.value)
    finally:
        conn.close()


def test_in_memory_sqlite_is_refused_with_a_hint() -> None:
    with pytest.raises(ConfigurationError, match="private to one connection") as err:
        SqliteBackend(":memory:")
    assert "memory://" in str(err.value) and "a file" in str(err.value)


def test_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    from snapstate import StoreUnavailableError

    path = tmp_path / "no" / "such" / "dir" / "x.db"
    with pytest.raises(StoreUnavailableError, match="cannot open SQLite database") as err:
        Checkpointer(path).get("t")
    assert str(path) in str(err.value)  # says where


def test_many_threads_one_checkpointer(tmp_path: Path) -> None:
    saver = Checkpointer(tmp_path / "threads.db")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            msgs: list[str] = []
            for i in range(40):
                msgs = [*msgs, f"{n}:{i}"]
                saver.put(cp(i, {"m": msgs, "n": n}), thread_id=f"t{n}")
                saver.put_writes(
                    [("w", i)], thread_id=f"t{n}", checkpoint_id=f"{i:08d}", task_id="k"
                )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for n in range(8):
        snaps = list(saver.list(f"t{n}"))
        assert len(snaps) == 40
        assert snaps[0].checkpoint.channel_values["m"] == [f"{n}:{i}" for i in range(40)]
        assert all(len(s.pending_writes) == 1 for s in snaps)
    saver.close()


def _write_thread(path: str, n: int, count: int, barrier: Any, q: Any) -> None:
    try:
        saver = Checkpointer(path)
        barrier.wait(60)
        msgs: list[str] = []
        for i in range(count):
            msgs = [*msgs, f"p{n} item {i}"]
            saver.put(
                cp(i, {"m": msgs, "pid": os.getpid()}),
                thread_id=f"proc-{n}",
                metadata={"proc": n, "i": i},
            )
        saver.close()
        q.put("ok")
    except BaseException as exc:  # reported to the parent
        q.put(f"{type(exc).__name__}: {exc}")


def test_four_processes_write_one_file(tmp_path: Path) -> None:
    path = str(tmp_path / "procs.db")
    count = 150
    results = run_together(_write_thread, [(path, n, count) for n in range(4)])
    assert results == ["ok"] * 4
    with Checkpointer(path) as saver:
        for n in range(4):
            snaps = list(saver.list(f"proc-{n}"))
            assert [s.checkpoint.id for s in snaps] == [
                f"{i:08d}" for i in range(count - 1, -1, -1)
            ]
            for s in snaps:
                i = int(s.checkpoint.id)
                assert s.checkpoint.channel_values["m"] == [f"p{n} item {j}" for j in range(i + 1)]
                assert s.metadata == {"proc": n, "i": i}
        assert saver.stats().threads == 4


@pytest.mark.parametrize("held", ["", "_native_lock", "_pool_lock", "_checkpointer_lock"])
def test_forked_child_uses_its_own_connections(tmp_path: Path, held: str) -> None:
    """``held``: one of the backend's locks is held at the fork, as by a thread the child does
    not have (the compiled connection's, during a write; the connection pool's; the one that
    starts the WAL checkpointer). The child gets locks of its own."""
    from .forking import child_ok

    backend = SqliteBackend(tmp_path / "fork.db")
    saver = Checkpointer(backend)
    saver.put(cp(1, {"x": "parent"}), thread_id="t")

    def in_child() -> bool:
        saver.put(cp(2, {"x": "child"}), thread_id="t")
        got = saver.get("t")
        return got is not None and got.checkpoint.channel_values == {"x": "child"}

    assert child_ok(in_child, held=getattr(backend, held) if held else None)
    got = saver.get("t")
    assert got is not None and got.checkpoint.channel_values == {"x": "child"}
    saver.close()


def test_configuring_retries_a_locked_file_within_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a file another connection is switching to WAL or setting up, some lock waits fail at
    # once instead of going through the busy handler; configuring is retried.
    real = SqliteBackend._configure
    failures = {"left": 3}

    def flaky(self: SqliteBackend, conn: sqlite3.Connection) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise sqlite3.OperationalError("database is locked")
        real(self, conn)

    monkeypatch.setattr(SqliteBackend, "_configure", flaky)
    with Checkpointer(SqliteBackend(tmp_path / "r.db", busy_timeout=5)) as saver:
        saver.put(cp(1, {"x": 1}), thread_id="t")
        assert saver.get("t") is not None
    assert failures["left"] == 0

    def always_locked(self: SqliteBackend, conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("database is locked")

    from snapstate import StoreUnavailableError

    monkeypatch.setattr(SqliteBackend, "_configure", always_locked)
    with pytest.raises(StoreUnavailableError, match="locked while configuring"):
        Checkpointer(SqliteBackend(tmp_path / "r2.db", busy_timeout=0.2)).get("t")


@pytest.mark.timeout(60)
def test_a_grouped_put_returns_only_after_its_commit(tmp_path: Path) -> None:
    """Puts from three threads on one store: the second and third wait behind the first's
    commit and then go in one commit, led by one of them. Neither returns before that
    commit is over (each commit is held here until the test lets it go)."""
    backend = SqliteBackend(tmp_path / "group.db")
    saver = Checkpointer(backend)
    saver.setup()
    entered, proceed = threading.Semaphore(0), threading.Semaphore(0)
    real_write = backend.write

    def held_write(batch: Any) -> None:
        entered.release()
        assert proceed.acquire(timeout=30)
        real_write(batch)

    backend.write = held_write  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def put(thread_id: str) -> threading.Thread:
        def run() -> None:
            try:
                saver.put(cp(1, {"x": thread_id}), thread_id=thread_id)
            except BaseException as exc:  # reported below
                errors.append(exc)

        t = threading.Thread(target=run)
        t.start()
        return t

    first = put("a")
    assert entered.acquire(timeout=30)  # the first commit is under way, and held
    later = [put("b"), put("c")]
    writer: Any = saver._writer
    assert _wait_for(lambda: len(writer._queue) == 2, timeout=30)  # both wait behind it
    proceed.release()
    first.join(30)
    assert entered.acquire(timeout=30)  # the group's commit is under way, and held
    for t in later:
        t.join(0.3)
    assert all(t.is_alive() for t in later), "a put returned before its commit"
    assert [s.checkpoint.channel_values for s in saver.list("b")] == []  # not committed yet
    proceed.release()
    for t in later:
        t.join(30)
    assert errors == [] and not any(t.is_alive() for t in [first, *later])
    for tid in ("a", "b", "c"):
        snap = saver.get(tid)
        assert snap is not None and snap.checkpoint.channel_values == {"x": tid}
    saver.close()


def test_a_write_lock_held_past_busy_timeout_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    with Checkpointer(SqliteBackend(path, busy_timeout=0.2)) as saver:
        saver.put(cp(1, {"x": 1}), thread_id="t")
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process's write in progress
            with pytest.raises(StoreUnavailableError) as err:
                saver.put(cp(2, {"x": 2}), thread_id="t")
            message = str(err.value)
            assert "is locked while writing a batch" in message and str(path) in message
            assert "busy_timeout" in message  # the hint says what to change
        finally:
            other.execute("ROLLBACK")
            other.close()
        saver.put(cp(2, {"x": 2}), thread_id="t")  # the lock is gone: the same put is stored
        assert [s.checkpoint.id for s in saver.list("t")] == ["00000002", "00000001"]


# -- WAL checkpoints in the background ---------------------------------------------------------


def _wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_commits_leave_checkpoints_to_a_background_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import snapstate.backends.sqlite as mod

    monkeypatch.setattr(mod, "_CHECKPOINT_EVERY", 20)
    callers: list[str] = []
    real_checkpoint = mod._WalCheckpointer.checkpoint

    def checkpoint(conn: sqlite3.Connection) -> int:
        # Only this test's file: checkpointer threads of other tests' stores may still run.
        if Path(conn.execute("PRAGMA database_list").fetchone()[2]).resolve() == path.resolve():
            callers.append(threading.current_thread().name)
        return real_checkpoint(conn)

    monkeypatch.setattr(mod._WalCheckpointer, "checkpoint", staticmethod(checkpoint))
    path = tmp_path / "w.db"
    backend = SqliteBackend(path)
    with Checkpointer(backend) as saver:
        with backend._conn() as conn:
            assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        db_size = os.path.getsize(path)
        for i in range(60):
            saver.put(cp(i, {"x": os.urandom(3000)}), thread_id="t")
        assert backend._checkpointer is not None
        thread = backend._checkpointer._thread
        assert thread.name == "snapstate-wal-checkpoint:w.db" and thread.is_alive()
        # The thread copies the WAL's pages into the database file, which grows with them.
        assert _wait_for(lambda: os.path.getsize(path) > db_size + 60 * 3000 // 2)
        assert saver.get("t") is not None
    assert not thread.is_alive()
    # Every checkpoint ran in that thread: none inside a commit of the writing thread.
    assert callers and set(callers) == {thread.name}, callers


def test_a_stuck_checkpointer_falls_back_to_checkpointing_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import snapstate.backends.sqlite as mod

    monkeypatch.setattr(mod, "_CHECKPOINT_EVERY", 5)
    monkeypatch.setattr(mod, "_CHECKPOINT_INLINE_AFTER", 30)
    monkeypatch.setattr(mod._WalCheckpointer, "_run", lambda self: None)  # never checkpoints
    path = tmp_path / "s.db"
    with Checkpointer(SqliteBackend(path)) as saver:
        saver.setup()
        db_size = os.path.getsize(path)
        for i in range(25):
            saver.put(cp(i, {"x": os.urandom(3000)}), thread_id="t")
        assert os.path.getsize(path) == db_size  # nothing copied yet: the WAL holds it all
        for i in range(25, 40):
            saver.put(cp(i, {"x": os.urandom(3000)}), thread_id="t")
        assert os.path.getsize(path) > db_size + 30 * 3000 // 2
        assert [c.checkpoint.id for c in saver.list("t", limit=2)] == [f"{39:08d}", f"{38:08d}"]


def test_a_given_connection_gets_its_autocheckpoint_back(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "g.db", check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint = 321")
    with Checkpointer(SqliteBackend(conn)) as saver:
        saver.put(cp(1, {"x": 1}), thread_id="t")
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 321
    conn.close()


def test_fork_waits_while_the_checkpointer_is_inside_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork while the background thread runs a checkpoint must not hang the child."""
    import snapstate.backends.sqlite as mod

    from .forking import child_succeeded, fork_child

    monkeypatch.setattr(mod, "_CHECKPOINT_IDLE", 0.0)  # checkpoint without pause
    monkeypatch.setattr(mod, "_CHECKPOINT_EVERY", 1)
    saver = Checkpointer(tmp_path / "busy.db")
    saver.put(cp(0, {"x": 0}), thread_id="t")

    def in_child() -> bool:
        conn = sqlite3.connect(tmp_path / "busy.db")
        conn.execute("SELECT count(*) FROM checkpoints").fetchone()
        conn.close()
        return True

    try:
        for i in range(1, 201):
            assert child_succeeded(fork_child(in_child)), f"fork {i}: the child hung or failed"
    finally:
        saver.close()


def test_the_wal_starts_over_while_commits_keep_coming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a background checkpoint of a WAL past its bound, a commit copies what was
    committed meanwhile, so the next one starts the WAL over instead of growing it without
    end."""
    import snapstate.backends.sqlite as mod

    monkeypatch.setattr(mod, "_CHECKPOINT_EVERY", 20)
    monkeypatch.setattr(mod, "_WAL_RESTART_FRAMES", 256)
    # A WAL that never started over holds all 600 commits here: 20 MB (measured).
    assert _commit_steadily(tmp_path / "grow.db", 600, 2 * mod._CHECKPOINT_EVERY) < 10_000_000


class _OverlappingCheckpoints:
    """Makes every checkpoint of the backend's thread overlap a commit, as each one does under
    a steady stream of commits, on any machine.

    On the thread, a checkpoint first pins a reader's snapshot (a checkpoint copies no frame
    past a reader's), then commits a row of its own on another connection and counts it as the
    backend counts its commits; then it checkpoints and lets the reader go. That commit is left
    behind in the WAL, as a commit made while the checkpoint ran is. Without this, where
    checkpoints are fast, one could finish between two of the test's commits, and the next
    commit started the WAL over, whatever the code under test did (seen: a 0.7 MB WAL where 10
    MB were expected).
    """

    def __init__(self, backend: SqliteBackend) -> None:
        import snapstate.backends.sqlite as mod

        self.backend = backend
        self.real = mod._WalCheckpointer.checkpoint

    def checkpoint(self, conn: sqlite3.Connection) -> int:
        if not threading.current_thread().name.startswith("snapstate-wal-checkpoint"):
            return self.real(conn)  # a commit's own copy of the tail
        path = self.backend.path
        with (
            contextlib.closing(sqlite3.connect(path, isolation_level=None)) as reader,
            contextlib.closing(sqlite3.connect(path, isolation_level=None, timeout=10)) as writer,
        ):
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM checkpoints").fetchone()
            # Made here, once the backend has configured the file (auto_vacuum is set only on
            # an empty one), never before.
            writer.execute("CREATE TABLE IF NOT EXISTS overlap (n INTEGER)")
            writer.execute("INSERT INTO overlap VALUES (1)")
            self.backend._wal_checkpointer().pending += 1
            try:
                return self.real(conn)
            finally:
                reader.execute("COMMIT")


def _commit_steadily(path: Path, commits: int, wait_at: int) -> int:
    """``commits`` puts of about 3 pages each into a new file, one after another, each
    checkpoint of the thread overlapping a commit (:class:`_OverlappingCheckpoints`); the size
    of its WAL file at the end. Whenever ``wait_at`` commits are pending, the checkpoint thread
    gets to start its checkpoint before commits go on (on a loaded machine it may otherwise not
    run for many commits: the WAL reached 14 MB once so); what is tested is what happens when
    it runs."""
    import snapstate.backends.sqlite as mod

    backend = SqliteBackend(path)
    overlap = _OverlappingCheckpoints(backend)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mod._WalCheckpointer, "checkpoint", staticmethod(overlap.checkpoint))
        with Checkpointer(backend) as saver:
            value = os.urandom(8000)
            for i in range(commits):
                saver.put(cp(i, {f"x{i % 7}": value}), thread_id="t")
                wal = backend._wal_checkpointer()
                if wal.pending >= wait_at:
                    deadline = time.monotonic() + 10
                    while wal.pending >= mod._CHECKPOINT_EVERY and time.monotonic() < deadline:
                        time.sleep(0.001)
            size = os.path.getsize(f"{path}-wal")
            assert saver.get("t") is not None
    return size


def test_a_wal_under_its_bound_is_never_checkpointed_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until the WAL passes _WAL_RESTART_FRAMES, commits that keep coming leave every
    checkpoint to the thread, and the WAL grows instead; past it, a commit copies the tail."""
    import snapstate.backends.sqlite as mod

    monkeypatch.setattr(mod, "_CHECKPOINT_EVERY", 10)
    inline: list[int] = []
    real = mod._WalCheckpointer.catch_up

    def spy(self: Any, conn: sqlite3.Connection) -> None:
        inline.append(1)
        real(self, conn)

    monkeypatch.setattr(mod._WalCheckpointer, "catch_up", spy)

    monkeypatch.setattr(mod, "_WAL_RESTART_FRAMES", 1 << 40)
    grown = _commit_steadily(tmp_path / "under.db", 300, mod._CHECKPOINT_EVERY)
    assert inline == []
    # Never started over: the WAL holds all 300 commits (10.3 MB measured; 1.3 to 1.6 MB
    # with the bound below).
    assert grown > 5_000_000
    monkeypatch.setattr(mod, "_WAL_RESTART_FRAMES", 256)
    bounded = _commit_steadily(tmp_path / "over.db", 300, mod._CHECKPOINT_EVERY)
    assert inline != []
    assert bounded < grown


def test_a_wal_never_found_fully_copied_is_started_over_by_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the commit's tail copy out of the way (as when other processes keep committing:
    then no write begins on a fully copied WAL), the WAL grows for as long as commits come;
    past _WAL_FORCE_RESTART_FRAMES the checkpoint thread starts it over itself."""
    import snapstate.backends.sqlite as mod

    monkeypatch.setattr(mod, "_CHECKPOINT_EVERY", 10)
    monkeypatch.setattr(mod, "_WAL_RESTART_FRAMES", 1 << 40)  # no commit copies a tail
    restarts: list[bool] = []
    real = mod._WalCheckpointer.restart

    def spy(conn: sqlite3.Connection) -> bool:
        restarts.append(real(conn))
        return restarts[-1]

    monkeypatch.setattr(mod._WalCheckpointer, "restart", staticmethod(spy))
    monkeypatch.setattr(mod, "_WAL_FORCE_RESTART_FRAMES", 1 << 40)
    grown = _commit_steadily(tmp_path / "never.db", 300, mod._CHECKPOINT_EVERY)
    assert restarts == []
    monkeypatch.setattr(mod, "_WAL_FORCE_RESTART_FRAMES", 256)
    # Up to three streams, each on a new file: in one CI run, late in a loaded suite, one
    # stream's WAL reached 7.5 MB against 10.3 MB (the restarts then came too late); alone
    # and in later runs it came to 1.6 MB. Without the restart every stream grows alike.
    for attempt in range(3):
        restarts.clear()
        bounded = _commit_steadily(tmp_path / f"forced{attempt}.db", 300, mod._CHECKPOINT_EVERY)
        if True in restarts and bounded < grown / 2:
            break
    assert True in restarts
    assert bounded < grown / 2


def test_an_occasional_commit_never_checkpoints_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits far apart leave every checkpoint (and its fsyncs) to the background thread."""
    import time

    import snapstate.backends.sqlite as mod

    monkeypatch.setattr(mod, "_CHECKPOINT_IDLE", 0.01)
    inline: list[int] = []
    real = mod._WalCheckpointer.checkpoint

    def spy(conn: sqlite3.Connection) -> bool:
        if threading.current_thread() is threading.main_thread():
            inline.append(1)
        return real(conn)

    monkeypatch.setattr(mod._WalCheckpointer, "checkpoint", staticmethod(spy))
    path = tmp_path / "slow.db"
    with Checkpointer(SqliteBackend(path)) as saver:
        for i in range(8):
            saver.put(cp(i, {"x": os.urandom(5000)}), thread_id="t")
            time.sleep(0.05)  # the thread checkpoints the WAL between two commits
        assert saver.get("t") is not None
    assert inline == []


_OUT_OF_SPACE = textwrap.dedent(
    """
    import json, os, random, sys
    from snapstate import Checkpoint, Checkpointer
    from snapstate.errors import StorageError

    where = sys.argv[1]
    filler = os.path.join(where, "filler")
    with open(filler, "wb") as f:
        f.write(b"x" * 256 * 1024)

    def step(i):
        value = random.Random(i).randbytes(3000)
        return Checkpoint(id=f"{i:08d}", channel_values={"blob": value, "n": i},
                          channel_versions={"blob": i + 1, "n": i + 1})

    cp = Checkpointer(os.path.join(where, "store.db"))
    acked, error, hint = 0, None, None
    for i in range(5000):
        try:
            cp.put(step(i), thread_id="t")
        except StorageError as exc:
            error, hint = exc.message, exc.hint
            break
        acked += 1
    whole = all(
        (s := cp.get("t", checkpoint_id=f"{i:08d}")) is not None
        and s.checkpoint.channel_values == step(i).channel_values
        for i in range(acked)
    )
    failed_absent = cp.get("t", checkpoint_id=f"{acked:08d}") is None
    os.remove(filler)  # space again
    cp.put(step(acked), thread_id="t")
    after = cp.get("t").checkpoint.channel_values == step(acked).channel_values
    cp.close()
    print(json.dumps({"acked": acked, "error": error, "hint": hint, "whole": whole,
                      "failed_absent": failed_absent, "after": after}))
    """
)


@pytest.mark.timeout(120)
def test_out_of_space_is_a_clear_error_that_stores_nothing(tmp_path: Path) -> None:
    """A real full disk: a 1 MiB tmpfs mounted in a mount namespace of the child's own."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to mount a small tmpfs in a private namespace")
    where = tmp_path / "small"
    where.mkdir()
    proc = subprocess.run(
        [
            unshare,
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount -t tmpfs -o size=1m tmpfs "$1" && exec "$2" -c "$3" "$1"',
            "sh",
            str(where),
            sys.executable,
            _OUT_OF_SPACE,
        ],
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    if proc.returncode != 0 and "mount" in proc.stderr and not proc.stdout:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["acked"] > 0
    assert result["error"] is not None, result
    store = re.escape(str(where / "store.db"))
    assert re.match(f"SQLite ran out of space in '{store}' while writing a batch", result["error"])
    assert "stores nothing" in result["hint"], result
    assert result["whole"] and result["failed_absent"] and result["after"], result
