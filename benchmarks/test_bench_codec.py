"""pytest-benchmark: the codec's hot paths beside JsonPlusSerializer, pickle and raw msgspec.

Run by ``make bench`` (``benchmarks/run.py`` prints the ratio tables; JsonPlusSerializer is the
anchor). ``test_codec_targets`` measures the codec's targets side by side in one process and
records the ratios in ``extra_info``:

* ``decode_x``: JsonPlusSerializer.loads_typed time / ours (decompression included), >= 4
* ``round_trip_nocomp_x``: JsonPlusSerializer encode+decode / ours with compression off, >= 4
* ``round_trip_x``: the same with compression on, >= 1.5
* ``size_fraction``: our compressed bytes / JsonPlusSerializer's, <= 0.5
* ``native_vs_python_x``: pure-Python round trip / compiled, >= 1.5
* ``plain_vs_raw``: our round trip on plain data / raw msgspec + lz4, <= 1.5

on a chat state of 100 LangChain messages of 500 to 2000 characters.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest

from .bench_codec import IMPLS, dataset, prepare

FAST = pytest.mark.benchmark(max_time=0.5, min_rounds=5)


@FAST
@pytest.mark.parametrize("impl", IMPLS)
def test_encode(benchmark: Any, impl: str) -> None:
    benchmark.group = "codec encode: chat state, 100 LangChain messages"
    (enc, _, size), value = prepare(impl, "chat-100")
    blob = benchmark(enc, value)
    benchmark.extra_info.update(role=IMPLS[impl], bytes=size(blob))


@FAST
@pytest.mark.parametrize("impl", IMPLS)
def test_decode(benchmark: Any, impl: str) -> None:
    benchmark.group = "codec decode: chat state, 100 LangChain messages"
    (enc, dec, _), value = prepare(impl, "chat-100")
    benchmark(dec, enc(value))
    benchmark.extra_info.update(role=IMPLS[impl])


@FAST
@pytest.mark.parametrize("name", ["chat-50", "chat-100", "chat-500", "wide", "plain", "blob-1MiB"])
@pytest.mark.parametrize("impl", IMPLS)
def test_round_trip(benchmark: Any, impl: str, name: str) -> None:
    benchmark.group = f"codec encode+decode: {name}"
    (enc, dec, size), value = prepare(impl, name)
    benchmark(lambda: dec(enc(value)))
    benchmark.extra_info.update(role=IMPLS[impl], bytes=size(enc(value)))


def _medians(ops: dict[str, Callable[[], Any]], rounds: int = 31) -> dict[str, float]:
    """Median seconds per call of each op, the ops alternating round by round."""
    loops = {}
    for name, op in ops.items():
        start = time.perf_counter()
        op()
        loops[name] = max(1, int(0.004 / max(time.perf_counter() - start, 1e-7)))
    times: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(rounds):
        for name, op in ops.items():
            n = loops[name]
            start = time.perf_counter()
            for _ in range(n):
                op()
            times[name].append((time.perf_counter() - start) / n)
    return {name: statistics.median(t) for name, t in times.items()}


def test_codec_targets(benchmark: Any) -> None:
    """The codec's targets, measured side by side in one run (see the module docstring)."""
    benchmark.group = "codec targets (ratios in extra_info)"
    (jp_enc, jp_dec, jp_size), chat = prepare("jsonplus", "chat-100")
    (n_enc, n_dec, _), _ = prepare("native", "chat-100")
    (nc_enc, nc_dec, _), _ = prepare("native-nocomp", "chat-100")
    (p_enc, p_dec, _), _ = prepare("python", "chat-100")
    (raw_enc, raw_dec, _), plain = prepare("msgspec+lz4", "plain")
    jp_blob, n_blob, nc_blob = jp_enc(chat), n_enc(chat), nc_enc(chat)
    plain_typed = dataset("plain")[0]

    def measure() -> dict[str, float]:
        return _medians(
            {
                "jsonplus_encode": lambda: jp_enc(chat),
                "jsonplus_decode": lambda: jp_dec(jp_blob),
                "native_encode": lambda: n_enc(chat),
                "native_decode": lambda: n_dec(n_blob),
                "nocomp_encode": lambda: nc_enc(chat),
                "nocomp_decode": lambda: nc_dec(nc_blob),
                "python_round_trip": lambda: p_dec(p_enc(chat)),
                "plain_round_trip": lambda: n_dec(n_enc(plain_typed)),
                "raw_round_trip": lambda: raw_dec(raw_enc(plain)),
            }
        )

    m = benchmark.pedantic(measure, rounds=1, iterations=1)
    jp_round = m["jsonplus_encode"] + m["jsonplus_decode"]
    native_round = m["native_encode"] + m["native_decode"]
    nocomp_round = m["nocomp_encode"] + m["nocomp_decode"]
    benchmark.extra_info.update(
        role="ours",
        jsonplus_encode_ms=m["jsonplus_encode"] * 1e3,
        jsonplus_decode_ms=m["jsonplus_decode"] * 1e3,
        native_encode_ms=m["native_encode"] * 1e3,
        native_decode_ms=m["native_decode"] * 1e3,
        nocomp_encode_ms=m["nocomp_encode"] * 1e3,
        nocomp_decode_ms=m["nocomp_decode"] * 1e3,
        python_round_trip_ms=m["python_round_trip"] * 1e3,
        decode_x=m["jsonplus_decode"] / m["native_decode"],
        round_trip_nocomp_x=jp_round / nocomp_round,
        round_trip_x=jp_round / native_round,
        size_fraction=len(n_blob) / jp_size(jp_blob),
        native_vs_python_x=m["python_round_trip"] / native_round,
        plain_vs_raw=m["plain_round_trip"] / m["raw_round_trip"],
    )
