"""Drop-in LangGraph checkpoint savers backed by snapstate.

Change the import and nothing else::

    from snapstate.langgraph import SqliteSaver          # was langgraph.checkpoint.sqlite

The savers have LangGraph's names, constructors and factories, and both the sync and the
async API. See ``docs/langgraph.md`` for what differs and what is better.
"""

from __future__ import annotations

import importlib.metadata
import re
from typing import TYPE_CHECKING, Any

#: The oldest langgraph-checkpoint whose contract these savers keep (the pending-writes order of
#: ``DeltaChannel`` histories, ``prune``, ``copy_thread``); the test suite runs against it.
OLDEST_LANGGRAPH_CHECKPOINT = (4, 3, 0)


def _refuse_old_langgraph_checkpoint() -> None:
    """Fail the import, saying what to upgrade, when the installed langgraph-checkpoint is older
    than :data:`OLDEST_LANGGRAPH_CHECKPOINT` (its own imports would fail on a missing name, or
    worse, work with another contract). Without the package's metadata (a vendored copy, say)
    nothing is checked."""
    try:
        installed = importlib.metadata.version("langgraph-checkpoint")
    except importlib.metadata.PackageNotFoundError:
        return
    parts = tuple(int(p) for p in re.findall(r"\d+", installed)[:3])
    if parts < OLDEST_LANGGRAPH_CHECKPOINT:
        oldest = ".".join(map(str, OLDEST_LANGGRAPH_CHECKPOINT))
        raise ImportError(
            f"snapstate.langgraph needs langgraph-checkpoint {oldest} or newer; "
            f"{installed} is installed (upgrade with: pip install 'snapstate[langgraph]' "
            f"'langgraph-checkpoint>={oldest}')"
        )


_refuse_old_langgraph_checkpoint()

from ._base import LoopThreadError  # noqa: E402
from ._import import ImportReport, aimport_history, import_history  # noqa: E402
from ._memory import InMemorySaver, MemorySaver  # noqa: E402
from ._sqlite import AsyncSqliteSaver, SqliteSaver  # noqa: E402

if TYPE_CHECKING:
    from ._postgres import AsyncPostgresSaver, PostgresSaver

__all__ = [
    "InMemorySaver",
    "MemorySaver",
    "SqliteSaver",
    "AsyncSqliteSaver",
    "PostgresSaver",
    "AsyncPostgresSaver",
    "LoopThreadError",
    "import_history",
    "aimport_history",
    "ImportReport",
]


def __getattr__(name: str) -> Any:
    # The Postgres savers need psycopg, an optional dependency: import them on first use.
    if name in ("PostgresSaver", "AsyncPostgresSaver"):
        from . import _postgres

        return getattr(_postgres, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
