"""Drop-in LangGraph checkpoint savers backed by snapstate.

Change the import and nothing else::

    from snapstate.langgraph import SqliteSaver          # was langgraph.checkpoint.sqlite

The savers have LangGraph's names, constructors and factories, and both the sync and the
async API. See ``docs/langgraph.md`` for what differs and what is better.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import LoopThreadError
from ._import import ImportReport, aimport_history, import_history
from ._memory import InMemorySaver, MemorySaver
from ._sqlite import AsyncSqliteSaver, SqliteSaver

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
