"""Which classes may be stored and loaded: the type registry, an allowlist.

Stored bytes name classes as ``"module:qualname"``. On load a name becomes a class only if it
is

1. registered, globally (:func:`snapstate.codec.register`) or on one codec (``allow=``);
2. in the built-in allowlist (LangChain messages and documents, LangGraph's ``Send``,
   ``Interrupt``, ``Command``, ...), and its module is already imported;
3. a built-in exception class; or
4. unless the codec is strict: a plain data type (dataclass, pydantic model, Enum, NamedTuple,
   msgspec Struct) defined in a module the application has already imported.

Loading never imports a module, never reads an attribute through ``getattr`` (modules and
classes are searched through their ``__dict__``, so no ``__getattr__`` hook runs), and never
calls anything a name resolves to unless it is such a class.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
import threading
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import msgspec

from .. import _forksafe
from ..errors import ConfigurationError
from . import _format as F

__all__ = [
    "TypeInfo",
    "info_for",
    "Registry",
    "GLOBAL",
    "BUILTIN_NAMES",
    "Resolver",
    "StoredException",
    "stored_name",
    "find_loaded",
]

#: Kinds that the convenience rule may load without registration.
PLAIN_KINDS = frozenset(
    {F.EXT_ENUM, F.EXT_DATACLASS, F.EXT_NAMEDTUPLE, F.EXT_STRUCT, F.EXT_PYDANTIC}
)

#: Classes that load without registration, as long as their module is already imported.
BUILTIN_NAMES = frozenset(
    [
        f"langchain_core.messages.{module}:{cls}"
        for module, classes in {
            "base": ("BaseMessage", "BaseMessageChunk"),
            "human": ("HumanMessage", "HumanMessageChunk"),
            "ai": ("AIMessage", "AIMessageChunk"),
            "system": ("SystemMessage", "SystemMessageChunk"),
            "chat": ("ChatMessage", "ChatMessageChunk"),
            "tool": ("ToolMessage", "ToolMessageChunk"),
            "function": ("FunctionMessage", "FunctionMessageChunk"),
            "modifier": ("RemoveMessage",),
        }.items()
        for cls in classes
    ]
    + [
        "langchain_core.documents.base:Document",
        "langgraph.types:Send",
        "langgraph.types:TimeoutPolicy",
        "langgraph.types:RetryPolicy",
        "langgraph.types:CachePolicy",
        "langgraph.types:Interrupt",
        "langgraph.types:Command",
        "langgraph.types:StateSnapshot",
        "langgraph.types:StateUpdate",
        "langgraph.types:PregelTask",
        "langgraph.types:Overwrite",
        "langgraph.store.base:Item",
        "langgraph.store.base:GetOp",
        "langgraph.checkpoint.serde.types:_DeltaSnapshot",
    ]
)

NOT_ALLOWED_HINT = (
    "allow it with snapstate.codec.register(cls) before loading, or pass it in a saver's "
    "allowlist (allow=[cls])"
)


class StoredException(Exception):
    """An exception whose class may not load, standing in for it.

    Exceptions are stored as their class name, ``args`` and instance attributes. When the class
    is not allowed to load (not built in, not registered, and the codec is strict or the class's
    module is not imported), the codec returns this instead of failing: exceptions are mostly
    diagnostics, and a thread must stay readable.
    """

    def __init__(
        self, type_name: str, args: tuple[Any, ...] = (), attrs: dict[str, Any] | None = None
    ) -> None:
        super().__init__(*args)
        #: The stored class, as ``module.qualname``.
        self.type_name = type_name
        #: The stored instance attributes.
        self.attrs = dict(attrs or {})

    def __str__(self) -> str:
        text = super().__str__()
        return f"{self.type_name}: {text}" if text else self.type_name

    def __reduce__(self) -> tuple[Any, ...]:
        return (StoredException, (self.type_name, self.args, self.attrs))


class TypeInfo:
    """How instances of one class are stored."""

    __slots__ = ("base", "cls", "defaults", "field_set", "fields", "flag", "kind", "name")

    def __init__(self, cls: type, kind: int) -> None:
        self.cls = cls
        #: The EXT_* code objects of this class are stored under (0: not storable).
        self.kind = kind
        #: ``"module:qualname"``, as stored.
        self.name = stored_name(cls)
        #: Field or attribute names, in storage order.
        self.fields: tuple[str, ...] = ()
        #: The same, as a frozenset (for checks on load).
        self.field_set: frozenset[str] = frozenset()
        #: Dataclass and pydantic fields that may be missing from older stored values:
        #: name -> (is_factory, default or factory).
        self.defaults: dict[str, tuple[bool, Any]] = {}
        #: OBJECT: instances have a __dict__. PYDANTIC: the model is a RootModel.
        self.flag = False
        #: EXCEPTION: the nearest built-in base class.
        self.base: type | None = None


def stored_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


_INFO: dict[type, TypeInfo] = {}


def info_for(cls: type) -> TypeInfo:
    """The TypeInfo of ``cls`` (cached; one entry per class ever stored or loaded)."""
    info = _INFO.get(cls)
    if info is None:
        info = _describe(cls)
        _INFO[cls] = info
    return info


def _pydantic_base() -> Any:
    mod = sys.modules.get("pydantic.main")
    return None if mod is None else mod.__dict__.get("BaseModel")


def _numpy_kind(cls: type) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and (cls is np.ndarray or issubclass(cls, np.generic))


def _describe(cls: type) -> TypeInfo:
    if issubclass(cls, enum.Enum):
        return TypeInfo(cls, F.EXT_ENUM)
    if issubclass(cls, BaseException):
        info = TypeInfo(cls, F.EXT_EXCEPTION)
        info.base = next(b for b in cls.__mro__ if b.__module__ == "builtins")
        return info
    base_model = _pydantic_base()
    if base_model is not None and issubclass(cls, base_model):
        info = TypeInfo(cls, F.EXT_PYDANTIC)
        fields = cls.__pydantic_fields__  # type: ignore[attr-defined]
        info.fields = tuple(fields)
        info.field_set = frozenset(fields)
        info.flag = bool(getattr(cls, "__pydantic_root_model__", False))
        for name, field in fields.items():
            if field.default_factory is not None:
                info.defaults[name] = (True, field.default_factory)
            elif not field.is_required():
                info.defaults[name] = (False, field.default)
        return info
    if issubclass(cls, msgspec.Struct):
        info = TypeInfo(cls, F.EXT_STRUCT)
        info.fields = tuple(cls.__struct_fields__)
        info.field_set = frozenset(info.fields)
        return info
    if dataclasses.is_dataclass(cls):
        info = TypeInfo(cls, F.EXT_DATACLASS)
        fields = dataclasses.fields(cls)
        info.fields = tuple(f.name for f in fields)
        info.field_set = frozenset(info.fields)
        for f in fields:
            if f.default_factory is not dataclasses.MISSING:
                info.defaults[f.name] = (True, f.default_factory)
            elif f.default is not dataclasses.MISSING:
                info.defaults[f.name] = (False, f.default)
        return info
    if issubclass(cls, tuple) and isinstance(cls.__dict__.get("_fields"), tuple):
        info = TypeInfo(cls, F.EXT_NAMEDTUPLE)
        info.fields = tuple(cls._fields)  # type: ignore[attr-defined]
        return info
    if _numpy_kind(cls):
        return TypeInfo(cls, F.EXT_NDARRAY)
    # Anything else is stored only when registered: its slots and __dict__.
    info = TypeInfo(cls, F.EXT_OBJECT)
    slots: list[str] = []
    for klass in reversed(cls.__mro__):
        raw = klass.__dict__.get("__slots__", ())
        for slot in (raw,) if isinstance(raw, str) else raw:
            if slot in ("__dict__", "__weakref__"):
                continue
            if slot.startswith("__") and not slot.endswith("__"):
                slot = f"_{klass.__name__.lstrip('_')}{slot}"
            if slot not in slots:
                slots.append(slot)
    info.fields = tuple(slots)
    info.field_set = frozenset(slots)
    info.flag = any("__dict__" in k.__dict__ for k in cls.__mro__ if k is not object)
    return info


_lock = threading.Lock()
#: Bumped whenever any registry changes, so resolution caches can notice.
generation = 0


@_forksafe.on_fork
def _lock_in_child() -> None:
    global _lock
    _lock = threading.Lock()


def _bump() -> None:
    global generation
    with _lock:
        generation += 1


class Registry:
    """A set of classes allowed to load, by stored name."""

    def __init__(self, classes: Iterable[Any] = ()) -> None:
        self._by_name: dict[str, type] = {}
        #: (module, qualname) pairs given instead of classes: resolved from loaded modules.
        self._names: set[str] = set()
        for item in classes:
            self.add(item)

    def add(self, item: Any) -> None:
        if isinstance(item, tuple):
            if len(item) != 2 or not all(isinstance(p, str) and p for p in item):
                raise ConfigurationError(
                    f"an allowlist entry must be a class or a (module, qualname) pair, got {item!r}"
                )
            self._names.add(f"{item[0]}:{item[1]}")
        else:
            cls = check_registrable(item)
            self._by_name[stored_name(cls)] = cls
        _bump()

    def copy(self) -> Registry:
        out = Registry()
        out._by_name = dict(self._by_name)
        out._names = set(self._names)
        return out

    def get(self, name: str) -> type | None:
        cls = self._by_name.get(name)
        if cls is None and name in self._names:
            obj = find_loaded(name)
            if isinstance(obj, type):
                return obj
        return cls

    def holds(self, cls: type, name: str) -> bool:
        return self._by_name.get(name) is cls or (name in self._names and find_loaded(name) is cls)


def check_registrable(cls: Any) -> type:
    if not isinstance(cls, type):
        raise ConfigurationError(f"register() takes a class, got {type(cls).__name__} {cls!r}")
    if cls.__module__ == "builtins" and not issubclass(cls, BaseException):
        raise ConfigurationError(
            f"`{F.type_name(cls)}` is a built-in type; it needs no registration"
        )
    info = _describe(cls)
    if info.kind == F.EXT_OBJECT and cls.__new__ is not object.__new__:  # type: ignore[comparison-overlap]
        raise ConfigurationError(
            f"cannot register `{F.type_name(cls)}`: it is not a dataclass, pydantic model, "
            f"Enum, NamedTuple, msgspec Struct or exception, and it defines its own __new__, "
            f"so it cannot be rebuilt from its attributes"
        )
    return cls


#: The global registry (snapstate.codec.register).
GLOBAL = Registry()


def _class_dict(obj: Any) -> Any:
    return type.__getattribute__(obj, "__dict__")


def find_loaded(name: str) -> Any:
    """What ``"module:qualname"`` names in an already-imported module, or None.

    Reads ``__dict__`` directly: no import, no module ``__getattr__``, no descriptor runs.
    """
    module, _, qualname = name.partition(":")
    mod = sys.modules.get(module)
    if not isinstance(mod, ModuleType):
        return None
    obj: Any = ModuleType.__getattribute__(mod, "__dict__").get(qualname.split(".")[0])
    for part in qualname.split(".")[1:]:
        if not isinstance(obj, type):
            return None
        obj = _class_dict(obj).get(part)
    if isinstance(obj, type):
        # Only where the class lives: an alias (a class imported into another module) is not it.
        attr = type.__getattribute__
        if f"{attr(obj, '__module__')}:{attr(obj, '__qualname__')}" != name:
            return None
    return obj


def _is_name(name: Any) -> bool:
    if type(name) is not str or name.count(":") != 1:
        return False
    module, qualname = name.split(":")
    return bool(module) and bool(qualname) and all(qualname.split("."))


class Resolver:
    """The allowlist as one codec sees it: its own classes, the global registry, the built-in
    allowlist, and (unless strict) already-imported plain data types."""

    def __init__(self, local: Registry, strict: bool) -> None:
        self.local = local
        self.strict = strict
        self._gen = -1
        self._loadable: dict[str, TypeInfo] = {}
        self._storable: dict[type, tuple[str, str | None] | None] = {}

    def _fresh(self) -> None:
        if self._gen != generation:
            self._loadable = {}
            self._storable = {}
            self._gen = generation

    # -- storing -------------------------------------------------------------------------------

    def check_store(self, info: TypeInfo) -> tuple[str, str | None] | None:
        """None if instances of ``info.cls`` may be stored, else (problem, hint)."""
        self._fresh()
        try:
            return self._storable[info.cls]
        except KeyError:
            pass
        problem = self._why_not_store(info)
        self._storable[info.cls] = problem
        return problem

    def _allowed(self, cls: type, name: str) -> bool:
        if self.local.holds(cls, name) or (self.local is not GLOBAL and GLOBAL.holds(cls, name)):
            return True
        return name in BUILTIN_NAMES and find_loaded(name) is cls

    def _why_not_store(self, info: TypeInfo) -> tuple[str, str | None] | None:
        kind, cls, name = info.kind, info.cls, info.name
        if kind in (F.EXT_EXCEPTION, F.EXT_NDARRAY) or self._allowed(cls, name):
            return None
        if kind == F.EXT_OBJECT:
            return (f"unsupported type `{F.type_name(cls)}`", F.UNSUPPORTED_HINT)
        shown = F.type_name(cls)
        if self.strict:
            return (
                f"type `{shown}` is not registered, and the codec is strict",
                f"register it with snapstate.codec.register({cls.__qualname__}) or pass it "
                f"in a saver's allowlist",
            )
        if find_loaded(name) is not cls:
            return (
                f"type `{shown}` could not be loaded back: it is not registered, and "
                f"`{name}` does not name it in an imported module (is it defined inside a "
                f"function?)",
                f"register it with snapstate.codec.register({cls.__name__})",
            )
        return None

    # -- loading -------------------------------------------------------------------------------

    def resolve(self, code: int, name: Any) -> TypeInfo | None:
        """The class stored as ``name`` under extension ``code``.

        Returns None only for exceptions whose class may not load (the caller substitutes
        :class:`StoredException`). Raises ``Unregistered`` or ``BadData``.
        """
        self._fresh()
        info = self._loadable.get(name) if type(name) is str else None
        if info is None:
            if not _is_name(name):
                raise F.BadData(f"malformed type name {F._key_repr(name)}")
            cls = self._find(code, name)
            if cls is None:
                return None
            info = info_for(cls)
            self._loadable[name] = info
        if info.kind != code:
            raise F.BadData(
                f"`{F.display_name(name)}` is stored as a {F.EXT_NAMES.get(code, code)} but is "
                f"a {F.EXT_NAMES.get(info.kind, 'class of another kind')}"
            )
        return info

    def _find(self, code: int, name: str) -> type | None:
        cls = self.local.get(name)
        if cls is None and self.local is not GLOBAL:
            cls = GLOBAL.get(name)
        if cls is not None:
            return cls
        module = name.partition(":")[0]
        obj = find_loaded(name)
        if name in BUILTIN_NAMES:
            if isinstance(obj, type):
                return obj
            raise F.Unregistered(
                name, f"its module `{module}` is not imported (loading never imports)"
            )
        if code == F.EXT_EXCEPTION:
            if isinstance(obj, type) and issubclass(obj, BaseException):
                if module == "builtins" or not self.strict:
                    return obj
            return None
        if self.strict:
            raise F.Unregistered(name, "it is not registered, and the codec is strict")
        if module not in sys.modules:
            raise F.Unregistered(
                name,
                f"it is not registered, and its module `{module}` is not imported (loading "
                f"never imports)",
            )
        if obj is None:
            raise F.Unregistered(
                name, f"it is not registered, and module `{module}` has no such class"
            )
        if not isinstance(obj, type) or _describe(obj).kind not in PLAIN_KINDS:
            raise F.Unregistered(
                name,
                "it is not registered, and it is not a plain data type (dataclass, pydantic "
                "model, Enum, NamedTuple or msgspec Struct)",
            )
        return obj
