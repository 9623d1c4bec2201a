"""Value <-> bytes. (Interim minimal implementation: plain msgpack data only.)

API that the rest of snapstate relies on:

* ``Codec(allow=(), strict=False)`` with ``.encode(value, *, where="") -> bytes``,
  ``.decode(data, *, where="") -> Any`` and ``.register(cls)``;
* module level ``encode``, ``decode``, ``register`` on the default codec, and ``IMPL``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from ..errors import DecodeError, EncodeError

__all__ = ["Codec", "encode", "decode", "register", "IMPL", "default_codec"]

IMPL = "python"


class Codec:
    def __init__(self, *, allow: Iterable[type] = (), strict: bool = False) -> None:
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder()
        self.strict = strict

    def register(self, cls: type) -> type:
        return cls

    def encode(self, value: Any, *, where: str = "") -> bytes:
        try:
            return b"\x01" + self._enc.encode(value)
        except (TypeError, msgspec.EncodeError) as exc:
            raise EncodeError(f"cannot encode {where or 'value'}: {exc}") from None

    def decode(self, data: bytes, *, where: str = "") -> Any:
        if not data or data[0] != 1:
            raise DecodeError(f"cannot decode {where or 'value'}: unknown format")
        try:
            return self._dec.decode(memoryview(data)[1:])
        except msgspec.DecodeError as exc:
            raise DecodeError(f"cannot decode {where or 'value'}: {exc}") from None


default_codec = Codec()
encode = default_codec.encode
decode = default_codec.decode
register = default_codec.register
