"""ASV: the snapshot codec beside LangGraph's JsonPlusSerializer, pickle and raw msgspec + lz4.

``asv run --python=same --quick -b bench_codec``. Implementations:

* ``native`` / ``python``: snapstate's codec, compiled and pure-Python (lz4 above 1 KiB);
  ``native-nocomp`` / ``python-nocomp`` with compression off;
* ``jsonplus``: LangGraph's ``JsonPlusSerializer`` (``dumps_typed`` / ``loads_typed``), the
  anchor;
* ``pickle``: ``pickle`` at its highest protocol;
* ``msgspec+lz4`` / ``msgspec``: raw ``msgspec.msgpack`` (+ lz4), the limit. It cannot store
  typed objects, so on chat states it runs on the same conversation as plain dicts.

Datasets come from ``benchmarks/datagen.py``: chat states of 50, 100 and 500 LangChain messages
(500 to 2000 characters each), a wide dict state, 1000 plain records and a 1 MiB
semi-compressible blob.

``python -m benchmarks.bench_codec`` prints the measurement behind the compression threshold
(``snapstate.codec._format.COMPRESS_THRESHOLD``).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from . import datagen

#: name -> role in the ratio tables (see benchmarks/run.py).
IMPLS = {
    "native": "ours",
    "python": "ours",
    "native-nocomp": "ours",
    "python-nocomp": "ours",
    "jsonplus": "anchor",
    "pickle": "other",
    "msgspec+lz4": "limit",
    "msgspec": "limit",
}

#: name -> (typed value, the same data as plain JSON-like values)
DATASETS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "chat-50": lambda: (datagen.langchain_messages(50), datagen.chat_messages(50)),
    "chat-100": lambda: (datagen.langchain_messages(100), datagen.chat_messages(100)),
    "chat-500": lambda: (datagen.langchain_messages(500), datagen.chat_messages(500)),
    "wide": lambda: (datagen.wide_state(1000),) * 2,
    "plain": lambda: (datagen.plain_data(1000),) * 2,
    "blob-1MiB": lambda: (datagen.semi_compressible_blob(1 << 20),) * 2,
}


@cache
def dataset(name: str) -> tuple[Any, Any]:
    return DATASETS[name]()


Codec = tuple[Callable[[Any], Any], Callable[[Any], Any], Callable[[Any], int]]


def codec(impl: str) -> Codec:
    """(encode, decode, size of an encoded value) for an implementation."""
    if impl in ("native", "python", "native-nocomp", "python-nocomp"):
        from snapstate.codec import Codec

        c = Codec(
            impl=impl.split("-")[0],
            **({"compress_threshold": None} if impl.endswith("nocomp") else {}),
        )
        return c.encode, c.decode, len
    if impl == "jsonplus":
        from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

        s = JsonPlusSerializer()
        return s.dumps_typed, s.loads_typed, lambda t: len(t[1])
    if impl == "pickle":
        return (lambda v: pickle.dumps(v, pickle.HIGHEST_PROTOCOL)), pickle.loads, len
    import lz4.block
    import msgspec

    enc = msgspec.msgpack.Encoder()
    dec = msgspec.msgpack.Decoder()
    if impl == "msgspec":
        return enc.encode, dec.decode, len
    return (
        lambda v: lz4.block.compress(enc.encode(v)),
        lambda b: dec.decode(lz4.block.decompress(b)),
        len,
    )


def prepare(impl: str, name: str) -> tuple[Codec, Any]:
    """The codec and the value it runs on (plain data for the raw msgspec limits)."""
    typed, plain = dataset(name)
    return codec(impl), plain if impl.startswith("msgspec") else typed


class Codecs:
    """Encode, decode and stored size of each dataset, per implementation."""

    params = (list(IMPLS), list(DATASETS))
    param_names = ["impl", "dataset"]
    timeout = 300

    def setup(self, impl: str, name: str) -> None:
        (self.enc, self.dec, self.size), self.value = prepare(impl, name)
        self.blob = self.enc(self.value)

    def time_encode(self, impl: str, name: str) -> None:
        self.enc(self.value)

    def time_decode(self, impl: str, name: str) -> None:
        self.dec(self.blob)

    def time_round_trip(self, impl: str, name: str) -> None:
        self.dec(self.enc(self.value))

    def track_size(self, impl: str, name: str) -> int:
        return self.size(self.blob)

    track_size.unit = "bytes"  # type: ignore[attr-defined]


# -- the compression threshold ------------------------------------------------------------------


def sized_values(size: int) -> dict[str, Any]:
    """Realistic channel values of about ``size`` encoded bytes."""
    return {
        "chat message": datagen.chat_messages(
            1, seed=size, min_chars=max(1, size - 60), max_chars=max(1, size - 60)
        )[0],
        "wide dict": datagen.wide_state(max(1, size // 22), seed=1),
        "records": datagen.plain_data(max(1, size // 190), seed=2),
    }


THRESHOLD_SIZES = [128, 256, 512, 1024, 2048, 4096, 16384]


class CompressThreshold:
    """What lz4 saves and costs on values of a given size (the threshold's evidence)."""

    params = (THRESHOLD_SIZES, ["chat message", "wide dict", "records"])
    param_names = ["size", "kind"]

    def setup(self, size: int, kind: str) -> None:
        from snapstate.codec import Codec

        self.on = Codec(compress_threshold=0)
        self.off = Codec(compress_threshold=None)
        self.value = sized_values(size)[kind]

    def time_round_trip_lz4(self, size: int, kind: str) -> None:
        self.on.decode(self.on.encode(self.value))

    def time_round_trip_plain(self, size: int, kind: str) -> None:
        self.off.decode(self.off.encode(self.value))

    def track_saved(self, size: int, kind: str) -> float:
        return 1 - len(self.on.encode(self.value)) / len(self.off.encode(self.value))

    track_saved.unit = "fraction"  # type: ignore[attr-defined]


def _median_us(f: Callable[[], Any], n: int) -> float:
    runs = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(n):
            f()
        runs.append((time.perf_counter() - start) / n)
    return sorted(runs)[3] * 1e6


def threshold_table() -> str:
    from snapstate.codec import Codec

    on, off = Codec(compress_threshold=0), Codec(compress_threshold=None)
    lines = [
        "| size | value | bytes | with lz4 | saved | encode+decode | with lz4 |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in THRESHOLD_SIZES:
        for kind, v in sized_values(size).items():
            a, b = off.encode(v), on.encode(v)
            t_off = _median_us(lambda v=v: off.decode(off.encode(v)), 500)
            t_on = _median_us(lambda v=v: on.decode(on.encode(v)), 500)
            lines.append(
                f"| {size} | {kind} | {len(a)} | {len(b)} | {1 - len(b) / len(a):.0%} "
                f"| {t_off:.1f} us | {t_on:.1f} us |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(threshold_table())
