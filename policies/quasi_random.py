"""Quasi-random (low-discrepancy) search: Sobol and Halton sequences from ``scipy.stats.qmc``.

``samples`` points of the sequence, scrambled with the seed (Owen scrambling for Sobol, random
permutations for Halton), so different seeds give different but equally well spread point sets and
the same seed the same set. Discrete dimensions go through the same unit-cube decode (equal-width
bins). Sobol's balance properties hold best when ``samples`` is a power of two; other counts are
allowed (scipy's warning about it is silenced).
"""
from __future__ import annotations

import warnings
from typing import Iterator, Sequence

from scipy.stats import qmc

from threedb.policies.base import OpenLoopPolicy, Option, chunked


class _QMCPolicy(OpenLoopPolicy):
    options = (Option("samples", "number of quasi-random points", minimum=1),)

    def _engine(self) -> qmc.QMCEngine:
        raise NotImplementedError

    def _count(self) -> int:
        return self.config["samples"]

    def _points(self) -> Iterator[Sequence[float]]:
        engine = self._engine()

        def draw(k: int):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "balance properties of Sobol' points..."
                return engine.random(k)

        return chunked(draw, self._count())


class SobolPolicy(_QMCPolicy):
    """Scrambled Sobol sequence."""

    name = "sobol"

    def _engine(self) -> qmc.QMCEngine:
        return qmc.Sobol(self.space.ndim, scramble=True, seed=self.seed)


class HaltonPolicy(_QMCPolicy):
    """Scrambled Halton sequence."""

    name = "halton"

    def _engine(self) -> qmc.QMCEngine:
        return qmc.Halton(self.space.ndim, scramble=True, seed=self.seed)


__all__ = ["SobolPolicy", "HaltonPolicy"]
