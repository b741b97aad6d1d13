"""The values a config may hold, checked once after merging and overrides, before any section reads them.

YAML can write more than a config means: ``5: x`` (a key that is a number), ``2001-12-14`` (a date),
``!!binary``, ``!!set``, a 20,000-bit integer, ``.nan``, a string with a NUL byte. Each would surface
much later as a ``TypeError`` deep in a control, a policy or the store (or as a NaN that poisons a
search). :func:`check_values` refuses them here, naming the file and key that wrote them.
"""
from __future__ import annotations

import math
from typing import Any

from threedb.sim.config.loader import KeyPath, Provenance

#: Integers beyond this are refused (they do not fit numpy's int64, a seed, an index or JSON readers).
MAX_ABS_INT = 2 ** 63 - 1
#: The longest string value (a path, a name, a module): far more than any config needs.
MAX_STRING = 65_536


def check_values(data: Any, prov: Provenance, prefix: KeyPath = ()) -> None:
    """Raise :class:`~threedb.sim.errors.ConfigError` at the first value that no config section accepts:
    a key that is not text, a value that is not a mapping, list, string, number, boolean or null, an
    integer beyond ``±(2**63 - 1)``, a NaN or infinite float, a string with a NUL byte or longer than
    :data:`MAX_STRING`. Iterative, so it is linear in the config's size."""
    stack: list[tuple[KeyPath, Any]] = [(prefix, data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise prov.error(path, f"the key {_shown(key)} is a {_kind(key)}, not text: every key is "
                                     "a name (quote it if it is meant as one)", expected="text keys")
                stack.append((path + (key,), item))
        elif isinstance(value, list):
            stack.extend((path + (i,), item) for i, item in enumerate(value))
        else:
            problem = _problem(value)
            if problem:
                raise prov.error(path, problem)


def _problem(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        if abs(value) > MAX_ABS_INT:
            return f"an integer of {value.bit_length()} bits is out of range (at most 2**63 - 1 in size)"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a usable number here (a finite number is)"
    if isinstance(value, str):
        if "\0" in value:
            return "the text contains a NUL character"
        if len(value) > MAX_STRING:
            return f"a text of {len(value):,} characters is longer than the {MAX_STRING:,} allowed"
        return None
    return (f"a {_kind(value)} is not a config value (a config holds text, numbers, true/false, lists and "
            "mappings; quote it to make it text)")


def _kind(value: Any) -> str:
    names = {"date": "date", "datetime": "timestamp", "bytes": "binary value", "set": "set", "tuple": "pair",
             "int": "number", "float": "number", "bool": "true/false", "NoneType": "null"}
    return names.get(type(value).__name__, type(value).__name__)


def _shown(key: Any) -> str:
    text = repr(key)
    return text if len(text) <= 40 else text[:40] + "..."


__all__ = ["MAX_ABS_INT", "MAX_STRING", "check_values"]
