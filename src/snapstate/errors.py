"""The exceptions snapstate raises.

Everything derives from :class:`SnapstateError`. There are two branches:

* :class:`UsageError`: the caller asked for something wrong (bad arguments, a value that cannot
  be encoded, a misconfigured connection). These also derive from ``ValueError`` or ``TypeError``,
  so code that already catches those keeps working.
* :class:`StorageError`: what is stored, or the store itself, is at fault (undecodable bytes,
  an unknown format version, a type that may not load, an unreachable server, a failed
  migration).

::

    SnapstateError
    +-- UsageError
    |   +-- ConfigurationError (ValueError)
    |   +-- InvalidArgumentError (ValueError)
    |   +-- EncodeError (TypeError)
    +-- StorageError
        +-- DecodeError (ValueError)
        |   +-- FormatVersionError
        |   +-- UnregisteredTypeError
        +-- StoreUnavailableError (ConnectionError)
        +-- ThreadDeletedError
        +-- MigrationError
        |   +-- SchemaVersionError
        +-- StateVersionError
        +-- ImportMismatchError
        +-- DeltaBaseMissingError

Messages say what went wrong and where: the thread, namespace, checkpoint and channel concerned,
and for values the path inside the value (``$.messages[3].content``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "SnapstateError",
    "UsageError",
    "ConfigurationError",
    "InvalidArgumentError",
    "EncodeError",
    "StorageError",
    "DecodeError",
    "FormatVersionError",
    "UnregisteredTypeError",
    "StoreUnavailableError",
    "ThreadDeletedError",
    "MigrationError",
    "SchemaVersionError",
    "StateVersionError",
    "ImportMismatchError",
    "DeltaBaseMissingError",
]


class SnapstateError(Exception):
    """Base class of every error snapstate raises.

    Parameters
    ----------
    message:
        What went wrong, and where.
    hint:
        Optional advice on how to fix a common misconfiguration; shown after the message.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} (hint: {hint})")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep errors picklable (they cross process boundaries in multi-process writers).
        return (_rebuild, (type(self), self.message, self.hint))


def _rebuild(cls: type[SnapstateError], message: str, hint: str | None) -> SnapstateError:
    err = cls.__new__(cls)
    SnapstateError.__init__(err, message, hint=hint)
    return err


class UsageError(SnapstateError):
    """The caller used snapstate incorrectly."""


class ConfigurationError(UsageError, ValueError):
    """A backend, connection or setting is configured in a way snapstate cannot work with."""


class InvalidArgumentError(UsageError, ValueError):
    """An argument is malformed: a bad thread id, filter key, config shape, ..."""


class EncodeError(UsageError, TypeError):
    """A value cannot be encoded. The message names the channel, the path and the type."""


class StorageError(SnapstateError):
    """Stored data, or the store itself, is at fault."""


class DecodeError(StorageError, ValueError):
    """Stored bytes cannot be decoded: corrupt, truncated, or failing their checksum."""


class FormatVersionError(DecodeError):
    """Stored bytes carry a format version this release of snapstate does not know."""


class UnregisteredTypeError(DecodeError):
    """Stored bytes name a type that is not allowed to load (see ``snapstate.codec.register``)."""


class StoreUnavailableError(StorageError, ConnectionError):
    """The store cannot be reached, or the connection broke while talking to it."""


class ThreadDeletedError(StorageError):
    """A write belongs to the history of a thread that was deleted.

    Deleting a thread leaves a tombstone, so that a run still in flight elsewhere cannot bring
    the thread back with a late checkpoint or write. A new history on the same thread id (a
    checkpoint without a parent, with a greater id) is accepted.
    """


class MigrationError(StorageError):
    """A schema migration failed, or the schema is not in a state snapstate can use."""


class SchemaVersionError(MigrationError):
    """The database was written by a newer snapstate than this one."""


class StateVersionError(StorageError):
    """A checkpoint's application state version cannot be upgraded to the current one."""


class ImportMismatchError(StorageError):
    """A checkpoint read back after an import differs from the one it was copied from
    (``snapstate.langgraph.import_history``). The message names the thread, the checkpoint and
    the field."""


class DeltaBaseMissingError(StorageError):
    """A write named as the base of an append-delta a value that is not stored (retention in
    another process deleted it). Nothing of the write was stored. The writers store such a
    checkpoint again with whole values, so callers rarely see this."""
