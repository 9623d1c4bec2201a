"""``LANGGRAPH_STRICT_MSGPACK``: only built-in types and the graph's own schema types load.

LangGraph reads the variable once, at import; its ``compile()`` then hands the saver the types
of the graph's schemas through ``with_allowlist``. The saver reads the variable when it is made
and uses a strict codec.
"""

from __future__ import annotations

import dataclasses
import operator
import uuid
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph._internal import _serde as langgraph_serde
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint
from langgraph.graph import START, StateGraph

from snapstate import EncodeError
from snapstate.errors import UnregisteredTypeError

from .conftest import MakeSaver, kinds


@dataclasses.dataclass
class Note:
    text: str
    score: float


class Opaque:
    """Neither a dataclass nor a model: stored only once registered."""

    def __init__(self) -> None:
        self.x = 1


class State(TypedDict):
    notes: Annotated[list[Note], operator.add]
    chat: Annotated[list[Any], operator.add]


def take_note(state: State) -> dict[str, Any]:
    n = len(state["notes"])
    return {"notes": [Note(f"note {n}", n / 2)], "chat": [AIMessage(f"noted {n}")]}


@pytest.fixture
def strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANGGRAPH_STRICT_MSGPACK", "true")
    monkeypatch.setattr(langgraph_serde, "STRICT_MSGPACK_ENABLED", True)


@kinds("memory", "sqlite", "sqlite-async")
async def test_strict_mode_loads_the_graphs_types_only(
    kind: str, strict: None, make_saver: MakeSaver
) -> None:
    saver = await make_saver(kind)
    assert saver.codec.strict
    b = StateGraph(State)
    b.add_node("take_note", take_note)
    b.add_edge(START, "take_note")
    graph = b.compile(checkpointer=saver)
    # compile() asked for the schema's types: the graph runs on an allowlisted copy.
    assert graph.checkpointer is not saver and graph.checkpointer.codec.strict
    cfg = {"configurable": {"thread_id": str(uuid.uuid4())}}
    inp = {"notes": [Note("first", 1.0)], "chat": [HumanMessage("hi")]}
    if kind.endswith("-async"):
        await graph.ainvoke(inp, cfg)
        state = await graph.aget_state(cfg)
    else:
        graph.invoke(inp, cfg)
        state = graph.get_state(cfg)
    assert state.values["notes"] == [Note("first", 1.0), Note("note 1", 0.5)]
    assert [type(m) for m in state.values["chat"]] == [HumanMessage, AIMessage]

    # The saver itself was not widened: a type outside its allowlist is refused.
    cp = generate_checkpoint(
        channel_values={"notes": [Note("x", 0)]}, channel_versions={"notes": 1}
    )
    config = {"configurable": {"thread_id": "other", "checkpoint_ns": ""}}
    with pytest.raises(EncodeError, match="Note"):
        await saver.aput(config, cp, {}, {"notes": 1})


def test_without_the_variable_the_codec_is_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from snapstate.codec import default_codec, register
    from snapstate.langgraph import InMemorySaver, SqliteSaver

    monkeypatch.delenv("LANGGRAPH_STRICT_MSGPACK", raising=False)
    with SqliteSaver.from_conn_string(str(tmp_path / "x.db")) as saver:
        assert saver.codec is default_codec
    # The in-memory saver does not compress; it loads what the default codec loads.
    memory = InMemorySaver()
    assert not memory.codec.strict and memory.codec.compress_threshold is None
    register(Opaque)
    cp = generate_checkpoint(channel_values={"o": Opaque()}, channel_versions={"o": 1})
    cfg = memory.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}, cp, {}, {"o": 1})
    assert memory.get_tuple(cfg).checkpoint["channel_values"]["o"].x == 1


@kinds("sqlite", "sqlite-async", "postgres")
async def test_a_strict_saver_loads_stored_types_only_when_allowed(
    kind: str, make_saver: MakeSaver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Strict mode is about loading: bytes stored by a saver without it (before the variable was
    # set) that name a type outside the allowlist are refused, and load through a copy that
    # allows the type, as compile() makes for the graph's schemas.
    monkeypatch.delenv("LANGGRAPH_STRICT_MSGPACK", raising=False)
    plain = await make_saver(kind)
    assert not plain.codec.strict
    cp = generate_checkpoint(
        channel_values={"notes": [Note("kept", 0.5)]}, channel_versions={"notes": 1}
    )
    cfg = {"configurable": {"thread_id": str(uuid.uuid4()), "checkpoint_ns": ""}}
    stored = await plain.aput(cfg, cp, {}, {"notes": 1})
    monkeypatch.setenv("LANGGRAPH_STRICT_MSGPACK", "true")
    monkeypatch.setattr(langgraph_serde, "STRICT_MSGPACK_ENABLED", True)
    strict = await make_saver(kind)
    assert strict.codec.strict
    with pytest.raises(UnregisteredTypeError, match="Note"):
        await strict.aget_tuple(stored)
    allowed = strict.with_allowlist([(Note.__module__, "Note")])
    got = await allowed.aget_tuple(stored)
    assert got is not None and got.checkpoint["channel_values"] == {"notes": [Note("kept", 0.5)]}
