"""The pure-Python codec and its compiled twin: same bytes, same values, same failures."""

from __future__ import annotations

import ast
import inspect
import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest
from benchmarks import datagen
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapstate.codec import Codec, _py
from snapstate.codec._api import IMPLEMENTATIONS
from snapstate.codec._registry import Registry, Resolver
from snapstate.errors import EncodeError

from . import samples as S
from .helpers import assert_same
from .strategies import VALUES

ROOT = pathlib.Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_twins_agree(twins: tuple[Codec, Codec], value: Any) -> bytes:
    """Both twins write the same bytes, and each reads them back as ``value`` exactly
    (``assert_same``: fold, timezone names and maxlen included)."""
    py, native = twins
    a = py.encode(value)
    b = native.encode(value)
    assert a == b
    from_py, from_native = py.decode(b), native.decode(a)
    assert_same(value, from_py)
    assert_same(value, from_native)
    assert_same(from_py, from_native)
    return a


DATASETS = {
    "chat": lambda: datagen.langchain_messages(100),
    "chat dicts": lambda: datagen.chat_messages(50),
    "wide": lambda: datagen.wide_state(300),
    "plain": lambda: datagen.plain_data(300),
    "blob": lambda: datagen.semi_compressible_blob(200_000),
    "agent": lambda: datagen.agent_state(7),
    "golden": lambda: S.GOLDEN,
    "subtle": lambda: S.SUBTLE,
}


@pytest.mark.parametrize("make", DATASETS.values(), ids=DATASETS.keys())
def test_datasets(twins: tuple[Codec, Codec], make: Any) -> None:
    assert_twins_agree(twins, make())


@pytest.mark.parametrize("threshold", [None, 0, 64])
def test_compression_settings(threshold: int | None) -> None:
    if "native" not in IMPLEMENTATIONS:
        pytest.skip("the compiled codec is not built")
    value = datagen.chat_messages(5)
    twins = (
        Codec(impl="python", compress_threshold=threshold),
        Codec(impl="native", compress_threshold=threshold),
    )
    assert_twins_agree(twins, value)


def test_native_calls_lz4_holding_the_gil() -> None:
    """The compiled twin found lz4.block's own LZ4 functions (else it would fall back to
    lz4.block, which gives up the GIL on every call: see ext/_codec.pyx)."""
    if "native" not in IMPLEMENTATIONS:
        pytest.skip("the compiled codec is not built")
    assert IMPLEMENTATIONS["native"]._LZ4_DIRECT is True


def test_native_hashes_holding_the_gil() -> None:
    """The compiled twin found xxhash's own XXH3 function (else it would call xxhash, which
    gives up the GIL for a large buffer: see ext/_codec.pyx); its checksums are the pure
    twin's, whatever the length."""
    if "native" not in IMPLEMENTATIONS:
        pytest.skip("the compiled codec is not built")
    assert IMPLEMENTATIONS["native"]._XXH3_DIRECT is True
    py, native = (
        Codec(impl="python", compress_threshold=None),
        Codec(impl="native", compress_threshold=None),
    )
    for n in (0, 1, 16, 17, 128, 129, 240, 241, 1000, 100_000, 1_000_003):
        value = bytes(range(256)) * (n // 256) + bytes(n % 256)
        assert native.encode(value) == py.encode(value)


@FUZZ
@given(
    st.lists(
        st.one_of(st.binary(max_size=300), st.sampled_from([b"abc", b" ", b"snapstate" * 40])),
        max_size=400,
    ),
    st.sampled_from([0, 64, 1024]),
)
def test_lz4_bytes_match_lz4_block(parts: list[bytes], threshold: int) -> None:
    """Compressed bodies of every size and shape are byte for byte lz4.block's."""
    if "native" not in IMPLEMENTATIONS:
        pytest.skip("the compiled codec is not built")
    twins = (
        Codec(impl="python", compress_threshold=threshold),
        Codec(impl="native", compress_threshold=threshold),
    )
    assert_twins_agree(twins, b"".join(parts))


@FUZZ
@given(VALUES)
def test_any_value(value: Any) -> None:
    if "native" not in IMPLEMENTATIONS:
        pytest.skip("the compiled codec is not built")
    assert_twins_agree((Codec(impl="python"), Codec(impl="native")), value)


class Opaque:
    """Not storable: the twins must refuse it at the same place, with the same words."""


@FUZZ
@given(VALUES, st.data())
def test_same_failures(value: Any, data: st.DataObject) -> None:
    if "native" not in IMPLEMENTATIONS:
        pytest.skip("the compiled codec is not built")
    # Put an unstorable object somewhere inside the value.
    spot = data.draw(st.sampled_from(["list", "dict", "key", "tuple", "model"]))
    bad: Any = Opaque()
    wrapped = {
        "list": [value, bad],
        "dict": {"v": value, "x y": {"z": bad}},
        "key": {(1, bad): value},
        "tuple": (value, [bad]),
        "model": S.Loose(a=1, extra=[value, bad]),
    }[spot]
    messages = []
    for impl in ("python", "native"):
        with pytest.raises(EncodeError) as info:
            Codec(impl=impl).encode(wrapped, where="channel 'c'")
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith("cannot encode channel 'c': unsupported type ")


def test_failures_leave_the_codec_usable(twins: tuple[Codec, Codec]) -> None:
    for codec in twins:
        with pytest.raises(EncodeError):
            codec.encode([1, "x" * 10_000, Opaque()])
        assert codec.decode(codec.encode([1, 2])) == [1, 2]


def test_every_native_symbol_has_a_python_twin() -> None:
    if "native" not in IMPLEMENTATIONS:
        pytest.skip("the compiled codec is not built")
    native = IMPLEMENTATIONS["native"]
    public = sorted(n for n in dir(native) if not n.startswith("_"))
    assert public == sorted(native.__all__) == sorted(_py.__all__)
    for name in public:
        ours, theirs = getattr(native, name), getattr(_py, name)
        assert inspect.isclass(ours) == inspect.isclass(theirs), name
    # Core instances: every public attribute of the native one exists on the Python one.
    resolver = Resolver(Registry(), strict=False)
    ours, theirs = native.Core(resolver, None), _py.Core(resolver, None)
    members = {m for m in dir(ours) if not m.startswith("_")}
    assert members == {"encode", "decode", "resolver", "compress_threshold"}
    assert members <= {m for m in dir(theirs) if not m.startswith("_")}


def test_the_stub_describes_the_native_module() -> None:
    if "native" not in IMPLEMENTATIONS:
        pytest.skip("the compiled codec is not built")
    native = IMPLEMENTATIONS["native"]
    tree = ast.parse((ROOT / "src/snapstate/codec/_native.pyi").read_text())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    assert set(classes) == set(native.__all__)
    for name, node in classes.items():
        stubbed = {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
        instance = getattr(native, name)(Resolver(Registry(), strict=False), None)
        actual = {m for m in dir(instance) if not m.startswith("_")}
        assert actual == stubbed - {"__init__"}


def run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SNAPSTATE_")}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


class TestChoice:
    """The implementation is chosen once, at import; SNAPSTATE_IMPL forces one."""

    def test_forced(self) -> None:
        for impl in ("python", "native"):
            if impl not in IMPLEMENTATIONS:
                continue
            out = run("import snapstate.codec as c; print(c.IMPL)", SNAPSTATE_IMPL=impl)
            assert out.stdout.strip() == impl, out.stderr

    def test_best_available_by_default(self) -> None:
        out = run("import snapstate.codec as c; print(c.IMPL)")
        assert out.stdout.strip() == ("native" if "native" in IMPLEMENTATIONS else "python")

    def test_unknown_name_fails_loudly(self) -> None:
        out = run("import snapstate.codec", SNAPSTATE_IMPL="cython")
        assert out.returncode != 0
        assert (
            "ImportError: SNAPSTATE_IMPL='cython' is not an implementation of snapstate.codec: "
            "use 'python', 'native', or leave it empty for the best available"
        ) in out.stderr

    HIDE_NATIVE = "import sys; sys.modules['snapstate.codec._native'] = None; "

    def test_missing_native_fails_loudly_when_forced(self) -> None:
        out = run(self.HIDE_NATIVE + "import snapstate.codec", SNAPSTATE_IMPL="native")
        assert out.returncode != 0
        assert (
            "ImportError: SNAPSTATE_IMPL=native, but the compiled codec snapstate.codec._native "
            "cannot be imported (import of snapstate.codec._native halted; None in sys.modules). "
            "Build it with `python setup.py build_ext --inplace` (or install a wheel), or unset "
            "SNAPSTATE_IMPL to use the pure-Python codec."
        ) in out.stderr

    def test_missing_native_falls_back_to_python(self) -> None:
        out = run(self.HIDE_NATIVE + "import snapstate.codec as c; print(c.IMPL)")
        assert out.stdout.strip() == "python", out.stderr

    def test_strict_default_codec_from_the_environment(self) -> None:
        code = "import snapstate.codec as c; print(c.default_codec.strict)"
        assert run(code, SNAPSTATE_STRICT="1").stdout.strip() == "True"
        assert run(code).stdout.strip() == "False"
