"""snapstate._once: a costly result of an immutable object, computed once for callers at once."""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

import pytest

from snapstate._once import OncePerObject
from snapstate.backends import _base


class Gated:
    """A computation whose first call waits at a gate (and may then fail); counts calls."""

    def __init__(self, result: Any, fail_first: bool = False) -> None:
        self.result = result
        self.fail_first = fail_first
        self.calls = 0
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __call__(self) -> Any:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            assert self.gate.wait(10)
            if self.fail_first:
                raise ValueError("the first caller failed")
        return self.result


def _second_caller_while_first_computes(
    once: OncePerObject[Any], obj: Any, compute: Any, get: Any = None
) -> tuple[list[Any], list[Any]]:
    """The first caller computes (held at ``compute.gate``) while a second asks; the second
    must still be waiting when the gate opens. Returns what each got (or raised)."""
    get = get or (lambda: once.get(obj, compute))
    first: list[Any] = []
    second: list[Any] = []

    def call(into: list[Any]) -> None:
        try:
            into.append(get())
        except ValueError as exc:
            into.append(exc)

    t1 = threading.Thread(target=call, args=(first,))
    t1.start()
    assert compute.entered.wait(10)
    t2 = threading.Thread(target=call, args=(second,))
    t2.start()
    t2.join(0.2)
    assert t2.is_alive()  # waits for the first caller's result instead of computing it
    compute.gate.set()
    t1.join(10)
    t2.join(10)
    return first, second


def test_callers_at_once_share_one_computation() -> None:
    once: OncePerObject[bytes] = OncePerObject(4)
    obj = b"x" * 100
    compute = Gated(b"result")
    first, second = _second_caller_while_first_computes(once, obj, compute)
    assert first == second == [b"result"]
    assert compute.calls == 1
    assert once.get(obj, compute) == b"result" and compute.calls == 1  # kept


def test_when_the_first_caller_fails_the_waiter_computes_itself() -> None:
    once: OncePerObject[bytes] = OncePerObject(4)
    obj = b"y" * 100
    compute = Gated(b"result", fail_first=True)
    first, second = _second_caller_while_first_computes(once, obj, compute)
    assert isinstance(first[0], ValueError)
    assert second == [b"result"] and compute.calls == 2
    assert once.get(obj, compute) == b"result" and compute.calls == 2  # kept after the retry
    assert once._running == {}


def test_results_are_kept_per_object_for_the_last_few() -> None:
    once: OncePerObject[str] = OncePerObject(2)
    calls: list[bytes] = []

    def compute(obj: bytes) -> str:
        calls.append(obj)
        return obj.hex()

    a, b, c = (bytes([i]) * 10 for i in range(3))
    for obj in (a, b, a, c):  # a used again before c: b is the oldest when c comes
        assert once.get(obj, lambda o=obj: compute(o)) == obj.hex()
    assert calls == [a, b, c]
    assert once.get(a, lambda: compute(a)) == a.hex() and calls == [a, b, c]
    assert once.get(b, lambda: compute(b)) == b.hex() and calls == [a, b, c, b]
    equal = bytes(bytearray(a))  # equal content, another object: found by identity only
    assert once.get(equal, lambda: compute(equal)) == a.hex() and calls[-1] is equal


def test_a_payload_s_digest_is_computed_once_for_two_threads_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # LangGraph hands a node's output to put_writes and to the next put at the same time, and
    # each stores it as a payload named by its SHA-256.
    data = os.urandom(_base.PAYLOAD_MIN_BYTES)
    compute = Gated(None)

    class GatedHashlib:
        @staticmethod
        def sha256(value: bytes) -> Any:
            compute()
            return hashlib.sha256(value)

    monkeypatch.setattr(_base, "hashlib", GatedHashlib)
    first, second = _second_caller_while_first_computes(
        _base._digests, data, compute, lambda: _base.payload_digest(data)
    )
    assert first == second == [hashlib.sha256(data).digest()]
    assert compute.calls == 1
    assert _base.payload_digest(data) == first[0] and compute.calls == 1
    other = bytes(bytearray(data))
    assert _base.payload_digest(other) == first[0] and compute.calls == 2
    view = memoryview(data)  # not kept: not bytes
    assert _base.payload_digest(view) == first[0] and compute.calls == 3
