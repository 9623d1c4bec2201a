"""A call waiting on a PostgreSQL server that stopped answering ends with an error, not a hang.

A server that is down refuses connections, and a server that restarts closes them: both end a
call at once. A server that hangs (its host frozen, its disk stuck, its processes stopped, the
network between dropping packets) does neither. The kernel of either side still accepts what a
client sends, and a call would wait for the reply for ever. TCP keepalives do not help on a
host that is up, and a ``statement_timeout`` is enforced by the very server that no longer
runs.

So every call registers its connection here while it waits on the server. One thread per
process looks at them. When a call has waited ``server_timeout`` seconds, the thread opens a
new connection to the same server, with the same parameters, and runs ``SELECT 1`` on it,
allowing ``connect_timeout`` for each (behind PgBouncer, logging in alone proves nothing: the
pooler may let a client in without asking the server):

* if the server answers (even with an error of its own, such as "too many clients"), it is
  working and the call is only long (a large delete, a migration): it goes on waiting, and is
  looked at again after another ``server_timeout``;
* if it gets no answer, the call's connection is shut down under it. The call then fails at
  once with :class:`~snapstate.StoreUnavailableError` saying so, and its connection is
  discarded. It is not retried: a new connection would meet the same silence.

What the call had sent may still be committed later, if the server wakes up: a call that
raised was never acknowledged, and every snapstate write may be stored twice (see ``retry``).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
from time import monotonic
from typing import Any

import psycopg

from .. import _forksafe
from ._base import first_line

__all__ = ["Watch", "Unwatched", "watch", "probe"]

#: How often the thread looks at the calls at most (and when none is waiting).
_IDLE_TICK = 1.0


class Watch:
    """One call's wait on one connection: ``with Watch(conn, ...) as w:`` around the call."""

    __slots__ = ("conn", "connect_timeout", "deadline", "reason", "timeout")

    def __init__(self, conn: Any, timeout: float, connect_timeout: float) -> None:
        self.conn = conn
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.deadline = 0.0
        #: Set when the server did not answer: why the new connection failed.
        self.reason: str | None = None

    def __enter__(self) -> Watch:
        self.deadline = monotonic() + self.timeout
        with _lock:
            _busy[id(self)] = self
            if _thread is None:
                _start()
        return self

    def __exit__(self, *exc: object) -> None:
        with _lock:
            _busy.pop(id(self), None)


class Unwatched:
    """What :func:`watch` gives when calls may wait as long as they take."""

    reason = None

    def __enter__(self) -> Unwatched:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


_UNWATCHED = Unwatched()


def watch(conn: Any, timeout: float | None, connect_timeout: float) -> Watch | Unwatched:
    """A context that watches ``conn`` while its body waits on the server (none when
    ``timeout`` is None)."""
    return _UNWATCHED if timeout is None else Watch(conn, timeout, connect_timeout)


_lock = threading.Lock()
_busy: dict[int, Watch] = {}
_thread: threading.Thread | None = None
_tick = threading.Event()


@_forksafe.on_fork
def _start_over() -> None:
    """A forked child has none of the parent's calls, nor its thread."""
    global _lock, _thread, _tick
    _lock = threading.Lock()
    _busy.clear()
    _thread = None
    _tick = threading.Event()


def _start() -> None:
    global _thread
    _thread = threading.Thread(target=_run, name="snapstate-pg-watchdog", daemon=True)
    _thread.start()


def _run() -> None:
    while True:
        try:
            _look()
        except Exception:  # pragma: no cover - never let the one watching thread die
            _tick.wait(_IDLE_TICK)


def _look() -> None:
    """One look at the waiting calls: check the overdue ones, or sleep until one may be."""
    now = monotonic()
    with _lock:
        waiting = list(_busy.values())
    due = [w for w in waiting if w.deadline <= now]
    if due:
        _check(due)
        return
    wait = _IDLE_TICK
    for w in waiting:
        wait = min(wait, max(w.deadline - now, 0.0), w.timeout / 4)
    _tick.wait(max(wait, 0.005))


def _check(due: list[Watch]) -> None:
    """Probe each server once; end the calls of those that do not answer."""
    verdicts: dict[tuple[tuple[str, str], ...], str | None] = {}
    for w in due:
        params = _params(w.conn)
        key = tuple(sorted(params.items()))
        if key not in verdicts:
            verdicts[key] = probe(params, w.connect_timeout)
        reason = verdicts[key]
        with _lock:
            if _busy.get(id(w)) is not w:
                continue  # the call finished meanwhile: its connection may serve another
            if reason is None:
                w.deadline = monotonic() + w.timeout
                continue
            w.reason = reason
            _busy.pop(id(w), None)
            _shut_down(w.conn)


def _params(conn: Any) -> dict[str, str]:
    """The connection's own parameters (host, port, user, password, ...), as libpq has them."""
    out: dict[str, str] = {}
    with contextlib.suppress(Exception):
        for opt in conn.pgconn.info:
            if opt.val:
                out[opt.keyword.decode()] = opt.val.decode()
    return out


def probe(params: dict[str, str], connect_timeout: float) -> str | None:
    """Why a new connection with ``params`` got no answer; None if the server answered.

    The new connection runs a query too: a pooler such as PgBouncer may let a client log in
    without asking the server, and it is the server whose answer counts.
    """
    kwargs = dict(params)
    kwargs["connect_timeout"] = str(max(1, round(connect_timeout)))
    try:
        conn = psycopg.connect(**kwargs)  # type: ignore[arg-type]
    except psycopg.Error as exc:
        # The server's own refusals ("FATAL: too many clients already", a password rejected)
        # are answers: it is working.
        if "FATAL:" in str(exc) or "ERROR:" in str(exc):
            return None
        return first_line(exc)
    except Exception as exc:  # pragma: no cover - a parameter libpq rejects, say
        return f"{type(exc).__name__}: {exc}"
    try:
        return _ask(conn.pgconn, connect_timeout)
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def _ask(pgconn: Any, timeout: float) -> str | None:
    """None if the server replies to a query within ``timeout`` seconds (an error is a reply)."""
    # A selector, not select(): a busy process may have descriptors beyond select()'s limit.
    with selectors.DefaultSelector() as sel:
        try:
            pgconn.nonblocking = 1
            pgconn.send_query(b"SELECT 1")
            deadline = monotonic() + timeout
            sel.register(pgconn.socket, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while True:
                remaining = deadline - monotonic()
                flushed = pgconn.flush() == 0
                if flushed:
                    pgconn.consume_input()
                    if not pgconn.is_busy():
                        return None
                if remaining <= 0:
                    return f"its query got no reply within {timeout:g} s"
                events = selectors.EVENT_READ | (0 if flushed else selectors.EVENT_WRITE)
                sel.modify(pgconn.socket, events)
                sel.select(remaining)
        except psycopg.Error as exc:
            return first_line(exc)


def _shut_down(conn: Any) -> None:
    """End the connection's socket under whoever waits on it: the wait returns at once, with
    the connection lost. Only the socket is touched; the connection object belongs to its
    caller, which sees it broken and discards it."""
    with contextlib.suppress(Exception):
        fd = conn.pgconn.socket
        s = socket.socket(fileno=os.dup(fd))
        try:
            s.shutdown(socket.SHUT_RDWR)
        finally:
            s.close()
