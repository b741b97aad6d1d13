"""Minimisers over the probability simplex for dataset projection (thesis app. C.2, algorithms.md f).

* :func:`project_simplex`: Euclidean projection onto ``{w >= 0, sum w = total}`` (sort-based, Held et al.
  1974 / Duchi et al. 2008);
* :func:`projected_gradient_descent`: Algorithm 4, ``w <- P(w - s g)`` (the seed prints ``+ s g``: errata);
* :func:`active_set`: Algorithms 1-3, Cristofari et al.'s (2020) active-set method with the thesis' damped
  (soft) active-set estimate, a stale gradient in the search step and an Armijo line search.

Both take the objective as two callables ``value(w) -> float`` and ``gradient(w) -> Tensor`` and return a
:class:`SolverResult`. Defaults are the thesis' (C.3.5): step (learning rate) 1, tolerance ``1e-6``, at most
1000 iterations, momentum ``beta = 0.9``, Armijo ``(delta, gamma) = (0.9, 0.9)``, ``epsilon`` tried in
``1, 0.1, ..., 1e-4``.

Choices where the thesis is open ([GAP] in algorithms.md terms):

* *epsilon.* Each iteration tries the epsilons from largest to smallest and keeps the first whose
  active-set step does not increase the objective (Cristofari et al. need epsilon small enough for that
  decrease); if none does, the step is skipped (the iterate is kept, the soft estimate still updated).
* *The sets of Algorithm 2.* A coordinate is zeroed when its soft estimate exceeds 0.5 (line 10), except the
  coordinate ``j = argmin g`` that receives the removed mass; every other coordinate keeps its value (line 14's
  ``N`` is the complement).
* *The search direction of Algorithm 3* zeroes ``d`` on the soft-active coordinates; to stay feasible the
  free coordinates are projected onto the simplex face with their own total (``d_F = P(w_F - s g_F) - w_F``
  with ``sum`` preserved), which is the literal direction whenever the active coordinates are 0.
* *Stopping.* At the top of an iteration, stop when ``w`` is stationary: ``max |P(w - s g) - w| <= tol``
  (Algorithm 1 line 3); after it, stop when no coordinate moved by more than ``tol`` (C.3.5) *and* the soft
  active set agrees with the hard one (otherwise the damping, not the problem, holds the iterate still).
  The Armijo backtracking gives up (step 0) after ``max_backtracks`` halvings by ``delta``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .errors import ProjectionError

Value = Callable[[torch.Tensor], float]
Gradient = Callable[[torch.Tensor], torch.Tensor]
EPSILONS: tuple[float, ...] = (1.0, 0.1, 0.01, 0.001, 0.0001)


@dataclass(frozen=True)
class SolverResult:
    """A minimiser's outcome: ``weights`` (float64, on the simplex), ``history`` (the objective at the start and
    after each iteration), ``iterations`` run, and whether a stopping rule (not the iteration cap) ended it."""

    weights: torch.Tensor
    history: tuple[float, ...]
    iterations: int
    converged: bool

    @property
    def objective(self) -> float:
        """The objective at :attr:`weights`."""
        return self.history[-1]


def project_simplex(v: torch.Tensor, total: float = 1.0) -> torch.Tensor:
    """The Euclidean projection of ``v`` (along its last dimension) onto ``{w >= 0, sum w = total}``.

    With ``u`` sorted descending and ``rho`` the largest index with ``u_rho > (sum_{i<=rho} u_i - total) /
    rho``, the projection is ``max(v - theta, 0)`` for ``theta = (sum_{i<=rho} u_i - total) / rho``.
    """
    v = torch.as_tensor(v)
    if not v.is_floating_point():
        v = v.double()
    if v.ndim == 0 or v.shape[-1] == 0:
        raise ProjectionError("project_simplex needs a non-empty last dimension")
    if not (math.isfinite(total) and total > 0):
        raise ProjectionError(f"the simplex total must be positive, got {total!r}")
    if not bool(torch.isfinite(v).all()):
        raise ProjectionError("project_simplex got NaN or infinite entries")
    u, _ = torch.sort(v, dim=-1, descending=True)
    excess = torch.cumsum(u, dim=-1) - total
    ranks = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype, device=v.device)
    rho = (u - excess / ranks > 0).sum(dim=-1, keepdim=True) - 1      # >= 0: the first entry always passes
    theta = excess.gather(-1, rho) / (rho + 1).to(v.dtype)
    return (v - theta).clamp_min(0.0)


def stationarity(w: torch.Tensor, g: torch.Tensor, step_size: float = 1.0) -> float:
    """``max |P(w - s g) - w|``: zero exactly at the stationary points of a function over the simplex."""
    return float((project_simplex(w - step_size * g) - w).abs().max())


def _check_options(step_size: float, tol: float, max_iter: int) -> None:
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not math.isfinite(step_size) \
            or step_size <= 0:
        raise ProjectionError(f"step_size must be a positive number, got {step_size!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise ProjectionError(f"tol must be a non-negative number, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ProjectionError(f"max_iter must be a positive integer, got {max_iter!r}")


def _fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ProjectionError(f"{name} must be a number in the open interval (0, 1), got {value!r}")
    return float(value)


def _start(k: int, x0: torch.Tensor | None) -> torch.Tensor:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ProjectionError(f"the number of weights k must be a positive integer, got {k!r}")
    if x0 is None:
        return torch.full((k,), 1.0 / k, dtype=torch.float64)      # thesis: alpha_i^0 = 1/k
    x0 = torch.as_tensor(x0, dtype=torch.float64).flatten()
    if len(x0) != k or bool((x0 < 0).any()) or abs(float(x0.sum()) - 1.0) > 1e-9:
        raise ProjectionError(f"x0 must be {k} non-negative weights summing to 1")
    return x0.clone()


def projected_gradient_descent(value: Value, gradient: Gradient, k: int, *, x0: torch.Tensor | None = None,
                               step_size: float = 1.0, tol: float = 1e-6, max_iter: int = 1000) -> SolverResult:
    """Algorithm 4: from ``x0`` (default uniform ``1/k``), ``w <- P_simplex(w - step_size * gradient(w))`` until
    no coordinate moves by more than ``tol`` or ``max_iter`` iterations. A fixed step: above ``2/L`` (``L`` the
    gradient's Lipschitz constant) it oscillates."""
    _check_options(step_size, tol, max_iter)
    w = _start(k, x0)
    history = [value(w)]
    for it in range(1, max_iter + 1):
        new = project_simplex(w - step_size * gradient(w).to(w))
        change = float((new - w).abs().max())
        w = new
        history.append(value(w))
        if change <= tol:
            return SolverResult(w, tuple(history), it, True)
    return SolverResult(w, tuple(history), max_iter, False)


def active_set(value: Value, gradient: Gradient, k: int, *, x0: torch.Tensor | None = None, step_size: float = 1.0,
               tol: float = 1e-6, max_iter: int = 1000, epsilons: Sequence[float] = EPSILONS,
               momentum: float = 0.9, armijo: float = 0.9, backtrack: float = 0.9,
               max_backtracks: int = 200) -> SolverResult:
    """Algorithm 1 (with 2 and 3): each iteration takes one gradient ``g`` at ``w``, then

    1. *damped active-set step*: ``j = argmin g``; hard estimate ``H = {i != j: w_i <= eps g^T(e_i - w)}``;
       soft estimate ``A <- momentum * A + (1 - momentum) * 1[H]`` (``A`` starts at 0.5); the coordinates with
       ``A_i > 0.5`` (``i != j``) are set to 0 and their mass moved to ``w_j``;
    2. *search step* with the stale ``g``: ``d = P(w - step_size g) - w`` on the coordinates with
       ``A_i <= 0.5`` (0 elsewhere); if ``g^T d < 0``, Armijo backtracking ``lambda <- backtrack * lambda``
       from 1 until ``f(w + lambda d) <= f(w) + armijo * lambda * g^T d``; ``w <- w + lambda d``.

    See the module docstring for the choices the thesis leaves open. ``armijo`` is the thesis' gamma,
    ``backtrack`` its delta."""
    _check_options(step_size, tol, max_iter)
    momentum = float(momentum)
    if not 0.0 <= momentum < 1.0:
        raise ProjectionError(f"momentum must be in [0, 1), got {momentum!r}")
    armijo, backtrack = _fraction("armijo", armijo), _fraction("backtrack", backtrack)
    epsilons = tuple(float(e) for e in epsilons)
    if not epsilons or any(not (math.isfinite(e) and e > 0) for e in epsilons):
        raise ProjectionError(f"epsilons must be positive numbers, got {epsilons!r}")
    epsilons = tuple(sorted(epsilons, reverse=True))
    w = _start(k, x0)
    soft = torch.full((k,), 0.5, dtype=torch.float64)
    f = value(w)
    history = [f]
    for it in range(1, max_iter + 1):
        g = gradient(w).to(w)
        if stationarity(w, g, step_size) <= tol:
            return SolverResult(w, tuple(history), it - 1, True)
        # 1. damped active-set update (Algorithm 2)
        j = int(torch.argmin(g))
        slack = g - g @ w                                  # g^T (e_i - w)
        for eps in epsilons:
            hard = w <= eps * slack
            hard[j] = False
            candidate = momentum * soft + (1.0 - momentum) * hard.to(soft)
            zero = candidate > 0.5
            zero[j] = False
            w_step = torch.where(zero, torch.zeros_like(w), w)
            w_step[j] = w[j] + w[zero].sum()
            f_step = value(w_step)
            if f_step <= f:
                break
        else:
            w_step, f_step = w, f
        soft = candidate
        # 2. search update with the stale gradient (Algorithm 3)
        free = soft <= 0.5
        d = torch.zeros_like(w)
        if int(free.sum()) > 1:
            total = float(w_step[free].sum())
            if total > 0:
                d[free] = project_simplex(w_step[free] - step_size * g[free], total) - w_step[free]
        slope = float(g @ d)
        lam = 0.0
        if slope < 0:
            lam = 1.0
            for _ in range(max_backtracks):
                if value(w_step + lam * d) <= f_step + armijo * lam * slope:
                    break
                lam *= backtrack
            else:
                lam = 0.0
        new = (w_step + lam * d).clamp_min(0.0)
        change = float((new - w).abs().max())
        w = new
        f = value(w)
        history.append(f)
        settled = bool(((soft > 0.5) & (torch.arange(k) != j)).eq(hard).all())
        if change <= tol and settled:
            return SolverResult(w, tuple(history), it, True)
    return SolverResult(w, tuple(history), max_iter, False)


#: solver name -> function (the names ``project_dataset`` accepts)
SOLVERS: dict[str, Callable[..., SolverResult]] = {"active_set": active_set, "pgd": projected_gradient_descent}
