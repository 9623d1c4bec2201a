"""Statements sent through the connection's libpq handle, past psycopg's cursor machinery.

Sending a statement through a psycopg cursor costs the client about 35 µs of CPU per call on
top of the round trip (a cursor, parameters adapted one by one by psycopg's transformer, the
query parsed for placeholders, the result wrapped): the chat graph's calls replayed by
``python -m benchmarks.bench_calls`` took 230 µs of CPU per ``put`` through the cursor and
196 µs through ``PGconn.send_query_prepared`` (medians of six alternating runs each, AMD EPYC
VM with 2 cores; docs/postgres.md). Rows come back in binary and are loaded by psycopg's own
``Transformer`` for the connection, so they are exactly what the cursor would have returned.

The path is taken only where it behaves as the cursor's does, and a statement it cannot send
goes through the cursor instead (:func:`encode` returns None), so errors stay psycopg's:

* parameters are ``str``, ``int``, finite ``float`` or None, or a ``list`` of ``str`` and None
  (sent as text, typed by the statement's casts or its target columns, as psycopg sends
  strings), and ``bytes`` where the statement says ``%b`` (binary), or there a ``list`` of
  ``bytes`` and None (a binary ``bytea[]``, as psycopg's binary dumper sends it); a string
  holding NUL, or anything else, falls back (psycopg then raises its own clear error, which the
  backend translates);
* the connection is open, idle or in a transaction snapstate opened, not in pipeline mode, and
  its client encoding is UTF-8 (text goes as UTF-8; under another encoding the cursor encodes
  it as that one).

Prepared statements are snapstate's own, never psycopg's (the backend runs its cursors with
``prepare=False``). With ``prepare=True`` (and the connection's ``prepare_threshold`` not None)
a statement is prepared on a connection at its second use there, outside any transaction,
under a name made of a hash of its text (``snapstate_...``), up to 64 per connection; otherwise
it is sent unnamed, as PgBouncer's transaction pooling needs. A name therefore only ever stands
for one text, on any server session: a pooler that hands a client's transactions to other
sessions can make a prepared statement missing there, never another one. When the session has
lost the statement (``DISCARD ALL``, a pooler), the server says so; the statement is prepared
again and run once more, and sent unnamed if it is missing again. That is safe because a
statement that failed so ran nothing.

It uses psycopg's documented ``pq`` module, ``psycopg.adapt.Transformer`` and, to wait for the
socket without blocking the event loop, the connection's ``wait`` with
``psycopg.generators.execute``, the pieces psycopg's own cursors use. When a psycopg release
lacks them, :data:`AVAILABLE` is False and every statement goes through the cursor.
"""

from __future__ import annotations

import hashlib
import math
import struct
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq

from ..codec._api import requested_impl

try:
    from psycopg import generators as _generators
    from psycopg.adapt import Transformer as _Transformer

    _execute = _generators.execute
    _error_from_result = pg_errors.error_from_result
    AVAILABLE = (
        hasattr(psycopg.Connection, "wait")
        and hasattr(psycopg.AsyncConnection, "wait")
        and hasattr(_Transformer, "from_context")
        and hasattr(_Transformer, "load_rows")
    )
except (ImportError, AttributeError):  # pragma: no cover - depends on the psycopg release
    AVAILABLE = False

__all__ = [
    "AVAILABLE",
    "Statement",
    "statement",
    "encode",
    "binary_array",
    "binary_array_py",
    "BINARY_ARRAY_IMPL",
    "prepared_call",
    "rows",
    "run",
    "run_async",
]

_TEXT = 0
_BINARY = 1
_FATAL = pq.ExecStatus.FATAL_ERROR
_PIPELINE_OFF = pq.PipelineStatus.OFF
_IDLE = pq.TransactionStatus.IDLE
_IDLE_OR_IN_TRANSACTION = frozenset({_IDLE, pq.TransactionStatus.INTRANS})


class Statement:
    """One statement in libpq's form: ``$n`` placeholders, each parameter's format, and the
    name it is prepared under on every connection that prepares it. ``formats`` is a list,
    never changed: psycopg 3.2's compiled ``PGconn`` takes no other sequence for it."""

    __slots__ = ("formats", "name", "sql")

    def __init__(self, sql: bytes, formats: list[int], name: bytes) -> None:
        self.sql = sql
        self.formats = formats
        self.name = name


#: A statement is prepared on a session at its PREPARE_AFTER-th use there (a shape the
#: batched writer merges once is sent unnamed instead of costing a second round trip and a
#: statement kept by the server), and a session keeps at most MAX_PREPARED of snapstate's
#: (psycopg's own cursors keep at most 100 of theirs); past that, statements go unnamed.
PREPARE_AFTER = 2
MAX_PREPARED = 64
#: Statements whose uses a session counts before it forgets the counts (of unprepared ones).
_MAX_COUNTED = 1024
#: Statement texts converted and kept per process; past that the cache starts over (a list
#: query's text varies with its filters).
_MAX_STATEMENTS = 4096


class _Session:
    """What snapstate has prepared on one connection's server session, and how often it has
    sent each statement not prepared yet."""

    __slots__ = ("prepared", "uses")

    def __init__(self) -> None:
        self.prepared: set[bytes] = set()
        self.uses: dict[bytes, int] = {}

    def should_prepare(self, name: bytes) -> bool:
        if len(self.prepared) >= MAX_PREPARED:
            return False
        n = self.uses.get(name, 0) + 1
        if n >= PREPARE_AFTER:
            self.uses.pop(name, None)
            return True
        if len(self.uses) >= _MAX_COUNTED:
            self.uses.clear()
        self.uses[name] = n
        return False


_statements: dict[str, Statement | None] = {}
_sessions: weakref.WeakKeyDictionary[Any, _Session] = weakref.WeakKeyDictionary()


def statement(sql: str) -> Statement | None:
    """``sql`` (psycopg's ``%s``/``%b`` placeholders) in libpq's form, cached per process; None
    when it has placeholders of another kind (named, ``%t``)."""
    try:
        return _statements[sql]
    except KeyError:
        pass
    out: list[str] = []
    formats: list[int] = []
    parts = sql.split("%")
    out.append(parts[0])
    i = 1
    converted: Statement | None = None
    while i < len(parts):
        part = parts[i]
        if part == "" and i + 1 < len(parts):  # "%%": a literal percent sign
            out.append("%" + parts[i + 1])
            i += 2
            continue
        if part[:1] not in ("s", "b"):
            break
        formats.append(_BINARY if part[0] == "b" else _TEXT)
        out.append(f"${len(formats)}{part[1:]}")
        i += 1
    else:
        text = "".join(out).encode()
        if len(_statements) >= _MAX_STATEMENTS:
            _statements.clear()
        # Named by content: behind a pooler that hands a client's transactions to other
        # server sessions, a name found there can only ever mean this very statement, never
        # another client's or another schema's.
        digest = hashlib.blake2b(text, digest_size=12).hexdigest()
        converted = Statement(text, formats, f"snapstate_{digest}".encode())
    return _statements.setdefault(sql, converted)


def encode(stmt: Statement, params: Sequence[Any]) -> list[bytes | None] | None:
    """The parameters as libpq sends them, or None if one is of a kind this path leaves to the
    cursor (see the module's doc)."""
    if len(params) != len(stmt.formats):
        return None
    out: list[bytes | None] = []
    for value, fmt in zip(params, stmt.formats):
        kind = type(value)
        if value is None:
            out.append(None)
        elif fmt == _BINARY:
            if kind is bytes:
                out.append(value)
            elif kind is list:  # bytes in a list: bytea[], as psycopg's binary dumper sends it
                array = _bytea_array(value)
                if array is None:
                    return None
                out.append(array)
            else:
                return None
        elif kind is str:
            if "\x00" in value:
                return None
            try:
                out.append(value.encode())
            except UnicodeEncodeError:  # a lone surrogate: psycopg says what it is
                return None
        elif kind is int:
            out.append(str(value).encode())
        elif kind is float and math.isfinite(value):
            out.append(repr(value).encode())
        elif kind is list:  # psycopg adapts lists as arrays (and no tuples)
            array = _text_array(value)
            if array is None:
                return None
            out.append(array)
        else:
            return None
    return out


def _bytea_array(values: Sequence[Any]) -> bytes | None:
    """A list of ``bytes`` (None for NULL) as a binary ``bytea[]``, or None when it holds no
    bytes (psycopg then picks the array's type) or anything else."""
    if not any(type(v) is bytes for v in values):
        return None
    return binary_array(values, "bytea")


def _text_array(values: Sequence[Any]) -> bytes | None:
    """A list of ``str`` and None as PostgreSQL's text form of an array (``{"a",NULL}``), or
    None when an element is anything else or a string holds NUL."""
    items: list[str] = []
    for v in values:
        if v is None:
            items.append("NULL")
        elif type(v) is str and "\x00" not in v:
            items.append('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            return None
    try:
        return ("{" + ",".join(items) + "}").encode()
    except UnicodeEncodeError:  # a lone surrogate: psycopg says what it is
        return None


#: Element types :func:`binary_array` writes: their type OIDs, and what a value must be.
_ARRAY_OIDS = {"text": 25, "bytea": 17, "int2": 21, "int4": 23, "float8": 701}
_LENGTH = struct.Struct(">i")
_ARRAY_HEADER = struct.Struct(">iiIii")
_NULL = _LENGTH.pack(-1)
_INT2 = struct.Struct(">ih")  # an element's length (2), then the value
_INT4 = struct.Struct(">ii")
_FLOAT8 = struct.Struct(">id")


def binary_array_py(values: Sequence[Any], element: str) -> bytes | None:
    """``values`` as a one-dimensional PostgreSQL array of ``element`` (one of
    :data:`_ARRAY_OIDS`) in binary form, as psycopg's binary dumper sends a list; None when a
    value is one this path leaves to psycopg, which says what is wrong with it: not of the
    element's Python type (``str``, ``bytes``, ``int`` or ``float``; None is NULL), a string
    holding NUL or a lone surrogate, an integer out of range.

    :func:`binary_array` is this, or its compiled twin (``snapstate.backends._pg_native``,
    the same bytes and the same refusals, in a fraction of the time: docs/postgres.md) when that
    is built."""
    parts: list[bytes] = []
    add = parts.append
    nulls = 0
    try:
        if element == "text":
            for v in values:
                if v is None:
                    add(_NULL)
                    nulls = 1
                elif type(v) is str and "\x00" not in v:
                    data = v.encode()
                    add(_LENGTH.pack(len(data)))
                    add(data)
                else:
                    return None
        elif element == "bytea":
            for v in values:
                if v is None:
                    add(_NULL)
                    nulls = 1
                elif type(v) is bytes:
                    add(_LENGTH.pack(len(v)))
                    add(v)
                else:
                    return None
        else:
            kind, packer, size = {
                "int2": (int, _INT2, 2),
                "int4": (int, _INT4, 4),
                "float8": (float, _FLOAT8, 8),
            }[element]
            for v in values:
                if v is None:
                    add(_NULL)
                    nulls = 1
                elif type(v) is kind:
                    add(packer.pack(size, v))
                else:
                    return None
    except (UnicodeEncodeError, struct.error):
        return None
    header = _ARRAY_HEADER.pack(1, nulls, _ARRAY_OIDS[element], len(values), 1)
    return header + b"".join(parts)


def _pick_binary_array() -> tuple[Callable[[Sequence[Any], str], bytes | None], str]:
    """The array builder and its implementation's name, chosen once at import as the codec
    chooses (``SNAPSTATE_IMPL=python`` takes the Python one, ``native`` requires the compiled
    one, unset takes the compiled one when it is built)."""
    wanted = requested_impl()
    if wanted == "python":
        return binary_array_py, "python"
    try:
        from ._pg_native import binary_array as native
    except ImportError as exc:
        if wanted == "native":
            raise ImportError(
                "SNAPSTATE_IMPL=native, but the compiled array builder "
                f"snapstate.backends._pg_native cannot be imported ({exc}). Build it with "
                "`python setup.py build_ext --inplace` (or install a wheel), or unset "
                "SNAPSTATE_IMPL."
            ) from exc
        return binary_array_py, "python"
    return native, "native"


#: Builds the arrays of a large batch (see :func:`binary_array_py`); ``BINARY_ARRAY_IMPL``
#: says which implementation it is.
binary_array, BINARY_ARRAY_IMPL = _pick_binary_array()


def prepared_call(sql: str, params: Any) -> tuple[Statement, list[bytes | None]] | None:
    """What :func:`run` sends for ``sql`` with ``params``, or None to use a cursor."""
    if not AVAILABLE or not isinstance(params, (list, tuple)):
        return None
    stmt = statement(sql)
    if stmt is None:
        return None
    encoded = encode(stmt, params)
    return None if encoded is None else (stmt, encoded)


def _usable(conn: Any) -> bool:
    pgconn = conn.pgconn
    return (
        not conn.closed
        and pgconn.pipeline_status == _PIPELINE_OFF
        and pgconn.transaction_status in _IDLE_OR_IN_TRANSACTION
        # This path sends text as UTF-8: under another client encoding the server would read
        # it as that encoding and store other characters. The cursor encodes it as it should.
        and pgconn.parameter_status(b"client_encoding") == b"UTF8"
    )


def _check(results: list[Any], conn: Any) -> None:
    if results and results[-1].status == _FATAL:
        raise _error_from_result(results[-1], encoding=conn.info.encoding)


def _send(conn: Any, stmt: Statement, params: list[bytes | None], prepare: bool) -> Any:
    """The exchange with the server, as a psycopg generator the connection's ``wait`` drives;
    it returns the statement's result."""
    pgconn = conn.pgconn
    session = _sessions.get(conn)
    if session is None:
        session = _sessions.setdefault(conn, _Session())
    # Never inside a transaction: there a missing statement would abort it.
    named = prepare and conn.prepare_threshold is not None and pgconn.transaction_status == _IDLE
    lost = False  # the session lost the statement: prepare it again at once
    for attempt in (0, 1, 2):
        if (
            named
            and attempt < 2
            and stmt.name not in session.prepared
            and (lost or session.should_prepare(stmt.name))
        ):
            pgconn.send_prepare(stmt.name, stmt.sql)
            try:
                _check((yield from _execute(pgconn)), conn)
            except pg_errors.DuplicatePreparedStatement:
                # In the session but not in our record of it (a prepare whose reply never
                # reached us, another client's behind a pooler): a name only ever stands for
                # this text, so it is this statement.
                pass
            session.prepared.add(stmt.name)
        if not named or attempt == 2 or stmt.name not in session.prepared:
            pgconn.send_query_params(stmt.sql, params, None, stmt.formats, _BINARY)
            results = yield from _execute(pgconn)
            _check(results, conn)
            return results[-1]
        pgconn.send_query_prepared(stmt.name, params, stmt.formats, _BINARY)
        try:
            results = yield from _execute(pgconn)
            _check(results, conn)
        except pg_errors.InvalidSqlStatementName:
            # DISCARD ALL, DEALLOCATE, or a pooler that ran this on another server session:
            # prepare it again, and past a second miss send it unnamed.
            session.prepared.discard(stmt.name)
            lost = True
            continue
        return results[-1]
    raise AssertionError("unreachable")  # pragma: no cover


def rows(conn: Any, result: Any) -> list[tuple[Any, ...]]:
    """A statement's rows as tuples, loaded as the connection's cursors load them."""
    tx = _Transformer.from_context(conn)
    tx.set_pgresult(result)
    return tx.load_rows(0, result.ntuples, tuple)  # type: ignore[no-any-return]


def run(
    conn: psycopg.Connection[Any], stmt: Statement, params: list[bytes | None], *, prepare: bool
) -> Any:
    """Run ``stmt`` on ``conn``; its result (:func:`rows` reads it), or None (nothing sent)
    when the connection is in a state this path leaves to the cursor. Raises psycopg's
    errors, as a cursor would."""
    with conn.lock:
        if not _usable(conn):
            return None
        return conn.wait(_send(conn, stmt, params, prepare))


async def run_async(
    conn: psycopg.AsyncConnection[Any],
    stmt: Statement,
    params: list[bytes | None],
    *,
    prepare: bool,
) -> Any:
    """:func:`run` on an ``AsyncConnection``, waiting on the event loop."""
    async with conn.lock:
        if not _usable(conn):
            return None
        return await conn.wait(_send(conn, stmt, params, prepare))
