"""The public codec: :class:`Codec`, the implementation choice, and the default codec."""

from __future__ import annotations

import os
from collections.abc import Iterable
from types import ModuleType
from typing import Any, TypeVar

from ..errors import (
    ConfigurationError,
    DecodeError,
    EncodeError,
    FormatVersionError,
    UnregisteredTypeError,
)
from . import _format as F
from . import _py
from ._registry import GLOBAL, NOT_ALLOWED_HINT, Registry, Resolver

__all__ = ["Codec", "IMPL", "IMPLEMENTATIONS", "default_codec", "encode", "decode", "register"]

T = TypeVar("T", bound=type)


def _load_native() -> tuple[ModuleType | None, str]:
    try:
        from . import _native
    except ImportError as exc:
        return None, str(exc)
    mod: ModuleType = _native
    return mod, ""


def requested_impl() -> str:
    """What ``SNAPSTATE_IMPL`` asks for now, as written (trimmed, lower case): ``"python"``,
    ``"native"``, ``""`` for the best available, or anything else, which the codec refuses at
    import. Every compiled part follows it: the codec, the SQLite backend's connection and the
    PostgreSQL backend's array builder."""
    return os.environ.get("SNAPSTATE_IMPL", "").strip().lower()


def _pick() -> tuple[str, dict[str, ModuleType]]:
    """Choose the implementation once, at import (``SNAPSTATE_IMPL`` forces one)."""
    wanted = requested_impl()
    if wanted not in ("", "python", "native"):
        raise ImportError(
            f"SNAPSTATE_IMPL={wanted!r} is not an implementation of snapstate.codec: "
            f"use 'python', 'native', or leave it empty for the best available"
        )
    impls: dict[str, ModuleType] = {"python": _py}
    native, reason = _load_native()
    if native is not None:
        impls["native"] = native
    elif wanted == "native":
        raise ImportError(
            f"SNAPSTATE_IMPL=native, but the compiled codec snapstate.codec._native cannot be "
            f"imported ({reason}). Build it with `python setup.py build_ext --inplace` (or "
            f"install a wheel), or unset SNAPSTATE_IMPL to use the pure-Python codec."
        )
    if wanted:
        return wanted, impls
    return ("native" if native is not None else "python"), impls


#: The implementation in use: ``"native"`` (the compiled twin) or ``"python"``.
IMPL, IMPLEMENTATIONS = _pick()


class Codec:
    """Turns values into bytes and back.

    Parameters
    ----------
    allow:
        Classes (or ``(module, qualname)`` pairs) this codec may load, in addition to the
        global registry and the built-in allowlist. A saver's allowlist ends up here.
    strict:
        Load only registered and built-in types: turns off loading unregistered plain data
        types (dataclasses, pydantic models, Enums, NamedTuples, msgspec Structs) from
        already-imported modules, and refuses to store them.
    compress_threshold:
        Encoded values longer than this many bytes are lz4-compressed (when that makes them
        smaller). ``None`` turns compression off. Decoding reads either way.
    impl:
        ``"python"`` or ``"native"`` to pick an implementation for this codec; defaults to
        :data:`IMPL`.

    Both implementations write identical bytes, so values written by one load with the other.
    """

    def __init__(
        self,
        *,
        allow: Iterable[Any] = (),
        strict: bool = False,
        compress_threshold: int | None = F.COMPRESS_THRESHOLD,
        impl: str | None = None,
        _registry: Registry | None = None,
    ) -> None:
        if compress_threshold is not None and (
            type(compress_threshold) is not int or compress_threshold < 0
        ):
            raise ConfigurationError(
                f"compress_threshold must be an int >= 0 or None, got {compress_threshold!r}"
            )
        name = IMPL if impl is None else impl
        module = IMPLEMENTATIONS.get(name)
        if module is None:
            raise ConfigurationError(
                f"codec implementation {name!r} is not available (available: "
                f"{', '.join(sorted(IMPLEMENTATIONS))})"
            )
        self.impl = name
        self.strict = bool(strict)
        self.compress_threshold = compress_threshold
        self._registry = Registry(allow) if _registry is None else _registry
        self._core = module.Core(Resolver(self._registry, self.strict), compress_threshold)

    def __repr__(self) -> str:
        return (
            f"Codec(impl={self.impl!r}, strict={self.strict}, "
            f"compress_threshold={self.compress_threshold})"
        )

    def register(self, cls: T) -> T:
        """Allow ``cls`` to be stored and loaded by this codec; returns ``cls`` (a decorator).

        On :data:`default_codec` (and so :func:`snapstate.codec.register`) this registers
        globally, for every codec.

        Raises
        ------
        ConfigurationError
            ``cls`` is not a class, is a built-in type, or cannot be rebuilt from its
            attributes.
        """
        self._registry.add(cls)
        return cls

    def with_allow(self, extra: Iterable[Any]) -> Codec:
        """A codec like this one that also loads ``extra`` (classes or ``(module, qualname)``
        pairs), for a saver's allowlist. This codec is left unchanged."""
        local = Registry() if self._registry is GLOBAL else self._registry.copy()
        for item in extra:
            local.add(item)
        return Codec(
            strict=self.strict,
            compress_threshold=self.compress_threshold,
            impl=self.impl,
            _registry=local,
        )

    def encode(self, value: Any, *, where: str = "") -> bytes:
        """``value`` as bytes.

        Parameters
        ----------
        value:
            What to encode.
        where:
            Where the value comes from (a channel of a checkpoint), for error messages.

        Raises
        ------
        EncodeError
            Some part of ``value`` cannot be stored; the message names ``where``, the path
            inside the value (``$.messages[3].content``) and the type.
        """
        try:
            out: bytes = self._core.encode(value)
        except F.EncodeFailure as f:
            raise EncodeError(
                f"cannot encode {where or 'value'}: {F.describe_failure(f)}",
                hint=f.hint,
            ) from None
        return out

    def decode(self, data: bytes, *, where: str = "") -> Any:
        """The value stored in ``data`` (bytes-like).

        Raises
        ------
        FormatVersionError
            ``data`` was written in a format version this release cannot read.
        UnregisteredTypeError
            ``data`` holds an object of a class that may not load; the message names it.
        DecodeError
            ``data`` is corrupt: truncated, failing its checksum, or malformed.
        """
        try:
            return self._core.decode(data)
        except F.UnknownVersion as e:
            raise FormatVersionError(
                f"cannot decode {where or 'value'}: unknown format version {e.version} (this "
                f"release reads {', '.join(map(str, sorted(F.KNOWN_VERSIONS)))}); it was "
                f"written by a newer snapstate, or is not a snapstate value"
            ) from None
        except F.BadData as e:
            raise DecodeError(f"cannot decode {where or 'value'}: {e}") from None
        except F.Unregistered as e:
            raise UnregisteredTypeError(
                f"cannot decode {where or 'value'}: type `{F.display_name(e.name)}` may not "
                f"load: {e.reason}",
                hint=NOT_ALLOWED_HINT,
            ) from None
        except Exception as e:
            raise DecodeError(
                f"cannot decode {where or 'value'}: corrupt payload ({type(e).__name__}: {e})"
            ) from None


def _env_strict() -> bool:
    return os.environ.get("SNAPSTATE_STRICT", "").strip().lower() in ("1", "true", "yes")


#: The codec used when none is given. Its :meth:`~Codec.register` is the global registry;
#: ``SNAPSTATE_STRICT=1`` in the environment makes it strict.
default_codec = Codec(strict=_env_strict(), _registry=GLOBAL)


#: :meth:`Codec.encode` of :data:`default_codec`.
encode = default_codec.encode
#: :meth:`Codec.decode` of :data:`default_codec`.
decode = default_codec.decode
#: :meth:`Codec.register` of :data:`default_codec`: registers a class globally, for every codec.
register = default_codec.register
