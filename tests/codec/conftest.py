"""Fixtures for the codec tests.

``codec`` is a codec of the implementation in use (``snapstate.codec.IMPL``, which
``SNAPSTATE_IMPL`` picks: ``make test`` runs everything once per implementation). ``twins``
gives both implementations side by side, for the tests that compare them in one process.
"""

from __future__ import annotations

import pytest

from snapstate.codec import Codec
from snapstate.codec._api import IMPLEMENTATIONS


@pytest.fixture
def codec() -> Codec:
    return Codec()


@pytest.fixture(params=sorted(IMPLEMENTATIONS), ids=lambda name: f"impl={name}")
def each_impl(request: pytest.FixtureRequest) -> Codec:
    """A codec of each available implementation (for error messages both must share)."""
    return Codec(impl=request.param)


@pytest.fixture
def twins() -> tuple[Codec, Codec]:
    if "native" not in IMPLEMENTATIONS:
        pytest.skip("the compiled codec is not built")
    return Codec(impl="python"), Codec(impl="native")
