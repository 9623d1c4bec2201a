"""Drop-in LangGraph checkpoint savers backed by snapstate.

Change the import and nothing else::

    from snapstate.langgraph import SqliteSaver          # was langgraph.checkpoint.sqlite

The savers have LangGraph's names, constructors and factories, and both the sync and the
async API. See ``docs/langgraph.md`` for what differs and what is better.
"""

from __future__ import annotations

from ._base import LoopThreadError
from ._memory import InMemorySaver, MemorySaver
from ._sqlite import AsyncSqliteSaver, SqliteSaver

__all__ = [
    "InMemorySaver",
    "MemorySaver",
    "SqliteSaver",
    "AsyncSqliteSaver",
    "LoopThreadError",
]

