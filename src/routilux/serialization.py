"""The serialization codec shared by every serializable Routilux class.

This module owns:

* the on-disk **format version** (``FORMAT_VERSION``, ``stamp``, ``check_format_version``),
  the one place where files written by older versions get upgraded;
* the **class registry** (``register_serializable``, ``lookup_class``): the only way a class
  named in saved data is turned back into a class;
* the **layout registry** (``register_layout``, ``layout_of``): the one convention by which
  every class's ``serialize``/``deserialize`` (and JobState's ``save``/``load``) reach the
  layout that :mod:`routilux.persistence` registers for it;
* the **function registry** (``register_function``) and the **callable codec**
  (``encode_callable``, ``decode_callable``) for handlers, merge strategies and conditions;
* the **flow-file codec slot** (``register_flow_file_codec``, ``flow_file_codec``): how
  ``Flow.from_file``/``Flow.to_file`` reach :mod:`routilux.flowfile`, which fills it
  when ``import routilux`` imports it;
* **JSON file helpers** (``write_json``, ``read_json``) and **datetime helpers**
  (``to_iso``, ``from_iso``).

Security rule (DESIGN invariant 8): saved data is data, never code. Nothing here imports a
module named in the data or calls anything the data names. Classes come only from the class
registry; functions only from the function registry; builtins only from a short allow-list
registered by the library; methods only of objects of registered classes that are being
deserialized in the same call. Whether a module happens to be imported does not matter. A
callable that cannot be restored raises :class:`SerializationError` saying how to register
it. JSON is written compact and strict (no NaN/Infinity) and read strict (no NaN/Infinity
literals, no duplicate keys).

It imports nothing from ``routilux`` except ``routilux.exceptions``, so every other module
may import it.
"""

from __future__ import annotations

import builtins
import errno
import inspect
import json
import logging
import math
import os
import reprlib
import threading
import types
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, Union, overload

import routilux.exceptions as _routilux_exceptions
from routilux.exceptions import SerializationError

__all__ = [
    "FORMAT_VERSION",
    "FlowFileCodec",
    "Layout",
    "SAFE_BUILTINS",
    "check_format_version",
    "decode_callable",
    "encode_callable",
    "flow_file_codec",
    "from_iso",
    "iso_text",
    "iso_texts",
    "loads_json",
    "layout_of",
    "lookup_class",
    "lookup_exception_class",
    "read_json",
    "register_flow_file_codec",
    "register_function",
    "register_layout",
    "register_serializable",
    "register_upgrade",
    "registered_classes",
    "registered_function",
    "required_init_parameters",
    "short_repr",
    "stamp",
    "to_iso",
    "write_json",
]

logger = logging.getLogger("routilux.serialization")

# For values from saved data shown in error messages: a crafted value may be nested
# 990 deep (repr would hit the recursion limit) or be an int of 10,000 digits (repr
# refuses it), and either way should not flood the message.
_SHORT = reprlib.Repr()
_SHORT.maxlevel = 3
_SHORT.maxstring = 80
_SHORT.maxother = 80
_SHORT.maxlong = 40


def short_repr(value: object) -> str:
    """A bounded ``repr`` of ``value`` for error messages (never raises)."""
    try:
        return _SHORT.repr(value)
    except (ValueError, RecursionError, TypeError):  # e.g. a 10,000-digit int
        return f"<{type(value).__name__} too large to show>"
    except Exception:  # noqa: BLE001 - a user object's broken __repr__
        return f"<{type(value).__name__}>"


T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
PathLike = Union[str, "os.PathLike[str]"]
Upgrade = Callable[[dict[str, Any]], dict[str, Any]]

# ---------------------------------------------------------------------------
# Format version
# ---------------------------------------------------------------------------

FORMAT_VERSION = 1
"""Version of the saved-data layout written by this release."""

_VERSION_KEY = "format_version"

# from_version -> function turning data of that version into data of from_version + 1.
# Empty while only version 1 exists; an upgrade is added here when the layout changes.
_UPGRADES: dict[int, Upgrade] = {}


def register_upgrade(from_version: int) -> Callable[[Upgrade], Upgrade]:
    """Decorator registering the function that upgrades data of ``from_version`` by one.

    The function receives a copy of the data and returns the upgraded dict.
    """

    def decorator(fn: Upgrade) -> Upgrade:
        _UPGRADES[from_version] = fn
        return fn

    return decorator


def stamp(data: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``"format_version"`` set to the current version."""
    out = dict(data)
    out[_VERSION_KEY] = FORMAT_VERSION
    return out


def check_format_version(data: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Validate the format version of saved ``data`` and upgrade it to the current one.

    A missing version means version 1 (files written before versions were stamped).
    A version newer than this release understands, or one that is not an integer, raises
    :class:`SerializationError` naming ``what``. Data already at the current version is
    returned unchanged (same object when it is a dict); upgraded data is a new dict.
    """
    if not isinstance(data, Mapping):
        raise SerializationError(
            f"Cannot load {what}: expected a JSON object (dict), got {type(data).__name__}"
        )
    version = data.get(_VERSION_KEY, 1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise SerializationError(
            f"Cannot load {what}: format_version must be an integer, got {short_repr(version)}"
        )
    current = FORMAT_VERSION
    if version > current:
        raise SerializationError(
            f"Cannot load {what}: it was written with format_version {short_repr(version)}, "
            f"but this version of routilux reads format_version {current} at most; upgrade "
            f"routilux"
        )
    if version < 1:
        raise SerializationError(
            f"Cannot load {what}: unknown format_version {short_repr(version)}"
        )
    result: dict[str, Any] = data if isinstance(data, dict) else dict(data)
    if version == current:
        return result
    result = dict(result)
    while version < current:
        upgrade = _UPGRADES.get(version)
        if upgrade is None:
            raise SerializationError(
                f"Cannot load {what}: no upgrade from format_version {version} "
                f"to {version + 1} is known"
            )
        result = upgrade(result)
        version += 1
        result[_VERSION_KEY] = version
        logger.debug("upgraded %s from format_version %d to %d", what, version - 1, version)
    return result


# ---------------------------------------------------------------------------
# Class registry
# ---------------------------------------------------------------------------

_registry_lock = threading.Lock()
_CLASSES: dict[str, type] = {}

_REQUIRED_KINDS = (
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    inspect.Parameter.KEYWORD_ONLY,
)


def required_init_parameters(cls: type) -> list[str]:
    """Names of the parameters of ``cls.__init__`` (after ``self``) that have no default.

    Deserialization builds every object as ``cls()``, so a class with any is not
    constructable. Returns ``[]`` when the signature cannot be inspected.
    """
    init = getattr(cls, "__init__", None)  # plain cls.__init__ upsets mypy on a `type`
    if init is None:
        return []
    try:
        sig = inspect.signature(init)
    except (TypeError, ValueError):
        return []
    params = list(sig.parameters.values())[1:]  # drop self
    return [
        p.name for p in params if p.kind in _REQUIRED_KINDS and p.default is inspect.Parameter.empty
    ]


def register_serializable(cls: type[T]) -> type[T]:
    """Class decorator: make ``cls`` rebuildable from saved data under ``cls.__name__``.

    Raises TypeError at decoration time when ``cls.__init__`` has a required parameter,
    because deserialization constructs objects with no arguments. Registering the same
    class again is harmless; registering a different class under a taken name replaces
    the old one and logs a warning.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_serializable expects a class, got {cls!r}")
    required = required_init_parameters(cls)
    if required:
        raise TypeError(
            f"Cannot register {cls.__qualname__} as serializable: its __init__ has required "
            f"parameter(s) {', '.join(required)}; deserialization creates objects with no "
            f"arguments, so give every parameter a default"
        )
    name = cls.__name__
    with _registry_lock:
        previous = _CLASSES.get(name)
        _CLASSES[name] = cls
    if previous is not None and previous is not cls:
        logger.warning(
            "serializable class name %r re-registered: %s.%s replaces %s.%s",
            name,
            cls.__module__,
            cls.__qualname__,
            previous.__module__,
            previous.__qualname__,
        )
    return cls


def lookup_class(name: str) -> type:
    """Return the class registered under ``name``; SerializationError if there is none."""
    if not isinstance(name, str):
        raise SerializationError(
            f"Class name in saved data must be a string, got {short_repr(name)}"
        )
    cls = _CLASSES.get(name)
    if cls is None:
        raise SerializationError(
            f"Cannot deserialize {short_repr(name)}: class not found in registry "
            f"(decorate the class with @register_serializable and import it before loading)"
        )
    return cls


def registered_classes() -> dict[str, type]:
    """A snapshot of the class registry (name -> class)."""
    with _registry_lock:
        return dict(_CLASSES)


# ---------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------


def _no_file_form(cls: type) -> tuple[Callable[[Any, PathLike], None], Callable[..., Any]]:
    def save(obj: Any, path: PathLike) -> None:
        raise SerializationError(f"{cls.__name__} objects are not saved as files of their own")

    def load(path: PathLike, target: type) -> Any:
        raise SerializationError(f"{cls.__name__} objects are not loaded from files of their own")

    return save, load


class Layout(NamedTuple):
    """How the objects of one class become saved data and come back.

    ``serialize(obj)`` returns a JSON-safe dict; ``deserialize(obj, data)`` restores
    ``obj`` in place; ``save(obj, path)`` and ``load(path, cls)`` are the file forms
    (only for classes saved as files of their own, such as JobState).
    ``deserialize_owned(obj, data)`` is ``deserialize`` for data that nobody else holds
    (just decoded from JSON): ``obj`` may keep its dicts and lists instead of copies;
    the checks are the same. ``encode(obj, task_seq)`` (JobState's only, None
    elsewhere) is the compact JSON text of ``serialize(obj)`` -- its ``task_seq`` at
    least the one given -- encoded at once, without the copies ``serialize`` makes.
    """

    serialize: Callable[[Any], dict[str, Any]]
    deserialize: Callable[[Any, Any], None]
    save: Callable[[Any, PathLike], None]
    load: Callable[[PathLike, type], Any]
    deserialize_owned: Callable[[Any, Any], None] | None = None
    encode: Callable[[Any, int], str] | None = None


# Layouts as registered, and the layout each class found along its MRO (filled lazily,
# emptied by every registration so a new layout for a base class is seen).
_LAYOUTS: dict[type, Layout] = {}
_LAYOUT_OF: dict[type, Layout] = {}


def register_layout(
    cls: type,
    serialize: Callable[[Any], dict[str, Any]],
    deserialize: Callable[[Any, Any], None],
    *,
    save: Callable[[Any, PathLike], None] | None = None,
    load: Callable[[PathLike, type], Any] | None = None,
    deserialize_owned: Callable[[Any, Any], None] | None = None,
    encode: Callable[[Any, int], str] | None = None,
) -> None:
    """Make ``serialize``/``deserialize`` (and the optional file forms,
    ``deserialize_owned``, by default ``deserialize``, and ``encode``) the layout of
    ``cls`` and of its subclasses that have none of their own.

    The library's classes call :func:`layout_of` from their public ``serialize``,
    ``deserialize``, ``save`` and ``load`` methods; :mod:`routilux.persistence` registers
    their layouts and ``import routilux`` imports it, so the classes never import the
    module that knows their layout.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_layout expects a class, got {cls!r}")
    default_save, default_load = _no_file_form(cls)
    layout = Layout(
        serialize,
        deserialize,
        save or default_save,
        load or default_load,
        deserialize_owned or deserialize,
        encode,
    )
    with _registry_lock:
        _LAYOUTS[cls] = layout
        _LAYOUT_OF.clear()


def layout_of(cls: type) -> Layout:
    """The layout registered for ``cls`` or its nearest base class.

    Raises :class:`SerializationError` when there is none -- for the library's own
    classes only possible while ``routilux`` itself is still being imported.
    """
    found = _LAYOUT_OF.get(cls)
    if found is not None:
        return found
    with _registry_lock:
        for base in cls.__mro__:
            layout = _LAYOUTS.get(base)
            if layout is not None:
                _LAYOUT_OF[cls] = layout
                return layout
    raise SerializationError(
        f"no serialization layout is registered for {cls.__qualname__} (the library's "
        f"layouts are registered by routilux.persistence, which 'import routilux' loads)"
    )


# ---------------------------------------------------------------------------
# Function registry
# ---------------------------------------------------------------------------

_FUNCTIONS: dict[str, Callable[..., Any]] = {}
# Reverse map so the encoder can write the registered name of a function.
_FUNCTION_NAMES: dict[Callable[..., Any], str] = {}


def _default_function_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or ""
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn))
    return f"{module}.{qualname}" if module else str(qualname)


@overload
def register_function(fn: F, name: str | None = None) -> F: ...
@overload
def register_function(fn: str) -> Callable[[F], F]: ...
@overload
def register_function(fn: None = None, name: str | None = None) -> Callable[[F], F]: ...
def register_function(fn: Any = None, name: str | None = None) -> Any:
    """Allow saved data to name the callable ``fn``; returns ``fn``.

    Saved flows may only name functions the program registered (DESIGN invariant 8), so
    register every function used as a slot handler, merge strategy or built-in routine
    callable (a Mapper ``function``, a Filter condition ...). Four spellings::

        register_function(fn)                # under "<module>.<qualname>"
        register_function(fn, name="x")      # under "x"
        @register_function                   # decorator
        @register_function("x")              # decorator with a name (or name="x")

    A registered function is restored even when it is a lambda or a nested function, and
    whether or not its module is imported: registration proves the program chose it.
    Registering another callable under a taken name replaces it (with a logged warning).
    Classes may be registered too (e.g. an exception class for ``retryable_exceptions``).
    """
    if isinstance(fn, str):
        if name is not None:
            raise TypeError("register_function: give the name once, not twice")
        chosen = fn
        return lambda target: _register_function(target, chosen)
    if fn is None:
        return lambda target: _register_function(target, name)
    return _register_function(fn, name)


def _register_function(fn: F, name: str | None) -> F:
    if not callable(fn):
        raise TypeError(f"register_function expects a callable, got {fn!r}")
    key = name if name is not None else _default_function_name(fn)
    if not isinstance(key, str) or not key:
        raise TypeError(f"register_function name must be a non-empty string, got {key!r}")
    with _registry_lock:
        previous = _FUNCTIONS.get(key)
        _FUNCTIONS[key] = fn
        _FUNCTION_NAMES[fn] = key
        if previous is not None and previous is not fn:
            _FUNCTION_NAMES.pop(previous, None)
    if previous is not None and previous is not fn:
        logger.warning("registered function name %r now refers to %r", key, fn)
    return fn


def registered_function(name: str) -> Callable[..., Any] | None:
    """The callable registered under ``name`` with :func:`register_function`, or None."""
    return _FUNCTIONS.get(name) if isinstance(name, str) else None


# ---------------------------------------------------------------------------
# Callable codec
# ---------------------------------------------------------------------------

SAFE_BUILTINS = frozenset(
    {
        "abs", "all", "any", "bin", "bool", "chr", "dict", "divmod", "float", "frozenset",
        "hex", "int", "len", "list", "max", "min", "oct", "ord", "repr", "round", "set",
        "sorted", "str", "sum", "tuple",
    }
)  # fmt: skip
"""Builtins a saved callable may name: registered by the library, as it were. Everything
else (eval, exec, open, __import__, getattr, compile, print, ...) is refused on load."""

_CALLABLE = "callable"


def _unrestorable(description: str, reason: str) -> SerializationError:
    # Raised, never replaced by None: a flow that silently lost a handler would run
    # differently from the one that was saved (DESIGN invariant 9).
    return SerializationError(f"Cannot restore callable {description}: {reason}")


def _not_encodable(fn: object, reason: str) -> None:
    message = f"Cannot serialize callable {fn!r}: {reason}; it is saved as None"
    logger.warning(message)
    warnings.warn(message, UserWarning, stacklevel=3)


def _is_module_builtin(fn: object) -> bool:
    # Builtin *functions* are bound to their module (or None); builtin *methods* of
    # other objects (e.g. ``[].append``) are not restorable.
    if not isinstance(fn, types.BuiltinFunctionType):
        return False
    owner = getattr(fn, "__self__", None)
    return owner is None or isinstance(owner, types.ModuleType)


def encode_callable(fn: Any, owner: Any = None) -> dict[str, Any] | None:
    """Encode ``fn`` as a callable dict (spec 50 §3), or None when it cannot be encoded.

    * bound method -> ``{"callable_type": "method", "class_name", "method_name",
      "object_id"}`` where ``object_id`` is the bound object's ``_id``. When ``owner`` is
      given and ``fn`` is bound to a different object, SerializationError is raised.
    * plain function or lambda -> ``{"callable_type": "function", "module", "name",
      "qualname"}`` (plus ``"registered_name"`` for a registered function).
    * builtin function (or a builtin type such as ``str``) -> ``{"callable_type":
      "builtin", "name", "module"}``.
    * ``None`` -> ``None``; anything else -> ``None`` with a warning.
    """
    if fn is None:
        return None
    registered = _FUNCTION_NAMES.get(fn) if _hashable(fn) else None

    if isinstance(fn, types.MethodType):
        bound = fn.__self__
        if owner is not None and bound is not owner:
            raise SerializationError(
                f"Cannot serialize method {fn.__func__.__qualname__}: it is bound to "
                f"{bound!r}, not to the object being serialized ({owner!r})"
            )
        if isinstance(bound, type):
            if registered is not None:
                return _function_dict(fn, registered)
            _not_encodable(
                fn, "class methods are not supported (register it with register_function)"
            )
            return None
        object_id = getattr(bound, "_id", None)
        if not isinstance(object_id, str):
            if registered is not None:
                return _function_dict(fn, registered)
            _not_encodable(
                fn,
                f"the object it is bound to ({type(bound).__name__}) has no "
                f"string '_id' to find it by on load",
            )
            return None
        return {
            "_type": _CALLABLE,
            "callable_type": "method",
            "class_name": type(bound).__name__,
            "method_name": fn.__func__.__name__,
            "object_id": object_id,
        }

    if isinstance(fn, types.FunctionType):
        return _function_dict(fn, registered)

    if _is_module_builtin(fn) or (isinstance(fn, type) and _is_safe_builtin_type(fn)):
        module = getattr(fn, "__module__", None) or "builtins"
        return {
            "_type": _CALLABLE,
            "callable_type": "builtin",
            "name": fn.__name__,
            "module": module,
        }

    if registered is not None:
        return _function_dict(fn, registered)
    _not_encodable(fn, f"objects of type {type(fn).__name__} cannot be saved by reference")
    return None


def _hashable(obj: object) -> bool:
    try:
        hash(obj)
    except TypeError:
        return False
    return True


def _is_safe_builtin_type(cls: type) -> bool:
    return cls.__name__ in SAFE_BUILTINS and getattr(builtins, cls.__name__, None) is cls


def _function_dict(fn: Callable[..., Any], registered: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "_type": _CALLABLE,
        "callable_type": "function",
        "module": getattr(fn, "__module__", None) or "",
        "name": getattr(fn, "__name__", None) or "",
        "qualname": getattr(fn, "__qualname__", None) or "",
    }
    if registered is not None:
        spec["registered_name"] = registered
    return spec


def _req(spec: Mapping[str, Any], key: str) -> str:
    value = spec.get(key)
    if not isinstance(value, str):
        raise SerializationError(
            f"Malformed callable spec: {key!r} must be a string, got {short_repr(value)} "
            f"in {short_repr(spec)}"
        )
    return value


def _opt(spec: Mapping[str, Any], key: str) -> str | None:
    return None if spec.get(key) is None else _req(spec, key)


def decode_callable(
    spec: Any, owners: Mapping[str, object] | None = None
) -> Callable[..., Any] | None:
    """Restore a callable from a dict made by :func:`encode_callable`.

    Only registered names are restored (DESIGN invariant 8):

    * a function only from the function registry (:func:`register_function`), by its
      ``registered_name`` or its ``"<module>.<qualname>"``;
    * a builtin only from :data:`SAFE_BUILTINS`;
    * a method only of an object in ``owners`` (``_id`` -> object, the objects being
      deserialized in the same call) whose class is the one registered under
      ``class_name`` with :func:`register_serializable`.

    Never imports a module, never looks into one, never runs code named by the data.
    ``None`` decodes to ``None``. Anything else -- an unregistered function (whatever
    modules are imported), an unsafe builtin, a missing owner, a malformed dict -- raises
    :class:`SerializationError` naming the callable and saying how to register it.
    """
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise SerializationError(
            f"Malformed callable spec: expected a dict, got {type(spec).__name__}"
        )
    if spec.get("_type") != _CALLABLE:
        raise SerializationError(
            f"Malformed callable spec: '_type' must be 'callable', "
            f"got {short_repr(spec.get('_type'))}"
        )
    kind = spec.get("callable_type")
    if kind == "method":
        return _decode_method(spec, owners)
    if kind == "function":
        return _decode_function(spec)
    if kind == "builtin":
        return _decode_builtin(spec)
    raise SerializationError(f"Malformed callable spec: unknown callable_type {short_repr(kind)}")


def _decode_method(
    spec: Mapping[str, Any], owners: Mapping[str, object] | None
) -> Callable[..., Any]:
    class_name = _req(spec, "class_name")
    method_name = _req(spec, "method_name")
    object_id = _req(spec, "object_id")
    what = f"method {class_name}.{method_name} of object {short_repr(object_id)}"
    owner = owners.get(object_id) if owners is not None else None
    if owner is None:
        raise _unrestorable(what, "no object with that _id is being deserialized with it")
    if type(owner).__name__ != class_name:
        raise _unrestorable(what, f"the object with that _id is a {type(owner).__name__}")
    if _CLASSES.get(class_name) is not type(owner):
        # "Registering a routine class registers its methods" -- and only then.
        raise _unrestorable(
            what,
            f"class {class_name} is not registered (decorate it with @register_serializable "
            f"so that saved data may name its methods)",
        )
    if method_name.startswith("__") and method_name.endswith("__"):
        raise _unrestorable(what, "special methods are never restored")
    # getattr_static: never run a property or __getattr__ named by the data.
    try:
        static = inspect.getattr_static(owner, method_name)
    except AttributeError:
        raise _unrestorable(what, "the object has no such method") from None
    if not isinstance(static, (types.FunctionType, staticmethod, classmethod)):
        raise _unrestorable(what, "the attribute is not a method")
    method = getattr(owner, method_name)
    if not callable(method):
        raise _unrestorable(what, "the attribute is not callable")
    result: Callable[..., Any] = method
    return result


def _decode_function(spec: Mapping[str, Any]) -> Callable[..., Any]:
    module_name = _req(spec, "module")
    name = _req(spec, "name")
    qualname = _opt(spec, "qualname")
    registered_name = _opt(spec, "registered_name")
    path = qualname or name
    dotted = f"{module_name}.{path}" if module_name else path
    for key in (registered_name, dotted):
        if key is not None:
            fn = _FUNCTIONS.get(key)
            if fn is not None:
                return fn
    # Not registered: refused, whatever is imported (a file naming
    # routilux.serialization.write_json or yaml.unsafe_load must not get it).
    shown = registered_name if registered_name is not None else dotted
    if all(part.isidentifier() for part in path.split(".")):
        how = f"routilux.register_function({path})"
    else:  # a lambda or nested function: it needs a name of its own
        how = f"routilux.register_function(the_function, name={shown!r})"
    raise _unrestorable(
        f"function {shown}",
        f"it is not registered; saved data may only name registered functions -- call "
        f"{how} (or decorate it with @register_function) in the program before loading",
    )


def _decode_builtin(spec: Mapping[str, Any]) -> Callable[..., Any]:
    name = _req(spec, "name")
    module_name = _opt(spec, "module")
    if module_name not in (None, "builtins"):
        raise _unrestorable(
            f"{module_name}.{name}",
            "only builtins of the builtins module are restored (register the function "
            "with routilux.register_function to allow it)",
        )
    what = f"builtin {name}"
    value = getattr(builtins, name, None) if name in SAFE_BUILTINS else None
    if not callable(value):
        raise _unrestorable(
            what,
            f"it is not one of the safe builtins ({', '.join(sorted(SAFE_BUILTINS))})",
        )
    result: Callable[..., Any] = value
    return result


def lookup_exception_class(dotted: str) -> type[BaseException]:
    """The exception class saved data names as ``"<module>.<qualname>"``.

    Allowed, and nothing else: builtin exceptions (``"builtins.ValueError"`` or just
    ``"ValueError"``), routilux's own (``"routilux.exceptions.FlowError"``), and classes
    registered with :func:`register_serializable` or :func:`register_function`. Nothing is
    imported and no module is looked into. Anything else raises :class:`SerializationError`
    saying how to register the class.
    """
    if not isinstance(dotted, str) or not dotted:
        raise SerializationError(
            f"an exception class must be named by a non-empty string, got {short_repr(dotted)}"
        )
    module_name, _, qualname = dotted.rpartition(".")
    found: object = None
    if module_name in ("", "builtins"):
        found = builtins.__dict__.get(qualname)
    elif module_name == "routilux.exceptions":
        found = _routilux_exceptions.__dict__.get(qualname)
    if not _is_exception_class(found):
        found = _FUNCTIONS.get(dotted)
    if not _is_exception_class(found):
        candidate = _CLASSES.get(qualname.rpartition(".")[2])
        if candidate is not None and f"{candidate.__module__}.{candidate.__qualname__}" == dotted:
            found = candidate
    if not _is_exception_class(found):
        raise SerializationError(
            f"exception class {short_repr(dotted)} is not allowed: saved data may name builtin "
            f"exceptions, routilux's own, and classes the program registered -- decorate it "
            f"with @register_serializable (or call routilux.register_function on it) before "
            f"loading"
        )
    result: type[BaseException] = found  # type: ignore[assignment]
    return result


def _is_exception_class(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseException)


# ---------------------------------------------------------------------------
# JSON files
# ---------------------------------------------------------------------------

_JSON_SCALARS = (str, int, float, bool, type(None))
_NOT_FINITE = "is {0!r}: JSON has no NaN or Infinity (store None or a string instead)"

# Compact and strict. An indent would force json's pure-Python encoder (tens of times
# slower); allow_nan=False because NaN/Infinity are not JSON and other tools refuse them.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
# Items of a large top-level list (history, pending tasks, logs) encoded per call, so a
# save never holds the whole document as one string.
_STREAM_CHUNK = 1000


def key_path(parent: str, key: object) -> str:
    """``parent.key`` (or ``parent['key']``), for error messages naming a value."""
    if isinstance(key, str) and key.isidentifier():
        return f"{parent}.{key}" if parent else key
    return f"{parent}[{key!r}]"


def find_unserializable(
    value: object, path: str = "", *, string_keys: bool = False, _active: set[int] | None = None
) -> tuple[str, str] | None:
    """Locate the first value json cannot encode (including NaN and infinities, which
    strict JSON has no literal for), or (``string_keys``) the first dict key that is not
    a string (JSON would turn it into one): (path, problem) or None."""
    active = _active if _active is not None else set()
    if isinstance(value, float) and not math.isfinite(value):
        return path or "<root>", _NOT_FINITE.format(value)
    if isinstance(value, _JSON_SCALARS):
        return None
    if isinstance(value, (dict, list, tuple)):
        if id(value) in active:
            return path or "<root>", "it contains itself (circular reference)"
        active.add(id(value))
        try:
            if isinstance(value, dict):
                for key, item in value.items():
                    if string_keys and not isinstance(key, str):
                        return (
                            path or "<root>",
                            f"its key {key!r} is a {type(key).__name__}; JSON object keys "
                            f"are strings, so it would load back as {str(key)!r} -- use "
                            "string keys",
                        )
                    if not isinstance(key, _JSON_SCALARS):
                        return (
                            key_path(path, key),
                            f"its key is of type {type(key).__name__}",
                        )
                    if isinstance(key, float) and not math.isfinite(key):
                        return key_path(path, key), f"its key {_NOT_FINITE.format(key)}"
                    found = find_unserializable(
                        item, key_path(path, key), string_keys=string_keys, _active=active
                    )
                    if found is not None:
                        return found
            else:
                for index, item in enumerate(value):
                    found = find_unserializable(
                        item, f"{path}[{index}]", string_keys=string_keys, _active=active
                    )
                    if found is not None:
                        return found
        finally:
            active.discard(id(value))
        return None
    return path or "<root>", f"of type {type(value).__name__}"


def _iter_json(data: Any) -> Iterator[str]:
    """The compact JSON text of ``data``, in pieces (see :data:`_STREAM_CHUNK`).

    A top-level dict is written key by key and its long lists in slices, each slice by
    the C encoder; anything else is one piece. The concatenation equals
    ``json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``.
    """
    encode = _ENCODER.encode
    if type(data) is not dict or not all(type(key) is str for key in data):
        yield encode(data)
        return
    yield "{"
    separator = ""
    for key, value in data.items():
        yield f"{separator}{encode(key)}:"
        separator = ","
        if type(value) is list and len(value) > _STREAM_CHUNK:
            if any(item is value or item is data for item in value):
                raise ValueError("Circular reference detected")
            yield "["
            for start in range(0, len(value), _STREAM_CHUNK):
                # Slicing the list and dropping its brackets keeps the C encoder busy.
                piece = encode(value[start : start + _STREAM_CHUNK])[1:-1]
                yield piece if start == 0 else f",{piece}"
            yield "]"
        elif value is data:
            raise ValueError("Circular reference detected")
        else:
            yield encode(value)
    yield "}"


def _encoding_error(data: Any, exc: BaseException) -> SerializationError:
    try:
        found = find_unserializable(data)
    except RecursionError:
        found = None
    if found is None:
        return SerializationError(f"cannot serialize data to JSON: {exc}")
    where, problem = found
    return SerializationError(f"cannot serialize value at '{where}' {problem}")


def write_json(path: PathLike, data: Any, *, indent: int | None = None) -> None:
    """Write ``data`` as compact JSON (UTF-8) to ``path`` atomically.

    ``indent`` writes indented JSON for people to read instead, in one piece and several
    times slower (json's pure-Python encoder). Parent directories are created. The text
    is streamed to a temporary file in the same directory which then replaces ``path`` in
    one step, so a crash leaves either the old file or the new one, never half of one.
    Data JSON cannot encode -- an object, a set, NaN or Infinity, a circular reference --
    raises :class:`SerializationError` naming its key path (e.g. ``'shared_data.x'``);
    ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    # os.open with 0o666 lets the umask decide the mode, as for a normal new file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            try:
                if indent is None:
                    for piece in _iter_json(data):
                        handle.write(piece)
                else:
                    handle.write(
                        json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False)
                    )
            except (TypeError, ValueError, RecursionError) as exc:
                raise _encoding_error(data, exc) from exc
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.chmod(tmp, os.stat(target).st_mode & 0o7777)
        except OSError:
            pass  # no previous file: keep the umask-derived mode
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename durable on POSIX; not possible (nor needed) everywhere.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _refuse_constant(name: str) -> Any:
    raise SerializationError(f"{name} is not a JSON number (NaN and Infinity are refused)")


def _object_without_duplicates(
    pairs: list[tuple[str, Any]], _dict: type[dict[str, Any]] = dict, _len: Any = len
) -> dict[str, Any]:
    # Called for every object of every file read, hence the builtins bound as locals.
    result = _dict(pairs)
    if _len(result) != _len(pairs):  # rare: only then find which key it was
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise SerializationError(
                    f"duplicate key {short_repr(key)} in a JSON object (which value counts would "
                    f"depend on the reader, so the file is refused)"
                )
            seen.add(key)
    return result


def loads_json(text: str | bytes, what: str) -> Any:
    """Parse JSON text strictly; ``what`` names it in errors.

    Unlike :func:`json.loads`, the literals ``NaN``, ``Infinity`` and ``-Infinity`` and
    duplicate keys in an object are refused. Any problem -- invalid or truncated JSON,
    bad UTF-8, nesting too deep for the parser, a number with too many digits -- raises
    :class:`SerializationError` naming ``what``. Compact and indented text read the same.
    """
    try:
        return json.loads(
            text,
            parse_constant=_refuse_constant,
            object_pairs_hook=_object_without_duplicates,
        )
    except SerializationError as exc:
        raise SerializationError(f"{what} is refused: {exc}") from None
    except (ValueError, RecursionError, TypeError) as exc:
        # JSONDecodeError and UnicodeDecodeError are both ValueErrors; so is the
        # "exceeds the limit for integer string conversion" of a huge number.
        raise SerializationError(f"{what} is not valid JSON (corrupt or truncated): {exc}") from exc


def read_json(path: PathLike, what: str) -> dict[str, Any]:
    """Read a JSON object saved by :func:`write_json`; ``what`` names it in errors.

    A missing file raises FileNotFoundError naming the path; an unreadable, truncated or
    corrupt file, one with NaN/Infinity or a duplicate key (see :func:`loads_json`), or
    one whose top level is not an object raises :class:`SerializationError` naming the
    file. The file is only read.
    """
    target = Path(path)
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"{what} file not found", str(target)) from None
    except OSError as exc:
        raise SerializationError(f"Cannot read {what} file '{target}': {exc}") from exc
    data = loads_json(raw, f"{what} file '{target}'")
    if not isinstance(data, dict):
        raise SerializationError(
            f"{what} file '{target}' does not contain a JSON object "
            f"(top level is {type(data).__name__})"
        )
    return data


# ---------------------------------------------------------------------------
# Datetimes
# ---------------------------------------------------------------------------


# Zero-padded digits, for iso_texts.
_D3 = tuple(f"{i:03d}" for i in range(1000))
_ONE_SECOND = timedelta(seconds=1)
_LAST_SECOND = datetime.max.replace(microsecond=0)


#: The second :func:`iso_text` formatted last: [start, end) and its text.  Datetimes
#: are values (immutable), so whichever thread replaced it last, it is right.
_last_second: tuple[datetime, datetime, str] = (datetime.max, datetime.max, "")


def iso_text(dt: datetime) -> str:
    """``dt.isoformat()``, exactly: the second it lies in is formatted once
    (``isoformat`` formats through ``printf``), so the timestamps of a job -- mostly
    within one second -- cost two comparisons and the microseconds' digits each.  An
    aware datetime (or a subclass) is formatted by its own ``isoformat``."""
    if dt.tzinfo is not None or type(dt) is not datetime:
        return dt.isoformat()
    global _last_second
    start, end, prefix = _last_second
    if not start <= dt < end:
        start = dt.replace(microsecond=0)
        prefix = dt.isoformat()[:19]  # "YYYY-MM-DDTHH:MM:SS"
        _last_second = (
            start,
            start + _ONE_SECOND if start < _LAST_SECOND else datetime.max,
            prefix,
        )
    micro = dt.microsecond
    return f"{prefix}.{_D3[micro // 1000]}{_D3[micro % 1000]}" if micro else prefix


def iso_texts(values: Iterable[datetime]) -> list[str]:
    """``[dt.isoformat() for dt in values]``, exactly, at a fraction of the cost.

    ``isoformat`` formats through ``printf``, and a snapshot formats one timestamp
    per history record.  Records written one after another mostly share the same
    second: that prefix is formatted by ``isoformat`` once per second, the
    microseconds come from a digit table.  An aware datetime (or a subclass) is
    formatted by its own ``isoformat``.
    """
    values = values if type(values) is list else list(values)
    try:
        return _naive_iso_texts(values)
    except TypeError:  # an aware datetime compared with a naive one: see below
        return [dt.isoformat() for dt in values]


def _naive_iso_texts(values: list[datetime]) -> list[str]:
    # Whether a timestamp lies in the second of the last prefix is two comparisons
    # (no object made). ``start`` is always naive, and comparing an aware datetime
    # with a naive one raises TypeError, so no tzinfo is looked at here: the caller
    # formats a list holding an aware datetime one by one. (A tzinfo whose
    # utcoffset() is None compares, and is formatted, as naive.)
    texts: list[str] = []
    append = texts.append
    d3, exact, one, last = _D3, datetime, _ONE_SECOND, _LAST_SECOND
    start = end = datetime.max  # the second [start, end) that ``prefix`` spells
    prefix = ""
    for dt in values:
        if type(dt) is not exact:
            append(dt.isoformat())
            continue
        if not start <= dt < end:
            start = dt.replace(microsecond=0)
            end = start + one if start < last else datetime.max
            prefix = dt.isoformat()[:19]  # "YYYY-MM-DDTHH:MM:SS"
        micro = dt.microsecond
        append(f"{prefix}.{d3[micro // 1000]}{d3[micro % 1000]}" if micro else prefix)
    return texts


@overload
def to_iso(dt: datetime) -> str: ...
@overload
def to_iso(dt: None) -> None: ...
def to_iso(dt: datetime | None) -> str | None:
    """``dt.isoformat()``, or None for None."""
    if dt is None:
        return None
    if not isinstance(dt, datetime):
        raise SerializationError(f"expected a datetime, got {type(dt).__name__}: {dt!r}")
    return dt.isoformat()


@overload
def from_iso(value: str | datetime) -> datetime: ...
@overload
def from_iso(value: None) -> None: ...
def from_iso(value: str | datetime | None) -> datetime | None:
    """Parse an ISO 8601 string written by :func:`to_iso` (None stays None).

    A datetime is returned as is; a trailing ``Z`` is accepted; anything else raises
    :class:`SerializationError` naming the value.
    """
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise SerializationError(
            f"expected an ISO datetime string, got {type(value).__name__}: {short_repr(value)}"
        )
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise SerializationError(f"invalid ISO datetime {short_repr(value)}") from exc


# ---------------------------------------------------------------------------
# Flow files
# ---------------------------------------------------------------------------


class FlowFileCodec(NamedTuple):
    """How a flow becomes a flow file (YAML/JSON) and comes back.

    ``load(path, cls, allow_imports)`` returns a new ``cls`` (a Flow class) built from
    the file; ``save(flow, path)`` writes it.
    """

    load: Callable[[PathLike, type, Any], Any]
    save: Callable[[Any, PathLike], None]


_FLOW_FILE_CODEC: list[FlowFileCodec] = []


def register_flow_file_codec(
    load: Callable[[PathLike, type, Any], Any], save: Callable[[Any, PathLike], None]
) -> None:
    """Make ``load``/``save`` what ``Flow.from_file``/``Flow.to_file`` call
    (:mod:`routilux.flowfile` registers itself; a later registration replaces it)."""
    with _registry_lock:
        _FLOW_FILE_CODEC[:] = [FlowFileCodec(load, save)]


def flow_file_codec() -> FlowFileCodec:
    """The registered flow-file codec; SerializationError when none is (only possible
    while ``routilux`` itself is still being imported)."""
    if not _FLOW_FILE_CODEC:
        raise SerializationError(
            "no flow-file codec is registered (routilux.flowfile registers it; "
            "'import routilux' loads it)"
        )
    return _FLOW_FILE_CODEC[0]
