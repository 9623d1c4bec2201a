"""``snapstate.langgraph`` refuses, with what to upgrade, a langgraph-checkpoint older than the
contract its savers keep, instead of failing on a missing name (or working by another contract)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

import snapstate.langgraph as lg


def _installed(monkeypatch: pytest.MonkeyPatch, version: str | None) -> None:
    def fake(name: str) -> str:
        assert name == "langgraph-checkpoint"
        if version is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return version

    monkeypatch.setattr(importlib.metadata, "version", fake)


@pytest.mark.parametrize("version", ["4.0.3", "4.1.0", "4.2.9", "3.0.1"])
def test_an_older_langgraph_checkpoint_is_refused(
    monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    _installed(monkeypatch, version)
    with pytest.raises(ImportError) as err:
        lg._refuse_old_langgraph_checkpoint()
    assert f"{version} is installed" in str(err.value)
    assert "langgraph-checkpoint 4.3.0 or newer" in str(err.value)


@pytest.mark.parametrize("version", ["4.3.0", "4.3.2", "4.10.0", "5.0.0rc1", None])
def test_the_oldest_kept_newer_ones_and_no_metadata_pass(
    monkeypatch: pytest.MonkeyPatch, version: str | None
) -> None:
    _installed(monkeypatch, version)
    lg._refuse_old_langgraph_checkpoint()


def test_the_import_itself_fails_clearly_on_an_old_install(tmp_path: Path) -> None:
    """A fresh interpreter that finds an older langgraph-checkpoint's metadata first."""
    info = tmp_path / "langgraph_checkpoint-4.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: langgraph-checkpoint\nVersion: 4.1.0\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", "import snapstate.langgraph"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "ImportError: snapstate.langgraph needs langgraph-checkpoint 4.3.0 or newer; " in (
        done.stderr
    )
    assert "4.1.0 is installed" in done.stderr
