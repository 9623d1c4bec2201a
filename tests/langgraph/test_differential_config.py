"""The differential state machine of ``test_differential.py``, with two more kinds of call.

``test_differential.py`` compares snapstate's savers with LangGraph's ``InMemorySaver`` on random
call sequences, but every ``put`` there makes a new checkpoint, and the config of each carries
only a user and a run id in ``configurable``. Two behaviours were never compared:

- ``put`` of a checkpoint id already stored, which LangGraph's savers treat as an upsert (new
  values, new metadata, new parent; the pending writes stay);
- metadata merged from the config: ``config["metadata"]`` and ``configurable`` with LangGraph's
  excluded keys, ``__``-prefixed keys, NUL characters, values that are not plain, and the
  legacy ``"writes"`` key, which LangGraph's Postgres saver (and snapstate) drop.

The reference merges metadata as LangGraph's Postgres saver does
(``get_serializable_checkpoint_metadata``); its ``InMemorySaver`` keeps ``"writes"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule
from langgraph.checkpoint.base import get_serializable_checkpoint_metadata

from snapstate import langgraph as ours

from .test_differential import (
    CHANNELS,
    RUNS,
    TAGS,
    Differential,
    Reference,
    channel_value,
    messages,
    namespaces,
    run,
    threads,
)

#: Keys a config may carry: some merged, some LangGraph's own (never merged), some internal.
CONFIG_KEYS = (
    "tag",
    "user",
    "step",
    "source",
    "note",
    "writes",
    "run_id",
    "langgraph_node",
    "langgraph_step",
    "checkpoint_map",
    "__pregel_scratch",
)
NUL_TEXT = st.text(alphabet="ab\x00", max_size=4)
config_values = st.one_of(
    NUL_TEXT,
    st.sampled_from(("ann", "bob")),
    st.integers(-1000, 1000),
    st.booleans(),
    # Below 1e15: PostgreSQL's JSONB prints a float of 1e16 and more without a fraction, so
    # it reads back as an int (LangGraph's Postgres saver stores metadata the same way).
    st.floats(-1e15, 1e15, allow_nan=False),
    st.none(),
    st.lists(st.integers(0, 3), max_size=2),
)
config_dicts = st.dictionaries(st.sampled_from(CONFIG_KEYS), config_values, max_size=4)


class MergingReference(Reference):
    """LangGraph's ``InMemorySaver`` storing the metadata LangGraph's Postgres saver stores."""

    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        merged = get_serializable_checkpoint_metadata(config, metadata)
        conf = config["configurable"]
        bare = {
            "configurable": {
                k: conf[k] for k in ("thread_id", "checkpoint_ns", "checkpoint_id") if k in conf
            }
        }
        return super().put(bare, checkpoint, merged, new_versions)


class ConfigDifferential(Differential):
    def __init__(self) -> None:
        super().__init__()
        self.ref = MergingReference()

    @rule(
        thread=threads,
        ns=namespaces,
        changes=st.dictionaries(st.sampled_from(CHANNELS), channel_value, max_size=2),
        from_metadata=config_dicts,
        from_configurable=config_dicts,
        given_writes=st.booleans(),
        note=NUL_TEXT,
        run=st.sampled_from(RUNS),
    )
    def put_with_config_metadata(
        self,
        thread: str,
        ns: str,
        changes: dict[str, Any],
        from_metadata: dict[str, Any],
        from_configurable: dict[str, Any],
        given_writes: bool,
        note: str,
        run: str | None,
    ) -> None:
        ids = self.ids.setdefault((thread, ns), [])
        parent = ids[-1] if ids else None
        cp = self.next_checkpoint(parent)
        new_versions = self.change(cp, changes)
        metadata: dict[str, Any] = {"source": "loop", "step": len(ids), "note": note}
        if given_writes:
            metadata["writes"] = {"node": {"channel": [1, 2]}}
        config = self.config(thread, ns, parent, **from_configurable)
        config["metadata"] = dict(from_metadata)
        if run is not None:
            config["metadata"]["run_id"] = run
        if self.both("put", thread, (cp["id"], parent), config, cp, metadata, new_versions):
            ids.append(cp["id"])
            self.had.setdefault(thread, set()).add(cp["id"])
            self.checkpoints[cp["id"]] = cp
            # delete_for_runs goes by the merged run id, wherever it came from.
            merged = get_serializable_checkpoint_metadata(config, metadata)
            self.runs[cp["id"]] = merged.get("run_id")

    @precondition(lambda self: any(self.ids.values()))
    @rule(
        data=st.data(),
        changes=st.dictionaries(st.sampled_from(CHANNELS), channel_value, max_size=2),
        append=st.lists(messages, max_size=2),
        tag=st.sampled_from(TAGS),
        run=st.sampled_from(RUNS),
        new_parent=st.booleans(),
    )
    def put_again(
        self,
        data: st.DataObject,
        changes: dict[str, Any],
        append: list[Any],
        tag: str,
        run: str | None,
        new_parent: bool,
    ) -> None:
        """``put`` of a stored checkpoint id, with new values and metadata (and a parent)."""
        thread, ns = data.draw(st.sampled_from(sorted(k for k, ids in self.ids.items() if ids)))
        ids = self.ids[(thread, ns)]
        checkpoint_id = data.draw(st.sampled_from(ids))
        stored = self.ref.storage[self.thread(thread)][ns].get(checkpoint_id)
        parent = stored[2] if stored is not None else None
        if new_parent:
            older = [i for i in ids if i < checkpoint_id]
            parent = data.draw(st.sampled_from(older)) if older else None
        cp = dict(self.checkpoints[checkpoint_id])
        cp["channel_values"] = dict(cp["channel_values"])
        cp["channel_versions"] = dict(cp["channel_versions"])
        if append:
            old = cp["channel_values"].get("messages")
            changes["messages"] = (old if isinstance(old, list) else []) + append
        new_versions = self.change(cp, changes)
        metadata = {"source": "update", "step": ids.index(checkpoint_id), "tag": tag}
        extra = {"run_id": run} if run is not None else {}
        config = self.config(thread, ns, parent, **extra)
        if self.both("put", thread, (checkpoint_id, parent), config, cp, metadata, new_versions):
            self.checkpoints[checkpoint_id] = cp
            self.runs[checkpoint_id] = run


def test_memory() -> None:
    with ours.InMemorySaver() as saver:
        run(saver, 25, ConfigDifferential)


def test_sqlite(tmp_path: Path) -> None:
    saver = ours.SqliteSaver(tmp_path / "store.db")
    try:
        run(saver, 15, ConfigDifferential)
    finally:
        saver.close()


@pytest.mark.postgres
def test_postgres(pg_dsn: str, pg_schema: str) -> None:
    saver = ours.PostgresSaver(pg_dsn, schema=pg_schema)
    try:
        run(saver, 10, ConfigDifferential)
    finally:
        saver.close()
