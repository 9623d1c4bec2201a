"""Large documents in chunks (format version 2): what is written, by whom, and what is refused."""

from __future__ import annotations

import os
import struct
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import lz4.block
import msgspec
import pytest

from snapstate.codec import Codec
from snapstate.codec import _format as F

from .helpers import assert_same
from .test_errors import blob, decode_error


def grid(rows: int) -> dict[str, Any]:
    """A compressible value of about 131 bytes of MessagePack per row."""
    return {"cells": [[x * y % 17 for x in range(128)] for y in range(rows)]}


def body_of(value: Any) -> bytes:
    return Codec(compress_threshold=None).encode(value)[F.HEADER_SIZE :]


def chunked_payload(body: bytes) -> bytes:
    """A version 2 payload built here from its description (not by the codec)."""
    blocks = [
        lz4.block.compress(body[i : i + F.CHUNK_SIZE]) for i in range(0, len(body), F.CHUNK_SIZE)
    ]
    head = struct.pack(f"<II{len(blocks)}I", len(body), len(blocks), *map(len, blocks))
    return head + b"".join(blocks)


def test_a_document_longer_than_a_chunk_is_stored_in_chunks(each_impl: Codec) -> None:
    value = grid(5000)  # about 650 KB: three chunks
    body = body_of(value)
    assert len(body) > 2 * F.CHUNK_SIZE
    data = each_impl.encode(value)
    assert data[:2] == bytes((F.CHUNKED_VERSION, F.FLAG_LZ4))
    assert data[F.HEADER_SIZE :] == chunked_payload(body)
    assert F.raw_size(data[:10], len(data)) == len(body)  # what `snapstate stats` reads
    assert_same(value, each_impl.decode(data))


def test_the_twins_write_the_same_chunks(twins: tuple[Codec, Codec]) -> None:
    py, native = twins
    for rows in (2100, 4100, 9000):
        value = grid(rows)
        data = py.encode(value)
        assert native.encode(value) == data
        assert_same(value, native.decode(data))
        assert_same(value, py.decode(data))


def test_the_twins_agree_on_chunks_of_every_count(twins: tuple[Codec, Codec]) -> None:
    """Documents of exactly whole chunks, one byte over, and more chunks than threads."""
    py, native = twins
    for n in (2 * F.CHUNK_SIZE, 2 * F.CHUNK_SIZE + 1, 4 * F.CHUNK_SIZE, 9 * F.CHUNK_SIZE + 123):
        # A bytes value's document is its MessagePack header (5 bytes at this size), then it.
        value = (b"a chunk of text, " * (n // 17 + 1))[: n - 5]
        assert len(body_of(value)) == n
        data = py.encode(value)
        assert data[:2] == bytes((F.CHUNKED_VERSION, F.FLAG_LZ4))
        assert native.encode(value) == data
        assert native.decode(data) == value


@pytest.mark.parametrize("helpers", [0, 1, 3])
def test_the_compiled_twin_compresses_with_any_number_of_helpers(
    twins: tuple[Codec, Codec], helpers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its helper threads (as many as ``_format._HELPERS``, none on one CPU) take chunks in
    turn with the caller: the bytes never depend on who compressed what."""
    py, native = twins
    value = grid(9000)
    expected = py.encode(value)
    monkeypatch.setattr(F, "_HELPERS", helpers)
    assert native.encode(value) == expected


def test_the_compiled_twin_compresses_from_many_threads_at_once(
    twins: tuple[Codec, Codec],
) -> None:
    py, native = twins
    values = [grid(4100 + 300 * i) for i in range(8)]
    expected = [py.encode(v) for v in values]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            assert list(pool.map(native.encode, values)) == expected


def test_a_document_of_one_chunk_keeps_version_1(each_impl: Codec) -> None:
    value = grid(1900)  # just under a chunk
    body = body_of(value)
    assert F.COMPRESS_THRESHOLD < len(body) <= F.CHUNK_SIZE
    data = each_impl.encode(value)
    assert data[:2] == bytes((F.FORMAT_VERSION, F.FLAG_LZ4))
    assert data[F.HEADER_SIZE :] == lz4.block.compress(body)


def test_a_large_value_that_does_not_compress_is_stored_as_is(each_impl: Codec) -> None:
    value = os.urandom(3 * F.CHUNK_SIZE)
    data = each_impl.encode(value)
    assert data[:2] == bytes((F.FORMAT_VERSION, 0))
    assert each_impl.decode(data) == value


def test_compression_never_needs_a_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    value = grid(9000)
    expected = Codec().encode(value)
    # No helper threads (one CPU): the caller compresses every chunk.
    monkeypatch.setattr(F, "_helpers", lambda: None)
    assert Codec().encode(value) == expected

    # A pool that refuses work (the interpreter is shutting down): the same.
    class Closed(ThreadPoolExecutor):
        def submit(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    closed = Closed(1)
    monkeypatch.setattr(F, "_helpers", lambda: closed)
    assert Codec().encode(value) == expected

    # Helpers busy with other work: the caller does not wait for them to start.
    busy = ThreadPoolExecutor(1)
    monkeypatch.setattr(F, "_helpers", lambda: busy)
    gate = busy.submit(lambda: None)
    gate.result()
    assert Codec().encode(value) == expected
    busy.shutdown()


def test_the_caller_compresses_what_a_stuck_helper_has_not_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    release = threading.Event()
    stuck = ThreadPoolExecutor(1)
    stuck.submit(release.wait)  # its only thread is busy until the encode is done
    monkeypatch.setattr(F, "_helpers", lambda: stuck)
    monkeypatch.setattr(F, "_HELPERS", 1)
    value = grid(9000)
    try:
        data = Codec().encode(value)
    finally:
        release.set()
        stuck.shutdown()
    assert data[F.HEADER_SIZE :] == chunked_payload(body_of(value))


@pytest.mark.parametrize("held", [False, True])
def test_a_forked_child_starts_its_own_helpers(held: bool) -> None:
    """The parent's helper threads are not in the child; ``held``: the lock that starts the
    pool is held at the fork, as by a thread the child does not have."""
    from ..forking import child_ok

    if F._HELPERS == 0:
        pytest.skip("one CPU: no helper threads")
    first = F._helpers()
    assert F._helpers() is first
    value = grid(9000)
    expected = Codec().encode(value)

    def in_child() -> bool:
        return F._helpers() is not first and Codec().encode(value) == expected

    assert child_ok(in_child, held=F._pool_lock if held else None)
    assert F._helpers() is first


class TestRefused:
    """Malformed version 2 payloads (with a valid checksum): a clear error, never a crash."""

    BODY = body_of(grid(2100))

    def good(self) -> bytes:
        return chunked_payload(self.BODY)

    def refused(self, codec: Codec, payload: bytes, *, flags: int = F.FLAG_LZ4) -> str:
        return decode_error(codec, blob(payload, version=F.CHUNKED_VERSION, flags=flags))

    def test_the_good_one_decodes(self, each_impl: Codec) -> None:
        data = blob(self.good(), version=F.CHUNKED_VERSION, flags=F.FLAG_LZ4)
        assert_same(msgspec.msgpack.decode(self.BODY), each_impl.decode(data))

    def test_without_the_compression_flag(self, each_impl: Codec) -> None:
        assert self.refused(each_impl, self.good(), flags=0) == (
            "cannot decode value: chunked payload without the compression flag"
        )

    def test_truncated(self, each_impl: Codec) -> None:
        for payload in (b"", self.good()[:7]):
            assert self.refused(each_impl, payload) == (
                "cannot decode value: truncated chunked payload"
            )

    def test_a_size_no_data_could_hold(self, each_impl: Codec) -> None:
        payload = struct.pack("<II", 1 << 31, 2) + b"\x00" * 8
        assert self.refused(each_impl, payload) == (
            "cannot decode value: corrupt compressed payload (claims 2147483648 bytes)"
        )

    def test_a_chunk_count_that_does_not_fit_the_size(self, each_impl: Codec) -> None:
        good = self.good()
        for n in (1, 3):
            payload = good[:4] + struct.pack("<I", n) + good[8:]
            assert self.refused(each_impl, payload) == (
                f"cannot decode value: corrupt chunked payload ({n} chunks for "
                f"{len(self.BODY)} bytes)"
            )

    def test_chunk_lengths_that_do_not_add_up(self, each_impl: Codec) -> None:
        good = self.good()
        first = struct.unpack_from("<I", good, 8)[0]
        payload = good[:8] + struct.pack("<I", first + 1) + good[12:]
        assert self.refused(each_impl, payload) == (
            "cannot decode value: corrupt chunked payload (chunk lengths do not match its size)"
        )

    def test_a_chunk_of_the_wrong_size(self, each_impl: Codec) -> None:
        # The whole body in the first block: the table is consistent, the chunk is not.
        whole = lz4.block.compress(self.BODY)
        tail = lz4.block.compress(b"")
        payload = struct.pack("<IIII", len(self.BODY), 2, len(whole), len(tail)) + whole + tail
        assert self.refused(each_impl, payload) == (
            f"cannot decode value: corrupt chunked payload (chunk 0 is not {F.CHUNK_SIZE} bytes)"
        )

    def test_a_corrupt_chunk(self, each_impl: Codec) -> None:
        good = bytearray(self.good())
        first = struct.unpack_from("<I", good, 8)[0]
        second = 16 + first  # where the second block starts
        good[second + 4 : second + 12] = b"\xff" * 8
        assert self.refused(each_impl, bytes(good)) == (
            "cannot decode value: corrupt compressed payload (chunk 1)"
        )
