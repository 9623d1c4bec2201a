"""Storage backends and the contract they implement.

* :class:`MemoryBackend` (``"memory://"``): in-process, for tests.
* :class:`~snapstate.backends.sqlite.SqliteBackend` (``"sqlite:///file.db"`` or a plain path):
  the embedded default, one file.
* ``snapstate.backends.postgres`` (``"postgresql://..."``): production, many processes.

A custom backend subclasses :class:`Backend` and implements its abstract methods; see
``docs/backends.md``.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ConfigurationError
from ._async import AsyncBackend, ThreadedAsyncBackend, as_async_backend
from ._base import (
    BLOB_DELTA,
    BLOB_EMPTY,
    BLOB_FULL,
    Backend,
    BlobRef,
    BlobRow,
    CheckpointRow,
    ListQuery,
    WriteBatch,
    WriteRow,
    delta_bases,
    missing_base,
    validate_filter,
)
from .memory import MemoryBackend

__all__ = [
    "Backend",
    "AsyncBackend",
    "ThreadedAsyncBackend",
    "as_async_backend",
    "MemoryBackend",
    "CheckpointRow",
    "BlobRow",
    "BlobRef",
    "WriteRow",
    "WriteBatch",
    "ListQuery",
    "BLOB_FULL",
    "BLOB_DELTA",
    "BLOB_EMPTY",
    "validate_filter",
    "delta_bases",
    "missing_base",
    "open_backend",
]


def open_backend(url: str | os.PathLike[str], **options: Any) -> Backend:
    """A backend for a URL or path.

    ``"memory://"``; ``"sqlite:///relative.db"``, ``"sqlite:////abs/path.db"`` or any plain path
    (SQLite); ``"postgresql://..."`` or ``"postgres://..."`` (PostgreSQL, needs the ``postgres``
    extra).
    """
    text = os.fspath(url)
    if not isinstance(text, str):
        raise ConfigurationError(f"backend URL must be text, got {type(text).__name__}")
    if text in ("memory://", "memory:", ":memory:memory"):
        return MemoryBackend(**options)
    if text.startswith(("postgresql://", "postgres://")):
        try:
            from .postgres import PostgresBackend
        except ImportError as exc:
            raise ConfigurationError(
                f"the PostgreSQL backend needs psycopg: {exc}",
                hint="pip install 'snapstate[postgres]'",
            ) from None
        return PostgresBackend(text, **options)
    from .sqlite import SqliteBackend

    if text.startswith("sqlite://"):
        path = text[len("sqlite://") :]
        if path.startswith("/"):
            path = path[1:]
        if not path:
            raise ConfigurationError(f"no file in SQLite URL {text!r}")
        return SqliteBackend(path, **options)
    if "://" in text:
        raise ConfigurationError(
            f"unknown backend URL scheme in {text!r}: use memory://, sqlite:///path or "
            "postgresql://..."
        )
    return SqliteBackend(text, **options)
