"""Looking at stored history: what changed between two checkpoints.

Used by ``snapstate inspect``; importable for applications and notebooks.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ._model import Snapshot

__all__ = ["ChannelChange", "diff"]


class ChannelChange(msgspec.Struct, frozen=True):
    """How one channel differs between two checkpoints.

    ``kind`` is ``"added"``, ``"removed"``, ``"appended"`` (a list that gained ``appended``
    items at its end) or ``"changed"``. ``old`` and ``new`` are short printable summaries.
    """

    channel: str
    kind: str
    old: str
    new: str
    appended: int = 0


def _summary(value: Any, width: int = 60) -> str:
    if isinstance(value, (list, tuple)):
        text = f"{type(value).__name__} of {len(value)} items"
    elif isinstance(value, dict):
        text = f"dict of {len(value)} keys"
    else:
        text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def diff(old: Snapshot, new: Snapshot) -> list[ChannelChange]:
    """The channels whose values differ from ``old`` to ``new``, sorted by channel name."""
    a = old.checkpoint.channel_values
    b = new.checkpoint.channel_values
    out: list[ChannelChange] = []
    for channel in sorted(a.keys() | b.keys()):
        if channel not in b:
            out.append(ChannelChange(channel, "removed", _summary(a[channel]), ""))
        elif channel not in a:
            out.append(ChannelChange(channel, "added", "", _summary(b[channel])))
        elif a[channel] != b[channel]:
            x, y = a[channel], b[channel]
            if isinstance(x, list) and isinstance(y, list) and y[: len(x)] == x:
                out.append(
                    ChannelChange(channel, "appended", _summary(x), _summary(y), len(y) - len(x))
                )
            else:
                out.append(ChannelChange(channel, "changed", _summary(x), _summary(y)))
    return out
