"""Golden bytes: the format is pinned, and every stored format version stays readable.

``tests/codec/golden/v<version>-<name>.bin`` hold values encoded by the release that introduced
that format version, or (for types a version gained later, under extension codes of their own)
by the release that added them. Each must still decode to its value; the current version's
files must also be what both implementations write today. A deliberate format change adds a
new version (and its files) rather than editing these: ``SNAPSTATE_REGEN_GOLDEN=1 pytest
tests/codec`` writes the files of the current version that are missing.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import lz4.block
import pytest
from benchmarks import datagen

from snapstate.codec import Codec
from snapstate.codec import _format as F

from . import samples as S
from .helpers import assert_same

GOLDEN = pathlib.Path(__file__).parent / "golden"
REGEN = os.environ.get("SNAPSTATE_REGEN_GOLDEN") == "1"

#: name -> value, for the current format version (uncompressed: lz4's choices may change
#: between lz4 releases, its format does not).
VALUES: dict[str, Any] = {**S.GOLDEN}
#: Values stored compressed: only their decompressed bodies are compared.
COMPRESSED: dict[str, Any] = {"chat": datagen.chat_messages(8, seed=5)}
#: Values whose document is longer than a chunk, stored in F.CHUNKED_VERSION: likewise.
CHUNKED: dict[str, Any] = {
    "grid": {"cells": [[x * y % 17 for x in range(128)] for y in range(2100)]}
}
#: The values of each format version this release writes.
CURRENT: dict[int, dict[str, Any]] = {
    F.FORMAT_VERSION: {**VALUES, **COMPRESSED},
    F.CHUNKED_VERSION: CHUNKED,
}


def path(name: str, version: int = F.FORMAT_VERSION) -> pathlib.Path:
    return GOLDEN / f"v{version}-{name}.bin"


def stored(name: str, version: int = F.FORMAT_VERSION) -> bytes:
    p = path(name, version)
    if not p.exists():
        if not REGEN:
            pytest.fail(f"{p} is missing (SNAPSTATE_REGEN_GOLDEN=1 writes it)")
        codec = Codec(compress_threshold=None if name in VALUES else 0)
        p.write_bytes(codec.encode(CURRENT[version][name]))
    return p.read_bytes()


@pytest.mark.parametrize("name", VALUES)
def test_current_version_bytes(each_impl: Codec, name: str) -> None:
    uncompressed = Codec(impl=each_impl.impl, compress_threshold=None)
    assert uncompressed.encode(VALUES[name]) == stored(name)


@pytest.mark.parametrize("name", COMPRESSED)
def test_current_version_compressed_bodies(each_impl: Codec, name: str) -> None:
    data = stored(name)
    assert data[1] == F.FLAG_LZ4
    body = lz4.block.decompress(data[F.HEADER_SIZE :])
    fresh = Codec(impl=each_impl.impl, compress_threshold=None).encode(COMPRESSED[name])
    assert body == fresh[F.HEADER_SIZE :]


@pytest.mark.parametrize("name", CHUNKED)
def test_chunked_version_bodies(each_impl: Codec, name: str) -> None:
    data = stored(name, F.CHUNKED_VERSION)
    assert data[:2] == bytes((F.CHUNKED_VERSION, F.FLAG_LZ4))
    body = F.unpack_chunks(data[F.HEADER_SIZE :])
    fresh = Codec(impl=each_impl.impl, compress_threshold=None).encode(CHUNKED[name])
    assert len(body) > F.CHUNK_SIZE
    assert body == fresh[F.HEADER_SIZE :]
    # Written in the same version today, with the same chunks.
    today = each_impl.encode(CHUNKED[name])
    assert today[:2] == data[:2]
    assert today[F.HEADER_SIZE : F.HEADER_SIZE + 8] == data[F.HEADER_SIZE : F.HEADER_SIZE + 8]


def test_every_stored_version_still_decodes(each_impl: Codec) -> None:
    files = sorted(GOLDEN.glob("v*-*.bin"))
    versions = {int(f.name[1:].split("-")[0]) for f in files}
    assert versions == set(F.KNOWN_VERSIONS)
    for f in files:
        version, name = f.stem[1:].split("-", 1)
        expected = CURRENT.get(int(version), {}).get(name)
        value = each_impl.decode(f.read_bytes(), where=f.name)
        if expected is not None:
            assert_same(expected, value)


def test_header_layout() -> None:
    data = stored("none")
    assert data[0] == F.FORMAT_VERSION == 1
    assert data[1] == 0
    assert int.from_bytes(data[2:6], "little") == F.checksum(data[6:])
    assert data[6:] == b"\xc0"
