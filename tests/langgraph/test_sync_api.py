"""The conformance suite's cases through the *sync* API of every saver.

``langgraph-checkpoint-conformance`` only calls ``aput``, ``aget_tuple``, ... This runs each of
its cases against an adapter whose async methods call the saver's sync methods in a worker
thread, so ``put``, ``get_tuple``, ``list``, ... answer the same 81 cases. For the async savers
that exercises their sync bridge onto the event loop too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.conformance import checkpointer_test, validate

from .conftest import ALL_KINDS, MakeSaver, kinds
from .test_conformance import CASES


class SyncDriven(BaseCheckpointSaver[str]):
    """Async methods that call the wrapped saver's sync methods, off the event loop."""

    def __init__(self, saver: BaseCheckpointSaver[str]) -> None:
        super().__init__()
        self.saver = saver

    def get_next_version(self, current: Any, channel: None) -> str:
        return self.saver.get_next_version(current, channel)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.saver.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        def run() -> list[CheckpointTuple]:
            it: Iterator[CheckpointTuple] = self.saver.list(
                config, filter=filter, before=before, limit=limit
            )
            return list(it)

        for item in await asyncio.to_thread(run):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.saver.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.saver.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.saver.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.saver.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.saver.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.saver.prune, thread_ids, strategy=strategy)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, Any]:
        return await asyncio.to_thread(
            self.saver.get_delta_channel_history, config=config, channels=channels
        )


@kinds(*ALL_KINDS)
async def test_conformance_cases_through_the_sync_api(
    kind: str, make_saver: MakeSaver, tmp_path: Path
) -> None:
    async def factory() -> AsyncIterator[BaseCheckpointSaver]:
        # One store for every capability: the cases use fresh thread ids.
        yield SyncDriven(await make_saver(kind))

    report = await validate(checkpointer_test(name=f"{kind} (sync API)")(factory))
    failures = {c: r.failures for c, r in report.results.items() if r.failures}
    assert report.passed_all(), failures
    for cap, expected in CASES.items():
        result = report.results[cap.value]
        assert (result.tests_passed, result.tests_failed) == (expected, 0), cap.value


@pytest.mark.parametrize("kind", ["sqlite-path"])
async def test_sqlite_saver_on_a_path(kind: str, make_saver: MakeSaver) -> None:
    # SqliteSaver(path) pools its own connections; run the cases on it as well.
    await test_conformance_cases_through_the_sync_api(kind, make_saver, Path("."))
