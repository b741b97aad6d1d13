"""What a verifier is asked: an input box and a disjunction of linear output conditions.

A :class:`Specification` describes the *counterexample* (VNN-COMP convention): the property is
violated (``sat``) iff some input ``x`` in the box ``[lower, upper]`` has outputs ``y`` meeting at
least one disjunct, a conjunction ``C y <= d`` of linear inequalities. ``unsat`` means the
property holds on the whole box. A VNNLIB file may hold several such boxes (a top-level
disjunction over inputs); an instance is ``sat`` iff one of its specifications is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np


class SpecificationError(ValueError):
    """A specification is malformed or does not fit the network; the message names the file and the place."""


@dataclass(eq=False)
class Specification:
    """Input box ``lower <= x <= upper`` (flat, ``float64``) and output disjuncts ``[(C, d), ...]``."""

    lower: np.ndarray
    upper: np.ndarray
    disjuncts: list[tuple[np.ndarray, np.ndarray]]
    source: str = "specification"
    #: for a local-robustness property: the centre image, its label and the radius (reports, attacks)
    center: Optional[np.ndarray] = field(default=None)
    label: Optional[int] = None
    eps: Optional[float] = None

    def __post_init__(self) -> None:
        self.lower = np.asarray(self.lower, dtype=np.float64).reshape(-1)
        self.upper = np.asarray(self.upper, dtype=np.float64).reshape(-1)
        if self.lower.shape != self.upper.shape:
            raise SpecificationError(f"{self.source}: input bounds have {self.lower.size} lower and "
                                     f"{self.upper.size} upper values")
        if not (np.isfinite(self.lower).all() and np.isfinite(self.upper).all()):
            bad = int(np.flatnonzero(~(np.isfinite(self.lower) & np.isfinite(self.upper)))[0])
            raise SpecificationError(f"{self.source}: input X_{bad} has no finite bounds (a box needs both)")
        inverted = np.flatnonzero(self.lower > self.upper)
        if inverted.size:
            i = int(inverted[0])
            raise SpecificationError(f"{self.source}: input X_{i} has lower bound {self.lower[i]:g} > upper "
                                     f"bound {self.upper[i]:g} ({inverted.size} such inputs)")
        disjuncts = []
        for k, (c, d) in enumerate(self.disjuncts):
            c = np.atleast_2d(np.asarray(c, dtype=np.float64))
            d = np.asarray(d, dtype=np.float64).reshape(-1)
            if c.shape[0] != d.shape[0]:
                raise SpecificationError(f"{self.source}: output disjunct {k} has {c.shape[0]} rows but "
                                         f"{d.shape[0]} right-hand sides")
            disjuncts.append((c, d))
        self.disjuncts = disjuncts
        if not disjuncts:
            raise SpecificationError(f"{self.source}: no output constraint (nothing to verify)")
        widths = {c.shape[1] for c, _ in disjuncts}
        if len(widths) != 1:
            raise SpecificationError(f"{self.source}: output constraints mention different numbers of outputs")

    @property
    def n_inputs(self) -> int:
        return int(self.lower.size)

    @property
    def n_outputs(self) -> int:
        return int(self.disjuncts[0][0].shape[1])

    def violated_by(self, y: np.ndarray, tol: float = 0.0) -> bool:
        """``True`` iff the outputs ``y`` meet some disjunct (``C y <= d + tol``): a counterexample's outputs."""
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        return any(bool(np.all(c @ y <= d + tol)) for c, d in self.disjuncts)

    def contains(self, x: np.ndarray, tol: float = 0.0) -> bool:
        """``True`` iff ``x`` lies in the input box (up to ``tol``)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        return x.shape == self.lower.shape and bool(np.all(x >= self.lower - tol) and np.all(x <= self.upper + tol))

    def check_network(self, n_inputs: int, n_outputs: int, network: str = "the network") -> None:
        """Refuse a specification whose input or output size differs from the network's."""
        if self.n_inputs != n_inputs:
            raise SpecificationError(f"{self.source}: declares {self.n_inputs} inputs but {network} takes "
                                     f"{n_inputs}")
        if self.n_outputs != n_outputs:
            raise SpecificationError(f"{self.source}: declares {self.n_outputs} outputs but {network} gives "
                                     f"{n_outputs}")


def local_robustness(x: np.ndarray, label: int, eps: float, n_classes: int, *,
                     targets: Optional[Iterable[int]] = None, lower: float = 0.0, upper: float = 1.0,
                     source: str | None = None) -> Specification:
    """The L-inf ball of radius ``eps`` around ``x``, intersected with ``[lower, upper]`` (the pixel box),
    and "some other class (one of ``targets`` when given) scores at least the label": ``y_j - y_label >= 0``
    written as ``y_label - y_j <= 0``, one disjunct per class ``j``."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if not 0 <= label < n_classes:
        raise SpecificationError(f"label {label} is not a class of a {n_classes}-class network")
    if not (isinstance(eps, (int, float)) and np.isfinite(eps) and eps >= 0):
        raise SpecificationError(f"eps must be a finite number >= 0, got {eps!r}")
    others = sorted(set(range(n_classes)) - {label} if targets is None else set(int(t) for t in targets) - {label})
    bad = [t for t in others if not 0 <= t < n_classes]
    if bad or not others:
        raise SpecificationError(f"targets {sorted(targets or [])} name no other class of a {n_classes}-class "
                                 "network")
    disjuncts = []
    for j in others:
        row = np.zeros((1, n_classes))
        row[0, label], row[0, j] = 1.0, -1.0
        disjuncts.append((row, np.zeros(1)))
    return Specification(np.clip(x - eps, lower, upper), np.clip(x + eps, lower, upper), disjuncts,
                         source=source or f"local robustness (label {label}, eps {eps:g})", center=x,
                         label=int(label), eps=float(eps))


__all__ = ["Specification", "SpecificationError", "local_robustness"]
