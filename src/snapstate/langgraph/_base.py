"""What every saver shares: the LangGraph API mapped onto a snapstate engine.

:class:`SyncSaver` drives a :class:`~snapstate.Checkpointer`. Its async methods run the sync
ones, inline when the backend never blocks (memory) and in a worker thread otherwise.

:class:`AsyncSaver` drives an :class:`~snapstate.AsyncCheckpointer`. Its sync methods run the
async ones on the event loop the saver works on, from another thread. Called from that loop's
own thread they raise at once: blocking the loop on work the loop itself must do would hang
forever.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, TypeVar

import msgspec
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.base import Checkpoint as LGCheckpoint
from langgraph.checkpoint.serde.base import SerializerProtocol, maybe_add_typed_methods

from .._engine import AsyncCheckpointer, Checkpointer
from ..backends import AsyncBackend, Backend, CheckpointRow, ListQuery, WriteRow
from ..codec import Codec
from ..errors import ConfigurationError, InvalidArgumentError, UsageError
from . import _convert as cv
from ._serde import CodecSerde, SerdeCodec, codec_with_allowlist, default_saver_codec

__all__ = ["SyncSaver", "AsyncSaver", "LoopThreadError"]

T = TypeVar("T")


class LoopThreadError(UsageError, asyncio.InvalidStateError):
    """A synchronous method of an async saver was called from its event loop's thread.

    Also an ``asyncio.InvalidStateError``, which LangGraph's async savers raise in this case.
    """


class _Shared:
    """What a saver and its ``with_allowlist`` clones share: the backend and their engines."""

    def __init__(
        self, backend: AsyncBackend | Backend | None, engine_options: Mapping[str, Any]
    ) -> None:
        self.backend = backend
        self.engine_options = dict(engine_options)
        self.engines: list[Any] = []
        #: Called after the engines close: what the saver opened itself (a connection).
        self.on_close: list[Callable[[], None]] = []
        self.closed = False

    def release(self) -> None:
        for close in self.on_close:
            close()


class _SaverBase(BaseCheckpointSaver[str]):
    _codec: Codec
    _shared: _Shared

    #: Whether the default codec compresses values (not worth it for values kept in memory).
    _compress = True

    def _init_codec(self, serde: SerializerProtocol | None, codec: Codec | None) -> None:
        if serde is not None and codec is not None:
            raise ConfigurationError(
                "pass serde= (a LangGraph serializer) or codec= (a snapstate codec), not both"
            )
        if serde is not None:
            serde = maybe_add_typed_methods(serde)
            self._codec = SerdeCodec(serde)
            BaseCheckpointSaver.__init__(self, serde=serde)
        else:
            self._codec = (
                codec if codec is not None else default_saver_codec(compress=self._compress)
            )
            BaseCheckpointSaver.__init__(self, serde=CodecSerde(self._codec))

    @property
    def codec(self) -> Codec:
        """The snapstate codec values are stored with."""
        return self._codec

    def get_next_version(self, current: str | int | float | None, channel: None) -> str:  # type: ignore[override]
        """The next channel version: LangGraph's ``"<32-digit counter>.<random>"`` scheme."""
        return cv.next_version(current)

    def with_allowlist(self, extra_allowlist: Collection[tuple[str, ...]]) -> _SaverBase:
        """A shallow copy whose codec also loads the types ``extra_allowlist`` names.

        LangGraph's ``compile()`` calls this under ``LANGGRAPH_STRICT_MSGPACK`` with the types
        of the graph's schemas. The copy shares this saver's storage.
        """
        codec = codec_with_allowlist(self._codec, extra_allowlist)
        if codec is self._codec:
            return self
        clone = copy.copy(self)
        clone._codec = codec
        clone.serde = codec.serde if isinstance(codec, SerdeCodec) else CodecSerde(codec)
        clone._rebind()
        return clone

    def _rebind(self) -> None:
        """Give a clone its own engine on the shared backend (it has a new codec)."""
        raise NotImplementedError  # pragma: no cover - every saver class overrides it


def _prune_args(thread_ids: Sequence[str], strategy: str) -> list[str]:
    if isinstance(thread_ids, (str, bytes)):
        raise InvalidArgumentError("thread_ids must be a sequence of thread ids, not a str")
    if strategy not in ("keep_latest", "delete", "delete_all"):
        raise InvalidArgumentError(
            f"unknown prune strategy {strategy!r}: use 'keep_latest', 'delete' or 'delete_all'"
        )
    return [cv.thread_text(t, "a thread id in thread_ids") for t in thread_ids]


def _latest(rows: Iterable[Any]) -> dict[str, Any]:
    """Each namespace's latest checkpoint row."""
    latest: dict[str, Any] = {}
    for r in rows:
        if r.checkpoint_id > getattr(latest.get(r.namespace), "checkpoint_id", ""):
            latest[r.namespace] = r
    return latest


def _delta_heads(rows: Iterator[Any] | list[Any]) -> list[str]:
    """Namespaces whose latest checkpoint still depends on older ones through a DeltaChannel."""
    out = []
    for ns, r in _latest(rows).items():
        meta = msgspec.json.decode(r.metadata)
        if isinstance(meta, dict) and meta.get(cv.DELTA_COUNTERS):
            out.append(ns)
    return out


def _finished_calls(rows: Sequence[Any]) -> set[str]:
    """Namespaces of subgraph calls that ``prune(strategy="keep_latest")`` deletes whole, as
    LangGraph's Postgres saver does: a call's namespace has its task id after a ``":"`` (a
    ``checkpointer=True`` subgraph's has none, and its state outlives each call), and it goes
    with the root checkpoint it started from (``metadata["parents"][""]``), once that one is
    saved and is not the root's latest. (Runs save in the background: a call's checkpoints can
    commit before the root checkpoint it started from.)"""
    latest = _latest(rows)
    roots = {r.checkpoint_id for r in rows if r.namespace == ""}
    root_head = getattr(latest.get(""), "checkpoint_id", None)
    calls = set()
    for ns, r in latest.items():
        if ":" not in ns:
            continue
        parents = msgspec.json.decode(r.metadata).get("parents")
        root = parents.get("") if isinstance(parents, dict) else None
        if root in roots and root != root_head:
            calls.add(ns)
    return calls


def _refuse_delta(thread_id: str, namespaces: list[str]) -> None:
    if namespaces:
        where = ", ".join(repr(n) for n in sorted(namespaces))
        raise InvalidArgumentError(
            f"prune(strategy='keep_latest') would cut the history a DeltaChannel of thread "
            f"{thread_id!r} rebuilds its value from (namespaces {where}); nothing was pruned",
            hint="prune such threads with strategy='delete', or run the graph until its "
            "DeltaChannels take a snapshot",
        )


# ---------------------------------------------------------------------------------------------
# Synchronous savers
# ---------------------------------------------------------------------------------------------


class SyncSaver(_SaverBase):
    """A LangGraph saver over the synchronous engine."""

    #: Run the async methods in the caller's loop (the backend never blocks) or in a thread.
    _inline_async: bool = False

    def _init_engine(
        self,
        backend: Backend,
        *,
        serde: SerializerProtocol | None,
        codec: Codec | None,
        options: Mapping[str, Any],
    ) -> None:
        self._init_codec(serde, codec)
        self._shared = _Shared(backend, options)
        self._rebind()

    def _rebind(self) -> None:
        backend = self._shared.backend
        assert isinstance(backend, Backend)
        self._engine = Checkpointer(backend, codec=self._codec, **self._shared.engine_options)
        self._shared.engines.append(self._engine)

    @property
    def checkpointer(self) -> Checkpointer:
        """The snapstate engine under this saver."""
        return self._engine

    # -- LangGraph's API -----------------------------------------------------------------------

    def setup(self) -> None:
        """Create or upgrade the storage schema. Also done on first use."""
        self._engine.setup()

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id, namespace, checkpoint_id = cv.target_of(config)
        snap = self._engine.get(thread_id, namespace, checkpoint_id)
        return None if snap is None else cv.to_tuple(snap)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        scope = cv.list_scope(config, before)
        for snap in self._engine.list(filter=filter, limit=limit, **scope):
            yield cv.to_tuple(snap)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: LGCheckpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        raw_thread, thread_id, namespace = cv.thread_of(config)
        self._engine.put(
            cv.to_engine(checkpoint),
            thread_id=thread_id,
            namespace=namespace,
            parent_id=config["configurable"].get("checkpoint_id"),
            metadata=cv.merged_metadata(config, metadata),
            changed=new_versions,
        )
        return cv.saved_config(raw_thread, namespace, checkpoint["id"])

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if not writes:
            return
        thread_id, namespace, checkpoint_id = cv.writes_target(config)
        indices, replace = cv.write_indices(writes)
        self._engine.put_writes(
            writes,
            thread_id=thread_id,
            namespace=namespace,
            checkpoint_id=checkpoint_id,
            task_id=task_id,
            task_path=task_path,
            indices=indices,
            replace=replace,
        )

    def delete_thread(self, thread_id: str) -> None:
        self._engine.delete_thread(cv.thread_text(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) that the given runs saved."""
        self._engine.delete_runs(run_ids)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy a thread, every namespace and pending write, keeping its checkpoint ids."""
        self._engine.copy_thread(
            cv.thread_text(source_thread_id, "source_thread_id"),
            cv.thread_text(target_thread_id, "target_thread_id"),
        )

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Shrink threads.

        ``"keep_latest"`` keeps each namespace's latest checkpoint with its pending writes and
        the values it reaches, and deletes whole the namespaces of subgraph calls that finished
        (see ``_finished_calls``); ``"delete"`` (or ``"delete_all"``) deletes the threads. A
        thread whose latest checkpoint rebuilds a ``DeltaChannel`` from older ones is refused by
        ``"keep_latest"`` (with an error naming it, before anything is deleted).
        """
        ids = _prune_args(thread_ids, strategy)
        if strategy == "keep_latest":
            self._engine.flush()
            for tid in ids:
                rows = self._engine.ready().list_checkpoints(ListQuery(thread_id=tid))
                _refuse_delta(tid, _delta_heads(rows))
        self._engine.prune(
            ids,
            strategy=strategy,  # type: ignore[arg-type]
            drop_namespaces=_finished_calls,
        )

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """A ``DeltaChannel``'s stored seed and the writes since, for each channel.

        Reads checkpoint rows without their state, the values of the few ancestors that may
        hold a seed, and the ancestors' writes in one query (see ``DeltaHistory``).
        """
        if not channels:
            return {}
        thread_id, namespace, checkpoint_id = cv.target_of(config)
        engine = self._engine
        engine.flush()  # rows are read from the backend directly: nothing may wait in a queue
        backend = engine.ready()
        target = backend.get_checkpoint(thread_id, namespace, checkpoint_id)
        older = (
            backend.list_checkpoints(
                ListQuery(thread_id=thread_id, namespace=namespace, before=target.checkpoint_id)
            )
            if target is not None and target.parent_id is not None
            else ()
        )
        plan = cv.DeltaHistory(channels, target, older)
        for index, row, maybe in plan.candidates():
            snap = engine.get(thread_id, namespace, row.checkpoint_id)
            plan.found(index, maybe, snap.checkpoint.channel_values if snap else {})
        ids = plan.write_ids()
        rows = backend.get_writes(thread_id, namespace, ids) if ids else []
        return plan.result(rows, self._write_value)

    def _write_value(self, w: WriteRow) -> Any:
        return self._codec.decode(
            w.data,
            where=f"write {w.idx} to channel {w.channel!r} of checkpoint {w.checkpoint_id!r}",
        )

    # -- the async twins -----------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._inline_async:
            return fn(*args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._call(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        def collect() -> list[CheckpointTuple]:
            return list(self.list(config, filter=filter, before=before, limit=limit))

        for item in await self._call(collect):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: LGCheckpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._call(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._call(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await self._call(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._call(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._call(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._call(self.prune, thread_ids, strategy=strategy)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await self._call(self.get_delta_channel_history, config=config, channels=channels)

    # -- lifetime ------------------------------------------------------------------------------

    def flush(self) -> None:
        """Wait until every queued write has committed (only ``durability="batched"`` queues)."""
        for engine in list(self._shared.engines):
            engine.flush()

    def close(self) -> None:
        """Commit what is queued and release the storage. The saver is unusable afterwards."""
        shared = self._shared
        if shared.closed:
            return
        shared.closed = True
        engines = list(shared.engines)
        try:
            for engine in engines:
                engine.flush()
        finally:
            try:
                for engine in engines:
                    engine.close()
            finally:
                shared.release()


# ---------------------------------------------------------------------------------------------
# Asynchronous savers
# ---------------------------------------------------------------------------------------------


class AsyncSaver(_SaverBase):
    """A LangGraph saver over the asyncio engine."""

    _engine: AsyncCheckpointer | None
    _loop: asyncio.AbstractEventLoop | None

    def _init_async(
        self,
        *,
        serde: SerializerProtocol | None,
        codec: Codec | None,
        options: Mapping[str, Any],
        backend: AsyncBackend | Backend | None,
    ) -> None:
        self._init_codec(serde, codec)
        self._shared = _Shared(backend, options)
        self._engine = None
        self._open_lock: asyncio.Lock | None = None
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        if backend is not None:
            self._rebind()

    def _rebind(self) -> None:
        backend = self._shared.backend
        if backend is None:
            self._engine = None  # made once the backend is known (see _open_backend)
            return
        self._engine = AsyncCheckpointer(backend, codec=self._codec, **self._shared.engine_options)
        self._shared.engines.append(self._engine)

    async def _open_backend(self) -> AsyncBackend | Backend:
        """Savers that learn their backend only inside the event loop override this."""
        raise ConfigurationError("this saver has no storage")  # pragma: no cover

    async def _eng(self) -> AsyncCheckpointer:
        self._loop = asyncio.get_running_loop()
        if self._engine is not None:
            return self._engine
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._shared.backend is None:
                self._shared.backend = await self._open_backend()
            if self._engine is None:
                self._rebind()
        assert self._engine is not None
        return self._engine

    @property
    def checkpointer(self) -> AsyncCheckpointer | None:
        """The snapstate engine under this saver (None until its storage is opened)."""
        return self._engine

    # -- LangGraph's async API -----------------------------------------------------------------

    async def setup(self) -> None:
        """Create or upgrade the storage schema. Also done on first use."""
        await (await self._eng()).setup()

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id, namespace, checkpoint_id = cv.target_of(config)
        snap = await (await self._eng()).get(thread_id, namespace, checkpoint_id)
        return None if snap is None else cv.to_tuple(snap)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        scope = cv.list_scope(config, before)
        engine = await self._eng()
        async for snap in engine.list(filter=filter, limit=limit, **scope):
            yield cv.to_tuple(snap)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: LGCheckpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        raw_thread, thread_id, namespace = cv.thread_of(config)
        await (await self._eng()).put(
            cv.to_engine(checkpoint),
            thread_id=thread_id,
            namespace=namespace,
            parent_id=config["configurable"].get("checkpoint_id"),
            metadata=cv.merged_metadata(config, metadata),
            changed=new_versions,
        )
        return cv.saved_config(raw_thread, namespace, checkpoint["id"])

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if not writes:
            return
        thread_id, namespace, checkpoint_id = cv.writes_target(config)
        indices, replace = cv.write_indices(writes)
        await (await self._eng()).put_writes(
            writes,
            thread_id=thread_id,
            namespace=namespace,
            checkpoint_id=checkpoint_id,
            task_id=task_id,
            task_path=task_path,
            indices=indices,
            replace=replace,
        )

    async def adelete_thread(self, thread_id: str) -> None:
        await (await self._eng()).delete_thread(cv.thread_text(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) that the given runs saved."""
        await (await self._eng()).delete_runs(run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy a thread, every namespace and pending write, keeping its checkpoint ids."""
        await (await self._eng()).copy_thread(
            cv.thread_text(source_thread_id, "source_thread_id"),
            cv.thread_text(target_thread_id, "target_thread_id"),
        )

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """See :meth:`SyncSaver.prune`."""
        ids = _prune_args(thread_ids, strategy)
        engine = await self._eng()
        if strategy == "keep_latest":
            await engine.flush()
            for tid in ids:
                rows = await (await engine.ready()).list_checkpoints(ListQuery(thread_id=tid))
                _refuse_delta(tid, _delta_heads(rows))
        await engine.prune(
            ids,
            strategy=strategy,  # type: ignore[arg-type]
            drop_namespaces=_finished_calls,
        )

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """See :meth:`SyncSaver.get_delta_channel_history`."""
        if not channels:
            return {}
        thread_id, namespace, checkpoint_id = cv.target_of(config)
        engine = await self._eng()
        await engine.flush()  # rows are read from the backend directly
        backend = await engine.ready()
        target = await backend.get_checkpoint(thread_id, namespace, checkpoint_id)
        older: list[CheckpointRow] = (
            await backend.list_checkpoints(
                ListQuery(thread_id=thread_id, namespace=namespace, before=target.checkpoint_id)
            )
            if target is not None and target.parent_id is not None
            else []
        )
        plan = cv.DeltaHistory(channels, target, older)
        for index, row, maybe in plan.candidates():
            snap = await engine.get(thread_id, namespace, row.checkpoint_id)
            plan.found(index, maybe, snap.checkpoint.channel_values if snap else {})
        ids = plan.write_ids()
        rows = await backend.get_writes(thread_id, namespace, ids) if ids else []
        return plan.result(rows, self._write_value)

    def _write_value(self, w: WriteRow) -> Any:
        return self._codec.decode(
            w.data,
            where=f"write {w.idx} to channel {w.channel!r} of checkpoint {w.checkpoint_id!r}",
        )

    # -- the sync twins: run on the saver's event loop, from another thread -------------------

    def _bridge(self, name: str, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        loop = self._loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and (loop is None or running is loop):
            raise LoopThreadError(
                f"{type(self).__name__}.{name}() was called from the thread of the event loop "
                "the saver works on; waiting there would block that loop forever",
                hint=f"use `await saver.a{name}(...)` (or `await graph.ainvoke(...)`), or call "
                "the synchronous method from another thread",
            )
        if loop is None or loop.is_closed() or not loop.is_running():
            raise ConfigurationError(
                f"{type(self).__name__}.{name}() needs the event loop the saver works on to be "
                "running in another thread, and none is",
                hint="use the async methods inside that loop, or the synchronous saver class "
                "(SqliteSaver, PostgresSaver) in synchronous code",
            )
        return asyncio.run_coroutine_threadsafe(make(), loop).result()

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._bridge("get_tuple", lambda: self.aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        async def collect() -> list[CheckpointTuple]:
            return [t async for t in self.alist(config, filter=filter, before=before, limit=limit)]

        yield from self._bridge("list", collect)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: LGCheckpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._bridge("put", lambda: self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._bridge("put_writes", lambda: self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._bridge("delete_thread", lambda: self.adelete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._bridge("delete_for_runs", lambda: self.adelete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._bridge("copy_thread", lambda: self.acopy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._bridge("prune", lambda: self.aprune(thread_ids, strategy=strategy))

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return self._bridge(
            "get_delta_channel_history",
            lambda: self.aget_delta_channel_history(config=config, channels=channels),
        )

    # -- lifetime ------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait until every queued write has committed (only ``durability="batched"`` queues)."""
        for engine in list(self._shared.engines):
            await engine.flush()

    async def aclose(self) -> None:
        """Commit what is queued and release the storage. The saver is unusable afterwards."""
        shared = self._shared
        if shared.closed:
            return
        shared.closed = True
        engines = list(shared.engines)
        try:
            for engine in engines:
                await engine.flush()
        finally:
            try:
                for engine in engines:
                    await engine.aclose()
            finally:
                shared.release()
