"""A TCP relay in front of the test server that can stop answering, as a hung server does.

While frozen, the relay neither reads nor forwards: the kernel still accepts connections and
buffers what clients send (as it does for a server process that is stopped, or a host whose
database hangs), but no reply ever comes. Thawed, it forwards again.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Iterator
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class FreezableRelay:
    """Relays every connection to ``host:port``; :meth:`freeze` and :meth:`thaw` it."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._running = threading.Event()
        self._running.set()
        self._stop = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, name="freezable-relay", daemon=True)
        self._thread.start()

    def freeze(self) -> None:
        self._running.clear()

    def thaw(self) -> None:
        self._running.set()

    def close(self) -> None:
        self._stop = True
        self._running.set()
        self._thread.join(5)
        with self._lock:
            for s in self._sockets:
                s.close()
        self._listener.close()

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, None)
        while not self._stop:
            if not self._running.is_set():
                self._running.wait(0.05)
                continue
            for key, _ in sel.select(0.05):
                if not self._running.is_set():
                    break  # frozen while these were ready: leave them unread
                if key.data is None:
                    self._accept(sel)
                else:
                    self._pump(sel, key.fileobj, key.data)  # type: ignore[arg-type]
        sel.close()

    def _accept(self, sel: selectors.BaseSelector) -> None:
        with contextlib.suppress(BlockingIOError):
            client, _ = self._listener.accept()
            server = socket.create_connection(self._upstream)
            for s in (client, server):
                s.setblocking(False)
            with self._lock:
                self._sockets += [client, server]
            sel.register(client, selectors.EVENT_READ, server)
            sel.register(server, selectors.EVENT_READ, client)

    def _pump(self, sel: selectors.BaseSelector, source: socket.socket, sink: Any) -> None:
        try:
            data = source.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            for s in (source, sink):
                with contextlib.suppress(KeyError, ValueError):
                    sel.unregister(s)
                s.close()
            return
        sink.setblocking(True)
        try:
            sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.setblocking(False)


@contextlib.contextmanager
def freezable(dsn: str) -> Iterator[tuple[FreezableRelay, str]]:
    """A relay in front of ``dsn``'s server, and a conninfo that goes through it."""
    info = conninfo_to_dict(dsn)
    relay = FreezableRelay(str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432))
    info.update(host="127.0.0.1", port=str(relay.port))
    info.pop("hostaddr", None)
    try:
        yield relay, make_conninfo(**info)
    finally:
        relay.thaw()
        relay.close()
