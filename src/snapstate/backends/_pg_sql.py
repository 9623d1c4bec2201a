"""What the PostgreSQL backends say to the server, shared by the sync and the asyncio backend.

Every operation is a generator: it yields :class:`Stmt` objects and receives each statement's
rows back, then returns its result. The two backends differ only in how they drive a generator
(``cursor.execute`` or ``await cursor.execute``), so the SQL text, the parameters and the row
conversion exist once and cannot drift apart.

Statements bind every value as a parameter. Rows travel as column arrays (``unnest``), so a
statement's text does not depend on how many rows it carries: the server prepares it once and a
batch of any size is one statement, one round trip and one implicit transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import re
from collections.abc import Callable, Collection, Generator, Hashable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import msgspec
import psycopg

from ..errors import (
    ConfigurationError,
    EncodeError,
    MigrationError,
    SchemaVersionError,
    ThreadDeletedError,
)
from . import _pg_direct as direct
from ._base import (
    PAYLOAD_MIN_BYTES,
    BlobRef,
    BlobRow,
    CheckpointRow,
    ListQuery,
    MigrationStatus,
    TableStats,
    ThreadInfo,
    WriteBatch,
    WriteRow,
    batch_threads,
    check_payloads,
    check_tombstones,
    checkpoint_values,
    delta_bases,
    key_conditions,
    missing_base,
    payload_value_sql,
    shared_payload_bytes_sql,
    stored_row,
)

__all__ = ["MIGRATIONS", "Stmt", "Op", "Statements"]

T = TypeVar("T")
R = TypeVar("R")


class Stmt(NamedTuple):
    """One statement of an operation; ``fetch`` says whether its rows are sent back. A
    statement with positional parameters goes straight through libpq when it can
    (:mod:`._pg_direct`), otherwise through a cursor."""

    sql: str
    #: The parameters, or (with ``call``) a function making them for the cursor.
    params: Sequence[Any] | Mapping[str, Any] | Callable[[], Sequence[Any]] | None = None
    fetch: bool = True
    #: The statement and parameters as the direct path sends them, built already.
    call: tuple[direct.Statement, list[bytes | None]] | None = None

    def direct_call(self) -> tuple[direct.Statement, list[bytes | None]] | None:
        """What the direct path sends (see :func:`._pg_direct.prepared_call`), or None."""
        if self.call is not None:
            return self.call
        return direct.prepared_call(self.sql, self.params)

    def cursor_params(self) -> Sequence[Any] | Mapping[str, Any] | None:
        """The parameters as a cursor takes them."""
        return self.params() if callable(self.params) else self.params


#: An operation: yields statements, receives their rows, returns its result.
Op = Generator[Stmt, list[tuple[Any, ...]], T]

#: The body of the tombstone check every write runs (see migration 2), shared by the functions
#: of migrations 2 and 5.
_CHECK_TOMBSTONES = """
    PERFORM pg_advisory_xact_lock_shared(hashtextextended({lock_prefix} || t, 0))
        FROM unnest(threads) AS t ORDER BY t;
    -- lows: per thread, the least checkpoint id (or parent id) the write names.
    IF EXISTS (
        SELECT 1 FROM {s}.tombstones d
        JOIN unnest(threads, lows) AS c(t, low) ON d.thread_id = c.t
        WHERE c.low COLLATE "C" <= d.max_checkpoint_id
    ) THEN
        RAISE EXCEPTION 'write into the history of a deleted thread'
            USING ERRCODE = 'SN001';
    END IF;
"""

#: Numbered, named schema migrations, applied in one transaction by ``setup()`` and recorded in
#: ``schema_migrations``. ``{s}`` is the quoted schema. Never edit a released entry: append one.
#: No ``CREATE INDEX CONCURRENTLY``: it cannot run inside the setup transaction.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "create checkpoints, blobs and writes",
        (
            """CREATE TABLE {s}.checkpoints (
                thread_id     text COLLATE "C" NOT NULL,
                namespace     text COLLATE "C" NOT NULL,
                checkpoint_id text COLLATE "C" NOT NULL,
                parent_id     text COLLATE "C",
                run_id        text COLLATE "C",
                created_at    double precision NOT NULL,
                metadata      jsonb NOT NULL,
                skeleton      bytea NOT NULL,
                PRIMARY KEY (thread_id, namespace, checkpoint_id)
            )""",
            "CREATE INDEX checkpoints_by_id ON {s}.checkpoints (checkpoint_id)",
            "CREATE INDEX checkpoints_by_run ON {s}.checkpoints (run_id) WHERE run_id IS NOT NULL",
            """CREATE TABLE {s}.blobs (
                thread_id text COLLATE "C" NOT NULL,
                namespace text COLLATE "C" NOT NULL,
                channel   text COLLATE "C" NOT NULL,
                version   text COLLATE "C" NOT NULL,
                kind      smallint NOT NULL,
                base      text COLLATE "C",
                data      bytea NOT NULL,
                PRIMARY KEY (thread_id, namespace, channel, version)
            )""",
            "ALTER TABLE {s}.blobs ALTER COLUMN data SET STORAGE EXTERNAL",
            """CREATE TABLE {s}.writes (
                thread_id     text COLLATE "C" NOT NULL,
                namespace     text COLLATE "C" NOT NULL,
                checkpoint_id text COLLATE "C" NOT NULL,
                task_id       text COLLATE "C" NOT NULL,
                idx           integer NOT NULL,
                channel       text NOT NULL,
                task_path     text COLLATE "C" NOT NULL,
                data          bytea NOT NULL,
                PRIMARY KEY (thread_id, namespace, checkpoint_id, task_id, idx)
            )""",
            "CREATE TABLE {s}.settings (key text PRIMARY KEY, value text NOT NULL)",
        ),
    ),
    (
        2,
        "tombstones of deleted threads",
        (
            """CREATE TABLE {s}.tombstones (
                thread_id         text COLLATE "C" PRIMARY KEY,
                max_checkpoint_id text COLLATE "C" NOT NULL,
                deleted_at        double precision NOT NULL
            )""",
            # Called by every write. The shared lock per thread waits for a delete of that
            # thread in progress (which holds it exclusively) and keeps a delete from starting
            # until the write commits. Queries in a VOLATILE function take a fresh snapshot, so
            # the check sees a tombstone committed while this write's statement was waiting.
            """CREATE FUNCTION {s}.check_tombstones(threads text[], lows text[])
            RETURNS boolean LANGUAGE plpgsql VOLATILE AS $fn$
            BEGIN
"""
            + _CHECK_TOMBSTONES
            + """                RETURN true;
            END
            $fn$""",
        ),
    ),
    (
        3,
        "store pending writes without a second compression",
        # Only the storage strategy of rows written from now on changes: no row is rewritten,
        # so this is instant on a table of any size.
        ("ALTER TABLE {s}.writes ALTER COLUMN data SET STORAGE EXTERNAL",),
    ),
    (
        4,
        "store each large value once per thread",
        # A value of PAYLOAD_MIN_BYTES or more goes to payloads under its SHA-256, and its write
        # or blob row names it in ``payload`` (its ``data`` then empty). A node's output is
        # stored as its pending write and again as the next checkpoint's blob: the same bytes,
        # now stored once. Existing rows keep their data; the new columns are NULL for them.
        (
            """CREATE TABLE {s}.payloads (
                thread_id text COLLATE "C" NOT NULL,
                digest    bytea NOT NULL,
                data      bytea NOT NULL,
                PRIMARY KEY (thread_id, digest)
            )""",
            "ALTER TABLE {s}.payloads ALTER COLUMN data SET STORAGE EXTERNAL",
            "ALTER TABLE {s}.blobs ADD COLUMN payload bytea",
            "ALTER TABLE {s}.writes ADD COLUMN payload bytea",
            "CREATE INDEX blobs_by_payload ON {s}.blobs (thread_id, payload) "
            "WHERE payload IS NOT NULL",
            "CREATE INDEX writes_by_payload ON {s}.writes (thread_id, payload) "
            "WHERE payload IS NOT NULL",
        ),
    ),
    (
        5,
        "refuse an append-delta whose base is not stored",
        # ``check_tombstones``'s work, then a check that the stored values the write's
        # append-deltas build on (ts, nss, chs, vs) are there: called instead of it by such a
        # write. The threads' locks are held, shared, until the write commits, and retention
        # deletes a thread's values only holding its lock exclusively: so a base found here
        # stays until then, and one retention deleted first is not found (each query of a
        # VOLATILE function takes a fresh snapshot). A plain lookup: no row lock, no WAL.
        (
            """CREATE FUNCTION {s}.check_write(
                threads text[], lows text[], ts text[], nss text[], chs text[], vs text[]
            ) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $fn$
            BEGIN
"""
            # check_tombstones's body, inline: a nested call cost about 10 us a write.
            + _CHECK_TOMBSTONES
            + """                IF cardinality(ts) = 1 THEN  -- a put's usual one: one lookup
                    PERFORM 1 FROM {s}.blobs b WHERE b.thread_id = ts[1]
                        AND b.namespace = nss[1] AND b.channel = chs[1] AND b.version = vs[1];
                    IF NOT FOUND THEN
                        RAISE EXCEPTION 'the base of an append-delta is not stored'
                            USING ERRCODE = 'SN002';
                    END IF;
                ELSIF (
                    SELECT count(*) FROM {s}.blobs b
                    JOIN unnest(ts, nss, chs, vs) AS k(kt, kn, kc, kv)
                    ON b.thread_id = k.kt AND b.namespace = k.kn AND b.channel = k.kc
                        AND b.version = k.kv
                ) < cardinality(ts) THEN
                    RAISE EXCEPTION 'the base of an append-delta is not stored'
                        USING ERRCODE = 'SN002';
                END IF;
                RETURN true;
            END
            $fn$""",
        ),
    ),
    (
        6,
        "refuse a write naming a payload that is not stored",
        # A write may name a payload its backend stored a moment before (a node's output, then
        # the next checkpoint's blob of it) instead of sending its bytes again; this checks,
        # after check_tombstones or check_write took the threads' locks, that each named
        # (thread, digest) is still there. Retention deletes payloads only holding the thread's
        # lock exclusively, so one found here stays until the write commits; one deleted first
        # is not found (a fresh snapshot), and the write is then sent again with the bytes.
        (
            """CREATE FUNCTION {s}.check_payloads(ts text[], ds bytea[])
            RETURNS boolean LANGUAGE plpgsql VOLATILE AS $fn$
            BEGIN
                IF (
                    SELECT count(*) FROM {s}.payloads p
                    JOIN unnest(ts, ds) AS k(kt, kd) ON p.thread_id = k.kt AND p.digest = k.kd
                ) < cardinality(ts) THEN
                    RAISE EXCEPTION 'a payload the write names is not stored'
                        USING ERRCODE = 'SN003';
                END IF;
                RETURN true;
            END
            $fn$""",
        ),
    ),
)
#: SQLSTATE raised by ``check_tombstones`` (a class of our own: "SN").
TOMBSTONE_SQLSTATE = "SN001"
#: SQLSTATE raised by ``check_write``.
BASES_SQLSTATE = "SN002"
#: SQLSTATE raised by ``check_payloads``.
PAYLOADS_SQLSTATE = "SN003"

# Why these column choices:
# - COLLATE "C" on keys: ids order bytewise, as in SQLite, whatever the database's collation
#   (``list`` and ``before`` compare checkpoint ids).
# - blobs.data STORAGE EXTERNAL: the codec already lz4-compresses large values; the default
#   (EXTENDED) makes the server try pglz on every large blob again. With a 1 MB lz4 blob, the
#   default storage spent most of the insert time in that second compression for no gain.
# - writes.data STORAGE EXTERNAL (migration 3), for the same reason: a node that returns a
#   1 MB value stores it as a pending write too. On the 1 MB benchmark graph, put_writes took
#   10 ms of the 13 ms a step spent in the saver before, most of it in pglz.

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

_CHECKPOINT_COLUMNS = (
    "thread_id, namespace, checkpoint_id, parent_id, run_id, created_at, metadata, skeleton"
)
_CHECKPOINT_SELECT = (
    "c.thread_id, c.namespace, c.checkpoint_id, c.parent_id, c.run_id, c.created_at, "
    "c.metadata::text, c.skeleton"
)
_WRITE_COLUMNS = "thread_id, namespace, checkpoint_id, task_id, idx, channel, task_path, data"
_BLOB_COLUMNS = "thread_id, namespace, channel, version, kind, base, data"
# What a write stores: the columns above and the digest of its payload, if it has one.
_WRITE_STORED = _WRITE_COLUMNS + ", payload"
_BLOB_STORED = _BLOB_COLUMNS + ", payload"
_PAYLOAD_COLUMNS = "thread_id, digest, data"


# Parameter types of each table's column arrays, in column order. ``%b``: sent in binary, which
# matters for bytea (a 1 MB value sent as text is hex-escaped to 2 MB and parsed by the server).
_WRITE_TYPES = ("text", "text", "text", "text", "int4", "text", "text", "bytea", "bytea")
_BLOB_TYPES = ("text", "text", "text", "text", "int2", "text", "bytea", "bytea")
_PAYLOAD_TYPES = ("text", "bytea", "bytea")
_CHECKPOINT_TYPES = ("text", "text", "text", "text", "text", "float8", "text", "bytea")


#: Batches of at most this many rows bind each value as its own parameter (multi-row VALUES);
#: larger ones bind one array per column (``unnest``). Dumping arrays runs in Python, scalars
#: in psycopg's C dumpers: for a chat step (a checkpoint and two blobs) the arrays cost about
#: 0.2 ms of client CPU per write, a third of the client's whole cost. Past a few dozen rows
#: the arrays' fixed statement text and amortized dumping win.
SMALL_BATCH_ROWS = 32

_ARRAYS = 0
_VALUES = 1
# One row of each table in a VALUES list (writes, replaced writes, blobs, checkpoints,
# payloads).
_VALUES_ROWS = (
    "(%s, %s, %s, %s, %s::int4, %s, %s, %b, %b::bytea)",
    "(%s, %s, %s, %s, %s::int4, %s, %s, %b, %b::bytea)",
    "(%s, %s, %s, %s, %s::int2, %s::text, %b, %b::bytea)",
    "(%s, %s, %s, %s::text, %s::text, %s::float8, %s::jsonb, %b)",
    "(%s, %b, %b)",
)


def quote_schema(schema: str) -> str:
    """The schema name as a quoted identifier, after checking it is a plain one."""
    if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
        raise ConfigurationError(
            f"invalid PostgreSQL schema name {schema!r}: use letters, digits and '_', "
            "starting with a letter or '_' (at most 63 characters)"
        )
    return f'"{schema}"'


def _unnest(prefix: str, types: Sequence[str]) -> str:
    return "unnest(" + ", ".join(f"%({prefix}{i})b::{t}[]" for i, t in enumerate(types)) + ")"


class Statements:
    """The SQL of one schema, built once per backend."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        s = self.quoted = quote_schema(schema)
        # Advisory lock id for setup(): stable across processes and machines.
        digest = hashlib.blake2b(f"snapstate.setup:{schema}".encode(), digest_size=8).digest()
        self.setup_lock = int.from_bytes(digest, "big", signed=True)

        #: Advisory lock keys of a thread: ``hashtextextended(prefix || thread_id, 0)``.
        self.lock_prefix = f"'{schema}:'"
        replace_set = (
            "ON CONFLICT (thread_id, namespace, checkpoint_id, task_id, idx) DO UPDATE SET "
            "channel = excluded.channel, task_path = excluded.task_path, data = excluded.data, "
            "payload = excluded.payload"
        )
        self.insert_writes = (
            f"INSERT INTO {s}.writes ({_WRITE_STORED}) "
            f"SELECT * FROM {_unnest('w', _WRITE_TYPES)} ON CONFLICT DO NOTHING"
        )
        self.replace_writes = (
            f"INSERT INTO {s}.writes ({_WRITE_STORED}) "
            f"SELECT * FROM {_unnest('r', _WRITE_TYPES)} {replace_set}"
        )
        self.insert_blobs = (
            f"INSERT INTO {s}.blobs ({_BLOB_STORED}) "
            f"SELECT * FROM {_unnest('b', _BLOB_TYPES)} ON CONFLICT DO NOTHING"
        )
        # A payload already stored for the thread is not stored again: the conflict is found
        # in the index before the value is written out of line.
        self.insert_payloads = (
            f"INSERT INTO {s}.payloads ({_PAYLOAD_COLUMNS}) "
            f"SELECT * FROM {_unnest('p', _PAYLOAD_TYPES)} ON CONFLICT DO NOTHING"
        )
        self.upsert_checkpoints = (
            f"INSERT INTO {s}.checkpoints ({_CHECKPOINT_COLUMNS}) "
            "SELECT u.thread_id, u.namespace, u.checkpoint_id, u.parent_id, u.run_id, "
            "u.created_at, u.metadata::jsonb, u.skeleton "
            f"FROM {_unnest('c', _CHECKPOINT_TYPES)} AS u({_CHECKPOINT_COLUMNS}) "
            "ON CONFLICT (thread_id, namespace, checkpoint_id) DO UPDATE SET "
            "parent_id = excluded.parent_id, run_id = excluded.run_id, "
            "created_at = excluded.created_at, metadata = excluded.metadata, "
            "skeleton = excluded.skeleton"
        )
        self._write_sql: dict[tuple[int, ...], str] = {}
        #: Per arrays shape: its statement with positional placeholders, and the names they
        #: stand for in order (see :func:`direct_arrays`).
        self._positional: dict[tuple[int, ...], tuple[str, list[str]]] = {}
        self._values_sql = (
            f"INSERT INTO {s}.writes ({_WRITE_STORED}) VALUES {{}} ON CONFLICT DO NOTHING",
            f"INSERT INTO {s}.writes ({_WRITE_STORED}) VALUES {{}} {replace_set}",
            f"INSERT INTO {s}.blobs ({_BLOB_STORED}) VALUES {{}} ON CONFLICT DO NOTHING",
            f"INSERT INTO {s}.checkpoints ({_CHECKPOINT_COLUMNS}) VALUES {{}} "
            "ON CONFLICT (thread_id, namespace, checkpoint_id) DO UPDATE SET "
            "parent_id = excluded.parent_id, run_id = excluded.run_id, "
            "created_at = excluded.created_at, metadata = excluded.metadata, "
            "skeleton = excluded.skeleton",
            f"INSERT INTO {s}.payloads ({_PAYLOAD_COLUMNS}) VALUES {{}} ON CONFLICT DO NOTHING",
        )

        def data(alias: str) -> str:
            return payload_value_sql(alias, f"{s}.")

        checkpoint_by_key = (
            f"SELECT {_CHECKPOINT_SELECT} FROM {s}.checkpoints c "
            "WHERE c.thread_id = %s::text AND c.namespace = %s::text"
        )
        self.get_latest = checkpoint_by_key + " ORDER BY c.checkpoint_id DESC LIMIT 1"
        self.get_by_id = checkpoint_by_key + " AND c.checkpoint_id = %s::text"
        # load(): the checkpoint row and its writes in one round trip (a checkpoint column set
        # per write row; skeletons are small).
        load = (
            "WITH c AS ({}) SELECT c.*, w.task_id, w.idx, w.channel, w.task_path, "
            + data("w")
            + f" FROM c LEFT JOIN {s}.writes w ON w.thread_id = c.thread_id "
            "AND w.namespace = c.namespace AND w.checkpoint_id = c.checkpoint_id"
        )
        self.load_latest = load.format(self.get_latest)
        self.load_by_id = load.format(self.get_by_id)
        self.list_base = f"SELECT {_CHECKPOINT_SELECT} FROM {s}.checkpoints c"
        # Follow append-delta bases server-side: keys first (cheap to de-duplicate with UNION),
        # then each blob's bytes once.
        self.get_blobs = (
            "WITH RECURSIVE chain(channel, version) AS ("
            ' SELECT k.c COLLATE "C", k.v COLLATE "C"'
            " FROM unnest(%s::text[], %s::text[]) AS k(c, v)"
            " UNION"
            f" SELECT b.channel, b.base FROM {s}.blobs b JOIN chain c"
            "  ON b.thread_id = %s::text AND b.namespace = %s::text"
            "  AND b.channel = c.channel AND b.version = c.version"
            "  WHERE b.kind = 1 AND b.base IS NOT NULL) "
            f"SELECT b.channel, b.version, b.kind, b.base, {data('b')} FROM chain c "
            f"JOIN {s}.blobs b"
            " ON b.thread_id = %s::text AND b.namespace = %s::text"
            " AND b.channel = c.channel AND b.version = c.version"
        )
        self.get_writes = (
            "SELECT w.thread_id, w.namespace, w.checkpoint_id, w.task_id, w.idx, w.channel, "
            f"w.task_path, {data('w')} FROM {s}.writes w WHERE w.thread_id = %s::text "
            "AND w.namespace = %s::text AND w.checkpoint_id = ANY(%s::text[])"
        )
        self.missing_bases = (
            "SELECT k.t, k.n, k.c, k.v FROM unnest(%s::text[], %s::text[], %s::text[],"
            " %s::text[]) AS k(t, n, c, v) WHERE NOT EXISTS (SELECT 1 FROM "
            f"{s}.blobs b WHERE b.thread_id = k.t AND b.namespace = k.n AND b.channel = k.c"
            " AND b.version = k.v) ORDER BY 1, 2, 3, 4"
        )
        self.get_tombstones = (
            f"SELECT thread_id, max_checkpoint_id FROM {s}.tombstones "
            "WHERE thread_id = ANY(%s::text[])"
        )
        # delete_threads: three statements in one transaction. The exclusive lock waits for
        # writes of these threads in flight; the deletes that follow see what they stored.
        self.lock_threads = (
            f"SELECT pg_advisory_xact_lock(hashtextextended({self.lock_prefix} || t, 0)) "
            "FROM unnest(%s::text[]) AS t ORDER BY t"
        )
        self.add_tombstones = (
            f"INSERT INTO {s}.tombstones (thread_id, max_checkpoint_id, deleted_at) "
            "SELECT thread_id, max(checkpoint_id), %(now)s::float8 FROM ("
            f" SELECT thread_id, checkpoint_id FROM {s}.checkpoints"
            "  WHERE thread_id = ANY(%(ids)s::text[])"
            " UNION ALL"
            f" SELECT thread_id, checkpoint_id FROM {s}.writes"
            "  WHERE thread_id = ANY(%(ids)s::text[])"
            ") x GROUP BY thread_id "
            "ON CONFLICT (thread_id) DO UPDATE SET max_checkpoint_id = "
            "greatest(tombstones.max_checkpoint_id, excluded.max_checkpoint_id), "
            "deleted_at = excluded.deleted_at"
        )
        self.delete_threads = (
            f"WITH w AS (DELETE FROM {s}.writes WHERE thread_id = ANY(%(ids)s::text[])), "
            f"b AS (DELETE FROM {s}.blobs WHERE thread_id = ANY(%(ids)s::text[])), "
            f"p AS (DELETE FROM {s}.payloads WHERE thread_id = ANY(%(ids)s::text[])) "
            f"DELETE FROM {s}.checkpoints WHERE thread_id = ANY(%(ids)s::text[])"
        )
        # Payloads no row names any more, after retention deleted rows of a thread. Only under
        # the thread's exclusive lock, taken without waiting: every write holds it shared from
        # before it looks for a payload until it commits, so no write can be about to name a
        # payload this deletes. If a write holds it, the payloads wait for the next run.
        self.try_lock_thread = (
            f"SELECT pg_try_advisory_xact_lock(hashtextextended({self.lock_prefix} || %s::text, 0))"
        )
        self.collect_payloads = (
            f"WITH d AS (DELETE FROM {s}.payloads p WHERE p.thread_id = %(t)s::text"
            f" AND NOT EXISTS (SELECT 1 FROM {s}.blobs b"
            "  WHERE b.thread_id = p.thread_id AND b.payload = p.digest)"
            f" AND NOT EXISTS (SELECT 1 FROM {s}.writes w"
            "  WHERE w.thread_id = p.thread_id AND w.payload = p.digest) RETURNING 1) "
            "SELECT count(*) FROM d"
        )
        self.purge_tombstones = (
            f"WITH d AS (DELETE FROM {s}.tombstones WHERE deleted_at < %s::float8 RETURNING 1) "
            "SELECT count(*) FROM d"
        )
        self.blob_index = (
            f"SELECT namespace, channel, version, kind, base FROM {s}.blobs "
            "WHERE thread_id = %s::text"
        )
        # Under the threads' exclusive locks: no write of them is in flight, and this statement
        # sees every one committed before.
        self.still_idle = (
            f"SELECT thread_id FROM {s}.checkpoints WHERE thread_id = ANY(%s::text[]) "
            "GROUP BY thread_id HAVING max(created_at) < %s::float8 ORDER BY thread_id"
        )
        self.blob_counts = (
            f"SELECT thread_id, count(*) FROM {s}.blobs WHERE thread_id = ANY(%s::text[]) "
            "GROUP BY thread_id"
        )
        # One statement: the parent_id update skips rows being deleted, since a statement must
        # not change a row twice.
        # Retention never waits on a live writer: rows another transaction holds locked are
        # skipped (SKIP LOCKED) and stay for the next run. Writes and the parent links follow
        # only the checkpoints actually deleted; the count goes back to the engine, which
        # deletes blobs only once every doomed checkpoint is gone.
        self.delete_rows = (
            "WITH d AS (SELECT * FROM unnest(%(ns)s::text[], %(ids)s::text[]) "
            " AS d(namespace, checkpoint_id)), "
            f"lc AS (SELECT x.ctid FROM {s}.checkpoints x JOIN d"
            " ON x.namespace = d.namespace AND x.checkpoint_id = d.checkpoint_id"
            " WHERE x.thread_id = %(t)s::text FOR UPDATE OF x SKIP LOCKED), "
            f"c AS (DELETE FROM {s}.checkpoints x USING lc WHERE x.ctid = lc.ctid"
            " RETURNING x.namespace, x.checkpoint_id), "
            f"lw AS (SELECT y.ctid FROM {s}.writes y JOIN c"
            " ON y.namespace = c.namespace AND y.checkpoint_id = c.checkpoint_id"
            " WHERE y.thread_id = %(t)s::text FOR UPDATE OF y SKIP LOCKED), "
            f"w AS (DELETE FROM {s}.writes x USING lw WHERE x.ctid = lw.ctid), "
            # Never the rows c deletes (one statement must not modify a row twice), and never
            # wait for a row a writer holds: it keeps a parent id naming a deleted checkpoint,
            # which reads as no parent.
            f"lp AS (SELECT x.ctid FROM {s}.checkpoints x JOIN c"
            " ON x.namespace = c.namespace AND x.parent_id = c.checkpoint_id"
            " WHERE x.thread_id = %(t)s::text AND NOT EXISTS (SELECT 1 FROM c k"
            "  WHERE k.namespace = x.namespace AND k.checkpoint_id = x.checkpoint_id)"
            " FOR UPDATE OF x SKIP LOCKED), "
            f"p AS (UPDATE {s}.checkpoints x SET parent_id = NULL FROM lp"
            " WHERE x.ctid = lp.ctid), "
            # Values only under the thread's lock, taken without waiting: a write holds it
            # from its check that the values its deltas build on are stored until it commits
            # (check_write). While one runs, the values stay for the next run.
            f"lb AS (SELECT x.ctid FROM {s}.blobs x JOIN unnest(%(bns)s::text[],"
            " %(bch)s::text[], %(bv)s::text[]) AS b(namespace, channel, version)"
            " ON x.namespace = b.namespace AND x.channel = b.channel AND x.version = b.version"
            " WHERE x.thread_id = %(t)s::text AND pg_try_advisory_xact_lock(hashtextextended("
            f"{self.lock_prefix} || %(t)s::text, 0)) FOR UPDATE OF x SKIP LOCKED), "
            f"b AS (DELETE FROM {s}.blobs x USING lb WHERE x.ctid = lb.ctid RETURNING 1) "
            "SELECT (SELECT count(*) FROM c) + (SELECT count(*) FROM b)"
        )
        # Copying into a thread id is a deliberate new history for it: its tombstone goes.
        self.copy_thread = (
            f"WITH t AS (DELETE FROM {s}.tombstones WHERE thread_id = %(dst)s::text), "
            f"p AS (INSERT INTO {s}.payloads ({_PAYLOAD_COLUMNS})"
            f" SELECT %(dst)s::text, digest, data FROM {s}.payloads"
            "  WHERE thread_id = %(src)s::text ON CONFLICT DO NOTHING), "
            f"c AS (INSERT INTO {s}.checkpoints ({_CHECKPOINT_COLUMNS}) "
            " SELECT %(dst)s::text, namespace, checkpoint_id, parent_id, run_id, created_at,"
            f" metadata, skeleton FROM {s}.checkpoints WHERE thread_id = %(src)s::text"
            " ON CONFLICT (thread_id, namespace, checkpoint_id) DO UPDATE SET"
            " parent_id = excluded.parent_id, run_id = excluded.run_id,"
            " created_at = excluded.created_at, metadata = excluded.metadata,"
            " skeleton = excluded.skeleton), "
            f"b AS (INSERT INTO {s}.blobs ({_BLOB_STORED}) "
            " SELECT %(dst)s::text, namespace, channel, version, kind, base, data, payload"
            f" FROM {s}.blobs WHERE thread_id = %(src)s::text ON CONFLICT DO NOTHING) "
            f"INSERT INTO {s}.writes ({_WRITE_STORED}) "
            " SELECT %(dst)s::text, namespace, checkpoint_id, task_id, idx, channel, task_path,"
            f" data, payload FROM {s}.writes WHERE thread_id = %(src)s::text"
            " ON CONFLICT DO NOTHING"
        )
        self.threads = (
            f"SELECT thread_id, count(*), max(created_at) FROM {s}.checkpoints GROUP BY thread_id"
        )
        self.stats = (
            "SELECT"
            f" (SELECT count(DISTINCT thread_id) FROM {s}.checkpoints),"
            f" (SELECT count(*) FROM {s}.checkpoints),"
            " (SELECT coalesce(sum(octet_length(metadata::text) + octet_length(skeleton)), 0)"
            f"  FROM {s}.checkpoints)::int8,"
            f" (SELECT count(*) FROM {s}.writes),"
            f" (SELECT coalesce(sum(octet_length({data('w')})), 0) FROM {s}.writes w)::int8,"
            f" (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            "   JOIN pg_namespace n ON n.oid = c.relnamespace"
            "   WHERE n.nspname = %s::text AND c.relkind = 'r'"
            "   AND c.relname IN ('checkpoints', 'blobs', 'writes', 'payloads'))::int8,"
            f" (SELECT count(*) FROM {s}.payloads),"
            f" (SELECT coalesce(sum(octet_length(data)), 0) FROM {s}.payloads)::int8,"
            f" ({shared_payload_bytes_sql(f'{s}.')})::int8"
        )
        # Bytes as the rows hold them: a payload a write and a blob share counts for both.
        self.channel_stats = (
            f"SELECT b.channel, count(*), coalesce(sum(octet_length({data('b')})), 0)::int8 "
            f"FROM {s}.blobs b GROUP BY b.channel ORDER BY b.channel"
        )
        # The payloads' uncompressed size, from each value's header alone (the same reading
        # as snapstate.codec._format.raw_size): flag bit 0 of byte 1 marks an lz4 payload whose
        # little-endian uncompressed size is bytes 6-9. Blob data is stored uncompressed out of
        # line, so the server reads only those first bytes of each value.
        self.raw_blob_bytes = (
            "SELECT coalesce(sum(CASE WHEN octet_length(data) >= 10 AND get_byte(data, 1) & 1 = 1"
            " THEN get_byte(data, 6)::int8 + get_byte(data, 7)::int8 * 256"
            " + get_byte(data, 8)::int8 * 65536 + get_byte(data, 9)::int8 * 16777216"
            " ELSE octet_length(data) - 6 END), 0)::int8"
            f" FROM (SELECT {data('b')} AS data FROM {s}.blobs b WHERE b.kind != 2) x"
        )
        self.create_migrations_table = (
            f"CREATE TABLE IF NOT EXISTS {s}.schema_migrations ("
            " id integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )

    def write_sql(self, key: tuple[int, ...]) -> str:
        """One statement storing a batch; ``key`` is :func:`write_params`'s shape of it.

        Data-modifying CTEs run exactly once each, all in the statement's one transaction; the
        statement's result is the tombstone check, which raises to roll everything back.
        """
        sql = self._write_sql.get(key)
        if sql is None:
            if key[0] == _ARRAYS:
                parts = [
                    stmt
                    for stmt, present in zip(
                        (
                            self.insert_writes,
                            self.replace_writes,
                            self.insert_blobs,
                            self.upsert_checkpoints,
                            self.insert_payloads,
                        ),
                        key[1:6],
                    )
                    if present
                ]
                guard = "%(g0)b::text[], %(g1)b::text[]"
                bases = "%(k0)b::text[], %(k1)b::text[], %(k2)b::text[], %(k3)b::text[]"
                has_bases = bool(key[6])
                payload_keys = "%(p0)b::text[], %(p1)b::bytea[]"  # the payloads' columns
                named, named_keys = key[7], "%(n0)b::text[], %(n1)b::bytea[]"
            else:
                parts = [
                    stmt.format(", ".join([row] * n))
                    for stmt, row, n in zip(self._values_sql, _VALUES_ROWS, key[1:6])
                    if n
                ]
                marks = ", ".join(["%s::text"] * key[6])
                guard = f"ARRAY[{marks}]::text[], ARRAY[{marks}]::text[]"
                base_marks = ", ".join(["%s::text"] * key[7])
                bases = ", ".join([f"ARRAY[{base_marks}]::text[]"] * 4)
                has_bases = bool(key[7])
                payload_keys = "%s::text[], %b::bytea[]"
                named, named_keys = key[8], "%s::text[], %b::bytea[]"
            ctes = ", ".join(f"p{i} AS ({stmt})" for i, stmt in enumerate(parts))
            checked = (
                f"{self.quoted}.check_write({guard}, {bases})"
                if has_bases
                else f"{self.quoted}.check_tombstones({guard})"
            )
            # What runs once the threads' locks are held (CASE keeps that order).
            then = None
            if key[5]:
                # Two writes carrying the same payload at once (a node's write and the next
                # checkpoint) would both write it out of line before one finds the other's
                # index entry. A lock per payload, taken after the threads' locks and in one
                # order, makes the second wait for the first to commit, find the payload and
                # skip it. The (int4, int4) key space is not the threads' (int8) one.
                then = (
                    f"(SELECT count(pg_advisory_xact_lock("
                    f"hashtext({self.lock_prefix} || t), hashtext(encode(d, 'hex')))) FROM "
                    f"(SELECT t, d FROM unnest({payload_keys}) AS u(t, d) ORDER BY t, d) x)"
                )
            if named:
                # Payloads the write names without their bytes: still stored (check_payloads).
                then = (
                    f"CASE WHEN {self.quoted}.check_payloads({named_keys}) "
                    f"THEN {then or 'true'} END"
                )
            result = checked if then is None else f"CASE WHEN {checked} THEN {then} END"
            sql = f"WITH {ctes} SELECT {result}"
            self._write_sql[key] = sql
        return sql


# -- row conversion ----------------------------------------------------------------------------


def checkpoint_row(r: Sequence[Any]) -> CheckpointRow:
    return CheckpointRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6].encode(), r[7])


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    if not rows:
        return [[] for _ in range(width)]
    return [list(col) for col in zip(*rows)]


def _first_wins(rows: list[Any], key: Callable[[Any], Hashable]) -> list[Any]:
    if len(rows) < 2:
        return rows
    seen: dict[Hashable, Any] = {}
    for r in rows:
        seen.setdefault(key(r), r)
    return list(seen.values())


def _last_wins(rows: list[Any], key: Callable[[Any], Hashable]) -> list[Any]:
    if len(rows) < 2:
        return rows
    return list({key(r): r for r in rows}.values())


def _write_key(w: WriteRow) -> tuple[str, str, str, str, int]:
    return (w.thread_id, w.namespace, w.checkpoint_id, w.task_id, w.idx)


def _blob_key(b: BlobRow) -> tuple[str, str, str, str]:
    return (b.thread_id, b.namespace, b.channel, b.version)


def _checkpoint_key(c: CheckpointRow) -> tuple[str, str, str]:
    return (c.thread_id, c.namespace, c.checkpoint_id)


def _metadata_text(c: CheckpointRow) -> str:
    text = c.metadata.decode()
    # JSONB cannot hold U+0000 in a string; say which key instead of failing in the driver.
    if "\\u0000" in text:
        key = _nul_key(msgspec.json.decode(c.metadata))
        if key is not None:
            raise EncodeError(
                f"metadata key {key!r} of checkpoint {c.checkpoint_id!r} (thread "
                f"{c.thread_id!r}, namespace {c.namespace!r}) contains a NUL character "
                "(\\u0000), which PostgreSQL JSONB cannot store"
            )
    return text


def _nul_key(metadata: Any) -> str | None:
    def has_nul(v: Any) -> bool:
        if isinstance(v, str):
            return "\x00" in v
        if isinstance(v, dict):
            return any(has_nul(k) or has_nul(x) for k, x in v.items())
        if isinstance(v, list):
            return any(has_nul(x) for x in v)
        return False

    if isinstance(metadata, dict):
        for key, value in metadata.items():
            if has_nul(key) or has_nul(value):
                return str(key)
    return None


def write_params(
    batch: WriteBatch, stored: Collection[tuple[str, bytes]] = ()
) -> tuple[tuple[int, ...], Any, list[str]]:
    """The shape of a batch's statement (a :meth:`Statements.write_sql` key), its parameters
    and the threads it touches. A payload whose ``(thread_id, digest)`` is in ``stored`` is
    named, not sent: the statement checks it is there (``check_payloads``)."""
    return _write_params(batch, stored)[:3]


def _write_params(
    batch: WriteBatch, stored: Collection[tuple[str, bytes]] = ()
) -> tuple[tuple[int, ...], Any, list[str], frozenset[tuple[str, bytes]]]:
    """:func:`write_params`, and the ``(thread_id, digest)`` of every payload the batch names
    or carries.

    One statement may not change a row twice, so a merged batch is reduced first with the
    semantics of applying its parts in order: plain writes keep the first row of a key,
    replaced writes the last (and win over plain ones), checkpoints the last.
    """
    replace = _last_wins(batch.replace_writes, _write_key)
    writes = _first_wins(batch.writes, _write_key)
    if replace and writes:
        replaced = {_write_key(w) for w in replace}
        writes = [w for w in writes if _write_key(w) not in replaced]
    blobs = _first_wins(batch.blobs, _blob_key)
    checkpoints = _last_wins(batch.checkpoints, _checkpoint_key)
    # Rows in key order: two transactions inserting overlapping keys then lock them in the
    # same order and cannot deadlock each other.
    if len(writes) > 1:
        writes.sort(key=_write_key)
    if len(replace) > 1:
        replace.sort(key=_write_key)
    if len(blobs) > 1:
        blobs.sort(key=_blob_key)
    if len(checkpoints) > 1:
        checkpoints.sort(key=_checkpoint_key)

    # Tombstone check input: per thread, the least checkpoint id the batch writes into.
    lows: dict[str, str] = {}
    for tid, cid in (
        *((c.thread_id, c.checkpoint_id) for c in checkpoints),
        *((c.thread_id, c.parent_id) for c in checkpoints if c.parent_id is not None),
        *((w.thread_id, w.checkpoint_id) for w in writes),
        *((w.thread_id, w.checkpoint_id) for w in replace),
    ):
        if tid not in lows or cid < lows[tid]:
            lows[tid] = cid
    threads = sorted(batch_threads(batch))
    low_list = [lows.get(t) for t in threads]
    base_columns = [list(c) for c in zip(*delta_bases(batch))]

    # Large values go to payloads: each row keeps an empty data and the payload's digest.
    payloads: dict[tuple[str, bytes], bytes] = {}
    write_rows = [stored_row(payloads, w) for w in writes]
    replace_rows = [stored_row(payloads, w) for w in replace]
    blob_rows = [stored_row(payloads, b) for b in blobs]
    payload_keys = frozenset(payloads)
    named = sorted(k for k in payloads if k in stored) if stored else []
    for k in named:
        del payloads[k]
    named_columns = [[t for t, _ in named], [d for _, d in named]]
    payload_rows = [(t, d, data) for (t, d), data in sorted(payloads.items())]
    checkpoint_rows = [checkpoint_values(c, _metadata_text(c)) for c in checkpoints]
    parts: tuple[list[tuple[Any, ...]], ...] = (
        write_rows,
        replace_rows,
        blob_rows,
        checkpoint_rows,
        payload_rows,
    )
    counts = tuple(len(rows) for rows in parts)
    if sum(counts) <= SMALL_BATCH_ROWS:
        flat: list[Any] = []
        for rows in parts:
            for t in rows:
                flat.extend(t)
        flat.extend(threads)
        flat.extend(low_list)
        for column in base_columns:
            flat.extend(column)
        if named:
            flat.extend(named_columns)
        if payload_rows:
            flat.extend(_columns(payload_rows, 3)[:2])
        bases = len(base_columns[0]) if base_columns else 0
        return (_VALUES, *counts, len(threads), bases, len(named)), flat, threads, payload_keys
    params: dict[str, Any] = {}
    for prefix, rows, width in zip("wrbcp", parts, (9, 9, 8, 8, 3)):
        if rows:
            _add_columns(params, prefix, rows, width)
    params["g0"] = threads
    params["g1"] = low_list
    for i, column in enumerate(base_columns):
        params[f"k{i}"] = column
    if named:
        params["n0"], params["n1"] = named_columns
    key = (_ARRAYS, *(1 if n else 0 for n in counts), 1 if base_columns else 0, 1 if named else 0)
    return key, params, threads, payload_keys


class _Slow(Exception):
    """A value :func:`direct_write` leaves to the general path."""


def _text(value: Any) -> bytes | None:
    """A text-format parameter as :func:`._pg_direct.encode` sends it (raises :class:`_Slow`
    for what it would refuse)."""
    kind = type(value)
    if kind is str:
        if "\x00" in value:
            raise _Slow
        text: str = value
        return text.encode()  # a lone surrogate raises UnicodeEncodeError: the caller's _Slow
    if value is None:
        return None
    if kind is int:
        return str(value).encode()
    if kind is float and math.isfinite(value):
        return repr(value).encode()
    raise _Slow


def _binary(value: Any) -> bytes:
    """A value stored inline (binary format): bytes below the payload threshold."""
    if type(value) is not bytes or len(value) >= PAYLOAD_MIN_BYTES:
        raise _Slow
    return value


def _sorted_distinct(rows: list[R], key: Callable[[R], Any]) -> list[R] | None:
    """``rows`` in key order, or None if two of them have one key."""
    if len(rows) < 2:
        return rows
    ordered = sorted(rows, key=key)
    if any(key(x) == key(y) for x, y in itertools.pairwise(ordered)):
        return None
    return ordered


def direct_write(q: Statements, batch: WriteBatch) -> Stmt | None:
    """The statement storing a common batch, with its libpq parameters built in one pass
    (``Stmt.call``): exactly what ``direct.prepared_call(q.write_sql(key), params)`` gives for
    :func:`write_params`'s ``key`` and ``params``, which the statement computes only if a
    cursor sends it. None for any other batch, which takes that general path: more
    than one thread or checkpoint, replaced writes, more than ``SMALL_BATCH_ROWS`` rows, two
    rows with one key, a value going to ``payloads``, metadata holding ``\\u0000``, or a value
    the direct path does not send.

    A step's ``put`` and ``put_writes`` are such batches; the general path converts each row
    to a tuple, the tuples to one flat list, and that list value by value to libpq's form.
    """
    if batch.replace_writes or not direct.AVAILABLE:
        return None
    writes, blobs, checkpoints = batch.writes, batch.blobs, batch.checkpoints
    nw, nb, nc = len(writes), len(blobs), len(checkpoints)
    if nc > 1 or not 0 < nw + nb + nc <= SMALL_BATCH_ROWS:
        return None
    tid = (checkpoints[0] if nc else writes[0] if nw else blobs[0]).thread_id
    try:
        t = _text(tid)
        out: list[bytes | None] = []
        low: str | None = None
        if nw:
            ordered_writes = _sorted_distinct(writes, _write_key)
            if ordered_writes is None:
                return None
            for w in ordered_writes:
                if w.thread_id != tid:
                    return None
                cid = w.checkpoint_id
                if low is None or cid < low:
                    low = cid
                out += (
                    t,
                    _text(w.namespace),
                    _text(cid),
                    _text(w.task_id),
                    _text(w.idx),
                    _text(w.channel),
                    _text(w.task_path),
                    _binary(w.data),
                    None,
                )
        bases: list[tuple[str, str, str, str]] = []
        if nb:
            ordered_blobs = _sorted_distinct(blobs, _blob_key)
            if ordered_blobs is None:
                return None
            for v in ordered_blobs:
                if v.thread_id != tid:
                    return None
                out += (
                    t,
                    _text(v.namespace),
                    _text(v.channel),
                    _text(v.version),
                    _text(v.kind),
                    _text(v.base),
                    _binary(v.data),
                    None,
                )
            bases = delta_bases(batch)
        if nc:
            c = checkpoints[0]
            if c.thread_id != tid:
                return None
            metadata = c.metadata.decode()
            if "\\u0000" in metadata:
                return None
            for ref in (c.checkpoint_id, c.parent_id):
                if ref is not None and (low is None or ref < low):
                    low = ref
            skeleton = c.skeleton
            if type(skeleton) is not bytes:
                return None
            out += (
                t,
                _text(c.namespace),
                _text(c.checkpoint_id),
                _text(c.parent_id),
                _text(c.run_id),
                _text(c.created_at),
                _text(metadata),
                skeleton,
            )
        out.append(t)
        out.append(_text(low))
        for column in zip(*bases):
            out.extend(_text(v) for v in column)
    except (_Slow, UnicodeEncodeError):
        return None
    text = q.write_sql((_VALUES, nw, 0, nb, nc, 0, 1, len(bases), 0))
    stmt = direct.statement(text)
    if stmt is None or len(stmt.formats) != len(out):  # pragma: no cover - built to match
        return None
    return Stmt(text, lambda: write_params(batch)[1], False, (stmt, out))


#: The element type of each array parameter of a large batch's statement.
_ARRAY_TYPES: dict[str, str] = {
    **{f"w{i}": t for i, t in enumerate(_WRITE_TYPES)},
    **{f"r{i}": t for i, t in enumerate(_WRITE_TYPES)},
    **{f"b{i}": t for i, t in enumerate(_BLOB_TYPES)},
    **{f"c{i}": t for i, t in enumerate(_CHECKPOINT_TYPES)},
    **{f"p{i}": t for i, t in enumerate(_PAYLOAD_TYPES)},
    **{f"g{i}": "text" for i in range(2)},
    **{f"k{i}": "text" for i in range(4)},
    "n0": "text",
    "n1": "bytea",
}
_NAMED = re.compile(r"%\((\w+)\)b")


def direct_arrays(q: Statements, key: tuple[int, ...], params: Mapping[str, Any]) -> Stmt | None:
    """The statement storing a large batch (:func:`write_params`'s arrays shape ``key`` and
    its named ``params``, one list per column), with its columns sent as binary arrays built
    here (``Stmt.call``) rather than by psycopg's list dumper, and the statement prepared on
    a session like any other the direct path sends. None when a value is one
    :func:`._pg_direct.binary_array` leaves to psycopg: the cursor then sends the batch."""
    if not direct.AVAILABLE or key[0] != _ARRAYS:
        return None
    text = q.write_sql(key)
    positional = q._positional.get(key)
    if positional is None:
        positional = q._positional[key] = (_NAMED.sub("%b", text), _NAMED.findall(text))
    stmt = direct.statement(positional[0])
    if stmt is None:  # pragma: no cover - the text holds no other placeholders
        return None
    arrays: dict[str, bytes] = {}
    out: list[bytes | None] = []
    for name in positional[1]:
        array = arrays.get(name)
        if array is None:
            array = direct.binary_array(params[name], _ARRAY_TYPES[name])
            if array is None:
                return None
            arrays[name] = array
        out.append(array)
    return Stmt(text, params, False, (stmt, out))


def _add_columns(
    params: dict[str, Any], prefix: str, rows: Sequence[tuple[Any, ...]], width: int
) -> None:
    for i, col in enumerate(_columns(rows, width)):
        params[f"{prefix}{i}"] = col


# -- operations --------------------------------------------------------------------------------


def op_setup(q: Statements) -> Op[None]:
    """Create or upgrade the schema, inside the caller's transaction."""
    # Serialize concurrent setup() calls (many processes starting at once) on this schema. The
    # lock is transaction-scoped, so it also works behind a transaction-pooling PgBouncer.
    yield Stmt("SELECT pg_advisory_xact_lock(%s::int8)", [q.setup_lock], fetch=False)
    if not (yield Stmt("SELECT 1 FROM pg_namespace WHERE nspname = %s::text", [q.schema])):
        yield Stmt(f"CREATE SCHEMA {q.quoted}", fetch=False)
    yield Stmt(q.create_migrations_table, fetch=False)
    applied = {r[0] for r in (yield Stmt(f"SELECT id FROM {q.quoted}.schema_migrations"))}
    _refuse_newer(q, applied)
    if 1 not in applied and (
        yield Stmt(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = %s::text "
            "AND table_name = 'checkpoints' AND column_name = 'checkpoint_ns'",
            [q.schema],
        )
    ):
        raise ConfigurationError(
            f"PostgreSQL schema {q.schema!r} holds LangGraph's own checkpoint tables; "
            "snapstate keeps its checkpoints in tables of its own with the same names",
            hint="give snapstate another schema, e.g. PostgresSaver(conn, schema='snapstate'); "
            "LangGraph's saver still reads the old tables",
        )
    for mid, name, statements in MIGRATIONS:
        if mid in applied:
            continue
        for statement in statements:
            try:
                yield Stmt(statement.format(s=q.quoted, lock_prefix=q.lock_prefix), fetch=False)
            except psycopg.OperationalError:
                raise  # the connection, not the migration
            except psycopg.Error as exc:
                raise MigrationError(
                    f"schema migration {mid} ({name}) failed in schema {q.schema!r}: {exc}"
                ) from None
        yield Stmt(
            f"INSERT INTO {q.quoted}.schema_migrations (id, name) VALUES (%s::int4, %s::text)",
            [mid, name],
            fetch=False,
        )


def _refuse_newer(q: Statements, applied: set[int]) -> None:
    known = {m[0] for m in MIGRATIONS}
    newer = sorted(applied - known)
    if newer:
        raise SchemaVersionError(
            f"PostgreSQL schema {q.schema!r} has schema migrations {newer} that this version "
            f"of snapstate does not know (it knows up to {max(known)})",
            hint="upgrade snapstate, or use a schema written by this version",
        )


def op_migration_status(q: Statements) -> Op[list[MigrationStatus]]:
    """The known migrations with when each was applied; reads only."""
    exists = yield Stmt(
        "SELECT 1 FROM pg_tables WHERE schemaname = %s::text AND tablename = 'schema_migrations'",
        [q.schema],
    )
    applied: dict[int, float] = {}
    if exists:
        rows = yield Stmt(
            f"SELECT id, extract(epoch FROM applied_at)::float8 FROM {q.quoted}.schema_migrations"
        )
        applied = {r[0]: r[1] for r in rows}
    _refuse_newer(q, set(applied))
    return [MigrationStatus(mid, name, applied.get(mid)) for mid, name, _ in MIGRATIONS]


#: How many stored payloads a backend remembers (:class:`StoredPayloads`).
STORED_PAYLOADS = 16


class StoredPayloads:
    """The ``(thread_id, digest)`` of the payloads a backend's latest writes committed.

    LangGraph hands a node's output to ``put_writes`` and, as the channel's new value, to the
    next ``put``: a large value's bytes would travel to the server twice, the second time only
    for the server to find them stored. A write names a payload remembered here by its key
    alone, and its statement checks that the payload is still stored (``check_payloads``): if
    retention or a deleted thread removed it meanwhile, the write is sent again with the bytes.
    So this is a hint, never trusted. Plain dict operations, atomic under the GIL: no lock for a
    forked child to inherit held.
    """

    def __init__(self, size: int = STORED_PAYLOADS) -> None:
        self._size = size
        self._keys: dict[tuple[str, bytes], None] = {}

    def keys(self) -> frozenset[tuple[str, bytes]]:
        return frozenset(self._keys)

    def add(self, keys: Collection[tuple[str, bytes]]) -> None:
        for key in keys:
            self._keys.pop(key, None)
            self._keys[key] = None  # the newest last
        while len(self._keys) > self._size:
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):
                self._keys.pop(next(iter(self._keys)))

    def clear(self) -> None:
        self._keys.clear()


def op_write(q: Statements, batch: WriteBatch, stored: StoredPayloads | None = None) -> Op[None]:
    """Store ``batch`` in one statement. ``stored``: payloads known stored, which the statement
    names instead of sending them (:class:`StoredPayloads`), and which it learns of."""
    if not len(batch):
        return
    stmt = direct_write(q, batch)  # None, among others, for every batch with a payload
    payload_keys: frozenset[tuple[str, bytes]] = frozenset()
    if stmt is None:
        key, params, _, payload_keys = _write_params(
            batch, stored.keys() if stored is not None else ()
        )
        stmt = direct_arrays(q, key, params) or Stmt(q.write_sql(key), params, fetch=False)
    try:
        yield stmt
    except psycopg.Error as exc:
        if exc.sqlstate == PAYLOADS_SQLSTATE and stored is not None:
            # A payload named as stored is gone and nothing was written: send them all.
            stored.clear()
            resend = True
        elif exc.sqlstate == BASES_SQLSTATE:
            bases = delta_bases(batch)
            rows = yield Stmt(q.missing_bases, [list(c) for c in zip(*bases)])
            raise missing_base([tuple(r) for r in rows] or bases) from None
        elif exc.sqlstate != TOMBSTONE_SQLSTATE:
            raise
        else:
            resend = False
    else:
        if payload_keys and stored is not None:
            stored.add(payload_keys)
        return
    if resend:
        assert stored is not None
        yield from op_write(q, batch, None)
        stored.add(payload_keys)
        return
    # Refused: say exactly which row belongs to which deleted history.
    threads = sorted(batch_threads(batch))
    rows = yield Stmt(q.get_tombstones, [threads])
    check_tombstones(batch, {r[0]: r[1] for r in rows})
    raise ThreadDeletedError(
        f"a write to thread(s) {threads} belongs to a deleted history and was not stored"
    )


def op_get_checkpoint(
    q: Statements, thread_id: str, namespace: str, checkpoint_id: str | None
) -> Op[CheckpointRow | None]:
    if checkpoint_id is None:
        rows = yield Stmt(q.get_latest, [thread_id, namespace])
    else:
        rows = yield Stmt(q.get_by_id, [thread_id, namespace, checkpoint_id])
    return checkpoint_row(rows[0]) if rows else None


def op_load(
    q: Statements, thread_id: str, namespace: str, checkpoint_id: str | None
) -> Op[tuple[CheckpointRow, list[BlobRow], list[WriteRow]] | None]:
    if checkpoint_id is None:
        rows = yield Stmt(q.load_latest, [thread_id, namespace])
    else:
        rows = yield Stmt(q.load_by_id, [thread_id, namespace, checkpoint_id])
    if not rows:
        return None
    row = checkpoint_row(rows[0])
    writes = [
        WriteRow(row.thread_id, row.namespace, row.checkpoint_id, r[8], r[9], r[10], r[11], r[12])
        for r in rows
        if r[8] is not None
    ]
    check_payloads(writes)
    return row, [], writes


def op_list(q: Statements, query: ListQuery) -> Op[list[CheckpointRow]]:
    conditions = key_conditions(query)
    where: list[str] = [f"c.{column} {op} %s::text" for column, op, _ in conditions]
    params: list[Any] = [value for _, _, value in conditions]
    for key, value in query.filter.items():
        # JSONB equality: booleans only equal booleans, numbers compare by value, objects
        # ignore key order; a missing key yields NULL, which never matches.
        where.append("c.metadata -> %s::text = %s::jsonb")
        params.extend((key, msgspec.json.encode(value).decode()))
    sql = q.list_base
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY c.checkpoint_id DESC"
    if query.limit is not None:
        sql += " LIMIT %s::int8"
        params.append(query.limit)
    rows = yield Stmt(sql, params)
    return [checkpoint_row(r) for r in rows]


def op_get_blobs(
    q: Statements, thread_id: str, namespace: str, keys: Collection[tuple[str, str]]
) -> Op[list[BlobRow]]:
    if not keys:
        return []
    channels, versions = _columns(list(keys), 2)
    rows = yield Stmt(q.get_blobs, [channels, versions, thread_id, namespace, thread_id, namespace])
    return check_payloads(
        [BlobRow(thread_id, namespace, r[0], r[1], r[2], r[3], r[4]) for r in rows]
    )


def op_get_writes(
    q: Statements, thread_id: str, namespace: str, checkpoint_ids: Collection[str]
) -> Op[list[WriteRow]]:
    if not checkpoint_ids:
        return []
    rows = yield Stmt(q.get_writes, [thread_id, namespace, list(checkpoint_ids)])
    return check_payloads([WriteRow(*r) for r in rows])


def op_delete_threads(q: Statements, thread_ids: Sequence[str], now: float) -> Op[None]:
    """Tombstones, then the rows; the caller runs this in one transaction."""
    ids = sorted(set(thread_ids))
    if ids:
        yield Stmt(q.lock_threads, [ids], fetch=False)
        yield Stmt(q.add_tombstones, {"ids": ids, "now": now}, fetch=False)
        yield Stmt(q.delete_threads, {"ids": ids}, fetch=False)


def op_delete_idle_threads(
    q: Statements, thread_ids: Sequence[str], idle_before: float, now: float
) -> Op[list[str]]:
    """Those threads still idle once their locks are held, deleted as op_delete_threads does;
    the caller runs this in one transaction."""
    ids = sorted(set(thread_ids))
    if not ids:
        return []
    yield Stmt(q.lock_threads, [ids], fetch=False)
    idle = [r[0] for r in (yield Stmt(q.still_idle, [ids, idle_before]))]
    if idle:
        yield Stmt(q.add_tombstones, {"ids": idle, "now": now}, fetch=False)
        yield Stmt(q.delete_threads, {"ids": idle}, fetch=False)
    return idle


def op_purge_tombstones(q: Statements, deleted_before: float) -> Op[int]:
    rows = yield Stmt(q.purge_tombstones, [deleted_before])
    return int(rows[0][0])


def op_blob_index(q: Statements, thread_id: str) -> Op[list[BlobRef]]:
    rows = yield Stmt(q.blob_index, [thread_id])
    return [BlobRef(*r) for r in rows]


def op_blob_counts(q: Statements, thread_ids: Sequence[str]) -> Op[dict[str, int]]:
    rows = yield Stmt(q.blob_counts, [list(thread_ids)])
    return {r[0]: int(r[1]) for r in rows}


def op_delete_rows(
    q: Statements,
    thread_id: str,
    checkpoints: Collection[tuple[str, str]],
    blobs: Collection[tuple[str, str, str]],
) -> Op[int]:
    if not checkpoints and not blobs:
        return 0
    ns, ids = _columns(list(checkpoints), 2)
    bns, bch, bv = _columns(list(blobs), 3)
    params = {"t": thread_id, "ns": ns, "ids": ids, "bns": bns, "bch": bch, "bv": bv}
    rows = yield Stmt(q.delete_rows, params)
    yield from op_collect_payloads(q, thread_id)
    return int(rows[0][0])


def op_collect_payloads(q: Statements, thread_id: str) -> Op[int | None]:
    """Delete the payloads of a thread that no row names; None if a write of the thread was in
    progress (they are left for the next run). Runs inside the caller's transaction."""
    ((locked,),) = yield Stmt(q.try_lock_thread, [thread_id])
    if not locked:
        return None
    ((n,),) = yield Stmt(q.collect_payloads, {"t": thread_id})
    return int(n)


def op_copy_thread(q: Statements, source: str, target: str) -> Op[None]:
    """Inside the caller's transaction: the target's lock keeps its payloads from being
    collected while the copy names them."""
    yield Stmt(q.lock_threads, [[target]], fetch=False)
    yield Stmt(q.copy_thread, {"src": source, "dst": target}, fetch=False)


def op_threads(q: Statements, idle_before: float | None) -> Op[list[ThreadInfo]]:
    sql = q.threads
    params: list[Any] = []
    if idle_before is not None:
        sql += " HAVING max(created_at) < %s::float8"
        params.append(idle_before)
    rows = yield Stmt(sql + " ORDER BY thread_id", params)
    return [ThreadInfo(r[0], r[1], r[2]) for r in rows]


def op_stats(q: Statements) -> Op[TableStats]:
    (
        (threads, checkpoints, cbytes, writes, wbytes, size, payloads, payload_bytes, shared),
    ) = yield Stmt(q.stats, [q.schema])
    channels = {r[0]: (r[1], r[2]) for r in (yield Stmt(q.channel_stats))}
    ((raw,),) = yield Stmt(q.raw_blob_bytes)
    return TableStats(
        threads=threads,
        checkpoints=checkpoints,
        checkpoint_bytes=cbytes,
        blobs=sum(n for n, _ in channels.values()),
        blob_bytes=sum(b for _, b in channels.values()),
        writes=writes,
        write_bytes=wbytes,
        channels=channels,
        file_bytes=size,
        raw_blob_bytes=raw,
        payloads=payloads,
        payload_bytes=payload_bytes,
        shared_bytes=shared,
    )
