"""Binning of parameter values: the dashboard's heat maps, sliders and curves (``max_distinct`` 10,
as the original 3DB dashboard) and the run summary's parameter regions (5).

- numeric parameter (finite ints/floats) with at most ``max_distinct`` distinct values: one bin per value;
- numeric parameter with more: ``max_distinct`` equal-width bins over [min, max] (each bin is
  ``[lo, hi)``, the last one closed ``[lo, max]``);
- anything else (strings, booleans, lists, non-finite numbers): one bin per distinct value, in sorted order.

A row without the parameter (``None``) gets code -1 (in no bin). Bins are computed over all rows of
the run, so a bin index means the same thing in every view until new rows widen the range.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

MAX_DISTINCT = 10


@dataclass
class Binned:
    """The bins of one parameter and the bin code (-1: none) of each row."""
    name: str
    kind: str                      # "numeric" or "categorical"
    labels: list[str]
    codes: np.ndarray              # int32, one per row
    edges: list[float] | None = None   # numeric range bins: len(labels) + 1 edges
    values: list[Any] = field(default_factory=list)  # per-value bins: the value of each bin

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "labels": self.labels, "edges": self.edges,
                "values": self.values if self.edges is None else None,
                "counts": np.bincount(self.codes[self.codes >= 0], minlength=len(self.labels)).tolist()}


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _numeric(values: Sequence[Any], types: set[type]) -> np.ndarray | None:
    """The values as float64 (NaN where None), or None when they are not all finite numbers."""
    if not types or not types <= {int, float, type(None)} or types == {type(None)}:
        return None
    if type(None) in types:
        missing = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
        arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    else:
        missing = np.zeros(len(values), dtype=bool)
        arr = np.fromiter(values, dtype=np.float64, count=len(values))
    return arr if np.isfinite(arr[~missing]).all() else None


def bin_values(name: str, values: Sequence[Any], max_distinct: int = MAX_DISTINCT) -> Binned:
    """Bin one column of values into at most ``max_distinct`` numeric bins (see the module docstring)."""
    types = set(map(type, values))
    arr = _numeric(values, types)
    if arr is not None:
        distinct = np.unique(arr[~np.isnan(arr)])
        if len(distinct) <= max_distinct:
            codes = np.searchsorted(distinct, arr).astype(np.int32)
            codes[np.isnan(arr)] = -1
            kept = [int(v) if float not in types else float(v) for v in distinct]
            return Binned(name, "numeric", [_fmt(v) for v in distinct], codes, None, kept)
        lo, hi = float(distinct[0]), float(distinct[-1])
        edges = np.linspace(lo, hi, max_distinct + 1)
        with np.errstate(invalid="ignore"):
            codes = np.floor((arr - lo) / (hi - lo) * max_distinct)
        codes = np.clip(np.nan_to_num(codes, nan=-1), -1, max_distinct - 1).astype(np.int32)
        codes[np.isnan(arr)] = -1
        labels = [f"[{_fmt(a)}, {_fmt(b)}{']' if i == max_distinct - 1 else ')'}"
                  for i, (a, b) in enumerate(zip(edges[:-1], edges[1:]))]
        return Binned(name, "numeric", labels, codes, [float(e) for e in edges])
    # categorical: one bin per distinct value, sorted by text (values of other types keyed apart)
    first: dict[Any, Any] = {}
    for v in values:
        if v is not None:
            first.setdefault(v if types <= {str, type(None)} else (type(v).__name__, str(v)), v)
    keys = sorted(first, key=lambda k: (k, "") if isinstance(k, str) else (k[1], k[0]))
    index = {k: i for i, k in enumerate(keys)}
    if types <= {str, type(None)}:
        codes = np.fromiter((-1 if v is None else index[v] for v in values), dtype=np.int32, count=len(values))
    else:
        codes = np.fromiter((-1 if v is None else index[(type(v).__name__, str(v))] for v in values),
                            dtype=np.int32, count=len(values))
    return Binned(name, "categorical", [str(first[k]) for k in keys], codes, None, [first[k] for k in keys])
