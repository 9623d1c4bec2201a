"""The pure-Python codec: the reference implementation.

It turns a value into a tree msgspec can write as MessagePack (values MessagePack has no type
for become ``msgspec.msgpack.Ext``), lets msgspec write it, and adds the header (see
``_format``). The compiled twin in ``ext/_codec.pyx`` writes the same bytes directly; both
raise the same failures for the same input.
"""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import ipaddress
import pathlib
import re
import sys
import uuid
import zoneinfo
from collections.abc import Callable, Iterable
from typing import Any

import lz4.block
import msgspec

from . import _format as F
from ._registry import Resolver, StoredException, TypeInfo, info_for

__all__ = ["Core"]

_Ext = msgspec.msgpack.Ext
_Raw = msgspec.Raw
_setattr = object.__setattr__
_new: Callable[[type], Any] = object.__new__
_PATH_TYPES = tuple(getattr(pathlib, name) for name in F.PATH_KINDS)
_IP_TYPES = tuple(getattr(ipaddress, name) for name in F.IP_KINDS)


def _utf8_ok(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _map_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x80 | n,))
    if n < 0x10000:
        return b"\xde" + n.to_bytes(2, "big")
    return b"\xdf" + n.to_bytes(4, "big")


def _msgspec_unbounded() -> bool:
    """Whether msgspec could read a body nested deeper than ``F.MAX_NEST`` without a
    RecursionError, so that the bound must be checked before it reads. It stops at the
    interpreter's recursion limit up to Python 3.11 (1,000 frames unless raised, the stack
    included: a little sooner than the compiled twin), at the far higher limit for C code from
    3.12. The check reads every header of a body (a tenth of the decoding time for a state of
    LangChain messages, as much again for a long list of integers), so it runs only then."""
    return sys.version_info >= (3, 12) or sys.getrecursionlimit() > F.MAX_NEST


class Core:
    """Encodes and decodes with one resolver (allowlist) and compression threshold.

    Parameters
    ----------
    resolver:
        Which classes may be stored and loaded.
    compress_threshold:
        Bodies longer than this many bytes are lz4-compressed; None never compresses.
    """

    def __init__(self, resolver: Resolver, compress_threshold: int | None) -> None:
        self.resolver = resolver
        self.compress_threshold = compress_threshold
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder(ext_hook=self._ext)

    # -- encoding ------------------------------------------------------------------------------

    def encode(self, value: Any) -> bytes:
        """``value`` as stored bytes. Raises ``_format.EncodeFailure``."""
        body = self._enc.encode(self._walk(value, 0))
        if self.compress_threshold is not None and len(body) > self.compress_threshold:
            chunked = len(body) > F.CHUNK_SIZE
            packed = F.pack_chunks(body) if chunked else lz4.block.compress(body)
            if len(packed) < len(body):
                version = F.CHUNKED_VERSION if chunked else F.FORMAT_VERSION
                return F.header(F.FLAG_LZ4, packed, version) + packed
        return F.header(0, body) + body

    def _pack(self, tree: Any) -> bytes:
        return self._enc.encode(tree)

    def _walk(self, v: Any, depth: int) -> Any:
        t = type(v)
        if t is str:
            if v.isascii() or _utf8_ok(v):
                return v
            return _Ext(F.EXT_STR, v.encode("utf-8", "surrogatepass"))
        if t is int:
            if F.INT_MIN <= v <= F.INT_MAX:
                return v
            return _Ext(F.EXT_BIGINT, v.to_bytes((v.bit_length() + 8) // 8, "big", signed=True))
        if t is float or t is bool or v is None or t is bytes:
            return v
        if depth >= F.MAX_DEPTH:
            raise F.too_deep(t)
        depth += 1
        if t is list:
            return self._items(v, depth)
        if t is dict:
            return self._mapping(v.items(), len(v), depth, 2)
        if t is tuple:
            return _Ext(F.EXT_TUPLE, self._pack(self._items(v, depth)))
        simple = _SIMPLE.get(t)
        if simple is not None:
            return simple(self, v, depth)
        return self._object(v, t, depth)

    def _items(self, items: Iterable[Any], depth: int) -> list[Any]:
        out = []
        for i, x in enumerate(items):
            try:
                out.append(self._walk(x, depth))
            except F.EncodeFailure as f:
                f.path.append((0, i))
                raise
        return out

    def _mapping(
        self,
        items: Iterable[tuple[Any, Any]],
        n: int,
        depth: int,
        seg: int,
        fallback: bool = False,
    ) -> Any:
        """A map, from (key, value) pairs. ``seg`` is the path segment kind of its keys;
        ``fallback`` stores the repr of values that cannot be encoded (exception attributes)."""
        plain = True
        pairs = []
        for k, x in items:
            if type(k) is str and (k.isascii() or _utf8_ok(k)):
                kk = k
            else:
                plain = False
                try:
                    kk = self._walk(k, depth)
                except F.EncodeFailure as f:
                    f.path.append((3, None))
                    raise
            try:
                xx = self._walk(x, depth)
            except F.EncodeFailure as f:
                if not fallback:
                    f.path.append((seg, k))
                    raise
                xx = self._walk(F.safe_repr(x), depth)
            pairs.append((kk, xx))
        if len(pairs) != n:
            raise F.EncodeFailure("a mapping changed size while it was being encoded")
        if plain:
            return dict(pairs)
        return _Raw(_map_header(n) + b"".join(self._pack(k) + self._pack(x) for k, x in pairs))

    def _attrs(self, v: Any, names: Iterable[str], depth: int) -> Any:
        pairs = []
        for name in names:
            try:
                x = getattr(v, name)
            except AttributeError:
                continue
            pairs.append((name, x))
        return self._mapping(pairs, len(pairs), depth, 1)

    def _object(self, v: Any, t: type, depth: int) -> Any:
        info = info_for(t)
        problem = self.resolver.check_store(info)
        if problem is not None:
            raise F.EncodeFailure(*problem)
        kind = info.kind
        if kind == F.EXT_PYDANTIC:
            return _Ext(kind, self._pack(self._pydantic(v, info, depth)))
        if kind == F.EXT_ENUM:
            try:
                value = self._walk(v._value_, depth)
            except F.EncodeFailure as f:
                f.path.append((1, "value"))
                raise
            return _Ext(kind, self._pack([info.name, value]))
        if kind == F.EXT_DATACLASS or kind == F.EXT_STRUCT:
            return _Ext(kind, self._pack([info.name, self._attrs(v, info.fields, depth)]))
        if kind == F.EXT_NAMEDTUPLE:
            values = []
            for name, x in zip(info.fields, v):
                try:
                    values.append(self._walk(x, depth))
                except F.EncodeFailure as f:
                    f.path.append((1, name))
                    raise
            return _Ext(kind, self._pack([info.name, values]))
        if kind == F.EXT_EXCEPTION:
            return _Ext(kind, self._pack(self._exception(v, info, depth)))
        if kind == F.EXT_NDARRAY:
            return _Ext(kind, self._pack(F.ndarray_parts(v)))
        # EXT_OBJECT: slots, then __dict__.
        pairs: list[tuple[Any, Any]] = []
        for name in info.fields:
            try:
                pairs.append((name, getattr(v, name)))
            except AttributeError:
                pass
        if info.flag:
            pairs.extend(v.__dict__.items())
        return _Ext(kind, self._pack([info.name, self._mapping(pairs, len(pairs), depth, 1)]))

    def _pydantic(self, v: Any, info: TypeInfo, depth: int) -> list[Any]:
        fields = v.__dict__
        fields_set = v.__pydantic_fields_set__
        mask = 0
        found = 0
        for i, k in enumerate(fields):
            if k in fields_set:
                mask |= 1 << i
                found += 1
        payload = [
            info.name,
            self._mapping(fields.items(), len(fields), depth, 1),
            self._walk(mask, depth)
            if found == len(fields_set)
            else self._items(sorted(fields_set), depth),
        ]
        extra = getattr(v, "__pydantic_extra__", None)
        private = getattr(v, "__pydantic_private__", None)
        if extra is not None or private is not None:
            payload.append(
                None if extra is None else self._mapping(extra.items(), len(extra), depth, 1)
            )
        if private is not None:
            payload.append(self._mapping(private.items(), len(private), depth, 1))
        return payload

    def _exception(self, v: BaseException, info: TypeInfo, depth: int) -> list[Any]:
        # Arguments and attributes that cannot be encoded are stored as their repr: an
        # exception is a diagnostic, and storing it must not fail the write that carries it.
        args = []
        for a in F.exception_args(v):
            try:
                args.append(self._walk(a, depth))
            except F.EncodeFailure:
                args.append(self._walk(F.safe_repr(a), depth))
        payload = [info.name, args]
        attrs = getattr(v, "__dict__", None)
        if attrs:
            payload.append(self._mapping(attrs.items(), len(attrs), depth, 1, fallback=True))
        return payload

    def _set(self, v: Any, depth: int, code: int) -> Any:
        try:
            items = sorted(v)
        except Exception:
            items = list(v)
        return _Ext(code, self._pack(self._items(items, depth)))

    def _tz(self, tz: Any, depth: int) -> Any:
        try:
            return self._walk(tz, depth)
        except F.EncodeFailure as f:
            f.path.append((1, "tzinfo"))
            raise

    def _datetime(self, v: dt.datetime, depth: int) -> Any:
        parts = [v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond]
        if v.tzinfo is not None or v.fold:
            parts.append(self._tz(v.tzinfo, depth))
            if v.fold:
                parts.append(1)
        return _Ext(F.EXT_DATETIME, self._pack(parts))

    def _time(self, v: dt.time, depth: int) -> Any:
        parts = [v.hour, v.minute, v.second, v.microsecond]
        if v.tzinfo is not None or v.fold:
            parts.append(self._tz(v.tzinfo, depth))
            if v.fold:
                parts.append(1)
        return _Ext(F.EXT_TIME, self._pack(parts))

    def _timezone(self, v: dt.timezone, depth: int) -> Any:
        off = v.utcoffset(None)
        parts: list[Any] = [(off.days * 86400 + off.seconds) * 1_000_000 + off.microseconds]
        name = v.tzname(None)
        if name != dt.timezone(off).tzname(None):
            parts.append(self._walk(name, depth))
        return _Ext(F.EXT_TIMEZONE, self._pack(parts))

    def _zoneinfo(self, v: zoneinfo.ZoneInfo, depth: int) -> Any:
        if v.key is None:
            raise F.EncodeFailure("a `zoneinfo.ZoneInfo` without a key (read from a file)")
        return _Ext(F.EXT_ZONEINFO, v.key.encode("utf-8", "surrogatepass"))

    def _path(self, v: pathlib.PurePath, depth: int) -> Any:
        kind = _PATH_TYPES.index(type(v))
        return _Ext(F.EXT_PATH, self._pack([kind, self._walk(str(v), depth)]))

    def _ipaddress(self, v: Any, depth: int) -> Any:
        kind = _IP_TYPES.index(type(v))
        return _Ext(F.EXT_IPADDRESS, self._pack([kind, self._walk(str(v), depth)]))

    def _pattern(self, v: re.Pattern[Any], depth: int) -> Any:
        flags = F.pattern_flags(v)
        return _Ext(F.EXT_PATTERN, self._pack([self._walk(v.pattern, depth), flags]))

    def _deque(self, v: collections.deque[Any], depth: int) -> Any:
        parts: list[Any] = [self._items(v, depth)]
        if v.maxlen is not None:
            parts.append(v.maxlen)
        return _Ext(F.EXT_DEQUE, self._pack(parts))

    # -- decoding ------------------------------------------------------------------------------

    def decode(self, data: Any) -> Any:
        """The value stored in ``data``. Raises ``_format.BadData`` or ``Unregistered``."""
        mv = memoryview(data)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        n = len(mv)
        if n == 0:
            raise F.BadData("no data (0 bytes)")
        version = mv[0]
        if version not in F.KNOWN_VERSIONS:
            raise F.UnknownVersion(version)
        if n < F.HEADER_SIZE:
            raise F.BadData(f"truncated: {n} bytes, shorter than the {F.HEADER_SIZE}-byte header")
        flags = mv[1]
        if flags & ~F.KNOWN_FLAGS:
            raise F.BadData(f"unknown flags 0x{flags:02x}")
        stored = int.from_bytes(mv[2:6], "little")
        payload = mv[F.HEADER_SIZE :]
        actual = F.checksum(payload)
        if actual != stored:
            raise F.BadData(
                f"checksum mismatch (stored {stored:08x}, computed {actual:08x}): the data is "
                f"corrupt"
            )
        if version == F.CHUNKED_VERSION:
            body: Any = F.unchunked(flags, payload)
        else:
            body = _decompress(payload) if flags & F.FLAG_LZ4 else payload
        if _msgspec_unbounded() and F.nests_deeper(body):
            raise F.BadData("corrupt payload: nested too deeply")
        try:
            return self._dec.decode(body)
        except msgspec.DecodeError as exc:
            raise F.BadData(f"corrupt payload: {_in_native_words(str(exc))}") from None
        except RecursionError:
            raise F.BadData("corrupt payload: nested too deeply") from None

    def _list(self, data: memoryview, code: int, lo: int, hi: int) -> list[Any]:
        if _msgspec_unbounded() and F.nests_deeper(data):
            raise F.BadData("corrupt payload: nested too deeply")
        x = self._dec.decode(data)
        if type(x) is not list or not lo <= len(x) <= hi:
            raise F.BadData(f"malformed {F.EXT_NAMES[code]}")
        return x

    def _ext(self, code: int, data: memoryview) -> Any:
        build = _BUILD.get(code)
        if build is None:
            raise F.BadData(f"unknown extension type {code}")
        try:
            return build(self, data)
        except (F.BadData, F.Unregistered):
            raise
        except Exception as exc:
            raise F.BadData(f"malformed {F.EXT_NAMES[code]}: {type(exc).__name__}: {exc}") from None

    def _b_tuple(self, data: memoryview) -> Any:
        return tuple(self._list(data, F.EXT_TUPLE, 0, sys.maxsize))

    def _b_set(self, data: memoryview) -> Any:
        return set(self._list(data, F.EXT_SET, 0, sys.maxsize))

    def _b_frozenset(self, data: memoryview) -> Any:
        return frozenset(self._list(data, F.EXT_FROZENSET, 0, sys.maxsize))

    def _b_bytearray(self, data: memoryview) -> Any:
        return bytearray(data)

    def _b_bigint(self, data: memoryview) -> Any:
        return int.from_bytes(data, "big", signed=True)

    def _b_str(self, data: memoryview) -> Any:
        return bytes(data).decode("utf-8", "surrogatepass")

    def _b_datetime(self, data: memoryview) -> Any:
        p = self._list(data, F.EXT_DATETIME, 7, 9)
        tz = p[7] if len(p) > 7 else None
        fold = p[8] if len(p) > 8 else 0
        return dt.datetime(p[0], p[1], p[2], p[3], p[4], p[5], p[6], tz, fold=fold)

    def _b_date(self, data: memoryview) -> Any:
        p = self._list(data, F.EXT_DATE, 3, 3)
        return dt.date(p[0], p[1], p[2])

    def _b_time(self, data: memoryview) -> Any:
        p = self._list(data, F.EXT_TIME, 4, 6)
        tz = p[4] if len(p) > 4 else None
        fold = p[5] if len(p) > 5 else 0
        return dt.time(p[0], p[1], p[2], p[3], tz, fold=fold)

    def _b_timedelta(self, data: memoryview) -> Any:
        p = self._list(data, F.EXT_TIMEDELTA, 3, 3)
        return dt.timedelta(p[0], p[1], p[2])

    def _b_timezone(self, data: memoryview) -> Any:
        p = self._list(data, F.EXT_TIMEZONE, 1, 2)
        if type(p[0]) is not int:
            raise F.BadData("malformed timezone")
        offset = dt.timedelta(microseconds=p[0])
        return dt.timezone(offset) if len(p) == 1 else dt.timezone(offset, p[1])

    def _b_zoneinfo(self, data: memoryview) -> Any:
        return zoneinfo.ZoneInfo(bytes(data).decode("utf-8", "surrogatepass"))

    def _b_uuid(self, data: memoryview) -> Any:
        return uuid.UUID(bytes=bytes(data))

    def _b_decimal(self, data: memoryview) -> Any:
        return decimal.Decimal(bytes(data).decode("ascii"))

    def _b_path(self, data: memoryview) -> Any:
        p = self._list(data, F.EXT_PATH, 2, 2)
        kind = p[0]
        if type(kind) is not int or not 0 <= kind < len(_PATH_TYPES) or type(p[1]) is not str:
            raise F.BadData("malformed path")
        return _PATH_TYPES[kind](p[1])

    def _b_deque(self, data: memoryview) -> Any:
        p = self._list(data, F.EXT_DEQUE, 1, 2)
        if type(p[0]) is not list:
            raise F.BadData("malformed deque")
        return collections.deque(p[0], p[1] if len(p) > 1 else None)

    def _b_ipaddress(self, data: memoryview) -> Any:
        return F.build_ipaddress(self._list(data, F.EXT_IPADDRESS, 2, 2))

    def _b_pattern(self, data: memoryview) -> Any:
        return F.build_pattern(self._list(data, F.EXT_PATTERN, 2, 2))

    def _info(self, code: int, name: Any) -> TypeInfo:
        info = self.resolver.resolve(code, name)
        assert info is not None  # only exceptions may come back unresolved
        return info

    def _b_enum(self, data: memoryview) -> Any:
        p = self._list(data, F.EXT_ENUM, 2, 2)
        info = self._info(F.EXT_ENUM, p[0])
        return info.cls(p[1])

    def _b_dataclass(self, data: memoryview) -> Any:
        p = self._list(data, F.EXT_DATACLASS, 2, 2)
        info = self._info(F.EXT_DATACLASS, p[0])
        fields = p[1]
        if type(fields) is not dict:
            raise F.BadData("malformed dataclass")
        obj = _new(info.cls)
        known = info.field_set
        n = 0
        for k, x in fields.items():
            if k in known:
                _setattr(obj, k, x)
                n += 1
        if n != len(known):
            F.fill_defaults(obj, info, fields)
        return obj

    def _b_namedtuple(self, data: memoryview) -> Any:
        p = self._list(data, F.EXT_NAMEDTUPLE, 2, 2)
        info = self._info(F.EXT_NAMEDTUPLE, p[0])
        if type(p[1]) is not list:
            raise F.BadData("malformed NamedTuple")
        return info.cls(*p[1])

    def _b_struct(self, data: memoryview) -> Any:
        p = self._list(data, F.EXT_STRUCT, 2, 2)
        info = self._info(F.EXT_STRUCT, p[0])
        fields = p[1]
        if type(fields) is not dict:
            raise F.BadData("malformed msgspec Struct")
        known = info.field_set
        return info.cls(**{k: x for k, x in fields.items() if k in known})

    def _b_pydantic(self, data: memoryview) -> Any:
        p = self._list(data, F.EXT_PYDANTIC, 3, 5)
        info = self._info(F.EXT_PYDANTIC, p[0])
        fields = p[1]
        spec = p[2]
        if type(fields) is not dict:
            raise F.BadData("malformed pydantic model")
        if type(spec) is int:
            fields_set = {k for i, k in enumerate(fields) if spec >> i & 1}
        elif type(spec) is list:
            fields_set = set(spec)
        else:
            raise F.BadData("malformed pydantic model")
        extra = p[3] if len(p) > 3 else None
        private = p[4] if len(p) > 4 else None
        if (extra is not None and type(extra) is not dict) or (
            private is not None and type(private) is not dict
        ):
            raise F.BadData("malformed pydantic model")
        if fields.keys() != info.field_set:
            fields = F.repair(info, fields)
        # Trusted types load without validation, as model_construct() would, but restoring
        # the stored fields set, extra and private attributes as they were.
        obj = _new(info.cls)
        _setattr(obj, "__dict__", fields)
        _setattr(obj, "__pydantic_fields_set__", fields_set)
        if not info.flag:  # RootModel keeps neither (as in model_construct)
            _setattr(obj, "__pydantic_extra__", extra)
            _setattr(obj, "__pydantic_private__", private)
        return obj

    def _b_object(self, data: memoryview) -> Any:
        p = self._list(data, F.EXT_OBJECT, 2, 2)
        info = self._info(F.EXT_OBJECT, p[0])
        attrs = p[1]
        if type(attrs) is not dict:
            raise F.BadData("malformed object")
        obj = _new(info.cls)
        for k, x in attrs.items():
            if type(k) is not str or (k.startswith("__") and k.endswith("__")):
                raise F.BadData(f"malformed object: attribute {F._key_repr(k)}")
            _setattr(obj, k, x)
        return obj

    def _b_exception(self, data: memoryview) -> Any:
        p = self._list(data, F.EXT_EXCEPTION, 2, 3)
        args = p[1]
        attrs = p[2] if len(p) > 2 else None
        if type(args) is not list or (attrs is not None and type(attrs) is not dict):
            raise F.BadData("malformed exception")
        info = self.resolver.resolve(F.EXT_EXCEPTION, p[0])
        if info is None:
            return StoredException(F.display_name(p[0]), tuple(args), attrs)
        if attrs:
            for k in attrs:
                if type(k) is not str or (
                    k.startswith("__") and k.endswith("__") and k != "__notes__"
                ):
                    raise F.BadData(f"malformed exception: attribute {F._key_repr(k)}")
        base: Any = info.base
        # Built through the nearest built-in base class, so no __new__ or __init__ of the
        # stored class runs. One that cannot be built that way comes back as StoredException.
        try:
            exc = base.__new__(info.cls, *args)
        except Exception:
            return StoredException(F.display_name(p[0]), tuple(args), attrs)
        try:
            base.__init__(exc, *args)
        except Exception:
            exc.args = tuple(args)
        if attrs:
            for k, x in attrs.items():
                _setattr(exc, k, x)
        return exc

    def _b_ndarray(self, data: memoryview) -> Any:
        p = self._list(data, F.EXT_NDARRAY, 3, 3)
        return F.build_ndarray(p)


#: msgspec's words for a corrupt MessagePack body, and the compiled twin's for the same.
_MSGPACK_WORDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Input data was truncated"), "truncated"),
    (
        re.compile(
            r"MessagePack data is malformed: invalid opcode '\\x([0-9a-f]{2})' (\(byte \d+\))"
        ),
        r"invalid byte 0x\1 \2",
    ),
    (
        re.compile(r"MessagePack data is malformed: trailing characters (\(byte \d+\))"),
        r"trailing data \1",
    ),
)


def _in_native_words(text: str) -> str:
    """A msgspec decode error as the compiled twin words it (both twins read the same bodies
    and report the same faults); any other message as it is."""
    for pattern, words in _MSGPACK_WORDS:
        match = pattern.fullmatch(text)
        if match is not None:
            return match.expand(words)
    return text


def _decompress(payload: memoryview) -> bytes:
    if len(payload) < 4:
        raise F.BadData("truncated compressed payload")
    size = int.from_bytes(payload[:4], "little")
    if size > F.MAX_RATIO * len(payload):
        raise F.BadData(f"corrupt compressed payload (claims {size} bytes)")
    try:
        body: bytes = lz4.block.decompress(payload)
    except lz4.block.LZ4BlockError:
        raise F.BadData("corrupt compressed payload") from None
    return body


_SIMPLE: dict[type, Callable[[Core, Any, int], Any]] = {
    set: lambda c, v, d: c._set(v, d, F.EXT_SET),
    frozenset: lambda c, v, d: c._set(v, d, F.EXT_FROZENSET),
    bytearray: lambda c, v, d: _Ext(F.EXT_BYTEARRAY, bytes(v)),
    dt.datetime: Core._datetime,
    dt.date: lambda c, v, d: _Ext(F.EXT_DATE, c._pack([v.year, v.month, v.day])),
    dt.time: Core._time,
    dt.timedelta: lambda c, v, d: _Ext(
        F.EXT_TIMEDELTA, c._pack([v.days, v.seconds, v.microseconds])
    ),
    dt.timezone: Core._timezone,
    zoneinfo.ZoneInfo: Core._zoneinfo,
    uuid.UUID: lambda c, v, d: _Ext(F.EXT_UUID, v.bytes),
    decimal.Decimal: lambda c, v, d: _Ext(F.EXT_DECIMAL, str(v).encode("ascii")),
    collections.deque: Core._deque,
    **{cls: Core._path for cls in _PATH_TYPES},
    **{cls: Core._ipaddress for cls in _IP_TYPES},
    re.Pattern: Core._pattern,
}

_BUILD: dict[int, Callable[[Core, memoryview], Any]] = {
    F.EXT_TUPLE: Core._b_tuple,
    F.EXT_SET: Core._b_set,
    F.EXT_FROZENSET: Core._b_frozenset,
    F.EXT_BYTEARRAY: Core._b_bytearray,
    F.EXT_BIGINT: Core._b_bigint,
    F.EXT_STR: Core._b_str,
    F.EXT_DATETIME: Core._b_datetime,
    F.EXT_DATE: Core._b_date,
    F.EXT_TIME: Core._b_time,
    F.EXT_TIMEDELTA: Core._b_timedelta,
    F.EXT_TIMEZONE: Core._b_timezone,
    F.EXT_ZONEINFO: Core._b_zoneinfo,
    F.EXT_UUID: Core._b_uuid,
    F.EXT_DECIMAL: Core._b_decimal,
    F.EXT_PATH: Core._b_path,
    F.EXT_DEQUE: Core._b_deque,
    F.EXT_ENUM: Core._b_enum,
    F.EXT_DATACLASS: Core._b_dataclass,
    F.EXT_NAMEDTUPLE: Core._b_namedtuple,
    F.EXT_STRUCT: Core._b_struct,
    F.EXT_PYDANTIC: Core._b_pydantic,
    F.EXT_OBJECT: Core._b_object,
    F.EXT_EXCEPTION: Core._b_exception,
    F.EXT_NDARRAY: Core._b_ndarray,
    F.EXT_IPADDRESS: Core._b_ipaddress,
    F.EXT_PATTERN: Core._b_pattern,
}
