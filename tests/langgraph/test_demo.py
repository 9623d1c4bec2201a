"""``make demo`` (``python -m snapstate.demo``), run as the README runs it, on a small graph.

The demo checks its own claims (the resumed run starts at the killed step and ends with an
uninterrupted run's messages) and exits non-zero otherwise; these tests hold it to them and to
its safety: it empties only a directory it made.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


#: A benchmark part as short as it goes: the tests check its table, not its numbers.
QUICK_BENCH = ("--bench-turns", "2", "--bench-rounds", "1")


def demo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "snapstate.demo", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def small(work: Path, turns: int = 3, kill_at: int = 2) -> subprocess.CompletedProcess[str]:
    return demo("--dir", str(work), "--turns", str(turns), "--kill-at", str(kill_at), *QUICK_BENCH)


def assert_refused(work: Path, why: str) -> None:
    """The demo, pointed at ``work``, stops with a usage error that names it and says ``why``."""
    refused = small(work)
    assert refused.returncode == 2, refused.stdout
    assert why in refused.stderr
    assert str(work) in refused.stderr


def test_the_demo_kills_resumes_and_compares(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    done = small(work)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    child = re.findall(r"child  \| turn +(\d+) \| (\w+) +runs", out)
    parent = re.findall(r"parent \| turn +(\d+) \| (\w+) +runs", out)
    # The child reached turn 2's assistant step and was killed there; the parent ran that step
    # and the rest, and nothing the child had finished.
    assert child == [("1", "user"), ("1", "assistant"), ("2", "user"), ("2", "assistant")]
    assert parent == [("2", "assistant"), ("3", "user"), ("3", "assistant")]
    assert "SIGKILL sent to pid" in out
    assert "last checkpoint: step 3, 3 messages, next node: assistant" in out
    assert "finished: 6 messages" in out
    assert "steps that had finished before the kill did not run again" in out
    assert "the messages are those of a run that was never killed" in out
    # The history, newest first: the input's checkpoint (-1), then one as each of the six
    # steps starts (0 to 5) and the final one (6).
    steps = re.findall(r"^ +(-?\d+)  (?:loop|input) ", out, re.M)
    assert steps == ["6", "5", "4", "3", "2", "1", "0", "-1"]
    for saver in ("no checkpointer", "snapstate SqliteSaver", "langgraph SqliteSaver"):
        assert re.search(rf"^ +{saver} +\d+\.\d+", out, re.M), saver
    assert (work / "chat.db").exists()


def test_a_second_run_empties_the_demos_own_directory(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    assert small(work).returncode == 0
    (work / "chat.db-leftover").write_text("from an older run")
    again = small(work, turns=2, kill_at=1)
    assert again.returncode == 0, again.stderr
    assert not (work / "chat.db-leftover").exists()
    assert "finished: 4 messages" in again.stdout


@pytest.mark.parametrize("name", ["notes.txt", "chat.db"])
def test_a_directory_the_demo_did_not_make_is_left_alone(tmp_path: Path, name: str) -> None:
    # chat.db too: someone's own directory holding one is not the demo's to empty.
    work = tmp_path / "mine"
    work.mkdir()
    (work / name).write_text("keep me")
    assert_refused(work, "holds files this demo did not make")
    assert (work / name).read_text() == "keep me"
    assert sorted(p.name for p in work.iterdir()) == [name]


def test_an_empty_directory_is_used(tmp_path: Path) -> None:
    work = tmp_path / "empty"
    work.mkdir()
    done = small(work, turns=2, kill_at=2)
    assert done.returncode == 0, done.stderr
    assert "finished: 4 messages" in done.stdout


def test_a_file_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "a-file"
    work.write_text("keep me")
    assert_refused(work, "is a file, not a directory")
    assert work.read_text() == "keep me"


def test_the_default_directory_left_by_an_older_run_is_emptied(tmp_path: Path) -> None:
    # ./demo-data from a run before the mark: the same names, no mark.
    old = tmp_path / "demo-data"
    old.mkdir()
    (old / "chat.db").write_text("an older demo's")
    (old / "reached-kill-point").touch()
    done = demo("--turns", "2", "--kill-at", "1", *QUICK_BENCH, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (old / ".snapstate-demo").exists()
    assert "finished: 4 messages" in done.stdout
