"""The serialization codec: format versions, class and function registries, the callable
codec (never importing or running anything named by the data), JSON files, datetimes."""

from __future__ import annotations

import builtins
import functools
import json
import logging
import os
import sys
import types
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routilux import serialization as ser
from routilux.exceptions import RoutiluxError, SerializationError
from routilux.serialization import (
    FORMAT_VERSION,
    SAFE_BUILTINS,
    check_format_version,
    decode_callable,
    encode_callable,
    from_iso,
    lookup_class,
    read_json,
    register_function,
    register_serializable,
    register_upgrade,
    required_init_parameters,
    stamp,
    to_iso,
    write_json,
)


@pytest.fixture(autouse=True)
def _isolated_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests register throwaway classes and functions; keep the real registries clean.
    monkeypatch.setattr(ser, "_CLASSES", dict(ser._CLASSES))
    monkeypatch.setattr(ser, "_FUNCTIONS", dict(ser._FUNCTIONS))
    monkeypatch.setattr(ser, "_FUNCTION_NAMES", dict(ser._FUNCTION_NAMES))
    monkeypatch.setattr(ser, "_UPGRADES", {})


@pytest.fixture
def fake_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """An imported module (in sys.modules) defining a few functions and a class."""
    name = f"routilux_test_mod_{uuid.uuid4().hex}"
    module = types.ModuleType(name)
    source = """
from os.path import join as reexported

def handler(data):
    return ("handled", data)

class Box:
    @staticmethod
    def static_handler(data):
        return ("static", data)

    def method(self, data):
        return data

CONSTANT = 3

def __getattr__(attr):
    GETATTR_CALLS.append(attr)
    return handler
"""
    module.__dict__["GETATTR_CALLS"] = []
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, name, module)
    yield module


def fn_spec(module: str, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "_type": "callable",
        "callable_type": "function",
        "module": module,
        "name": name,
        **extra,
    }


def builtin_spec(name: str, **extra: Any) -> dict[str, Any]:
    return {"_type": "callable", "callable_type": "builtin", "name": name, **extra}


class Owner:
    def __init__(self, owner_id: str = "owner-1") -> None:
        self._id = owner_id
        self.property_reads = 0

    def on_input(self, data: Any) -> Any:
        return ("owner", self._id, data)

    @property
    def sneaky(self) -> Any:
        self.property_reads += 1
        return self.on_input


class OtherOwner(Owner):
    pass


def module_level_function(data: Any) -> Any:
    return data


# ---------------------------------------------------------------- format version


def test_stamp_adds_current_version_without_mutating() -> None:
    data = {"a": 1}
    stamped = stamp(data)
    assert stamped == {"a": 1, "format_version": FORMAT_VERSION}
    assert data == {"a": 1}
    assert stamp({"format_version": 0})["format_version"] == FORMAT_VERSION


def test_check_format_version_accepts_current_and_missing() -> None:
    current = {"format_version": FORMAT_VERSION, "x": 1}
    assert check_format_version(current, "Flow") is current
    legacy = {"x": 1}  # written before versions were stamped: version 1
    assert check_format_version(legacy, "Flow") == {"x": 1}


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 99])
def test_check_format_version_rejects_newer(version: int) -> None:
    with pytest.raises(SerializationError, match="JobState file") as info:
        check_format_version({"format_version": version}, "JobState file")
    assert str(version) in str(info.value)


@pytest.mark.parametrize("version", ["1", 1.0, True, None, [1], 0, -1])
def test_check_format_version_rejects_invalid(version: Any) -> None:
    with pytest.raises(SerializationError, match="Flow"):
        check_format_version({"format_version": version}, "Flow")


def test_check_format_version_rejects_non_dict() -> None:
    with pytest.raises(SerializationError, match="Flow"):
        check_format_version([1, 2], "Flow")  # type: ignore[arg-type]


def test_upgrades_are_applied_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ser, "FORMAT_VERSION", 3)

    @register_upgrade(1)
    def rename_field(data: dict[str, Any]) -> dict[str, Any]:
        data["new_name"] = data.pop("old_name")
        return data

    @register_upgrade(2)
    def add_field(data: dict[str, Any]) -> dict[str, Any]:
        assert data["format_version"] == 2  # sees the result of the previous step
        data["added"] = True
        return data

    original = {"old_name": 5}
    upgraded = check_format_version(original, "Flow")
    assert upgraded == {"new_name": 5, "added": True, "format_version": 3}
    assert original == {"old_name": 5}  # the caller's dict is left alone
    assert check_format_version({"format_version": 2, "k": 0}, "Flow")["added"] is True


def test_missing_upgrade_step_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ser, "FORMAT_VERSION", 2)
    with pytest.raises(SerializationError, match="no upgrade from format_version 1"):
        check_format_version({}, "Flow")


def test_serialization_error_is_a_value_error() -> None:
    assert issubclass(SerializationError, ValueError)
    assert issubclass(SerializationError, RoutiluxError)


# ---------------------------------------------------------------- class registry


def test_register_and_lookup_class() -> None:
    @register_serializable
    class Widget:
        def __init__(self, size: int = 1) -> None:
            self.size = size

    assert Widget.__name__ == "Widget"  # the decorator returns the class itself
    assert lookup_class("Widget") is Widget
    assert "Widget" in ser.registered_classes()


def test_classes_without_init_or_with_varargs_are_fine() -> None:
    @register_serializable
    class Plain:
        pass

    @register_serializable
    class Varargs:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

    assert lookup_class("Plain") is Plain
    assert lookup_class("Varargs") is Varargs


@pytest.mark.parametrize("kind", ["positional", "keyword_only"])
def test_register_rejects_required_init_parameter(kind: str) -> None:
    if kind == "positional":

        class NeedsArg:
            def __init__(self, name: str) -> None:
                self.name = name

    else:

        class NeedsArg:  # type: ignore[no-redef]
            def __init__(self, *, name: str) -> None:
                self.name = name

    with pytest.raises(TypeError, match="NeedsArg") as info:
        register_serializable(NeedsArg)
    assert "name" in str(info.value)
    with pytest.raises(SerializationError):
        lookup_class("NeedsArg")


def test_required_init_parameters() -> None:
    class Mixed:
        def __init__(self, a: int, b: int = 2, *rest: int, c: int, d: int = 4) -> None:
            pass

    assert required_init_parameters(Mixed) == ["a", "c"]
    assert required_init_parameters(Owner) == []


def test_register_non_class_raises() -> None:
    with pytest.raises(TypeError):
        register_serializable(module_level_function)  # type: ignore[arg-type]


def test_reregistering_same_class_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    @register_serializable
    class Same:
        pass

    with caplog.at_level(logging.WARNING, logger="routilux.serialization"):
        assert register_serializable(Same) is Same
    assert caplog.records == []
    assert lookup_class("Same") is Same


def test_different_class_with_same_name_replaces_with_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def make() -> type:
        class Clash:
            pass

        return Clash

    first, second = make(), make()
    register_serializable(first)
    with caplog.at_level(logging.WARNING, logger="routilux.serialization"):
        register_serializable(second)
    assert lookup_class("Clash") is second
    assert any("Clash" in r.getMessage() for r in caplog.records)


def test_unregistered_class_name_raises() -> None:
    with pytest.raises(SerializationError, match="class not found in registry") as info:
        lookup_class("NoSuchClassAnywhere")
    assert "NoSuchClassAnywhere" in str(info.value)
    with pytest.raises(ValueError, match="class not found in registry"):
        lookup_class("os.system")


def test_lookup_never_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "imported.txt"
    (tmp_path / "evil_classes_mod.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Evil:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("Evil", "evil_classes_mod.Evil", "evil_classes_mod"):
        with pytest.raises(SerializationError, match="class not found in registry"):
            lookup_class(name)
    assert "evil_classes_mod" not in sys.modules
    assert not marker.exists()


def test_lookup_class_rejects_non_string() -> None:
    with pytest.raises(SerializationError):
        lookup_class(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------- encode_callable


def test_encode_bound_method() -> None:
    owner = Owner("abc")
    assert encode_callable(owner.on_input, owner=owner) == {
        "_type": "callable",
        "callable_type": "method",
        "class_name": "Owner",
        "method_name": "on_input",
        "object_id": "abc",
    }
    # Without owner (or bound to another object with an _id): written with that object's id.
    other = OtherOwner("xyz")
    spec = encode_callable(other.on_input)
    assert spec is not None
    assert (spec["class_name"], spec["object_id"]) == ("OtherOwner", "xyz")


def test_encode_method_bound_to_another_owner_raises() -> None:
    with pytest.raises(SerializationError, match="on_input"):
        encode_callable(Owner("a").on_input, owner=Owner("b"))


def test_encode_method_of_object_without_id_is_none() -> None:
    class NoId:
        def m(self) -> None:
            pass

    with pytest.warns(UserWarning, match="_id"):
        assert encode_callable(NoId().m) is None


def test_encode_module_function() -> None:
    spec = encode_callable(module_level_function)
    assert spec is not None
    assert spec["_type"] == "callable"
    assert spec["callable_type"] == "function"
    assert spec["module"] == module_level_function.__module__
    assert spec["name"] == "module_level_function"
    assert "registered_name" not in spec


def test_encode_lambda_and_nested_function_use_dunder_name() -> None:
    def inner(x: Any) -> Any:
        return x

    lam_spec = encode_callable(lambda x: x)
    inner_spec = encode_callable(inner)
    assert lam_spec is not None and inner_spec is not None
    assert lam_spec["name"] == "<lambda>"
    assert inner_spec["name"] == "inner"
    assert inner_spec["qualname"].endswith("<locals>.inner")


def test_encode_builtins() -> None:
    assert encode_callable(len) == {
        "_type": "callable",
        "callable_type": "builtin",
        "name": "len",
        "module": "builtins",
    }
    str_spec = encode_callable(str)
    assert str_spec is not None and str_spec["callable_type"] == "builtin"


def test_encode_unsupported_is_none_with_warning() -> None:
    assert encode_callable(None) is None
    with pytest.warns(UserWarning):
        assert encode_callable(functools.partial(module_level_function, 1)) is None
    with pytest.warns(UserWarning):
        assert encode_callable([].append) is None
    with pytest.warns(UserWarning):
        assert encode_callable(Owner) is None  # a user class is not a callable reference


def test_encodings_are_json_safe() -> None:
    owner = Owner()
    for fn in (owner.on_input, module_level_function, lambda: 0, len, str):
        spec = encode_callable(fn)
        assert json.loads(json.dumps(spec)) == spec


# ---------------------------------------------------------------- decode_callable


def test_decode_none_is_none() -> None:
    assert decode_callable(None) is None


def test_method_round_trip_through_owners() -> None:
    register_serializable(Owner)
    owner = Owner("r1")
    spec = json.loads(json.dumps(encode_callable(owner.on_input, owner=owner)))
    fresh = Owner("r1")
    restored = decode_callable(spec, owners={"r1": fresh, "r2": Owner("r2")})
    assert restored is not None
    assert restored(5) == ("owner", "r1", 5)
    assert getattr(restored, "__self__", None) is fresh


def test_method_of_unregistered_class_raises() -> None:
    # Issue 9: only "registering a routine class registers its methods".
    spec = encode_callable(Owner("r1").on_input)
    with pytest.raises(SerializationError, match="Owner is not registered.*register_serializable"):
        decode_callable(spec, owners={"r1": Owner("r1")})


@pytest.mark.parametrize(
    ("owners", "reason"),
    [
        (None, "no object"),
        ({}, "no object"),
        ({"r1": OtherOwner("r1")}, "OtherOwner"),
    ],
)
def test_method_without_matching_owner_raises(owners: Any, reason: str) -> None:
    register_serializable(Owner)
    register_serializable(OtherOwner)
    spec = encode_callable(Owner("r1").on_input)
    with pytest.raises(SerializationError, match=reason):
        decode_callable(spec, owners=owners)


def test_method_decode_never_runs_properties_or_dunders() -> None:
    register_serializable(Owner)
    owner = Owner("r1")
    base = {"_type": "callable", "callable_type": "method", "class_name": "Owner"}
    for method_name in ("sneaky", "__init__", "__class__", "missing", "property_reads"):
        spec = {**base, "method_name": method_name, "object_id": "r1"}
        with pytest.raises(SerializationError, match=method_name):
            decode_callable(spec, owners={"r1": owner})
    assert owner.property_reads == 0


def test_unregistered_function_of_imported_module_raises(fake_module: types.ModuleType) -> None:
    # Issue 9: an imported module is no longer enough (that let files name write_json).
    spec = encode_callable(fake_module.handler)
    with pytest.raises(SerializationError, match="not registered.*register_function"):
        decode_callable(json.loads(json.dumps(spec)))
    with pytest.raises(SerializationError, match="handler"):
        decode_callable(fn_spec(fake_module.__name__, "handler"))


def test_registered_function_by_module_and_name(fake_module: types.ModuleType) -> None:
    register_function(fake_module.handler)
    spec = encode_callable(fake_module.handler)
    assert spec is not None
    assert decode_callable(json.loads(json.dumps(spec))) is fake_module.handler
    # Upstream files carry no qualname or registered name: module + name is enough.
    assert decode_callable(fn_spec(fake_module.__name__, "handler")) is fake_module.handler


def test_static_method_only_when_registered(fake_module: types.ModuleType) -> None:
    spec = fn_spec(fake_module.__name__, "static_handler", qualname="Box.static_handler")
    with pytest.raises(SerializationError, match="Box.static_handler"):
        decode_callable(spec)
    register_function(fake_module.Box.static_handler)
    restored = decode_callable(spec)
    assert restored is not None and restored(1) == ("static", 1)


@pytest.mark.parametrize(
    "name",
    ["Box", "CONSTANT", "reexported", "no_such_function", "GETATTR_CALLS", "Box.method.x"],
)
def test_function_spec_naming_a_non_function_raises(
    fake_module: types.ModuleType, name: str
) -> None:
    with pytest.raises(SerializationError, match="not registered"):
        decode_callable(fn_spec(fake_module.__name__, name, qualname=name))
    # The module's __getattr__ (code) never ran.
    assert fake_module.GETATTR_CALLS == []


def test_os_system_is_not_restored() -> None:
    before = set(sys.modules)
    with pytest.raises(SerializationError, match="os.system"):
        decode_callable(fn_spec("os", "system"))
    assert set(sys.modules) == before


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("os", "popen"),  # pure-Python functions of imported stdlib modules
        ("subprocess", "getoutput"),
        ("shutil", "rmtree"),
        ("builtins", "eval"),
        ("importlib", "import_module"),
        ("routilux.serialization", "write_json"),  # issue 9's gadget
    ],
)
def test_stdlib_and_library_functions_are_not_restored(module: str, name: str) -> None:
    __import__(module)  # make sure the module is imported: refusal is not by accident
    with pytest.raises(SerializationError, match=f"{module}.{name}"):
        decode_callable(fn_spec(module, name))


def test_module_that_is_not_imported_is_not_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module_name = f"routilux_never_imported_{uuid.uuid4().hex}"
    marker = tmp_path / "imported.txt"
    (tmp_path / f"{module_name}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef handler(data):\n    return data\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    with pytest.raises(SerializationError, match="not registered"):
        decode_callable(fn_spec(module_name, "handler"))
    assert module_name not in sys.modules
    assert set(sys.modules) == before
    assert not marker.exists()


def test_lambdas_and_closures_raise_unless_registered() -> None:
    lam = lambda data: data * 2  # noqa: E731
    spec = encode_callable(lam)
    with pytest.raises(SerializationError, match="lambda"):
        decode_callable(spec)
    with pytest.raises(SerializationError, match="register_function"):
        decode_callable(fn_spec(__name__, "<lambda>"))

    register_function(lam)
    assert decode_callable(spec) is lam


def test_registered_function_with_explicit_name() -> None:
    def condition(data: Any) -> bool:
        return bool(data)

    assert register_function(condition, name="is_truthy") is condition
    spec = encode_callable(condition)
    assert spec is not None and spec["registered_name"] == "is_truthy"
    assert decode_callable(json.loads(json.dumps(spec))) is condition


def test_registered_function_restored_without_its_module(
    fake_module: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_function(fake_module.handler)
    spec = encode_callable(fake_module.handler)
    monkeypatch.delitem(sys.modules, fake_module.__name__)
    assert decode_callable(spec) is fake_module.handler


def test_register_function_as_decorator_and_errors() -> None:
    @register_function
    def decorated(data: Any) -> Any:
        return data

    assert decode_callable(encode_callable(decorated)) is decorated
    with pytest.raises(TypeError):
        register_function(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        register_function(decorated, name="")


def test_register_function_spellings() -> None:
    def plain(data: Any) -> Any:
        return data

    def named(data: Any) -> Any:
        return data

    assert register_function(plain) is plain
    assert register_function(named, name="app.named") is named

    @register_function("app.decorated")
    def decorated(data: Any) -> Any:
        return data

    @register_function(name="app.keyword")
    def keyword(data: Any) -> Any:
        return data

    assert ser.registered_function(f"{__name__}.{plain.__qualname__}") is plain
    for name, fn in (
        ("app.named", named),
        ("app.decorated", decorated),
        ("app.keyword", keyword),
    ):
        assert ser.registered_function(name) is fn
        spec = encode_callable(fn)
        assert spec is not None and spec["registered_name"] == name
        assert decode_callable(json.loads(json.dumps(spec))) is fn
    with pytest.raises(TypeError, match="once"):
        register_function("a", name="b")  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        register_function("app.bad")(42)


def test_register_function_is_exported() -> None:
    import routilux

    assert "register_function" in routilux.__all__
    assert routilux.register_function is register_function


def test_safe_builtins_round_trip() -> None:
    for name in ("len", "str", "int", "sorted", "max"):
        assert name in SAFE_BUILTINS
        fn = decode_callable(builtin_spec(name))
        assert fn is getattr(builtins, name)
    assert decode_callable(encode_callable(len)) is len


@pytest.mark.parametrize(
    "name",
    ["eval", "exec", "open", "__import__", "compile", "getattr", "setattr", "delattr",
     "globals", "vars", "input", "breakpoint", "type", "print", "no_such_builtin"],
)  # fmt: skip
def test_unsafe_builtins_raise(name: str) -> None:
    with pytest.raises(SerializationError, match="safe builtins"):
        decode_callable(builtin_spec(name))


def test_builtin_from_other_module_raises() -> None:
    with pytest.raises(SerializationError, match="os.system"):
        decode_callable(builtin_spec("system", module="os"))
    with pytest.raises(SerializationError, match="os.len"):
        decode_callable(builtin_spec("len", module="os"))


@pytest.mark.parametrize(
    "spec",
    [
        "os.system",
        ["callable"],
        42,
        {"callable_type": "function", "module": "m", "name": "f"},
        {"_type": "Slot", "callable_type": "function", "module": "m", "name": "f"},
        {"_type": "callable", "callable_type": "pickle"},
        {"_type": "callable"},
        {"_type": "callable", "callable_type": "function", "module": 1, "name": "f"},
        {"_type": "callable", "callable_type": "function", "module": "m"},
        {"_type": "callable", "callable_type": "function", "module": "m", "name": "f",
         "qualname": 3},
        {"_type": "callable", "callable_type": "builtin", "name": None},
        {"_type": "callable", "callable_type": "method", "class_name": "C",
         "method_name": "m", "object_id": 7},
    ],
)  # fmt: skip
def test_malformed_specs_raise(spec: Any) -> None:
    with pytest.raises(SerializationError):
        decode_callable(spec)


# ---------------------------------------------------------------- JSON files


def test_write_and_read_json_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.json"
    data = {"text": 'héllo 世界\n"q"', "n": [1, 2.5, None, True], "nested": {"k": {}}}
    write_json(path, data)
    assert read_json(path, "JobState") == data
    raw = path.read_text(encoding="utf-8")
    assert "世界" in raw  # ensure_ascii=False
    assert raw.startswith('{"text":"')  # compact (issue 9 item 5): no indent, no spaces
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temp files left


def test_write_json_accepts_str_path_and_overwrites(tmp_path: Path) -> None:
    path = str(tmp_path / "f.json")
    write_json(path, {"v": 1})
    write_json(path, {"v": 2})
    assert read_json(path, "Flow") == {"v": 2}


@pytest.mark.parametrize(
    ("data", "where", "type_name"),
    [
        ({"shared_data": {"x": {1, 2}}}, "shared_data.x", "set"),
        ({"history": [{"data": 1}, {"data": object()}]}, "history[1].data", "object"),
        ({"a b": {"ok": 1, "bad": b"bytes"}}, "['a b'].bad", "bytes"),
        (datetime(2024, 1, 1), "<root>", "datetime"),
    ],
)
def test_write_json_names_unserializable_value(
    tmp_path: Path, data: Any, where: str, type_name: str
) -> None:
    path = tmp_path / "out.json"
    with pytest.raises(SerializationError) as info:
        write_json(path, data)
    message = str(info.value)
    assert f"'{where}'" in message
    assert type_name in message
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_write_json_exact_message_for_set(tmp_path: Path) -> None:
    with pytest.raises(SerializationError) as info:
        write_json(tmp_path / "x.json", {"shared_data": {"x": set()}})
    assert str(info.value) == "cannot serialize value at 'shared_data.x' of type set"


def test_write_json_reports_bad_keys_and_cycles(tmp_path: Path) -> None:
    with pytest.raises(SerializationError, match=r"'routine_states\[\(1, 2\)\]'"):
        write_json(tmp_path / "k.json", {"routine_states": {(1, 2): "x"}})
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(SerializationError, match="circular"):
        write_json(tmp_path / "c.json", {"shared_data": loop})


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_json(path, {"version": "old"})
    before = path.read_bytes()
    with pytest.raises(SerializationError):
        write_json(path, {"version": {"new"}})
    assert path.read_bytes() == before


def test_crash_during_replace_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    write_json(path, {"version": "old"})
    before = path.read_bytes()

    def crash(src: Any, dst: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk on fire"):
        write_json(path, {"version": "new"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_write_json_keeps_file_mode(tmp_path: Path) -> None:
    if os.name != "posix":
        pytest.skip("POSIX modes")
    path = tmp_path / "state.json"
    write_json(path, {"a": 1})
    os.chmod(path, 0o640)
    write_json(path, {"a": 2})
    assert path.stat().st_mode & 0o777 == 0o640


def test_read_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError) as info:
        read_json(path, "JobState")
    assert str(path) in str(info.value)
    assert "JobState" in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        b'{"flow_id": "f", "routines": {"a": ',  # truncated
        b"",  # empty
        b"not json at all",
        b'{"a": 1}}',
        b'{"a": "\xff\xfe"}',  # invalid UTF-8
        b"[1, 2, 3]",  # valid JSON, not an object
        b'"just a string"',
        b"null",
    ],
)
def test_read_corrupt_file_raises_naming_file_and_leaves_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    with pytest.raises(SerializationError) as info:
        read_json(path, "JobState")
    assert str(path) in str(info.value)
    assert "JobState" in str(info.value)
    assert path.read_bytes() == content


def test_read_directory_raises_serialization_error(tmp_path: Path) -> None:
    with pytest.raises(SerializationError, match="Flow"):
        read_json(tmp_path, "Flow")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), json_values, max_size=5))
def test_json_files_round_trip_any_json_object(data: dict[str, Any]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.json"
        write_json(path, data)
        assert read_json(path, "data") == data


# ---------------------------------------------------------------- datetimes


def test_iso_helpers_are_none_safe() -> None:
    assert to_iso(None) is None
    assert from_iso(None) is None


def test_iso_round_trip() -> None:
    moment = datetime(2024, 5, 6, 7, 8, 9, 123456)
    assert to_iso(moment) == "2024-05-06T07:08:09.123456"
    assert from_iso(to_iso(moment)) == moment
    aware = datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    assert from_iso(to_iso(aware)) == aware
    assert from_iso(moment) is moment


def test_from_iso_accepts_z_suffix() -> None:
    assert from_iso("2024-01-01T00:00:00Z") == datetime(2024, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01T00:00:00", 17])
def test_from_iso_rejects_bad_values(value: Any) -> None:
    with pytest.raises(SerializationError):
        from_iso(value)


def test_to_iso_rejects_non_datetime() -> None:
    with pytest.raises(SerializationError):
        to_iso("2024-01-01")  # type: ignore[call-overload]


@given(st.datetimes())
def test_iso_round_trip_property(moment: datetime) -> None:
    assert from_iso(to_iso(moment)) == moment


# -- iso_texts: isoformat of many datetimes ------------------------------------------


def test_iso_texts_is_isoformat_exactly() -> None:
    import random
    from datetime import datetime, timedelta, timezone

    from routilux.serialization import iso_texts

    rng = random.Random(7)
    start = datetime(2026, 12, 31, 23, 59, 58, 999_990)
    values = [start + timedelta(microseconds=rng.randrange(0, 40)) * i for i in range(3000)]
    values += [
        datetime(1, 1, 1),
        datetime(9, 2, 3, 4, 5, 6, 7),
        datetime(999, 12, 31, 23, 59, 59, 999_999),
        datetime(2026, 1, 5, 10, 0, 0),  # no fraction: isoformat writes none
        datetime(2026, 1, 5, 10, 0, 0, 1000),
        datetime(2026, 1, 5, 10, 0, 0, 1),
        datetime(9999, 12, 31, 23, 59, 59, 999_999),
        datetime(2026, 1, 5, 10, 0, 0, 5, tzinfo=timezone.utc),  # aware: its own form
        datetime(2026, 1, 5, 10, 0, 0, 5, tzinfo=timezone(timedelta(hours=-3))),
    ]
    rng.shuffle(values[3000:])
    values += sorted(values[:3007])  # runs of one second, and jumps back
    assert iso_texts(values) == [value.isoformat() for value in values]
    assert iso_texts([]) == []
