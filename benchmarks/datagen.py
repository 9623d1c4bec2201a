"""One deterministic generator of realistic checkpoint state, shared by benchmarks and tests.

Every function takes a ``seed`` and returns the same data for the same arguments on every
machine, so benchmark numbers and test expectations are comparable across runs.

Text is built from an English-like vocabulary, so it compresses about as well as real model
output does (lz4 ratio around 2), unlike random bytes (ratio 1) or repeated strings (ratio 100).
"""

from __future__ import annotations

import random
from typing import Any

__all__ = [
    "text",
    "chat_messages",
    "langchain_messages",
    "wide_state",
    "plain_data",
    "semi_compressible_blob",
    "agent_state",
]

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so what no "
    "said who more can them some could him into its then two may only other time new these like "
    "than first over such after most also made many before must through back years where much "
    "your way well down should because each just those people how too state good very make world "
    "still own see men work long get here between both life being under never day same another "
    "know while last might great old year off come since against go came right used take three "
    "checkpoint graph node thread channel message agent tool call result search weather function "
    "database query answer question context document retrieve summary plan step error retry"
).split()


def text(rng: random.Random, n_chars: int) -> str:
    """English-like text of exactly ``n_chars`` characters."""
    out: list[str] = []
    size = 0
    while size < n_chars:
        w = rng.choice(_WORDS)
        if rng.random() < 0.08:
            w = w.capitalize()
        if rng.random() < 0.06:
            w += rng.choice(".,;:?!")
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n_chars]


def chat_messages(
    n: int, *, seed: int = 0, min_chars: int = 500, max_chars: int = 2000
) -> list[dict[str, Any]]:
    """``n`` chat messages as plain dicts (role, content, id, tool calls on some AI turns)."""
    rng = random.Random(seed)
    msgs: list[dict[str, Any]] = []
    for i in range(n):
        role = "human" if i % 2 == 0 else "ai"
        msg: dict[str, Any] = {
            "id": f"msg-{seed}-{i:05d}",
            "role": role,
            "content": text(rng, rng.randint(min_chars, max_chars)),
        }
        if role == "ai" and rng.random() < 0.3:
            msg["tool_calls"] = [
                {
                    "id": f"call-{seed}-{i}",
                    "name": rng.choice(["search", "weather", "lookup"]),
                    "args": {"query": text(rng, 40), "limit": rng.randint(1, 20)},
                }
            ]
        msgs.append(msg)
    return msgs


def langchain_messages(
    n: int, *, seed: int = 0, min_chars: int = 500, max_chars: int = 2000
) -> list[Any]:
    """The same conversation as :func:`chat_messages`, as LangChain message objects."""
    from langchain_core.messages import AIMessage, HumanMessage

    out: list[Any] = []
    for m in chat_messages(n, seed=seed, min_chars=min_chars, max_chars=max_chars):
        if m["role"] == "human":
            out.append(HumanMessage(content=m["content"], id=m["id"]))
        else:
            out.append(
                AIMessage(
                    content=m["content"],
                    id=m["id"],
                    tool_calls=[
                        {"id": c["id"], "name": c["name"], "args": c["args"], "type": "tool_call"}
                        for c in m.get("tool_calls", [])
                    ],
                )
            )
    return out


def wide_state(n_keys: int = 200, *, seed: int = 0) -> dict[str, Any]:
    """A wide dict state: many small scalar, list and nested values."""
    rng = random.Random(seed)
    state: dict[str, Any] = {}
    for i in range(n_keys):
        kind = i % 5
        key = f"field_{i:04d}"
        if kind == 0:
            state[key] = rng.randint(-(10**9), 10**9)
        elif kind == 1:
            state[key] = rng.random() * 1000
        elif kind == 2:
            state[key] = text(rng, rng.randint(5, 80))
        elif kind == 3:
            state[key] = [rng.randint(0, 1000) for _ in range(rng.randint(0, 12))]
        else:
            state[key] = {"name": text(rng, 12), "ok": rng.random() < 0.5, "score": rng.random()}
    return state


def plain_data(n: int = 1000, *, seed: int = 0) -> list[dict[str, Any]]:
    """Plain JSON-like records: the ceiling for any encoder (no custom types)."""
    rng = random.Random(seed)
    return [
        {
            "id": i,
            "name": text(rng, 16),
            "score": rng.random(),
            "tags": [rng.choice(_WORDS) for _ in range(4)],
            "active": rng.random() < 0.5,
            "body": text(rng, 120),
        }
        for i in range(n)
    ]


def semi_compressible_blob(n_bytes: int = 1 << 20, *, seed: int = 0) -> bytes:
    """``n_bytes`` that compress about 2x: English-like text mixed with random bytes."""
    rng = random.Random(seed)
    parts: list[bytes] = []
    size = 0
    while size < n_bytes:
        if rng.random() < 0.25:
            chunk = rng.randbytes(256)
        else:
            chunk = text(rng, 768).encode()
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)[:n_bytes]


def agent_state(step: int, *, seed: int = 0, n_channels: int = 12) -> dict[str, Any]:
    """An agent's channels at ``step``: most stay the same, one or two change per step."""
    rng = random.Random(seed)
    base = {f"ch_{i:02d}": {"value": text(rng, 200), "n": i} for i in range(n_channels)}
    step_rng = random.Random(seed * 1_000_003 + step)
    for i in step_rng.sample(range(n_channels), 2):
        base[f"ch_{i:02d}"] = {"value": text(step_rng, 200), "n": step}
    return base
