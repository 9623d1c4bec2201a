"""The compiled SQLite connection small writes go through, and the choice between it and sqlite3."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snapstate.backends.sqlite as mod
from snapstate import Checkpointer, StorageError
from snapstate.backends._base import BlobRow, CheckpointRow, WriteBatch, WriteRow, batch_bytes
from snapstate.backends.sqlite import SqliteBackend
from snapstate.codec import IMPL
from snapstate.errors import DeltaBaseMissingError

from .test_sqlite import cp

native: Any
try:
    from snapstate.backends import _sqlite_native as native
except ImportError:  # pragma: no cover - only where SQLite's header was missing at build time
    native = None

needs_module = pytest.mark.skipif(
    native is None, reason="snapstate.backends._sqlite_native is not built"
)


def wal_db(path: Path) -> Path:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v)")
    conn.close()
    return path


# -- which path a write takes ---------------------------------------------------------------------


def test_the_implementation_decides_the_write_path(tmp_path: Path) -> None:
    """The whole suite runs twice: with SNAPSTATE_IMPL=native small writes go through the
    compiled connection, with SNAPSTATE_IMPL=python through sqlite3."""
    backend = SqliteBackend(tmp_path / "impl.db")
    wanted = os.environ.get("SNAPSTATE_IMPL", "")
    if wanted:
        assert backend.native_writes is (wanted == "native")
    else:
        assert backend.native_writes is (mod._NATIVE is not None)
    if IMPL == "native" and wanted == "native":
        assert mod._NATIVE is not None
    backend.close()


def test_pick_native(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPSTATE_IMPL", "python")
    assert mod._pick_native() is None
    if native is None:
        monkeypatch.setenv("SNAPSTATE_IMPL", "native")
        with pytest.raises(ImportError, match="SNAPSTATE_IMPL=native"):
            mod._pick_native()
        return
    monkeypatch.setenv("SNAPSTATE_IMPL", "")
    assert mod._pick_native() is native
    # SQLite not found where Python's sqlite3 runs: never used, and forcing it says why.
    monkeypatch.setattr(native, "load", lambda path: "SQLite's 26 functions cannot be found")
    assert mod._pick_native() is None
    monkeypatch.setenv("SNAPSTATE_IMPL", "native")
    with pytest.raises(ImportError, match="26 functions cannot be found"):
        mod._pick_native()


def test_only_small_batches_hold_the_gil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = SqliteBackend._write_native

    def spy(self: SqliteBackend, batch: Any) -> bool:
        seen.append(len(batch))
        return real(self, batch)

    monkeypatch.setattr(SqliteBackend, "_write_native", spy)
    with Checkpointer(tmp_path / "sizes.db") as saver:
        saver.put(cp(1, {"x": "small"}), thread_id="t")
        saver.put(cp(2, {"x": os.urandom(mod._HOLD_MAX_BYTES + 1)}), thread_id="t")
        saver.put(cp(3, {f"c{i}": i for i in range(mod._HOLD_MAX_ROWS + 1)}), thread_id="t")
        got = saver.get("t")
        assert got is not None and len(got.checkpoint.channel_values) == mod._HOLD_MAX_ROWS + 1
    assert seen == ([2] if mod._NATIVE is not None else [])


@pytest.mark.parametrize("synchronous", ["full", "extra"])
def test_commits_that_wait_for_the_disk_go_through_sqlite3(
    tmp_path: Path, synchronous: Any
) -> None:
    backend = SqliteBackend(tmp_path / "full.db", synchronous=synchronous)
    assert backend.native_writes is False
    with Checkpointer(backend) as saver:
        saver.put(cp(1, {"x": 1}), thread_id="t")
        assert saver.get("t") is not None


def test_a_write_waits_for_another_writer_without_holding_the_gil(tmp_path: Path) -> None:
    """While another connection holds the write lock, the write waits in sqlite3's busy handler,
    which lets go of the GIL: this thread gets to commit the blocker, and the write lands after
    it. (A write that waited holding the GIL would leave this thread unable to run until its
    busy timeout ran out, and then fail.)"""
    path = tmp_path / "busy.db"
    with Checkpointer(SqliteBackend(path, busy_timeout=20)) as saver:
        saver.put(cp(1, {"x": 1}), thread_id="t")
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        blocker.execute("INSERT INTO settings (key, value) VALUES ('blocker', 'held')")
        order: list[str] = []
        errors: list[BaseException] = []

        def put() -> None:
            try:
                saver.put(cp(2, {"x": 2}), thread_id="t")
                order.append("put")
            except BaseException as exc:  # reported below
                errors.append(exc)

        writer = threading.Thread(target=put)
        writer.start()
        ticks = 0
        while ticks < 200 and writer.is_alive():
            ticks += 1
            threading.Event().wait(0.001)
        assert writer.is_alive(), "the write finished while another connection held the lock"
        order.append("blocker")
        blocker.execute("COMMIT")
        blocker.close()
        writer.join(30)
        assert not errors and order == ["blocker", "put"]
        got = saver.get("t")
        assert got is not None and got.checkpoint.id == cp(2, {}).id


# -- the compiled connection itself ---------------------------------------------------------------


@needs_module
def test_load_finds_the_library_sqlite3_runs_on() -> None:
    import _sqlite3

    assert native.load(getattr(_sqlite3, "__file__", None)) == ""
    assert native.sqlite_version() == sqlite3.sqlite_version
    # Once found, they stay: load() says so at once, whatever it is asked.
    assert native.load("/nonexistent/lib.so") == ""


@needs_module
def test_load_says_why_it_finds_nothing() -> None:
    """Run in a fresh interpreter: once found, the functions stay found."""
    import subprocess
    import sys

    code = (
        "from snapstate.backends import _sqlite_native as n\n"
        "from snapstate.codec import _native as c\n"
        "print(n.load('/nonexistent/lib.so'))\n"
        "print(n.load(c.__file__))\n"
        "print(n.load(None))\n"
        "try:\n"
        "    n.Connection('x.db')\n"
        "except RuntimeError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out[0] == "'/nonexistent/lib.so' is not loaded"
    # The codec does not reach SQLite; nor does the interpreter, where sqlite3's shared object
    # keeps its library to itself (as Python loads extension modules).
    assert out[1].startswith("SQLite's 26 functions cannot be found through '")
    import _sqlite3

    if getattr(_sqlite3, "__file__", None):
        assert out[2] == "SQLite's 26 functions cannot be found through None"
    assert out[3] == "load() has not found SQLite"


@needs_module
@pytest.mark.parametrize(
    "value",
    [None, 0, -1, 2**62, -(2**63), 1.5, float("inf"), "", "héllo ✓", b"", b"a\x00b", b"x" * 5000],
    ids=repr,
)
def test_values_round_trip(tmp_path: Path, value: Any) -> None:
    conn = native.Connection(str(wal_db(tmp_path / "values.db")))
    assert conn.begin()
    conn.executemany("INSERT INTO t (k, v) VALUES (?, ?)", [("k", value)])
    conn.commit()
    assert conn.query("SELECT v FROM t WHERE k = ?", ["k"]) == [(value,)]
    conn.close()


@needs_module
def test_buffers_bools_and_what_cannot_be_bound(tmp_path: Path) -> None:
    conn = native.Connection(str(wal_db(tmp_path / "bind.db")))
    assert conn.begin()
    conn.executemany(
        "INSERT INTO t (k, v) VALUES (?, ?)",
        [("ba", bytearray(b"ab")), ("mv", memoryview(b"cd")), ("b", True)],
    )
    assert conn.query("SELECT k, v FROM t ORDER BY k", ()) == [
        ("b", 1),
        ("ba", b"ab"),
        ("mv", b"cd"),
    ]
    with pytest.raises(sqlite3.ProgrammingError, match="parameter 2: type 'dict'"):
        conn.executemany("INSERT INTO t (k, v) VALUES (?, ?)", [("d", {})])
    with pytest.raises(sqlite3.ProgrammingError, match="uses 2, and there are 1"):
        conn.query("SELECT ?, ?", ["one"])
    with pytest.raises(OverflowError):
        conn.query("SELECT ?", [2**64])
    conn.rollback()
    assert not conn.in_transaction
    assert conn.query("SELECT count(*) FROM t", ()) == [(0,)]
    conn.close()


@needs_module
def test_errors_are_sqlite3_errors(tmp_path: Path) -> None:
    conn = native.Connection(str(wal_db(tmp_path / "errors.db")))
    assert conn.begin()
    conn.executemany("INSERT INTO t (k, v) VALUES (?, ?)", [("a", 1)])
    with pytest.raises(sqlite3.IntegrityError, match=r"UNIQUE constraint failed: t\.k") as info:
        conn.executemany("INSERT INTO t (k, v) VALUES (?, ?)", [("b", 2), ("a", 3)])
    assert info.value.sqlite_errorcode & 0xFF == 19  # type: ignore[attr-defined]
    conn.rollback()
    assert conn.query("SELECT count(*) FROM t", ()) == [(0,)]
    with pytest.raises(sqlite3.OperationalError, match="no such table: missing"):
        conn.query("SELECT * FROM missing", ())
    with pytest.raises(sqlite3.OperationalError, match="syntax error"):
        conn.query("SELEC 1", ())
    conn.close()


@needs_module
def test_begin_never_waits(tmp_path: Path) -> None:
    path = str(wal_db(tmp_path / "lock.db"))
    other = sqlite3.connect(path, isolation_level=None, timeout=30)
    other.execute("BEGIN IMMEDIATE")
    conn = native.Connection(path)
    assert conn.begin() is False
    assert not conn.in_transaction
    other.execute("COMMIT")
    assert conn.begin() is True and conn.in_transaction
    conn.commit()
    other.close()
    conn.close()


@needs_module
def test_refuses_what_it_cannot_do_without_waiting(tmp_path: Path) -> None:
    rollback_journal = tmp_path / "delete.db"
    sqlite3.connect(rollback_journal).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(sqlite3.OperationalError, match="not in WAL mode"):
        native.Connection(str(rollback_journal))
    with pytest.raises(ValueError, match="synchronous must be 'off' or 'normal'"):
        native.Connection(str(wal_db(tmp_path / "full.db")), "full")
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        native.Connection(str(tmp_path / "missing" / "x.db"))


@needs_module
def test_closed_connection(tmp_path: Path) -> None:
    conn = native.Connection(str(wal_db(tmp_path / "closed.db")))
    assert conn.begin()
    conn.executemany("INSERT INTO t (k, v) VALUES (?, ?)", [("a", 1)])
    conn.close()  # rolls back what was open
    conn.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        conn.begin()
    check = sqlite3.connect(tmp_path / "closed.db")
    assert check.execute("SELECT count(*) FROM t").fetchone() == (0,)
    check.close()


@needs_module
def test_a_forked_child_neither_uses_nor_closes_its_parents(tmp_path: Path) -> None:
    from .forking import child_succeeded, fork_child

    conn = native.Connection(str(wal_db(tmp_path / "fork.db")))

    def in_child() -> bool:
        nonlocal conn
        try:
            conn.begin()
        except sqlite3.ProgrammingError as exc:
            refused = "another process" in str(exc)
        else:
            refused = False
        conn.close()
        del conn
        return refused

    assert child_succeeded(fork_child(in_child))
    assert conn.begin()
    conn.executemany("INSERT INTO t (k, v) VALUES (?, ?)", [("after", 1)])
    conn.commit()
    assert conn.query("SELECT v FROM t WHERE k = 'after'", ()) == [(1,)]
    conn.close()


@pytest.mark.parametrize(("code", "stored"), [(5, True), (6, True), (10, False)])
def test_opening_the_compiled_connection_meets_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, stored: bool
) -> None:
    """A lock met while opening it (busy, locked) sends the write through sqlite3, which waits;
    any other error is reported as the write's."""
    if mod._NATIVE is None:
        pytest.skip("small writes go through sqlite3 here")

    def failing(path: str, synchronous: str) -> Any:
        exc = sqlite3.OperationalError(f"error {code}")
        exc.sqlite_errorcode = code  # type: ignore[attr-defined]
        raise exc

    monkeypatch.setattr(mod._NATIVE, "Connection", failing)
    with Checkpointer(tmp_path / "open.db") as saver:
        if stored:
            saver.put(cp(1, {"x": 1}), thread_id="t")
            assert saver.get("t") is not None
        else:
            with pytest.raises(
                StorageError,
                match=f"SQLite database '.*open.db': error while writing a batch: error {code}",
            ):
                saver.put(cp(1, {"x": 1}), thread_id="t")
            assert saver.get("t") is None


# -- the WAL write buffer -------------------------------------------------------------------------


@pytest.fixture
def loaded() -> Any:
    """The compiled connection's module, with SQLite found (whatever SNAPSTATE_IMPL says)."""
    if native is None:
        pytest.skip("snapstate.backends._sqlite_native is not built")
    import _sqlite3

    assert native.load(getattr(_sqlite3, "__file__", None)) == ""
    return native


def _counts(module: Any) -> tuple[int, int, int]:
    return tuple(module.wal_buffer_counts())  # type: ignore[return-value]


def _rows(
    conn: Any, start: int, n: int, size: int = 3000, into: dict[str, bytes] | None = None
) -> None:
    """Insert or replace ``n`` rows of ``size`` bytes from key ``start`` (and note them
    ``into``)."""
    rows = [(f"k{i:06d}", bytes([i % 251]) * size) for i in range(start, start + n)]
    conn.executemany("INSERT OR REPLACE INTO t (k, v) VALUES (?, ?)", rows)
    if into is not None:
        into.update(rows)


def _as_killed(path: Path, into: Path) -> sqlite3.Connection:
    """The database as a process killed at this moment would leave it: its file and its WAL
    copied (not the shared memory, which a new process rebuilds from the WAL's frames and their
    checksums), opened through sqlite3."""
    into.mkdir()
    for suffix in ("", "-wal"):
        src = Path(str(path) + suffix)
        if src.exists():
            (into / (path.name + suffix)).write_bytes(src.read_bytes())
    return sqlite3.connect(into / path.name)


def test_a_commit_writes_its_frames_at_once(loaded: Any, tmp_path: Path) -> None:
    path = wal_db(tmp_path / "once.db")
    conn = loaded.Connection(str(path))
    assert conn.wal_buffer
    # The first commit into a new WAL syncs the WAL's header before its frames (SQLite's own
    # order): what was gathered is written at that sync, the frames after it.
    assert conn.begin()
    _rows(conn, 1000, 1)
    conn.commit()
    for start in (0, 8, 16):
        before = _counts(loaded)
        wal = os.path.getsize(str(path) + "-wal") if os.path.exists(str(path) + "-wal") else 0
        assert conn.begin()
        _rows(conn, start, 8)
        conn.commit()
        gathered, flushes, direct = (a - b for a, b in zip(_counts(loaded), before))
        frames = (os.path.getsize(str(path) + "-wal") - max(wal, 32)) // (24 + 4096)
        assert frames >= 6  # 8 rows of 3 KB: a page each, and the table's and index's upkeep
        # Every frame is a header and a page: all of them gathered into one write.
        assert gathered >= 2 * frames and flushes == 1 and direct == 0
    conn.close()
    unbuffered = loaded.Connection(str(path), wal_buffer=False)
    assert not unbuffered.wal_buffer
    before = _counts(loaded)
    assert unbuffered.begin()
    _rows(unbuffered, 100, 8)
    unbuffered.commit()
    assert _counts(loaded) == before
    unbuffered.close()


def test_every_commit_is_in_the_files_when_it_returns(loaded: Any, tmp_path: Path) -> None:
    """After each commit, and before anything else runs, the files hold it: the frames SQLite
    rewrites in place (a page written twice in one transaction, spilled from a small cache, and
    the checksums after it) and a commit larger than one write of the default VFS included, and
    after a checkpoint restarts the WAL."""
    path = wal_db(tmp_path / "killed.db")
    conn = loaded.Connection(str(path))
    conn.query("PRAGMA cache_size = 4", ())  # pages spill to the WAL before the commit
    other = sqlite3.connect(path, isolation_level=None)
    expected: dict[str, bytes] = {}
    steps = [
        ("small", lambda: _rows(conn, 0, 3, into=expected)),
        (
            "spilled and rewritten",
            lambda: (_rows(conn, 0, 60, into=expected), _rows(conn, 0, 60, 2900, into=expected)),
        ),
        ("larger than 128 KiB", lambda: _rows(conn, 200, 80, into=expected)),
        ("after a restart", lambda: _rows(conn, 300, 5, into=expected)),
    ]
    direct_before = _counts(loaded)[2]
    for n, (what, step) in enumerate(steps):
        if what == "after a restart":
            assert other.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0] == 0
        assert conn.begin()
        step()
        conn.commit()
        # Nothing runs on the connection before the copy (a read there would write what it
        # gathered): a process that finds only the files has the commit, ...
        copy = _as_killed(path, tmp_path / f"copy{n}")
        try:
            assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",), what
            assert dict(copy.execute("SELECT k, v FROM t").fetchall()) == expected, what
        finally:
            copy.close()
        # ... and so does another connection.
        assert dict(other.execute("SELECT k, v FROM t").fetchall()) == expected, what
    assert len(expected) == 60 + 80 + 5
    # The rewrites went straight to the file (after what was gathered before them).
    assert _counts(loaded)[2] > direct_before
    other.close()
    conn.close()


def test_a_rolled_back_transaction_leaves_no_trace(loaded: Any, tmp_path: Path) -> None:
    path = wal_db(tmp_path / "rollback.db")
    conn = loaded.Connection(str(path))
    conn.query("PRAGMA cache_size = 4", ())
    assert conn.begin()
    _rows(conn, 0, 10)
    conn.commit()
    assert conn.begin()
    _rows(conn, 100, 60)  # spills frames that the rollback abandons
    conn.rollback()
    assert conn.begin()
    _rows(conn, 10, 2)
    conn.commit()
    copy = _as_killed(path, tmp_path / "copy")
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert [k for (k,) in copy.execute("SELECT k FROM t ORDER BY k")] == [
            f"k{i:06d}" for i in range(12)
        ]
    finally:
        copy.close()
    conn.close()


# -- both paths store the same bytes -------------------------------------------------------------

_texts = st.text(min_size=0, max_size=12)
_ids = st.text(alphabet="abc\u00e9\u2713\x00", min_size=1, max_size=6)
# A large value (a payload row, 64 KiB or more) from a few drawn bytes.
_data = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda b: b * 20_000, st.binary(min_size=4, max_size=4)),
)


@st.composite
def _batches(draw: Any) -> list[WriteBatch]:
    out = []
    for _ in range(draw(st.integers(1, 4))):
        thread = draw(_ids)
        ns = draw(st.sampled_from(["", "sub:1"]))
        batch = WriteBatch()
        for i in range(draw(st.integers(0, 2))):
            cid = draw(_ids)
            batch.checkpoints.append(
                CheckpointRow(
                    thread,
                    ns,
                    cid,
                    draw(st.none() | _ids),
                    draw(st.none() | _texts),
                    draw(st.floats(allow_nan=False, allow_infinity=False)),
                    msgspec.json.encode({"k": draw(_texts), "n": i}),
                    draw(st.binary(max_size=32)),
                )
            )
        for _ in range(draw(st.integers(0, 3))):
            batch.blobs.append(
                BlobRow(
                    thread,
                    ns,
                    draw(_ids),
                    draw(_ids),
                    draw(st.sampled_from([0, 1, 2])),
                    draw(st.none() | _ids),
                    draw(_data),
                )
            )
        for _ in range(draw(st.integers(0, 3))):
            row = WriteRow(
                thread,
                ns,
                draw(_ids),
                draw(_ids),
                draw(st.integers(-4, 3)),
                draw(_ids),
                draw(_texts),
                draw(_data),
            )
            (batch.replace_writes if draw(st.booleans()) else batch.writes).append(row)
        out.append(batch)
    return out


def _dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {
            table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
            for table in ("checkpoints", "blobs", "writes", "payloads", "tombstones")
        }
    finally:
        conn.close()


@needs_module
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=_batches())
def test_both_paths_store_the_same_rows(tmp_path: Path, batches: list[WriteBatch]) -> None:
    """Any sequence of small batches (odd text, NUL characters, empty and large values,
    replaced writes, deltas on missing bases) leaves the same rows whether written by the
    compiled connection or by sqlite3."""
    if mod._NATIVE is None:
        pytest.skip("small writes go through sqlite3 here: one path only")
    run = tmp_path / os.urandom(4).hex()
    run.mkdir()
    native_backend = SqliteBackend(run / "native.db")
    python_backend = SqliteBackend(run / "python.db")
    assert native_backend.native_writes
    for backend in (native_backend, python_backend):
        backend.setup()
    try:
        for batch in batches:
            # An append-delta whose base is stored neither before nor in its batch is refused,
            # with nothing stored, on both paths alike.
            refused = []
            try:
                native_backend.write(batch)
            except DeltaBaseMissingError as exc:
                refused.append(str(exc))
            try:
                with python_backend._transaction("writing a batch") as conn:
                    mod._store(mod._PyStatements(conn), batch)
            except DeltaBaseMissingError as exc:
                refused.append(str(exc))
            assert len(refused) in (0, 2) and len(set(refused)) <= 1
        # The compiled path wrote every batch small enough for it (a draw of several large
        # values can exceed its size limit in every batch, and then sqlite3 wrote them all).
        small = any(
            len(b) <= mod._HOLD_MAX_ROWS and batch_bytes(b) <= mod._HOLD_MAX_BYTES for b in batches
        )
        assert (native_backend._native is not None) == small
        assert _dump(run / "native.db") == _dump(run / "python.db")
    finally:
        native_backend.close()
        python_backend.close()
