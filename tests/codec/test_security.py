"""Stored bytes are data: loading never imports, never calls what a name resolves to unless it is
an allowed class, and never runs a module's or a metaclass's ``__getattr__``."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from typing import Any

import msgspec
import pytest

from snapstate.codec import Codec, StoredException
from snapstate.codec import _format as F
from snapstate.errors import DecodeError, EncodeError, UnregisteredTypeError

from . import samples as S

NOT_ALLOWED = (
    " (hint: allow it with snapstate.codec.register(cls) before loading, or pass it in a "
    "saver's allowlist (allow=[cls]))"
)
NOT_PLAIN = (
    "it is not registered, and it is not a plain data type (dataclass, pydantic model, Enum, "
    "NamedTuple or msgspec Struct)"
)


def ext_blob(code: int, payload: Any) -> bytes:
    body = msgspec.msgpack.encode(msgspec.msgpack.Ext(code, msgspec.msgpack.encode(payload)))
    return F.header(0, body) + body


#: The same attack in every shape a typed value can take.
PAYLOADS = {
    "pydantic": (F.EXT_PYDANTIC, ["os:system", {"command": "touch /tmp/pwned"}, 0]),
    "dataclass": (F.EXT_DATACLASS, ["os:system", {"command": "touch /tmp/pwned"}]),
    "struct": (F.EXT_STRUCT, ["os:system", {"command": "touch /tmp/pwned"}]),
    "object": (F.EXT_OBJECT, ["os:system", {"command": "touch /tmp/pwned"}]),
    "enum": (F.EXT_ENUM, ["os:system", "touch /tmp/pwned"]),
    "namedtuple": (F.EXT_NAMEDTUPLE, ["os:system", ["touch /tmp/pwned"]]),
}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Records any call of os.system, os.popen or subprocess.Popen."""
    seen: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *a, **k: seen.append(("system", a)))
    monkeypatch.setattr(os, "popen", lambda *a, **k: seen.append(("popen", a)))
    monkeypatch.setattr(subprocess.Popen, "__init__", lambda *a, **k: seen.append(("Popen", a)))
    return seen


@pytest.mark.parametrize(("code", "payload"), PAYLOADS.values(), ids=PAYLOADS.keys())
def test_os_system_is_a_clear_error(
    each_impl: Codec, calls: list[Any], code: int, payload: Any
) -> None:
    with pytest.raises(UnregisteredTypeError) as info:
        each_impl.decode(ext_blob(code, payload), where="channel 'x'")
    assert str(info.value) == (
        f"cannot decode channel 'x': type `os.system` may not load: {NOT_PLAIN}" + NOT_ALLOWED
    )
    assert calls == []


def test_os_system_as_an_exception_is_inert(each_impl: Codec, calls: list[Any]) -> None:
    out = each_impl.decode(ext_blob(F.EXT_EXCEPTION, ["os:system", ["touch /tmp/pwned"]]))
    assert type(out) is StoredException
    assert (out.type_name, out.args) == ("os.system", ("touch /tmp/pwned",))
    assert calls == []


@pytest.mark.parametrize(
    "name",
    [
        "builtins:eval",
        "builtins:exec",
        "subprocess:Popen",
        "pickle:loads",
        "posix:system",
        "builtins:type",
        "importlib:import_module",
        "ctypes:CDLL",
    ],
)
def test_other_callables_never_load(each_impl: Codec, calls: list[Any], name: str) -> None:
    for code, payload in PAYLOADS.values():
        data = ext_blob(code, [name, *payload[1:]])
        with pytest.raises((UnregisteredTypeError, DecodeError)):
            each_impl.decode(data)
    assert calls == []


def test_loading_never_imports(each_impl: Codec) -> None:
    name = "snapstate_codec_test_never_imported"
    data = ext_blob(F.EXT_DATACLASS, [f"{name}:Evil", {}])
    with pytest.raises(UnregisteredTypeError) as info:
        each_impl.decode(data)
    assert str(info.value) == (
        f"cannot decode value: type `{name}.Evil` may not load: it is not registered, and its "
        f"module `{name}` is not imported (loading never imports)" + NOT_ALLOWED
    )
    assert name not in sys.modules


def test_loading_never_imports_a_module_that_exists(
    each_impl: Codec, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module that could be imported (it is on ``sys.path``) and would run code when it is:
    a blob naming it neither imports it nor runs that code."""
    name = "snapstate_codec_test_importable"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nclass Evil:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    for code, payload in PAYLOADS.values():
        with pytest.raises(UnregisteredTypeError, match="is not imported"):
            each_impl.decode(ext_blob(code, [f"{name}:Evil", *payload[1:]]))
    stored = each_impl.decode(ext_blob(F.EXT_EXCEPTION, [f"{name}:Evil", ["x"]]))
    assert type(stored) is StoredException  # an exception of a module not imported: inert
    assert name not in sys.modules and not marker.exists()


class RecordingError(Exception):
    """An exception whose own constructors record every call (none may run on load)."""

    made: list[tuple[Any, ...]] = []

    def __new__(cls, *args: Any) -> RecordingError:
        RecordingError.made.append(("__new__", *args))
        return super().__new__(cls, *args)

    def __init__(self, *args: Any) -> None:
        RecordingError.made.append(("__init__", *args))
        super().__init__(*args)


def test_a_stored_exception_is_built_without_its_class_s_own_code(each_impl: Codec) -> None:
    RecordingError.made.clear()
    name = f"{__name__}:RecordingError"
    out = each_impl.decode(ext_blob(F.EXT_EXCEPTION, [name, ["boom", 1], {"code": 7}]))
    assert type(out) is RecordingError and out.args == ("boom", 1) and out.code == 7  # type: ignore[attr-defined]
    assert RecordingError.made == []  # built through BaseException, not RecordingError


@pytest.mark.parametrize("attribute", ["__class__", "__dict__", "__reduce_ex__", "__setstate__"])
@pytest.mark.parametrize("kind", ["object", "exception"])
def test_special_attributes_are_refused(each_impl: Codec, attribute: str, kind: str) -> None:
    codec = Codec(allow=[S.Plain], impl=each_impl.impl)
    if kind == "object":
        data = ext_blob(F.EXT_OBJECT, ["tests.codec.samples:Plain", {attribute: "x"}])
    else:
        data = ext_blob(F.EXT_EXCEPTION, ["builtins:ValueError", ["v"], {attribute: "x"}])
    with pytest.raises(DecodeError) as info:
        codec.decode(data)
    assert str(info.value) == (f"cannot decode value: malformed {kind}: attribute '{attribute}'")


def test_unknown_extension_types_never_unpickle(each_impl: Codec) -> None:
    """Every extension code the format does not define is refused as such, even when its
    payload is a pickle (one that would call RecordingError when loaded)."""
    import pickle

    payload = pickle.dumps(RecordingError("pickled"))
    RecordingError.made.clear()
    for code in range(-128, 128):
        if code in F.EXT_NAMES:
            continue
        body = msgspec.msgpack.encode(msgspec.msgpack.Ext(code, payload))
        with pytest.raises(DecodeError) as info:
            each_impl.decode(F.header(0, body) + body)
        if code != -1:  # -1 is MessagePack's own timestamp: refused as a malformed one
            assert str(info.value).endswith(f"unknown extension type {code}"), str(info.value)
    assert RecordingError.made == []


def test_registering_a_class_takes_effect_at_once(each_impl: Codec) -> None:
    """A codec that refused a class stores and loads it as soon as it is registered (what it
    remembered about the class is forgotten)."""
    codec = Codec(impl=each_impl.impl)
    with pytest.raises(EncodeError):
        codec.encode(S.Slotted(1, 2))
    with pytest.raises(UnregisteredTypeError):
        codec.decode(ext_blob(F.EXT_OBJECT, ["tests.codec.samples:Slotted", {"a": 1, "b": 2}]))
    codec.register(S.Slotted)
    out = codec.decode(codec.encode(S.Slotted(1, 2)))
    assert (type(out), out.a, out.b) == (S.Slotted, 1, 2)


def test_builtin_allowlist_does_not_import_either() -> None:
    """A blob naming a LangChain message loads only where LangChain is already imported."""
    from langchain_core.messages import AIMessage

    data = Codec().encode(AIMessage("hi"))
    code = (
        "import sys; from snapstate.codec import decode\n"
        "try:\n"
        f"    decode({data!r})\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
        "print('langchain_core' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    ).stdout.splitlines()
    assert out == [
        "UnregisteredTypeError cannot decode value: type `langchain_core.messages.ai.AIMessage` "
        "may not load: its module `langchain_core.messages.ai` is not imported (loading never "
        "imports)" + NOT_ALLOWED,
        "False",
    ]


def test_module_getattr_never_runs(each_impl: Codec, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    trap = types.ModuleType("snapstate_codec_test_trap")
    trap.__getattr__ = lambda name: seen.append(name)  # type: ignore[attr-defined]

    class Meta(type):
        def __getattr__(cls, name: str) -> Any:
            seen.append(name)
            return S.Point

    trap.Outer = Meta("Outer", (), {"__module__": trap.__name__})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, trap.__name__, trap)
    for qualname in ["Point", "Outer.Point"]:
        with pytest.raises(UnregisteredTypeError) as info:
            each_impl.decode(ext_blob(F.EXT_DATACLASS, [f"{trap.__name__}:{qualname}", {}]))
        assert "has no such class" in str(info.value)
    assert seen == []


def test_names_must_match_where_the_class_lives(
    each_impl: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An alias (a class imported into another module) does not load under the alias."""
    monkeypatch.setattr(sys.modules[__name__], "Alias", S.Point, raising=False)
    for name in ["tests.codec.test_security:Alias", "tests.codec.test_security:S.Point"]:
        with pytest.raises(UnregisteredTypeError, match="has no such class"):
            each_impl.decode(ext_blob(F.EXT_DATACLASS, [name, {"x": 1}]))
    with pytest.raises(UnregisteredTypeError, match="has no such class"):
        Codec(allow=[("tests.codec.test_security", "Alias")], impl=each_impl.impl).decode(
            ext_blob(F.EXT_DATACLASS, ["tests.codec.test_security:Alias", {"x": 1}])
        )


def test_strict_codec_loads_only_registered_and_builtin_types(each_impl: Codec) -> None:
    from langchain_core.messages import HumanMessage

    data = each_impl.encode([S.Point(1), HumanMessage("hi")])
    strict = Codec(strict=True, impl=each_impl.impl)
    with pytest.raises(UnregisteredTypeError, match="the codec is strict"):
        strict.decode(data)
    allowed = Codec(strict=True, allow=[S.Point], impl=each_impl.impl)
    assert allowed.decode(data) == [S.Point(1), HumanMessage("hi")]


def test_registered_objects_refuse_special_attributes(each_impl: Codec) -> None:
    codec = Codec(allow=[S.Plain], impl=each_impl.impl)
    data = ext_blob(F.EXT_OBJECT, ["tests.codec.samples:Plain", {"__class__": "x"}])
    with pytest.raises(DecodeError) as info:
        codec.decode(data)
    assert str(info.value) == "cannot decode value: malformed object: attribute '__class__'"


def test_dataclasses_only_take_their_fields(each_impl: Codec) -> None:
    data = ext_blob(
        F.EXT_DATACLASS,
        ["tests.codec.samples:Point", {"x": 1, "__class__": "x", "__reduce__": "y"}],
    )
    out = each_impl.decode(data)
    assert type(out) is S.Point and out == S.Point(1) and "__reduce__" not in vars(out)


def test_pickle_is_never_used() -> None:
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    sources = [*root.joinpath("src/snapstate/codec").glob("*.py"), root / "ext/_codec.pyx"]
    for path in sources:
        text = path.read_text()
        for word in ("pickle", "marshal", "importlib", "pkgutil", "__import__", "eval(", "exec("):
            assert word not in text, f"{path.name} mentions {word}"
