# Stubs for the compiled array builder (ext/_pg.pyx).
from collections.abc import Sequence
from typing import Any

__all__ = ["binary_array"]

def binary_array(values: Sequence[Any], element: str) -> bytes | None: ...
