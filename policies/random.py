"""Random search: ``samples`` points drawn uniformly from the unit cube with ``numpy``'s
``default_rng(seed)``, as in the original 3DB's ``random_search``.

The run pipeline creates one policy per (environment, model) pair with the experiment seed, so
every pair gets the identical ``samples`` vectors (a paired comparison across environments and
models). Discrete dimensions are drawn through the same unit-cube decode (equal-width bins, so each
choice is equally likely). Points do not depend on how ``propose(n)`` calls are chunked.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from threedb.policies.base import OpenLoopPolicy, Option, chunked


class RandomPolicy(OpenLoopPolicy):
    """Uniform random search over the unit cube."""

    name = "random"
    options = (Option("samples", "number of random points", minimum=1),)

    def _count(self) -> int:
        return self.config["samples"]

    def _points(self) -> Iterator[Sequence[float]]:
        rng = np.random.default_rng(self.seed)
        d = self.space.ndim
        return chunked(lambda k: rng.random((k, d)), self._count())


__all__ = ["RandomPolicy"]
