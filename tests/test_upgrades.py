"""State upgrade hooks: old checkpoints read under a newer state schema, on every backend."""

from __future__ import annotations

from typing import Any

import pytest

from snapstate import Checkpoint, Checkpointer, Snapshot
from snapstate.backends import WriteBatch
from snapstate.errors import ConfigurationError, StateVersionError
from snapstate.upgrades import StateUpgrades, add_channel, drop_channel, rename_channel

from .fix_backends import BackendFactory


def v1_history(saver: Checkpointer, thread: str = "t", n: int = 6) -> None:
    """State schema 1: a list of plain strings in ``messages`` and a ``scratch`` channel."""
    msgs: list[str] = []
    for i in range(n):
        msgs = [*msgs, f"line {i}"]
        saver.put(
            Checkpoint(
                id=f"{i:04d}",
                channel_values={"messages": msgs, "scratch": i},
                channel_versions={"messages": i + 1, "scratch": i + 1},
                versions_seen={"agent": {"messages": i}},
            ),
            thread_id=thread,
            parent_id=f"{i - 1:04d}" if i else None,
            metadata={"step": i},
        )
    saver.put_writes(
        [("messages", "pending line")],
        thread_id=thread,
        checkpoint_id=f"{n - 1:04d}",
        task_id="task",
    )


def upgrades_to_3() -> StateUpgrades:
    up = StateUpgrades(version=3)

    @up.step(0)  # 0 -> 1: messages become dicts (a changed message type)
    def to_dicts(snap: Snapshot) -> Snapshot:
        values = dict(snap.checkpoint.channel_values)
        values["messages"] = [{"text": m} for m in values["messages"]]
        cp = snap.checkpoint
        return Snapshot(
            snap.thread_id,
            snap.namespace,
            Checkpoint(
                id=cp.id,
                channel_values=values,
                channel_versions=cp.channel_versions,
                versions_seen=cp.versions_seen,
                ts=cp.ts,
                extra=cp.extra,
            ),
            snap.metadata,
            snap.parent_id,
            [
                type(w)(w.task_id, w.channel, {"text": w.value}, w.task_path, w.idx)
                if w.channel == "messages"
                else w
                for w in snap.pending_writes
            ],
            snap.created_at,
        )

    @up.step(1)  # 1 -> 2: a renamed channel
    def rename(snap: Snapshot) -> Snapshot:
        return drop_channel(rename_channel(snap, "messages", "chat"), "scratch")

    @up.step(2)  # 2 -> 3: a new required field
    def user(snap: Snapshot) -> Snapshot:
        return add_channel(snap, "user_id", "anonymous")

    return up


def test_old_thread_reads_upgraded_and_resumes(backend_factory: BackendFactory) -> None:
    v1_history(Checkpointer(backend_factory()))
    saver = Checkpointer(backend_factory(), upgrades=upgrades_to_3())
    snap = saver.get("t")
    assert snap is not None
    cp = snap.checkpoint
    assert cp.channel_values == {
        "chat": [{"text": f"line {i}"} for i in range(6)],
        "user_id": "anonymous",
    }
    assert cp.channel_versions == {"chat": 6, "user_id": 1}
    assert cp.versions_seen == {"agent": {"chat": 5}}
    assert [(w.channel, w.value) for w in snap.pending_writes] == [
        ("chat", {"text": "pending line"})
    ]
    # Resume: the framework saves the next checkpoint from the upgraded state. Unchanged
    # channels keep their versions, so only the new step value is stored.
    saver.put(
        Checkpoint(
            id="0006",
            channel_values={**cp.channel_values, "step": 7},
            channel_versions={**cp.channel_versions, "step": 1},
            versions_seen=cp.versions_seen,
        ),
        thread_id="t",
        parent_id="0005",
        changed={"step": 1},
    )
    # A fresh process reads the resumed thread: the upgraded values, not the old bytes.
    fresh = Checkpointer(backend_factory(), upgrades=upgrades_to_3())
    latest = fresh.get("t")
    assert latest is not None
    assert latest.checkpoint.channel_values == {
        "chat": [{"text": f"line {i}"} for i in range(6)],
        "user_id": "anonymous",
        "step": 7,
    }
    # Every older checkpoint reads upgraded too, through list and get.
    for s in fresh.list("t", before="0006"):
        i = int(s.checkpoint.id)
        assert s.checkpoint.channel_values["chat"] == [{"text": f"line {j}"} for j in range(i + 1)]
    first = fresh.get("t", checkpoint_id="0000")
    assert first is not None and first.checkpoint.channel_values["user_id"] == "anonymous"


def test_newer_state_is_refused(backend_factory: BackendFactory) -> None:
    newer = StateUpgrades(version=4)
    for v in range(4):
        newer.add(v, lambda s: s)
    Checkpointer(backend_factory(), upgrades=newer).put(
        Checkpoint(id="1", channel_values={"x": 1}, channel_versions={"x": 1}), thread_id="t"
    )
    with pytest.raises(StateVersionError, match="saved under state version 4, newer than"):
        Checkpointer(backend_factory(), upgrades=upgrades_to_3()).get("t")
    with pytest.raises(StateVersionError, match="newer than this code's 0"):
        Checkpointer(backend_factory()).get("t")


def test_missing_step_is_an_error_not_a_skip(backend_factory: BackendFactory) -> None:
    v1_history(Checkpointer(backend_factory()), n=2)
    gap = StateUpgrades(version=2)
    gap.add(1, lambda s: s)
    with pytest.raises(StateVersionError, match="no upgrade step from version 0 to 1") as err:
        Checkpointer(backend_factory(), upgrades=gap).get("t")
    assert "@upgrades.step(0)" in str(err.value)


def test_failing_step_names_the_checkpoint(backend_factory: BackendFactory) -> None:
    v1_history(Checkpointer(backend_factory()), n=2)
    bad = StateUpgrades(version=1)

    @bad.step(0)
    def boom(snap: Snapshot) -> Snapshot:
        raise KeyError("missing")

    with pytest.raises(StateVersionError, match=r"upgrading checkpoint '0001' \(thread 't'"):
        Checkpointer(backend_factory(), upgrades=bad).get("t")


def test_upgrade_stored_rewrites_and_resumes(backend_factory: BackendFactory) -> None:
    old = Checkpointer(backend_factory())
    for t in ("a", "b", "c"):
        v1_history(old, thread=t, n=5)
    saver = Checkpointer(backend_factory(), upgrades=upgrades_to_3())

    def interrupt(p: Any) -> None:
        if p.done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        saver.upgrade_stored(chunk=2, progress=interrupt)
    assert saver.upgrade_stored(chunk=2) == 10  # thread "a" was done before the interrupt
    assert saver.upgrade_stored() == 0
    # Rewritten rows are at the current state: a reader without the hooks sees them as newer...
    with pytest.raises(StateVersionError):
        Checkpointer(backend_factory()).get("b")
    # ...and readers with them read the upgraded values without upgrading again.
    calls: list[int] = []
    counting = upgrades_to_3()
    counting._steps = {
        k: (lambda s, k=k, f=f: calls.append(k) or f(s)) for k, f in counting._steps.items()
    }
    snap = Checkpointer(backend_factory(), upgrades=counting).get("b", checkpoint_id="0002")
    assert snap is not None and calls == []
    assert snap.checkpoint.channel_values == {
        "chat": [{"text": "line 0"}, {"text": "line 1"}, {"text": "line 2"}],
        "user_id": "anonymous",
    }
    assert snap.metadata == {"step": 2}


def test_retention_keeps_upgraded_values(backend_factory: BackendFactory) -> None:
    v1_history(Checkpointer(backend_factory()), n=8)
    saver = Checkpointer(backend_factory(), upgrades=upgrades_to_3())
    saver.upgrade_stored()
    saver.prune(["t"])
    got = saver.get("t")
    assert got is not None
    assert got.checkpoint.channel_values["chat"][-1] == {"text": "line 7"}
    assert got.checkpoint.channel_values["user_id"] == "anonymous"


def test_retention_without_the_hooks_keeps_upgraded_values(
    backend_factory: BackendFactory,
) -> None:
    """A checkpointer without the upgrade hooks (an ops script, say) runs retention on a store
    whose checkpoints were rewritten: the kept ones still read whole, upgraded values and all."""
    v1_history(Checkpointer(backend_factory()), n=8)
    Checkpointer(backend_factory(), upgrades=upgrades_to_3()).upgrade_stored()
    report = Checkpointer(backend_factory()).retain(keep_last=2)
    assert report.checkpoints_deleted == 6
    kept = list(Checkpointer(backend_factory(), upgrades=upgrades_to_3()).list("t"))
    assert [s.checkpoint.id for s in kept] == ["0007", "0006"]
    for s in kept:
        i = int(s.checkpoint.id)
        assert s.checkpoint.channel_values == {
            "chat": [{"text": f"line {j}"} for j in range(i + 1)],
            "user_id": "anonymous",
        }


def test_checkpoint_of_an_in_between_version_runs_only_the_later_steps(
    backend_factory: BackendFactory,
) -> None:
    """Saved under state version 1 (messages already dicts), read under version 3: only the
    steps from 1 and 2 run, so nothing is upgraded twice."""
    msgs = [{"text": f"line {i}"} for i in range(3)]
    Checkpointer(backend_factory(), upgrades=StateUpgrades(version=1)).put(
        Checkpoint(
            id="0000",
            channel_values={"messages": msgs, "scratch": 3},
            channel_versions={"messages": 1, "scratch": 1},
        ),
        thread_id="t",
    )
    calls: list[int] = []
    counting = upgrades_to_3()
    counting._steps = {
        k: (lambda s, k=k, f=f: calls.append(k) or f(s)) for k, f in counting._steps.items()
    }
    snap = Checkpointer(backend_factory(), upgrades=counting).get("t")
    assert snap is not None
    assert snap.checkpoint.channel_values == {"chat": msgs, "user_id": "anonymous"}
    assert calls == [1, 2]


def test_upgrade_stored_writes_in_chunks(
    backend_factory: BackendFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``chunk`` checkpoints are rewritten per write, the last write taking what is left."""
    v1_history(Checkpointer(backend_factory()), n=5)
    saver = Checkpointer(backend_factory(), upgrades=upgrades_to_3())
    sizes: list[int] = []
    write = saver.backend.write

    def spy(batch: WriteBatch) -> None:
        if batch.checkpoints:  # not the upgraded blobs a read stores on its own
            sizes.append(len(batch.checkpoints))
        write(batch)

    monkeypatch.setattr(saver.backend, "write", spy)
    assert saver.upgrade_stored(chunk=2) == 5
    assert sizes == [2, 2, 1]


def test_bad_configuration() -> None:
    with pytest.raises(ConfigurationError, match="state version must be an int >= 0"):
        StateUpgrades(version=-1)
    up = StateUpgrades(version=2)
    with pytest.raises(ConfigurationError, match="starts at a version from 0 to 1, got 2"):
        up.add(2, lambda s: s)
    up.add(0, lambda s: s)
    with pytest.raises(ConfigurationError, match="from version 0 exists"):
        up.add(0, lambda s: s)
    with pytest.raises(ConfigurationError, match=r"must be a snapstate\.upgrades\.StateUpgrades"):
        Checkpointer("memory://", upgrades=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="upgrade_stored needs upgrades"):
        Checkpointer("memory://").upgrade_stored()
