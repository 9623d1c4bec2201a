"""The ``snapstate`` command line, run in-process on a real SQLite file."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

from snapstate import Checkpoint, Checkpointer
from snapstate.cli import main, parse_duration
from snapstate.history import diff


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = str(tmp_path / "cli.db")
    with Checkpointer(path) as cp:
        msgs: list[str] = []
        for i in range(10):
            msgs = [*msgs, f"message number {i}"]
            cp.put(
                Checkpoint(
                    id=f"{i:08d}",
                    channel_values={"messages": msgs, "step": i},
                    channel_versions={"messages": i + 1, "step": i + 1},
                ),
                thread_id="chat",
                metadata={"source": "loop", "step": i},
                parent_id=f"{i - 1:08d}" if i else None,
            )
        cp.put(
            Checkpoint(id="00000001", channel_values={"x": 1}, channel_versions={"x": 1}),
            thread_id="other",
        )
    return path


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_stats(store: str) -> None:
    code, text = run("stats", store)
    assert code == 0
    assert "threads      2" in text
    assert "checkpoints          11" in text
    assert "messages" in text and "step" in text
    assert "compression" in text and "of values in" in text


def test_inspect_history_and_diff(store: str) -> None:
    code, text = run("inspect", store, "chat")
    assert code == 0
    lines = text.splitlines()
    assert len(lines) == 11  # header + 10 checkpoints, oldest first
    assert lines[1].startswith("00000000")
    assert "[messages+1, step*]" in lines[2] and "step=1" in lines[2]
    code, text = run("inspect", store, "chat", "--diff", "00000002", "00000007")
    assert code == 0
    assert "messages: appended 5 item(s) (list of 3 items -> list of 8 items)" in text
    assert "step: changed 2 -> 7" in text
    code, text = run("inspect", store, "chat", "--diff", "00000002", "nope")
    assert code == 1 and "no checkpoint 'nope'" in text
    code, text = run("inspect", store, "missing")
    assert code == 1 and "no checkpoints in thread 'missing'" in text


def test_prune_dry_run_then_real(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run("prune", store, "--keep-last", "2", "--dry-run")
    assert code == 0
    assert "would delete: 0 idle thread(s), 8 checkpoint(s)" in text
    assert "keep last: 2/2" in capsys.readouterr().err  # progress on stderr
    with Checkpointer(store) as cp:
        assert len(list(cp.list("chat"))) == 10
    code, text = run("prune", store, "--keep-last", "2", "--thread", "chat")
    assert code == 0 and "deleted: 0 idle thread(s), 8 checkpoint(s)" in text
    with Checkpointer(store) as cp:
        kept = list(cp.list("chat"))
        assert [s.checkpoint.id for s in kept] == ["00000009", "00000008"]
        assert kept[0].checkpoint.channel_values["messages"][-1] == "message number 9"
    code, text = run("prune", store, "--idle", "1d")
    assert code == 0 and "deleted: 0 idle thread(s)" in text


def test_prune_idle_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--idle`` deletes the threads idle that long, with progress on stderr."""
    path = str(tmp_path / "idle.db")
    real = time.time
    with Checkpointer(path) as cp:
        # The engine stamps each checkpoint with time.time(): "old" was last written 3 days ago.
        for thread, at in (("old", real() - 3 * 86400), ("fresh", real())):
            monkeypatch.setattr(time, "time", lambda at=at: at)
            cp.put(
                Checkpoint(id="00000001", channel_values={"x": 1}, channel_versions={"x": 1}),
                thread_id=thread,
            )
    monkeypatch.setattr(time, "time", real)
    code, text = run("prune", path, "--idle", "2d")
    assert code == 0 and "deleted: 1 idle thread(s), 1 checkpoint(s), 1 blob(s)" in text
    assert "idle threads: 1/1" in capsys.readouterr().err
    with Checkpointer(path) as cp:
        assert cp.get("old") is None and cp.get("fresh") is not None


def test_errors(store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run("stats", str(tmp_path / "nope.db"))
    assert code == 2
    assert "no database at" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists()
    code, _ = run("prune", store)
    assert code == 2
    assert "retain needs a policy" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run("prune", store, "--idle", "soon")
    assert "invalid duration 'soon'" in capsys.readouterr().err


def test_parse_duration() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("1.5h") == 5400
    assert parse_duration("15m") == 900
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("2w") == 14 * 86400


def test_console_script_runs(store: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "snapstate.cli", "stats", store],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "threads      2" in proc.stdout


def test_diff_function() -> None:
    with Checkpointer("memory://") as cp:
        cp.put(
            Checkpoint(id="1", channel_values={"a": [1], "gone": 1}, channel_versions={"a": 1}),
            thread_id="t",
        )
        cp.put(
            Checkpoint(
                id="2",
                channel_values={"a": [2], "new": "x"},
                channel_versions={"a": 2, "new": 1},
            ),
            thread_id="t",
        )
        a, b = cp.get("t", checkpoint_id="1"), cp.get("t", checkpoint_id="2")
        assert a is not None and b is not None
        assert [(c.channel, c.kind) for c in diff(a, b)] == [("a", "changed"), ("new", "added")]


def test_upgrade_command_rewrites_in_place(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "myhooks.py").write_text(
        "from snapstate.upgrades import StateUpgrades, rename_channel\n"
        "upgrades = StateUpgrades(version=1)\n"
        "upgrades.add(0, lambda snap: rename_channel(snap, 'messages', 'chat'))\n"
        "not_hooks = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code, text = run("upgrade", store, "--hooks", "myhooks:upgrades", "--chunk", "3")
    assert code == 0 and "rewrote 11 checkpoint(s) to state version 1" in text
    assert "upgrade: 2/2 threads" in capsys.readouterr().err
    code, text = run("upgrade", store, "--hooks", "myhooks:upgrades")
    assert code == 0 and "rewrote 0 checkpoint(s)" in text  # resumable: nothing left
    import myhooks  # type: ignore[import-not-found]

    with Checkpointer(store, upgrades=myhooks.upgrades) as cp:
        snap = cp.get("chat")
        assert snap is not None and "chat" in snap.checkpoint.channel_values
    for spec, message in [
        ("myhooks", "must be MODULE:ATTRIBUTE"),
        ("nosuchmodule:x", "cannot load upgrade hooks"),
        ("myhooks:not_hooks", "is a int, not a snapstate.upgrades.StateUpgrades"),
    ]:
        code, _ = run("upgrade", store, "--hooks", spec)
        assert code == 2
        assert message in capsys.readouterr().err


@pytest.mark.postgres
def test_commands_reach_a_postgres_store_in_its_schema(pg_dsn: str, pg_schema: str) -> None:
    """``--schema`` points stats, inspect, prune, migrate and upgrade at a store outside
    ``public``; it is refused for a SQLite file."""
    from snapstate.backends.postgres import PostgresBackend

    with Checkpointer(PostgresBackend(pg_dsn, schema=pg_schema)) as cp:
        for i in range(5):
            cp.put(
                Checkpoint(id=f"{i:08d}", channel_values={"step": i}, channel_versions={"step": i}),
                thread_id="chat",
            )
    code, text = run("stats", pg_dsn, "--schema", pg_schema)
    assert code == 0 and "checkpoints           5" in text, text
    code, text = run("inspect", pg_dsn, "chat", "--schema", pg_schema)
    assert code == 0 and len(text.splitlines()) == 6, text
    code, text = run("migrate", pg_dsn, "--schema", pg_schema, "--dry-run")
    assert code == 0, text
    code, text = run("prune", pg_dsn, "--schema", pg_schema, "--keep-last", "2")
    assert code == 0 and "deleted: 0 idle thread(s), 3 checkpoint(s)" in text, text
    with Checkpointer(PostgresBackend(pg_dsn, schema=pg_schema)) as cp:
        assert [s.checkpoint.id for s in cp.list("chat")] == ["00000004", "00000003"]


def test_schema_is_refused_for_a_sqlite_store(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run("stats", store, "--schema", "other")
    assert code == 2
    assert "--schema 'other' names a PostgreSQL schema" in capsys.readouterr().err
