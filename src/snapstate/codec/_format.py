"""The snapshot format: constants and helpers shared by both codec implementations.

A stored value is a 6-byte header followed by a payload::

    offset  size  field
    0       1     format version (FORMAT_VERSION)
    1       1     flags: bit 0 = payload is lz4-compressed; other bits must be zero
    2       4     checksum of the payload (bytes 6 and on): the low 32 bits of its XXH3-64
                  hash, little-endian
    6       ...   payload: a MessagePack document, or an lz4 block (with its 4-byte
                  little-endian uncompressed size first) holding one

Version 2 differs in the payload alone, and only holds a compressed document longer than
CHUNK_SIZE: its CHUNK_SIZE-byte chunks (the last one shorter) are lz4 blocks of their own, so
that several threads compress them at once (see ``pack_chunks`` for the layout). Every other
value is written in version 1, so a release that reads only version 1 reads it.

Values MessagePack has no type for are MessagePack extension values; the extension codes below
are part of the format and never change meaning within a format version. Objects of classes
(dataclasses, pydantic models, ...) carry their class as ``"module:qualname"``; loading looks
that name up in the registry (see ``_registry``) and never imports anything.

Both implementations (``_py`` and the compiled ``_native``) take their constants from here, and
their output is byte-identical.
"""

from __future__ import annotations

import ipaddress
import os
import re
import struct
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import lz4.block
import xxhash

from .. import _forksafe

__all__ = [
    "FORMAT_VERSION",
    "CHUNKED_VERSION",
    "KNOWN_VERSIONS",
    "CHUNK_SIZE",
    "pack_chunks",
    "unpack_chunks",
    "unchunked",
    "HEADER_SIZE",
    "FLAG_LZ4",
    "KNOWN_FLAGS",
    "COMPRESS_THRESHOLD",
    "MAX_DEPTH",
    "MAX_NEST",
    "nests_deeper",
    "MAX_RATIO",
    "INT_MIN",
    "INT_MAX",
    "EXT_TUPLE",
    "EXT_SET",
    "EXT_FROZENSET",
    "EXT_BYTEARRAY",
    "EXT_BIGINT",
    "EXT_STR",
    "EXT_DATETIME",
    "EXT_DATE",
    "EXT_TIME",
    "EXT_TIMEDELTA",
    "EXT_TIMEZONE",
    "EXT_ZONEINFO",
    "EXT_UUID",
    "EXT_DECIMAL",
    "EXT_PATH",
    "EXT_DEQUE",
    "EXT_ENUM",
    "EXT_DATACLASS",
    "EXT_NAMEDTUPLE",
    "EXT_STRUCT",
    "EXT_PYDANTIC",
    "EXT_OBJECT",
    "EXT_EXCEPTION",
    "EXT_NDARRAY",
    "EXT_IPADDRESS",
    "EXT_PATTERN",
    "EXT_NAMES",
    "PATH_KINDS",
    "IP_KINDS",
    "PATTERN_FLAGS",
    "pattern_flags",
    "build_ipaddress",
    "build_pattern",
    "checksum",
    "type_name",
    "display_name",
    "format_path",
    "header",
    "check_dtype",
    "EncodeFailure",
    "BadData",
    "UnknownVersion",
    "Unregistered",
    "UNSUPPORTED_HINT",
    "unsupported",
    "too_deep",
]

#: The format version this release writes, except for the values CHUNKED_VERSION holds.
#: Readers for every released version stay.
FORMAT_VERSION = 1
#: The format version of a compressed document longer than CHUNK_SIZE, in chunks.
CHUNKED_VERSION = 2
#: Format versions this release can read.
KNOWN_VERSIONS = frozenset({FORMAT_VERSION, CHUNKED_VERSION})

#: A compressed document longer than this is stored in chunks of this many bytes, each an lz4
#: block of its own (CHUNKED_VERSION), which threads compress side by side (here through
#: ``pack_chunks``; the compiled twin with threads of its own). A 1 MB document of
#: benchmarks/bench_postgres.py's big values took 2.61 ms to compress in one block, 1.41 ms in
#: two halves on two threads, and 1.72 to 1.87 ms in 5 or 8 chunks on three threads (2 cores);
#: chunks cost 0.4% of the compressed size at 256 KiB.
CHUNK_SIZE = 256 * 1024

HEADER_SIZE = 6
FLAG_LZ4 = 0x01
KNOWN_FLAGS = FLAG_LZ4

#: Payloads larger than this many bytes are lz4-compressed (and kept compressed only when that
#: makes them smaller). Measured by ``python -m benchmarks.bench_codec`` (the ASV class
#: CompressThreshold) on chat messages, wide dicts and plain records from benchmarks/datagen.py:
#: below 1 KiB lz4 saved 0-24% of the bytes (often nothing) for a fixed 0.5-2.5 us per value;
#: at 1 KiB it saved 16-29%, at 4 KiB 30-36%, at 16 KiB about 40%, for about 2 us per KiB of
#: encode + decode, which smaller rows repay in storage and network I/O.
COMPRESS_THRESHOLD = 1024

#: Containers nested deeper than this are refused when encoding: real states are shallow, and
#: a deeper value is almost always a reference cycle. The pure-Python decoder recurses through
#: three Python frames per nested object (msgspec calls back into it for every extension
#: value), so at 200 levels of dataclasses it hit Python's default recursion limit of 1000;
#: 100 leaves room for the caller's own frames.
MAX_DEPTH = 100

#: MessagePack arrays and maps nested deeper than this in a stored body are corrupt: both
#: decoders refuse them ("nested too deeply") before building anything so deep.
MAX_NEST = 1000

#: lz4 cannot expand data more than about 255 times; a stored size claiming more is corrupt,
#: and is refused before anything is allocated for it.
MAX_RATIO = 255

#: Integers in this range are MessagePack integers; others are EXT_BIGINT.
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

# Extension codes. Payloads marked "raw" are bytes; the others are MessagePack arrays.
EXT_TUPLE = 1  # [items...]
EXT_SET = 2  # [items...], sorted when the items sort
EXT_FROZENSET = 3  # [items...], sorted when the items sort
EXT_BYTEARRAY = 4  # raw bytes
EXT_BIGINT = 5  # raw: big-endian two's complement, shortest form
EXT_STR = 6  # raw: UTF-8 with lone surrogates kept ("surrogatepass")
EXT_DATETIME = 7  # [year, month, day, hour, minute, second, microsecond(, tzinfo(, fold))]
EXT_DATE = 8  # [year, month, day]
EXT_TIME = 9  # [hour, minute, second, microsecond(, tzinfo(, fold))]
EXT_TIMEDELTA = 10  # [days, seconds, microseconds]
EXT_TIMEZONE = 11  # [offset in microseconds(, name)]
EXT_ZONEINFO = 12  # raw: the zone key, UTF-8
EXT_UUID = 13  # raw: the 16 bytes
EXT_DECIMAL = 14  # raw: str(value), ASCII
EXT_PATH = 15  # [kind (PATH_KINDS index), str(path)]
EXT_DEQUE = 16  # [[items...](, maxlen)]
EXT_ENUM = 17  # ["module:qualname", value]
EXT_DATACLASS = 18  # ["module:qualname", {field: value}]
EXT_NAMEDTUPLE = 19  # ["module:qualname", [values...]]
EXT_STRUCT = 20  # ["module:qualname", {field: value}]  (msgspec.Struct)
EXT_PYDANTIC = 21  # ["module:qualname", fields, fields_set(, extra(, private))]
EXT_OBJECT = 22  # ["module:qualname", {attribute: value}]  (registered plain classes)
EXT_EXCEPTION = 23  # ["module:qualname", [args...](, {attribute: value})]
EXT_NDARRAY = 24  # [dtype.str, shape or nil for a numpy scalar, raw data]
# Added after the first release of version 1 (no value's bytes changed): a reader that predates
# them reports "unknown extension type 25" (or 26).
EXT_IPADDRESS = 25  # [kind (IP_KINDS index), str(value)]
EXT_PATTERN = 26  # [pattern (str or bytes), flags]

EXT_NAMES = {
    EXT_TUPLE: "tuple",
    EXT_SET: "set",
    EXT_FROZENSET: "frozenset",
    EXT_BYTEARRAY: "bytearray",
    EXT_BIGINT: "int",
    EXT_STR: "str",
    EXT_DATETIME: "datetime",
    EXT_DATE: "date",
    EXT_TIME: "time",
    EXT_TIMEDELTA: "timedelta",
    EXT_TIMEZONE: "timezone",
    EXT_ZONEINFO: "ZoneInfo",
    EXT_UUID: "UUID",
    EXT_DECIMAL: "Decimal",
    EXT_PATH: "path",
    EXT_DEQUE: "deque",
    EXT_ENUM: "Enum",
    EXT_DATACLASS: "dataclass",
    EXT_NAMEDTUPLE: "NamedTuple",
    EXT_STRUCT: "msgspec Struct",
    EXT_PYDANTIC: "pydantic model",
    EXT_OBJECT: "object",
    EXT_EXCEPTION: "exception",
    EXT_NDARRAY: "numpy array",
    EXT_IPADDRESS: "ipaddress",
    EXT_PATTERN: "re.Pattern",
}

#: EXT_PATH kinds, by index.
PATH_KINDS = ("PurePosixPath", "PureWindowsPath", "PosixPath", "WindowsPath")

#: EXT_IPADDRESS kinds (classes of the ``ipaddress`` module), by index.
IP_KINDS = (
    "IPv4Address",
    "IPv6Address",
    "IPv4Network",
    "IPv6Network",
    "IPv4Interface",
    "IPv6Interface",
)

#: The ``re`` flags a stored pattern may carry. ``re.DEBUG`` (which prints while compiling) and
#: ``re.TEMPLATE`` (deprecated) are neither stored nor loaded.
PATTERN_FLAGS = (
    re.IGNORECASE | re.LOCALE | re.MULTILINE | re.DOTALL | re.UNICODE | re.VERBOSE | re.ASCII
)
#: The flags outside PATTERN_FLAGS a compiled pattern may carry, as errors name them (spelled
#: out: ``re.TEMPLATE`` is gone from newer Pythons, and flag names print differently across them).
_UNSTORED_FLAGS = ((128, "re.DEBUG"), (1, "re.TEMPLATE"))

_xxh3_64 = xxhash.xxh3_64_intdigest


def checksum(payload: Any) -> int:
    """The stored checksum of ``payload`` (bytes-like): the low 32 bits of its XXH3-64 hash.

    XXH3 (as in RocksDB's block checksums) runs at about 50 GB/s here against 5.5 GB/s for
    zlib's CRC-32: on a 145 KB chat state CRC-32 took 25 us per direction, as long as decoding
    the MessagePack itself, and XXH3 takes 3 us. 32 bits miss one corruption in 4 billion.
    """
    return _xxh3_64(payload) & 0xFFFFFFFF


def raw_size(head: bytes, stored: int) -> int:
    """The payload's uncompressed size, from a stored value's first 10 bytes and its length.

    For statistics (``snapstate stats``): nothing is checked or decoded.
    """
    if len(head) < HEADER_SIZE:
        return stored
    if head[1] & FLAG_LZ4 and len(head) >= HEADER_SIZE + 4:
        return int.from_bytes(head[HEADER_SIZE : HEADER_SIZE + 4], "little")
    return stored - HEADER_SIZE


def header(flags: int, payload: Any, version: int = FORMAT_VERSION) -> bytes:
    """The 6-byte header for ``payload`` (bytes-like)."""
    return bytes((version, flags)) + checksum(payload).to_bytes(4, "little")


# -- chunked compression (CHUNKED_VERSION) ------------------------------------------------------

#: Threads that compress chunks beside the caller: one fewer than the CPUs, at most 3.
_HELPERS = max(0, min(3, (os.cpu_count() or 1) - 1))
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


@_forksafe.on_fork
def _helpers_in_child() -> None:
    # The parent's helper threads are not in the child: it starts its own pool on first use.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


def _helpers() -> ThreadPoolExecutor | None:
    """The process's pool of chunk compressors (a forked child starts its own)."""
    global _pool
    if _HELPERS == 0:
        return None
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(_HELPERS, thread_name_prefix="snapstate-lz4")
    return _pool


def _compress_all(chunks: Sequence[Any]) -> list[bytes]:
    """``lz4.block.compress`` of each chunk (default mode, size stored), on the calling thread
    and the helpers at once. lz4.block lets go of the GIL while it compresses.

    Threads take chunks in turn until none is left, so the caller never waits for a helper that
    has not started (when the helpers are busy with other callers' chunks, it compresses them
    all itself).
    """
    out: list[bytes] = [b""] * len(chunks)
    taken = iter(range(len(chunks)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                i = next(taken, None)
            if i is None:
                return
            out[i] = lz4.block.compress(chunks[i])

    pool = _helpers()
    started: list[Future[None]] = []
    if pool is not None:
        for _ in range(min(len(chunks) - 1, _HELPERS)):
            try:
                started.append(pool.submit(work))
            except RuntimeError:  # the interpreter is shutting down: compress here
                break
    work()
    for f in started:
        if not f.cancel():
            f.result()
    return out


_U32 = struct.Struct("<I")


def pack_chunks(body: Any) -> bytes:
    """The compressed payload of a CHUNKED_VERSION value holding ``body`` (bytes-like, longer
    than CHUNK_SIZE)::

        4 bytes     size of body, little-endian (as a version 1 compressed payload starts)
        4 bytes     n, the number of chunks
        4n bytes    the length of each chunk's block
        ...         the blocks, each lz4.block.compress of its chunk (its size first)
    """
    mv = memoryview(body).cast("B")
    blocks = _compress_all([mv[i : i + CHUNK_SIZE] for i in range(0, len(mv), CHUNK_SIZE)])
    lengths = struct.pack(f"<{len(blocks)}I", *map(len, blocks))
    return _U32.pack(len(mv)) + _U32.pack(len(blocks)) + lengths + b"".join(blocks)


def unpack_chunks(payload: Any) -> bytes:
    """The body of a CHUNKED_VERSION payload (see ``pack_chunks``); BadData if it is malformed."""
    mv = memoryview(payload).cast("B")
    if len(mv) < 8:
        raise BadData("truncated chunked payload")
    size, n = _U32.unpack_from(mv, 0)[0], _U32.unpack_from(mv, 4)[0]
    if size > MAX_RATIO * len(mv):
        raise BadData(f"corrupt compressed payload (claims {size} bytes)")
    if n != -(-size // CHUNK_SIZE) or n < 2:
        raise BadData(f"corrupt chunked payload ({n} chunks for {size} bytes)")
    start = 8 + 4 * n
    if len(mv) < start:
        raise BadData("truncated chunked payload")
    lengths = struct.unpack_from(f"<{n}I", mv, 8)
    if start + sum(lengths) != len(mv):
        raise BadData("corrupt chunked payload (chunk lengths do not match its size)")
    parts = []
    for i, length in enumerate(lengths):
        block = mv[start : start + length]
        start += length
        expected = min(CHUNK_SIZE, size - i * CHUNK_SIZE)
        if length < 4 or _U32.unpack_from(block, 0)[0] != expected:
            raise BadData(f"corrupt chunked payload (chunk {i} is not {expected} bytes)")
        try:
            parts.append(lz4.block.decompress(block))
        except lz4.block.LZ4BlockError:
            raise BadData(f"corrupt compressed payload (chunk {i})") from None
    return b"".join(parts)


def unchunked(flags: int, payload: Any) -> bytes:
    """The document of a CHUNKED_VERSION value, from its header's flags and its payload;
    BadData if the compression flag is missing or the payload is malformed."""
    if not flags & FLAG_LZ4:
        raise BadData("chunked payload without the compression flag")
    return unpack_chunks(payload)


def type_name(cls: type) -> str:
    """How messages name a type: ``qualname`` for builtins, else ``module.qualname``."""
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", None) or getattr(cls, "__name__", "?")
    if module in (None, "builtins"):
        return str(qualname)
    return f"{module}.{qualname}"


def display_name(stored: str) -> str:
    """A stored ``module:qualname`` as messages show it (``module.qualname``)."""
    return stored.replace(":", ".", 1)


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_REPR_MAX = 40


def _key_repr(key: Any) -> str:
    try:
        text = repr(key)
    except Exception:
        text = f"<{type_name(type(key))}>"
    if len(text) > _REPR_MAX:
        text = text[: _REPR_MAX - 3] + "..."
    return text


def format_path(segments: list[tuple[int, Any]]) -> str:
    """Render path segments collected innermost-first as ``$.messages[3].content``.

    A segment is ``(0, index)`` for a list or tuple position, ``(1, name)`` for an attribute or
    field, ``(2, key)`` for a dict key, and ``(3, None)`` for the inside of a dict key (shown
    as ``{key}``: ``$.index{key}[1]`` is the second item of a tuple used as a key in
    ``$.index``).
    """
    parts = ["$"]
    for kind, item in reversed(segments):
        if kind == 3:
            parts.append("{key}")
        elif kind == 0:
            parts.append(f"[{item}]")
        elif kind == 1:
            parts.append(f".{item}")
        elif type(item) is str and _IDENT.match(item):
            parts.append(f".{item}")
        else:
            parts.append(f"[{_key_repr(item)}]")
    return "".join(parts)


_DTYPE = re.compile(r"[<>|=][biufcmMSU][0-9]{1,5}(\[[0-9]*[A-Za-z]{1,2}\])?\Z")


def check_dtype(text: Any) -> bool:
    """Whether a stored numpy dtype string is one the codec writes (no object, no structured)."""
    return type(text) is str and _DTYPE.match(text) is not None


# -- failures raised inside the implementations ----------------------------------------------
# The implementations raise these; snapstate.codec.Codec turns them into the public errors,
# adding where the value was (channel, checkpoint) supplied by the caller.


class EncodeFailure(Exception):
    """A value cannot be encoded. ``path`` collects segments innermost-first while unwinding."""

    def __init__(self, problem: str, hint: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint
        self.path: list[tuple[int, Any]] = []


class BadData(Exception):
    """Stored bytes are malformed."""


class UnknownVersion(BadData):
    """Stored bytes carry a format version this release cannot read."""

    def __init__(self, version: int) -> None:
        super().__init__(f"unknown format version {version}")
        self.version = version


class Unregistered(Exception):
    """Stored bytes name a type that may not load."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name, reason)
        self.name = name
        self.reason = reason


UNSUPPORTED_HINT = (
    "supported are JSON types, bytes, tuple, set, frozenset, datetime types, UUID, Decimal, "
    "paths, ipaddress values, compiled regular expressions, Enum, dataclasses, NamedTuples, "
    "msgspec Structs, pydantic models, exceptions and numpy arrays; register other classes with "
    "snapstate.codec.register(cls)"
)


def unsupported(cls: type) -> EncodeFailure:
    return EncodeFailure(f"unsupported type `{type_name(cls)}`", UNSUPPORTED_HINT)


def too_deep(cls: type) -> EncodeFailure:
    return EncodeFailure(
        f"`{type_name(cls)}` nested deeper than {MAX_DEPTH} levels (is there a reference cycle?)"
    )


def safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type_name(type(value))}>"


def exception_args(exc: BaseException) -> tuple[Any, ...]:
    """The arguments an exception is stored with: its ``args``, except that an OSError with a
    file name keeps the constructor arguments that carry it (``args`` drops the file name)."""
    args = exc.args
    if isinstance(exc, OSError) and len(args) == 2:
        if exc.filename is not None or exc.filename2 is not None:
            return (*args, exc.filename, None, exc.filename2)
    return args


def describe_failure(failure: EncodeFailure) -> str:
    """``problem - at `$.path```, as encode errors show a failure."""
    return f"{failure.problem} - at `{format_path(failure.path)}`"


# -- cold paths shared by both implementations ------------------------------------------------


def fill_defaults(obj: Any, info: Any, stored: dict[Any, Any]) -> None:
    """Set fields missing from an older stored value to their defaults."""
    for name in info.fields:
        if name not in stored:
            default = info.defaults.get(name)
            if default is None:
                raise BadData(
                    f"stored `{display_name(info.name)}` lacks field `{name}`, which has no default"
                )
            object.__setattr__(obj, name, default[1]() if default[0] else default[1])


def repair(info: Any, stored: dict[Any, Any]) -> dict[Any, Any]:
    """Pydantic fields as the class defines them now: unknown ones dropped, new ones default."""
    out = {}
    for name in info.fields:
        if name in stored:
            out[name] = stored[name]
        else:
            default = info.defaults.get(name)
            if default is None:
                raise BadData(
                    f"stored `{display_name(info.name)}` lacks field `{name}`, which has no default"
                )
            out[name] = default[1]() if default[0] else default[1]
    return out


def ndarray_parts(v: Any) -> list[Any]:
    dtype = v.dtype
    if not check_dtype(dtype.str) or dtype.fields is not None:
        raise EncodeFailure(
            f"numpy value of dtype `{dtype}` (only bool, numeric, bytes, str and datetime "
            f"dtypes are supported)"
        )
    np = sys.modules["numpy"]
    shape = list(v.shape) if isinstance(v, np.ndarray) else None
    return [dtype.str, shape, v.tobytes()]


def build_ndarray(p: list[Any]) -> Any:
    dtype_str, shape, raw = p
    if not check_dtype(dtype_str) or type(raw) is not bytes:
        raise BadData("malformed numpy array")
    if shape is not None and (
        type(shape) is not list or not all(type(n) is int and n >= 0 for n in shape)
    ):
        raise BadData("malformed numpy array")
    try:
        import numpy as np  # a fixed module, imported on first use, never named by the bytes
    except ImportError:
        raise BadData("a numpy value, but numpy is not installed") from None
    dtype = np.dtype(dtype_str)
    if shape is None:
        if len(raw) != dtype.itemsize:
            raise BadData("malformed numpy scalar")
        return np.frombuffer(raw, dtype=dtype)[0]
    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize != len(raw):
        raise BadData("malformed numpy array: its shape does not match its data")
    if count == 0:
        return np.empty(shape, dtype=dtype)
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def pattern_flags(v: re.Pattern[Any]) -> int:
    """The flags stored for the compiled pattern ``v``; raises EncodeFailure for re.DEBUG or
    re.TEMPLATE, which a loaded pattern could not carry without side effects."""
    flags = int(v.flags)
    bad = flags & ~PATTERN_FLAGS
    if bad:
        shown = " | ".join(n for bit, n in _UNSTORED_FLAGS if bad & bit) or f"flags 0x{bad:x}"
        raise EncodeFailure(
            f"a `re.Pattern` compiled with {shown}",
            "compile it without that flag; patterns are stored with their other flags",
        )
    return flags


def build_ipaddress(p: list[Any]) -> Any:
    """The ``ipaddress`` value an EXT_IPADDRESS payload ``[kind, text]`` holds."""
    kind, text = p
    if type(kind) is not int or not 0 <= kind < len(IP_KINDS) or type(text) is not str:
        raise BadData("malformed ipaddress")
    return getattr(ipaddress, IP_KINDS[kind])(text)


def build_pattern(p: list[Any]) -> Any:
    """The compiled pattern an EXT_PATTERN payload ``[pattern, flags]`` holds (compiled, never
    run: a pattern is data to ``re``)."""
    pattern, flags = p
    if type(pattern) not in (str, bytes) or type(flags) is not int or flags & ~PATTERN_FLAGS:
        raise BadData("malformed re.Pattern")
    return re.compile(pattern, flags)


# Bytes that can open a level of MessagePack nesting: fixmap, fixarray, array 16/32, map 16/32.
# A body with fewer of them than the limit cannot nest past it.
_OPENERS = bytes([*range(0x80, 0xA0), *range(0xDC, 0xE0)])
_NOT_OPENERS = bytes(b for b in range(256) if b not in _OPENERS)


def _header_table() -> list[tuple[int, int]]:
    """For each first byte of a MessagePack value, (how to read on, a number): (0, n) skip n
    bytes; (1, k) skip a length in k bytes and that many bytes more (str, bin); (2, k) the same
    and one byte more (ext 8/16/32); (3, n) a container of n items; (4, k) a container of as many
    items as k bytes say; (5, k) a map of as many entries; (6, 0) the byte never used."""
    table = [(0, 0)] * 256
    for t in range(0x80, 0x90):
        table[t] = (3, 2 * (t & 0x0F))
    for t in range(0x90, 0xA0):
        table[t] = (3, t & 0x0F)
    for t in range(0xA0, 0xC0):
        table[t] = (0, t & 0x1F)
    table[0xC1] = (6, 0)
    for t, k in ((0xC4, 1), (0xC5, 2), (0xC6, 4), (0xD9, 1), (0xDA, 2), (0xDB, 4)):
        table[t] = (1, k)
    for t, k in ((0xC7, 1), (0xC8, 2), (0xC9, 4)):
        table[t] = (2, k)
    for t, n in zip(range(0xCA, 0xD4), (4, 8, 1, 2, 4, 8, 1, 2, 4, 8)):
        table[t] = (0, n)
    for t, n in zip(range(0xD4, 0xD9), (2, 3, 5, 9, 17)):  # fixext: the type byte and data
        table[t] = (0, n)
    table[0xDC], table[0xDD], table[0xDE], table[0xDF] = (4, 2), (4, 4), (5, 2), (5, 4)
    return table


_HEADERS = _header_table()


def nests_deeper(body: Any, limit: int = MAX_NEST) -> bool:
    """Whether the MessagePack ``body`` nests arrays and maps deeper than ``limit``, counted as
    the compiled decoder counts them. An extension value's payload is not looked into: the
    pure-Python decoder checks it on its own when it decodes it (where the compiled one goes on
    counting from the depth of the extension value).

    It reads the headers only as far as the answer needs; on a malformed body (an invalid byte,
    too few bytes) it answers False and leaves the error to the decoder. Linear in the body's
    items, without recursion; bodies with fewer bytes that could open a level than ``limit``
    are answered from that count alone.
    """
    if len(body) <= limit:
        return False
    b = bytes(body)
    if len(b.translate(None, _NOT_OPENERS)) <= limit:
        return False
    n = len(b)
    pos = 0
    headers = _HEADERS
    pending = [1]  # items still to read at each open level; the first is the body's value
    while pending:
        if not pending[-1]:
            pending.pop()
            continue
        if pos >= n:
            return False
        pending[-1] -= 1
        how, k = headers[b[pos]]
        pos += 1
        if how == 0:
            pos += k
            continue
        if how == 3:
            count = k
        elif how == 1:
            pos += k + int.from_bytes(b[pos : pos + k], "big")
            continue
        elif how == 2:
            pos += k + 1 + int.from_bytes(b[pos : pos + k], "big")
            continue
        elif how == 6:  # 0xC1, never used: the decoder says where
            return False
        else:
            count = int.from_bytes(b[pos : pos + k], "big") * (2 if how == 5 else 1)
            pos += k
        if len(pending) > limit:
            return True
        pending.append(count)
    return False
