"""Module-level sample types and values for the codec tests.

They live in a module of their own so that their stored names (``tests.codec.samples:Point``)
stay the same for the golden files.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import enum
import ipaddress
import pathlib
import re
import uuid
import zoneinfo
from typing import Any, NamedTuple

import msgspec
import pydantic


@dataclasses.dataclass
class Point:
    x: int
    y: float = 0.0
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Frozen:
    name: str
    size: int = 1


@dataclasses.dataclass
class WithInitFalse:
    a: int
    b: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        self.b = self.a * 2


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


class Pair(NamedTuple):
    left: Any
    right: Any = None


Legacy = collections.namedtuple("Legacy", ["a", "b"])


class Item(msgspec.Struct):
    id: int
    label: str = ""
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


class FrozenItem(msgspec.Struct, frozen=True, array_like=True):
    a: int
    b: str


class Model(pydantic.BaseModel):
    name: str
    count: int = 0
    tags: list[str] = pydantic.Field(default_factory=list)
    when: dt.datetime | None = None


class Loose(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")

    a: int = 1


class WithPrivate(pydantic.BaseModel):
    a: int
    _cache: dict[str, int] = pydantic.PrivateAttr(default_factory=dict)


class Aliased(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(populate_by_name=True)

    full_name: str = pydantic.Field(alias="fullName")


class Nested(pydantic.BaseModel):
    inner: Model
    points: list[Point] = []


class Ints(pydantic.RootModel[list[int]]):
    pass


class FrozenModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)

    key: str


class AppError(Exception):
    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message, code)
        self.code = code


class Slotted:
    """A plain class: stored only when registered."""

    __slots__ = ("a", "b")

    def __init__(self, a: Any, b: Any) -> None:
        self.a = a
        self.b = b

    def __eq__(self, other: object) -> bool:
        return type(other) is Slotted and (self.a, self.b) == (other.a, other.b)


class Plain:
    """A plain class with a __dict__: stored only when registered."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)

    def __eq__(self, other: object) -> bool:
        return type(other) is Plain and vars(self) == vars(other)


#: Values whose encoding is pinned by tests/codec/golden/ (deterministic across runs).
GOLDEN: dict[str, Any] = {
    "none": None,
    "bools": [True, False],
    "ints": [
        0,
        1,
        127,
        128,
        255,
        256,
        65535,
        65536,
        2**32,
        2**63,
        2**64 - 1,
        -1,
        -32,
        -33,
        -128,
        -129,
        -(2**15),
        -(2**31),
        -(2**63),
    ],
    "bigints": [2**64, -(2**63) - 1, 10**40, -(10**40)],
    "floats": [0.0, -0.0, 1.5, -2.25, 1e300, float("inf"), float("-inf")],
    "strs": ["", "a", "é", "日本", "x" * 31, "y" * 32, "z" * 300, "a\ud800b"],
    "bytes": [b"", b"\x00\xff", b"b" * 300, bytearray(b"ba")],
    "containers": {"list": [1, [2, [3]]], "tuple": (1, (2,), ()), "empty": [{}, [], ()]},
    "sets": [{3, 1, 2}, frozenset({"b", "a"}), set()],
    "keys": {
        1: "int",
        1.5: "float",
        None: "none",
        b"k": "bytes",
        (1, "a"): "tuple",
        frozenset({1}): "frozenset",
    },
    "datetimes": [
        dt.datetime(2024, 5, 6, 7, 8, 9, 123456),
        dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc),
        dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=-5), "EST")),
        dt.datetime(2024, 11, 3, 1, 30, tzinfo=zoneinfo.ZoneInfo("America/New_York"), fold=1),
        dt.date(1999, 12, 31),
        dt.time(23, 59, 59, 999999),
        dt.time(1, 2, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        dt.timedelta(days=-1, seconds=5, microseconds=7),
    ],
    "misc": [
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        decimal.Decimal("-1.50"),
        decimal.Decimal("NaN"),
        pathlib.PurePosixPath("/a/b"),
        pathlib.PureWindowsPath("C:/x/y"),
        pathlib.PosixPath("rel/p"),
        collections.deque([1, 2]),
        collections.deque([3], maxlen=4),
    ],
    "objects": [
        Point(1, 2.5, ["t"]),
        Frozen(name="f"),
        Color.GREEN,
        Level.HIGH,
        Perm.R | Perm.W,
        Pair(1, (2, 3)),
        Legacy(1, 2),
        Item(7, "seven"),
        FrozenItem(1, "b"),
        Model(name="m", count=2, when=dt.datetime(2020, 1, 1)),
        Loose(a=2, b="extra"),
        Ints([1, 2]),
    ],
    "exceptions": [ValueError("bad", 3), KeyError("k"), AppError("boom", code=7)],
    "netre": [
        ipaddress.IPv4Address("192.0.2.1"),
        ipaddress.IPv6Address("fe80::1%eth0"),
        ipaddress.IPv4Network("10.0.0.0/8"),
        ipaddress.IPv6Network("2001:db8::/32"),
        ipaddress.IPv4Interface("192.0.2.1/24"),
        ipaddress.IPv6Interface("::1/128"),
        re.compile("a+b", re.IGNORECASE | re.MULTILINE),
        re.compile(b"[0-9]+", re.DOTALL),
    ],
}


CEST = dt.timezone(dt.timedelta(hours=2), "CEST")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")

#: Values ``==`` cannot tell from a near miss (a lost ``fold``, timezone name or ``maxlen``,
#: another timezone at the same instant): only a strict comparison checks they come back whole.
SUBTLE: dict[str, Any] = {
    "time fold": dt.time(1, 30, fold=1),
    "time fold named timezone": dt.time(1, 30, tzinfo=CEST, fold=1),
    "datetime fold": dt.datetime(2024, 11, 3, 1, 30, fold=1),
    "datetime fold zoneinfo": dt.datetime(2024, 11, 3, 1, 30, tzinfo=NEW_YORK, fold=1),
    "datetime fold named timezone": dt.datetime(2024, 10, 27, 2, 30, tzinfo=CEST, fold=1),
    "named timezone": CEST,
    "time named timezone": dt.time(12, tzinfo=CEST),
    "datetime named timezone": dt.datetime(2024, 7, 1, 12, tzinfo=CEST),
    "deque maxlen": collections.deque([1, 2, 3], maxlen=3),
    "empty deque maxlen": [collections.deque(maxlen=0), collections.deque(maxlen=5)],
    "nested": {
        "set": {dt.time(1, 30, fold=1), dt.datetime(2024, 11, 3, 1, 30, fold=1)},
        "frozenset": frozenset({CEST, dt.time(2, tzinfo=CEST)}),
        dt.time(1, 30, fold=1): "time key",
        (CEST, dt.datetime(2024, 11, 3, 1, 30, tzinfo=NEW_YORK, fold=1)): "tuple key",
        "deques": [collections.deque([collections.deque([1], maxlen=2)], maxlen=1)],
        "fields": [Point(1, tags=["x"]), Item(1, extra={"when": dt.time(1, fold=1)})],
        "model": Model(name="m", when=dt.datetime(2024, 11, 3, 1, 30, tzinfo=NEW_YORK, fold=1)),
    },
}
