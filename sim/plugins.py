"""Finding plugin classes (controls, policies, ...): built-ins, entry points, module paths and files.

A reference is ``"package.module:Class"``, ``"package.module"`` (the module's attribute named after
the base class, e.g. ``Control``, or else its only subclass of the base), or ``"/path/file.py:Class"``.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Mapping, TypeVar

T = TypeVar("T", bound=type)


def available(builtins: Mapping[str, str], group: str) -> dict[str, str]:
    """Name -> reference of the built-ins plus the installed entry points of ``group``."""
    names = dict(builtins)
    for name, value in _entry_points(group, tuple(sys.path)):
        names.setdefault(name, value)
    return names


@functools.lru_cache(maxsize=64)
def _entry_points(group: str, search_path: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The installed entry points of ``group`` (scanning every distribution costs ~15 ms: a run makes one
    policy per pair, so the scan is cached per ``sys.path``)."""
    return tuple((ep.name, ep.value) for ep in entry_points(group=group))


def _class_in(module: ModuleType, attr: str | None, base: T, ref: str) -> T:
    kind = base.__name__
    if attr:
        cls = getattr(module, attr, None)
        if cls is None:
            raise ImportError(f"{ref} has no attribute {attr!r}")
    elif isinstance(getattr(module, kind, None), type) and getattr(module, kind) is not base:
        cls = getattr(module, kind)
    else:
        found = [v for v in vars(module).values()
                 if isinstance(v, type) and issubclass(v, base) and v.__module__ == module.__name__
                 and not v.__name__.startswith("_")]
        if len(found) != 1:
            raise ImportError(f"{ref} defines {len(found)} {kind.lower()} classes;"
                              " name one (module:Class, or class: in a control entry)")
        cls = found[0]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ImportError(f"{ref} is not a threedb {kind} subclass")
    return cls


def load_file_module(path: Path) -> ModuleType:
    """Import a .py file as a module (once per path)."""
    name = f"threedb_plugin_{abs(hash(str(path)))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def import_class(ref: str, base: T) -> T:
    """The subclass of ``base`` that ``ref`` names (see the module docstring); raises ImportError."""
    target, _, attr = ref.rpartition(":") if ":" in ref else (ref, "", "")
    if target.endswith(".py"):
        return _class_in(load_file_module(Path(target)), attr or None, base, ref)
    return _class_in(importlib.import_module(target), attr or None, base, ref)
