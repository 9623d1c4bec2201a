"""Error messages say what went wrong and where; both implementations word them the same."""

from __future__ import annotations

import dataclasses
import datetime as dt
import pathlib
import pickle
import re
import zoneinfo
from typing import Any

import msgspec
import pytest
from benchmarks import datagen

from snapstate.codec import Codec
from snapstate.codec import _format as F
from snapstate.errors import (
    DecodeError,
    EncodeError,
    FormatVersionError,
    SnapstateError,
    StorageError,
    UnregisteredTypeError,
    UsageError,
)

from . import samples as S

WHERE = "channel 'messages' of checkpoint '0001' (thread 't', namespace '')"
HINT = (
    " (hint: supported are JSON types, bytes, tuple, set, frozenset, datetime types, UUID, "
    "Decimal, paths, ipaddress values, compiled regular expressions, Enum, dataclasses, "
    "NamedTuples, msgspec Structs, pydantic models, exceptions and numpy arrays; register other "
    "classes with snapstate.codec.register(cls))"
)
NOT_ALLOWED = (
    " (hint: allow it with snapstate.codec.register(cls) before loading, or pass it in a "
    "saver's allowlist (allow=[cls]))"
)


def encode_error(codec: Codec, value: Any, where: str = "") -> str:
    with pytest.raises(EncodeError) as info:
        codec.encode(value, where=where)
    return str(info.value)


def decode_error(codec: Codec, data: bytes, kind: type = DecodeError, where: str = "") -> str:
    with pytest.raises(kind) as info:
        codec.decode(data, where=where)
    return str(info.value)


def blob(body: bytes, *, version: int = F.FORMAT_VERSION, flags: int = 0) -> bytes:
    return bytes((version, flags)) + F.checksum(body).to_bytes(4, "little") + body


def ext(code: int, payload: Any) -> bytes:
    raw = payload if isinstance(payload, bytes) else msgspec.msgpack.encode(payload)
    return blob(msgspec.msgpack.encode(msgspec.msgpack.Ext(code, raw)))


class TestEncode:
    def test_names_where_path_and_type(self, each_impl: Codec) -> None:
        state = {"messages": datagen.chat_messages(4)}
        state["messages"][3]["tool_calls"] = [{"id": "c", "args": object()}]
        assert encode_error(each_impl, state, WHERE) == (
            f"cannot encode {WHERE}: unsupported type `object` - at "
            f"`$.messages[3].tool_calls[0].args`" + HINT
        )

    def test_path_is_relative_to_the_value(self, each_impl: Codec) -> None:
        msgs = datagen.chat_messages(4)
        msgs[3]["tool_calls"] = [{"args": {"when": S.Slotted(1, 2)}}]
        assert encode_error(each_impl, msgs, "channel 'messages'") == (
            "cannot encode channel 'messages': unsupported type `tests.codec.samples.Slotted` "
            "- at `$[3].tool_calls[0].args.when`" + HINT
        )

    def test_path_through_objects(self, each_impl: Codec) -> None:
        from langchain_core.messages import AIMessage

        msg = AIMessage("x", tool_calls=[{"id": "1", "name": "f", "args": {"q": {1, 2}}}])
        msg.tool_calls[0]["args"]["bad"] = bytearray  # a class is not a value
        value = [S.Point(1), S.Pair(left=[msg])]
        assert encode_error(each_impl, value) == (
            "cannot encode value: unsupported type `type` - at "
            "`$[1].left[0].tool_calls[0].args.bad`" + HINT
        )

    def test_keys_that_are_not_identifiers(self, each_impl: Codec) -> None:
        value = {"my key": {7: [None, {"": complex(1, 2)}]}}
        assert encode_error(each_impl, value) == (
            "cannot encode value: unsupported type `complex` - at `$['my key'][7][1]['']`" + HINT
        )

    def test_inside_a_dict_key(self, each_impl: Codec) -> None:
        value = {"index": {(1, Ellipsis): "v"}}
        assert encode_error(each_impl, value) == (
            "cannot encode value: unsupported type `ellipsis` - at `$.index{key}[1]`" + HINT
        )

    def test_tzinfo(self, each_impl: Codec) -> None:
        class OddZone(dt.tzinfo):
            def utcoffset(self, d: Any) -> dt.timedelta:
                return dt.timedelta(0)

        value = [dt.datetime(2024, 1, 1, tzinfo=OddZone())]
        assert encode_error(each_impl, value) == (
            "cannot encode value: unsupported type `tests.codec.test_errors.TestEncode."
            "test_tzinfo.<locals>.OddZone` - at `$[0].tzinfo`" + HINT
        )

    def test_reference_cycle(self, each_impl: Codec) -> None:
        loop: list[Any] = []
        loop.append(loop)
        message = encode_error(each_impl, {"x": loop})
        assert message == (
            "cannot encode value: `list` nested deeper than 100 levels (is there a reference "
            "cycle?) - at `$.x" + "[0]" * 99 + "`"
        )

    def test_strict_codec(self, each_impl: Codec) -> None:
        strict = Codec(strict=True, impl=each_impl.impl)
        assert encode_error(strict, {"p": S.Point(1)}) == (
            "cannot encode value: type `tests.codec.samples.Point` is not registered, and the "
            "codec is strict - at `$.p` (hint: register it with snapstate.codec.register(Point)"
            " or pass it in a saver's allowlist)"
        )

    def test_class_defined_in_a_function(self, each_impl: Codec) -> None:
        @dataclasses.dataclass
        class Local:
            a: int

        assert encode_error(each_impl, [Local(1)]) == (
            "cannot encode value: type `tests.codec.test_errors.TestEncode."
            "test_class_defined_in_a_function.<locals>.Local` could not be loaded back: it is "
            "not registered, and `tests.codec.test_errors:TestEncode."
            "test_class_defined_in_a_function.<locals>.Local` does not name it in an imported "
            "module (is it defined inside a function?) - at `$[0]` (hint: register it with "
            "snapstate.codec.register(Local))"
        )

    def test_zoneinfo_from_a_file(self, each_impl: Codec) -> None:
        files = [pathlib.Path(p) / "UTC" for p in zoneinfo.TZPATH]
        path = next((f for f in files if f.is_file()), None)
        if path is None:
            pytest.skip("no time zone files on this system")
        with path.open("rb") as fh:
            zone = zoneinfo.ZoneInfo.from_file(fh)
        assert encode_error(each_impl, {"z": zone}) == (
            "cannot encode value: a `zoneinfo.ZoneInfo` without a key (read from a file) - at `$.z`"
        )

    def test_pattern_with_debug_flag(self, each_impl: Codec) -> None:
        pattern = re.compile("a", re.DEBUG)
        assert encode_error(each_impl, {"p": [pattern]}) == (
            "cannot encode value: a `re.Pattern` compiled with re.DEBUG - at `$.p[0]` (hint: "
            "compile it without that flag; patterns are stored with their other flags)"
        )

    @pytest.mark.skipif(not hasattr(re, "TEMPLATE"), reason="re.TEMPLATE is gone from this Python")
    @pytest.mark.filterwarnings("ignore::DeprecationWarning")
    def test_pattern_with_template_flag(self, each_impl: Codec) -> None:
        pattern = re.compile("a", re.TEMPLATE | re.IGNORECASE)
        assert encode_error(each_impl, pattern) == (
            "cannot encode value: a `re.Pattern` compiled with re.TEMPLATE - at `$` (hint: "
            "compile it without that flag; patterns are stored with their other flags)"
        )

    def test_error_classes(self, codec: Codec) -> None:
        with pytest.raises(EncodeError) as info:
            codec.encode(object())
        err = info.value
        assert isinstance(err, UsageError) and isinstance(err, TypeError)
        assert str(pickle.loads(pickle.dumps(err))) == str(err)


class TestDecode:
    def test_empty(self, each_impl: Codec) -> None:
        assert decode_error(each_impl, b"", where=WHERE) == (
            f"cannot decode {WHERE}: no data (0 bytes)"
        )

    def test_truncated_header(self, each_impl: Codec) -> None:
        assert decode_error(each_impl, b"\x01\x00\x00") == (
            "cannot decode value: truncated: 3 bytes, shorter than the 6-byte header"
        )

    def test_unknown_version(self, each_impl: Codec) -> None:
        data = blob(b"\xc0", version=9)
        message = decode_error(each_impl, data, FormatVersionError, WHERE)
        assert message == (
            f"cannot decode {WHERE}: unknown format version 9 (this release reads 1, 2); it was "
            f"written by a newer snapstate, or is not a snapstate value"
        )

    def test_unknown_flags(self, each_impl: Codec) -> None:
        assert decode_error(each_impl, blob(b"\xc0", flags=0x82)) == (
            "cannot decode value: unknown flags 0x82"
        )

    def test_checksum_mismatch(self, each_impl: Codec) -> None:
        data = bytearray(each_impl.encode({"a": "hello"}))
        data[-1] ^= 0x01
        stored = int.from_bytes(data[2:6], "little")
        actual = F.checksum(bytes(data[6:]))
        assert decode_error(each_impl, bytes(data)) == (
            f"cannot decode value: checksum mismatch (stored {stored:08x}, computed "
            f"{actual:08x}): the data is corrupt"
        )

    def test_corrupt_compressed_payload(self, each_impl: Codec) -> None:
        assert decode_error(each_impl, blob(b"\x10\x00\x00\x00\xff\xff", flags=1)) == (
            "cannot decode value: corrupt compressed payload"
        )
        huge = (1 << 31).to_bytes(4, "little") + b"\x00" * 8
        assert decode_error(each_impl, blob(huge, flags=1)) == (
            "cannot decode value: corrupt compressed payload (claims 2147483648 bytes)"
        )

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            (b"\x92\x01", "truncated"),
            (b"\xc1", "invalid byte 0xc1 (byte 0)"),
            (b"\x92\x01\xc1", "invalid byte 0xc1 (byte 2)"),
            (b"\x01\x02", "trailing data (byte 1)"),
            (b"\x91" * 2000 + b"\x01", "nested too deeply"),
        ],
        ids=["truncated", "invalid-byte", "invalid-byte-inside", "trailing", "too-deep"],
    )
    def test_corrupt_messagepack(self, each_impl: Codec, body: bytes, message: str) -> None:
        assert decode_error(each_impl, blob(body)) == (
            f"cannot decode value: corrupt payload: {message}"
        )

    def test_unknown_extension(self, each_impl: Codec) -> None:
        assert decode_error(each_impl, ext(99, [1])) == (
            "cannot decode value: unknown extension type 99"
        )

    def test_malformed_extension(self, each_impl: Codec) -> None:
        assert decode_error(each_impl, ext(F.EXT_DATE, [2024, 13, 1])) == (
            "cannot decode value: malformed date: ValueError: month must be in 1..12"
        )
        assert decode_error(each_impl, ext(F.EXT_DATETIME, [1, 2])) == (
            "cannot decode value: malformed datetime"
        )
        assert decode_error(each_impl, ext(F.EXT_DATACLASS, [["x"], {}])) == (
            "cannot decode value: malformed type name ['x']"
        )

    @pytest.mark.parametrize(
        ("code", "payload", "message"),
        [
            (F.EXT_IPADDRESS, [6, "10.0.0.1"], "malformed ipaddress"),
            (F.EXT_IPADDRESS, [0, b"10.0.0.1"], "malformed ipaddress"),
            (F.EXT_IPADDRESS, [0], "malformed ipaddress"),
            (
                F.EXT_IPADDRESS,
                [2, "10.0.0.1/8"],
                "malformed ipaddress: ValueError: 10.0.0.1/8 has host bits set",
            ),
            (F.EXT_PATTERN, ["a", re.DEBUG], "malformed re.Pattern"),
            (F.EXT_PATTERN, ["a", "i"], "malformed re.Pattern"),
            (F.EXT_PATTERN, [1, 0], "malformed re.Pattern"),
            (F.EXT_PATTERN, ["a", 0, 0], "malformed re.Pattern"),
            (
                F.EXT_PATTERN,
                ["(", 0],
                # re.error is named PatternError from Python 3.13
                f"malformed re.Pattern: {re.error.__name__}: missing ), unterminated subpattern "
                "at position 0",
            ),
            (
                F.EXT_PATTERN,
                ["a", re.LOCALE],
                "malformed re.Pattern: ValueError: cannot use LOCALE flag with a str pattern",
            ),
        ],
    )
    def test_malformed_stdlib_values(
        self, each_impl: Codec, code: int, payload: Any, message: str, capsys: Any
    ) -> None:
        """Stored patterns and addresses are checked before use, and re.DEBUG never prints."""
        assert decode_error(each_impl, ext(code, payload)) == f"cannot decode value: {message}"
        assert capsys.readouterr() == ("", "")

    def test_kind_mismatch(self, each_impl: Codec) -> None:
        data = ext(F.EXT_DATACLASS, ["tests.codec.samples:Model", {"name": "x"}])
        assert decode_error(each_impl, data) == (
            "cannot decode value: `tests.codec.samples.Model` is stored as a dataclass but is "
            "a pydantic model"
        )

    def test_unregistered_type(self, each_impl: Codec) -> None:
        strict = Codec(strict=True, impl=each_impl.impl)
        data = each_impl.encode(S.Point(1))
        message = decode_error(strict, data, UnregisteredTypeError, WHERE)
        assert message == (
            f"cannot decode {WHERE}: type `tests.codec.samples.Point` may not load: it is not "
            f"registered, and the codec is strict" + NOT_ALLOWED
        )

    def test_error_classes(self, codec: Codec) -> None:
        with pytest.raises(UnregisteredTypeError) as info:
            codec.decode(ext(F.EXT_DATACLASS, ["os:system", {}]))
        err = info.value
        assert isinstance(err, DecodeError) and isinstance(err, StorageError)
        assert isinstance(err, ValueError) and isinstance(err, SnapstateError)
        assert str(pickle.loads(pickle.dumps(err))) == str(err)
