"""Hypothesis strategies for values the codec stores."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import zoneinfo
from typing import Any

from hypothesis import strategies as st

from . import samples as S

TIMEZONES = st.sampled_from(
    [
        None,
        dt.timezone.utc,
        dt.timezone(dt.timedelta(hours=-3, minutes=-30)),
        dt.timezone(dt.timedelta(hours=9), "JST"),
        zoneinfo.ZoneInfo("Europe/Paris"),
        zoneinfo.ZoneInfo("America/New_York"),
    ]
)

#: Every code point, lone surrogates included.
TEXT = st.text(st.characters(exclude_categories=()), max_size=40)

INTS = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**65),
    st.integers(),
    st.sampled_from([0, 127, 128, -32, -33, 2**63, 2**64 - 1, 2**64, -(2**63) - 1]),
)

#: Addresses, and the interfaces and networks around them, IPv4 and IPv6.
IP_VALUES = st.one_of(
    st.ip_addresses(),
    st.builds(
        lambda a, n: ipaddress.ip_interface((a, n % (a.max_prefixlen + 1))),
        st.ip_addresses(),
        st.integers(0, 128),
    ).flatmap(lambda i: st.sampled_from([i, i.network])),
)

#: Compiled patterns of every flag a stored pattern may carry.
PATTERNS = st.one_of(
    st.builds(
        re.compile,
        st.text(st.characters(exclude_categories=()), max_size=12).map(re.escape),
        st.sampled_from([0, re.I, re.M | re.S, re.X, re.A, re.U | re.I]),
    ),
    st.builds(re.compile, st.binary(max_size=12).map(re.escape), st.sampled_from([0, re.L])),
)

HASHABLE_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    INTS,
    st.floats(allow_nan=False),
    TEXT,
    st.binary(max_size=40),
    st.dates(),
    st.datetimes(timezones=TIMEZONES, allow_imaginary=False),
    st.uuids(),
    st.decimals(allow_nan=False),
    st.sampled_from(list(S.Color) + list(S.Level)),
    IP_VALUES,
    PATTERNS,
)

SCALARS = st.one_of(
    HASHABLE_SCALARS,
    st.floats(),
    st.times(timezones=TIMEZONES),
    st.timedeltas(),
    st.builds(bytearray, st.binary(max_size=20)),
)

HASHABLE = st.recursive(
    HASHABLE_SCALARS,
    lambda inner: st.one_of(
        st.tuples(inner, inner),
        st.frozensets(inner, max_size=3),
        st.builds(S.Pair, inner, inner),
    ),
    max_leaves=6,
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(TEXT, inner, max_size=5),
        st.dictionaries(HASHABLE, inner, max_size=3),
        st.sets(HASHABLE, max_size=4),
        st.frozensets(HASHABLE, max_size=4),
        st.builds(S.Point, INTS, st.floats(allow_nan=False), st.lists(TEXT, max_size=2)),
        st.builds(S.Pair, inner, inner),
        st.builds(S.Item, INTS, TEXT, st.dictionaries(TEXT, inner, max_size=2)),
        st.builds(S.Model, name=TEXT, count=st.integers(-5, 5), tags=st.lists(TEXT, max_size=2)),
        st.builds(S.Loose, a=st.integers(), b=inner),
    )


#: Nested values of every supported kind.
VALUES = st.recursive(SCALARS, _containers, max_leaves=25)
