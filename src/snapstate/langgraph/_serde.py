"""How the savers encode values: snapstate's codec by default, a LangGraph serializer on request.

By default values go through :mod:`snapstate.codec`. ``saver.serde`` then is a
:class:`CodecSerde`, so code that reads ``checkpointer.serde`` gets the same encoding the saver
stores. A saver made with ``serde=`` (an ``EncryptedSerializer``, a ``JsonPlusSerializer`` with
``pickle_fallback``, ...) stores what that serializer produces instead, through
:class:`SerdeCodec`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from ..codec import Codec, default_codec
from ..errors import DecodeError, EncodeError

__all__ = [
    "CodecSerde",
    "SerdeCodec",
    "strict_from_env",
    "default_saver_codec",
    "codec_with_allowlist",
]

logger = logging.getLogger("snapstate.langgraph")

#: The ``(type, bytes)`` tag :class:`CodecSerde` gives values it encodes.
CODEC_TAG = "snapstate"


def strict_from_env() -> bool:
    """Whether ``LANGGRAPH_STRICT_MSGPACK`` asks for strict decoding (LangGraph's own switch)."""
    return os.environ.get("LANGGRAPH_STRICT_MSGPACK", "false").lower() in ("1", "true", "yes")


#: LangGraph types a strict codec must still load: ``DeltaChannel`` snapshots are stored values.
_LANGGRAPH_TYPES = (("langgraph.checkpoint.serde.types", "_DeltaSnapshot"),)


def default_saver_codec(*, compress: bool = True) -> Codec:
    """The codec a saver uses when given neither ``codec=`` nor ``serde=``.

    Under ``LANGGRAPH_STRICT_MSGPACK`` a strict codec: only built-in types (LangChain messages
    and LangGraph's own types among them), registered types, and the types ``with_allowlist``
    adds (LangGraph's ``compile()`` passes the graph's schemas) load. ``compress=False`` turns
    lz4 off (for values that stay in memory). Types registered with
    ``snapstate.codec.register`` load with every codec.
    """
    strict = strict_from_env()
    if not strict and compress:
        return default_codec
    return Codec(
        strict=strict,
        allow=_LANGGRAPH_TYPES if strict else (),
        compress_threshold=default_codec.compress_threshold if compress else None,
    )


class CodecSerde(SerializerProtocol):
    """LangGraph's serializer protocol over a snapstate codec."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self._foreign: JsonPlusSerializer | None = None

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        return CODEC_TAG, self.codec.encode(obj)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        tag, payload = data
        if tag == CODEC_TAG:
            return self.codec.decode(payload)
        # Values tagged by LangGraph's own serializer ("msgpack", "null", ...): read with its
        # built-in safe types only (messages, LangGraph's types, datetimes, ...). Its permissive
        # mode imports and calls whatever a payload names, which stored bytes must never do
        # here; other objects come back as their fields, as in LangGraph's strict mode.
        if self._foreign is None:
            self._foreign = JsonPlusSerializer(allowed_msgpack_modules=None)
        return self._foreign.loads_typed(data)


class SerdeCodec(Codec):
    """A snapstate codec that delegates to a LangGraph serializer.

    Stored bytes are the serializer's type tag, a NUL, then its payload: everything the
    serializer needs to read them back.
    """

    def __init__(self, serde: SerializerProtocol) -> None:
        super().__init__()
        self.serde = serde

    def encode(self, value: Any, *, where: str = "") -> bytes:
        try:
            tag, payload = self.serde.dumps_typed(value)
        except Exception as exc:
            raise EncodeError(
                f"{type(self.serde).__name__} cannot encode {where or 'value'}: {exc}"
            ) from None
        return tag.encode() + b"\x00" + payload

    def decode(self, data: bytes, *, where: str = "") -> Any:
        tag, sep, payload = bytes(data).partition(b"\x00")
        if not sep:
            raise DecodeError(
                f"cannot decode {where or 'value'}: it was not written by a saver with serde="
            )
        try:
            return self.serde.loads_typed((tag.decode(), payload))
        except Exception as exc:
            raise DecodeError(
                f"{type(self.serde).__name__} cannot decode {where or 'value'}: {exc}"
            ) from None


def _pair(entry: tuple[str, ...] | type) -> tuple[str, str] | None:
    """An allowlist entry as the codec's ``(module, qualname)`` pair; None if malformed.

    Pairs name classes without importing anything: the codec resolves them among the modules
    already loaded when a value is read.
    """
    if isinstance(entry, type):
        return entry.__module__, entry.__qualname__
    if len(entry) < 2 or not all(isinstance(p, str) and p for p in entry):
        return None
    return entry[0], ".".join(entry[1:])


def _allowlisted_serde(
    serde: SerializerProtocol, extra: Collection[tuple[str, ...]]
) -> SerializerProtocol:
    if isinstance(serde, JsonPlusSerializer):
        return serde.with_msgpack_allowlist(extra)
    if isinstance(serde, EncryptedSerializer) and isinstance(serde.serde, JsonPlusSerializer):
        inner = serde.serde.with_msgpack_allowlist(extra)
        return serde if inner is serde.serde else EncryptedSerializer(serde.cipher, inner)
    logger.warning(
        "serializer %s has no msgpack allowlist; strict decoding is not enforced",
        type(serde).__name__,
    )
    return serde


def codec_with_allowlist(codec: Codec, extra: Collection[tuple[str, ...]]) -> Codec:
    """A codec like ``codec`` that also loads the types named in ``extra``.

    Returns ``codec`` itself when ``extra`` names nothing.
    """
    if isinstance(codec, SerdeCodec):
        serde = _allowlisted_serde(codec.serde, extra)
        return codec if serde is codec.serde else SerdeCodec(serde)
    pairs = sorted({p for p in (_pair(e) for e in extra) if p is not None})
    if not pairs:
        return codec
    derive = getattr(codec, "with_allow", None)
    if callable(derive):
        out = derive(pairs)
        assert isinstance(out, Codec)
        return out
    return Codec(
        allow=[*_LANGGRAPH_TYPES, *pairs],
        strict=codec.strict,
        compress_threshold=codec.compress_threshold,
        impl=codec.impl,
    )
