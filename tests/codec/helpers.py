"""Assertions shared by the codec tests."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import math
from typing import Any

import msgspec
import pydantic


def _is_same(a: Any, b: Any) -> bool:
    try:
        assert_same(a, b)
    except AssertionError:
        return False
    return True


def assert_same(a: Any, b: Any, path: str = "$") -> None:
    """``b`` equals ``a`` and has the same type at every level (tuples stay tuples, ...).

    Stricter than ``==`` where ``==`` overlooks what a value keeps: a time's or datetime's
    ``fold``, wall clock and timezone (``==`` of aware values compares instants), a
    timezone's name, a deque's ``maxlen``, and the members of sets one by one.
    """
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, (dt.datetime, dt.time)):
        fields = ("hour", "minute", "second", "microsecond", "fold")
        if isinstance(a, dt.datetime):
            fields = ("year", "month", "day", *fields)
        for name in fields:
            x, y = getattr(a, name), getattr(b, name)
            assert x == y, f"{path}.{name}: {x!r} != {y!r} ({a!r} != {b!r})"
        assert type(a.tzinfo) is type(b.tzinfo), f"{path}.tzinfo: {a.tzinfo!r} != {b.tzinfo!r}"
        assert a.tzname() == b.tzname(), f"{path}.tzname(): {a.tzname()!r} != {b.tzname()!r}"
        assert a.utcoffset() == b.utcoffset(), f"{path}.utcoffset(): {a!r} != {b!r}"
        assert_same(a.tzinfo, b.tzinfo, f"{path}.tzinfo")
    elif isinstance(a, dt.timezone):
        assert a.tzname(None) == b.tzname(None), f"{path}: name of {a!r} != {b!r}"
        assert a.utcoffset(None) == b.utcoffset(None), f"{path}: offset of {a!r} != {b!r}"
    elif isinstance(a, collections.deque):
        assert a.maxlen == b.maxlen, f"{path}: maxlen {a.maxlen!r} != {b.maxlen!r}"
        assert_same(list(a), list(b), path)
    elif isinstance(a, (set, frozenset)):
        assert len(a) == len(b), f"{path}: {a!r} != {b!r}"
        # Pair each member with the member of b it equals (NaN equals nothing: search).
        members = {y: y for y in b}
        for x in a:
            y = members.get(x, members)
            if y is members:
                y = next((y for y in b if _is_same(x, y)), members)
            assert y is not members, f"{path}: {x!r} is missing from {b!r}"
            assert_same(x, y, f"{path}{{{x!r}}}")
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for (ka, va), kb in zip(a.items(), b):
            assert_same(ka, kb, f"{path}{{key}}")
            assert_same(va, b[kb], f"{path}[{ka!r}]")
    elif isinstance(a, (list, tuple)) and not hasattr(a, "_fields"):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, decimal.Decimal):
        assert str(a) == str(b), f"{path}: {a!r} != {b!r}"
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or a == b, f"{path}: {a!r} != {b!r}"
        assert math.copysign(1, a) == math.copysign(1, b), f"{path}: sign of {a!r}"
    elif isinstance(a, pydantic.BaseModel):
        # What the model's == compares, value by value (so that NaN matches NaN).
        assert a.model_fields_set == b.model_fields_set, f"{path}: fields set"
        assert_same(a.__pydantic_extra__, b.__pydantic_extra__, f"{path}: extra")
        assert_same(a.__pydantic_private__, b.__pydantic_private__, f"{path}: private")
        assert_same(a.__dict__, b.__dict__, f"{path}.__dict__")
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, msgspec.Struct):
        for name in a.__struct_fields__:
            assert_same(getattr(a, name), getattr(b, name), f"{path}.{name}")
    elif isinstance(a, BaseException):
        assert_same(a.args, b.args, f"{path}.args")
        assert_same(getattr(a, "__dict__", {}), getattr(b, "__dict__", {}), f"{path}.__dict__")
    elif type(a).__module__ == "numpy":
        import numpy as np

        assert a.dtype == b.dtype and np.shape(a) == np.shape(b), f"{path}: {a!r} != {b!r}"
        assert a.tobytes() == b.tobytes(), f"{path}: {a!r} != {b!r}"
    elif hasattr(a, "_fields"):
        # A named tuple: field by field (a == b would fail on a NaN field).
        for name in a._fields:
            assert_same(getattr(a, name), getattr(b, name), f"{path}.{name}")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
