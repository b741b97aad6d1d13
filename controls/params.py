"""Parameter declarations of controls, and the domains a config assigns to them.

A control declares each parameter once (:class:`Param`); a config then gives every parameter a
domain: a fixed value, a continuous ``[lo, hi]`` range (the original 3DB's ``"(lo, hi)"`` strings
too), or a discrete list of choices.
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence, Union

ParamKind = Literal["float", "int", "choice", "bool"]


@dataclass(frozen=True)
class Param:
    """One parameter a control accepts.

    ``float`` and ``int`` parameters have an inclusive ``[low, high]`` domain; ``choice`` parameters a
    finite list of allowed values (``choices=None`` allows any value of the right type, e.g. a file name).
    """

    name: str
    kind: ParamKind
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    unit: str = ""

    def describe_domain(self) -> str:
        if self.kind in ("float", "int"):
            return f"[{self.low}, {self.high}]" + (f" {self.unit}" if self.unit else "")
        if self.kind == "bool":
            return "true or false"
        if self.choices is None:
            return "any value"
        return "one of " + ", ".join(map(str, self.choices))

    def check_value(self, value: Any) -> Any:
        """Return ``value`` converted to this parameter's type, or raise ``ValueError`` saying why."""
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise ValueError(f"{value!r} is not true or false")
        if self.kind in ("float", "int"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{value!r} is not a number")
            if self.kind == "int" and float(value) != int(value):
                raise ValueError(f"{value!r} is not a whole number")
            if not math.isfinite(value):
                raise ValueError(f"{value!r} is not finite")
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                raise ValueError(f"{value!r} is outside the domain {self.describe_domain()}")
            return int(value) if self.kind == "int" else float(value)
        if self.choices is not None and value not in self.choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{value!r} is not {self.describe_domain()}{hint}")
        return value


@dataclass(frozen=True)
class Fixed:
    """The parameter keeps one value in every job."""

    value: Any


@dataclass(frozen=True)
class Range:
    """The parameter is searched over the continuous interval ``[low, high]`` (integers for int params)."""

    low: float
    high: float


@dataclass(frozen=True)
class Choices:
    """The parameter is searched over a finite list of values."""

    values: tuple[Any, ...] = field(default_factory=tuple)


Domain = Union[Fixed, Range, Choices]

_PAREN_RANGE = re.compile(r"^\s*\(\s*([^,()]+)\s*,\s*([^,()]+)\s*\)\s*$")


def parse_domain(param: Param, raw: Any) -> Domain:
    """Interpret a config value for ``param`` as a domain; raise ``ValueError`` with the reason.

    For float/int parameters a two-number list (or the string ``"(lo, hi)"``) is a range and
    ``{choices: [...]}`` a discrete list; for choice/bool parameters a list is the set of choices.
    """
    if isinstance(raw, dict):
        if set(raw) != {"choices"}:
            raise ValueError(f"a mapping here must be {{choices: [...]}}, got keys {sorted(raw)}")
        values = raw["choices"]
        if not isinstance(values, list) or not values:
            raise ValueError("choices must be a non-empty list")
        return Choices(tuple(param.check_value(v) for v in values))
    if isinstance(raw, str) and param.kind in ("float", "int"):
        match = _PAREN_RANGE.match(raw)
        if not match:
            raise ValueError(f"{raw!r} is neither a number nor a range written \"(lo, hi)\"")
        try:
            raw = [float(match.group(1)), float(match.group(2))]
        except ValueError:
            raise ValueError(f"{raw!r} is not a range of two numbers") from None
    if isinstance(raw, (list, tuple)):
        if param.kind in ("float", "int"):
            if len(raw) != 2:
                raise ValueError(f"a range is [lo, hi], got {len(raw)} values {list(raw)}"
                                 " (write {choices: [...]} for a discrete list)")
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw) and raw[0] > raw[1]:
                raise ValueError(f"range [{raw[0]}, {raw[1]}] is empty")
            low, high = (param.check_value(v) for v in raw)
            return Range(low, high)
        if not raw:
            raise ValueError("the list of choices is empty")
        return Choices(tuple(param.check_value(v) for v in raw))
    return Fixed(param.check_value(raw))


def closest_name(name: str, candidates: Sequence[str]) -> str:
    """A ' (did you mean X?)' suffix for a misspelled name, or ''."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
