"""snapstate's savers against LangGraph's own ``InMemorySaver``, on random call sequences.

A Hypothesis state machine makes the same calls on a saver of ours and on LangGraph's
``InMemorySaver`` (the contract's reference) and compares every answer: ``put`` (new
checkpoints, forks from older ones, channels that change, lists that grow by appending, large
values, configurable keys merged into metadata), ``put_writes`` (the special channels that
replace, the others ignored when repeated, writes that arrive before their checkpoint),
``get_tuple``, ``list`` (by thread, namespace and id, metadata filters, ``before``, ``limit``),
``delete_thread``, ``delete_for_runs``, ``copy_thread`` and ``prune``. The async savers are
driven through their sync methods, their event loop running in another thread (as a synchronous
graph on an async saver does).

Where snapstate differs by design it checks the difference instead: a write into the history
of a deleted thread is refused with ``ThreadDeletedError`` (docs/retention.md), and nothing of
it is stored; the reference stores it, so the machine skips it there. Listing across threads
and namespaces is compared as a set: LangGraph's savers do not agree on its order.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import threading
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import (
    ERROR,
    INTERRUPT,
    RESUME,
    SCHEDULED,
    WRITES_IDX_MAP,
    create_checkpoint,
    empty_checkpoint,
)
from langgraph.checkpoint.memory import InMemorySaver

from snapstate import langgraph as ours
from snapstate.errors import ThreadDeletedError

from ..fix_backends import in_ci

THREADS = ("a", "b", "c")
# Most calls go to one thread and the root namespace, so that histories grow.
threads = st.sampled_from(("a", "a", "a", "b", "c"))
namespaces = st.sampled_from(("", "", "child:1"))
#: How a ``put`` picks its parent: the latest checkpoint, an older one (a fork), or none.
PARENTS = ("latest", "latest", "latest", "older", "none")
CHANNELS = ("messages", "count", "blob")
TASKS = ("task-1", "task-2")
#: Each task's path, fixed per task as in LangGraph, whose order (writes are listed by task path,
#: then task id) is the reverse of the task ids'.
PATHS = {"task-1": "~__pregel_pull, ai", "task-2": ""}
TAGS = ("x", "y")
RUNS = (None, "run-1", "run-2")

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=12)
    | st.binary(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
# Values of 64 KiB and more go to snapstate's payload table; random bytes stay that large.
large = st.integers(0, 2**32).map(lambda seed: random.Random(seed).randbytes(70_000))


def message(human: bool, text: str, n: int) -> Any:
    return (HumanMessage if human else AIMessage)(content=text, id=f"m{n}")


messages = st.builds(message, st.booleans(), st.text(max_size=30), st.integers(0, 10**6))
channel_value = st.one_of(values, large, st.lists(messages, max_size=2))
write_channels = st.sampled_from((*CHANNELS, ERROR, INTERRUPT, RESUME, SCHEDULED))
FILTERS = (
    None,
    {"source": "loop"},
    {"tag": "x"},
    {"step": 1},
    {"user": "ann"},
    {"tag": "y", "step": 0},
)


class Reference(InMemorySaver):
    """LangGraph's ``InMemorySaver`` with the rule its SQLite and Postgres savers follow in
    ``put_writes`` (snapstate's too): a call made only of special channels replaces existing
    rows, any other call keeps them. ``InMemorySaver`` replaces special writes in every call.
    And ``delete_for_runs``, ``copy_thread`` and ``prune``, which it lacks."""

    def put_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        conf = config["configurable"]
        stored = self.writes[(conf["thread_id"], conf["checkpoint_ns"], conf["checkpoint_id"])]
        replace = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        for i, (channel, value) in enumerate(writes):
            key = (task_id, WRITES_IDX_MAP.get(channel, i))
            if replace or key not in stored:
                stored[key] = (task_id, channel, self.serde.dumps_typed(value), task_path)

    def prune(self, thread_ids: Any, *, strategy: str = "keep_latest") -> None:
        """``keep_latest`` as LangGraph's Postgres saver does it (these namespaces have no
        subgraph calls to drop): each namespace's latest checkpoint stays, with its writes and
        with no parent unless that one stays too."""
        assert strategy == "keep_latest"
        for thread_id in thread_ids:
            gone = False
            for ns, saved in self.storage[thread_id].items():
                if not saved:
                    continue
                head = max(saved)
                for cid in [c for c in saved if c != head]:
                    del saved[cid]
                    self.writes.pop((thread_id, ns, cid), None)
                    gone = True
                checkpoint, metadata, parent = saved[head]
                if parent is not None and parent != head:
                    saved[head] = (checkpoint, metadata, None)
            if gone:
                self.collect(thread_id)

    def collect(self, thread_id: str) -> None:
        """Delete the values no remaining checkpoint of the thread names, as the savers'
        retention does (``InMemorySaver`` keeps them): a checkpoint put later that names one
        without storing it again then reads without it on both sides."""
        named = set()
        for ns, saved in self.storage[thread_id].items():
            for checkpoint, _, _ in saved.values():
                versions = self.serde.loads_typed(checkpoint)["channel_versions"]
                named.update((ns, channel, version) for channel, version in versions.items())
        for key in [k for k in self.blobs if k[0] == thread_id and k[1:] not in named]:
            del self.blobs[key]

    def delete_for_runs(self, run_ids: Any) -> None:
        """The checkpoints those runs saved (metadata ``run_id``) and their writes; a checkpoint
        whose parent goes is left with none."""
        for thread_id, namespaces in self.storage.items():
            for ns, saved in namespaces.items():
                gone = {
                    cid
                    for cid, (_, metadata, _) in saved.items()
                    if self.serde.loads_typed(metadata).get("run_id") in run_ids
                }
                for cid in gone:
                    del saved[cid]
                    self.writes.pop((thread_id, ns, cid), None)
                for cid, (checkpoint, metadata, parent) in list(saved.items()):
                    if parent in gone:
                        saved[cid] = (checkpoint, metadata, None)
                if gone:
                    self.collect(thread_id)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Every namespace, checkpoint (same ids), value and write of the source."""
        for ns, saved in list(self.storage[source_thread_id].items()):
            self.storage[target_thread_id][ns].update(saved)
        for key, blob in list(self.blobs.items()):
            if key[0] == source_thread_id:
                self.blobs[(target_thread_id, *key[1:])] = blob
        for key, stored in list(self.writes.items()):
            if key[0] == source_thread_id:
                self.writes[(target_thread_id, *key[1:])] = dict(stored)


class Differential(RuleBasedStateMachine):
    """One saver of ours and the reference, fed the same calls; ``saver`` outlives the machine
    (one store per test), so each run names its threads afresh."""

    saver: Any = None

    def __init__(self) -> None:
        super().__init__()
        self.ref = Reference()
        self.run = uuid.uuid4().hex[:8]
        self.version = 0
        # (thread, ns) -> checkpoint ids in the order they were put; id -> checkpoint
        self.ids: dict[tuple[str, str], list[str]] = {}
        self.checkpoints: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, str | None] = {}  # checkpoint id -> the run that put it
        # checkpoints made but not put yet: writes may arrive for them first
        self.pending: list[tuple[str, str, dict[str, Any]]] = []
        # thread -> checkpoint ids it has checkpoints or writes for
        self.had: dict[str, set[str]] = {}
        # thread -> the greatest of those when it was deleted (snapstate's tombstone)
        self.tombstones: dict[str, str] = {}
        # (channel, version) -> the value put at that version (versions are never reused)
        self.values: dict[tuple[str, str], Any] = {}

    def thread(self, name: str) -> str:
        return f"{self.run}-{name}"

    def config(self, thread: str, ns: str, checkpoint_id: str | None = None, **extra: Any) -> Any:
        conf = {"thread_id": self.thread(thread), "checkpoint_ns": ns, **extra}
        if checkpoint_id is not None:
            conf["checkpoint_id"] = checkpoint_id
        return {"configurable": conf}

    def deleted(self, thread: str, *ids: str | None) -> bool:
        last = self.tombstones.get(thread)
        return last is not None and any(i is not None and i <= last for i in ids)

    def both(self, method: str, thread: str, ids: tuple[str | None, ...], *args: Any) -> Any:
        """Call ``method`` on both savers; into a deleted history, ours must refuse it (a
        ``batched`` saver says so when the write commits: at the latest, at ``flush()``)."""
        if self.deleted(thread, *ids):
            with pytest.raises(ThreadDeletedError):
                getattr(self.saver, method)(*args)
                self.saver.flush()
            return None
        return getattr(self.saver, method)(*args), getattr(self.ref, method)(*args)

    # -- writing -----------------------------------------------------------------------------

    @rule(
        thread=threads,
        ns=namespaces,
        changes=st.dictionaries(st.sampled_from(CHANNELS), channel_value, max_size=3),
        append=st.lists(messages, max_size=2),
        parent_is=st.sampled_from(PARENTS),
        older=st.integers(1, 3),
        tag=st.sampled_from(TAGS),
        user=st.none() | st.sampled_from(("ann", "bob")),
        run=st.sampled_from(RUNS),
        from_pending=st.booleans(),
    )
    def put(
        self,
        thread: str,
        ns: str,
        changes: dict[str, Any],
        append: list[Any],
        parent_is: str,
        older: int,
        tag: str,
        user: str | None,
        run: str | None,
        from_pending: bool,
    ) -> None:
        ids = self.ids.setdefault((thread, ns), [])
        parent = None
        if ids and parent_is == "latest":
            parent = ids[-1]
        elif ids and parent_is == "older":
            parent = ids[max(0, len(ids) - 1 - older)]
        mine = [p for p in self.pending if p[:2] == (thread, ns)]
        if from_pending and mine:
            cp = mine[0][2]
            self.pending.remove(mine[0])
        else:
            cp = self.next_checkpoint(parent)
        if append:
            # A list that grows by appending: snapstate stores only the new items.
            old = cp["channel_values"].get("messages")
            changes["messages"] = (old if isinstance(old, list) else []) + append
        new_versions = self.change(cp, changes)
        metadata = {"source": "loop", "step": len(ids), "tag": tag}
        extra = {"user": user, "run_id": run}
        extra = {k: v for k, v in extra.items() if v is not None}
        config = self.config(thread, ns, parent, **extra)
        answers = self.both("put", thread, (cp["id"], parent), config, cp, metadata, new_versions)
        if answers is None:
            return
        got, expected = answers
        assert got["configurable"]["checkpoint_id"] == expected["configurable"]["checkpoint_id"]
        assert got["configurable"]["checkpoint_ns"] == ns
        if cp["id"] not in ids:
            ids.append(cp["id"])
        self.had.setdefault(thread, set()).add(cp["id"])
        self.checkpoints[cp["id"]] = cp
        self.runs[cp["id"]] = run

    @rule(
        thread=threads,
        ns=namespaces,
        said=st.lists(messages, min_size=2, max_size=5),
        tag=st.sampled_from(TAGS),
        run=st.sampled_from(RUNS),
    )
    def run_steps(self, thread: str, ns: str, said: list[Any], tag: str, run: str | None) -> None:
        """A graph running: a checkpoint per step from the latest, a message appended at each."""
        for i, message in enumerate(said):
            self.put(thread, ns, {"count": i}, [message], "latest", 1, tag, None, run, False)

    def change(self, cp: dict[str, Any], changes: dict[str, Any]) -> dict[str, str]:
        """Set ``changes`` in ``cp``, each channel at a new version; the new versions."""
        new_versions = {}
        for channel, value in changes.items():
            self.version += 1
            new_versions[channel] = f"{self.version:032}.0"
            self.values[(channel, new_versions[channel])] = value
            cp["channel_values"][channel] = value
            cp["channel_versions"][channel] = new_versions[channel]
        return new_versions

    def next_checkpoint(self, parent: str | None) -> dict[str, Any]:
        base = self.checkpoints[parent] if parent is not None else empty_checkpoint()
        cp = create_checkpoint(base, None, 0)
        cp["channel_values"] = dict(base["channel_values"])
        cp["channel_versions"] = dict(base["channel_versions"])
        return cp

    @rule(thread=threads, ns=namespaces)
    def make_pending(self, thread: str, ns: str) -> None:
        """A checkpoint that writes may name before it is put."""
        ids = self.ids.get((thread, ns))
        self.pending.append((thread, ns, self.next_checkpoint(ids[-1] if ids else None)))

    @rule(
        data=st.data(),
        task=st.sampled_from(TASKS),
        writes=st.lists(st.tuples(write_channels, st.one_of(values, large)), max_size=3),
    )
    def put_writes(self, data: st.DataObject, task: str, writes: list[Any]) -> None:
        targets = [(t, ns, i) for (t, ns), ids in self.ids.items() for i in ids]
        targets += [(t, ns, cp["id"]) for t, ns, cp in self.pending]
        if targets:
            self.write(*data.draw(st.sampled_from(targets)), task, writes)

    def write(self, thread: str, ns: str, checkpoint_id: str, task: str, writes: Any) -> None:
        config = self.config(thread, ns, checkpoint_id)
        if not writes:  # nothing to store, nothing to refuse
            self.saver.put_writes(config, writes, task, PATHS[task])
            return
        if self.both("put_writes", thread, (checkpoint_id,), config, writes, task, PATHS[task]):
            self.had.setdefault(thread, set()).add(checkpoint_id)

    @rule(thread=threads, now=st.integers(0, 3))
    def delete_thread(self, thread: str, now: int) -> None:
        if now:  # one time in four: histories grow longer between deletions
            return
        had = self.had.pop(thread, set())
        self.saver.delete_thread(self.thread(thread))
        self.ref.delete_thread(self.thread(thread))
        for key in [k for k in self.ids if k[0] == thread]:
            del self.ids[key]
        if had:
            self.tombstones[thread] = max([*had, self.tombstones.get(thread, "")])

    @rule(data=st.data())
    def copy_thread(self, data: st.DataObject) -> None:
        """Into a thread with nothing stored (a deleted one included: the copy is a new history)."""
        sources = sorted({t for (t, _), ids in self.ids.items() if ids})
        targets = [t for t in THREADS if not self.had.get(t)]
        if not sources or not targets:
            return
        source, target = data.draw(st.sampled_from(sources)), data.draw(st.sampled_from(targets))
        self.saver.copy_thread(self.thread(source), self.thread(target))
        self.ref.copy_thread(self.thread(source), self.thread(target))
        for (thread, ns), ids in list(self.ids.items()):
            if thread == source:
                self.ids[(target, ns)] = list(ids)
        self.had[target] = set(self.had[source])
        self.tombstones.pop(target, None)

    @rule(thread=threads, now=st.integers(0, 2))
    def prune(self, thread: str, now: int) -> None:
        if now:  # one time in three
            return
        self.saver.prune([self.thread(thread)], strategy="keep_latest")
        self.ref.prune([self.thread(thread)], strategy="keep_latest")
        for (t, _), ids in self.ids.items():
            if t == thread and ids:
                ids[:] = [max(ids)]

    @rule(runs=st.lists(st.sampled_from(RUNS[1:]), max_size=2), now=st.integers(0, 2))
    def delete_for_runs(self, runs: list[str], now: int) -> None:
        if now:  # one time in three
            return
        self.saver.delete_for_runs(runs)
        self.ref.delete_for_runs(runs)
        for ids in self.ids.values():
            gone = [i for i in ids if self.runs.get(i) in runs]
            ids[:] = [i for i in ids if i not in gone]
            for had in self.had.values():
                had.difference_update(gone)

    # -- reading -----------------------------------------------------------------------------

    @precondition(lambda self: any(self.ids.values()))
    @rule(data=st.data(), which=st.sampled_from(("latest", "latest", "any", "missing")))
    def get_tuple(self, data: st.DataObject, which: str) -> None:
        thread, ns = data.draw(st.sampled_from(sorted(k for k, ids in self.ids.items() if ids)))
        ids = self.ids[(thread, ns)]
        checkpoint_id = None  # the latest
        if which == "missing":
            checkpoint_id = str(uuid.uuid4())
        elif which == "any":
            checkpoint_id = data.draw(st.sampled_from(ids))
        config = self.config(thread, ns, checkpoint_id)
        expected = same(self.ref.get_tuple(config))
        assert self.kept(same(self.saver.get_tuple(config)), expected) == expected

    @precondition(lambda self: any(self.ids.values()))
    @rule(
        data=st.data(),
        scope=st.sampled_from(("all", "thread", "namespace", "namespace", "checkpoint")),
        filter=st.sampled_from((None, None, None, *FILTERS)),
        limit=st.sampled_from((None, None, 0, 1, 2)),
        before=st.sampled_from((None, None, "latest", "any")),
    )
    def list_checkpoints(
        self, data: st.DataObject, scope: str, filter: Any, limit: int | None, before: str | None
    ) -> None:
        thread, ns = data.draw(st.sampled_from(sorted(k for k, ids in self.ids.items() if ids)))
        ids = self.ids[(thread, ns)]
        config: Any
        if scope == "all":
            config = None
        elif scope == "thread":
            config = {"configurable": {"thread_id": self.thread(thread)}}
        elif scope == "namespace":
            config = self.config(thread, ns)
        else:
            config = self.config(thread, ns, data.draw(st.sampled_from(ids)))
        before_config = None
        if before is not None:
            before_id = ids[-1] if before == "latest" else data.draw(st.sampled_from(ids))
            before_config = self.config(thread, ns, before_id)
        ordered = scope in ("namespace", "checkpoint")
        if not ordered:
            # LangGraph's savers list several namespaces in different orders, so a limit
            # keeps different checkpoints: compare the whole listing as a set.
            limit = None
        kwargs = {"filter": filter, "before": before_config, "limit": limit}
        expected = [same(t) for t in self.ref.list(config, **kwargs) if self.mine(t)]
        got = self.kept_each(
            [same(t) for t in self.saver.list(config, **kwargs) if self.mine(t)], expected
        )
        if not ordered:
            got.sort(key=repr)
            expected.sort(key=repr)
        assert got == expected

    def mine(self, t: Any) -> bool:
        return str(t.config["configurable"]["thread_id"]).startswith(self.run)

    def kept_each(self, got: list[Any], expected: list[Any]) -> list[Any]:
        """:meth:`kept` of each of ours against the reference's of the same checkpoint."""
        theirs = {e[0]: e for e in expected}
        return [self.kept(g, theirs.get(g[0])) for g in got]

    def kept(self, got: Any, expected: Any) -> Any:
        """Ours, less the values it still holds where the reference's retention dropped them.

        Retention never breaks a kept append-delta's chain: a list a kept checkpoint stores as
        an append-delta keeps its base, which the reference (no deltas) deletes once no
        checkpoint names it. A checkpoint put later naming that base's version then reads
        with the value in ours and without it in the reference. Such a value must be a list,
        and the very one put at that version; anything else stays for the comparison."""
        if got is None or expected is None:
            return got
        mine, theirs = got[1]["channel_values"], expected[1]["channel_values"]
        extra = {
            channel: value
            for channel, value in mine.items()
            if channel not in theirs
            and isinstance(value, list)
            and self.values.get((channel, got[1]["channel_versions"].get(channel))) == value
        }
        if not extra:
            return got
        values = {k: v for k, v in mine.items() if k not in extra}
        return (got[0], {**got[1], "channel_values": values}, *got[2:])


def same(t: Any) -> Any:
    """What of a checkpoint tuple both savers must agree on."""
    if t is None:
        return None
    conf = t.config["configurable"]
    parent = t.parent_config["configurable"]["checkpoint_id"] if t.parent_config else None
    return (
        (conf["thread_id"], conf.get("checkpoint_ns", ""), conf["checkpoint_id"]),
        t.checkpoint,
        t.metadata,
        parent,
        [tuple(w) for w in t.pending_writes or []],
    )


def run(saver: Any, examples: int, machine: type[Differential] = Differential) -> None:
    machine.saver = saver
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            # Shrinking a failing sequence can take minutes per test: under CI, report the
            # sequence as found (its seed reproduces it, and shrinks it, on a developer's machine).
            phases=[p for p in Phase if p is not Phase.shrink or not in_ci()],
        ),
    )


@pytest.fixture
def sqlite_conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(tmp_path / "store.db", check_same_thread=False)
    yield conn
    conn.close()


@pytest.mark.parametrize("durability", ["sync", "batched"])
def test_memory(durability: str) -> None:
    with ours.InMemorySaver(durability=durability) as saver:
        run(saver, 50)


@pytest.mark.parametrize("durability", ["sync", "batched"])
def test_sqlite(sqlite_conn: sqlite3.Connection, durability: str) -> None:
    saver = ours.SqliteSaver(sqlite_conn, durability=durability)
    try:
        run(saver, 30)
    finally:
        saver.close()


def test_short_delta_chains(sqlite_conn: sqlite3.Connection) -> None:
    """A full copy of a growing list every 3 versions instead of 32: retention then deletes
    keyframes that later deltas of kept checkpoints build on."""
    saver = ours.SqliteSaver(sqlite_conn, delta_keyframe_every=3)
    try:
        run(saver, 30)
    finally:
        saver.close()


@pytest.mark.postgres
@pytest.mark.parametrize("durability", ["sync", "batched"])
def test_postgres(pg_dsn: str, pg_schema: str, durability: str) -> None:
    saver = ours.PostgresSaver(pg_dsn, schema=pg_schema, durability=durability)
    try:
        run(saver, 20)
    finally:
        saver.close()


@contextlib.contextmanager
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread of its own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def on_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


@pytest.mark.parametrize(
    "kind", ["sqlite-async", pytest.param("postgres-async", marks=pytest.mark.postgres)]
)
def test_async_savers(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> None:
    if kind == "postgres-async":
        dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")

    async def make() -> Any:  # inside the loop, which the saver then works on
        if kind == "sqlite-async":
            return ours.AsyncSqliteSaver(tmp_path / "store.db")
        return ours.AsyncPostgresSaver(dsn, schema=schema)

    with loop_thread() as loop:
        saver = on_loop(loop, make())
        try:
            run(saver, 20)
        finally:
            on_loop(loop, saver.aclose())


@pytest.mark.parametrize("keyframes", [32, 0], ids=["deltas", "no-deltas"])
def test_a_kept_delta_base_reads_where_the_reference_dropped_it(keyframes: int) -> None:
    """A sequence Hypothesis found: ``count`` is put as [] twice, the second time stored as an
    append-delta on the first; retention keeps that base, which a checkpoint put afterwards
    from before the second put names. Ours reads the value put at that version; the reference
    (no deltas) has deleted it. With append-deltas off, both read without it."""
    big = random.Random(0).randbytes(70_000)
    with ours.InMemorySaver(delta_keyframe_every=keyframes) as saver:
        Differential.saver = saver
        try:
            m = Differential()
            step = {"append": [], "ns": "", "older": 1, "parent_is": "latest", "run": None}
            step |= {"tag": "x", "thread": "c", "user": None}
            m.put(changes={"messages": big, "count": [], "blob": big}, from_pending=False, **step)
            m.make_pending(ns="", thread="c")
            m.put(changes={"messages": None, "count": []}, from_pending=False, **step)
            m.prune(now=0, thread="c")
            m.put(changes={}, from_pending=True, **step)
            config = m.config("c", "")
            got = [same(t) for t in saver.list(config)]
            expected = [same(t) for t in m.ref.list(config)]
            older = got[-1][1]["channel_values"]
            assert ("count" in older) == bool(keyframes)
            assert "count" not in expected[-1][1]["channel_values"]
            if keyframes:
                assert older["count"] == [] and got != expected
            assert m.kept_each(got, expected) == expected
        finally:
            Differential.saver = None
