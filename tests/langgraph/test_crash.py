"""A graph killed part-way (SIGKILL) resumes in a new process and finishes as if never killed.

The child (``crash_child.py``) runs ``one -> two -> (fast || slow) -> join``. It is killed
inside ``slow``, after ``fast``'s writes were stored and before the step completed. A new
process resumes the thread: ``one``, ``two`` and ``fast`` must not run again, ``slow`` runs once
more, and the final state must equal an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from .conftest import kinds

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def child(
    kind: str, store: str, thread: str, work: Path, mode: str, *flags: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.langgraph.crash_child",
            kind,
            store,
            thread,
            str(work),
            mode,
            *flags,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()


def store_for(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind.startswith("postgres"):
        dsn = request.getfixturevalue("pg_dsn")
        schema = request.getfixturevalue("pg_schema")
        return f"{dsn}#{schema}"
    return str(tmp_path / "store.db")


@kinds("sqlite", "sqlite-async", "postgres", "postgres-async")
def test_killed_run_resumes_without_rerunning_completed_nodes(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = store_for(kind, tmp_path, request)

    # The reference: the same graph, never killed.
    clean = tmp_path / "clean"
    clean.mkdir()
    finish(child(kind, store, str(uuid.uuid4()), clean, "run"))
    expected = json.loads((clean / "final.json").read_text())
    assert Counter((clean / "runs.log").read_text().split()) == {
        "one": 1,
        "two": 1,
        "fast": 1,
        "slow": 1,
        "join": 1,
    }

    # Killed inside "slow", once "fast" is stored.
    work = tmp_path / "killed"
    work.mkdir()
    thread = str(uuid.uuid4())
    proc = child(kind, store, thread, work, "run", "--arm")
    try:
        deadline = time.monotonic() + 60
        while not (work / "reached").exists():
            if proc.poll() is not None:
                pytest.fail(
                    f"the child exited before the kill point: {proc.stderr.read().decode()}"
                )
            assert time.monotonic() < deadline, "the child never reached the kill point"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (work / "final.json").exists()

    # A new process resumes the thread and finishes it.
    finish(child(kind, store, thread, work, "resume"))
    runs = Counter((work / "runs.log").read_text().split())
    assert runs == {"one": 1, "two": 1, "fast": 1, "slow": 2, "join": 1}
    assert json.loads((work / "final.json").read_text()) == expected
