"""Grid search: every combination of ``samples_per_dim`` values per continuous dimension and every
choice of each discrete dimension, as in the original 3DB's ``grid_search``.

* Continuous dimension (a ``[lo, hi]`` range, integer ranges included): unit coordinates
  ``linspace(0, 1, samples_per_dim)``, endpoints included; ``samples_per_dim: 1`` gives the
  midpoint ``0.5`` alone (the centre of the range, not its low end).
* Discrete dimension (a list of choices): every choice once, at the centre of its bin
  ``(k + 0.5) / n_choices``, whatever ``samples_per_dim`` is.
* Order: the product in space order (config order of controls and parameters), the last
  dimension varying fastest; deterministic and independent of the seed.
* ``total = samples_per_dim ** n_continuous * prod(n_choices)``; points are generated lazily.
"""
from __future__ import annotations

import itertools
import math
from typing import Iterator, Sequence

import numpy as np

from threedb.controls.params import Choices
from threedb.policies.base import OpenLoopPolicy, Option


class GridPolicy(OpenLoopPolicy):
    """Exhaustive grid over the search space."""

    name = "grid"
    options = (Option("samples_per_dim", "grid points per continuous dimension (endpoints included)",
                      minimum=1),)

    def axes(self) -> list[tuple[float, ...]]:
        """The unit coordinates visited along each dimension."""
        k = self.config["samples_per_dim"]
        cont = (0.5,) if k == 1 else tuple(float(u) for u in np.linspace(0.0, 1.0, k))
        return [tuple((i + 0.5) / len(d.domain.values) for i in range(len(d.domain.values)))
                if isinstance(d.domain, Choices) else cont for d in self.space.dimensions]

    def _count(self) -> int:
        return math.prod(len(axis) for axis in self.axes())

    def _points(self) -> Iterator[Sequence[float]]:
        return itertools.product(*self.axes())


__all__ = ["GridPolicy"]
