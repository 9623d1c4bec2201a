"""The ``snapstate`` command: see and manage stored state.

::

    snapstate stats URL [--schema S]
    snapstate inspect URL THREAD [--namespace NS] [--limit N] [--diff OLD NEW] [--schema S]
    snapstate prune URL [--keep-last N] [--idle DURATION] [--thread T ...] [--dry-run]
                        [--schema S]
    snapstate migrate URL [--dry-run] [--schema S]
    snapstate upgrade URL --hooks MODULE:ATTRIBUTE [--thread T ...] [--chunk N] [--schema S]
    snapstate import-langgraph SOURCE TARGET [--thread T ...] [--source-schema S] [--schema S]
                               [--no-verify]
    snapstate copy SOURCE TARGET [the same options]

URL is ``memory://``, ``sqlite:///path.db`` (or a plain path) or ``postgresql://...``;
``--schema`` names the PostgreSQL schema the store is in (default ``public``). Every
command is a thin layer over importable functions: :meth:`snapstate.Checkpointer.stats`,
:meth:`~snapstate.Checkpointer.list`, :func:`snapstate.history.diff`,
:meth:`~snapstate.Checkpointer.retain` and :func:`snapstate.langgraph.import_history`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import sqlite3
import sys
import urllib.parse
from collections.abc import Sequence
from typing import Any, TextIO

from ._engine import Checkpointer, Progress
from .errors import ConfigurationError, SnapstateError
from .history import diff
from .upgrades import StateUpgrades

__all__ = ["main", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``15m``, ``12h``, ``7d`` or ``2w``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a number and a unit s, m, h, d or w (e.g. 7d)"
        )
    return float(m.group(1)) * _UNITS[m.group(2)]


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _stats(cp: Checkpointer, out: TextIO) -> None:
    st = cp.stats()
    out.write(f"threads      {st.threads}\n")
    out.write(f"checkpoints  {st.checkpoints:>10}  {_size(st.checkpoint_bytes):>12}\n")
    out.write(f"blobs        {st.blobs:>10}  {_size(st.blob_bytes):>12}\n")
    out.write(f"writes       {st.writes:>10}  {_size(st.write_bytes):>12}\n")
    if st.raw_blob_bytes and st.blob_bytes:
        out.write(
            f"compression  {st.raw_blob_bytes / st.blob_bytes:10.2f}x  "
            f"({_size(st.raw_blob_bytes)} of values in {_size(st.blob_bytes)} of blobs)\n"
        )
    total = st.checkpoint_bytes + st.blob_bytes + st.write_bytes
    if st.payloads:
        out.write(
            f"large values {st.payloads:>10}  {_size(st.payload_bytes or 0):>12}  "
            f"(each stored once; the rows above count {_size(st.shared_bytes or 0)} for them)\n"
        )
        total += (st.payload_bytes or 0) - (st.shared_bytes or 0)
    if st.file_bytes is not None:
        out.write(f"file         {_size(st.file_bytes):>23}  ({_size(st.free_bytes)} free)\n")
    if st.checkpoints:
        out.write(f"per checkpoint {_size(total // st.checkpoints):>21}\n")
    if st.channels:
        out.write("\nchannel                          blobs         bytes\n")
        for name, (n, size) in sorted(st.channels.items(), key=lambda kv: -kv[1][1]):
            out.write(f"{name[:30]:<30} {n:>8} {_size(size):>13}\n")


def _inspect(
    cp: Checkpointer,
    thread: str,
    namespace: str | None,
    limit: int | None,
    pair: Sequence[str] | None,
    out: TextIO,
) -> int:
    if pair:
        old = cp.get(thread, namespace or "", pair[0])
        new = cp.get(thread, namespace or "", pair[1])
        for cid, snap in ((pair[0], old), (pair[1], new)):
            if snap is None:
                out.write(f"no checkpoint {cid!r} in thread {thread!r}\n")
                return 1
        assert old is not None and new is not None
        changes = diff(old, new)
        if not changes:
            out.write("no channel differs\n")
        for c in changes:
            if c.kind == "appended":
                out.write(f"{c.channel}: appended {c.appended} item(s) ({c.old} -> {c.new})\n")
            elif c.kind == "changed":
                out.write(f"{c.channel}: changed {c.old} -> {c.new}\n")
            else:
                out.write(f"{c.channel}: {c.kind} {c.old or c.new}\n")
        return 0
    found = False
    out.write(f"{'checkpoint':<38} {'namespace':<16} {'created (UTC)':<20} changes / metadata\n")
    previous = None
    snaps = list(cp.list(thread, namespace=namespace, limit=limit))
    for snap in reversed(snaps):  # oldest first reads like a story
        found = True
        when = dt.datetime.fromtimestamp(snap.created_at, dt.timezone.utc)
        if previous is not None and previous.namespace == snap.namespace:
            changed = ", ".join(
                f"{c.channel}+{c.appended}" if c.kind == "appended" else f"{c.channel}*"
                for c in diff(previous, snap)
            )
        else:
            changed = ", ".join(sorted(snap.checkpoint.channel_values))
        meta = " ".join(f"{k}={v}" for k, v in snap.metadata.items() if k in ("source", "step"))
        writes = f" writes={len(snap.pending_writes)}" if snap.pending_writes else ""
        out.write(
            f"{snap.checkpoint.id:<38} {snap.namespace[:16]:<16} "
            f"{when:%Y-%m-%d %H:%M:%S}  [{changed}] {meta}{writes}\n"
        )
        previous = snap
    if not found:
        out.write(f"no checkpoints in thread {thread!r}\n")
        return 1
    return 0


def _prune(
    cp: Checkpointer,
    keep_last: int | None,
    idle: float | None,
    threads: list[str] | None,
    dry_run: bool,
    out: TextIO,
    err: TextIO,
) -> None:
    def progress(p: Progress) -> None:
        err.write(f"\r{p.phase}: {p.done}/{p.total}")
        if p.done == p.total:
            err.write("\n")
        err.flush()

    report = cp.retain(
        keep_last=keep_last, idle_for=idle, thread_ids=threads, dry_run=dry_run, progress=progress
    )
    verb = "would delete" if dry_run else "deleted"
    out.write(
        f"{verb}: {report.threads_deleted} idle thread(s), "
        f"{report.checkpoints_deleted} checkpoint(s), {report.blobs_deleted} blob(s)\n"
    )
    if not dry_run:
        out.write(f"space given back: {_size(report.bytes_reclaimed)}\n")


def _migrate(cp: Checkpointer, dry_run: bool, out: TextIO) -> None:
    status = cp.backend.migration_status()
    pending = [m for m in status if m.applied_at is None]
    for m in status:
        if m.applied_at is not None:
            when = dt.datetime.fromtimestamp(m.applied_at, dt.timezone.utc)
            out.write(f"applied  {m.id:>4}  {m.name}  ({when:%Y-%m-%d %H:%M:%S} UTC)\n")
    if not pending:
        out.write("schema is up to date\n")
        return
    verb = "pending " if dry_run else "applying"
    for m in pending:
        out.write(f"{verb} {m.id:>4}  {m.name}\n")
    if not dry_run:
        cp.setup()
        out.write(f"applied {len(pending)} migration(s)\n")


def _load_hooks(spec: str) -> StateUpgrades:
    """The application's StateUpgrades named on the command line as ``module:attribute``.

    The module is imported because the person running the command named it; stored bytes
    never choose what is imported.
    """
    import importlib

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(
            f"--hooks must be MODULE:ATTRIBUTE, got {spec!r}", hint="e.g. myapp.state:upgrades"
        )
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot load upgrade hooks {spec!r}: {exc}") from None
    if not isinstance(obj, StateUpgrades):
        raise ConfigurationError(
            f"{spec!r} is a {type(obj).__name__}, not a snapstate.upgrades.StateUpgrades"
        )
    return obj


def _store(url: str, schema: str | None) -> Any:
    """What a Checkpointer opens for URL: the URL itself, or with ``--schema`` a PostgreSQL
    backend in that schema."""
    if schema is None:
        return url
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigurationError(
            f"--schema {schema!r} names a PostgreSQL schema, and {url!r} is not a PostgreSQL URL"
        )
    from .backends import open_backend

    return open_backend(url, schema=schema)


def _upgrade(
    url: Any, hooks: str, threads: list[str] | None, chunk: int, out: TextIO, err: TextIO
) -> None:
    upgrades = _load_hooks(hooks)

    def progress(p: Progress) -> None:
        err.write(f"\r{p.phase}: {p.done}/{p.total} threads")
        if p.done == p.total:
            err.write("\n")
        err.flush()

    with Checkpointer(url, upgrades=upgrades) as cp:
        n = cp.upgrade_stored(thread_ids=threads, chunk=chunk, progress=progress)
    out.write(f"rewrote {n} checkpoint(s) to state version {upgrades.version}\n")


#: Tables a SQLite file holds when it is a snapstate store (LangGraph's has neither).
_SNAPSTATE_TABLES = frozenset({"blobs", "schema_migrations"})


def _read_only(path: str) -> sqlite3.Connection:
    """A read-only connection to the SQLite file a SOURCE names (which must exist)."""
    if not os.path.exists(path):
        raise ConfigurationError(f"no database at {path!r}")
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    return sqlite3.connect(uri, uri=True, check_same_thread=False)


def _names(conn: sqlite3.Connection, path: str, sql: str, column: int = 0) -> set[str]:
    """One column of a query's rows: the tables of a SQLite file, or a table's columns."""
    try:
        return {r[column] for r in conn.execute(sql)}
    except sqlite3.DatabaseError as exc:
        raise ConfigurationError(f"cannot read {path!r} as SQLite: {exc}") from None


def _langgraph_source(url: str, schema: str | None, stack: contextlib.ExitStack) -> Any:
    """LangGraph's own saver on the store at ``url``, opened for reading only."""
    path = _sqlite_path(url)
    if path is not None:
        try:
            from langgraph.checkpoint.sqlite import SqliteSaver
        except ImportError:
            raise ConfigurationError(
                "reading LangGraph's SQLite files needs langgraph-checkpoint-sqlite",
                hint="pip install langgraph-checkpoint-sqlite",
            ) from None
        conn = stack.enter_context(contextlib.closing(_read_only(path)))
        tables = _names(conn, path, "SELECT name FROM sqlite_master")
        columns = _names(conn, path, "PRAGMA table_info(checkpoints)", column=1)
        if _SNAPSTATE_TABLES <= tables:
            raise ConfigurationError(
                f"{path!r} is a snapstate store, not LangGraph's",
                hint="copy threads between snapstate stores with snapstate copy",
            )
        if "writes" not in tables or not {"type", "checkpoint", "metadata"} <= columns:
            raise ConfigurationError(
                f"{path!r} holds no LangGraph checkpoint tables (checkpoints, writes)",
                hint="SOURCE is a store LangGraph's SqliteSaver or PostgresSaver wrote",
            )
        saver = SqliteSaver(conn)
        saver.is_setup = True  # its tables are there; setting up would write to the source
        return saver
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigurationError(
            f"cannot import from {url!r}: use a SQLite file or a postgresql:// URL"
        )
    try:
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
    except ImportError:
        raise ConfigurationError(
            "reading LangGraph's PostgreSQL tables needs langgraph-checkpoint-postgres",
            hint="pip install langgraph-checkpoint-postgres",
        ) from None
    options: dict[str, Any] = {"options": f"-c search_path={schema}"} if schema else {}
    try:
        pg = stack.enter_context(
            psycopg.connect(url, autocommit=True, row_factory=dict_row, **options)
        )
        found = pg.execute(
            "SELECT to_regclass('checkpoint_migrations') IS NOT NULL"
            " AND to_regclass('checkpoint_writes') IS NOT NULL AS found"
        ).fetchone()
    except psycopg.Error as exc:
        raise ConfigurationError(f"cannot read LangGraph's tables at {url!r}: {exc}") from None
    if not found or not found["found"]:
        where = f"schema {schema!r}" if schema else "the connection's search_path"
        raise ConfigurationError(
            f"{where} holds no LangGraph checkpoint tables (checkpoints, checkpoint_writes)",
            hint="name the schema LangGraph's PostgresSaver used with --source-schema",
        )
    return PostgresSaver(pg)


def _snapstate_source(url: str, schema: str | None, stack: contextlib.ExitStack) -> Any:
    """snapstate's saver on the store at ``url``, which must already hold snapstate's tables."""
    path = _sqlite_path(url)
    if path is not None:
        with contextlib.closing(_read_only(path)) as probe:
            tables = _names(probe, path, "SELECT name FROM sqlite_master")
        if not _SNAPSTATE_TABLES <= tables:
            raise ConfigurationError(
                f"{path!r} is not a snapstate store",
                hint="a store LangGraph's savers wrote is copied with import-langgraph",
            )
        from .langgraph import SqliteSaver

        saver: Any = SqliteSaver(path)
    elif url.startswith(("postgresql://", "postgres://")):
        import psycopg

        where = schema or "public"
        try:
            with psycopg.connect(url, autocommit=True) as probe:
                row = probe.execute(
                    "SELECT to_regclass(format('%%I.schema_migrations', %s::text)) IS NOT NULL"
                    " AND to_regclass(format('%%I.blobs', %s::text)) IS NOT NULL",
                    [where, where],
                ).fetchone()
        except psycopg.Error as exc:
            raise ConfigurationError(f"cannot read {url!r}: {exc}") from None
        if not row or not row[0]:
            raise ConfigurationError(
                f"schema {where!r} holds no snapstate store",
                hint="name the schema the store is in with --source-schema; a store LangGraph's "
                "savers wrote is copied with import-langgraph",
            )
        from .langgraph import PostgresSaver

        saver = PostgresSaver(url, schema=where)
    else:
        raise ConfigurationError(
            f"cannot copy from {url!r}: use a SQLite file or a postgresql:// URL"
        )
    stack.callback(saver.close)
    return saver


def _same_store(args: argparse.Namespace) -> bool:
    source, target = _sqlite_path(args.source), _sqlite_path(args.target)
    if source is not None and target is not None:
        return os.path.realpath(source) == os.path.realpath(target)
    return (args.source, args.source_schema or "public") == (args.target, args.schema or "public")


def _copy_threads(args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    from .langgraph import import_history

    def progress(p: Progress) -> None:
        err.write(f"\r{p.phase}: {p.done}/{p.total} threads")
        if p.done == p.total:
            err.write("\n")
        err.flush()

    with contextlib.ExitStack() as stack:
        if args.command == "copy":
            if _same_store(args):
                raise ConfigurationError("SOURCE and TARGET are the same store")
            source = _snapstate_source(args.source, args.source_schema, stack)
        else:
            source = _langgraph_source(args.source, args.source_schema, stack)
        target_path = _sqlite_path(args.target)
        if target_path is not None:
            from .langgraph import SqliteSaver

            target: Any = SqliteSaver(target_path)
        elif args.target.startswith(("postgresql://", "postgres://")):
            from .langgraph import PostgresSaver

            target = PostgresSaver(args.target, **({"schema": args.schema} if args.schema else {}))
        else:
            raise ConfigurationError(
                f"cannot import into {args.target!r}: use a SQLite file or a postgresql:// URL"
            )
        stack.callback(target.close)
        target.setup()
        report = import_history(
            source, target, thread_ids=args.thread, verify=args.verify, progress=progress
        )
    verb = "copied" if args.command == "copy" else "imported"
    out.write(
        f"{verb} {report.threads} thread(s): {report.checkpoints} checkpoint(s) written, "
        f"{report.skipped} already there, {report.writes} pending write(s)"
    )
    if report.migrated:
        out.write(f", {report.migrated} moved to LangGraph's checkpoint format 4")
    out.write(f"; {report.verified} verified\n" if args.verify else "; not verified\n")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="snapstate", description="See and manage stored state.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("stats", help="threads, checkpoints and bytes by table and channel")
    s.add_argument("url")
    i = sub.add_parser("inspect", help="a thread's history, or what changed between two")
    i.add_argument("url")
    i.add_argument("thread")
    i.add_argument("--namespace", default=None, help="only this namespace ('' = root)")
    i.add_argument("--limit", type=int, default=None, help="only the newest N checkpoints")
    i.add_argument("--diff", nargs=2, metavar=("OLD", "NEW"), help="compare two checkpoints")
    r = sub.add_parser("prune", help="apply retention policies")
    r.add_argument("url")
    r.add_argument("--keep-last", type=int, default=None, help="keep N per thread+namespace")
    r.add_argument(
        "--idle", type=parse_duration, default=None, help="delete threads idle this long (7d)"
    )
    r.add_argument("--thread", action="append", default=None, help="only this thread (repeat)")
    r.add_argument("--dry-run", action="store_true", help="report, delete nothing")
    m = sub.add_parser("migrate", help="apply pending schema migrations")
    m.add_argument("url")
    m.add_argument("--dry-run", action="store_true", help="list what would be applied")
    u = sub.add_parser("upgrade", help="rewrite old checkpoints to the current state version")
    u.add_argument("url")
    u.add_argument("--hooks", required=True, help="your StateUpgrades, as MODULE:ATTRIBUTE")
    u.add_argument("--thread", action="append", default=None, help="only this thread (repeat)")
    u.add_argument("--chunk", type=int, default=100, help="checkpoints per transaction")
    for command in (s, i, r, m, u):
        command.add_argument(
            "--schema", default=None, help="the PostgreSQL schema of the store (public)"
        )
    for name, text, source in (
        (
            "import-langgraph",
            "copy the threads LangGraph's SqliteSaver or PostgresSaver stored into snapstate",
            "LangGraph's",
        ),
        ("copy", "copy threads from one snapstate store to another", "a snapstate store's"),
    ):
        g = sub.add_parser(name, help=text)
        g.add_argument("source", help=f"{source} SQLite file, or a postgresql:// URL")
        g.add_argument("target", help="snapstate's SQLite file, or a postgresql:// URL")
        g.add_argument("--thread", action="append", default=None, help="only this thread (repeat)")
        g.add_argument("--source-schema", default=None, help=f"the schema of {source} tables")
        g.add_argument("--schema", default=None, help="the schema to store in (PostgreSQL)")
        g.add_argument(
            "--no-verify",
            dest="verify",
            action="store_false",
            help="do not read each checkpoint back and compare it with the source",
        )
    return p


def _sqlite_path(url: str) -> str | None:
    """The file a SQLite URL names (commands never create a store by mistake)."""
    if url.startswith(("postgresql://", "postgres://", "memory:")):
        return None
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://") :]
        return rest[1:] if rest.startswith("/") else rest
    return url


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit status."""
    out = out or sys.stdout
    err = sys.stderr
    args = _parser().parse_args(argv)
    if args.command in ("import-langgraph", "copy"):
        try:
            _copy_threads(args, out, err)
        except SnapstateError as exc:
            err.write(f"snapstate: error: {exc}\n")
            return 2
        return 0
    path = _sqlite_path(args.url)
    if path is not None and not os.path.exists(path) and args.command == "migrate" and args.dry_run:
        from .backends.sqlite import MIGRATIONS

        out.write(f"no database at {path!r} yet; every migration is pending:\n")
        for mid, name, _ in MIGRATIONS:
            out.write(f"pending  {mid:>4}  {name}\n")
        return 0
    if path is not None and not os.path.exists(path) and args.command != "migrate":
        err.write(f"snapstate: error: no database at {path!r}\n")
        return 2
    try:
        store = _store(args.url, args.schema)
        if args.command == "upgrade":
            _upgrade(store, args.hooks, args.thread, args.chunk, out, err)
            return 0
        # `migrate` applies (or, with --dry-run, lists) migrations itself; the other commands
        # bring the schema up to date first, as any checkpointer does on first use.
        with Checkpointer(store, auto_setup=args.command != "migrate") as cp:
            if args.command == "migrate":
                _migrate(cp, args.dry_run, out)
            elif args.command == "stats":
                _stats(cp, out)
            elif args.command == "inspect":
                return _inspect(cp, args.thread, args.namespace, args.limit, args.diff, out)
            elif args.command == "prune":
                _prune(cp, args.keep_last, args.idle, args.thread, args.dry_run, out, err)
    except SnapstateError as exc:
        err.write(f"snapstate: error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
