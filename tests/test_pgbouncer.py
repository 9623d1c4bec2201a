"""The PostgreSQL savers behind a real PgBouncer in transaction pooling mode.

The fixture starts PgBouncer (the Debian package's binary; ``.ci/run`` installs it) on a free
port in front of the test server, in ``pool_mode = transaction`` with two server connections:
the savers' client connections take turns on them, so consecutive transactions of one client
run on different server sessions, and a statement prepared on one session is unknown, or
another client's, on the next. Without PgBouncer the cases skip with the reason (and fail under
CI, where it is part of the environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool
import pytest
from langgraph.checkpoint.base import create_checkpoint, empty_checkpoint
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from snapstate.errors import ConfigurationError, StoreUnavailableError
from snapstate.langgraph import AsyncPostgresSaver, PostgresSaver

from .fix_backends import in_ci, new_schema

#: Server connections PgBouncer keeps per database and user: fewer than the savers' clients.
SERVER_CONNECTIONS = 2
THREADS = 8
STEPS = 25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pgbouncer_dsn(pg_dsn: str) -> Iterator[str]:
    """A DSN through a PgBouncer in transaction pooling mode in front of ``pg_dsn``."""
    with _pgbouncer(pg_dsn, "transaction") as dsn:
        yield dsn


@contextlib.contextmanager
def _pgbouncer(pg_dsn: str, mode: str) -> Iterator[str]:
    """A PgBouncer in ``mode`` pooling in front of ``pg_dsn``, for the block; its DSN."""
    binary = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if binary is None:
        message = "pgbouncer is not installed (Debian: apt-get install pgbouncer)"
        if in_ci():
            pytest.fail(message + "; under CI it is required (.ci/run installs it)")
        pytest.skip(message)
    server = conninfo_to_dict(pg_dsn)
    user = str(server.get("user") or "postgres")
    # Its own directory in the temporary one, open to the user PgBouncer switches to.
    directory = Path(tempfile.mkdtemp(prefix="snapstate-pgbouncer-"))
    port = _free_port()
    (directory / "users.txt").write_text(f'"{user}" ""\n')
    (directory / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server.get('host', '127.0.0.1')} port={server.get('port', 5432)}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {directory / 'users.txt'}\n"
        f"pool_mode = {mode}\n"
        f"default_pool_size = {SERVER_CONNECTIONS}\nmin_pool_size = 0\nreserve_pool_size = 0\n"
        "max_client_conn = 200\n"
        f"logfile = {directory / 'pgbouncer.log'}\n"
    )
    command = [binary]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        owner = "postgres" if _user_exists("postgres") else "nobody"
        entry = pwd.getpwnam(owner)
        for path in (directory, *directory.iterdir()):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        command += ["-u", owner]
    command.append(str(directory / "pgbouncer.ini"))
    # In the foreground PgBouncer also logs every connection to its console: into a file, not
    # a pipe nobody reads (a full pipe would stop it).
    console = directory / "console.txt"
    with open(console, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    dsn = f"postgresql://{user}@127.0.0.1:{port}/{server.get('dbname', 'test')}?connect_timeout=5"
    try:
        _wait_until_up(dsn, proc, console)
        yield dsn
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(directory, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _wait_until_up(dsn: str, proc: subprocess.Popen[bytes], console: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            text = console.read_text(errors="replace") if console.exists() else ""
            pytest.fail(f"pgbouncer exited with {proc.returncode}: {text}")
        try:
            with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def bouncer_schema(pg_dsn: str) -> Iterator[str]:
    with new_schema(pg_dsn, prefix="pgb_") as name:
        yield name


def _in_threads(target: Callable[[int], None], count: int) -> list[BaseException]:
    """Run ``target(0)`` ... ``target(count - 1)`` in threads at once; what they raised."""
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            target(n)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return errors


def _server_pids(dsn: str, times: int) -> set[int]:
    """The server sessions ``times`` transactions of one client connection ran on."""
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
        return {conn.execute("SELECT pg_backend_pid()").fetchone()[0] for _ in range(times)}


def _config(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}


def _step(saver: Any, config: dict[str, Any], previous: Any, step: int) -> tuple[Any, Any]:
    """Step ``step`` of a thread: the next checkpoint (its list one item longer) and the
    channel versions it sets."""
    cp = empty_checkpoint() if previous is None else create_checkpoint(previous, None, step)
    items = list(previous["channel_values"]["items"]) if previous is not None else []
    items.append(f"{config['configurable']['thread_id']}:{step}:" + "x" * 300)
    versions = {
        "items": saver.get_next_version(cp["channel_versions"].get("items"), None),
        "step": saver.get_next_version(cp["channel_versions"].get("step"), None),
    }
    cp["channel_values"] = {"items": items, "step": step}
    cp["channel_versions"] = versions
    return cp, versions


def _expect_thread(saver: Any, thread_id: str) -> None:
    history = list(saver.list(_config(thread_id)))
    assert [h.metadata["step"] for h in history] == list(range(STEPS - 1, -1, -1))
    latest = history[0]
    assert latest.checkpoint["channel_values"]["items"] == [
        f"{thread_id}:{s}:" + "x" * 300 for s in range(STEPS)
    ]
    assert latest.checkpoint["channel_values"]["step"] == STEPS - 1
    # Each checkpoint's pending writes: the step's write, under its task.
    for h in history:
        s = h.metadata["step"]
        assert h.pending_writes == [(f"task-{s}", "step", s + 1)]


def _write_and_read(saver: Any, n: int) -> None:
    """Thread ``thread-{n}``: each step put, its writes put, the checkpoint read back."""
    config = _config(f"thread-{n}")
    previous = None
    for step in range(STEPS):
        cp, versions = _step(saver, config, previous, step)
        config = saver.put(config, cp, {"step": step}, versions)
        saver.put_writes(config, [("step", step + 1)], f"task-{step}")
        got = saver.get_tuple(config)
        assert got is not None and got.checkpoint["id"] == cp["id"]
        assert got.checkpoint["channel_values"]["items"] == cp["channel_values"]["items"]
        previous = cp
    _expect_thread(saver, f"thread-{n}")


def test_the_fixture_rotates_server_sessions(pgbouncer_dsn: str) -> None:
    # What the cases below rely on: one client's transactions meet more than one server
    # session (otherwise a statement prepared on the first would always be there).
    stop = threading.Event()

    def other_client() -> None:
        with psycopg.connect(pgbouncer_dsn, autocommit=True, prepare_threshold=None) as conn:
            while not stop.is_set():
                conn.execute("SELECT pg_sleep(0.002)")

    others = [threading.Thread(target=other_client) for _ in range(3)]
    for t in others:
        t.start()
    try:
        pids = _server_pids(pgbouncer_dsn, 200)
    finally:
        stop.set()
        for t in others:
            t.join()
    assert len(pids) == SERVER_CONNECTIONS


@pytest.mark.parametrize("prepare", [True, False], ids=["prepare", "no-prepare"])
@pytest.mark.parametrize("durability", ["sync", "batched"])
def test_threads_share_server_sessions(
    pgbouncer_dsn: str, bouncer_schema: str, prepare: bool, durability: str
) -> None:
    with PostgresSaver.from_conn_string(
        pgbouncer_dsn,
        schema=bouncer_schema,
        prepare=prepare,
        max_connections=6,
        durability=durability,
    ) as saver:
        saver.setup()

        errors = _in_threads(lambda n: _write_and_read(saver, n), THREADS)
        assert not errors, errors[:3]
        # Deleting and pruning go through PgBouncer too; the other threads stay whole.
        saver.delete_thread("thread-0")
        assert saver.get_tuple({"configurable": {"thread_id": "thread-0"}}) is None
        saver.prune([f"thread-{n}" for n in range(1, 4)], strategy="keep_latest")
        for n in range(1, 4):
            assert len(list(saver.list({"configurable": {"thread_id": f"thread-{n}"}}))) == 1
        for n in range(4, THREADS):
            _expect_thread(saver, f"thread-{n}")
        assert len({c.config["configurable"]["thread_id"] for c in saver.list(None)}) == 7


def test_a_pool_set_up_as_langgraph_asks(pgbouncer_dsn: str, bouncer_schema: str) -> None:
    # LangGraph's PostgresSaver wants connections with prepare_threshold=0 (every statement
    # prepared by psycopg), which fails behind PgBouncer's transaction pooling. The same pool
    # given to snapstate's saver works: psycopg prepares none of its statements.
    with psycopg_pool.ConnectionPool(
        pgbouncer_dsn,
        min_size=1,
        max_size=6,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
    ) as pool:
        saver = PostgresSaver(pool, schema=bouncer_schema)
        saver.setup()
        errors = _in_threads(lambda n: _write_and_read(saver, n), THREADS)
        assert not errors, errors[:3]
        saver.close()


@pytest.mark.parametrize("prepare", [True, False], ids=["prepare", "no-prepare"])
def test_async_tasks_share_server_sessions(
    pgbouncer_dsn: str, bouncer_schema: str, prepare: bool
) -> None:
    async def main() -> None:
        async with AsyncPostgresSaver.from_conn_string(
            pgbouncer_dsn, schema=bouncer_schema, prepare=prepare, max_connections=6
        ) as saver:
            await saver.setup()

            async def thread(n: int) -> None:
                config: dict[str, Any] = {
                    "configurable": {"thread_id": f"thread-{n}", "checkpoint_ns": ""}
                }
                previous = None
                for step in range(STEPS):
                    cp, versions = _step(saver, config, previous, step)
                    config = await saver.aput(config, cp, {"step": step}, versions)
                    await saver.aput_writes(config, [("step", step + 1)], f"task-{step}")
                    got = await saver.aget_tuple(config)
                    assert got is not None and got.checkpoint["id"] == cp["id"]
                    previous = cp

            await asyncio.gather(*(thread(n) for n in range(THREADS)))
            for n in range(THREADS):
                config = {"configurable": {"thread_id": f"thread-{n}", "checkpoint_ns": ""}}
                history = [h async for h in saver.alist(config)]
                assert [h.metadata["step"] for h in history] == list(range(STEPS - 1, -1, -1))
                assert history[0].checkpoint["channel_values"]["items"] == [
                    f"thread-{n}:{s}:" + "x" * 300 for s in range(STEPS)
                ]
                for h in history:
                    s = h.metadata["step"]
                    assert h.pending_writes == [(f"task-{s}", "step", s + 1)]

    asyncio.run(main())


def test_setup_from_many_clients_at_once(pgbouncer_dsn: str, bouncer_schema: str) -> None:
    # The setup lock is transaction-scoped, so it holds behind PgBouncer: one client applies
    # the migrations, the others find them applied.
    barrier = threading.Barrier(4)

    def client(_: int) -> None:
        with PostgresSaver.from_conn_string(pgbouncer_dsn, schema=bouncer_schema) as saver:
            barrier.wait()
            saver.setup()

    errors = _in_threads(client, 4)
    assert not errors, errors
    with PostgresSaver.from_conn_string(pgbouncer_dsn, schema=bouncer_schema) as saver:
        status = saver._engine.backend.migration_status()
        assert status and all(m.applied_at is not None for m in status)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_server_sessions_killed_under_a_stream_of_puts(
    pg_dsn: str, pgbouncer_dsn: str, bouncer_schema: str, kind: str
) -> None:
    # PgBouncer drops a client whose server session dies inside its transaction. A put is then
    # retried once on a new connection; if that one's session dies too, the put raises a clear
    # error. Nothing a put returned from is missing afterwards, and every checkpoint stored,
    # acknowledged or not, reads back whole. The async saver is driven through its sync API
    # from worker threads: its calls run on its event loop, through the async backend.
    name = "snapstate_pgbouncer_kill"
    dsn = f"{pgbouncer_dsn}&application_name={name}"
    stop = threading.Event()
    killed = 0

    def killer() -> None:
        nonlocal killed
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            while not stop.is_set():
                time.sleep(0.03)
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE application_name = %s",
                    [name],
                ).fetchone()
                killed += row[0] if row else 0

    acked: dict[int, list[str]] = {n: [] for n in range(4)}
    failed: list[StoreUnavailableError] = []
    made: dict[str, list[str]] = {}  # every checkpoint put, acknowledged or not: its items

    def thread(saver: Any, n: int) -> None:
        config = _config(f"thread-{n}")
        previous = None
        for step in range(60):
            cp, versions = _step(saver, config, previous, step)
            made[cp["id"]] = cp["channel_values"]["items"]
            try:
                put = saver.put(config, cp, {"step": step}, versions)
            except StoreUnavailableError as exc:
                assert "lost the connection" in str(exc)
                failed.append(exc)
                continue  # the next step builds on the last acknowledged checkpoint
            config, previous = put, cp
            acked[n].append(cp["id"])

    def run_and_check(saver: Any) -> None:
        kill = threading.Thread(target=killer)
        kill.start()
        try:
            errors = _in_threads(lambda n: thread(saver, n), 4)
        finally:
            stop.set()
            kill.join()
        assert killed > 0  # the sessions did die under the puts
        assert not errors, errors[:3]
        assert len(failed) < 240 // 4, failed[:3]  # most puts got through
        for n, ids in acked.items():
            config = _config(f"thread-{n}")
            stored = [c.checkpoint["id"] for c in saver.list(config)]
            assert set(ids) <= set(stored)
            for cid in stored:
                at = {"configurable": {**config["configurable"], "checkpoint_id": cid}}
                got = saver.get_tuple(at)
                assert got is not None
                assert got.checkpoint["channel_values"]["items"] == made[cid]

    if kind == "sync":
        with PostgresSaver.from_conn_string(dsn, schema=bouncer_schema, max_connections=4) as saver:
            saver.setup()
            run_and_check(saver)
        return

    async def main() -> None:
        async with AsyncPostgresSaver.from_conn_string(
            dsn, schema=bouncer_schema, max_connections=4
        ) as saver:
            await saver.setup()
            await asyncio.to_thread(run_and_check, saver)

    asyncio.run(main())


def test_statement_pooling_is_refused_with_what_to_change(pg_dsn: str, bouncer_schema: str) -> None:
    # Statement pooling allows no transaction, and snapstate's setup, deletes and retention
    # run in one. PgBouncer closes the connection; the error says which setting to change,
    # at once (no retry).
    with _pgbouncer(pg_dsn, "statement") as dsn:
        with PostgresSaver.from_conn_string(dsn, schema=bouncer_schema) as saver:
            with pytest.raises(ConfigurationError, match=r"pool_mode to transaction or session"):
                saver.setup()


@pytest.mark.timeout(90)
def test_a_hung_server_behind_pgbouncer_fails_calls(pg_dsn: str, bouncer_schema: str) -> None:
    # PgBouncer lets clients log in without asking the server, so a new connection alone
    # would find "the server" answering; the check's query through it gets no reply.
    from snapstate import Checkpoint, Checkpointer
    from snapstate.backends._pg_watchdog import probe
    from snapstate.backends.postgres import PostgresBackend

    from .freezable import freezable

    with freezable(pg_dsn) as (relay, via), _pgbouncer(via, "transaction") as dsn:
        backend = PostgresBackend(dsn, schema=bouncer_schema, server_timeout=0.5, connect_timeout=2)
        with Checkpointer(backend) as cp:
            first = Checkpoint(id="00000001", channel_values={"n": 1}, channel_versions={"n": 1})
            cp.put(first, thread_id="t")
            params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
            assert probe(params, 2) is None
            relay.freeze()
            reason = probe(params, 2)
            assert reason is not None and "no reply" in reason, reason
            start = time.monotonic()
            second = Checkpoint(id="00000002", channel_values={"n": 2}, channel_versions={"n": 2})
            with pytest.raises(StoreUnavailableError, match="stopped answering while writing"):
                cp.put(second, thread_id="t")
            assert time.monotonic() - start < 10
            relay.thaw()
            got = cp.get("t", checkpoint_id="00000001")
            assert got is not None and got.checkpoint.channel_values == {"n": 1}
