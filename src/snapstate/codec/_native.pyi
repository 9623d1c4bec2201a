# Stubs for the compiled codec (ext/_codec.pyx), the twin of snapstate.codec._py.
from typing import Any

from ._registry import Resolver

__all__ = ["Core"]

class Core:
    """Encodes and decodes with one resolver (allowlist) and compression threshold."""

    @property
    def resolver(self) -> Resolver: ...
    @property
    def compress_threshold(self) -> int | None: ...
    def __init__(self, resolver: Resolver, compress_threshold: int | None) -> None: ...
    def encode(self, value: Any) -> bytes: ...
    def decode(self, data: Any) -> Any: ...
