"""Corrupt input raises the decode error: never a crash, a hang, another exception or a wrong
value. Both implementations reach the same outcome for the same bytes."""

from __future__ import annotations

import random
import sys
from typing import Any

import lz4.block
import msgspec
import pytest
from benchmarks import datagen
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapstate.codec import Codec
from snapstate.codec import _format as F
from snapstate.codec._api import IMPLEMENTATIONS
from snapstate.errors import DecodeError

from . import samples as S

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
CODECS = [Codec(impl=name) for name in sorted(IMPLEMENTATIONS)]
REFERENCE = Codec(impl="python", compress_threshold=None)


def outcome(codec: Codec, data: bytes) -> tuple[str, Any]:
    """What decoding ``data`` gives: the value (as bytes the reference writes), or the error
    class. Any exception that is not a DecodeError fails the test."""
    try:
        value = codec.decode(data)
    except DecodeError as exc:
        return ("error", type(exc).__name__)
    try:
        return ("value", REFERENCE.encode(value))
    except Exception as exc:  # a decoded value that cannot be stored again
        return ("unstorable", type(exc).__name__)


def agree(data: bytes) -> tuple[str, Any]:
    results = {codec.impl: outcome(codec, data) for codec in CODECS}
    first = next(iter(results.values()))
    assert all(r == first for r in results.values()), results
    return first


def seal(body: bytes, compress: bool = False) -> bytes:
    flags = 0
    if compress:
        body = lz4.block.compress(body)
        flags = F.FLAG_LZ4
    return F.header(flags, body) + body


def real_blobs() -> list[bytes]:
    values = [
        datagen.langchain_messages(6, seed=1, min_chars=20, max_chars=80),
        datagen.wide_state(30),
        datagen.agent_state(2, n_channels=4),
        S.GOLDEN,
    ]
    return [Codec(compress_threshold=None).encode(v) for v in values]


BLOBS = real_blobs()


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    agree(data)


@FUZZ
@given(st.binary(max_size=300), st.booleans())
def test_random_bodies_with_a_valid_header(body: bytes, compress: bool) -> None:
    agree(seal(body, compress))


def msgpack_trees() -> st.SearchStrategy[Any]:
    """MessagePack documents built of values and of extension values with random codes and
    payloads, random or themselves MessagePack: they pass the checksum and reach the
    extension decoders."""
    codes = st.one_of(st.integers(1, 24), st.integers(-128, 127))
    names = st.sampled_from(
        [
            "tests.codec.samples:Point",
            "tests.codec.samples:Model",
            "tests.codec.samples:Color",
            "tests.codec.samples:Pair",
            "tests.codec.samples:Item",
            "builtins:ValueError",
            "os:system",
            "x",
            ":",
            "a:b:c",
            "langchain_core.messages.ai:AIMessage",
        ]
    )
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(),
        st.text(),
        st.binary(max_size=20),
        names,
    )

    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        payload = st.one_of(
            st.binary(max_size=20),
            inner.map(msgspec.msgpack.encode),
            st.tuples(names, inner).map(lambda t: msgspec.msgpack.encode(list(t))),
            st.tuples(
                names, st.dictionaries(st.text(max_size=5), inner, max_size=3), st.integers(0, 7)
            ).map(lambda t: msgspec.msgpack.encode(list(t))),
        )
        return st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(
                st.one_of(st.text(max_size=8), st.integers(-(2**63), 2**64 - 1)), inner, max_size=4
            ),
            st.builds(msgspec.msgpack.Ext, codes, payload),
        )

    return st.recursive(leaves, extend, max_leaves=15)


@FUZZ
@given(msgpack_trees())
def test_crafted_documents(tree: Any) -> None:
    agree(seal(msgspec.msgpack.encode(tree)))


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(5)
        i = rng.randrange(len(buf)) if buf else 0
        if kind == 0 and buf:
            buf[i] ^= 1 << rng.randrange(8)
        elif kind == 1 and buf:
            buf[i] = rng.randrange(256)
        elif kind == 2:
            del buf[i : i + rng.randint(1, 8)]
        elif kind == 3:
            buf[i:i] = rng.randbytes(rng.randint(1, 8))
        else:
            j = rng.randrange(len(buf) + 1)
            buf[i:i] = buf[j : j + rng.randint(1, 16)]
    return bytes(buf)


@FUZZ
@given(st.sampled_from(BLOBS), st.integers(0, 2**32))
def test_mutated_blobs_fail_their_checksum(blob: bytes, seed: int) -> None:
    data = mutate(blob, random.Random(seed))
    kind, _ = agree(data)
    if data != blob:
        assert kind == "error"


@FUZZ
@given(st.sampled_from(BLOBS), st.integers(0, 2**32), st.booleans())
def test_mutated_bodies_with_a_fixed_checksum(blob: bytes, seed: int, compress: bool) -> None:
    """Past the checksum (as a forged or unluckily corrupted row would be)."""
    body = mutate(blob[F.HEADER_SIZE :], random.Random(seed))
    agree(seal(body, compress))


@pytest.mark.parametrize("depth", [10, 5_000, 200_000])
def test_deep_nesting_is_an_error_not_a_crash(depth: int) -> None:
    for opener in (b"\x91", b"\x81\x00", b"\xd5\x01\x91"):
        kind, _ = agree(seal(opener * depth + b"\xc0"))
        assert kind == ("value" if depth == 10 and opener != b"\xd5\x01\x91" else "error")


@pytest.mark.parametrize(
    "opener",
    [b"\x91", b"\x81\x00", b"\xdc\x00\x01", b"\xde\x00\x01\xa1k", b"\x92\xc3"],
)
@pytest.mark.parametrize("leaf", [b"\xc0", b"\xd5\x05\x00\x00", b"\xc7\x00\x05"])
def test_both_twins_bound_nesting_alike_whatever_the_recursion_limit(
    opener: bytes, leaf: bytes
) -> None:
    """At ``MAX_NEST`` levels of arrays and maps a body is read, one more is "nested too
    deeply", in both twins. The recursion limit is raised as far as Python 3.12 and later raise
    msgspec's own (which then no longer stops the pure twin)."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)
    try:
        fits = agree(seal(opener * F.MAX_NEST + leaf))
        deeper = agree(seal(opener * (F.MAX_NEST + 1) + leaf))
        # Inside a tuple's payload too (the compiled twin counts on from the tuple's depth, the
        # pure one from the payload's: alike when the tuple is the body's value).
        inner = opener * (F.MAX_NEST + 1) + leaf
        in_tuple = agree(seal(b"\xc9" + len(inner).to_bytes(4, "big") + b"\x01" + inner))
    finally:
        sys.setrecursionlimit(old)
    assert fits[0] == "unstorable"  # read, but deeper than the encoder stores
    assert deeper == in_tuple == ("error", "DecodeError")
    for codec in CODECS:
        with pytest.raises(DecodeError, match="nested too deeply"):
            codec.decode(seal(opener * (F.MAX_NEST + 1) + leaf))


@pytest.mark.parametrize(
    "body",
    [
        b"\xda\x07\xd0" + b"\x91" * 2000,  # a str of 2,000 bytes that would open arrays
        b"\xc5\x07\xd0" + b"\xdc" * 2000,  # the same in a bin
        b"\xc8\x07\xd0\x05" + b"\x81" * 2000,  # and in an extension's payload
        b"\x93" + b"\xd9\xff" + b"\x91" * 255 + b"\x91" * 999 + b"\xc0" + b"\xc3",
        b"\x91" * 500 + b"\xda\x07\xd0" + b"\x91" * 1500,  # truncated str: "truncated"
        b"\x91" * 500 + b"\xc1" + b"\x91" * 1000,  # an invalid byte before the depth
    ],
)
def test_nesting_counts_headers_not_bytes_that_look_like_them(body: bytes) -> None:
    assert not F.nests_deeper(body)
    agree(seal(body))  # and the twins reach the same outcome
    assert F.nests_deeper(b"\x91" * 1001 + b"\xc0")
    assert F.nests_deeper(b"\x93\xc0\xa1x" + b"\x91" * 1000 + b"\xc0")
    assert not F.nests_deeper(b"\x91" * 1000 + b"\xc0")


@pytest.mark.parametrize(
    "body",
    [
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion items
        b"\xdf\xff\xff\xff\xff",  # a map claiming 4 billion entries
        b"\xdb\xff\xff\xff\xff",  # a str claiming 4 GiB
        b"\xc9\xff\xff\xff\xff\x01",  # an extension claiming 4 GiB
    ],
)
def test_huge_claims_are_errors(body: bytes) -> None:
    assert agree(seal(body))[0] == "error"


@pytest.mark.parametrize(
    "opener",
    [
        b"\xdd\x00\x00\x10\x00",  # an array claiming 4,096 items
        b"\xdf\x00\x00\x10\x00",  # a map claiming 4,096 entries
        b"\x81\xdd\x00\x00\x10\x00",  # a map whose key is an array claiming 4,096 items
    ],
)
def test_an_error_before_the_bytes_run_out_comes_first_in_both(opener: bytes) -> None:
    """A container claiming more items than there are bytes, whose first item is a class that
    may not load: both twins read up to that item and say so (found by
    test_mutated_bodies_with_a_fixed_checksum, where the compiled twin said "truncated")."""
    unknown = msgspec.msgpack.Ext(17, msgspec.msgpack.encode(["testr.codec.samples:Level", 2]))
    key = b"\xa1k" if opener.startswith(b"\xdf") else b""
    body = opener + key + msgspec.msgpack.encode(unknown) + b"\xc0" * 8
    assert agree(seal(body)) == ("error", "UnregisteredTypeError")
    # With nothing wrong before the end, it is the truncation.
    assert agree(seal(opener + key + b"\xc0" * 8)) == ("error", "DecodeError")


def test_huge_uncompressed_size_claim_is_refused() -> None:
    payload = (2**32 - 1).to_bytes(4, "little") + b"\x00"
    assert agree(F.header(F.FLAG_LZ4, payload) + payload) == ("error", "DecodeError")
