"""Every supported type comes back equal and of the same type."""

from __future__ import annotations

import collections
import copy
import dataclasses
import datetime as dt
import decimal
import enum
import ipaddress
import pathlib
import re
import sys
import uuid
import zoneinfo
from typing import Any

import msgspec
import numpy as np
import pydantic
import pytest
from benchmarks import datagen

from snapstate.codec import Codec, decode, encode, register
from snapstate.codec import _format as F
from snapstate.errors import ConfigurationError, EncodeError

from . import samples as S
from .helpers import assert_same

CASES: dict[str, Any] = {
    "none": None,
    "true": True,
    "false": False,
    "small ints": [0, 1, -1, 127, 128, -32, -33, 255, 256, -128, -129],
    "wide ints": [2**31, -(2**31) - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)],
    "big ints": [2**64, -(2**63) - 1, 3**200, -(3**200), 2**64 * 2**64],
    "floats": [0.0, -0.0, 0.1, 1e-320, 1.7976931348623157e308, float("inf"), float("-inf")],
    "nan": float("nan"),
    "strs": ["", "ascii", "é", "日本語", "🎉", "x" * 31, "x" * 32, "x" * 255, "x" * 256],
    "long str": "y" * 70_000,
    "surrogates": ["a\ud800b", "\udfff", "\ud83d\ude00", "ok"],
    "bytes": [b"", b"\x00", bytes(range(256)), b"z" * 70_000],
    "bytearray": bytearray(b"\x01\x02"),
    "list": [1, "two", [3, [4, []]]],
    "tuple": (1, "two", (3, ()), [4]),
    "empty containers": [[], {}, (), set(), frozenset()],
    "dict": {"a": 1, "b": {"c": [1, 2]}, "": None},
    "dict order": {"z": 1, "a": 2, "m": 3},
    "big containers": {"list": list(range(70_000)), "dict": {str(i): i for i in range(20)}},
    "non-str keys": {1: "a", -5: "b", 2.5: "c", None: "d", b"k": "e", (1, (2, "x")): "f"},
    "typed keys": {
        frozenset({1, 2}): 1,
        dt.date(2020, 1, 1): 2,
        S.Color.RED: 3,
        uuid.UUID(int=5): 4,
        S.Pair(1, 2): 5,
        "a\ud800": 6,
    },
    "set": {3, 1, 2},
    "set of strs": {"b", "a", "c"},
    "unsortable set": {1, "a", (2, 3), None},
    "frozenset": frozenset({(1, 2), (3, 4)}),
    "datetime naive": dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
    "datetime utc": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    "datetime offset": dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-3))),
    "datetime named offset": dt.datetime(
        2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(minutes=90), "Mine")
    ),
    "datetime zoneinfo": dt.datetime(2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    "datetime fold": dt.datetime(2024, 11, 3, 1, 30, fold=1),
    "datetime fold tz": dt.datetime(
        2024, 11, 3, 1, 30, tzinfo=zoneinfo.ZoneInfo("America/Chicago"), fold=1
    ),
    "datetime extremes": [dt.datetime.min, dt.datetime.max],
    "date": [dt.date(1, 1, 1), dt.date(9999, 12, 31)],
    "time": [dt.time(), dt.time(12, 30, 15, 5), dt.time(1, tzinfo=dt.timezone.utc)],
    "time fold": dt.time(1, 30, fold=1),
    "timedelta": [dt.timedelta(0), dt.timedelta(days=-3, microseconds=1), dt.timedelta.max],
    "timezone": [dt.timezone.utc, dt.timezone(dt.timedelta(hours=14), "Far")],
    "zoneinfo": zoneinfo.ZoneInfo("Asia/Kolkata"),
    "uuid": [uuid.UUID(int=0), uuid.UUID("12345678-1234-5678-1234-567812345678")],
    "decimal": [decimal.Decimal("0.1"), decimal.Decimal("-0"), decimal.Decimal("1E+30")],
    "decimal specials": [decimal.Decimal("Infinity"), decimal.Decimal("-Infinity")],
    "paths": [
        pathlib.Path("/tmp/x"),
        pathlib.Path("rel"),
        pathlib.PurePosixPath("/a"),
        pathlib.PureWindowsPath("C:\\x\\y"),
    ],
    "path with surrogate": pathlib.Path("/tmp/caf\udce9"),
    "deque": [collections.deque([1, (2,)]), collections.deque(maxlen=3)],
    "ipaddress": [
        ipaddress.IPv4Address("0.0.0.0"),
        ipaddress.IPv6Address("::ffff:10.0.0.1"),
        ipaddress.IPv6Address("fe80::1%é"),
        ipaddress.IPv4Network("10.1.0.0/16"),
        ipaddress.IPv6Network("::/0"),
        ipaddress.IPv4Interface("10.1.2.3/16"),
        ipaddress.IPv6Interface("fe80::1%2/64"),
    ],
    "ipaddress keys and sets": {
        ipaddress.IPv4Address("10.0.0.2"): {ipaddress.IPv4Network("10.0.0.0/30")},
        "s": {ipaddress.IPv4Address("10.0.0.9"), ipaddress.IPv4Address("10.0.0.1")},
    },
    "re.Pattern": [
        re.compile(""),
        re.compile("(?P<word>\\w+)\\s*", re.VERBOSE | re.ASCII),
        re.compile("caf\udce9|日本"),
        re.compile(b"\\x00+", re.IGNORECASE | re.LOCALE),
        {re.compile("k"): re.compile("v", re.DOTALL)},
    ],
    "dataclass": S.Point(1, 2.0, ["a"]),
    "dataclass frozen slots": S.Frozen(name="n", size=3),
    "dataclass init=False": S.WithInitFalse(3),
    "enum": [S.Color.RED, S.Level.LOW, S.Perm.R | S.Perm.X, S.Perm(0)],
    "namedtuple": [S.Pair(1), S.Pair((1, 2), [3]), S.Legacy(1, "b")],
    "struct": [S.Item(1), S.Item(2, "x", {"k": (1,)}), S.FrozenItem(3, "c")],
    "pydantic": S.Model(name="n", tags=["a"], when=dt.datetime(2021, 1, 1)),
    "pydantic extra": S.Loose(a=2, other={"x": 1}),
    "pydantic private": S.WithPrivate(a=1),
    "pydantic alias": S.Aliased(fullName="Ada"),
    "pydantic nested": S.Nested(inner=S.Model(name="i"), points=[S.Point(1)]),
    "pydantic root": S.Ints([1, 2, 3]),
    "pydantic frozen": S.FrozenModel(key="k"),
    "mixed nesting": {"objs": [S.Point(1, tags=["x"]), (S.Color.GREEN, {S.Level.HIGH})]},
}


@pytest.mark.parametrize("value", CASES.values(), ids=CASES.keys())
def test_round_trip(codec: Codec, value: Any) -> None:
    assert_same(value, codec.decode(codec.encode(value)))


@pytest.mark.parametrize("value", S.SUBTLE.values(), ids=S.SUBTLE.keys())
def test_round_trip_keeps_what_eq_overlooks(codec: Codec, value: Any) -> None:
    """``fold``, timezone names and types, and ``maxlen`` come back, at any depth."""
    assert_same(value, codec.decode(codec.encode(value)))


FOLD_NY = dt.datetime(2024, 11, 3, 1, 30, tzinfo=zoneinfo.ZoneInfo("America/New_York"), fold=1)

#: Pairs that ``==`` calls equal but that are not the same value.
NEAR_MISSES: dict[str, tuple[Any, Any]] = {
    "time fold": (dt.time(1, 30, fold=1), dt.time(1, 30)),
    "time timezone name": (
        dt.time(1, tzinfo=S.CEST),
        dt.time(1, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    ),
    "datetime fold": (dt.datetime(2024, 11, 3, 1, 30, fold=1), dt.datetime(2024, 11, 3, 1, 30)),
    "datetime fold zoneinfo": (FOLD_NY, FOLD_NY.replace(fold=0)),
    "datetime timezone name": (
        dt.datetime(2024, 7, 1, 12, tzinfo=S.CEST),
        dt.datetime(2024, 7, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    ),
    "datetime same instant elsewhere": (
        dt.datetime(2024, 7, 1, 12, tzinfo=S.CEST),
        dt.datetime(2024, 7, 1, 10, tzinfo=dt.timezone.utc),
    ),
    "datetime zoneinfo for timezone": (
        dt.datetime(2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
        dt.datetime(2024, 7, 1, 12, tzinfo=S.CEST),
    ),
    "timezone name": (S.CEST, dt.timezone(dt.timedelta(hours=2))),
    "deque maxlen": (collections.deque([1], maxlen=2), collections.deque([1])),
    "deque member type": (collections.deque([1]), collections.deque([True])),
    "set member": ({dt.time(1, fold=1)}, {dt.time(1)}),
    "set member type": ({1, "a"}, {True, "a"}),
    "frozenset member": (frozenset({S.CEST}), frozenset({dt.timezone(dt.timedelta(hours=2))})),
    "dict key": ({dt.time(1, fold=1): 0}, {dt.time(1): 0}),
    "list": ([FOLD_NY], [FOLD_NY.replace(fold=0)]),
    "dataclass field": (
        S.Point(1, tags=[collections.deque(maxlen=1)]),
        S.Point(1, tags=[collections.deque()]),
    ),
    "struct field": (
        S.Item(1, extra={"t": dt.time(1, fold=1)}),
        S.Item(1, extra={"t": dt.time(1)}),
    ),
    "pydantic field": (
        S.Model(name="m", when=FOLD_NY),
        S.Model(name="m", when=FOLD_NY.replace(fold=0)),
    ),
}


@pytest.mark.parametrize(("a", "b"), NEAR_MISSES.values(), ids=NEAR_MISSES.keys())
def test_assert_same_tells_near_misses_apart(a: Any, b: Any) -> None:
    """The comparison every round-trip, golden and twin test uses sees what ``==`` misses,
    and still takes a faithful copy for the same value."""
    assert a == b
    with pytest.raises(AssertionError):
        assert_same(a, b)
    assert_same(a, copy.deepcopy(a))
    assert_same(b, copy.deepcopy(b))


def test_private_attributes_keep_their_values(codec: Codec) -> None:
    m = S.WithPrivate(a=1)
    m._cache["k"] = 2
    out = codec.decode(codec.encode(m))
    assert out._cache == {"k": 2}
    assert out == m


def test_pydantic_fields_set_and_dumps_survive(codec: Codec) -> None:
    m = S.Model(name="n", count=0)
    out = codec.decode(codec.encode(m))
    assert out.model_fields_set == {"name", "count"}
    assert out.model_dump(exclude_unset=True) == {"name": "n", "count": 0}
    assert out.model_dump_json() == m.model_dump_json()


def test_pydantic_loads_without_validation() -> None:
    calls: list[int] = []

    class Checked(pydantic.BaseModel):
        a: int

        @pydantic.field_validator("a")
        @classmethod
        def count(cls, v: int) -> int:
            calls.append(v)
            return v

    codec = Codec(allow=[Checked])
    blob = codec.encode(Checked(a=5))
    calls.clear()
    assert codec.decode(blob) == Checked.model_construct(a=5)
    assert calls == []


def test_big_fields_set_bitmask(codec: Codec) -> None:
    wide = pydantic.create_model("Wide", **{f"f{i}": (int, 0) for i in range(70)})  # type: ignore[call-overload]
    value = wide(**{f"f{i}": i for i in range(0, 70, 3)})
    out = Codec(allow=[wide], impl=codec.impl).decode(Codec(allow=[wide]).encode(value))
    assert_same(value, out)


class TestLangChain:
    def messages(self) -> list[Any]:
        from langchain_core.messages import (
            AIMessage,
            AIMessageChunk,
            ChatMessage,
            FunctionMessage,
            HumanMessage,
            RemoveMessage,
            SystemMessage,
            ToolMessage,
        )

        return [
            SystemMessage("be brief"),
            HumanMessage(content=[{"type": "text", "text": "hi"}], id="h1", name="ada"),
            AIMessage(
                "calling",
                id="a1",
                tool_calls=[{"id": "c1", "name": "search", "args": {"q": "x", "n": 3}}],
                usage_metadata={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
                response_metadata={"model": "m"},
            ),
            ToolMessage("result", tool_call_id="c1", artifact={"raw": (1, 2)}),
            AIMessageChunk(content="part", id="a2", tool_call_chunks=[]),
            ChatMessage("x", role="critic"),
            FunctionMessage("f", name="fn"),
            RemoveMessage(id="h1"),
            AIMessage("extra kwarg", custom_field=[1, 2]),
        ]

    def test_every_message_type(self, codec: Codec) -> None:
        msgs = self.messages()
        out = codec.decode(codec.encode(msgs))
        assert_same(msgs, out)
        for a, b in zip(msgs, out):
            assert a.model_dump() == b.model_dump()
            assert a.model_fields_set == b.model_fields_set

    def test_generated_chat(self, codec: Codec) -> None:
        msgs = datagen.langchain_messages(60, seed=3)
        assert_same(msgs, codec.decode(codec.encode(msgs)))

    def test_document(self, codec: Codec) -> None:
        from langchain_core.documents import Document

        doc = Document(page_content="text", metadata={"source": "s", "page": 3}, id="d")
        assert_same(doc, codec.decode(codec.encode(doc)))


class TestLangGraph:
    def test_types_come_back_as_themselves(self, codec: Codec) -> None:
        from langgraph.types import Command, Interrupt, Overwrite, Send, TimeoutPolicy

        values = [
            Send("node", {"arg": [1, 2]}),
            Send("node", 1, timeout=5),
            Interrupt(value={"question": "ok?"}, id="i-1"),
            Command(goto=[Send("a", 1), "b"], update={"k": (1,)}, resume={"i-1": "yes"}),
            Overwrite([1, 2]),
            TimeoutPolicy(run_timeout=3.0),
        ]
        out = codec.decode(codec.encode(values))
        assert [type(v) for v in out] == [type(v) for v in values]
        assert out == values

    def test_store_item(self, codec: Codec) -> None:
        from langgraph.store.base import Item

        now = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
        item = Item(value={"a": 1}, key="k", namespace=("n", "s"), created_at=now, updated_at=now)
        out = codec.decode(codec.encode(item))
        assert type(out) is Item and out == item


class TestExceptions:
    def test_builtin(self, codec: Codec) -> None:
        for exc in [
            ValueError("bad", 1),
            KeyError("k"),
            OSError(2, "No such file", "/x"),
            UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
            StopIteration(5),
        ]:
            out = codec.decode(codec.encode(exc))
            assert type(out) is type(exc) and out.args == exc.args
            assert str(out) == str(exc)
        out = codec.decode(codec.encode(OSError(2, "No such file", "/x")))
        assert (out.errno, out.filename) == (2, "/x")

    def test_custom_with_attributes_and_notes(self, codec: Codec) -> None:
        exc = S.AppError("boom", code=7)
        if sys.version_info >= (3, 11):
            exc.add_note("while testing")
        else:  # add_note() came in 3.11; the notes are this attribute all the same
            exc.__notes__ = ["while testing"]
        out = codec.decode(codec.encode(exc))
        assert type(out) is S.AppError
        assert (out.args, out.code, out.__notes__) == (("boom", 7), 7, ["while testing"])

    def test_unencodable_arguments_are_stored_as_their_repr(self, codec: Codec) -> None:
        exc = RuntimeError("failed", object.__new__(S.Slotted))
        exc.handle = lambda: None  # type: ignore[attr-defined]
        out = codec.decode(codec.encode(exc))
        assert out.args[0] == "failed"
        assert out.args[1].startswith("<tests.codec.samples.Slotted object at ")
        assert out.handle.startswith("<function ")

    def test_strict_codec_stands_in_for_unregistered_classes(self) -> None:
        from snapstate.codec import StoredException

        strict = Codec(strict=True)
        out = strict.decode(strict.encode(S.AppError("boom", code=7)))
        assert type(out) is StoredException
        assert out.type_name == "tests.codec.samples.AppError"
        assert out.args == ("boom", 7) and out.attrs == {"code": 7}
        assert str(out) == "tests.codec.samples.AppError: ('boom', 7)"
        assert Codec(strict=True, allow=[S.AppError]).decode(strict.encode(S.AppError("b")))


class TestNumpy:
    @pytest.mark.parametrize(
        "array",
        [
            np.arange(12, dtype=np.int64).reshape(3, 4),
            np.array([1.5, np.nan, -np.inf], dtype=">f4"),
            np.array([[True, False]]),
            np.array(["ab", "c"]),
            np.array([b"x", b"yz"]),
            np.array(["2024-01-01", "NaT"], dtype="datetime64[ns]"),
            np.array([1 + 2j], dtype=np.complex128),
            np.zeros((0, 3), dtype=np.uint16),
            np.array(5, dtype=np.int8),
            np.arange(20).reshape(4, 5).T,
            np.arange(10)[::3],
        ],
        ids=lambda a: f"{a.dtype}{list(a.shape)}",
    )
    def test_arrays(self, codec: Codec, array: Any) -> None:
        out = codec.decode(codec.encode(array))
        assert_same(array, out)
        assert out.flags.writeable and out.flags.c_contiguous

    def test_scalars(self, codec: Codec) -> None:
        for scalar in [np.float64(1.5), np.int32(-3), np.bool_(True), np.uint8(255)]:
            out = codec.decode(codec.encode(scalar))
            assert type(out) is type(scalar) and out == scalar

    def test_object_arrays_are_refused(self, codec: Codec) -> None:
        with pytest.raises(EncodeError, match=r"numpy value of dtype `object`"):
            codec.encode({"a": np.array([object()])})


class TestLists:
    def test_decoded_lists_are_lists(self, codec: Codec) -> None:
        out = codec.decode(codec.encode([[1], (2,), {"a": [3]}]))
        assert type(out) is list and type(out[0]) is list and type(out[1]) is tuple
        out.append(4)  # a real list: the engine joins append-deltas onto it
        assert out == [[1], (2,), {"a": [3]}, 4]

    def test_append_delta_join(self, codec: Codec) -> None:
        msgs = datagen.langchain_messages(10)
        base = codec.decode(codec.encode(msgs[:6]))
        new = codec.decode(codec.encode(msgs[6:]))
        assert_same(msgs, base + new)


class TestCompression:
    def test_small_values_are_not_compressed(self, codec: Codec) -> None:
        # A str of n ASCII characters takes n + 3 bytes of MessagePack (str16 header).
        assert codec.encode("x" * (F.COMPRESS_THRESHOLD - 3))[1] == 0
        assert codec.encode("x" * (F.COMPRESS_THRESHOLD - 2))[1] == F.FLAG_LZ4

    def test_large_values_are_compressed(self, codec: Codec) -> None:
        value = datagen.chat_messages(20)
        blob = codec.encode(value)
        assert blob[1] & F.FLAG_LZ4
        uncompressed = Codec(compress_threshold=None, impl=codec.impl).encode(value)
        assert uncompressed[1] == 0 and len(blob) < len(uncompressed) * 0.7
        assert codec.decode(blob) == codec.decode(uncompressed) == value

    def test_incompressible_values_stay_uncompressed(self, codec: Codec) -> None:
        import random

        noise = random.Random(1).randbytes(50_000)
        assert codec.encode(noise)[1] == 0

    def test_threshold_is_configurable(self, codec: Codec) -> None:
        value = "word " * 100
        assert Codec(compress_threshold=16, impl=codec.impl).encode(value)[1] == F.FLAG_LZ4
        assert Codec(compress_threshold=10_000, impl=codec.impl).encode(value)[1] == 0
        with pytest.raises(ConfigurationError, match="compress_threshold must be an int"):
            Codec(compress_threshold=-1)


class TestRegistry:
    def test_register_is_a_decorator(self) -> None:
        @register
        @dataclasses.dataclass
        class Local:
            a: int

        assert_same(Local(1), decode(encode(Local(1))))

    def test_plain_classes_load_once_registered(self, codec: Codec) -> None:
        value = [S.Slotted(1, (2,)), S.Plain(a=1, b=[S.Point(2)])]
        with pytest.raises(EncodeError, match=r"unsupported type `tests\.codec\.samples\.Slotted`"):
            codec.encode(value)
        local = Codec(allow=[S.Slotted, S.Plain], impl=codec.impl)
        assert local.decode(local.encode(value)) == value

    def test_allow_takes_module_qualname_pairs(self, codec: Codec) -> None:
        local = Codec(allow=[("tests.codec.samples", "Slotted")], impl=codec.impl)
        assert local.decode(local.encode(S.Slotted(1, 2))) == S.Slotted(1, 2)

    def test_with_allow_derives_a_codec(self, codec: Codec) -> None:
        derived = codec.with_allow([S.Slotted])
        assert derived.decode(derived.encode(S.Slotted(1, 2))) == S.Slotted(1, 2)
        with pytest.raises(EncodeError):
            codec.encode(S.Slotted(1, 2))

    @pytest.mark.parametrize(
        ("item", "message"),
        [
            (3, "register() takes a class, got int 3"),
            (dict, "`dict` is a built-in type; it needs no registration"),
            (("only-one",), "an allowlist entry must be a class or a (module, qualname) pair"),
            (
                decimal.Context,
                "cannot register `decimal.Context`: it is not a dataclass, pydantic model, Enum, "
                "NamedTuple, msgspec Struct or exception, and it defines its own __new__, so it "
                "cannot be rebuilt from its attributes",
            ),
        ],
    )
    def test_register_refuses(self, item: Any, message: str) -> None:
        with pytest.raises(ConfigurationError) as info:
            Codec(allow=[item])
        assert str(info.value).startswith(message)

    def test_imported_plain_types_load_unregistered(self, codec: Codec) -> None:
        assert_same(S.Point(1), codec.decode(codec.encode(S.Point(1))))

    def test_strict_codec_refuses_unregistered_types(self) -> None:
        strict = Codec(strict=True)
        with pytest.raises(EncodeError):
            strict.encode(S.Point(1))
        assert Codec(strict=True, allow=[S.Point]).encode(S.Point(1))

    def test_enum_members_are_found_by_value(self, codec: Codec) -> None:
        class Shade(enum.Enum):
            DARK = (0, 0)

        local = Codec(allow=[Shade], impl=codec.impl)
        assert local.decode(local.encode(Shade.DARK)) is Shade.DARK


class TestSchemaEvolution:
    """A class changed since a value was stored: added fields take their defaults."""

    def swap(self, old: type, new: type) -> None:
        new.__qualname__ = old.__qualname__ = "Evolving"
        new.__module__ = old.__module__ = __name__

    def test_dataclass_gains_a_field(self, codec: Codec) -> None:
        @dataclasses.dataclass
        class Old:
            a: int

        @dataclasses.dataclass
        class New:
            a: int
            b: list[int] = dataclasses.field(default_factory=lambda: [9])

        self.swap(Old, New)
        blob = Codec(allow=[Old]).encode(Old(1))
        assert Codec(allow=[New], impl=codec.impl).decode(blob) == New(1, [9])

    def test_pydantic_gains_and_loses_fields(self, codec: Codec) -> None:
        class Old(pydantic.BaseModel):
            a: int
            gone: str = "x"

        class New(pydantic.BaseModel):
            a: int
            b: int = 5
            c: list[int] = pydantic.Field(default_factory=list)

        self.swap(Old, New)
        blob = Codec(allow=[Old]).encode(Old(a=1))
        out = Codec(allow=[New], impl=codec.impl).decode(blob)
        assert out == New(a=1) and out.__dict__ == {"a": 1, "b": 5, "c": []}

    def test_struct_gains_and_loses_fields(self, codec: Codec) -> None:
        """A stored field the Struct no longer has is dropped; a new one takes its default."""

        class Old(msgspec.Struct):
            a: int
            gone: str = "x"

        class New(msgspec.Struct):
            a: int
            b: int = 5
            c: list[int] = msgspec.field(default_factory=list)

        self.swap(Old, New)
        blob = Codec(allow=[Old]).encode(Old(a=1, gone="stored"))
        out = Codec(allow=[New], impl=codec.impl).decode(blob)
        assert_same(New(a=1, b=5, c=[]), out)
        assert not hasattr(out, "gone")

    def test_a_field_without_default_is_a_decode_error(self, codec: Codec) -> None:
        from snapstate.errors import DecodeError

        @dataclasses.dataclass
        class Old:
            a: int

        @dataclasses.dataclass
        class New:
            a: int
            b: int

        self.swap(Old, New)
        blob = Codec(allow=[Old]).encode(Old(1))
        with pytest.raises(DecodeError) as info:
            Codec(allow=[New], impl=codec.impl).decode(blob)
        assert str(info.value) == (
            "cannot decode value: stored `tests.codec.test_roundtrip.Evolving` lacks field "
            "`b`, which has no default"
        )


def test_module_level_api_uses_the_default_codec() -> None:
    from snapstate.codec import IMPL, default_codec

    assert IMPL in ("python", "native") and default_codec.impl == IMPL
    assert decode(encode({"a": (1,)})) == {"a": (1,)}


def test_one_codec_shared_by_threads(codec: Codec) -> None:
    """A codec (and its caches) serves many threads at once."""
    import threading

    values = [datagen.langchain_messages(20, seed=s, max_chars=600) for s in range(4)]
    blobs = [codec.encode(v) for v in values]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(30):
                assert codec.encode(values[i]) == blobs[i]
                assert codec.decode(blobs[i]) == values[i]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
