"""snapstate: fast, safe, compact persistence for the state of graph executions.

After every step of a graph, a :class:`Checkpointer` saves a checkpoint; a run can then pause and
resume, survive a crash, and be inspected, rewound and forked. LangGraph users import drop-in
savers from :mod:`snapstate.langgraph`.
"""

from __future__ import annotations

from ._engine import AsyncCheckpointer, Checkpointer, Progress, RetentionReport
from ._model import Checkpoint, PendingWrite, Snapshot
from .errors import (
    ConfigurationError,
    DecodeError,
    EncodeError,
    InvalidArgumentError,
    SnapstateError,
    StorageError,
    StoreUnavailableError,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "Checkpointer",
    "AsyncCheckpointer",
    "Checkpoint",
    "PendingWrite",
    "Snapshot",
    "RetentionReport",
    "Progress",
    "SnapstateError",
    "UsageError",
    "ConfigurationError",
    "InvalidArgumentError",
    "EncodeError",
    "StorageError",
    "DecodeError",
    "StoreUnavailableError",
    "__version__",
]
