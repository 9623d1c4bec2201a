"""Values to bytes and back: the snapshot codec.

* :func:`encode` / :func:`decode` use :data:`default_codec`; :class:`Codec` makes others
  (a saver's allowlist, strict mode, another compression threshold).
* :func:`register` allows an application class to be stored and loaded.
* :data:`IMPL` says which implementation runs: ``"native"`` (compiled, the default when built)
  or ``"python"``. ``SNAPSTATE_IMPL=python|native`` forces one; forcing one that is missing
  fails at import.

The format, the supported types and the security rules are described in ``docs/codec.md``.
"""

from ._api import IMPL, Codec, decode, default_codec, encode, register
from ._registry import StoredException

__all__ = ["Codec", "encode", "decode", "register", "IMPL", "default_codec", "StoredException"]


def __dir__() -> list[str]:
    return list(__all__)
