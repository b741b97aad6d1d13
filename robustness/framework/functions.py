"""Robustness functions ``rho(x, eps) = H(R_Q(x, eps)) * G(x, eps)`` and robustness scores (Tibo et al.,
Definitions 2 and 3), built from named parts:

* ``q``: a :class:`~threedb.robustness.framework.perturbations.Perturbations` (uniform, data, on-manifold);
* ``h``: ``"indicator"`` (``H(p) = 1[p = 1]``: no sample changes the prediction) or ``"identity"``
  (``H(p) = p``);
* ``G(x, eps) = g_x(x) * g_eps(eps)`` as two named factors: ``inputs`` says which density ``g_x`` is
  (``"data"``: ``p(x)``, so the score averages over points drawn from the data; ``"uniform"``: 1, so the
  score averages over points drawn uniformly from the cube, see :func:`uniform_inputs`) and ``eps_weight``
  is ``g_eps`` (``"one"`` or ``"inverse"``: ``1 / eps``).

The score ``R = int_eps int_x rho`` is estimated (eq. 9) by the mean over the given inputs (a sample of
``g_x``) of the **trapezoid rule** over an increasing eps grid (**[GAP]** choice: the paper samples eps
uniformly; a grid is deterministic and, for these monotone-ish curves, more accurate per model call).
Sample sizes are stated on the result: inputs ``N``, grid points ``E``, samples per ``(x, eps)``.

Ready-made instances: :func:`margin_function` (Example 1, R1), :func:`r2_function` (Example 2, R2, by
sampling: an *upper bound* on the margin-based R2 of :mod:`.margin`, since random draws rarely find the
closest adversarial point) and :func:`r4_function` (Example 4, R4: on-manifold, ``H(p) = p``,
``G = p(x) / eps``). ``int_0 R/eps`` diverges at 0, so R4 needs a grid starting above 0; every score also
carries ``normalized = value / int g_eps`` (a weighted mean of ``H(R)`` in ``[0, 1]`` for ``H`` in
``[0, 1]``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from threedb.robustness.framework.checks import check_count, check_eps_grid, check_norm
from threedb.robustness.framework.errors import FrameworkError
from threedb.robustness.framework.perturbations import (BasicRobustness, DataNeighbours, Model, OnManifold,
                                                        Perturbations, UniformBall, basic_robustness)
from threedb.robustness.framework.statistics import bernoulli_interval, check_alpha, mean_interval

#: H: [0, 1] -> R+, by name.
H_PARTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "indicator": lambda p: (p >= 1.0).double().where(~p.isnan(), p),
    "identity": lambda p: p,
}
#: The eps factor of G, by name.
EPS_WEIGHTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "one": torch.ones_like,
    "inverse": lambda e: 1.0 / e,
}
#: The x factor of G, by name: which inputs the score must be given.
INPUT_MEASURES = {"data": "p(x): pass a sample of the data distribution",
                  "uniform": "1: pass points drawn uniformly from [0, 1]^m (uniform_inputs)"}


def uniform_inputs(n: int, shape: Sequence[int], *, seed: int = 0) -> torch.Tensor:
    """``n`` points uniform on ``[0, 1]^shape`` (the inputs of an ``inputs="uniform"`` score such as R1)."""
    check_count(n, "n")
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(int(seed)))


@dataclass
class RobustnessValues:
    """``rho(x, eps)`` (``N x E``, float64), the ``R_S`` estimates behind it and the eps weights (``E``)."""

    rho: torch.Tensor
    h: torch.Tensor
    weight: torch.Tensor
    basic: BasicRobustness


@dataclass(frozen=True)
class RobustnessFunction:
    """``rho = H(R_Q) * G`` from named parts (see the module docstring)."""

    q: Perturbations
    h: str = "indicator"
    eps_weight: str = "one"
    inputs: str = "data"
    name: str = "rho"

    def __post_init__(self) -> None:
        if not isinstance(self.q, Perturbations):
            raise FrameworkError(f"q must be a Perturbations, got {type(self.q).__name__}")
        for value, known, what in ((self.h, H_PARTS, "h"), (self.eps_weight, EPS_WEIGHTS, "eps_weight"),
                                   (self.inputs, INPUT_MEASURES, "inputs")):
            if value not in known:
                raise FrameworkError(f"unknown {what} {value!r}: use one of {sorted(known)}")

    def __call__(self, model: Model, x: torch.Tensor, eps: Sequence[float] | torch.Tensor, *, seed: int = 0,
                 batch_size: int = 1024, empty_value: float = 1.0) -> RobustnessValues:
        """``rho(x_i, eps_j)`` for every input and budget."""
        grid = check_eps_grid(eps, positive=self.eps_weight == "inverse")
        basic = basic_robustness(model, x, grid, self.q, seed=seed, batch_size=batch_size, empty_value=empty_value)
        h = H_PARTS[self.h](basic.r)
        weight = EPS_WEIGHTS[self.eps_weight](grid)
        return RobustnessValues(h * weight[None, :], h, weight, basic)

    def describe(self) -> dict:
        return {"name": self.name, "q": self.q.describe(), "h": self.h, "eps_weight": self.eps_weight,
                "inputs": self.inputs}


def margin_function(norm: str = "l2", samples: int = 100, box: bool = True) -> RobustnessFunction:
    """Example 1 (type 1): Q uniform, ``H = 1[p = 1]``, ``G = 1``; per input the integral is the margin, the
    score over uniform inputs is R1."""
    return RobustnessFunction(UniformBall(check_norm(norm), samples, box), "indicator", "one", "uniform", "R1")


def r2_function(norm: str = "l2", samples: int = 100, box: bool = True) -> RobustnessFunction:
    """Example 2 (type 2): as :func:`margin_function` with ``G = p(x)`` (inputs from the data): the area under
    the margin curve, R2, by sampling."""
    return RobustnessFunction(UniformBall(check_norm(norm), samples, box), "indicator", "one", "data", "R2")


def r4_function(encoder: Callable[[torch.Tensor], torch.Tensor], decoder: Callable[[torch.Tensor], torch.Tensor],
                *, sigma: float = 0.06, samples: int = 200, norm: str = "l2") -> RobustnessFunction:
    """Example 4 (type 2): on-manifold Q (``dec(enc(x) + N(0, sigma^2))``, 200 samples as in the paper's
    evaluation), ``H(p) = p``, ``G = p(x) / eps``: average-case on-manifold robustness, R4."""
    return RobustnessFunction(OnManifold(encoder, decoder, sigma=sigma, samples=samples, norm=norm),
                              "identity", "inverse", "data", "R4")


def data_function(reference: torch.Tensor, norm: str = "l2", h: str = "identity") -> RobustnessFunction:
    """Q = the empirical distribution of ``reference`` (Example 3 with ``h="indicator"``, Example 4's
    average case with ``h="identity"`` and ``G = p(x)``)."""
    return RobustnessFunction(DataNeighbours(reference, norm), h, "one", "data", f"data-{h}")


@dataclass
class Score:
    """A robustness score and what it rests on.

    ``value``: ``mean_i int rho(x_i, eps) d eps`` (trapezoid); ``normalized``: ``value / int g_eps``;
    ``per_input`` (``N``): each input's integral; ``interval``: ``1 - alpha`` empirical-Bernstein interval
    of ``value`` over the inputs (finite-sample; its sampling error in x only; the per-entry ``R_S`` have
    their own Clopper-Pearson intervals, :meth:`BasicRobustness.interval`); ``curve`` (``E``): the
    mean of ``H(R_S)`` over inputs per budget (for ``H = 1[p = 1]`` the margin curve, a mean of Bernoullis,
    with its Clopper-Pearson ``curve_interval``); ``sizes``: inputs, grid points, samples per ``(x, eps)``
    (minimum and mean of ``|S_eps(x)|``) and entries with an empty ``S_eps(x)``.
    """

    name: str
    value: float
    normalized: float
    interval: tuple[float, float]
    per_input: torch.Tensor
    eps: torch.Tensor
    curve: torch.Tensor
    curve_interval: tuple[np.ndarray, np.ndarray] | None
    sizes: dict
    alpha: float
    function: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON-ready summary (no per-input values)."""
        return {"name": self.name, "value": self.value, "normalized": self.normalized,
                "interval": list(self.interval), "alpha": self.alpha, "sizes": self.sizes,
                "eps": self.eps.tolist(), "curve": self.curve.tolist(), "function": self.function}


def _trapezoid(values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return torch.trapezoid(values, grid, dim=-1)


def robustness_score(function: RobustnessFunction, model: Model, x: torch.Tensor,
                     eps: Sequence[float] | torch.Tensor, *, seed: int = 0, alpha: float = 0.05,
                     batch_size: int = 1024, empty_value: float = 1.0) -> Score:
    """The robustness score of ``function`` (eq. 3 / 9) on the inputs ``x`` over the grid ``eps`` (at least 2
    points; the integral covers ``[eps[0], eps[-1]]``). Inputs whose every entry is NaN (``empty_value=nan``
    and no sample anywhere) are left out of the mean, and counted in ``sizes``."""
    check_alpha(alpha)
    grid = check_eps_grid(eps, positive=function.eps_weight == "inverse")
    if grid.numel() < 2:
        raise FrameworkError("a score integrates over eps: give a grid of at least 2 budgets "
                             "(for one budget use basic_robustness)")
    values = function(model, x, grid, seed=seed, batch_size=batch_size, empty_value=empty_value)
    rho = values.rho
    # NaN entries (empty samples, empty_value=nan) drop out: integrate over the defined budgets only
    per_input = _trapezoid(torch.nan_to_num(rho, nan=0.0), grid)
    all_nan = rho.isnan().all(1)
    per_input[all_nan] = math.nan
    defined = per_input[~per_input.isnan()]
    value = float(defined.mean()) if defined.numel() else math.nan
    total_weight = float(_trapezoid(values.weight, grid))
    # H in [0, 1] and G >= 0: each per-input integral lies in [0, int g_eps]
    interval = mean_interval(defined, alpha, bounds=(0.0, total_weight))
    h = values.h
    curve = torch.nanmean(h, dim=0)
    curve_interval = None
    if function.h == "indicator":
        ok = ~h.isnan()
        curve_interval = bernoulli_interval((h.nan_to_num(0.0) * ok).sum(0).long(), ok.sum(0), alpha)
    drawn = values.basic.drawn
    sizes = {"inputs": int(x.shape[0]), "inputs_used": int(defined.numel()), "eps_points": int(grid.numel()),
             "samples_min": int(drawn.min()), "samples_mean": float(drawn.double().mean()),
             "empty_entries": int((drawn == 0).sum())}
    return Score(function.name, value, value / total_weight if total_weight > 0 else math.nan, interval,
                 per_input, grid, curve, curve_interval, sizes, float(alpha), function.describe())
