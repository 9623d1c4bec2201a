"""Upgrade saved state when the application's state schema changes.

Long-running workflows outlive the code that started them. An application declares the version
of its state schema and registers one function per step (1 to 2, 2 to 3, ...)::

    from snapstate.upgrades import StateUpgrades, rename_channel, add_channel

    upgrades = StateUpgrades(version=3)

    @upgrades.step(1)                 # from version 1 to version 2
    def rename_messages(snap):
        return rename_channel(snap, "messages", "chat")

    @upgrades.step(2)                 # from version 2 to version 3
    def add_user(snap):
        return add_channel(snap, "user_id", "anonymous")

    cp = Checkpointer("state.db", upgrades=upgrades)

Every checkpoint records the state version it was saved under (0 when no upgrades were
configured). Reading an older checkpoint runs the chain of steps on it, in order, never skipping
one; a checkpoint from a newer version than the code knows is refused with
:class:`~snapstate.errors.StateVersionError`.

A step receives a :class:`~snapstate.Snapshot` and returns one (it may change channel values,
their versions, ``versions_seen``, metadata and pending writes). Steps must be deterministic:
the upgraded value of a channel is stored once per channel version, so every checkpoint that
shares a version must upgrade it to the same value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from ._model import Checkpoint, PendingWrite, Snapshot, Version
from .errors import ConfigurationError, InvalidArgumentError, StateVersionError

__all__ = ["StateUpgrades", "UpgradeStep", "rename_channel", "add_channel", "drop_channel"]

UpgradeStep = Callable[[Snapshot], Snapshot]


class StateUpgrades:
    """The current state version and the steps that bring older checkpoints up to it."""

    def __init__(self, version: int) -> None:
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ConfigurationError(f"state version must be an int >= 0, got {version!r}")
        self.version = version
        self._steps: dict[int, UpgradeStep] = {}

    def step(self, from_version: int) -> Callable[[UpgradeStep], UpgradeStep]:
        """Register a function upgrading a snapshot from ``from_version`` to the next."""

        def register(fn: UpgradeStep) -> UpgradeStep:
            self.add(from_version, fn)
            return fn

        return register

    def add(self, from_version: int, fn: UpgradeStep) -> None:
        """Register ``fn`` as the step from ``from_version`` to ``from_version + 1``."""
        if not isinstance(from_version, int) or not 0 <= from_version < self.version:
            raise ConfigurationError(
                f"an upgrade step starts at a version from 0 to {self.version - 1}, "
                f"got {from_version!r}"
            )
        if from_version in self._steps:
            raise ConfigurationError(f"an upgrade step from version {from_version} exists")
        if not callable(fn):
            raise ConfigurationError(f"upgrade step must be callable, got {type(fn).__name__}")
        self._steps[from_version] = fn

    def apply(self, snapshot: Snapshot, saved_version: int) -> Snapshot:
        """Bring a snapshot saved under ``saved_version`` up to :attr:`version`."""
        where = (
            f"checkpoint {snapshot.checkpoint.id!r} (thread {snapshot.thread_id!r}, "
            f"namespace {snapshot.namespace!r})"
        )
        if saved_version > self.version:
            raise StateVersionError(
                f"{where} was saved under state version {saved_version}, newer than this "
                f"code's {self.version}",
                hint="run the newer code, or register upgrades up to that version",
            )
        for v in range(saved_version, self.version):
            fn = self._steps.get(v)
            if fn is None:
                raise StateVersionError(
                    f"{where} was saved under state version {saved_version}; there is no "
                    f"upgrade step from version {v} to {v + 1}",
                    hint=f"register one with @upgrades.step({v})",
                )
            try:
                result = fn(snapshot)
            except Exception as exc:
                raise StateVersionError(
                    f"upgrading {where} from state version {v} to {v + 1} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if not isinstance(result, Snapshot):
                raise StateVersionError(
                    f"the upgrade step from version {v} returned {type(result).__name__}, "
                    "not a Snapshot"
                )
            snapshot = result
        return snapshot

    def __repr__(self) -> str:
        return f"StateUpgrades(version={self.version}, steps={sorted(self._steps)})"


def _with(snapshot: Snapshot, checkpoint: Checkpoint, writes: list[PendingWrite]) -> Snapshot:
    return msgspec.structs.replace(snapshot, checkpoint=checkpoint, pending_writes=writes)


def rename_channel(snapshot: Snapshot, old: str, new: str) -> Snapshot:
    """Move a channel's value, version, ``versions_seen`` entries and pending writes to a new
    name. A snapshot without the channel is returned unchanged."""
    cp = snapshot.checkpoint
    if old not in cp.channel_values and old not in cp.channel_versions:
        return snapshot
    if new in cp.channel_values or new in cp.channel_versions:
        raise InvalidArgumentError(f"cannot rename channel {old!r} to {new!r}: {new!r} exists")

    def moved(d: dict[str, Any]) -> dict[str, Any]:
        return {(new if k == old else k): v for k, v in d.items()}

    checkpoint = msgspec.structs.replace(
        cp,
        channel_values=moved(cp.channel_values),
        channel_versions=moved(cp.channel_versions),
        versions_seen={node: moved(seen) for node, seen in cp.versions_seen.items()},
    )
    writes = [
        msgspec.structs.replace(w, channel=new) if w.channel == old else w
        for w in snapshot.pending_writes
    ]
    return _with(snapshot, checkpoint, writes)


def add_channel(
    snapshot: Snapshot, name: str, value: Any, *, version: Version | None = None
) -> Snapshot:
    """Give the snapshot a new channel with ``value`` (unchanged if it has one already).

    Without ``version`` the channel gets the lowest version of the kind the checkpoint uses
    (``1`` for numbers, a LangGraph-style zero-padded ``"...01.0"`` for strings), so the
    framework's next version for it is greater.
    """
    cp = snapshot.checkpoint
    if name in cp.channel_values:
        return snapshot
    if version is None:
        kinds = {type(v) for v in cp.channel_versions.values()}
        version = f"{1:032}.0" if kinds == {str} else 1
    checkpoint = msgspec.structs.replace(
        cp,
        channel_values={**cp.channel_values, name: value},
        channel_versions={**cp.channel_versions, name: version},
    )
    return _with(snapshot, checkpoint, snapshot.pending_writes)


def drop_channel(snapshot: Snapshot, name: str) -> Snapshot:
    """Remove a channel's value, version, ``versions_seen`` entries and pending writes."""
    cp = snapshot.checkpoint
    checkpoint = msgspec.structs.replace(
        cp,
        channel_values={k: v for k, v in cp.channel_values.items() if k != name},
        channel_versions={k: v for k, v in cp.channel_versions.items() if k != name},
        versions_seen={
            node: {k: v for k, v in seen.items() if k != name}
            for node, seen in cp.versions_seen.items()
        },
    )
    writes = [w for w in snapshot.pending_writes if w.channel != name]
    return _with(snapshot, checkpoint, writes)
