"""What the conformance suite does not check, on every saver, through both APIs.

Each test runs once per saver kind and once per API: ``async`` calls ``aput``, ``alist``, ...;
``sync`` calls ``put``, ``list``, ... from a worker thread (see ``SyncDriven``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import ERROR, INTERRUPT, BaseCheckpointSaver
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

from snapstate import InvalidArgumentError
from snapstate.langgraph import InMemorySaver, SqliteSaver

from .conftest import ALL_KINDS, MakeSaver, kinds
from .test_sync_api import SyncDriven


@pytest.fixture(params=["async", "sync"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def open_saver(make_saver: MakeSaver, kind: str, api: str, **options: Any) -> Any:
    saver = await make_saver(kind, **options)
    return SyncDriven(saver) if api == "sync" else saver


def config(thread: str, ns: str = "", checkpoint_id: str | None = None, **extra: Any) -> Any:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ns, **extra}
    if checkpoint_id is not None:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


async def put(
    saver: Any,
    thread: str,
    values: dict[str, Any],
    *,
    ns: str = "",
    parent: str | None = None,
    versions: dict[str, Any] | None = None,
    new: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> str:
    versions = versions if versions is not None else {k: 1 for k in values}
    cp = generate_checkpoint(channel_values=values, channel_versions=versions)
    stored = await saver.aput(
        config(thread, ns, parent),
        cp,
        metadata if metadata is not None else {"source": "loop", "step": 0},
        new if new is not None else versions,
    )
    assert stored["configurable"]["checkpoint_id"] == cp["id"]
    return str(cp["id"])


async def listed(saver: Any, cfg: Any, **kw: Any) -> list[Any]:
    return [t async for t in saver.alist(cfg, **kw)]


def tid() -> str:
    return str(uuid.uuid4())


# -- versions ------------------------------------------------------------------------------------


def test_next_version_is_langgraphs_scheme() -> None:
    saver = InMemorySaver()
    v1 = saver.get_next_version(None, None)
    counter, _, suffix = v1.partition(".")
    # LangGraph's: the counter in 32 digits, then random.random() zero-padded to 16 places.
    assert counter == f"{1:032}"
    assert 0 <= float(suffix) < 1 and f"{float(suffix):016}" == suffix
    versions = [v1]
    for _ in range(11):  # across 9 -> 10: zero padding keeps string order numeric
        versions.append(saver.get_next_version(versions[-1], None))
    assert versions == sorted(versions)
    assert int(versions[-1].split(".")[0]) == 12
    # Versions LangGraph's savers wrote (and plain ints) continue where they left off.
    from langgraph.checkpoint.memory import InMemorySaver as Upstream

    theirs = Upstream().get_next_version(Upstream().get_next_version(None, None), None)
    assert saver.get_next_version(theirs, None).startswith(f"{3:032}.")
    assert saver.get_next_version(7, None).startswith(f"{8:032}.")
    # Two forks bumping the same version get different names.
    assert saver.get_next_version(v1, None) != saver.get_next_version(v1, None)


# -- metadata ------------------------------------------------------------------------------------


@kinds(*ALL_KINDS)
async def test_metadata_merges_plain_config_values(
    kind: str, api: str, make_saver: MakeSaver
) -> None:
    saver = await open_saver(make_saver, kind, api)
    t = tid()
    cfg = config(
        t,
        assistant_id="asst",
        user_id=42,
        flag=True,
        score=0.5,
        __pregel_internal="hidden",
        langgraph_step=3,
        live_object=object(),
    )
    cfg["metadata"] = {"run_id": "run-1", "tenant": "acme", "nested": {"not": "plain"}}
    cp = generate_checkpoint()
    await saver.aput(cfg, cp, {"source": "loop", "step": 1, "note": "a\x00b"}, {})
    got = await saver.aget_tuple(config(t))
    assert got.metadata == {
        "source": "loop",
        "step": 1,
        "note": "ab",
        "run_id": "run-1",
        "tenant": "acme",
        "assistant_id": "asst",
        "user_id": 42,
        "flag": True,
        "score": 0.5,
    }
    # The merged keys are what delete_for_runs and filters see.
    assert [x.checkpoint["id"] for x in await listed(saver, None, filter={"tenant": "acme"})] == [
        cp["id"]
    ]


# -- pending writes ------------------------------------------------------------------------------


@kinds(*ALL_KINDS)
async def test_pending_writes_order_and_idempotency(
    kind: str, api: str, make_saver: MakeSaver
) -> None:
    saver = await open_saver(make_saver, kind, api)
    t = tid()
    cid = await put(saver, t, {"x": 1})
    cfg = config(t, checkpoint_id=cid)
    # Arrival order is not storage order: (task_path, task_id, idx) is.
    await saver.aput_writes(cfg, [("b", 1), ("a", 2)], "task-z", "~__pregel_pull, n2")
    await saver.aput_writes(cfg, [("c", 3)], "task-y", "~__pregel_pull, n1")
    await saver.aput_writes(cfg, [("d", 4), ("e", 5)], "task-a", "~__pregel_pull, n2")
    await saver.aput_writes(cfg, [("f", 6)], "task-0")  # no path: sorts first
    # A retried call changes nothing (first write wins) ...
    await saver.aput_writes(cfg, [("b", "retry"), ("a", "retry")], "task-z", "~__pregel_pull, n2")
    # ... special channels get fixed negative indices; a call of only those replaces ...
    await saver.aput_writes(cfg, [(ERROR, "first error")], "task-y", "~__pregel_pull, n1")
    await saver.aput_writes(cfg, [(ERROR, "second error")], "task-y", "~__pregel_pull, n1")
    # ... and a mixed call keeps what exists.
    await saver.aput_writes(
        cfg, [("c", "again"), (INTERRUPT, "ask")], "task-y", "~__pregel_pull, n1"
    )
    got = await saver.aget_tuple(cfg)
    assert got.pending_writes == [
        ("task-0", "f", 6),
        ("task-y", INTERRUPT, "ask"),
        ("task-y", ERROR, "second error"),
        ("task-y", "c", 3),
        ("task-a", "d", 4),
        ("task-a", "e", 5),
        ("task-z", "b", 1),
        ("task-z", "a", 2),
    ]


@kinds(*ALL_KINDS)
async def test_writes_may_arrive_before_their_checkpoint(
    kind: str, api: str, make_saver: MakeSaver
) -> None:
    saver = await open_saver(make_saver, kind, api)
    t = tid()
    cp = generate_checkpoint(channel_values={"x": 1}, channel_versions={"x": 1})
    await saver.aput_writes(config(t, checkpoint_id=cp["id"]), [("x", 2)], "task")
    assert await saver.aget_tuple(config(t)) is None
    await saver.aput(config(t), cp, {"source": "loop", "step": 0}, {"x": 1})
    got = await saver.aget_tuple(config(t))
    assert got.pending_writes == [("task", "x", 2)]


# -- list ----------------------------------------------------------------------------------------


@kinds(*ALL_KINDS)
async def test_list_across_threads_and_namespaces(
    kind: str, api: str, make_saver: MakeSaver
) -> None:
    saver = await open_saver(make_saver, kind, api)
    t1, t2 = tid(), tid()
    tag = tid()  # keeps this test's checkpoints apart from others sharing the store
    a = await put(saver, t1, {"x": 1}, metadata={"step": 0, "tag": tag, "who": "a"})
    b = await put(saver, t2, {"x": 2}, metadata={"step": 0, "tag": tag, "who": "b"})
    c = await put(saver, t1, {"y": 3}, ns="child:1", metadata={"step": 1, "tag": tag, "who": "a"})
    d = await put(
        saver,
        t2,
        {"x": 4},
        parent=b,
        versions={"x": 2},
        metadata={"step": 1, "tag": tag, "who": "b"},
    )

    def ids(tuples: list[Any]) -> list[str]:
        return [x.checkpoint["id"] for x in tuples]

    everything = await listed(saver, None, filter={"tag": tag})
    assert ids(everything) == [d, c, b, a]  # newest first, across threads and namespaces
    assert ids(await listed(saver, None, filter={"tag": tag, "who": "a"})) == [c, a]
    assert ids(
        await listed(saver, None, filter={"tag": tag}, before=config(t2, checkpoint_id=c))
    ) == [b, a]
    assert ids(await listed(saver, None, filter={"tag": tag}, limit=2)) == [d, c]
    # One thread: every namespace without checkpoint_ns, one namespace with it.
    assert ids(await listed(saver, {"configurable": {"thread_id": t1}})) == [c, a]
    assert ids(await listed(saver, config(t1, ""))) == [a]
    assert ids(await listed(saver, config(t1, "child:1"))) == [c]
    assert ids(await listed(saver, config(t2, checkpoint_id=b))) == [b]
    # Each tuple is complete: config, parent, values.
    newest = everything[0]
    assert newest.config["configurable"] == {
        "thread_id": t2,
        "checkpoint_ns": "",
        "checkpoint_id": d,
    }
    assert newest.parent_config["configurable"]["checkpoint_id"] == b
    assert newest.checkpoint["channel_values"] == {"x": 4}
    assert everything[1].config["configurable"]["checkpoint_ns"] == "child:1"


@kinds(*ALL_KINDS)
async def test_bad_filter_keys_are_refused(kind: str, api: str, make_saver: MakeSaver) -> None:
    saver = await open_saver(make_saver, kind, api)
    with pytest.raises(InvalidArgumentError, match="filter key"):
        await listed(saver, None, filter={"x') OR 1=1 --": 1})


@kinds(*ALL_KINDS)
async def test_writes_without_a_checkpoint_id_are_refused(
    kind: str, api: str, make_saver: MakeSaver
) -> None:
    saver = await open_saver(make_saver, kind, api)
    t = tid()
    with pytest.raises(InvalidArgumentError, match="checkpoint_id") as info:
        await saver.aput_writes(config(t), [("x", 1)], "task-1")
    assert repr(t) in str(info.value)  # says which thread
    with pytest.raises(InvalidArgumentError, match="thread_id"):
        await saver.aput_writes({"configurable": {}}, [("x", 1)], "task-1")
    # Nothing was stored for the thread.
    assert await listed(saver, config(t)) == []


@kinds(*ALL_KINDS)
async def test_malformed_arguments_get_clear_errors(
    kind: str, api: str, make_saver: MakeSaver
) -> None:
    saver = await open_saver(make_saver, kind, api)
    t = tid()
    a = await put(saver, t, {"x": 1})
    cp = generate_checkpoint(channel_values={"x": 2}, channel_versions={"x": 2})
    meta = {"source": "loop", "step": 1}
    # A None thread id would otherwise name a thread "None".
    with pytest.raises(InvalidArgumentError, match="thread_id"):
        await saver.aput(config(None), cp, meta, {"x": 2})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="thread_id is None"):
        await saver.adelete_thread(None)
    with pytest.raises(InvalidArgumentError, match="target_thread_id is None"):
        await saver.acopy_thread(t, None)
    with pytest.raises(InvalidArgumentError, match="thread_ids"):
        await saver.aprune([t, None])
    bad = dict(cp)
    del bad["channel_versions"]
    with pytest.raises(InvalidArgumentError, match="missing 'channel_versions'"):
        await saver.aput(config(t, checkpoint_id=a), bad, meta, {"x": 2})
    with pytest.raises(InvalidArgumentError, match="metadata must be a dict"):
        await saver.aput(config(t, checkpoint_id=a), cp, "step 1", {"x": 2})
    with pytest.raises(InvalidArgumentError, match="write 1 is 'y'"):
        await saver.aput_writes(config(t, checkpoint_id=a), [("x", 1), "y"], "task-1")
    with pytest.raises(InvalidArgumentError, match="channel of write 0 is a list"):
        await saver.aput_writes(config(t, checkpoint_id=a), [(["x"], 1)], "task-1")
    with pytest.raises(InvalidArgumentError, match="channel must be a str, got int"):
        await saver.aput_writes(config(t, checkpoint_id=a), [(3, 1)], "task-1")
    # None of those stored or deleted anything.
    got = await listed(saver, config(t))
    assert [x.checkpoint["id"] for x in got] == [a] and got[0].pending_writes == []


# -- retention -----------------------------------------------------------------------------------


@kinds(*ALL_KINDS)
async def test_delete_for_runs_keeps_values_other_checkpoints_reach(
    kind: str, api: str, make_saver: MakeSaver
) -> None:
    saver = await open_saver(make_saver, kind, api)
    t = tid()
    r1, r2 = tid(), tid()
    first = await put(saver, t, {"big": "kept", "n": 1}, metadata={"step": 0, "run_id": r1})
    await saver.aput_writes(config(t, checkpoint_id=first), [("n", 2)], "task")
    # The second run's checkpoint reaches "big" at the version the first run stored.
    second = await put(
        saver,
        t,
        {"big": "kept", "n": 2},
        parent=first,
        versions={"big": 1, "n": 2},
        new={"n": 2},
        metadata={"step": 1, "run_id": r2},
    )
    await saver.adelete_for_runs([r1])
    assert await saver.aget_tuple(config(t, checkpoint_id=first)) is None
    got = await saver.aget_tuple(config(t))
    assert got.checkpoint["id"] == second
    assert got.checkpoint["channel_values"] == {"big": "kept", "n": 2}


@kinds(*ALL_KINDS)
async def test_copy_thread_is_independent_of_its_source(
    kind: str, api: str, make_saver: MakeSaver
) -> None:
    saver = await open_saver(make_saver, kind, api)
    src, dst = tid(), tid()
    a = await put(saver, src, {"x": 1})
    b = await put(saver, src, {"x": 2}, parent=a, versions={"x": 2})
    c = await put(saver, src, {"y": 1}, ns="sub:1")
    await saver.aput_writes(config(src, checkpoint_id=b), [("x", 3)], "task", "p")
    await saver.acopy_thread(src, dst)
    await saver.adelete_thread(src)
    got = await listed(saver, {"configurable": {"thread_id": dst}})
    assert [x.checkpoint["id"] for x in got] == [c, b, a]
    assert [x.config["configurable"]["thread_id"] for x in got] == [dst] * 3
    assert got[1].checkpoint["channel_values"] == {"x": 2}
    assert got[1].pending_writes == [("task", "x", 3)]
    assert got[1].parent_config["configurable"] == {
        "thread_id": dst,
        "checkpoint_ns": "",
        "checkpoint_id": a,
    }
    assert await listed(saver, {"configurable": {"thread_id": src}}) == []


@kinds(*ALL_KINDS)
async def test_prune(kind: str, api: str, make_saver: MakeSaver) -> None:
    saver = await open_saver(make_saver, kind, api)
    t1, t2, t3 = tid(), tid(), tid()
    a = await put(saver, t1, {"x": 1, "keep": "me"})
    b = await put(
        saver, t1, {"x": 2, "keep": "me"}, parent=a, versions={"x": 2, "keep": 1}, new={"x": 2}
    )
    for t in (t2, t3):
        await put(saver, t, {"x": 1})
    t4 = tid()  # never pruned: every strategy leaves it whole
    c = await put(saver, t4, {"x": 1})
    d = await put(saver, t4, {"x": 2}, parent=c, versions={"x": 2})

    async def untouched() -> None:
        assert [x.checkpoint["id"] for x in await listed(saver, config(t4))] == [d, c]

    await saver.aprune([t1], strategy="keep_latest")
    got = await listed(saver, {"configurable": {"thread_id": t1}})
    assert [x.checkpoint["id"] for x in got] == [b]
    # The value stored with the deleted checkpoint is still reached by the kept one.
    assert got[0].checkpoint["channel_values"] == {"x": 2, "keep": "me"}
    await untouched()
    await saver.aprune([t2], strategy="delete")
    assert await saver.aget_tuple(config(t2)) is None
    assert [x.checkpoint["id"] for x in await listed(saver, config(t1))] == [b]
    assert await saver.aget_tuple(config(t3)) is not None
    await untouched()
    await saver.aprune([t3], strategy="delete_all")
    assert await saver.aget_tuple(config(t3)) is None
    assert [x.checkpoint["id"] for x in await listed(saver, config(t1))] == [b]
    await untouched()
    with pytest.raises(InvalidArgumentError, match="not a str"):
        await saver.aprune(t1)
    with pytest.raises(InvalidArgumentError, match="strategy"):
        await saver.aprune([t1], strategy="everything")


@kinds(*ALL_KINDS)
@pytest.mark.parametrize("call", ["prune", "delta_history"])
async def test_the_first_call_on_a_new_store_may_read_rows_directly(
    kind: str, api: str, call: str, make_saver: MakeSaver
) -> None:
    """``prune`` and ``get_delta_channel_history`` read rows from the backend directly: on a
    store nothing has set up yet, they set it up first, as every other call does."""
    saver = await open_saver(make_saver, kind, api)
    t = tid()
    if call == "prune":
        await saver.aprune([t], strategy="keep_latest")
    else:
        got = await saver.aget_delta_channel_history(config=config(t), channels=["messages"])
        assert set(got) <= {"messages"}
    assert await listed(saver, {"configurable": {"thread_id": t}}) == []


@kinds(*ALL_KINDS)
async def test_keep_latest_refuses_to_cut_a_delta_channel_history(
    kind: str, api: str, make_saver: MakeSaver
) -> None:
    saver = await open_saver(make_saver, kind, api)
    t, other = tid(), tid()
    a = await put(saver, t, {"x": 1})
    await put(
        saver,
        t,
        {"x": 2},
        parent=a,
        versions={"x": 2},
        metadata={"step": 1, "counters_since_delta_snapshot": {"messages": [3, 3]}},
    )
    await put(saver, other, {"x": 1})
    await put(saver, other, {"x": 1})
    with pytest.raises(InvalidArgumentError, match="DeltaChannel") as info:
        await saver.aprune([other, t], strategy="keep_latest")
    assert t in str(info.value)
    # Nothing was pruned, not even the thread before it.
    assert len(await listed(saver, {"configurable": {"thread_id": other}})) == 2
    await saver.aprune([t], strategy="delete")
    assert await saver.aget_tuple(config(t)) is None
    assert len(await listed(saver, {"configurable": {"thread_id": other}})) == 2


# -- setup -------------------------------------------------------------------------------------


def _tables(kind: str, store: Path, request: pytest.FixtureRequest) -> set[str]:
    """The tables the saver's store holds, read through a connection of the test's own."""
    if kind.startswith("postgres"):
        import psycopg

        dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                [schema],
            ).fetchall()
    else:
        if not store.exists():
            return set()
        with contextlib.closing(sqlite3.connect(store)) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {r[0] for r in rows}


@kinds("sqlite", "sqlite-async", "sqlite-aiosqlite", "postgres", "postgres-async")
async def test_setup_creates_the_store(
    kind: str, make_saver: MakeSaver, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # LangGraph's users call setup() once before the first run; a second call changes nothing.
    saver = await make_saver(kind)
    store = tmp_path / "store.db"
    wanted = {"checkpoints", "blobs", "writes", "payloads"}
    assert not wanted & _tables(kind, store, request)  # making the saver created nothing
    for _ in range(2):
        result = saver.setup()
        if inspect.isawaitable(result):
            await result
        assert wanted <= _tables(kind, store, request)
    assert await saver.aget_tuple(config(tid())) is None


# -- copies and codecs ---------------------------------------------------------------------------


@kinds(*ALL_KINDS)
async def test_with_allowlist_shares_storage(kind: str, make_saver: MakeSaver) -> None:
    saver = await make_saver(kind)
    clone = saver.with_allowlist([("collections", "OrderedDict"), ("no.such.module", "X")])
    assert isinstance(clone, BaseCheckpointSaver) and clone is not saver
    assert clone.codec is not saver.codec
    t = tid()
    cid = await put(clone, t, {"x": 1})
    got = await saver.aget_tuple(config(t))
    assert got.checkpoint["id"] == cid
    # Nothing to add: the saver itself.
    assert saver.with_allowlist([]) is saver


# -- the sync API of the async savers ------------------------------------------------------------


@kinds("sqlite-async", "sqlite-aiosqlite", "postgres-async")
@pytest.mark.parametrize("used", [True, False], ids=["used", "new"])
async def test_sync_call_from_the_loop_thread_raises_at_once(
    kind: str, used: bool, make_saver: MakeSaver
) -> None:
    saver = await make_saver(kind)
    if used:  # bound to this loop already; a new saver binds at its first call
        await put(saver, tid(), {"x": 1})
    for call in (
        lambda: saver.get_tuple(config("t")),
        lambda: list(saver.list(None)),
        lambda: saver.put(config("t"), generate_checkpoint(), {}, {}),
        lambda: saver.put_writes(config("t", checkpoint_id="c"), [("x", 1)], "task"),
        lambda: saver.delete_thread("t"),
        lambda: saver.delete_for_runs(["run"]),
        lambda: saver.copy_thread("t", "u"),
        lambda: saver.prune(["t"]),
        lambda: saver.get_delta_channel_history(config=config("t"), channels=["x"]),
    ):
        with pytest.raises(asyncio.InvalidStateError, match=r"await saver\.a") as info:
            call()
        from snapstate import UsageError

        assert isinstance(info.value, UsageError)


@kinds("sqlite-async")
async def test_sync_call_without_a_running_loop_raises(kind: str, make_saver: MakeSaver) -> None:
    saver = await make_saver(kind)
    await put(saver, tid(), {"x": 1})
    loop = asyncio.new_event_loop()
    saver._loop = loop  # the loop it works on is not running (closed, in real programs)
    try:
        from snapstate import ConfigurationError

        with pytest.raises(ConfigurationError, match="running"):
            await asyncio.to_thread(saver.get_tuple, config("t"))
    finally:
        loop.close()


# -- LangGraph serializers -----------------------------------------------------------------------


class XorCipher:
    """A stand-in for AES (pycryptodome is not a test dependency): enough to hide plaintext."""

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        return "xor", bytes(b ^ 0x5A for b in plaintext)

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        assert ciphername == "xor"
        return bytes(b ^ 0x5A for b in ciphertext)


async def test_serde_keeps_a_langgraph_serializer(tmp_path: Any) -> None:
    from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

    serde = EncryptedSerializer(XorCipher())
    secret = "a secret the file must not show " * 4
    with SqliteSaver.from_conn_string(str(tmp_path / "enc.db"), serde=serde) as saver:
        assert saver.serde is serde
        cid = await put(saver, "t", {"x": secret})
        await saver.aput_writes(config("t", checkpoint_id=cid), [("x", secret)], "task")
        got = saver.get_tuple(config("t"))
        assert got.checkpoint["channel_values"] == {"x": secret}
        assert got.pending_writes == [("task", "x", secret)]
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert secret.encode()[:20] not in raw


def test_serde_reads_and_writes_what_the_saver_stores() -> None:
    from langchain_core.messages import AIMessage
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
    from langgraph.types import Send

    saver = InMemorySaver()
    value = {"messages": [AIMessage("hi", id="m1")], "send": Send("node", {"x": 1})}
    tag, data = saver.serde.dumps_typed(value)
    assert tag == "snapstate" and saver.codec.decode(data) == value
    assert saver.serde.loads_typed((tag, data)) == value
    # Values LangGraph's serializer wrote (tags "msgpack", "null", ...) read as well.
    assert saver.serde.loads_typed(JsonPlusSerializer().dumps_typed(value)) == value


@kinds(*ALL_KINDS)
async def test_langgraph_and_langchain_types_come_back_as_themselves(
    kind: str, make_saver: MakeSaver
) -> None:
    from langchain_core.messages import AIMessage, HumanMessage, RemoveMessage, ToolMessage
    from langgraph.types import Command, Interrupt, Overwrite, Send

    values: dict[str, Any] = {
        "messages": [
            HumanMessage("hi", id="h"),
            AIMessage("", id="a", tool_calls=[{"name": "t", "args": {"q": 1}, "id": "c"}]),
            ToolMessage("42", tool_call_id="c", id="t"),
            RemoveMessage(id="h"),
        ],
        "command": Command(resume={"answer": "yes"}, goto=Send("node", {"x": 1})),
        "interrupt": Interrupt(value={"question": "ok?"}, id="i-1"),
        "overwrite": Overwrite([1, 2]),
    }
    writer = await make_saver(kind)
    reader = writer if kind == "memory" else await make_saver(kind)
    t = tid()
    cid = await put(writer, t, values)
    await writer.aput_writes(
        config(t, checkpoint_id=cid), [(k, v) for k, v in values.items()], "task"
    )
    got = await reader.aget_tuple(config(t))
    assert got.checkpoint["channel_values"] == values
    for key, value in values.items():
        assert type(got.checkpoint["channel_values"][key]) is type(value)
    assert [type(m) for m in got.checkpoint["channel_values"]["messages"]] == [
        HumanMessage,
        AIMessage,
        ToolMessage,
        RemoveMessage,
    ]
    assert [(w[1], w[2]) for w in got.pending_writes] == list(values.items())
    assert type(got.pending_writes[1][2].goto) is Send


@dataclasses.dataclass
class Payload:
    x: int


def test_serde_never_runs_code_named_by_foreign_bytes() -> None:
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    foreign = JsonPlusSerializer(allowed_msgpack_modules=True).dumps_typed(Payload(1))
    # LangGraph's permissive serializer rebuilds (imports and calls) the class it names ...
    assert JsonPlusSerializer(allowed_msgpack_modules=True).loads_typed(foreign) == Payload(1)
    # ... the saver's serde does not.
    assert not isinstance(InMemorySaver().serde.loads_typed(foreign), Payload)


# -- factories -----------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["sync", "async"])
async def test_sqlite_from_conn_string_opens_and_closes_a_saver(tmp_path: Path, api: str) -> None:
    # LangGraph's factories: a context manager (async for AsyncSqliteSaver) on a file path.
    from snapstate import SnapstateError
    from snapstate.langgraph import AsyncSqliteSaver

    path = str(tmp_path / "factory.db")
    t = tid()
    if api == "sync":
        with SqliteSaver.from_conn_string(path) as saver:
            assert isinstance(saver, SqliteSaver)
            saver.setup()
            cid = await put(saver, t, {"x": 1})
        with pytest.raises(SnapstateError, match="closed"):
            saver.get_tuple(config(t))
        with SqliteSaver.from_conn_string(path) as again:
            got = again.get_tuple(config(t))
    else:
        async with AsyncSqliteSaver.from_conn_string(path) as asaver:
            assert isinstance(asaver, AsyncSqliteSaver)
            await asaver.setup()
            cid = await put(asaver, t, {"x": 1})
        with pytest.raises(SnapstateError, match="closed"):
            await asaver.aget_tuple(config(t))
        async with AsyncSqliteSaver.from_conn_string(path) as aagain:
            got = await aagain.aget_tuple(config(t))
    assert got is not None and got.checkpoint["id"] == cid
    assert got.checkpoint["channel_values"] == {"x": 1}
