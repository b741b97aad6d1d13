"""The search space of an experiment: every control parameter that a config leaves free.

Policies propose points of the unit cube ``[0, 1]^d`` (one coordinate per free dimension, continuous
and discrete alike); :meth:`SearchSpace.decode` maps a point to concrete control values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from threedb.controls.params import Choices, Fixed, Range
from threedb.controls.registry import ControlSpec


@dataclass(frozen=True)
class Dimension:
    """One free parameter: ``control`` instance name, ``param`` name and its domain."""

    control: str
    param: str
    domain: Range | Choices
    integer: bool = False

    @property
    def key(self) -> str:
        return f"{self.control}.{self.param}"

    def decode(self, u: float) -> Any:
        """Value at unit coordinate ``u`` in [0, 1]: linear for ranges, equal-width bins for choices."""
        u = min(max(float(u), 0.0), 1.0)
        if isinstance(self.domain, Range):
            value = self.domain.low + u * (self.domain.high - self.domain.low)
            return int(round(value)) if self.integer else value
        n = len(self.domain.values)
        return self.domain.values[min(int(u * n), n - 1)]


class SearchSpace:
    """All dimensions of an experiment's controls, in config order."""

    def __init__(self, controls: Sequence[ControlSpec]) -> None:
        self.controls = list(controls)
        self.dimensions: list[Dimension] = []
        for spec in self.controls:
            for pname, domain in spec.domains.items():
                if isinstance(domain, (Range, Choices)):
                    integer = spec.cls.param(pname).kind == "int"
                    self.dimensions.append(Dimension(spec.name, pname, domain, integer))

    @property
    def ndim(self) -> int:
        return len(self.dimensions)

    def decode(self, point: Sequence[float]) -> dict[str, dict[str, Any]]:
        """Control values ``{instance name: {param: value}}`` for a unit-cube point (fixed values included)."""
        if len(point) != self.ndim:
            raise ValueError(f"point has {len(point)} coordinates, the space has {self.ndim}")
        values: dict[str, dict[str, Any]] = {
            spec.name: {p: d.value for p, d in spec.domains.items() if isinstance(d, Fixed)}
            for spec in self.controls}
        for dim, u in zip(self.dimensions, point):
            values[dim.control][dim.param] = dim.decode(u)
        return values

    def sample(self, rng: np.random.Generator) -> dict[str, dict[str, Any]]:
        """Values at a uniformly random point."""
        return self.decode(rng.random(self.ndim))
