"""Margin-curve evaluation (Tibo et al., Section 5; the R2 score of Example 2).

For every input ``x`` (prediction ``c = f(x)``), each *candidate* (an attack: FGSM, PGD and the minimum-norm
DeepFool by default) proposes a point ``x'``. Where ``f(x') != c``, a bisection on the segment
``x + t (x' - x)``, ``t in [0, 1]``, finds the smallest ``t`` with a changed prediction, assuming one
boundary crossing on the segment (as the paper does); the reported point is always one that **was
evaluated and changes the prediction** (the upper end of the bracket), so a reported margin is an upper
bound on the true one, tight to ``||x' - x|| / 2^steps``. The closest point over the candidates is kept
(ties: the first candidate in order). The *margin curve* is the fraction of inputs whose margin exceeds
``eps``, and R2 its area over ``[eps[0], eps[-1]]``, computed exactly from the margins
(``mean(clip(margin, lo, hi) - lo)``). An input no candidate moved across a boundary has margin ``inf``.

The margin is label-agnostic (type 2): it is measured from ``f(x)``, not from the label; the attacks are
run with ``f(x)`` as their labels.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import torch

from threedb.robustness.attacks.base import eval_mode
from threedb.robustness.attacks.deepfool import DeepFool
from threedb.robustness.attacks.pgd import FGSM, PGD
from threedb.robustness.framework.checks import (check_batch, check_count, check_eps_grid, check_norm,
                                                 check_positive, distances)
from threedb.robustness.framework.errors import FrameworkError
from threedb.robustness.framework.perturbations import Model, predict
from threedb.robustness.framework.statistics import bernoulli_interval, check_alpha

#: ``(model, x, prediction) -> x'``: a candidate point per input (same shape as ``x``, in ``[0, 1]``).
Candidate = Callable[[Model, torch.Tensor, torch.Tensor], torch.Tensor]


def attack_candidates(norm: str, eps_max: float, *, pgd_steps: int = 40, pgd_restarts: int = 1,
                      deepfool_steps: int = 50, seed: int = 0) -> dict[str, Candidate]:
    """The paper's three candidates: FGSM and PGD at budget ``eps_max`` and DeepFool (the minimum-norm attack
    standing in for the paper's "BG" candidate of Hein & Andriushchenko) capped at ``eps_max``."""
    check_norm(norm)
    check_positive(eps_max, "eps_max")
    attacks = {"fgsm": FGSM(norm=norm, eps=eps_max, seed=seed),
               "pgd": PGD(norm=norm, eps=eps_max, steps=pgd_steps, restarts=pgd_restarts, seed=seed),
               "deepfool": DeepFool(norm=norm, eps=eps_max, steps=deepfool_steps, seed=seed)}
    return {name: (lambda model, x, c, a=attack: _as_images(a, model, x, c)) for name, attack in attacks.items()}


def _as_images(attack: Callable, model: Model, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Run an image attack (``NxCxHxW`` contract) on any ``N x ...`` batch: other shapes travel as
    ``N x 1 x 1 x D`` rows, reshaped back for the model and for the result."""
    if x.ndim == 4:
        return attack(model, x, labels).adv
    shape = x.shape[1:]
    flat = x.reshape(x.shape[0], 1, 1, -1)
    return attack(lambda v: model(v.reshape(v.shape[0], *shape)), flat, labels).adv.reshape(x.shape)


@dataclass
class BoundarySearch:
    """Per input: ``t`` on the segment (``inf`` where the end point keeps the prediction), the distance
    ``t * ||x' - x||`` and the point (``x`` where none), which changes the prediction where ``found``."""

    t: torch.Tensor
    distance: torch.Tensor
    point: torch.Tensor
    found: torch.Tensor


@torch.no_grad()
def boundary_search(model: Model, x: torch.Tensor, end: torch.Tensor, prediction: torch.Tensor, *, norm: str,
                    steps: int = 30, batch_size: int = 1024) -> BoundarySearch:
    """Bisection for the smallest ``t`` in ``(0, 1]`` with ``f(x + t (end - x)) != prediction`` (see the
    module docstring). ``end`` must have ``x``'s shape; the model is called as it is (set its mode)."""
    check_count(steps, "steps")
    if end.shape != x.shape:
        raise FrameworkError(f"candidate points have shape {tuple(end.shape)}, the inputs {tuple(x.shape)}")
    shape = (-1, *[1] * (x.ndim - 1))
    direction = end - x
    found = predict(model, end, batch_size) != prediction
    lo = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    hi = torch.ones_like(lo)
    point = torch.where(found.view(shape), end, x)
    for _ in range(steps):
        mid = (lo + hi) / 2
        probe = x + mid.view(shape) * direction
        flips = (predict(model, probe, batch_size) != prediction) & found
        hi = torch.where(flips, mid, hi)
        lo = torch.where(flips | ~found, lo, mid)
        point = torch.where(flips.view(shape), probe, point)
    t = torch.where(found, hi, torch.full_like(hi, math.inf))
    dist = torch.where(found, distances(point - x, norm).to(hi.dtype), torch.full_like(hi, math.inf))
    return BoundarySearch(t, dist.double(), point, found)


@dataclass
class MarginResult:
    """Outcome of :func:`margin_evaluation`.

    ``margin`` (``N``, float64; ``inf`` where no candidate changed the prediction), ``found_by`` (the
    candidate that gave it, ``None`` where none), ``point`` (the closest decision-changing point, ``x``
    where none), ``distance`` (per candidate, ``N``), ``prediction`` (``f(x)``); ``eps`` / ``curve``
    (fraction of inputs with margin ``> eps``) / ``curve_interval`` (Clopper-Pearson, per eps); ``area``
    (R2 over ``[eps[0], eps[-1]]``); ``share`` (per candidate, the fraction of the inputs with a finite
    margin whose closest point it found); ``seconds`` (per candidate: attack plus search).
    """

    margin: torch.Tensor
    found_by: list
    point: torch.Tensor
    distance: dict
    prediction: torch.Tensor
    eps: torch.Tensor
    curve: torch.Tensor
    curve_interval: tuple[np.ndarray, np.ndarray]
    area: float
    share: dict
    seconds: dict
    norm: str
    alpha: float
    sizes: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON-ready summary (no per-input tensors)."""
        finite = self.margin[torch.isfinite(self.margin)]
        return {"norm": self.norm, "area": self.area, "share": self.share, "seconds": self.seconds,
                "eps": self.eps.tolist(), "curve": self.curve.tolist(),
                "curve_low": self.curve_interval[0].tolist(), "curve_high": self.curve_interval[1].tolist(),
                "alpha": self.alpha, "sizes": self.sizes,
                "median_margin": float(finite.median()) if finite.numel() else None}


def margin_curve(margin: torch.Tensor, eps: torch.Tensor, alpha: float = 0.05
                 ) -> tuple[torch.Tensor, tuple[np.ndarray, np.ndarray], float]:
    """``(curve, its Clopper-Pearson interval, area)`` of per-input margins over the grid ``eps``."""
    grid = check_eps_grid(eps)
    above = margin.double()[:, None] > grid[None, :]
    curve = above.double().mean(0)
    interval = bernoulli_interval(above.sum(0), torch.full((grid.numel(),), margin.numel()), alpha)
    lo, hi = float(grid[0]), float(grid[-1])
    area = float((margin.double().clamp(lo, hi) - lo).mean())
    return curve, interval, area


def margin_evaluation(model: Model, x: torch.Tensor, *, norm: str, eps: torch.Tensor | list[float],
                      candidates: Mapping[str, Candidate] | None = None, search_steps: int = 30,
                      alpha: float = 0.05, batch_size: int = 1024, seed: int = 0) -> MarginResult:
    """Per-input margins of ``model`` on ``x`` from the closest of the candidates' boundary points, and the
    margin curve over ``eps`` (increasing, ``>= 0``) with its area R2.

    ``candidates`` default to :func:`attack_candidates` ``(norm, eps[-1], seed=seed)``. The model is
    evaluated in ``eval()`` mode (restored after).
    """
    check_batch(x)
    norm = check_norm(norm)
    grid = check_eps_grid(eps)
    check_alpha(alpha)
    if candidates is None:
        if float(grid[-1]) <= 0:
            raise FrameworkError("the eps grid must reach above 0 (its last value is the attacks' budget)")
        candidates = attack_candidates(norm, float(grid[-1]), seed=seed)
    if not candidates:
        raise FrameworkError("no candidates: give at least one attack")
    x = x.detach()
    n = x.shape[0]
    names = list(candidates)
    with eval_mode(model):
        prediction = predict(model, x, batch_size)
        best = torch.full((n,), math.inf, dtype=torch.float64, device=x.device)
        best_point = x.clone()
        winner = torch.full((n,), -1, dtype=torch.long, device=x.device)
        per_candidate, seconds = {}, {}
        for i, name in enumerate(names):
            start = time.perf_counter()
            end = candidates[name](model, x, prediction).detach()
            search = boundary_search(model, x, end, prediction, norm=norm, steps=search_steps,
                                     batch_size=batch_size)
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            seconds[name] = time.perf_counter() - start
            closer = search.distance < best
            best = torch.where(closer, search.distance, best)
            best_point[closer] = search.point[closer]
            winner[closer] = i
            per_candidate[name] = search.distance.cpu()
    margin = best.cpu()
    found = winner >= 0
    found_count = int(found.sum())
    share = {name: (float((winner == i).sum()) / found_count if found_count else math.nan)
             for i, name in enumerate(names)}
    curve, interval, area = margin_curve(margin, grid, alpha)
    sizes = {"inputs": n, "with_margin": found_count, "eps_points": int(grid.numel()), "search_steps": search_steps}
    return MarginResult(margin, [names[int(w)] if w >= 0 else None for w in winner.cpu()], best_point,
                        per_candidate, prediction.cpu(), grid, curve, interval, area, share, seconds, norm,
                        float(alpha), sizes)
