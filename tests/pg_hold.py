"""A write held in the middle of its batch, in the server: for tests of what happens to a
write that is under way (its connection killed, other calls made meanwhile)."""

from __future__ import annotations

import time

import psycopg
from psycopg import sql


def wait_for_mid_batch_waiter(dsn: str, schema: str, exclude: set[int]) -> int:
    """The pid of a session of ours held mid-batch: its write statement has inserted rows (it
    has a transaction id) and waits on the lock :class:`HeldMidBatch` holds."""
    deadline = time.monotonic() + 30
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND wait_event = 'advisory' AND backend_xid IS NOT NULL AND query LIKE %s",
                [f'%"{schema}".check_%'],
            ).fetchall()
            pids = [r[0] for r in rows if r[0] not in exclude]
            if pids:
                return int(pids[0])
            time.sleep(0.01)
    raise AssertionError("no write statement of the victim thread was ever held mid-batch")


class HeldMidBatch:
    """Holds every write to one thread in the middle of its batch: a trigger of the test's
    schema, fired at the end of the write statement (after the rows of its checkpoints, blobs
    and writes are inserted, before the commit), waits for a lock this object holds."""

    def __init__(self, dsn: str, schema: str, thread_id: str) -> None:
        # A lock of this schema's own, in a key space apart from the library's thread locks
        # (hashes of schema and thread with seed 0): test runs side by side never share it.
        self.conn = psycopg.connect(dsn, autocommit=True)
        row = self.conn.execute("SELECT hashtextextended(%s, 1)", [schema]).fetchone()
        assert row is not None
        self.key = int(row[0])
        self.conn.execute("SELECT pg_advisory_lock(%s)", [self.key])
        self.conn.execute(
            f"""CREATE FUNCTION "{schema}".hold_mid_batch() RETURNS trigger
            LANGUAGE plpgsql AS $fn$
            BEGIN
                IF NEW.thread_id = {sql.Literal(thread_id).as_string(self.conn)} THEN
                    PERFORM pg_advisory_xact_lock({self.key});
                END IF;
                RETURN NULL;
            END $fn$"""
        )
        self.conn.execute(
            f'CREATE TRIGGER hold_mid_batch AFTER INSERT ON "{schema}".checkpoints '
            f'FOR EACH ROW EXECUTE FUNCTION "{schema}".hold_mid_batch()'
        )

    def release(self) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s)", [self.key])
        self.conn.close()
